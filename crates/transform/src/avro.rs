//! Avro schemas and binary datums for flat rows and the Debezium envelope.
//!
//! Field names are the column names made valid Avro names (other characters
//! become `_`); a renamed field carries `"dynamodb_name"` with the attribute
//! name, and number and JSON string fields carry `"dynamodb_type"`, the same
//! conventions a declared `.avsc` uses, so a generated schema can be used as a
//! declaration. Keys are laid out without the numbers mode: `N` key
//! attributes are always exact decimal strings, so the bytes of an item's key
//! never change and its changes always hash to the same Kafka partition.
//!
//! A widened column keeps its former layouts as branches of its field's
//! union (`["null", "long", "string"]` once a column of integers took a
//! fraction), each value written in the branch of the current layout: the
//! new schema reads everything written with the old, which is what a
//! schema registry checking BACKWARD compatibility (Confluent's default)
//! asks of a new version. Layouts Avro cannot keep side by side in one
//! union (two arrays: a set of integers that took a fraction) are not kept:
//! a schema made [`TableSchema::for_avro_unions`] (the Kafka sink's) widens
//! such a column to DynamoDB-JSON text instead, whose `string` branch sits
//! beside the former array.

use std::collections::HashSet;

use apache_avro::Schema;
use dynamo_cdc_core::{AttributeValue, Change, Item};
use serde_json::{Value as Json, json};

use crate::avro_datum;
use crate::column::ColumnType;
use crate::schema::{META_COLUMNS, TableSchema};

/// The record layout of a change's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The row image's attributes plus the `__` position columns.
    Flat,
    /// Debezium's `{before, after, op, ts_ms, source}`.
    Envelope,
}

/// Avro could not take a schema or value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AvroError {
    /// The generated schema was rejected (an internal error).
    #[error("generated Avro schema is invalid")]
    Schema(#[source] apache_avro::Error),
    /// A value did not fit its field's layout.
    #[error("change {sequence_number} of {table} cannot be encoded as Avro: {reason}")]
    Value {
        /// table of the change
        table: String,
        /// its sequence number
        sequence_number: String,
        /// which value, and the layout it does not fit
        reason: String,
    },
    /// A value did not match the schema.
    #[error("change {sequence_number} of {table} cannot be encoded as Avro")]
    Encode {
        /// table of the change
        table: String,
        /// its sequence number
        sequence_number: String,
        /// the encoder's complaint
        #[source]
        source: apache_avro::Error,
    },
}

/// A parsed schema together with its JSON text (for a schema registry).
#[derive(Clone, Debug)]
pub struct AvroSchema {
    /// The schema as Avro JSON.
    pub json: Json,
    /// The parsed schema.
    pub schema: Schema,
}

impl AvroSchema {
    fn from_json(json: Json) -> Result<Self, AvroError> {
        let schema = Schema::parse(&json).map_err(AvroError::Schema)?;
        Ok(AvroSchema { json, schema })
    }
}

/// Makes `name` a valid Avro name.
pub fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Valid, distinct Avro names for `names`, avoiding `reserved` ones.
fn unique_names<'a>(names: impl Iterator<Item = &'a str>, reserved: &[&str]) -> Vec<String> {
    let mut seen: HashSet<String> = reserved.iter().map(|r| (*r).to_owned()).collect();
    names
        .map(|n| claim_name(&avro_name(n), &mut seen))
        .collect()
}

/// `wanted`, or `wanted_2`, `wanted_3`, … whichever is not taken yet; marks
/// it taken.
fn claim_name(wanted: &str, taken: &mut HashSet<String>) -> String {
    let mut candidate = wanted.to_owned();
    let mut i = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{wanted}_{i}");
        i += 1;
    }
    candidate
}

fn namespace(table: &str) -> String {
    format!("dynamo_cdc.{}", avro_name(table))
}

/// The Avro type of a layout, without the null union.
fn avro_type(ty: &ColumnType, record_name: &str, used: &mut HashSet<String>) -> Json {
    match ty {
        ColumnType::Null => json!("null"),
        ColumnType::Utf8 | ColumnType::DecimalString | ColumnType::Json => json!("string"),
        ColumnType::Int64 => json!("long"),
        ColumnType::Float64 => json!("double"),
        ColumnType::Decimal { precision, scale } => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
        }
        ColumnType::Binary => json!("bytes"),
        ColumnType::Boolean => json!("boolean"),
        // The set's DynamoDB type: a set of exact decimal strings and one
        // of text are both arrays of strings to Avro, and a restart
        // continues from the schema registered last (`registered`).
        ColumnType::Set(inner) => {
            let kind = match **inner {
                ColumnType::Utf8 => "SS",
                ColumnType::Binary => "BS",
                _ => "NS",
            };
            json!({"type": "array", "items": avro_type(inner, record_name, used), "dynamodb_type": kind})
        }
        ColumnType::List(inner) => {
            json!({"type": "array", "items": nullable(avro_type(inner, record_name, used))})
        }
        ColumnType::Map(value) => {
            json!({"type": "map", "values": nullable(avro_type(value, record_name, used))})
        }
        ColumnType::Struct(fields) => {
            let record_name = claim_name(record_name, used);
            let names = unique_names(fields.iter().map(|(n, _)| n.as_str()), &[]);
            let avro_fields: Vec<Json> = fields
                .iter()
                .zip(&names)
                .map(|((attr, fty), name)| {
                    field_json(
                        name,
                        attr,
                        (fty, &[]),
                        &format!("{record_name}_{name}"),
                        used,
                    )
                })
                .collect();
            json!({"type": "record", "name": record_name, "fields": avro_fields})
        }
    }
}

fn nullable(t: Json) -> Json {
    if t == json!("null") {
        t
    } else {
        json!(["null", t])
    }
}

/// The kind of Avro type a layout is written as: a union holds at most one
/// branch of each (records aside, which inferred columns never are).
fn union_kind(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Null => "null",
        ColumnType::Utf8 | ColumnType::DecimalString | ColumnType::Json => "string",
        ColumnType::Int64 => "long",
        ColumnType::Float64 => "double",
        ColumnType::Decimal { .. } | ColumnType::Binary => "bytes",
        ColumnType::Boolean => "boolean",
        ColumnType::Set(_) | ColumnType::List(_) => "array",
        ColumnType::Map(_) => "map",
        ColumnType::Struct(_) => "record",
    }
}

/// Whether layout `new` would take the union branch of `old` (the same
/// Avro kind) without reading what `old` wrote: arrays or maps of other
/// items (`array<long>` and `array<string>`). Scalars of one kind read each
/// other (every `string` layout is text).
pub(crate) fn replaces_branch(old: &ColumnType, new: &ColumnType) -> bool {
    old != new
        && old != &ColumnType::Null
        && union_kind(old) == union_kind(new)
        && matches!(union_kind(new), "array" | "map")
}

/// The non-null branches of a field whose layout is `ty` and was `former`
/// before (oldest first): of each kind a union can hold beside `ty`, the
/// latest former layout, in their order; then `ty`, the branch values are
/// written in. The latest of each kind is the one the version before
/// had, so the new version reads what that one wrote, and a run restarted
/// from the registered schema, which knows only those, makes the same.
pub(crate) fn branches<'a>(ty: &'a ColumnType, former: &'a [ColumnType]) -> Vec<&'a ColumnType> {
    let mut out: Vec<&ColumnType> = Vec::with_capacity(former.len() + 1);
    for f in former.iter().rev() {
        let kind = union_kind(f);
        if kind != union_kind(ty) && out.iter().all(|o| union_kind(o) != kind) {
            out.push(f);
        }
    }
    out.reverse();
    out.push(ty);
    out
}

fn field_json(
    name: &str,
    attribute: &str,
    (ty, former): (&ColumnType, &[ColumnType]),
    record_name: &str,
    used: &mut HashSet<String>,
) -> Json {
    let branches = branches(ty, former);
    let avro = if branches.len() == 1 {
        nullable(avro_type(ty, record_name, used))
    } else {
        let mut union = vec![json!("null")];
        union.extend(branches.iter().map(|b| avro_type(b, record_name, used)));
        Json::Array(union)
    };
    let mut f = json!({"name": name, "type": avro, "default": null});
    if name != attribute {
        f["dynamodb_name"] = json!(attribute);
    }
    match ty {
        ColumnType::DecimalString => f["dynamodb_type"] = json!("number"),
        ColumnType::Json => f["dynamodb_type"] = json!("json"),
        _ => {}
    }
    f
}

/// The attribute fields of a table's value record. Their names avoid the
/// position fields, which sit beside them in the flat shape.
fn attribute_fields(schema: &TableSchema) -> (Vec<String>, Vec<Json>) {
    let names = unique_names(
        schema.columns().iter().map(|c| c.name.as_str()),
        &META_COLUMNS,
    );
    let mut used: HashSet<String> = ["Value", "Envelope", "Source", "Key"]
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    let fields = schema
        .columns()
        .iter()
        .zip(&names)
        .map(|(c, name)| {
            let f = format!("F_{name}");
            field_json(name, &c.attribute, (&c.ty, &c.former), &f, &mut used)
        })
        .collect();
    (names, fields)
}

/// The value schema of a table in the given shape.
///
/// # Errors
/// Only if the generated schema is invalid (an internal error).
pub fn value_schema(schema: &TableSchema, shape: Shape) -> Result<AvroSchema, AvroError> {
    let (_, mut fields) = attribute_fields(schema);
    let ns = namespace(schema.table());
    let json = match shape {
        Shape::Flat => {
            fields.extend([
                json!({"name": "__op", "type": "string"}),
                json!({"name": "__table", "type": "string"}),
                json!({"name": "__shard_id", "type": "string"}),
                json!({"name": "__sequence_number", "type": "string"}),
                json!({"name": "__event_id", "type": "string"}),
                json!({"name": "__source_ts_ms", "type": ["null", "long"], "default": null}),
                json!({"name": "__deleted", "type": "boolean"}),
                json!({"name": "__ttl_delete", "type": "boolean"}),
            ]);
            json!({"type": "record", "name": "Value", "namespace": ns, "fields": fields})
        }
        Shape::Envelope => {
            let value = json!({"type": "record", "name": "Value", "fields": fields});
            json!({
                "type": "record", "name": "Envelope", "namespace": ns,
                "fields": [
                    {"name": "before", "type": ["null", value], "default": null},
                    {"name": "after", "type": ["null", "Value"], "default": null},
                    {"name": "op", "type": "string"},
                    {"name": "ts_ms", "type": ["null", "long"], "default": null},
                    {"name": "source", "type": {
                        "type": "record", "name": "Source",
                        "fields": [
                            {"name": "connector", "type": "string"},
                            {"name": "table", "type": "string"},
                            {"name": "stream_arn", "type": ["null", "string"], "default": null},
                            {"name": "shard_id", "type": "string"},
                            {"name": "sequence_number", "type": "string"},
                            {"name": "event_id", "type": "string"},
                            {"name": "approx_creation_ms", "type": ["null", "long"], "default": null},
                            {"name": "ttl_delete", "type": "boolean"},
                            {"name": "snapshot", "type": "string", "default": "false"}
                        ]
                    }}
                ]
            })
        }
    };
    AvroSchema::from_json(json)
}

/// The layout of a key attribute: its type never depends on the value.
fn key_layout(value: &AttributeValue) -> ColumnType {
    match value {
        AttributeValue::N(_) => ColumnType::DecimalString,
        AttributeValue::B(_) => ColumnType::Binary,
        _ => ColumnType::Utf8,
    }
}

/// The key schema for changes whose keys look like `keys`.
///
/// # Errors
/// Only if the generated schema is invalid (an internal error).
pub fn key_schema(table: &str, keys: &Item) -> Result<AvroSchema, AvroError> {
    let names = unique_names(keys.keys().map(|k| k.as_str()), &[]);
    let fields: Vec<Json> = keys
        .iter()
        .zip(&names)
        .map(|((attr, v), name)| {
            let mut f =
                json!({"name": name, "type": avro_type(&key_layout(v), name, &mut HashSet::new())});
            if name != attr {
                f["dynamodb_name"] = json!(attr);
            }
            if matches!(v, AttributeValue::N(_)) {
                f["dynamodb_type"] = json!("number");
            }
            f
        })
        .collect();
    AvroSchema::from_json(
        json!({"type": "record", "name": "Key", "namespace": namespace(table), "fields": fields}),
    )
}

/// Encodes a change's key, in the layout [`key_schema`] gives its keys.
///
/// # Errors
/// Not for keys parsed from a stream (their layout follows their types);
/// the result is kept for symmetry with [`encode_value`].
pub fn encode_key(change: &Change) -> Result<Vec<u8>, AvroError> {
    encode_key_after(Vec::with_capacity(64), change)
}

/// [`encode_key`], appended to `prefix` (a wire format's header).
///
/// # Errors
/// As [`encode_key`].
pub fn encode_key_after(prefix: Vec<u8>, change: &Change) -> Result<Vec<u8>, AvroError> {
    avro_datum::key(change, key_layout, prefix).map_err(|m| mismatch(change, m))
}

/// Encodes a change's value in `shape`, in the layout [`value_schema`]
/// gives the same table schema version.
///
/// # Errors
/// When the change does not match the schema (it was not admitted).
pub fn encode_value(
    table: &TableSchema,
    shape: Shape,
    change: &Change,
) -> Result<Vec<u8>, AvroError> {
    encode_value_after(Vec::with_capacity(512), table, shape, change)
}

/// [`encode_value`], appended to `prefix` (a wire format's header).
///
/// # Errors
/// As [`encode_value`].
pub fn encode_value_after(
    prefix: Vec<u8>,
    table: &TableSchema,
    shape: Shape,
    change: &Change,
) -> Result<Vec<u8>, AvroError> {
    match shape {
        Shape::Flat => avro_datum::flat(table, change, prefix),
        Shape::Envelope => avro_datum::envelope(table, change, prefix),
    }
    .map_err(|m| mismatch(change, m))
}

fn mismatch(change: &Change, m: avro_datum::Mismatch) -> AvroError {
    AvroError::Value {
        table: change.source.table.to_string(),
        sequence_number: change.source.sequence_number.to_string(),
        reason: m.0,
    }
}

mod registered;
pub use registered::registered_columns;

#[cfg(test)]
mod tests;
