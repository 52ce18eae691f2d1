//! Rows built from changes read back to the same values: Arrow through
//! `decode_items`, Avro through the reference decoder with the generated schema.

use std::sync::Arc;

use apache_avro::types::Value;
use dynamo_cdc_core::{
    Change, Item, Op, SequenceNumber, SnapshotMarker, SnapshotRead, SourceInfo, parse_item,
};
use dynamo_cdc_transform::avro::{Shape, encode_key, encode_value, key_schema, value_schema};
use dynamo_cdc_transform::{NumbersMode, TableSchema, decode_items, flat_batch, snapshot_batch};

fn change(op: Op, seq: &str, keys: &str, old: Option<&str>, new: Option<&str>) -> Change {
    Change {
        op,
        keys: parse_item(keys, "Keys").unwrap(),
        old_image: old.map(|t| parse_item(t, "OldImage").unwrap()),
        unread_old_image: None,
        new_image: new.map(|t| parse_item(t, "NewImage").unwrap()),
        source: SourceInfo {
            table: Arc::from("orders"),
            stream_arn: Some(Arc::from(
                "arn:aws:dynamodb:us-east-1:1:table/orders/stream/x",
            )),
            shard_id: Arc::from("shard-1"),
            sequence_number: SequenceNumber::parse(seq).unwrap(),
            event_id: format!("e{seq}"),
            approx_creation_ms: Some(1_700_000_000_000),
            ttl_delete: false,
            snapshot: None,
        },
    }
}

fn changes() -> Vec<Change> {
    let a = r#"{"id":{"S":"a"},"n":{"N":"1"},"big":{"N":"123456789012345678901234567890"},"b":{"B":"/wA="},"ok":{"BOOL":true},
               "ss":{"SS":["b","a"]},"ns":{"NS":["-1","10"]},"bs":{"BS":["AQ==","AA=="]},"l":{"L":[{"NULL":true},{"M":{"x":{"N":"0.5"}}}]},
               "m":{"M":{"deep":{"L":[{"SS":["z"]}]}}},"empty":{"S":""},"uni":{"S":"é😀\n"}}"#;
    let a2 = r#"{"id":{"S":"a"},"n":{"N":"2.5"},"ok":{"BOOL":false}}"#;
    vec![
        change(Op::Insert, "10", r#"{"id":{"S":"a"}}"#, None, Some(a)),
        change(Op::Modify, "11", r#"{"id":{"S":"a"}}"#, Some(a), Some(a2)),
        change(Op::Remove, "12", r#"{"id":{"S":"a"}}"#, Some(a2), None),
    ]
}

fn schema_for(changes: &[Change], mode: NumbersMode) -> TableSchema {
    let mut schema = TableSchema::new("orders", None, mode);
    for c in changes {
        schema.admit(c.row_image()).unwrap();
    }
    schema
}

/// What Arrow rows decode to: each change's row image, without its `NULL`
/// attributes (a null column reads as absent).
fn row_images(changes: &[Change]) -> Vec<Item> {
    changes
        .iter()
        .map(|c| {
            c.row_image()
                .iter()
                .filter(|(_, v)| !matches!(v, dynamo_cdc_core::AttributeValue::Null))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .collect()
}

#[test]
fn arrow_rows_decode_to_the_row_images() {
    let changes = changes();
    for mode in [NumbersMode::Auto, NumbersMode::String] {
        let schema = schema_for(&changes, mode);
        let refs: Vec<&Change> = changes.iter().collect();
        let batch = flat_batch(&schema, &refs).unwrap();
        let items = decode_items(&batch).unwrap();
        let expected = row_images(&changes);
        assert_eq!(items, expected, "{mode:?}");
    }
}

#[test]
fn snapshot_rows_carry_their_id_read_time_and_marker_and_decode_to_their_items() {
    use arrow_array::{cast::AsArray as _, types::Int64Type};
    let markers = [
        SnapshotMarker::First,
        SnapshotMarker::Row,
        SnapshotMarker::Last,
    ];
    let rows: Vec<Change> = markers
        .iter()
        .enumerate()
        .map(|(i, marker)| {
            let item = format!(r#"{{"id":{{"S":"k{i}"}},"n":{{"N":"{i}"}}}}"#);
            let mut c = change(
                Op::Read,
                &(i + 1).to_string(),
                r#"{"id":{"S":"k"}}"#,
                None,
                Some(&item),
            );
            c.source.snapshot = Some(SnapshotRead {
                id: Arc::from("s1"),
                read_ms: 1_700_000_000_000 + i as i64,
                marker: *marker,
            });
            c
        })
        .collect();
    let schema = schema_for(&rows, NumbersMode::Auto);
    let refs: Vec<&Change> = rows.iter().collect();
    let batch = snapshot_batch(&schema, &refs).unwrap();
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    let ids = column("__snapshot_id");
    let read = column("__snapshot_read_ms");
    let marks = column("__snapshot");
    for i in 0..3 {
        assert_eq!(ids.as_string::<i32>().value(i), "s1");
        assert_eq!(
            read.as_primitive::<Int64Type>().value(i),
            1_700_000_000_000 + i as i64
        );
    }
    let marks: Vec<&str> = (0..3).map(|i| marks.as_string::<i32>().value(i)).collect();
    assert_eq!(marks, ["first", "true", "last"]);
    let items = decode_items(&batch).unwrap();
    let expected: Vec<Item> = rows.iter().map(|c| c.row_image().clone()).collect();
    assert_eq!(items, expected, "the snapshot columns are not attributes");
}

fn decode(
    schema: &apache_avro::Schema,
    bytes: &mut &[u8],
    _reader: Option<&apache_avro::Schema>,
) -> apache_avro::AvroResult<Value> {
    #[allow(deprecated)]
    apache_avro::from_avro_datum(schema, bytes, None)
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = v else {
        panic!("not a record: {v:?}")
    };
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

#[test]
fn avro_datums_decode_with_their_schema() {
    let changes = changes();
    let schema = schema_for(&changes, NumbersMode::Auto);
    let flat = value_schema(&schema, Shape::Flat).unwrap();
    let envelope = value_schema(&schema, Shape::Envelope).unwrap();
    let key = key_schema("orders", &changes[0].keys).unwrap();
    for c in &changes {
        let bytes = encode_value(&schema, Shape::Flat, c).unwrap();
        let v = decode(&flat.schema, &mut bytes.as_slice(), None).unwrap();
        assert_eq!(field(&v, "__op"), &Value::String(c.op.code().into()));
        assert_eq!(
            field(&v, "__sequence_number"),
            &Value::String(c.source.sequence_number.to_string())
        );
        assert_eq!(field(&v, "__deleted"), &Value::Boolean(c.op == Op::Remove));
        // n widened to a decimal string once 2.5 arrived.
        let n = unwrap_union(field(&v, "n"));
        let expected_n = c.row_image()["n"].to_ddb_json();
        assert!(expected_n.contains(match n {
            Value::String(s) => s.as_str(),
            other => panic!("{other:?}"),
        }));

        let bytes = encode_value(&schema, Shape::Envelope, c).unwrap();
        let v = decode(&envelope.schema, &mut bytes.as_slice(), None).unwrap();
        assert_eq!(field(&v, "op"), &Value::String(c.op.code().into()));
        let source = field(&v, "source");
        assert_eq!(
            field(source, "connector"),
            &Value::String("dynamodb".into())
        );
        assert_eq!(field(source, "shard_id"), &Value::String("shard-1".into()));
        let after = unwrap_union(field(&v, "after"));
        assert_eq!(matches!(after, Value::Null), c.op == Op::Remove);
        let before = unwrap_union(field(&v, "before"));
        assert_eq!(matches!(before, Value::Null), c.op == Op::Insert);

        let bytes = encode_key(c).unwrap();
        let k = decode(&key.schema, &mut bytes.as_slice(), None).unwrap();
        assert_eq!(field(&k, "id"), &Value::String("a".into()));
    }
}

#[test]
fn attribute_names_that_differ_only_in_case_get_columns_that_differ_otherwise() {
    // Spark, Athena and Hive match column names case-insensitively and
    // refuse a file whose columns differ only in case.
    let c = change(
        Op::Insert,
        "1",
        r#"{"id":{"S":"a"}}"#,
        None,
        Some(r#"{"id":{"S":"a"},"Name":{"S":"x"},"name":{"S":"y"},"__OP":{"S":"z"}}"#),
    );
    let schema = schema_for(std::slice::from_ref(&c), NumbersMode::Auto);
    let arrow = schema.arrow_schema();
    let mut lower: Vec<String> = arrow
        .fields()
        .iter()
        .map(|f| f.name().to_lowercase())
        .collect();
    let n = lower.len();
    lower.sort();
    lower.dedup();
    assert_eq!(lower.len(), n, "{arrow:?}");
    let batch = flat_batch(&schema, &[&c]).unwrap();
    assert_eq!(decode_items(&batch).unwrap(), row_images(&[c]));
    // Avro is read case-sensitively: its fields keep their names.
    let avro = value_schema(&schema, Shape::Flat).unwrap().json.to_string();
    for name in [r#""name":"Name""#, r#""name":"name""#] {
        assert!(avro.contains(name), "{name} in {avro}");
    }
}

#[test]
fn a_widened_avro_schema_reads_what_the_narrower_one_wrote() {
    // A schema registry checking BACKWARD compatibility (Confluent's
    // default) takes a new version only if it reads every datum the last
    // one wrote: a column keeps its former layouts as union branches.
    use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
    let keys = r#"{"id":{"S":"a"}}"#;
    let narrow = r#"{"id":{"S":"a"},"price":{"N":"10"},"ok":{"BOOL":true},"ns":{"NS":["1"]}}"#;
    let wide = r#"{"id":{"S":"a"},"price":{"N":"10.99"},"ok":{"S":"yes"},"ns":{"S":"x"}}"#;
    let narrow = change(Op::Insert, "1", keys, None, Some(narrow));
    let wide = change(Op::Insert, "2", keys, None, Some(wide));
    for shape in [Shape::Flat, Shape::Envelope] {
        let mut schema = TableSchema::new("orders", None, NumbersMode::Auto);
        schema.admit(narrow.row_image()).unwrap();
        let v1 = value_schema(&schema, shape).unwrap();
        let old = encode_value(&schema, shape, &narrow).unwrap();
        schema.admit(wide.row_image()).unwrap();
        let v2 = value_schema(&schema, shape).unwrap();
        // Full: every datum v1 can write, v2 reads ("partial" is what a
        // registry refuses).
        let compatibility = SchemaCompatibility::can_read(&v1.schema, &v2.schema)
            .unwrap_or_else(|e| panic!("{shape:?}: {e}\n{}", v2.json));
        assert_eq!(compatibility, Compatibility::Full, "{shape:?}\n{}", v2.json);
        let record = |v: Value| match shape {
            Shape::Flat => v,
            Shape::Envelope => unwrap_union(field(&v, "after")).clone(),
        };
        let union = |branch, v| Value::Union(branch, Box::new(v));
        // What v1 wrote, read with v2: the former layouts' branches.
        #[allow(deprecated)]
        let v = apache_avro::from_avro_datum(&v1.schema, &mut old.as_slice(), Some(&v2.schema));
        let v = record(v.unwrap());
        assert_eq!(field(&v, "price"), &union(1, Value::Long(10)));
        assert_eq!(field(&v, "ok"), &union(1, Value::Boolean(true)));
        // Written with v2: the current layouts' branches.
        let new = encode_value(&schema, shape, &wide).unwrap();
        let v = record(decode(&v2.schema, &mut new.as_slice(), None).unwrap());
        assert_eq!(field(&v, "price"), &union(2, Value::String("10.99".into())));
        assert_eq!(
            field(&v, "ok"),
            &union(2, Value::String(r#"{"S":"yes"}"#.into()))
        );
        assert_eq!(
            field(&v, "ns"),
            &union(2, Value::String(r#"{"S":"x"}"#.into()))
        );
    }
    // A set of integers that takes a fraction: two arrays cannot share a
    // union, so a schema for Avro unions widens it to DynamoDB-JSON text
    // (a `string` branch beside the array), and each version reads what the
    // one before wrote; then text. A schema for files keeps the typed set,
    // whose Avro version such a registry would refuse.
    let images = [
        r#"{"s":{"NS":["2"]}}"#,
        r#"{"s":{"NS":["2.5"]}}"#,
        r#"{"s":{"S":"x"}}"#,
    ];
    let versions = |mut schema: TableSchema| {
        let mut versions = Vec::new();
        for image in images {
            let item = parse_item(image, "NewImage").unwrap();
            schema.admit(&item).unwrap();
            let v = value_schema(&schema, Shape::Flat).unwrap().schema;
            let row = change(Op::Insert, "1", r#"{"s":{"S":"k"}}"#, None, Some(image));
            versions.push((v, encode_value(&schema, Shape::Flat, &row).unwrap()));
        }
        versions
    };
    let full = |v: &[(apache_avro::Schema, Vec<u8>)], w: usize, r: usize| {
        SchemaCompatibility::can_read(&v[w].0, &v[r].0).ok() == Some(Compatibility::Full)
    };
    let files = versions(TableSchema::new("orders", None, NumbersMode::Auto));
    assert!(!full(&files, 0, 1));
    let avro = versions(TableSchema::new("orders", None, NumbersMode::Auto).for_avro_unions());
    assert!(full(&avro, 0, 1) && full(&avro, 1, 2), "{:?}", avro[1].0);
    // What v1 wrote, read with v2: the array; v2 writes the set as text.
    #[allow(deprecated)]
    let old = apache_avro::from_avro_datum(&avro[0].0, &mut avro[0].1.as_slice(), Some(&avro[1].0));
    let union = |branch, v| Value::Union(branch, Box::new(v));
    assert_eq!(
        field(&old.unwrap(), "s"),
        &union(1, Value::Array(vec![Value::Long(2)]))
    );
    let new = decode(&avro[1].0, &mut avro[1].1.as_slice(), None).unwrap();
    assert_eq!(
        field(&new, "s"),
        &union(2, Value::String(r#"{"NS":["2.5"]}"#.into()))
    );
}

#[test]
fn avro_names_never_collide() {
    // `--op` becomes the Avro name `__op`, which the flat shape uses for the
    // position field; nested record names `F_a_x` could repeat.
    let declared = dynamo_cdc_transform::DeclaredSchema::parse_avsc(
        r#"{"type":"record","name":"t","fields":[
            {"name":"a","type":["null",{"type":"record","name":"a","fields":[{"name":"x","type":["null",{"type":"record","name":"x","fields":[{"name":"y","type":["null","string"]}]}]}]}]},
            {"name":"a_x","type":["null",{"type":"record","name":"ax","fields":[{"name":"y","type":["null","string"]}]}]}
        ]}"#,
    )
    .unwrap();
    let mut schema = TableSchema::new("orders", Some(&declared), NumbersMode::Auto);
    let item = parse_item(
        r#"{"--op":{"S":"x"},"a":{"M":{"x":{"M":{"y":{"S":"1"}}}}},"a_x":{"M":{"y":{"S":"2"}}}}"#,
        "NewImage",
    )
    .unwrap();
    schema.admit(&item).unwrap();
    for shape in [Shape::Flat, Shape::Envelope] {
        let avro = value_schema(&schema, shape).expect("a valid schema");
        let c = change(
            Op::Insert,
            "1",
            r#"{"a_x":{"M":{"y":{"S":"k"}}}}"#,
            None,
            Some(
                r#"{"--op":{"S":"x"},"a":{"M":{"x":{"M":{"y":{"S":"1"}}}}},"a_x":{"M":{"y":{"S":"2"}}}}"#,
            ),
        );
        let bytes = encode_value(&schema, shape, &c).unwrap();
        let v = decode(&avro.schema, &mut bytes.as_slice(), None).unwrap();
        if shape == Shape::Flat {
            assert_eq!(field(&v, "__op"), &Value::String("c".into()));
            assert_eq!(
                unwrap_union(field(&v, "__op_2")),
                &Value::String("x".into())
            );
        }
    }
}

/// A declared `map` is an Arrow map (names in a key column, values in the
/// declared layout) that reads back to the row images, empty and nested
/// maps and `NULL` values included.
#[test]
fn declared_maps_are_arrow_maps_that_decode_to_the_row_images() {
    let declared = dynamo_cdc_transform::DeclaredSchema::parse_avsc(
        r#"{"type":"record","name":"orders","fields":[
            {"name":"prices","type":["null",{"type":"map","values":["null","long"]}]},
            {"name":"labels","type":["null",{"type":"map","values":{"type":"map","values":"string"}}]}]}"#,
    )
    .unwrap();
    let images = [
        r#"{"id":{"S":"a"},"prices":{"M":{"b":{"N":"2"},"a":{"N":"-1"},"é 😀":{"NULL":true}}},
            "labels":{"M":{"x":{"M":{"k":{"S":"v"},"j":{"S":""}}},"y":{"M":{}}}}}"#,
        r#"{"id":{"S":"b"},"prices":{"M":{}}}"#,
        r#"{"id":{"S":"c"},"labels":{"NULL":true}}"#,
    ];
    let changes: Vec<Change> = images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            change(
                Op::Insert,
                &(20 + i).to_string(),
                r#"{"id":{"S":"a"}}"#,
                None,
                Some(image),
            )
        })
        .collect();
    let mut schema = TableSchema::new("orders", Some(&declared), NumbersMode::Auto);
    for c in &changes {
        schema.admit(c.row_image()).unwrap();
    }
    let refs: Vec<&Change> = changes.iter().collect();
    let batch = flat_batch(&schema, &refs).unwrap();
    let prices = batch.schema().field_with_name("prices").unwrap().clone();
    assert!(
        matches!(prices.data_type(), arrow_schema::DataType::Map(..)),
        "{prices:?}"
    );
    let expected = row_images(&changes);
    assert_eq!(decode_items(&batch).unwrap(), expected);
}

/// Images written in one message are admitted together: when the new image
/// does not fit its declaration, the old one (checked first) widens nothing
/// either, so the schema stays what the messages already written carry.
#[test]
fn images_admitted_together_change_nothing_when_one_does_not_fit() {
    let declared = dynamo_cdc_transform::DeclaredSchema::parse_avsc(
        r#"{"type":"record","name":"orders","fields":[{"name":"n","type":["null","long"]}]}"#,
    )
    .unwrap();
    let mut schema = TableSchema::new("orders", Some(&declared), NumbersMode::Auto);
    let old = parse_item(r#"{"n":{"N":"1"},"note":{"S":"x"}}"#, "OldImage").unwrap();
    let new = parse_item(r#"{"n":{"N":"1.5"}}"#, "NewImage").unwrap();
    let before = (schema.version(), schema.columns().to_vec());
    let e = schema.admit_all(&[&old, &new]).unwrap_err();
    assert!(e.contains('n'), "{e}");
    assert_eq!((schema.version(), schema.columns().to_vec()), before);
    // Both fitting: both widen.
    let new = parse_item(r#"{"n":{"N":"2"},"tag":{"BOOL":true}}"#, "NewImage").unwrap();
    schema.admit_all(&[&old, &new]).unwrap();
    let names: Vec<&str> = schema.columns().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["n", "note", "tag"]);
}

/// With `numbers = "double"`, a key the double would round is refused,
/// naming it: two items would share one key in the rows. Keys a double
/// holds, and every other number, are written as doubles.
#[test]
fn a_key_that_a_double_would_round_is_refused_in_double_mode_or_declared_double() {
    let row = |seq: &str, id: &str, price: &str| {
        let keys = format!(r#"{{"id":{{"N":"{id}"}}}}"#);
        let new = format!(r#"{{"id":{{"N":"{id}"}},"price":{{"N":"{price}"}}}}"#);
        change(Op::Insert, seq, &keys, None, Some(&new))
    };
    let mut schema = TableSchema::new("orders", None, NumbersMode::Double);
    schema
        .admit_row(&row("1", "9007199254740992", "9007199254740993"))
        .unwrap();
    let e = schema
        .admit_row(&row("2", "9007199254740993", "1"))
        .unwrap_err();
    assert!(
        e.starts_with("key attribute `id` is 9007199254740993") && e.contains("9007199254740992"),
        "{e}"
    );
    // An exact double that prints shorter would share its key with the
    // number it prints as.
    let e = schema
        .admit_row(&row("3", "1152921504606846976", "1"))
        .unwrap_err();
    assert!(e.contains("1152921504606847000"), "{e}");
    // The same key in the other modes is exact.
    let mut auto = TableSchema::new("orders", None, NumbersMode::Auto);
    auto.admit_row(&row("2", "9007199254740993", "1")).unwrap();

    // A key declared a double rounds in every mode: 2^60 and the shortest
    // decimal of its double would be one row key.
    let declared = dynamo_cdc_transform::DeclaredSchema::parse_avsc(
        r#"{"type":"record","name":"orders","fields":[{"name":"id","type":"double"}]}"#,
    )
    .unwrap();
    for mode in [NumbersMode::Auto, NumbersMode::String, NumbersMode::Double] {
        let mut schema = TableSchema::new("orders", Some(&declared), mode);
        schema
            .admit_row(&row("1", "1152921504606847000", "1"))
            .unwrap();
        let e = schema
            .admit_row(&row("2", "1152921504606846976", "1"))
            .unwrap_err();
        assert!(
            e.starts_with("key attribute `id` is 1152921504606846976")
                && e.contains("declared double"),
            "{mode:?}: {e}"
        );
    }
}
