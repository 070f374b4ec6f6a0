//! FlatBuffers payloads: one root table of a binary schema (`.bfbs`, what `flatc
//! --schema -b` writes), decoded to JSON for transforms and encoded back.
//!
//! The JSON view is flatc's: tables are objects with the schema's field names (in id
//! order), enums their value's name, unions a `<name>_type` field with the variant's
//! name beside the variant's table, structs objects, vectors and arrays arrays. Scalar
//! fields are always present (their default when the buffer leaves them out, so a
//! filter can test a zero), except optional scalars (`= null` in the schema); absent
//! strings, tables, vectors and unions are left out. Encoding reads the same view; JSON
//! fields the table does not have are left out, as the Avro and Protobuf encoders do.
//!
//! Both directions are our own code over the reflection schema rather than the
//! `flatbuffers` and `flatbuffers-reflection` crates: reading a buffer through those
//! is `unsafe` (their table accessors trust a buffer that was verified first) and
//! their builder cannot write a struct whose layout is only known at run time without
//! an `unsafe` `Push` implementation. Every read here is bounds-checked, so a buffer
//! can never make decoding read outside it; verification (on by default) adds what
//! flatc's verifier checks beyond that: alignment, vtable sizes, string terminators and
//! UTF-8, known union variants and required fields.

use std::cell::Cell;

use serde_json::{Map, Value};

/// Deepest nesting of tables, vectors and structs decoded (flatc's verifier's limit).
const MAX_DEPTH: usize = 64;

/// Most values one buffer may decode to, besides one per byte of the buffer (a string
/// counts one per 8 bytes): offsets may be shared, so a small buffer could otherwise
/// decode to an exponentially large document.
const MAX_VALUES: usize = 1_000_000;

/// A FlatBuffers binary schema and the table payloads are the root of.
///
/// ```
/// # fn bfbs() -> Vec<u8> { include_bytes!("../tests/data/sensor.bfbs").to_vec() }
/// use transforms::FlatBufferSchema;
///
/// let schema = FlatBufferSchema::from_bfbs(&bfbs(), Some("demo.Reading"))?;
/// let bytes = schema.encode(&serde_json::json!({ "sensor": "t1", "celsius": 21.5, "kind": "Water" }))?;
/// let reading = schema.decode(&bytes)?;
/// assert_eq!(reading["kind"], "Water");
/// assert_eq!(reading["count"], 7, "a scalar left out reads as its default");
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FlatBufferSchema {
    objects: Vec<Object>,
    enums: Vec<Enum>,
    root: usize,
    file_ident: Option<[u8; 4]>,
    verify: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Object {
    name: String,
    /// Sorted by id.
    fields: Vec<Field>,
    is_struct: bool,
    minalign: usize,
    bytesize: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
    ty: Type,
    id: u16,
    /// The vtable offset (tables) or the byte offset (structs).
    offset: u16,
    default_integer: i64,
    default_real: f64,
    required: bool,
    optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Type {
    base: Base,
    element: Base,
    /// Into `objects` (tables, structs) or `enums` (unions, enum-typed integers).
    index: i32,
    fixed_length: u16,
}

#[derive(Debug, Clone, PartialEq)]
struct Enum {
    name: String,
    /// Value, name, and for a union variant the index of its table.
    values: Vec<(i64, String, Option<usize>)>,
    is_union: bool,
}

/// reflection.fbs `BaseType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    None,
    UType,
    Bool,
    Byte,
    UByte,
    Short,
    UShort,
    Int,
    UInt,
    Long,
    ULong,
    Float,
    Double,
    String,
    Vector,
    Obj,
    Union,
    Array,
    Vector64,
}

impl Base {
    fn from_code(code: i8) -> Result<Self, String> {
        const ALL: [Base; 19] = [
            Base::None,
            Base::UType,
            Base::Bool,
            Base::Byte,
            Base::UByte,
            Base::Short,
            Base::UShort,
            Base::Int,
            Base::UInt,
            Base::Long,
            Base::ULong,
            Base::Float,
            Base::Double,
            Base::String,
            Base::Vector,
            Base::Obj,
            Base::Union,
            Base::Array,
            Base::Vector64,
        ];
        usize::try_from(code)
            .ok()
            .and_then(|index| ALL.get(index).copied())
            .ok_or_else(|| format!("unknown base type {code}"))
    }

    /// Size of a scalar, or 0.
    fn scalar_size(self) -> usize {
        match self {
            Base::UType | Base::Bool | Base::Byte | Base::UByte => 1,
            Base::Short | Base::UShort => 2,
            Base::Int | Base::UInt | Base::Float => 4,
            Base::Long | Base::ULong | Base::Double => 8,
            _ => 0,
        }
    }
}

// ---- reading buffers -----------------------------------------------------------------

/// A buffer being read: every read is bounds-checked; `verify` adds flatc's checks.
struct Reader<'a> {
    bytes: &'a [u8],
    verify: bool,
    values_left: Cell<usize>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], verify: bool) -> Self {
        Reader {
            bytes,
            verify,
            values_left: Cell::new(MAX_VALUES.saturating_add(bytes.len())),
        }
    }
}

/// A table in a buffer: where it starts and its vtable.
#[derive(Clone, Copy)]
struct Table {
    at: usize,
    vtable: usize,
    vtable_len: usize,
    table_len: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&self, at: usize) -> Result<[u8; N], String> {
        at.checked_add(N)
            .and_then(|end| self.bytes.get(at..end))
            .and_then(|slice| slice.try_into().ok())
            .ok_or_else(|| {
                format!(
                    "{N} bytes at byte {at} are past the end ({})",
                    self.bytes.len()
                )
            })
    }

    fn aligned(&self, at: usize, align: usize) -> Result<(), String> {
        if self.verify && align > 1 && !at.is_multiple_of(align) {
            return Err(format!("byte {at} is not aligned to {align}"));
        }
        Ok(())
    }

    fn u16(&self, at: usize) -> Result<u16, String> {
        self.take(at).map(u16::from_le_bytes)
    }

    fn u32(&self, at: usize) -> Result<u32, String> {
        self.take(at).map(u32::from_le_bytes)
    }

    /// The position an offset at `at` points to.
    fn deref(&self, at: usize) -> Result<usize, String> {
        self.aligned(at, 4)?;
        let offset = self.u32(at)? as usize;
        match at.checked_add(offset) {
            Some(target) if target < self.bytes.len() && offset > 0 => Ok(target),
            _ => Err(format!("the offset at byte {at} points outside the buffer")),
        }
    }

    fn table(&self, at: usize) -> Result<Table, String> {
        self.aligned(at, 4)?;
        let soffset = i64::from(i32::from_le_bytes(self.take(at)?));
        let vtable = usize::try_from(at as i64 - soffset)
            .map_err(|_| format!("the table at byte {at} has its vtable before the buffer"))?;
        self.aligned(vtable, 2)?;
        let vtable_len = usize::from(self.u16(vtable)?);
        let table_len = usize::from(self.u16(vtable + 2)?);
        if self.verify
            && (vtable_len < 4
                || !vtable_len.is_multiple_of(2)
                || vtable + vtable_len > self.bytes.len()
                || table_len < 4
                || at + table_len > self.bytes.len())
        {
            return Err(format!("the table at byte {at} has a malformed vtable"));
        }
        Ok(Table {
            at,
            vtable,
            vtable_len,
            table_len,
        })
    }

    /// Where the field at vtable offset `voffset` is, if the table has it.
    fn field(&self, table: Table, voffset: u16) -> Result<Option<usize>, String> {
        let voffset = usize::from(voffset);
        if voffset + 2 > table.vtable_len {
            return Ok(None);
        }
        let offset = usize::from(self.u16(table.vtable + voffset)?);
        if offset == 0 {
            return Ok(None);
        }
        if self.verify && offset >= table.table_len {
            return Err(format!(
                "the table at byte {} has a field past its end",
                table.at
            ));
        }
        Ok(Some(table.at + offset))
    }

    /// The string an offset at `at` points to.
    fn string(&self, at: usize) -> Result<String, String> {
        let (start, len) = self.vector(at, 1)?;
        self.count(1 + len / 8)?;
        let bytes = &self.bytes[start..start + len];
        if self.verify {
            if self.bytes.get(start + len) != Some(&0) {
                return Err(format!("the string at byte {start} is not NUL-terminated"));
            }
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|error| format!("the string at byte {start} is not UTF-8: {error}"))
        } else {
            Ok(String::from_utf8_lossy(bytes).into_owned())
        }
    }

    /// The first element and length of the vector an offset at `at` points to.
    fn vector(&self, at: usize, element_size: usize) -> Result<(usize, usize), String> {
        let target = self.deref(at)?;
        self.aligned(target, 4)?;
        let len = self.u32(target)? as usize;
        let start = target + 4;
        match len
            .checked_mul(element_size)
            .and_then(|size| start.checked_add(size))
        {
            Some(end) if end <= self.bytes.len() => Ok((start, len)),
            _ => Err(format!(
                "the vector at byte {target} ({len} items) is past the end"
            )),
        }
    }

    fn count(&self, values: usize) -> Result<(), String> {
        let left = self.values_left.get().checked_sub(values).ok_or_else(|| {
            format!("the buffer decodes to more than {MAX_VALUES} values (shared offsets?)")
        })?;
        self.values_left.set(left);
        Ok(())
    }
}

// ---- the reflection schema -------------------------------------------------------------

/// Reads reflection.fbs tables: field `id` of `table`.
struct Reflection<'a>(Reader<'a>);

impl Reflection<'_> {
    fn slot(&self, table: Table, id: u16) -> Result<Option<usize>, String> {
        self.0.field(table, 4 + 2 * id)
    }

    fn string(&self, table: Table, id: u16) -> Result<Option<String>, String> {
        self.slot(table, id)?
            .map(|at| self.0.string(at))
            .transpose()
    }

    fn scalar<const N: usize>(&self, table: Table, id: u16) -> Result<Option<[u8; N]>, String> {
        self.slot(table, id)?.map(|at| self.0.take(at)).transpose()
    }

    fn table(&self, table: Table, id: u16) -> Result<Option<Table>, String> {
        self.slot(table, id)?
            .map(|at| self.0.deref(at).and_then(|target| self.0.table(target)))
            .transpose()
    }

    fn tables(&self, table: Table, id: u16) -> Result<Vec<Table>, String> {
        let Some(at) = self.slot(table, id)? else {
            return Ok(Vec::new());
        };
        let (start, len) = self.0.vector(at, 4)?;
        (0..len)
            .map(|index| {
                let element = start + 4 * index;
                self.0
                    .deref(element)
                    .and_then(|target| self.0.table(target))
            })
            .collect()
    }

    fn ty(&self, table: Table) -> Result<Type, String> {
        Ok(Type {
            base: Base::from_code(i8::from_le_bytes(self.scalar(table, 0)?.unwrap_or([0])))?,
            element: Base::from_code(i8::from_le_bytes(self.scalar(table, 1)?.unwrap_or([0])))?,
            index: self.scalar(table, 2)?.map_or(-1, i32::from_le_bytes),
            fixed_length: self.scalar(table, 3)?.map_or(0, u16::from_le_bytes),
        })
    }

    fn field(&self, table: Table) -> Result<Option<Field>, String> {
        let name = self.string(table, 0)?.ok_or("a field without a name")?;
        let deprecated = self
            .scalar(table, 6)?
            .is_some_and(|[flag]: [u8; 1]| flag != 0);
        if deprecated {
            return Ok(None);
        }
        let ty = self
            .table(table, 1)?
            .ok_or_else(|| format!("field {name} has no type"))?;
        Ok(Some(Field {
            ty: self.ty(ty)?,
            id: self.scalar(table, 2)?.map_or(0, u16::from_le_bytes),
            offset: self.scalar(table, 3)?.map_or(0, u16::from_le_bytes),
            default_integer: self.scalar(table, 4)?.map_or(0, i64::from_le_bytes),
            default_real: self.scalar(table, 5)?.map_or(0.0, f64::from_le_bytes),
            required: self
                .scalar(table, 7)?
                .is_some_and(|[flag]: [u8; 1]| flag != 0),
            optional: self
                .scalar(table, 11)?
                .is_some_and(|[flag]: [u8; 1]| flag != 0),
            name,
        }))
    }

    fn object(&self, table: Table) -> Result<Object, String> {
        let name = self.string(table, 0)?.ok_or("an object without a name")?;
        let mut fields = Vec::new();
        for field in self.tables(table, 1)? {
            if let Some(field) = self.field(field)? {
                fields.push(field);
            }
        }
        fields.sort_by_key(|field| field.id);
        Ok(Object {
            fields,
            is_struct: self
                .scalar(table, 2)?
                .is_some_and(|[flag]: [u8; 1]| flag != 0),
            minalign: self.scalar(table, 3)?.map_or(1, i32::from_le_bytes).max(1) as usize,
            bytesize: self.scalar(table, 4)?.map_or(0, i32::from_le_bytes).max(0) as usize,
            name,
        })
    }

    fn enumeration(&self, table: Table) -> Result<Enum, String> {
        let name = self.string(table, 0)?.ok_or("an enum without a name")?;
        let mut values = Vec::new();
        for value in self.tables(table, 1)? {
            let symbol = self
                .string(value, 0)?
                .ok_or("an enum value without a name")?;
            let number = self.scalar(value, 1)?.map_or(0, i64::from_le_bytes);
            let object = match self.table(value, 3)? {
                Some(ty) => usize::try_from(self.ty(ty)?.index).ok(),
                None => None,
            };
            values.push((number, symbol, object));
        }
        Ok(Enum {
            name,
            values,
            is_union: self
                .scalar(table, 2)?
                .is_some_and(|[flag]: [u8; 1]| flag != 0),
        })
    }
}

impl FlatBufferSchema {
    /// Reads a binary schema (`.bfbs`) and picks the root table: `root_table` (its
    /// full name, `namespace.Table`, or its name when only one table has it), or the
    /// schema's `root_type`. Buffers are verified (see [`FlatBufferSchema::verify`]).
    pub fn from_bfbs(bytes: &[u8], root_table: Option<&str>) -> Result<Self, String> {
        if bytes.get(4..8) != Some(b"BFBS") {
            return Err("not a FlatBuffers binary schema (no BFBS identifier; write one with `flatc --schema -b`)".to_owned());
        }
        let reflection = Reflection(Reader::new(bytes, true));
        let root = reflection
            .0
            .deref(0)
            .and_then(|at| reflection.0.table(at))?;
        let objects = reflection
            .tables(root, 0)?
            .into_iter()
            .map(|table| reflection.object(table))
            .collect::<Result<Vec<_>, _>>()?;
        let enums = reflection
            .tables(root, 1)?
            .into_iter()
            .map(|table| reflection.enumeration(table))
            .collect::<Result<Vec<_>, _>>()?;
        let file_ident = reflection
            .string(root, 2)?
            .and_then(|ident| <[u8; 4]>::try_from(ident.as_bytes()).ok());
        let schema_root = match reflection.table(root, 4)? {
            Some(table) => reflection.string(table, 0)?,
            None => None,
        };
        let tables = || objects.iter().filter(|object| !object.is_struct);
        let root = match root_table.or(schema_root.as_deref()) {
            None => return Err("the schema has no root_type; name the root table".to_owned()),
            Some(name) => {
                let exact = objects
                    .iter()
                    .position(|object| !object.is_struct && object.name == name);
                let short: Vec<usize> = (0..objects.len())
                    .filter(|&index| {
                        let object = &objects[index];
                        !object.is_struct && object.name.rsplit('.').next() == Some(name)
                    })
                    .collect();
                match (exact, short.as_slice()) {
                    (Some(index), _) => index,
                    (None, [index]) => *index,
                    _ => {
                        let known: Vec<&str> =
                            tables().map(|object| object.name.as_str()).collect();
                        return Err(format!(
                            "the schema has no table {name:?} (it has: {})",
                            known.join(", ")
                        ));
                    }
                }
            }
        };
        let schema = FlatBufferSchema {
            objects,
            enums,
            root,
            file_ident,
            verify: true,
        };
        schema.check()?;
        Ok(schema)
    }

    /// Every type index in the schema points at a type of the right kind, so decoding
    /// and encoding can index without checking again.
    fn check(&self) -> Result<(), String> {
        for object in &self.objects {
            if object.is_struct
                && (object.bytesize == 0 || object.minalign > 16 || object.bytesize > 1 << 16)
            {
                return Err(format!(
                    "struct {}: malformed size or alignment",
                    object.name
                ));
            }
            for field in &object.fields {
                let at = || format!("{}.{}", object.name, field.name);
                self.check_layout(object, field)
                    .map_err(|error| format!("{}: {error}", at()))?;
                let base = if matches!(field.ty.base, Base::Vector | Base::Array) {
                    field.ty.element
                } else {
                    field.ty.base
                };
                let index = usize::try_from(field.ty.index).ok();
                match base {
                    Base::Obj => {
                        if index.and_then(|index| self.objects.get(index)).is_none() {
                            return Err(format!("{}: unknown table or struct", at()));
                        }
                    }
                    Base::Union | Base::UType => {
                        if index.and_then(|index| self.enums.get(index)).is_none() {
                            return Err(format!("{}: unknown union", at()));
                        }
                    }
                    Base::Vector64 | Base::None => {
                        return Err(format!("{}: {:?} fields are not supported", at(), base));
                    }
                    _ => {
                        if index.is_some_and(|index| index >= self.enums.len()) {
                            return Err(format!("{}: unknown enum", at()));
                        }
                    }
                }
                if field.ty.base == Base::Vector && field.ty.element == Base::Union {
                    return Err(format!("{}: vectors of unions are not supported", at()));
                }
            }
        }
        for (object, depth) in self.objects.iter().zip(self.struct_depths()) {
            if depth > MAX_DEPTH {
                return Err(format!(
                    "struct {}: nested deeper than {MAX_DEPTH}",
                    object.name
                ));
            }
        }
        for union in self.enums.iter().filter(|union| union.is_union) {
            for (_, name, object) in &union.values {
                if object.is_some_and(|index| index >= self.objects.len()) {
                    return Err(format!("{}.{name}: unknown table", union.name));
                }
            }
        }
        Ok(())
    }

    /// A table field has a vtable slot; a struct field fits in its struct, and a struct
    /// only holds smaller structs (so none holds itself).
    fn check_layout(&self, object: &Object, field: &Field) -> Result<(), String> {
        if !object.is_struct {
            return if field.offset >= 4 && field.offset.is_multiple_of(2) {
                Ok(())
            } else {
                Err(format!("vtable offset {} is malformed", field.offset))
            };
        }
        let inner = |index: i32| {
            usize::try_from(index)
                .ok()
                .and_then(|index| self.objects.get(index))
                .filter(|inner| inner.is_struct && inner.bytesize < object.bytesize)
                .map(|inner| inner.bytesize)
                .ok_or("a struct field must be a smaller struct or a scalar")
        };
        let size = match field.ty.base {
            Base::Obj => inner(field.ty.index)?,
            Base::Array => {
                let element = match field.ty.element {
                    Base::Obj => inner(field.ty.index)?,
                    base => base.scalar_size(),
                };
                if element == 0 || field.ty.fixed_length == 0 {
                    return Err("a malformed array".to_owned());
                }
                element * usize::from(field.ty.fixed_length)
            }
            base if base.scalar_size() > 0 => base.scalar_size(),
            _ => return Err("a struct holds only scalars, structs and arrays".to_owned()),
        };
        if usize::from(field.offset) + size > object.bytesize {
            return Err("does not fit in its struct".to_owned());
        }
        Ok(())
    }

    /// How deep structs nest in each object (0 for a table). `check_layout` made a
    /// struct hold only smaller structs, so going by size computes the inner ones first.
    fn struct_depths(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.objects.len()).collect();
        order.sort_by_key(|&index| self.objects[index].bytesize);
        let mut depths = vec![0; self.objects.len()];
        for index in order {
            let object = &self.objects[index];
            if !object.is_struct {
                continue;
            }
            let inner = object
                .fields
                .iter()
                .filter(|field| {
                    field.ty.base == Base::Obj
                        || (field.ty.base == Base::Array && field.ty.element == Base::Obj)
                })
                .map(|field| depths[field.ty.index as usize])
                .max()
                .unwrap_or(0);
            depths[index] = inner + 1;
        }
        depths
    }

    /// Whether buffers are verified before they are decoded (the default); without it
    /// every read is still bounds-checked.
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// The root table's full name.
    pub fn root_table(&self) -> &str {
        &self.objects[self.root].name
    }

    /// The root table's field names.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.objects[self.root]
            .fields
            .iter()
            .map(|field| field.name.as_str())
    }

    /// Decodes one buffer (its root table) to a JSON object. Errors name the field
    /// and the byte.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let reader = Reader::new(bytes, self.verify);
        let root = reader
            .deref(0)
            .map_err(|error| format!("no root table: {error}"))?;
        self.read_table(&reader, root, self.root, "", 0)
    }

    fn read_table(
        &self,
        reader: &Reader<'_>,
        at: usize,
        object: usize,
        path: &str,
        depth: usize,
    ) -> Result<Value, String> {
        too_deep(depth, path)?;
        let object = &self.objects[object];
        let table = reader
            .table(at)
            .map_err(|error| format!("{}: {error}", name_of(path, &object.name)))?;
        let mut out = Map::new();
        for field in &object.fields {
            let here = join(path, &field.name);
            let located = reader
                .field(table, field.offset)
                .map_err(|error| format!("field {here}: {error}"))?;
            let value = match located {
                None if field.required && reader.verify => {
                    return Err(format!("field {here}: required but missing"));
                }
                None if field.ty.base.scalar_size() > 0 && !field.optional => {
                    self.default_of(field)
                }
                None => continue,
                Some(pos) => self
                    .read_field(reader, table, object, field, pos, &here, depth)
                    .map_err(|error| prefix(&here, error))?,
            };
            reader.count(1)?;
            out.insert(field.name.clone(), value);
        }
        Ok(Value::Object(out))
    }

    #[allow(clippy::too_many_arguments)]
    fn read_field(
        &self,
        reader: &Reader<'_>,
        table: Table,
        object: &Object,
        field: &Field,
        pos: usize,
        path: &str,
        depth: usize,
    ) -> Result<Value, String> {
        match field.ty.base {
            Base::Union => {
                let type_field = object
                    .fields
                    .iter()
                    .find(|other| other.id + 1 == field.id && other.ty.base == Base::UType)
                    .ok_or("a union without its _type field")?;
                let variant = match reader.field(table, type_field.offset)? {
                    Some(at) => i64::from(reader.take::<1>(at)?[0]),
                    None => 0,
                };
                let union = &self.enums[field.ty.index as usize];
                match union.values.iter().find(|(value, ..)| *value == variant) {
                    Some((_, _, Some(target))) => {
                        let at = reader.deref(pos)?;
                        self.read_table(reader, at, *target, path, depth + 1)
                    }
                    _ if reader.verify => Err(format!(
                        "union type {variant} is not a variant of {}",
                        union.name
                    )),
                    _ => Ok(Value::Null),
                }
            }
            _ => self.read_value(reader, field.ty.base, field.ty, pos, path, depth),
        }
    }

    /// A value of `base` (with `ty` for its element, index and length) at `pos`.
    fn read_value(
        &self,
        reader: &Reader<'_>,
        base: Base,
        ty: Type,
        pos: usize,
        path: &str,
        depth: usize,
    ) -> Result<Value, String> {
        if base.scalar_size() > 0 {
            return self.read_scalar(reader, base, ty.index, pos);
        }
        match base {
            Base::String => reader.string(pos).map(Value::String),
            Base::Obj => {
                let index = ty.index as usize;
                if self.objects[index].is_struct {
                    self.read_struct(reader, pos, index, path, depth + 1)
                } else {
                    let at = reader.deref(pos)?;
                    self.read_table(reader, at, index, path, depth + 1)
                }
            }
            Base::Vector => {
                let element = self.element_size(ty);
                let (start, len) = reader.vector(pos, element)?;
                reader.count(len)?;
                let element_type = Type {
                    base: ty.element,
                    ..ty
                };
                (0..len)
                    .map(|index| {
                        self.read_value(
                            reader,
                            ty.element,
                            element_type,
                            start + index * element,
                            &format!("{path}[{index}]"),
                            depth + 1,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            Base::Array => {
                let element = self.element_size(ty);
                let element_type = Type {
                    base: ty.element,
                    ..ty
                };
                (0..usize::from(ty.fixed_length))
                    .map(|index| {
                        self.read_value(
                            reader,
                            ty.element,
                            element_type,
                            pos + index * element,
                            &format!("{path}[{index}]"),
                            depth + 1,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            other => Err(format!("{other:?} values are not supported")),
        }
    }

    fn read_struct(
        &self,
        reader: &Reader<'_>,
        pos: usize,
        object: usize,
        path: &str,
        depth: usize,
    ) -> Result<Value, String> {
        too_deep(depth, path)?;
        let object = &self.objects[object];
        reader.aligned(pos, object.minalign)?;
        let mut out = Map::new();
        for field in &object.fields {
            let here = join(path, &field.name);
            let value = self
                .read_value(
                    reader,
                    field.ty.base,
                    field.ty,
                    pos + usize::from(field.offset),
                    &here,
                    depth,
                )
                .map_err(|error| prefix(&here, error))?;
            reader.count(1)?;
            out.insert(field.name.clone(), value);
        }
        Ok(Value::Object(out))
    }

    /// Bytes per element of a vector or array of `ty`.
    fn element_size(&self, ty: Type) -> usize {
        match ty.element {
            Base::Obj if self.objects[ty.index as usize].is_struct => {
                self.objects[ty.index as usize].bytesize
            }
            base if base.scalar_size() > 0 => base.scalar_size(),
            _ => 4,
        }
    }

    fn read_scalar(
        &self,
        reader: &Reader<'_>,
        base: Base,
        index: i32,
        pos: usize,
    ) -> Result<Value, String> {
        reader.aligned(pos, base.scalar_size())?;
        let number: Value = match base {
            Base::Bool => return Ok(Value::Bool(reader.take::<1>(pos)?[0] != 0)),
            Base::Byte => i8::from_le_bytes(reader.take(pos)?).into(),
            Base::UByte | Base::UType => u8::from_le_bytes(reader.take(pos)?).into(),
            Base::Short => i16::from_le_bytes(reader.take(pos)?).into(),
            Base::UShort => u16::from_le_bytes(reader.take(pos)?).into(),
            Base::Int => i32::from_le_bytes(reader.take(pos)?).into(),
            Base::UInt => u32::from_le_bytes(reader.take(pos)?).into(),
            Base::Long => i64::from_le_bytes(reader.take(pos)?).into(),
            Base::ULong => u64::from_le_bytes(reader.take(pos)?).into(),
            Base::Float => f64::from(f32::from_le_bytes(reader.take(pos)?)).into(),
            Base::Double => f64::from_le_bytes(reader.take(pos)?).into(),
            other => return Err(format!("{other:?} is not a scalar")),
        };
        Ok(self.enum_name(index, &number).unwrap_or(number))
    }

    /// The name of an enum-typed integer's value, if it has one.
    fn enum_name(&self, index: i32, number: &Value) -> Option<Value> {
        let values = &self.enums.get(usize::try_from(index).ok()?)?.values;
        let number = number
            .as_i64()
            .or_else(|| number.as_u64().map(|n| n as i64))?;
        values
            .iter()
            .find(|(value, ..)| *value == number)
            .map(|(_, name, _)| Value::String(name.clone()))
    }

    fn default_of(&self, field: &Field) -> Value {
        let number: Value = match field.ty.base {
            Base::Bool => return Value::Bool(field.default_integer != 0),
            Base::Float | Base::Double => field.default_real.into(),
            Base::ULong => (field.default_integer as u64).into(),
            _ => field.default_integer.into(),
        };
        self.enum_name(field.ty.index, &number).unwrap_or(number)
    }
}

/// Refuses nesting deeper than [`MAX_DEPTH`].
fn too_deep(depth: usize, path: &str) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{path}: nested deeper than {MAX_DEPTH}"));
    }
    Ok(())
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn name_of<'a>(path: &'a str, object: &'a str) -> &'a str {
    if path.is_empty() { object } else { path }
}

/// Prefixes `field <path>: ` unless the error already names a field.
fn prefix(path: &str, error: String) -> String {
    if error.starts_with("field ") {
        error
    } else {
        format!("field {path}: {error}")
    }
}

// ---- writing buffers -------------------------------------------------------------------

/// A buffer being written front to back: a table's children come after it, and the
/// offsets to them (always forward, as FlatBuffers needs) are patched in once they are
/// written.
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// Pads so that `extra` bytes from here the buffer is aligned to `align`.
    fn align_after(&mut self, align: usize, extra: usize) {
        while !(self.out.len() + extra).is_multiple_of(align) {
            self.out.push(0);
        }
    }

    /// Points the offset at `at` to `target`.
    fn patch(&mut self, at: usize, target: usize) -> Result<(), String> {
        let offset =
            u32::try_from(target - at).map_err(|_| "the buffer would be over 4 GiB".to_owned())?;
        self.out[at..at + 4].copy_from_slice(&offset.to_le_bytes());
        Ok(())
    }

    fn string(&mut self, text: &str) -> Result<usize, String> {
        self.align_after(4, 0);
        let at = self.out.len();
        let len = u32::try_from(text.len()).map_err(|_| "a string over 4 GiB".to_owned())?;
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(text.as_bytes());
        self.out.push(0);
        Ok(at)
    }
}

/// An offset a table or vector holds, to patch once its child is written.
struct Child<'v> {
    at: usize,
    kind: ChildKind,
    value: &'v Value,
    path: String,
}

enum ChildKind {
    String,
    Table(usize),
    Vector(Type),
}

impl FlatBufferSchema {
    /// Encodes a JSON object as one buffer of the root table (with the schema's file
    /// identifier, if it has one). Errors name the field.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        self.encode_with_capacity(value, 256)
    }

    /// [`FlatBufferSchema::encode`] into a buffer of `capacity` bytes to start with.
    pub fn encode_with_capacity(&self, value: &Value, capacity: usize) -> Result<Vec<u8>, String> {
        let mut writer = Writer {
            out: Vec::with_capacity(capacity),
        };
        writer.out.extend_from_slice(&[0; 4]);
        if let Some(ident) = self.file_ident {
            writer.out.extend_from_slice(&ident);
        }
        let root = self.write_table(&mut writer, value, self.root, "", 0)?;
        writer.patch(0, root)?;
        Ok(writer.out)
    }

    fn write_table(
        &self,
        writer: &mut Writer,
        value: &Value,
        object: usize,
        path: &str,
        depth: usize,
    ) -> Result<usize, String> {
        let object = &self.objects[object];
        let Value::Object(map) = value else {
            return Err(format!(
                "{}: expected an object for table {}",
                name_of(path, "the payload"),
                object.name
            ));
        };
        too_deep(depth, path)?;
        // The fields present, with their size and alignment in the table.
        let mut slots: Vec<(&Field, &Value, usize, usize)> = Vec::new();
        for field in &object.fields {
            let here = || join(path, &field.name);
            let value = match map.get(&field.name) {
                None | Some(Value::Null) if field.required => {
                    return Err(format!("field {}: required but missing", here()));
                }
                None | Some(Value::Null) => continue,
                Some(value) => value,
            };
            let (size, align) = match field.ty.base {
                Base::Obj if self.objects[field.ty.index as usize].is_struct => {
                    let inner = &self.objects[field.ty.index as usize];
                    (inner.bytesize, inner.minalign)
                }
                Base::Array => {
                    return Err(format!(
                        "field {}: arrays are only allowed in structs",
                        here()
                    ));
                }
                base if base.scalar_size() > 0 => (base.scalar_size(), base.scalar_size()),
                _ => (4, 4),
            };
            slots.push((field, value, size, align));
        }
        slots.sort_by_key(|&(.., align)| std::cmp::Reverse(align));
        let mut offsets = Vec::with_capacity(slots.len());
        let mut table_len: usize = 4;
        for &(_, _, size, align) in &slots {
            table_len = table_len.div_ceil(align) * align;
            offsets.push(table_len);
            table_len += size;
        }
        let table_align = slots.iter().map(|slot| slot.3).max().unwrap_or(4).max(4);
        // Vtable offsets were checked to be even and at least 4 (`check_layout`).
        let entry = |field: &Field| usize::from(field.offset - 4) / 2;
        let slot_count = slots
            .iter()
            .map(|(field, ..)| entry(field) + 1)
            .max()
            .unwrap_or(0);
        let too_big = || format!("{}: a table over 64 KiB", name_of(path, &object.name));
        let mut vtable = vec![0u16; 2 + slot_count];
        vtable[0] = u16::try_from(4 + 2 * slot_count).map_err(|_| too_big())?;
        vtable[1] = u16::try_from(table_len).map_err(|_| too_big())?;
        for ((field, ..), offset) in slots.iter().zip(&offsets) {
            vtable[2 + entry(field)] = *offset as u16;
        }
        writer.align_after(2, 0);
        let vtable_at = writer.out.len();
        for entry in vtable {
            writer.out.extend_from_slice(&entry.to_le_bytes());
        }
        writer.align_after(table_align, 0);
        let table = writer.out.len();
        let soffset = i32::try_from(table - vtable_at).map_err(|_| too_big())?;
        writer.out.extend_from_slice(&soffset.to_le_bytes());
        writer.out.resize(table + table_len, 0);
        let mut children = Vec::new();
        for ((field, value, size, _), offset) in slots.iter().zip(offsets) {
            let at = table + offset;
            let here = join(path, &field.name);
            match field.ty.base {
                Base::String => children.push(Child {
                    at,
                    kind: ChildKind::String,
                    value,
                    path: here,
                }),
                Base::Vector => children.push(Child {
                    at,
                    kind: ChildKind::Vector(field.ty),
                    value,
                    path: here,
                }),
                Base::Union => {
                    let target = self.union_table(object, field, map, &here)?;
                    children.push(Child {
                        at,
                        kind: ChildKind::Table(target),
                        value,
                        path: here,
                    });
                }
                Base::Obj if !self.objects[field.ty.index as usize].is_struct => {
                    children.push(Child {
                        at,
                        kind: ChildKind::Table(field.ty.index as usize),
                        value,
                        path: here,
                    });
                }
                _ => self.put(
                    &mut writer.out[at..at + size],
                    field.ty.base,
                    field.ty,
                    value,
                    &here,
                )?,
            }
        }
        self.write_children(writer, children, depth)?;
        Ok(table)
    }

    fn write_children(
        &self,
        writer: &mut Writer,
        children: Vec<Child<'_>>,
        depth: usize,
    ) -> Result<(), String> {
        for child in children {
            let target = match child.kind {
                ChildKind::String => match child.value {
                    Value::String(text) => writer.string(text),
                    other => Err(format!(
                        "field {}: expected a string, got {other}",
                        child.path
                    )),
                },
                ChildKind::Table(object) => {
                    self.write_table(writer, child.value, object, &child.path, depth + 1)
                }
                ChildKind::Vector(ty) => {
                    self.write_vector(writer, ty, child.value, &child.path, depth + 1)
                }
            }?;
            writer.patch(child.at, target)?;
        }
        Ok(())
    }

    /// The table of a union field's value, from its `_type` field in the JSON.
    fn union_table(
        &self,
        object: &Object,
        field: &Field,
        map: &Map<String, Value>,
        path: &str,
    ) -> Result<usize, String> {
        let union = &self.enums[field.ty.index as usize];
        let type_field = object
            .fields
            .iter()
            .find(|other| other.id + 1 == field.id && other.ty.base == Base::UType)
            .ok_or_else(|| format!("field {path}: a union without its _type field"))?;
        let variant = map.get(&type_field.name).ok_or_else(|| {
            format!(
                "field {path}: needs {} to say which variant it is",
                type_field.name
            )
        })?;
        union
            .values
            .iter()
            .find(|(number, name, _)| {
                variant.as_str() == Some(name.as_str()) || variant.as_i64() == Some(*number)
            })
            .and_then(|(.., object)| *object)
            .ok_or_else(|| {
                format!(
                    "field {}: {variant} is not a variant of {}",
                    type_field.name, union.name
                )
            })
    }

    fn write_vector(
        &self,
        writer: &mut Writer,
        ty: Type,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<usize, String> {
        too_deep(depth, path)?;
        let Value::Array(items) = value else {
            return Err(format!("field {path}: expected an array, got {value}"));
        };
        let size = self.element_size(ty);
        let align = match ty.element {
            Base::Obj if self.objects[ty.index as usize].is_struct => {
                self.objects[ty.index as usize].minalign
            }
            base if base.scalar_size() > 0 => base.scalar_size(),
            _ => 4,
        };
        writer.align_after(align.max(4), 4);
        let at = writer.out.len();
        let len =
            u32::try_from(items.len()).map_err(|_| format!("field {path}: too many items"))?;
        writer.out.extend_from_slice(&len.to_le_bytes());
        let start = writer.out.len();
        writer.out.resize(start + items.len() * size, 0);
        let element_type = Type {
            base: ty.element,
            ..ty
        };
        let mut children = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let here = format!("{path}[{index}]");
            let item_at = start + index * size;
            let kind = match ty.element {
                Base::String => ChildKind::String,
                Base::Obj if !self.objects[ty.index as usize].is_struct => {
                    ChildKind::Table(ty.index as usize)
                }
                _ => {
                    self.put(
                        &mut writer.out[item_at..item_at + size],
                        ty.element,
                        element_type,
                        item,
                        &here,
                    )?;
                    continue;
                }
            };
            children.push(Child {
                at: item_at,
                kind,
                value: item,
                path: here,
            });
        }
        self.write_children(writer, children, depth)?;
        Ok(at)
    }

    /// Writes a scalar, struct or array held inline into `out` (exactly its size).
    fn put(
        &self,
        out: &mut [u8],
        base: Base,
        ty: Type,
        value: &Value,
        path: &str,
    ) -> Result<(), String> {
        match base {
            Base::Obj => {
                let object = &self.objects[ty.index as usize];
                for field in &object.fields {
                    let here = join(path, &field.name);
                    let value = value
                        .get(&field.name)
                        .ok_or_else(|| format!("field {here}: a struct needs all its fields"))?;
                    let start = usize::from(field.offset);
                    let size = match field.ty.base {
                        Base::Obj => self.objects[field.ty.index as usize].bytesize,
                        Base::Array => {
                            self.element_size(field.ty) * usize::from(field.ty.fixed_length)
                        }
                        base => base.scalar_size(),
                    };
                    let slot = out
                        .get_mut(start..start + size)
                        .ok_or_else(|| format!("field {here}: outside its struct"))?;
                    self.put(slot, field.ty.base, field.ty, value, &here)?;
                }
                Ok(())
            }
            Base::Array => {
                let items = value
                    .as_array()
                    .filter(|items| items.len() == usize::from(ty.fixed_length))
                    .ok_or_else(|| {
                        format!(
                            "field {path}: expected an array of {} items",
                            ty.fixed_length
                        )
                    })?;
                let size = self.element_size(ty);
                let element_type = Type {
                    base: ty.element,
                    ..ty
                };
                for (index, (item, slot)) in items.iter().zip(out.chunks_mut(size)).enumerate() {
                    self.put(
                        slot,
                        ty.element,
                        element_type,
                        item,
                        &format!("{path}[{index}]"),
                    )?;
                }
                Ok(())
            }
            _ => {
                let bytes = self.scalar_bytes(base, ty.index, value, path)?;
                out.copy_from_slice(&bytes[..base.scalar_size()]);
                Ok(())
            }
        }
    }

    /// A scalar's little-endian bytes (the first `scalar_size` of them count).
    fn scalar_bytes(
        &self,
        base: Base,
        index: i32,
        value: &Value,
        path: &str,
    ) -> Result<[u8; 8], String> {
        let wrong = || format!("field {path}: {value} is not a {}", scalar_name(base));
        let mut out = [0u8; 8];
        match base {
            Base::Bool => out[0] = u8::from(value.as_bool().ok_or_else(wrong)?),
            Base::Float => {
                let number = value.as_f64().ok_or_else(wrong)? as f32;
                out[..4].copy_from_slice(&number.to_le_bytes());
            }
            Base::Double => out.copy_from_slice(&value.as_f64().ok_or_else(wrong)?.to_le_bytes()),
            _ => {
                // An enum value's name, or a number.
                let named = value.as_str().and_then(|name| {
                    let values = &self.enums.get(usize::try_from(index).ok()?)?.values;
                    values
                        .iter()
                        .find(|(_, symbol, _)| symbol == name)
                        .map(|(number, ..)| i128::from(*number))
                });
                let number = named
                    .or_else(|| value.as_i64().map(i128::from))
                    .or_else(|| value.as_u64().map(i128::from))
                    .ok_or_else(wrong)?;
                let fits = match base {
                    Base::Byte => i8::try_from(number)
                        .map(|n| out[..1].copy_from_slice(&n.to_le_bytes()))
                        .is_ok(),
                    Base::UByte | Base::UType => u8::try_from(number).map(|n| out[0] = n).is_ok(),
                    Base::Short => i16::try_from(number)
                        .map(|n| out[..2].copy_from_slice(&n.to_le_bytes()))
                        .is_ok(),
                    Base::UShort => u16::try_from(number)
                        .map(|n| out[..2].copy_from_slice(&n.to_le_bytes()))
                        .is_ok(),
                    Base::Int => i32::try_from(number)
                        .map(|n| out[..4].copy_from_slice(&n.to_le_bytes()))
                        .is_ok(),
                    Base::UInt => u32::try_from(number)
                        .map(|n| out[..4].copy_from_slice(&n.to_le_bytes()))
                        .is_ok(),
                    Base::Long => i64::try_from(number)
                        .map(|n| out.copy_from_slice(&n.to_le_bytes()))
                        .is_ok(),
                    Base::ULong => u64::try_from(number)
                        .map(|n| out.copy_from_slice(&n.to_le_bytes()))
                        .is_ok(),
                    _ => false,
                };
                if !fits {
                    return Err(wrong());
                }
            }
        }
        Ok(out)
    }
}

fn scalar_name(base: Base) -> &'static str {
    match base {
        Base::Bool => "bool",
        Base::Byte => "byte (-128..127)",
        Base::UByte | Base::UType => "ubyte (0..255)",
        Base::Short => "short",
        Base::UShort => "ushort",
        Base::Int => "int",
        Base::UInt => "uint",
        Base::Long => "long",
        Base::ULong => "ulong",
        Base::Float => "float",
        Base::Double => "double",
        _ => "scalar",
    }
}
