//! Avro binary datums written straight from a change, for the schemas
//! [`crate::avro`] generates.
//!
//! A generic encoder first builds a tree of owned Avro values (a `String`
//! per name and per value, a `Vec` per record), then validates the tree
//! against the schema, then writes it: most of the Kafka path's time. The
//! layout of every generated schema follows from the table's
//! [`ColumnType`]s, so the bytes can be written directly in one walk:
//!
//! - `null` nothing; `boolean` one byte; `long` a zig-zag varint; `double`
//!   eight little-endian bytes; `string` and `bytes` a length, then the
//!   bytes; a union the branch index, then the value; a record its fields in
//!   order; an array one block of `count` items, then a zero count.
//!
//! The tests check every byte against the generic encoder.

use dynamo_cdc_core::{AttributeValue, Change, Item, Op};

use crate::column::ColumnType;
use crate::schema::TableSchema;

/// Why a value does not fit its layout (the schema check was skipped or
/// disagrees): the change is dead-lettered with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch(pub(crate) String);

pub(crate) struct Datum {
    pub(crate) out: Vec<u8>,
    /// DynamoDB-JSON text of the value being written.
    scratch: String,
}

impl Datum {
    /// A datum written after what `out` already holds (a wire header, so
    /// that the message is not copied to put one in front).
    pub(crate) fn after(out: Vec<u8>) -> Self {
        Datum {
            out,
            scratch: String::new(),
        }
    }

    fn long(&mut self, n: i64) {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z >= 0x80 {
            self.out.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.out.push(z as u8);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.long(b.len() as i64);
        self.out.extend_from_slice(b);
    }

    fn string(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn boolean(&mut self, b: bool) {
        self.out.push(u8::from(b));
    }

    /// `["null", long]`
    fn optional_long(&mut self, n: Option<i64>) {
        match n {
            Some(n) => {
                self.long(1);
                self.long(n);
            }
            None => self.long(0),
        }
    }

    /// `["null", string]`
    fn optional_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.long(1);
                self.string(s);
            }
            None => self.long(0),
        }
    }

    /// An array of `count` items written by `each`.
    fn array<T>(
        &mut self,
        items: impl ExactSizeIterator<Item = T>,
        mut each: impl FnMut(&mut Self, T) -> Result<(), Mismatch>,
    ) -> Result<(), Mismatch> {
        if items.len() > 0 {
            self.long(items.len() as i64);
            for item in items {
                each(self, item)?;
            }
        }
        self.long(0);
        Ok(())
    }

    /// A nullable field: the `null` branch for absent and `NULL` values. A
    /// `Null` layout is the bare `null` type, which takes no bytes.
    pub(crate) fn field(
        &mut self,
        ty: &ColumnType,
        value: Option<&AttributeValue>,
    ) -> Result<(), Mismatch> {
        self.field_in(ty, 1, value)
    }

    /// [`Datum::field`] for a union whose branch `branch` is `ty` (a
    /// widened column's union keeps its former layouts before it).
    fn field_in(
        &mut self,
        ty: &ColumnType,
        branch: i64,
        value: Option<&AttributeValue>,
    ) -> Result<(), Mismatch> {
        if *ty == ColumnType::Null {
            return Ok(());
        }
        match value {
            None | Some(AttributeValue::Null) => {
                self.long(0);
                Ok(())
            }
            Some(v) => {
                self.long(branch);
                self.plain(ty, v)
            }
        }
    }

    /// A value in its layout, without the null union.
    pub(crate) fn plain(&mut self, ty: &ColumnType, v: &AttributeValue) -> Result<(), Mismatch> {
        let mismatch = || {
            Mismatch(format!(
                "a {} value does not fit the {ty:?} layout",
                v.tag()
            ))
        };
        match (ty, v) {
            (ColumnType::Json, v) => {
                // The text's length comes first, so the text goes to a
                // scratch string (kept for the next value) before `out`.
                let mut text = std::mem::take(&mut self.scratch);
                text.clear();
                v.write_ddb_json(&mut text);
                self.string(&text);
                self.scratch = text;
            }
            (ColumnType::Utf8, AttributeValue::S(s)) => self.string(s),
            (ColumnType::DecimalString, AttributeValue::N(n)) => self.string(n.as_str()),
            (ColumnType::Int64, AttributeValue::N(n)) => {
                self.long(n.to_i64().ok_or_else(mismatch)?)
            }
            (ColumnType::Float64, AttributeValue::N(n)) => {
                self.out.extend_from_slice(&n.to_f64().to_le_bytes());
            }
            (ColumnType::Decimal { scale, .. }, AttributeValue::N(n)) => {
                let unscaled = n.to_decimal128(*scale).ok_or_else(mismatch)?;
                self.bytes(&unscaled.to_be_bytes());
            }
            (ColumnType::Binary, AttributeValue::B(b)) => self.bytes(b),
            (ColumnType::Boolean, AttributeValue::Bool(b)) => self.boolean(*b),
            // Set elements in their (sorted) order; the common element
            // layouts are written without building an attribute value.
            (ColumnType::Set(inner), AttributeValue::Ss(v)) => {
                self.array(v.iter(), |d, s| match **inner {
                    ColumnType::Utf8 => {
                        d.string(s);
                        Ok(())
                    }
                    _ => d.plain(inner, &AttributeValue::S(s.as_str().into())),
                })?;
            }
            (ColumnType::Set(inner), AttributeValue::Ns(v)) => {
                self.array(v.iter(), |d, n| match **inner {
                    ColumnType::DecimalString => {
                        d.string(n.as_str());
                        Ok(())
                    }
                    _ => d.plain(inner, &AttributeValue::N(n.clone())),
                })?;
            }
            (ColumnType::Set(inner), AttributeValue::Bs(v)) => {
                self.array(v.iter(), |d, b| match **inner {
                    ColumnType::Binary => {
                        d.bytes(b);
                        Ok(())
                    }
                    _ => d.plain(inner, &AttributeValue::B(b.clone())),
                })?;
            }
            (ColumnType::List(inner), AttributeValue::L(items)) => {
                self.array(items.iter(), |d, e| d.field(inner, Some(e)))?;
            }
            (ColumnType::Struct(fields), AttributeValue::M(m)) => {
                for (attr, fty) in fields {
                    self.field(fty, m.get(attr.as_str()))?;
                }
            }
            // Blocks as an array's, each entry its name then its value.
            (ColumnType::Map(value), AttributeValue::M(m)) => {
                self.array(m.iter(), |d, (name, v)| {
                    d.string(name);
                    d.field(value, Some(v))
                })?;
            }
            // A declared list, struct or map reads inside the value.
            (
                ColumnType::List(_) | ColumnType::Struct(_) | ColumnType::Map(_),
                AttributeValue::Nested(text),
            ) => {
                self.plain(ty, &text.tree())?;
            }
            _ => return Err(mismatch()),
        }
        Ok(())
    }

    /// The attribute fields of a table's value record, from `item`.
    pub(crate) fn record(&mut self, table: &TableSchema, item: &Item) -> Result<(), Mismatch> {
        // Fields go out in column order; the item's values are found in
        // name order.
        let columns = table.columns();
        let mut values: Vec<Option<&AttributeValue>> = vec![None; columns.len()];
        table.each_value(item, |ci, value| values[ci] = value);
        for (i, (c, value)) in columns.iter().zip(values).enumerate() {
            self.field_in(&c.ty, table.avro_branch(i), value)?;
        }
        Ok(())
    }
}

/// The flat value: the row image's fields, then the `__` position fields.
pub(crate) fn flat(
    table: &TableSchema,
    change: &Change,
    out: Vec<u8>,
) -> Result<Vec<u8>, Mismatch> {
    let mut d = Datum::after(out);
    let s = &change.source;
    d.record(table, change.row_image())?;
    d.string(change.op.code());
    d.string(&s.table);
    d.string(&s.shard_id);
    d.string(s.sequence_number.as_str());
    d.string(&s.event_id);
    d.optional_long(s.approx_creation_ms);
    d.boolean(change.op == Op::Remove);
    d.boolean(s.ttl_delete);
    Ok(d.out)
}

/// The Debezium envelope: `before`, `after`, `op`, `ts_ms`, `source`.
pub(crate) fn envelope(
    table: &TableSchema,
    change: &Change,
    out: Vec<u8>,
) -> Result<Vec<u8>, Mismatch> {
    let mut d = Datum::after(out);
    let s = &change.source;
    // A stream without images still shows the keys of what changed.
    let (before, after) = match change.op {
        Op::Remove => (change.old_image.as_ref().or(Some(&change.keys)), None),
        _ => (
            change.old_image.as_ref(),
            change.new_image.as_ref().or(Some(&change.keys)),
        ),
    };
    for image in [before, after] {
        match image {
            Some(item) => {
                d.long(1);
                d.record(table, item)?;
            }
            None => d.long(0),
        }
    }
    d.string(change.op.code());
    d.optional_long(s.approx_creation_ms);
    d.string("dynamodb");
    d.string(&s.table);
    d.optional_string(s.stream_arn.as_deref());
    d.string(&s.shard_id);
    d.string(s.sequence_number.as_str());
    d.string(&s.event_id);
    d.optional_long(s.approx_creation_ms);
    d.boolean(s.ttl_delete);
    d.string(snapshot_marker(change));
    Ok(d.out)
}

/// Debezium's `source.snapshot`: `first`, `true` or `last` for a snapshot
/// row, `false` for a change.
pub(crate) fn snapshot_marker(change: &Change) -> &'static str {
    change
        .source
        .snapshot
        .as_ref()
        .map_or("false", |s| s.marker.code())
}

/// The key record: each key attribute in its fixed layout.
pub(crate) fn key(
    change: &Change,
    layout: impl Fn(&AttributeValue) -> ColumnType,
    out: Vec<u8>,
) -> Result<Vec<u8>, Mismatch> {
    let mut d = Datum::after(out);
    for v in change.keys.values() {
        d.plain(&layout(v), v)?;
    }
    Ok(d.out)
}
