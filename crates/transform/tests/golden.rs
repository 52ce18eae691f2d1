//! Golden files for the schemas of a fixture table: the inferred Arrow schema
//! and the Avro key, flat and envelope schemas. A change to any of them is a
//! change to what users read; review the diff, then regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p dynamo-cdc-transform --test golden`.

use std::path::PathBuf;

use dynamo_cdc_core::{AttributeValue, Item, parse_item};
use dynamo_cdc_transform::avro::{Shape, key_schema, value_schema};
use dynamo_cdc_transform::{DeclaredSchema, NumbersMode, TableSchema};

const DECLARED: &str = r#"{"type":"record","name":"orders","fields":[
  {"name":"order_id","type":"string"},
  {"name":"total","type":["null",{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}]},
  {"name":"shipping","type":["null",{"type":"record","name":"shipping","fields":[
     {"name":"city","type":["null","string"]},
     {"name":"zip","type":["null","string"]}]}]},
  {"name":"line_items","type":["null",{"type":"array","items":"string"}]},
  {"name":"prices","type":["null",{"type":"map","values":["null","long"]}]}
]}"#;

/// Every DynamoDB type, an integer that widens to a decimal, a type conflict,
/// a name that is not a valid Avro name and one that clashes with a position
/// column.
const ROWS: [&str; 2] = [
    r#"{"order_id":{"S":"o-1"},"total":{"N":"12.5"},"shipping":{"M":{"city":{"S":"Lyon"}}},"line_items":{"L":[{"S":"a"}]},
        "prices":{"M":{"eur":{"N":"12"},"usd":{"NULL":true}}},
        "qty":{"N":"3"},"price":{"N":"7"},"blob":{"B":"AAE="},"paid":{"BOOL":true},"note":{"NULL":true},
        "tags":{"SS":["x","y"]},"scores":{"NS":["1","2"]},"thumbs":{"BS":["AQ=="]},"history":{"L":[{"N":"1"}]},
        "meta":{"M":{"k":{"S":"v"}}},"flex":{"N":"1"},"order-date":{"S":"2024-01-01"},"__op":{"S":"clash"}}"#,
    r#"{"order_id":{"S":"o-2"},"price":{"N":"7.25"},"scores":{"NS":["1.5"]},"flex":{"S":"one"}}"#,
];

fn fixture() -> (TableSchema, Item) {
    let declared = DeclaredSchema::parse_avsc(DECLARED).unwrap();
    let mut schema = TableSchema::new("orders", Some(&declared), NumbersMode::Auto);
    let mut first = None;
    for row in ROWS {
        let item = parse_item(row, "NewImage").unwrap();
        schema.admit(&item).unwrap();
        first.get_or_insert(item);
    }
    (schema, first.unwrap())
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        expected, actual,
        "{name} differs from its golden file; review and regenerate"
    );
}

#[test]
fn arrow_schema() {
    let (schema, _) = fixture();
    let mut text = String::new();
    for field in schema.arrow_schema().fields() {
        let mut meta: Vec<_> = field.metadata().iter().collect();
        meta.sort();
        text.push_str(&format!(
            "{}: {} nullable={} {:?}\n",
            field.name(),
            field.data_type(),
            field.is_nullable(),
            meta
        ));
    }
    check("orders.arrow.txt", &text);
}

#[test]
fn avro_schemas() {
    let (schema, first) = fixture();
    let pretty = |j: &serde_json::Value| serde_json::to_string_pretty(j).unwrap() + "\n";
    check(
        "orders.flat.avsc",
        &pretty(&value_schema(&schema, Shape::Flat).unwrap().json),
    );
    check(
        "orders.envelope.avsc",
        &pretty(&value_schema(&schema, Shape::Envelope).unwrap().json),
    );
    let keys: Item = first.into_iter().filter(|(k, _)| k == "order_id").collect();
    assert!(matches!(keys["order_id"], AttributeValue::S(_)));
    check(
        "orders.key.avsc",
        &pretty(&key_schema("orders", &keys).unwrap().json),
    );
}
