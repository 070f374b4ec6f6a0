//! CDC mode: what `test_decoding` prints, read into upstream's `DatabaseRecord`s, and
//! the commit boundaries the slot may be advanced to.
//!
//! Why `test_decoding` and the SQL interface: the slot is read with
//! `pg_logical_slot_peek_changes`, which leaves it where it is, so nothing is consumed
//! before Iggy stored it; the source moves it with `pg_replication_slot_advance` once
//! the runtime accepted the batch. `pgoutput` speaks only the streaming replication
//! protocol (its binary messages are refused by the SQL functions), which the client
//! crate does not have; `test_decoding` ships with PostgreSQL (contrib, in every
//! package) and is what upstream's slots use, so an existing slot of upstream's keeps
//! working. Its text is parsed here as upstream reads it: same columns, same values.
//!
//! Only whole transactions are emitted: `peek_changes` returns a transaction only once
//! it committed, whole, and the batch's boundary is the end of its last `COMMIT`. The
//! `BEGIN`/`COMMIT` rows themselves make no messages.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// A WAL position (`pg_lsn`), as PostgreSQL prints it: `16/B374D848`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Reads `hi/lo` (hexadecimal halves), as `pg_lsn`'s text.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u32::from_str_radix(high, 16).ok()?;
        let low = u32::from_str_radix(low, 16).ok()?;
        Some(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A row change's kind (upstream's `capture_operations` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new row.
    Insert,
    /// A changed row.
    Update,
    /// A removed row.
    Delete,
}

impl Operation {
    /// The kind for upstream's spelling (`INSERT`, `UPDATE`, `DELETE`).
    pub fn parse(text: &str) -> Option<Operation> {
        match text {
            "INSERT" => Some(Operation::Insert),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            _ => None,
        }
    }

    /// Upstream's spelling, the record's `operation_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// One row change as `test_decoding` printed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The table's schema, unquoted.
    pub schema: String,
    /// The table's name, unquoted.
    pub table: String,
    /// What happened to the row.
    pub operation: Operation,
    /// The new row (INSERT, UPDATE) or the deleted row's identity columns (DELETE).
    pub data: Map<String, Value>,
    /// The old row's identity (`old-key:`), printed for an UPDATE that changed the key
    /// or on a table with `REPLICA IDENTITY FULL` (then the whole old row).
    pub old: Option<Map<String, Value>>,
}

/// Which changes the source emits: the configured tables (none: every table) and
/// operations.
#[derive(Debug, Clone)]
pub struct Capture {
    /// `name` (any schema) or `schema.name`, as configured.
    pub tables: Vec<String>,
    /// The operations to emit.
    pub operations: Vec<Operation>,
}

impl Capture {
    /// Whether `change` is one to emit. A configured `schema.name` matches that table
    /// only; a bare `name` matches it in any schema (as upstream); names are compared
    /// exactly, as PostgreSQL's quoted identifiers are.
    pub fn wants(&self, change: &Change) -> bool {
        self.operations.contains(&change.operation)
            && (self.tables.is_empty()
                || self
                    .tables
                    .iter()
                    .any(|wanted| match wanted.split_once('.') {
                        Some((schema, table)) => schema == change.schema && table == change.table,
                        None => *wanted == change.table,
                    }))
    }
}

/// Upstream's `DatabaseRecord`, field for field and in its order.
#[derive(Serialize)]
struct Record<'a> {
    table_name: &'a str,
    operation_type: &'a str,
    timestamp: &'a str,
    data: &'a Map<String, Value>,
    old_data: Option<&'a Map<String, Value>>,
}

/// `change` as upstream's record JSON: `data` is the new row (for a DELETE, the deleted
/// row's identity, where upstream puts it); `old_data` the old row's identity when
/// PostgreSQL printed it (UPDATE), and for a DELETE the deleted row again, so a
/// consumer finds a change's old values in one place.
pub fn record(change: &Change, timestamp: &str) -> Result<Vec<u8>, serde_json::Error> {
    let old_data = match change.operation {
        Operation::Delete => Some(&change.data),
        Operation::Insert | Operation::Update => change.old.as_ref(),
    };
    serde_json::to_vec(&Record {
        table_name: &change.table,
        operation_type: change.operation.as_str(),
        timestamp,
        data: &change.data,
        old_data,
    })
}

/// What one line of `test_decoding` output is.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `BEGIN` (with or without the xid).
    Begin,
    /// `COMMIT` (with or without the xid and time).
    Commit,
    /// A row change.
    Change(Change),
    /// Something else: a TRUNCATE, a logical message, a line this parser cannot read.
    Other,
}

/// Reads one line of `test_decoding` output.
pub fn parse_line(line: &str) -> Line {
    if line == "BEGIN" || line.starts_with("BEGIN ") {
        return Line::Begin;
    }
    if line == "COMMIT" || line.starts_with("COMMIT ") {
        return Line::Commit;
    }
    match parse_change(line) {
        Some(change) => Line::Change(change),
        None => Line::Other,
    }
}

/// `table <schema>.<name>: <OP>: <columns>` (UPDATE: maybe `old-key: <columns>
/// new-tuple: <columns>`; DELETE: maybe `(no-tuple-data)`).
fn parse_change(line: &str) -> Option<Change> {
    let rest = line.strip_prefix("table ")?;
    let (schema, rest) = identifier(rest)?;
    let rest = rest.strip_prefix('.')?;
    let (table, rest) = identifier(rest)?;
    let rest = rest.strip_prefix(": ")?;
    let (operation, rest) = rest.split_once(':')?;
    let operation = Operation::parse(operation)?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (data, old) = if rest == "(no-tuple-data)" {
        (Map::new(), None)
    } else if let Some(old_key) = rest.strip_prefix("old-key: ") {
        let (old, rest) = columns(old_key, Some("new-tuple:"))?;
        let rest = rest.strip_prefix("new-tuple:")?;
        let (data, _) = columns(rest, None)?;
        (data, Some(old))
    } else {
        let (data, _) = columns(rest, None)?;
        (data, None)
    };
    if data.is_empty() && old.is_none() && rest != "(no-tuple-data)" {
        return None; // `INSERT:` with nothing after it: not a line PostgreSQL writes
    }
    Some(Change {
        schema,
        table,
        operation,
        data,
        old,
    })
}

/// An identifier as `quote_identifier` prints it: `"..."` with `""` for a quote, or
/// bare (lowercase letters, digits, `_`, `$`), up to a `.`, `:`, `[` or space.
fn identifier(text: &str) -> Option<(String, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.char_indices();
        while let Some((at, ch)) = chars.next() {
            if ch == '"' {
                if quoted[at + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                } else {
                    return Some((name, &quoted[at + 1..]));
                }
            } else {
                name.push(ch);
            }
        }
        return None; // unterminated
    }
    let end = text.find(['.', ':', '[', ' ']).unwrap_or(text.len());
    if end == 0 {
        return None;
    }
    Some((text[..end].to_owned(), &text[end..]))
}

/// `name[type]:value` pairs separated by spaces, until the end or a word `stop`.
/// Returns the columns and what follows them.
fn columns<'a>(mut text: &'a str, stop: Option<&str>) -> Option<(Map<String, Value>, &'a str)> {
    let mut out = Map::new();
    loop {
        text = text.trim_start_matches(' ');
        if text.is_empty() || stop.is_some_and(|stop| text.starts_with(stop)) {
            return Some((out, text));
        }
        let (name, rest) = identifier(text)?;
        let rest = type_name(rest)?;
        let rest = rest.strip_prefix(':')?;
        let (value, rest) = value(rest)?;
        out.insert(name, value);
        text = rest;
    }
}

/// Skips `[type]`, whose name may hold brackets of its own (`integer[]`).
fn type_name(text: &str) -> Option<&str> {
    if !text.starts_with('[') {
        return None;
    }
    let mut depth = 0_usize;
    for (at, ch) in text.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[at + 1..]);
                }
            }
            _ => {}
        }
    }
    None
}

/// A value: `'text'` (with `''` for a quote; may span lines) or a bare token up to a
/// space, read as upstream reads it.
fn value(text: &str) -> Option<(Value, &str)> {
    let Some(quoted) = text.strip_prefix('\'') else {
        let end = text.find(' ').unwrap_or(text.len());
        return Some((bare(&text[..end]), &text[end..]));
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((at, ch)) = chars.next() {
        if ch == '\'' {
            if quoted[at + 1..].starts_with('\'') {
                out.push('\'');
                chars.next();
            } else {
                return Some((Value::String(out), &quoted[at + 1..]));
            }
        } else {
            out.push(ch);
        }
    }
    None // unterminated: not a line PostgreSQL writes
}

/// An unquoted value (numbers, booleans, `null`): `null` and the TOAST placeholder of an
/// unchanged large value are null, `true`/`false` booleans, integers and finite
/// decimals numbers, anything else (`NaN`, `Infinity`) a string.
fn bare(token: &str) -> Value {
    match token {
        "null" | "unchanged-toast-datum" => Value::Null,
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => {
            if let Ok(integer) = token.parse::<i64>() {
                Value::from(integer)
            } else if let Some(number) = token
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Value::Number(number)
            } else {
                Value::String(token.to_owned())
            }
        }
    }
}

/// One row of `pg_logical_slot_peek_changes`: where it is and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The row's LSN; a `COMMIT` row's is the end of its commit record, the position
    /// the slot may be advanced to once the transaction is stored.
    pub lsn: Lsn,
    /// The `test_decoding` text.
    pub data: String,
}

/// One emitted change: the record's JSON, and what identifies it in the WAL.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// The end of the commit of the change's transaction.
    pub commit: Lsn,
    /// The change's place in its transaction (counting every change line).
    pub index: u32,
    /// The record, upstream's JSON.
    pub payload: Vec<u8>,
}

/// What a read of the slot gives.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decoded {
    /// The changes to emit, in commit order (and in order within a transaction).
    pub changes: Vec<Emitted>,
    /// The end of the last whole transaction read: the slot may move there once
    /// `changes` are stored. `None`: no transaction was complete.
    pub boundary: Option<Lsn>,
    /// Lines of captured tables that could not be read (logged by the caller).
    pub unreadable: Vec<(Lsn, String)>,
}

/// Sorts `rows` into whole transactions: each transaction's wanted changes are emitted
/// when its `COMMIT` is seen, unless the commit is at or before `done` (a batch already
/// accepted, read again because the slot was not advanced yet). Lines after the last
/// `COMMIT` (an incomplete transaction) are left for the next read.
pub fn decode(rows: &[Row], done: Option<Lsn>, capture: &Capture, timestamp: &str) -> Decoded {
    let mut decoded = Decoded::default();
    let mut open: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut index = 0_u32;
    for row in rows {
        match parse_line(&row.data) {
            Line::Begin => {
                open.clear();
                index = 0;
            }
            Line::Commit => {
                if done.is_none_or(|done| row.lsn > done) {
                    decoded
                        .changes
                        .extend(open.drain(..).map(|(index, payload)| Emitted {
                            commit: row.lsn,
                            index,
                            payload,
                        }));
                }
                open.clear();
                index = 0;
                decoded.boundary = Some(row.lsn);
            }
            Line::Change(change) => {
                if capture.wants(&change) {
                    match record(&change, timestamp) {
                        Ok(payload) => open.push((index, payload)),
                        Err(error) => decoded.unreadable.push((row.lsn, error.to_string())),
                    }
                }
                index += 1;
            }
            Line::Other => {
                // A change line of a captured table that does not parse would be lost
                // without a word; TRUNCATEs and logical messages are not changes.
                if row.data.starts_with("table ")
                    && !row.data.contains(": TRUNCATE:")
                    && mentions_captured(&row.data, capture)
                {
                    decoded.unreadable.push((row.lsn, row.data.clone()));
                }
                index += u32::from(row.data.starts_with("table "));
            }
        }
    }
    decoded
}

/// Whether an unreadable `table ...` line names one of the captured tables.
fn mentions_captured(line: &str, capture: &Capture) -> bool {
    capture.tables.is_empty()
        || capture.tables.iter().any(|table| {
            let bare = table.rsplit('.').next().unwrap_or(table);
            line.contains(bare)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(line: &str) -> Change {
        match parse_line(line) {
            Line::Change(change) => change,
            other => panic!("not a change: {other:?}"),
        }
    }

    fn all() -> Capture {
        Capture {
            tables: Vec::new(),
            operations: vec![Operation::Insert, Operation::Update, Operation::Delete],
        }
    }

    #[test]
    fn lsns_read_and_print_as_postgres_does() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!(Lsn::parse("0/1").unwrap() < Lsn::parse("1/0").unwrap());
        assert_eq!(Lsn::parse("nonsense"), None);
    }

    #[test]
    fn an_insert_reads_every_kind_of_value_as_upstream() {
        let c = change(
            r#"table public.probe_events: INSERT: id[integer]:2 name[text]:'it''s' amount[numeric]:12.50 active[boolean]:true tags[text[]]:'{a,b}' note[text]:null real_val[real]:NaN neg[real]:-0 "createdAt"[timestamp with time zone]:'2026-07-05 17:58:23+00'"#,
        );
        assert_eq!(
            (c.schema.as_str(), c.table.as_str()),
            ("public", "probe_events")
        );
        assert_eq!(c.operation, Operation::Insert);
        assert_eq!(
            Value::Object(c.data),
            json!({"id": 2, "name": "it's", "amount": 12.5, "active": true, "tags": "{a,b}",
                   "note": null, "real_val": "NaN", "neg": 0,
                   "createdAt": "2026-07-05 17:58:23+00"})
        );
        assert_eq!(c.old, None);
    }

    #[test]
    fn an_update_of_the_key_has_the_old_key_and_the_new_tuple() {
        let c = change(
            "table public.t: UPDATE: old-key: id[integer]:4 new-tuple: id[integer]:1004 name[text]:'new-tuple: not a marker'",
        );
        assert_eq!(c.operation, Operation::Update);
        assert_eq!(c.old.map(Value::Object), Some(json!({"id": 4})));
        assert_eq!(
            Value::Object(c.data),
            json!({"id": 1004, "name": "new-tuple: not a marker"})
        );
    }

    #[test]
    fn a_delete_record_has_the_identity_as_data_and_old_data() {
        let c = change("table public.t: DELETE: id[integer]:5");
        let record: Value = serde_json::from_slice(&record(&c, "T").unwrap()).unwrap();
        assert_eq!(
            record,
            json!({"table_name": "t", "operation_type": "DELETE", "timestamp": "T",
                   "data": {"id": 5}, "old_data": {"id": 5}})
        );
        let none = change("table public.t: DELETE: (no-tuple-data)");
        assert!(none.data.is_empty());
    }

    #[test]
    fn quoted_names_and_multiline_values_are_read() {
        let c = change(
            "table \"My.Schema\".\"Ta\"\"ble\": INSERT: \"a[b\"[text]:'line\nnext' x[integer]:1",
        );
        assert_eq!(c.schema, "My.Schema");
        assert_eq!(c.table, "Ta\"ble");
        assert_eq!(Value::Object(c.data), json!({"a[b": "line\nnext", "x": 1}));
    }

    #[test]
    fn transaction_lines_and_other_lines_make_no_changes() {
        assert_eq!(parse_line("BEGIN 734"), Line::Begin);
        assert_eq!(parse_line("COMMIT 734"), Line::Commit);
        assert_eq!(parse_line("BEGIN"), Line::Begin);
        for line in [
            "table public.t: TRUNCATE: (no-flags)",
            "table public.t: INSERT: id[integer",
            "table public.t: INSERT: id[integer]:'unterminated",
            "table public.t: INSERT:",
            "garbage",
            "",
        ] {
            assert_eq!(parse_line(line), Line::Other, "{line:?}");
        }
    }

    #[test]
    fn tables_match_by_schema_when_qualified_and_by_name_alone_otherwise() {
        let c = change("table public.users: INSERT: id[integer]:1");
        let capture = |tables: &[&str], operations: Vec<Operation>| Capture {
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            operations,
        };
        let every = || vec![Operation::Insert, Operation::Update, Operation::Delete];
        assert!(capture(&["users"], every()).wants(&c));
        assert!(capture(&["public.users"], every()).wants(&c));
        assert!(!capture(&["other.users"], every()).wants(&c));
        assert!(!capture(&["Users"], every()).wants(&c));
        assert!(!capture(&["users"], vec![Operation::Delete]).wants(&c));
    }

    fn rows(lines: &[(u64, &str)]) -> Vec<Row> {
        lines
            .iter()
            .map(|(lsn, data)| Row {
                lsn: Lsn(*lsn),
                data: (*data).to_owned(),
            })
            .collect()
    }

    #[test]
    fn changes_are_emitted_per_whole_transaction_up_to_the_last_commit() {
        let read = rows(&[
            (10, "BEGIN"),
            (11, "table public.t: INSERT: id[integer]:1"),
            (12, "table public.other: INSERT: id[integer]:9"),
            (13, "table public.t: UPDATE: id[integer]:1"),
            (20, "COMMIT"),
            (21, "BEGIN"),
            (22, "table public.t: DELETE: id[integer]:1"),
        ]);
        let capture = Capture {
            tables: vec!["t".to_owned()],
            ..all()
        };
        let decoded = decode(&read, None, &capture, "T");
        assert_eq!(decoded.boundary, Some(Lsn(20)));
        let seen: Vec<(u64, u32)> = decoded
            .changes
            .iter()
            .map(|c| (c.commit.0, c.index))
            .collect();
        assert_eq!(seen, [(20, 0), (20, 2)], "the open transaction waits");
        assert!(decoded.unreadable.is_empty());
    }

    #[test]
    fn transactions_already_accepted_are_not_emitted_again() {
        let read = rows(&[
            (1, "BEGIN"),
            (2, "table public.t: INSERT: id[integer]:1"),
            (3, "COMMIT"),
            (4, "BEGIN"),
            (5, "table public.t: INSERT: id[integer]:2"),
            (6, "COMMIT"),
        ]);
        let decoded = decode(&read, Some(Lsn(3)), &all(), "T");
        assert_eq!(decoded.changes.len(), 1);
        assert_eq!(decoded.changes[0].commit, Lsn(6));
        assert_eq!(decoded.boundary, Some(Lsn(6)));
    }

    #[test]
    fn an_unreadable_change_of_a_captured_table_is_reported() {
        let read = rows(&[
            (1, "BEGIN"),
            (2, "table public.t: INSERT: id[integer]:'broken"),
            (3, "COMMIT"),
        ]);
        let decoded = decode(&read, None, &all(), "T");
        assert!(decoded.changes.is_empty());
        assert_eq!(decoded.unreadable.len(), 1);
        assert_eq!(decoded.boundary, Some(Lsn(3)));
    }
}
