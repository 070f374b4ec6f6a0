//! The flat form of a config made of parts.
//!
//! A connector file is one flat table, but a config holds parts: the fields every
//! connector has ([`crate::ConnectorCommon`]), its kind's own, and per stream a
//! [`transforms::StreamPayload`]. serde's `flatten` cannot read that: it does not mix
//! with `deny_unknown_fields`, and the error for a bad value inside a flattened part
//! names no key. So a table is read in three steps here: buffered as [`Raw`], read
//! key by key and part by part through a [`Table`] (each part's derived
//! `Deserialize` gets only its own keys, and every error names its full key), and
//! refused if a key is left that nothing read, with the nearest key that would have
//! been. [`FieldsInto`] writes a part back into the flat table being written.

mod raw;
mod write;

use std::fmt;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, forward_to_deserialize_any};

pub(crate) use raw::Raw;
use raw::RawError;
pub(crate) use write::{FieldsInto, Span};

/// A problem in a flat table: the key it is about (a dot path such as
/// `streams[0].topics`; empty for the table itself) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlatError {
    /// The key.
    path: String,
    /// What is wrong.
    message: String,
}

impl FlatError {
    /// The problem `message` at `path`; serde's "unknown field/variant" messages get
    /// the nearest name appended, for a typo.
    fn at(path: &str, message: impl fmt::Display) -> Self {
        FlatError {
            path: path.to_owned(),
            message: crate::suggest::with_suggestion(&message.to_string()),
        }
    }
}

impl fmt::Display for FlatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

/// Deserialises `T` from `raw`, which sits at `path`: an error names the key at fault
/// inside `raw` too (`retry.max_attempts`).
fn read_at<T: DeserializeOwned>(raw: Raw, path: &str) -> Result<T, FlatError> {
    let mut track = serde_path_to_error::Track::new();
    T::deserialize(serde_path_to_error::Deserializer::new(raw, &mut track)).map_err(|error| {
        let inner = track.path().to_string();
        let path = match inner.as_str() {
            "." => path.to_owned(),
            _ if path.is_empty() => inner,
            _ if inner.starts_with('[') => format!("{path}{inner}"),
            _ => format!("{path}.{inner}"),
        };
        FlatError::at(&path, error)
    })
}

/// A flat table being read into a struct of parts.
///
/// Every read records the keys it takes, and none stops the others: a reader takes
/// each field, then calls [`Table::finish`], and only then looks at the results. So a
/// misspelt key is reported as such (with the nearest key read) rather than as the
/// missing field it was meant to be.
#[derive(Debug)]
pub(crate) struct Table {
    entries: Vec<(String, Raw)>,
    path: String,
    known: Vec<&'static str>,
}

impl Table {
    /// `raw` as the table at `path` (empty at the top); anything else is refused as
    /// not the `expected` thing (`"struct SinkStream"`).
    pub(crate) fn new(raw: Raw, path: &str, expected: &str) -> Result<Self, FlatError> {
        match raw {
            Raw::Table(entries) => Ok(Table {
                entries,
                path: path.to_owned(),
                known: Vec::new(),
            }),
            other => Err(FlatError::at(
                path,
                <RawError as de::Error>::invalid_type(other.unexpected(), &expected),
            )),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<Raw> {
        self.known.push(key);
        let at = self.entries.iter().position(|(name, _)| name == key)?;
        Some(self.entries.remove(at).1)
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`, which must be there.
    pub(crate) fn required<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
    ) -> Result<T, FlatError> {
        match self.take(key) {
            Some(raw) => read_at(raw, &self.path_of(key)),
            None => Err(FlatError::at(
                &self.path,
                <RawError as de::Error>::missing_field(key),
            )),
        }
    }

    /// The value of `key`, or `default()` when it is not there (a JSON `null` reads
    /// as `None` for an `Option`, as serde reads it).
    pub(crate) fn or_else<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
        default: impl FnOnce() -> T,
    ) -> Result<T, FlatError> {
        match self.take(key) {
            Some(raw) => read_at(raw, &self.path_of(key)),
            None => Ok(default()),
        }
    }

    /// The list of tables at `key`, which must be there, each read by `read` (as the
    /// `expected` thing, for an entry that is not a table).
    pub(crate) fn tables<T>(
        &mut self,
        key: &'static str,
        expected: &str,
        read: impl Fn(&mut Table) -> Result<T, FlatError>,
    ) -> Result<Vec<T>, FlatError> {
        let items: Vec<Raw> = self.required(key)?;
        let path = self.path_of(key);
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                read(&mut Table::new(
                    item,
                    &format!("{path}[{index}]"),
                    expected,
                )?)
            })
            .collect()
    }

    /// A part: `T` read from those of `keys` the table has, with `T`'s own defaults
    /// and checks for the rest.
    pub(crate) fn part<T: DeserializeOwned>(
        &mut self,
        keys: &[&'static str],
    ) -> Result<T, FlatError> {
        self.known.extend_from_slice(keys);
        let (mine, rest) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|(name, _)| keys.contains(&name.as_str()));
        self.entries = rest;
        read_at(Raw::Table(mine), &self.path)
    }

    /// Refuses the first key that nothing read, naming the keys that were read (and
    /// the nearest one, for a typo).
    pub(crate) fn finish(&self) -> Result<(), FlatError> {
        let Some((key, _)) = self.entries.first() else {
            return Ok(());
        };
        let expected = match self.known.as_slice() {
            [] => "there are no fields".to_owned(),
            [one] => format!("expected `{one}`"),
            [first, second] => format!("expected `{first}` or `{second}`"),
            many => format!(
                "expected one of {}",
                many.iter()
                    .map(|known| format!("`{known}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Err(FlatError::at(
            &self.path_of(key),
            format!("unknown field `{key}`, {expected}"),
        ))
    }
}

/// A flat `Deserialize`: buffers what `deserializer` gives and reads it as the table
/// `read` reads (refused as not the `expected` thing if it is no table). The error
/// names the key at fault, inside a stream too.
pub(crate) fn deserialize<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    expected: &str,
    read: impl FnOnce(&mut Table) -> Result<T, FlatError>,
) -> Result<T, D::Error> {
    let raw = Raw::deserialize(deserializer)?;
    Table::new(raw, "", expected)
        .and_then(|mut table| read(&mut table))
        .map_err(de::Error::custom)
}

/// The keys `read` takes from a table: every key a flat table of its kind may have.
#[cfg(test)]
pub(crate) fn keys_read_by<T>(
    read: impl FnOnce(&mut Table) -> Result<T, FlatError>,
) -> Vec<&'static str> {
    let mut table = Table {
        entries: Vec::new(),
        path: String::new(),
        known: Vec::new(),
    };
    // An empty table fails the reader; only the keys it asked for matter.
    let _ = read(&mut table);
    table.known
}

/// The keys `T`'s derived `Deserialize` reads (serde lists them when it asks for a
/// struct), so that a table can be split by them without a second list to keep in
/// step; empty for a type that is not a struct.
pub(crate) fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = RawError;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, RawError> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, RawError> {
            *self.0 = fields;
            Err(de::Error::custom("only the field names were wanted"))
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The probe always fails: what it wanted is the list serde handed it.
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Part {
        a: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        b: Option<String>,
        c: bool,
    }

    fn table(json: serde_json::Value) -> Table {
        Table::new(Raw::deserialize(json).unwrap(), "top", "a table").unwrap()
    }

    #[test]
    fn parts_and_fields_are_read_with_their_keys_and_leftovers_refused() {
        let mut read =
            table(serde_json::json!({ "a": 1, "c": true, "x": [1, null], "other": "z" }));
        let part: Result<Part, _> = read.part(struct_fields::<Part>());
        let x: Result<Vec<Option<u8>>, _> = read.required("x");
        let missing: Result<u8, _> = read.required("w");
        let defaulted = read.or_else("v", || 7_u8);
        let error = read.finish().unwrap_err();
        assert_eq!(
            error.to_string(),
            "`top.other`: unknown field `other`, expected one of `a`, `b`, `c`, `x`, `w`, `v`"
        );
        assert_eq!(
            part.ok(),
            Some(Part {
                a: 1,
                b: None,
                c: true
            })
        );
        assert_eq!(x.ok(), Some(vec![Some(1), None]));
        assert_eq!(missing.unwrap_err().to_string(), "`top`: missing field `w`");
        assert_eq!(defaulted.ok(), Some(7));

        let mut read = table(serde_json::json!({ "a": "one", "c": null }));
        let error = read.part::<Part>(struct_fields::<Part>()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`top.a`: invalid type: string \"one\", expected u32"
        );
        let mut read = table(serde_json::json!({ "a": 1, "c": null }));
        let error = read.part::<Part>(struct_fields::<Part>()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`top.c`: invalid type: null, expected a boolean"
        );
    }

    #[test]
    fn struct_fields_are_what_serde_reads() {
        assert_eq!(struct_fields::<Part>(), ["a", "b", "c"]);
        assert!(struct_fields::<String>().is_empty());
    }

    #[test]
    fn tables_keep_their_order_and_lists_name_the_entry_at_fault() {
        let text = "z = 1\na = 2\nm = [{ q = 1 }, 5]\n";
        let raw = Raw::deserialize(toml::Value::Table(toml::from_str(text).unwrap())).unwrap();
        let Raw::Table(entries) = &raw else {
            panic!("a table");
        };
        let keys: Vec<&str> = entries.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        let mut read = Table::new(raw, "", "a table").unwrap();
        let error = read
            .tables("m", "struct Q", |entry| entry.required::<u8>("q"))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "`m[1]`: invalid type: integer `5`, expected struct Q"
        );
    }
}
