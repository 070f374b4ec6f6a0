//! [`FieldsInto`]: writes a part of a config into the flat table being written.

use serde::ser::{self, Impossible, SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

/// Which fields of a struct [`FieldsInto`] writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Span {
    /// The fields up to this one, and it.
    Through(&'static str),
    /// The fields after this one.
    After(&'static str),
}

/// A `Serializer` that writes the fields of a struct, as its derived `Serialize` gives
/// them (renamed, defaults skipped), as entries of a map already under way: a config's
/// flat form is written from its parts this way, the common part split around the
/// kind's own fields as upstream's files have them, and nothing repeats a part's
/// fields.
pub(crate) struct FieldsInto<'a, M> {
    map: &'a mut M,
    span: Span,
    past_marker: bool,
}

impl<'a, M: SerializeMap> FieldsInto<'a, M> {
    /// Writes the `span` of a struct's fields into `map`.
    pub(crate) fn new(map: &'a mut M, span: Span) -> Self {
        FieldsInto {
            map,
            span,
            past_marker: false,
        }
    }

    /// Whether `key` is written, and notes passing the marker.
    fn keeps(&mut self, key: &str) -> bool {
        let (keep, marker) = match self.span {
            Span::Through(marker) => (!self.past_marker, marker),
            Span::After(marker) => (self.past_marker, marker),
        };
        if key == marker {
            self.past_marker = true;
        }
        keep
    }
}

fn not_a_struct<E: ser::Error>() -> E {
    E::custom("only a struct's fields can be written into a flat table")
}

impl<M: SerializeMap> SerializeStruct for FieldsInto<'_, M> {
    type Ok = ();
    type Error = M::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), M::Error> {
        if self.keeps(key) {
            self.map.serialize_entry(key, value)?;
        }
        Ok(())
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), M::Error> {
        self.keeps(key);
        Ok(())
    }

    fn end(self) -> Result<(), M::Error> {
        Ok(())
    }
}

impl<M: SerializeMap> Serializer for FieldsInto<'_, M> {
    type Ok = ();
    type Error = M::Error;
    type SerializeSeq = Impossible<(), M::Error>;
    type SerializeTuple = Impossible<(), M::Error>;
    type SerializeTupleStruct = Impossible<(), M::Error>;
    type SerializeTupleVariant = Impossible<(), M::Error>;
    type SerializeMap = Impossible<(), M::Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), M::Error>;

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, M::Error> {
        Ok(self)
    }

    fn serialize_bool(self, _: bool) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_i8(self, _: i8) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_i16(self, _: i16) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_i32(self, _: i32) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_i64(self, _: i64) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_u8(self, _: u8) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_u16(self, _: u16) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_u32(self, _: u32) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_u64(self, _: u64) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_f32(self, _: f32) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_f64(self, _: f64) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_char(self, _: char) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_str(self, _: &str) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_none(self) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_unit(self) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), M::Error> {
        Err(not_a_struct())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, M::Error> {
        Err(not_a_struct())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, M::Error> {
        Err(not_a_struct())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, M::Error> {
        Err(not_a_struct())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, M::Error> {
        Err(not_a_struct())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, M::Error> {
        Err(not_a_struct())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, M::Error> {
        Err(not_a_struct())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Part {
        a: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        b: Option<String>,
        c: bool,
    }

    #[test]
    fn fields_into_writes_the_span_asked_for() {
        struct Split<'a>(&'a Part);
        impl Serialize for Split<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                self.0
                    .serialize(FieldsInto::new(&mut map, Span::Through("b")))?;
                map.serialize_entry("between", &0)?;
                self.0
                    .serialize(FieldsInto::new(&mut map, Span::After("b")))?;
                map.end()
            }
        }
        let part = Part {
            a: 1,
            b: None,
            c: false,
        };
        assert_eq!(
            serde_json::to_string(&Split(&part)).unwrap(),
            r#"{"a":1,"between":0,"c":false}"#
        );
    }
}
