//! Avro binary encoding of single datums, with a schema given as JSON (a stream's
//! `avro_schema_json`, or the file `avro_schema_path` names).
//!
//! Datums map to JSON as Avro's JSON encoding does, except that a union's value is the
//! branch's value itself (not `{"type": value}`), so transforms see plain fields:
//! records are objects, enums their symbol, `bytes` and `fixed` strings of code points
//! 0-255, maps objects, arrays arrays. Encoding picks the first union branch that fits
//! the JSON value. Named types may be referenced by name after their definition;
//! recursive types are refused.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

/// A parsed Avro schema.
#[derive(Debug, Clone, PartialEq)]
pub struct AvroSchema(Node);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record(Vec<(String, Node)>),
    Enum(Vec<String>),
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    Fixed(usize),
}

impl AvroSchema {
    /// Parses a schema from its JSON text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let json: Value =
            serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
        let mut named = BTreeMap::new();
        parse(&json, &mut named, &mut Vec::new(), &mut 0).map(AvroSchema)
    }

    /// Decodes one datum; trailing bytes are an error.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let mut reader = Reader {
            bytes,
            at: 0,
            items_left: (bytes.len() as u64).saturating_add(MAX_EMPTY_ITEMS),
        };
        let value = decode(&self.0, &mut reader)?;
        if reader.at != bytes.len() {
            return Err(format!(
                "{} bytes left after the datum",
                bytes.len() - reader.at
            ));
        }
        Ok(value)
    }

    /// The field names of a record schema (none for other schemas).
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        let fields: &[(String, Node)] = match &self.0 {
            Node::Record(fields) => fields,
            _ => &[],
        };
        fields.iter().map(|(name, _)| name.as_str())
    }

    /// Encodes `value` as one datum.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        encode(&self.0, value, &mut out, "")?;
        Ok(out)
    }
}

/// Most nodes a schema may have once every use of a named type is expanded: named types
/// used twice at every level would otherwise make a short schema expand beyond memory.
const MAX_NODES: usize = 100_000;

/// Counts `added` more nodes of the schema being parsed into `nodes`.
fn grow(nodes: &mut usize, added: usize) -> Result<(), String> {
    *nodes = nodes.saturating_add(added);
    if *nodes > MAX_NODES {
        return Err(format!(
            "the schema has more than {MAX_NODES} types once its named types are expanded"
        ));
    }
    Ok(())
}

/// The number of nodes in `node`.
fn size(node: &Node) -> usize {
    1 + match node {
        Node::Record(fields) => fields.iter().map(|(_, field)| size(field)).sum(),
        Node::Array(inner) | Node::Map(inner) => size(inner),
        Node::Union(branches) => branches.iter().map(size).sum(),
        _ => 0,
    }
}

/// A named type's node, counted in `nodes`, or `None`.
fn named_type(
    named: &BTreeMap<String, Node>,
    name: &str,
    nodes: &mut usize,
) -> Option<Result<Node, String>> {
    let node = named.get(name)?;
    Some(grow(nodes, size(node)).map(|()| node.clone()))
}

/// `nodes` counts the nodes made so far, named types expanded (see [`MAX_NODES`]).
fn parse(
    json: &Value,
    named: &mut BTreeMap<String, Node>,
    defining: &mut Vec<String>,
    nodes: &mut usize,
) -> Result<Node, String> {
    grow(nodes, 1)?;
    match json {
        Value::String(name) => primitive(name)
            .map(Ok)
            .or_else(|| named_type(named, name, nodes))
            .unwrap_or_else(|| {
                Err(if defining.contains(name) {
                    format!("recursive type {name:?} is not supported")
                } else {
                    format!("unknown type {name:?}")
                })
            }),
        Value::Array(branches) => branches
            .iter()
            .map(|branch| parse(branch, named, defining, nodes))
            .collect::<Result<_, _>>()
            .map(Node::Union),
        Value::Object(fields) => {
            let kind = fields
                .get("type")
                .ok_or_else(|| "a schema object needs `type`".to_owned())?;
            let Value::String(kind) = kind else {
                return parse(kind, named, defining, nodes);
            };
            let name = fields
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let node = match kind.as_str() {
                "record" | "error" => {
                    let name = name.clone().ok_or("a record needs `name`")?;
                    defining.push(name);
                    let mut record = Vec::new();
                    for field in fields
                        .get("fields")
                        .and_then(Value::as_array)
                        .ok_or("a record needs `fields`")?
                    {
                        let field_name = field
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or("a record field needs `name`")?;
                        let field_type = field
                            .get("type")
                            .ok_or_else(|| format!("field {field_name:?} needs `type`"))?;
                        let node = parse(field_type, named, defining, nodes)
                            .map_err(|error| format!("field {field_name:?}: {error}"))?;
                        record.push((field_name.to_owned(), node));
                    }
                    defining.pop();
                    Node::Record(record)
                }
                "enum" => Node::Enum(
                    fields
                        .get("symbols")
                        .and_then(Value::as_array)
                        .ok_or("an enum needs `symbols`")?
                        .iter()
                        .map(|symbol| symbol.as_str().map(str::to_owned))
                        .collect::<Option<_>>()
                        .ok_or("enum symbols are strings")?,
                ),
                "array" => Node::Array(Box::new(parse(
                    fields.get("items").ok_or("an array needs `items`")?,
                    named,
                    defining,
                    nodes,
                )?)),
                "map" => Node::Map(Box::new(parse(
                    fields.get("values").ok_or("a map needs `values`")?,
                    named,
                    defining,
                    nodes,
                )?)),
                "fixed" => Node::Fixed(
                    fields
                        .get("size")
                        .and_then(Value::as_u64)
                        .ok_or("a fixed needs `size`")? as usize,
                ),
                // `{"type": "long", "logicalType": ...}`: the underlying type.
                other => primitive(other)
                    .map(Ok)
                    .or_else(|| named_type(named, other, nodes))
                    .unwrap_or_else(|| Err(format!("unknown type {other:?}")))?,
            };
            if let Some(name) = name {
                named.insert(name, node.clone());
            }
            Ok(node)
        }
        other => Err(format!("not a schema: {other}")),
    }
}

fn primitive(name: &str) -> Option<Node> {
    Some(match name {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int,
        "long" => Node::Long,
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes,
        "string" => Node::String,
        _ => return None,
    })
}

/// How many array items a datum may hold beyond its length in bytes: items of a type
/// that takes no bytes (`null`, a record without fields, a `fixed` of size 0) cost
/// nothing to claim, so a few bytes could otherwise claim billions of them.
const MAX_EMPTY_ITEMS: u64 = 1 << 16;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Array and map items the rest of the datum may still claim: every item of a type
    /// that takes bytes takes one at least, so no datum holds more than its length of
    /// them, plus [`MAX_EMPTY_ITEMS`].
    items_left: u64,
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("the datum ends early (byte {})", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// A zigzag varint.
    fn long(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("a varint longer than 10 bytes".to_owned())
    }

    fn length(&mut self) -> Result<usize, String> {
        usize::try_from(self.long()?).map_err(|_| "a negative length".to_owned())
    }
}

fn code_points(bytes: &[u8]) -> Value {
    Value::String(bytes.iter().map(|byte| char::from(*byte)).collect())
}

fn decode(node: &Node, reader: &mut Reader<'_>) -> Result<Value, String> {
    Ok(match node {
        Node::Null => Value::Null,
        Node::Boolean => Value::Bool(reader.take(1)?[0] != 0),
        Node::Int | Node::Long => Value::from(reader.long()?),
        Node::Float => {
            let bytes: [u8; 4] = reader.take(4)?.try_into().map_err(|_| "float")?;
            Number::from_f64(f64::from(f32::from_le_bytes(bytes)))
                .map_or(Value::Null, Value::Number)
        }
        Node::Double => {
            let bytes: [u8; 8] = reader.take(8)?.try_into().map_err(|_| "double")?;
            Number::from_f64(f64::from_le_bytes(bytes)).map_or(Value::Null, Value::Number)
        }
        Node::Bytes => {
            let length = reader.length()?;
            code_points(reader.take(length)?)
        }
        Node::String => {
            let length = reader.length()?;
            let bytes = reader.take(length)?;
            Value::String(
                std::str::from_utf8(bytes)
                    .map_err(|_| "a string is not UTF-8".to_owned())?
                    .to_owned(),
            )
        }
        Node::Fixed(size) => code_points(reader.take(*size)?),
        Node::Record(fields) => {
            let mut object = Map::new();
            for (name, field) in fields {
                let value = decode(field, reader).map_err(|error| format!("{name}: {error}"))?;
                object.insert(name.clone(), value);
            }
            Value::Object(object)
        }
        Node::Enum(symbols) => {
            let index = reader.length()?;
            Value::String(
                symbols
                    .get(index)
                    .ok_or_else(|| format!("enum index {index} out of range"))?
                    .clone(),
            )
        }
        Node::Union(branches) => {
            let index = reader.length()?;
            let branch = branches
                .get(index)
                .ok_or_else(|| format!("union index {index} out of range"))?;
            decode(branch, reader)?
        }
        Node::Array(items) => {
            let mut values = Vec::new();
            blocks(reader, |reader| {
                values.push(decode(items, reader)?);
                Ok(())
            })?;
            Value::Array(values)
        }
        Node::Map(values) => {
            let mut object = Map::new();
            blocks(reader, |reader| {
                let key = decode(&Node::String, reader)?;
                let value = decode(values, reader)?;
                object.insert(key.as_str().unwrap_or_default().to_owned(), value);
                Ok(())
            })?;
            Value::Object(object)
        }
    })
}

/// Array and map blocks: a count (negative: followed by a byte size), until 0.
fn blocks(
    reader: &mut Reader<'_>,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<(), String>,
) -> Result<(), String> {
    loop {
        let count = reader.long()?;
        if count == 0 {
            return Ok(());
        }
        if count < 0 {
            reader.long()?;
        }
        let count = count.unsigned_abs();
        reader.items_left = reader.items_left.checked_sub(count).ok_or_else(|| {
            format!(
                "a block of {count} items at byte {}: more than a datum of {} bytes can hold",
                reader.at,
                reader.bytes.len()
            )
        })?;
        for _ in 0..count {
            item(reader)?;
        }
    }
}

fn write_long(value: i64, out: &mut Vec<u8>) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if zigzag < 0x80 {
            out.push(zigzag as u8);
            return;
        }
        out.push((zigzag & 0x7f) as u8 | 0x80);
        zigzag >>= 7;
    }
}

/// Bytes from a string of code points 0-255.
fn from_code_points(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

fn fits(node: &Node, value: &Value) -> bool {
    match (node, value) {
        (Node::Null, Value::Null) | (Node::Boolean, Value::Bool(_)) => true,
        (Node::Int | Node::Long, Value::Number(n)) => n.is_i64(),
        (Node::Float | Node::Double, Value::Number(_)) => true,
        (Node::String | Node::Bytes | Node::Enum(_) | Node::Fixed(_), Value::String(_)) => true,
        (Node::Array(_), Value::Array(_)) => true,
        (Node::Record(_) | Node::Map(_), Value::Object(_)) => true,
        _ => false,
    }
}

fn encode(node: &Node, value: &Value, out: &mut Vec<u8>, at: &str) -> Result<(), String> {
    let mismatch = || {
        let at = if at.is_empty() { "the datum" } else { at };
        format!("{at}: {value} does not fit the schema")
    };
    match (node, value) {
        (Node::Null, Value::Null) => {}
        (Node::Boolean, Value::Bool(flag)) => out.push(u8::from(*flag)),
        (Node::Int, Value::Number(n)) => {
            let n = n
                .as_i64()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(mismatch)?;
            write_long(n, out);
        }
        (Node::Long, Value::Number(n)) => write_long(n.as_i64().ok_or_else(mismatch)?, out),
        (Node::Float, Value::Number(n)) => {
            out.extend_from_slice(&(n.as_f64().ok_or_else(mismatch)? as f32).to_le_bytes());
        }
        (Node::Double, Value::Number(n)) => {
            out.extend_from_slice(&n.as_f64().ok_or_else(mismatch)?.to_le_bytes());
        }
        (Node::String, Value::String(text)) => {
            write_long(text.len() as i64, out);
            out.extend_from_slice(text.as_bytes());
        }
        (Node::Bytes, Value::String(text)) => {
            let bytes = from_code_points(text).ok_or_else(mismatch)?;
            write_long(bytes.len() as i64, out);
            out.extend_from_slice(&bytes);
        }
        (Node::Fixed(size), Value::String(text)) => {
            let bytes = from_code_points(text)
                .filter(|bytes| bytes.len() == *size)
                .ok_or_else(mismatch)?;
            out.extend_from_slice(&bytes);
        }
        (Node::Enum(symbols), Value::String(symbol)) => {
            let index = symbols
                .iter()
                .position(|s| s == symbol)
                .ok_or_else(mismatch)?;
            write_long(index as i64, out);
        }
        (Node::Record(fields), Value::Object(object)) => {
            for (name, field) in fields {
                let path = if at.is_empty() {
                    name.clone()
                } else {
                    format!("{at}.{name}")
                };
                encode(field, object.get(name).unwrap_or(&Value::Null), out, &path)?;
            }
        }
        (Node::Array(items), Value::Array(values)) => {
            if !values.is_empty() {
                write_long(values.len() as i64, out);
                for (index, item) in values.iter().enumerate() {
                    encode(items, item, out, &format!("{at}[{index}]"))?;
                }
            }
            out.push(0);
        }
        (Node::Map(values), Value::Object(object)) => {
            if !object.is_empty() {
                write_long(object.len() as i64, out);
                for (key, item) in object {
                    encode(&Node::String, &Value::String(key.clone()), out, at)?;
                    encode(values, item, out, &format!("{at}.{key}"))?;
                }
            }
            out.push(0);
        }
        (Node::Union(branches), value) => {
            let index = branches
                .iter()
                .position(|branch| fits(branch, value))
                .ok_or_else(mismatch)?;
            write_long(index as i64, out);
            encode(&branches[index], value, out, at)?;
        }
        _ => return Err(mismatch()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: &str = r#"{
        "type": "record", "name": "Order",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "qty", "type": "int"},
            {"name": "price", "type": "double"},
            {"name": "note", "type": ["null", "string"]},
            {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "attrs", "type": {"type": "map", "values": "long"}},
            {"name": "raw", "type": "bytes"},
            {"name": "next", "type": "Status"},
            {"name": "ok", "type": "boolean"}
        ]
    }"#;

    #[test]
    fn datums_round_trip_through_json() {
        let schema = AvroSchema::parse(SCHEMA).unwrap();
        let value = json!({
            "id": -5_000_000_000i64, "qty": 3, "price": 2.5, "note": "hi",
            "status": "PAID", "tags": ["a", "b"], "attrs": {"x": 1},
            "raw": "\u{0}\u{ff}", "next": "NEW", "ok": true
        });
        let bytes = schema.encode(&value).unwrap();
        assert_eq!(schema.decode(&bytes).unwrap(), value);
        let with_null = json!({
            "id": 1, "qty": 0, "price": 0.0, "note": null, "status": "NEW",
            "tags": [], "attrs": {}, "raw": "", "next": "PAID", "ok": false
        });
        let bytes = schema.encode(&with_null).unwrap();
        assert_eq!(schema.decode(&bytes).unwrap(), with_null);
    }

    #[test]
    fn known_encodings() {
        // From the Avro specification: long 64 is 0x80 0x01, string "foo" is 06 66 6f 6f.
        let long = AvroSchema::parse(r#""long""#).unwrap();
        assert_eq!(long.encode(&json!(64)).unwrap(), [0x80, 0x01]);
        assert_eq!(long.encode(&json!(-1)).unwrap(), [0x01]);
        let string = AvroSchema::parse(r#"{"type": "string"}"#).unwrap();
        assert_eq!(
            string.encode(&json!("foo")).unwrap(),
            [0x06, b'f', b'o', b'o']
        );
        // An array written in a block with a byte size (negative count) decodes too.
        let array = AvroSchema::parse(r#"{"type": "array", "items": "long"}"#).unwrap();
        assert_eq!(
            array.decode(&[0x03, 0x04, 0x02, 0x04, 0x00]).unwrap(),
            json!([1, 2])
        );
    }

    #[test]
    fn bad_schemas_and_data_are_errors() {
        assert!(AvroSchema::parse("{").unwrap_err().contains("not JSON"));
        assert!(
            AvroSchema::parse(r#""widget""#)
                .unwrap_err()
                .contains("unknown type")
        );
        let recursive =
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#;
        assert!(
            AvroSchema::parse(recursive)
                .unwrap_err()
                .contains("recursive")
        );
        let schema = AvroSchema::parse(SCHEMA).unwrap();
        assert!(schema.decode(&[0x02]).unwrap_err().contains("ends early"));
        let long = AvroSchema::parse(r#""long""#).unwrap();
        assert!(
            long.decode(&[0x02, 0x00])
                .unwrap_err()
                .contains("left after")
        );
        let error = schema.encode(&json!({"id": "x"})).unwrap_err();
        assert!(error.contains("id"), "{error}");
        let int = AvroSchema::parse(r#""int""#).unwrap();
        assert!(int.encode(&json!(5_000_000_000i64)).is_err());
    }
}
