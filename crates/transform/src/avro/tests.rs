//! The direct encoder against the generic one: the same bytes for every
//! layout, shape and numbers mode. The generic encoder builds Avro values and
//! lets `apache_avro` validate and write them; it is the reference.

use std::sync::Arc;

use apache_avro::Decimal;
use apache_avro::types::Value;
use dynamo_cdc_core::{AttributeValue, Change, Item, Op, SequenceNumber, SourceInfo, parse_item};

use super::*;
use crate::declared::set_elements;
use crate::{DeclaredSchema, NumbersMode};

/// Encodes a change's key.
///
/// # Errors
/// When the keys do not match the schema (a key attribute of another type).
pub(crate) fn encode_key_generic(
    schema: &AvroSchema,
    change: &Change,
) -> Result<Vec<u8>, AvroError> {
    let names = unique_names(change.keys.keys().map(|k| k.as_str()), &[]);
    let fields = change
        .keys
        .values()
        .zip(names)
        .map(|(v, name)| (name, plain_value(&key_layout(v), v)))
        .collect();
    datum(schema, Value::Record(fields), change)
}

/// Encodes a change's value in `shape`; `schema` must come from
/// [`value_schema`] of the same table schema version.
///
/// # Errors
/// When the change does not match the schema.
pub(crate) fn encode_value_generic(
    table: &TableSchema,
    schema: &AvroSchema,
    shape: Shape,
    change: &Change,
) -> Result<Vec<u8>, AvroError> {
    let record = |item: &Item| {
        let (names, _) = attribute_fields(table);
        table
            .columns()
            .iter()
            .zip(names)
            .map(|(c, name)| {
                let value = field_value(&c.ty, item.get(c.attribute.as_str()));
                // A widened column's value goes in the last branch.
                let branch = branches(&c.ty, &c.former).len() as u32;
                let value = match value {
                    Value::Union(1, v) => Value::Union(branch, v),
                    other => other,
                };
                (name, value)
            })
            .collect::<Vec<_>>()
    };
    let s = &change.source;
    let value = match shape {
        Shape::Flat => {
            let mut fields = record(change.row_image());
            fields.extend([
                (
                    "__op".to_owned(),
                    Value::String(change.op.code().to_owned()),
                ),
                ("__table".to_owned(), Value::String(s.table.to_string())),
                (
                    "__shard_id".to_owned(),
                    Value::String(s.shard_id.to_string()),
                ),
                (
                    "__sequence_number".to_owned(),
                    Value::String(s.sequence_number.to_string()),
                ),
                ("__event_id".to_owned(), Value::String(s.event_id.clone())),
                (
                    "__source_ts_ms".to_owned(),
                    optional(s.approx_creation_ms.map(Value::Long)),
                ),
                (
                    "__deleted".to_owned(),
                    Value::Boolean(change.op == dynamo_cdc_core::Op::Remove),
                ),
                ("__ttl_delete".to_owned(), Value::Boolean(s.ttl_delete)),
            ]);
            Value::Record(fields)
        }
        Shape::Envelope => {
            let image = |i: Option<&Item>| optional(i.map(|i| Value::Record(record(i))));
            // A stream without images still shows the keys of what changed.
            let (before, after) = match change.op {
                dynamo_cdc_core::Op::Remove => {
                    (change.old_image.as_ref().or(Some(&change.keys)), None)
                }
                _ => (
                    change.old_image.as_ref(),
                    change.new_image.as_ref().or(Some(&change.keys)),
                ),
            };
            Value::Record(vec![
                ("before".to_owned(), image(before)),
                ("after".to_owned(), image(after)),
                ("op".to_owned(), Value::String(change.op.code().to_owned())),
                (
                    "ts_ms".to_owned(),
                    optional(s.approx_creation_ms.map(Value::Long)),
                ),
                (
                    "source".to_owned(),
                    Value::Record(vec![
                        ("connector".to_owned(), Value::String("dynamodb".to_owned())),
                        ("table".to_owned(), Value::String(s.table.to_string())),
                        (
                            "stream_arn".to_owned(),
                            optional(s.stream_arn.as_ref().map(|a| Value::String(a.to_string()))),
                        ),
                        ("shard_id".to_owned(), Value::String(s.shard_id.to_string())),
                        (
                            "sequence_number".to_owned(),
                            Value::String(s.sequence_number.to_string()),
                        ),
                        ("event_id".to_owned(), Value::String(s.event_id.clone())),
                        (
                            "approx_creation_ms".to_owned(),
                            optional(s.approx_creation_ms.map(Value::Long)),
                        ),
                        ("ttl_delete".to_owned(), Value::Boolean(s.ttl_delete)),
                        (
                            "snapshot".to_owned(),
                            Value::String(
                                s.snapshot
                                    .as_ref()
                                    .map_or("false", |s| s.marker.code())
                                    .to_owned(),
                            ),
                        ),
                    ]),
                ),
            ])
        }
    };
    datum(schema, value, change)
}

fn datum(schema: &AvroSchema, value: Value, change: &Change) -> Result<Vec<u8>, AvroError> {
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema.schema)
        .build()
        .map_err(AvroError::Schema)?;
    writer
        .write_value_to_vec(value)
        .map_err(|source| AvroError::Encode {
            table: change.source.table.to_string(),
            sequence_number: change.source.sequence_number.to_string(),
            source,
        })
}

fn optional(v: Option<Value>) -> Value {
    match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

/// A nullable field's value: the union branch of `null` or of the layout.
fn field_value(ty: &ColumnType, value: Option<&AttributeValue>) -> Value {
    if *ty == ColumnType::Null {
        return Value::Null;
    }
    match value {
        None | Some(AttributeValue::Null) => optional(None),
        Some(v) => optional(Some(plain_value(ty, v))),
    }
}

/// A value in a layout, assuming it was admitted for that layout.
fn plain_value(ty: &ColumnType, v: &AttributeValue) -> Value {
    match (ty, v) {
        (ColumnType::Json, v) => Value::String(v.to_ddb_json()),
        (ColumnType::Utf8, AttributeValue::S(s)) => Value::String(s.to_string()),
        (ColumnType::DecimalString, AttributeValue::N(n)) => Value::String(n.as_str().to_owned()),
        (ColumnType::Int64, AttributeValue::N(n)) => n.to_i64().map_or(Value::Null, Value::Long),
        (ColumnType::Float64, AttributeValue::N(n)) => Value::Double(n.to_f64()),
        (ColumnType::Decimal { scale, .. }, AttributeValue::N(n)) => {
            match n.to_decimal128(*scale) {
                Some(unscaled) => Value::Decimal(Decimal::from(unscaled.to_be_bytes().to_vec())),
                None => Value::Null,
            }
        }
        (ColumnType::Binary, AttributeValue::B(b)) => Value::Bytes(b.clone()),
        (ColumnType::Boolean, AttributeValue::Bool(b)) => Value::Boolean(*b),
        (ColumnType::Set(inner), set) => Value::Array(
            set_elements(set)
                .iter()
                .map(|e| plain_value(inner, e))
                .collect(),
        ),
        (ColumnType::List(inner), AttributeValue::L(items)) => {
            Value::Array(items.iter().map(|e| field_value(inner, Some(e))).collect())
        }
        (ColumnType::Struct(fields), AttributeValue::M(m)) => {
            let names = unique_names(fields.iter().map(|(n, _)| n.as_str()), &[]);
            Value::Record(
                fields
                    .iter()
                    .zip(names)
                    .map(|((attr, fty), name)| (name, field_value(fty, m.get(attr.as_str()))))
                    .collect(),
            )
        }
        (ColumnType::Map(value), AttributeValue::M(m)) => Value::Map(
            m.iter()
                .map(|(name, v)| (name.to_string(), field_value(value, Some(v))))
                .collect(),
        ),
        // Not reachable for admitted values; the encoder reports the mismatch.
        _ => Value::Null,
    }
}

fn change(op: Op, seq: &str, keys: &str, old: Option<&str>, new: Option<&str>) -> Change {
    Change {
        op,
        keys: parse_item(keys, "Keys").unwrap(),
        old_image: old.map(|t| parse_item(t, "OldImage").unwrap()),
        unread_old_image: None,
        new_image: new.map(|t| parse_item(t, "NewImage").unwrap()),
        source: SourceInfo {
            table: Arc::from("t"),
            stream_arn: seq
                .len()
                .is_multiple_of(2)
                .then(|| Arc::from("arn:aws:dynamodb:us-east-1:1:table/t/stream/x")),
            shard_id: Arc::from("shard-1"),
            sequence_number: SequenceNumber::parse(seq).unwrap(),
            event_id: format!("e{seq}"),
            approx_creation_ms: (!seq.len().is_multiple_of(3)).then_some(1_700_000_000_000),
            ttl_delete: seq.ends_with('7'),
            snapshot: None,
        },
    }
}

const IMAGES: &[&str] = &[
    r#"{"id":{"S":"a"},"n":{"N":"1"},"big":{"N":"123456789012345678901234567890"},"b":{"B":"/wA="},"ok":{"BOOL":true},
        "ss":{"SS":["b","a"]},"ns":{"NS":["-1","10.5"]},"bs":{"BS":["AQ==","AA=="]},"l":{"L":[{"NULL":true},{"M":{"x":{"N":"0.5"}}}]},
        "m":{"M":{"deep":{"L":[{"SS":["z"]}]}}},"empty":{"S":""},"uni":{"S":"é😀\n"},"nul":{"NULL":true},
        "price":{"N":"12.34"},"ratio":{"N":"-0.125"},"addr":{"M":{"city":{"S":"Lyon"},"zip":{"N":"69001"}}},
        "tags":{"L":[{"S":"x"},{"NULL":true},{"S":"y"}]}}"#,
    r#"{"id":{"S":"a"},"n":{"N":"-9223372036854775808"},"ok":{"BOOL":false},"price":{"N":"-99999.99"},"tags":{"L":[]},
        "addr":{"M":{"city":{"NULL":true}}},"ss":{"SS":["only"]},"mixed":{"N":"5"}}"#,
    r#"{"id":{"S":"b"},"n":{"N":"7"},"mixed":{"S":"five"},"ns":{"NS":["1E-130","9.9999999999999999999999999999999999999E+125"]}}"#,
];

const DECLARED: &str = r#"{"type":"record","name":"t","fields":[
    {"name":"price","type":["null",{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}]},
    {"name":"ratio","type":["null","double"]},
    {"name":"addr","type":["null",{"type":"record","name":"addr","fields":[
        {"name":"city","type":["null","string"]},{"name":"zip","type":["null","long"]}]}]},
    {"name":"tags","type":["null",{"type":"array","items":["null","string"]}]}
]}"#;

#[test]
fn a_union_keeps_one_former_layout_of_each_kind_before_the_current_one() {
    use ColumnType as T;
    let set = |t: T| T::Set(Box::new(t));
    assert_eq!(branches(&T::Int64, &[]), [&T::Int64]);
    assert_eq!(
        branches(&T::Json, &[T::Int64, T::DecimalString]),
        [&T::Int64, &T::Json],
        "a decimal string and JSON are both Avro strings"
    );
    assert_eq!(
        branches(&T::Json, &[T::Boolean, set(T::Utf8)]),
        [&T::Boolean, &set(T::Utf8), &T::Json]
    );
    // Avro allows one array per union: the former one is not kept.
    assert_eq!(
        branches(&set(T::Float64), &[set(T::Int64)]),
        [&set(T::Float64)]
    );
    // Of each kind, the latest: the one the version before had.
    assert_eq!(
        branches(
            &T::Json,
            &[set(T::Int64), T::Boolean, set(T::DecimalString)]
        ),
        [&T::Boolean, &set(T::DecimalString), &T::Json]
    );
}

#[test]
fn direct_bytes_equal_the_generic_encoder() {
    let declared = DeclaredSchema::parse_avsc(DECLARED).unwrap();
    let keys = [
        r#"{"id":{"S":"a"}}"#,
        r#"{"id":{"S":"b"},"n":{"N":"7"}}"#,
        r#"{"k":{"B":"AQI="}}"#,
    ];
    let mut changes = Vec::new();
    for (i, image) in IMAGES.iter().enumerate() {
        let seq = format!("{}", 100 + i * 7);
        changes.push(change(
            Op::Insert,
            &seq,
            keys[i % keys.len()],
            None,
            Some(image),
        ));
        let old = IMAGES[(i + 1) % IMAGES.len()];
        changes.push(change(
            Op::Modify,
            &format!("{seq}1"),
            keys[0],
            Some(old),
            Some(image),
        ));
        changes.push(change(
            Op::Remove,
            &format!("{seq}27"),
            keys[1],
            Some(image),
            None,
        ));
        changes.push(change(Op::Remove, &format!("{seq}3"), keys[2], None, None));
    }
    for declared in [None, Some(&declared)] {
        for mode in [NumbersMode::Auto, NumbersMode::String, NumbersMode::Double] {
            let mut table = TableSchema::new("t", declared, mode);
            for c in &changes {
                for image in [c.old_image.as_ref(), c.new_image.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    table.admit(image).unwrap();
                }
                table.admit(&c.keys).unwrap();
            }
            for shape in [Shape::Flat, Shape::Envelope] {
                let schema = value_schema(&table, shape).unwrap();
                for c in &changes {
                    let direct = encode_value(&table, shape, c).unwrap();
                    let generic = encode_value_generic(&table, &schema, shape, c).unwrap();
                    assert_eq!(
                        direct, generic,
                        "{mode:?} {shape:?} {:?}",
                        c.source.sequence_number
                    );
                }
            }
        }
    }
    for c in &changes {
        let schema = key_schema("t", &c.keys).unwrap();
        assert_eq!(
            encode_key(c).unwrap(),
            encode_key_generic(&schema, c).unwrap()
        );
    }
}

/// Map entries go out in name order, where `apache_avro` holds them in a
/// hash map: the bytes differ, so the direct encoder's are read back with
/// `apache_avro` against the schema and compared as values.
#[test]
fn declared_maps_read_back_as_their_entries() {
    let declared = DeclaredSchema::parse_avsc(
        r#"{"type":"record","name":"t","fields":[
            {"name":"prices","type":["null",{"type":"map","values":["null","long"]}]},
            {"name":"labels","type":{"type":"map","values":{"type":"map","values":"string"}}}]}"#,
    )
    .unwrap();
    let images = [
        r#"{"id":{"S":"a"},"prices":{"M":{"b":{"N":"2"},"a":{"N":"-1"},"é 😀":{"NULL":true}}},
            "labels":{"M":{"x":{"M":{"k":{"S":"v"},"j":{"S":""}}},"y":{"M":{}}}}}"#,
        r#"{"id":{"S":"b"},"prices":{"M":{}},"labels":{"NULL":true}}"#,
        r#"{"id":{"S":"c"}}"#,
    ];
    let changes: Vec<Change> = images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            change(
                Op::Insert,
                &format!("{}", 100 + i),
                r#"{"id":{"S":"a"}}"#,
                None,
                Some(image),
            )
        })
        .collect();
    let mut table = TableSchema::new("t", Some(&declared), NumbersMode::Auto);
    for c in &changes {
        table.admit(c.new_image.as_ref().unwrap()).unwrap();
    }
    for shape in [Shape::Flat, Shape::Envelope] {
        let schema = value_schema(&table, shape).unwrap();
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema.schema)
            .build()
            .unwrap();
        for c in &changes {
            let direct = encode_value(&table, shape, c).unwrap();
            let generic = encode_value_generic(&table, &schema, shape, c).unwrap();
            let read = |mut bytes: &[u8]| {
                let value = reader.read_value(&mut bytes).unwrap();
                assert!(bytes.is_empty(), "every byte read");
                value
            };
            assert_eq!(
                read(&direct),
                read(&generic),
                "{shape:?} {:?}",
                c.source.sequence_number
            );
        }
    }
}

#[test]
fn a_value_that_does_not_fit_names_its_change() {
    let mut table = TableSchema::new("t", None, NumbersMode::Auto);
    table
        .admit(&parse_item(r#"{"n":{"N":"1"}}"#, "NewImage").unwrap())
        .unwrap();
    // Not admitted: a fraction in an Int64 column.
    let c = change(
        Op::Insert,
        "42",
        r#"{"n":{"N":"1"}}"#,
        None,
        Some(r#"{"n":{"N":"1.5"}}"#),
    );
    let err = encode_value(&table, Shape::Flat, &c)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("change 42 of t") && err.contains("Int64"),
        "{err}"
    );
}
