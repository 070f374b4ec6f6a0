//! [`Raw`]: what a deserializer gave, kept for reading a flat table part by part.

use std::fmt;

use serde::de::value::{MapAccessDeserializer, MapDeserializer, SeqDeserializer};
use serde::de::{self, Expected, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, forward_to_deserialize_any};

/// Any data as a deserializer gave it, kept for reading part by part. Tables keep
/// their order (transforms run in the order the file lists them) and nulls stay (a
/// JSON config may have them, inside `plugin_config` too): `serde_json::Value`
/// sorts keys and `toml::Value` has no null, so neither can stand in for it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    /// JSON's `null` (or an absent optional value).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer (TOML's are all signed).
    Int(i64),
    /// An unsigned integer (how JSON gives non-negative ones).
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    List(Vec<Raw>),
    /// A table, in its order.
    Table(Vec<(String, Raw)>),
}

impl Raw {
    pub(crate) fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Raw::Null => Unexpected::Unit,
            Raw::Bool(value) => Unexpected::Bool(*value),
            Raw::Int(value) => Unexpected::Signed(*value),
            Raw::UInt(value) => Unexpected::Unsigned(*value),
            Raw::Float(value) => Unexpected::Float(*value),
            Raw::Str(value) => Unexpected::Str(value),
            Raw::List(_) => Unexpected::Seq,
            Raw::Table(_) => Unexpected::Map,
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Raw, E> {
        Ok(Raw::Int(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Raw, E> {
        Ok(Raw::UInt(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Raw, E> {
        Ok(Raw::Float(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Raw, E> {
        Ok(Raw::Str(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Raw, E> {
        Ok(Raw::Str(value))
    }

    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(entry) = map.next_entry::<String, Raw>()? {
            entries.push(entry);
        }
        Ok(Raw::Table(entries))
    }
}

/// What reading a [`Raw`] value found wrong.
#[derive(Debug)]
pub(crate) struct RawError(String);

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RawError {}

impl de::Error for RawError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        RawError(message.to_string())
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        // Only JSON has nulls; say it in JSON's word, as serde_json does, not "unit value".
        match unexpected {
            Unexpected::Unit => RawError(format!("invalid type: null, expected {expected}")),
            other => RawError(format!("invalid type: {other}, expected {expected}")),
        }
    }
}

impl<'de> Deserializer<'de> for Raw {
    type Error = RawError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        match self {
            Raw::Null => visitor.visit_unit(),
            Raw::Bool(value) => visitor.visit_bool(value),
            Raw::Int(value) => visitor.visit_i64(value),
            Raw::UInt(value) => visitor.visit_u64(value),
            Raw::Float(value) => visitor.visit_f64(value),
            Raw::Str(value) => visitor.visit_string(value),
            Raw::List(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Raw::Table(entries) => {
                let mut map = MapDeserializer::new(entries.into_iter());
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        match self {
            Raw::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RawError> {
        match self {
            Raw::Str(variant) => {
                visitor.visit_enum(IntoDeserializer::<RawError>::into_deserializer(variant))
            }
            Raw::Table(entries) if entries.len() == 1 => visitor.visit_enum(
                MapAccessDeserializer::new(MapDeserializer::new(entries.into_iter())),
            ),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, RawError> for Raw {
    type Deserializer = Raw;

    fn into_deserializer(self) -> Raw {
        self
    }
}
