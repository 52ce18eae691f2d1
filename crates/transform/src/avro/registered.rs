//! The columns of a value schema generated here, read back from its JSON
//! (as a schema registry returns it).
//!
//! A restart starts a table's schema from nothing and widens it as changes
//! arrive, so its first schema can be narrower than the one the last run
//! registered: an attribute seen as `NULL` first is a `"null"` field again,
//! though the registered one is `["null", "string"]`. A registry checking
//! compatibility refuses that, which stops the run. Continuing from the
//! columns of the schema registered last, the restart registers that same
//! schema again (no new version) and widens it from there.

use serde_json::Value as Json;

use super::{Shape, namespace};
use crate::column::ColumnType;
use crate::schema::META_COLUMNS;

/// The attribute columns (attribute name and layout, in order) of `text`, a
/// value schema in `shape` for `table`. A field whose union holds former
/// layouts gives one entry per layout, oldest first: continued with
/// [`crate::TableSchema::resume_columns`], which widens an attribute met
/// again, the column gets the same layout and history. `None` when it is not one generated
/// here for that table in that shape (another envelope, another tool's
/// schema): there is nothing to continue then. A field whose layout is not
/// one generated here is left out.
pub fn registered_columns(
    text: &str,
    table: &str,
    shape: Shape,
) -> Option<Vec<(String, ColumnType)>> {
    let json: Json = serde_json::from_str(text).ok()?;
    if json["namespace"].as_str()? != namespace(table) {
        return None;
    }
    let top = json["fields"].as_array()?;
    let is_position = |f: &&Json| META_COLUMNS.iter().any(|m| f["name"] == *m);
    let fields: Vec<&Json> = match shape {
        Shape::Flat => {
            let positions = top.iter().filter(is_position).count();
            if json["name"] != "Value" || positions != META_COLUMNS.len() {
                return None;
            }
            top.iter().filter(|f| !is_position(f)).collect()
        }
        Shape::Envelope => {
            if json["name"] != "Envelope" {
                return None;
            }
            let before = top.iter().find(|f| f["name"] == "before")?;
            let value = before["type"].as_array()?.iter().find(|t| t.is_object())?;
            value["fields"].as_array()?.iter().collect()
        }
    };
    Some(
        fields
            .into_iter()
            .filter_map(column_forms)
            .flatten()
            .collect(),
    )
}

/// A field's attribute and layout.
fn column(field: &Json) -> Option<(String, ColumnType)> {
    let mut forms = column_forms(field)?;
    (forms.len() == 1).then(|| forms.remove(0))
}

/// A field's attribute with each layout of its union, oldest first. The
/// field's `dynamodb_type` names what its string branch holds.
fn column_forms(field: &Json) -> Option<Vec<(String, ColumnType)>> {
    let name = field["name"].as_str()?;
    let attribute = field["dynamodb_name"].as_str().unwrap_or(name);
    let hint = field["dynamodb_type"].as_str();
    let t = &field["type"];
    let branches: Vec<&Json> = match t.as_array() {
        Some(union) if union.len() > 2 && union[0] == "null" => union[1..].iter().collect(),
        _ => vec![non_null(t)],
    };
    branches
        .into_iter()
        .map(|b| {
            let hint = if *b == "string" { hint } else { None };
            Some((attribute.to_owned(), layout(b, hint)?))
        })
        .collect()
}

/// `t` without the null of a `["null", t]` union.
fn non_null(t: &Json) -> &Json {
    match t.as_array().map(Vec::as_slice) {
        Some([null, t]) if *null == "null" => t,
        _ => t,
    }
}

/// The layout written as `t`; `hint` is the `dynamodb_type` beside it.
fn layout(t: &Json, hint: Option<&str>) -> Option<ColumnType> {
    if let Some(name) = t.as_str() {
        return Some(match (name, hint) {
            ("null", None) => ColumnType::Null,
            ("string", None) => ColumnType::Utf8,
            ("string", Some("number")) => ColumnType::DecimalString,
            ("string", Some("json")) => ColumnType::Json,
            ("long", None) => ColumnType::Int64,
            ("double", None) => ColumnType::Float64,
            ("bytes", None) => ColumnType::Binary,
            ("boolean", None) => ColumnType::Boolean,
            _ => return None,
        });
    }
    let o = t.as_object()?;
    Some(match o.get("type")?.as_str()? {
        "bytes" if o.get("logicalType")? == "decimal" => ColumnType::Decimal {
            precision: u8::try_from(o.get("precision")?.as_u64()?).ok()?,
            scale: u8::try_from(o.get("scale")?.as_u64()?).ok()?,
        },
        "array" => {
            let items = o.get("items")?;
            // A list's elements may be null; a set's never are.
            if items.is_array() || *items == "null" {
                ColumnType::List(Box::new(layout(non_null(items), None)?))
            } else {
                ColumnType::Set(Box::new(set_element(
                    items,
                    o.get("dynamodb_type").and_then(Json::as_str),
                )?))
            }
        }
        "map" => ColumnType::Map(Box::new(layout(non_null(o.get("values")?), None)?)),
        "record" => ColumnType::Struct(
            o.get("fields")?
                .as_array()?
                .iter()
                .map(column)
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// A set's element layout, from its items and its DynamoDB type. Schemas
/// made before sets carried their type left a set of strings unnamed: text
/// or exact decimal strings. Such a column is left out (`None`), and is
/// inferred again from what arrives, as a start without a registry would
/// (so, for that column only, a first `NULL` may still narrow it).
fn set_element(items: &Json, kind: Option<&str>) -> Option<ColumnType> {
    match (items.as_str()?, kind) {
        ("string", Some("SS")) => Some(ColumnType::Utf8),
        ("string", Some("NS")) => Some(ColumnType::DecimalString),
        ("string", _) => None,
        ("bytes", Some("BS") | None) => Some(ColumnType::Binary),
        ("long", Some("NS") | None) => Some(ColumnType::Int64),
        ("double", Some("NS") | None) => Some(ColumnType::Float64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_core::parse_item;

    use super::*;
    use crate::avro::value_schema;
    use crate::{NumbersMode, TableSchema};

    /// Every layout inference makes, and those declarations make, comes
    /// back from the generated schema as it was, in both shapes: a restart
    /// regenerates the very schema it registered.
    #[test]
    fn generated_schemas_read_back_to_their_columns() {
        let declared = crate::DeclaredSchema::parse_avsc(
            r#"{"type":"record","name":"t","fields":[
                {"name":"addr","type":["null",{"type":"record","name":"a","fields":[
                    {"name":"city","type":["null","string"]},
                    {"name":"zip_code","type":["null","string"],"dynamodb_name":"zip code","dynamodb_type":"number"}]}]},
                {"name":"scores","type":["null",{"type":"map","values":["null","long"]}]},
                {"name":"path","type":["null",{"type":"array","items":["null","double"]}]},
                {"name":"amount","type":["null",{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}]}
            ]}"#,
        )
        .unwrap();
        let items = [
            r#"{"id":{"S":"a"},"n":{"N":"1"},"gone":{"NULL":true},"b":{"B":"AA=="},"ok":{"BOOL":true},
                "ss":{"SS":["x"]},"ns":{"NS":["1"]},"nsd":{"NS":["1.5"]},"bs":{"BS":["AA=="]},
                "m":{"M":{}},"__op":{"S":"clash"},"x-y":{"S":"renamed"},
                "addr":{"M":{"city":{"S":"c"},"zip code":{"N":"1"}}},"scores":{"M":{}},"path":{"L":[]},
                "amount":{"N":"1.25"}}"#,
            r#"{"id":{"S":"b"},"n":{"N":"2.5"},"mixed":{"N":"1"}}"#,
            r#"{"id":{"S":"c"},"mixed":{"S":"now text"}}"#,
        ];
        for mode in [NumbersMode::Auto, NumbersMode::String, NumbersMode::Double] {
            let mut schema = TableSchema::new("orders", Some(&declared), mode);
            for item in items {
                schema
                    .admit(&parse_item(item, "NewImage").unwrap())
                    .unwrap();
            }
            // Each layout of a widened column's union, oldest first.
            let want: Vec<(String, ColumnType)> = schema
                .columns()
                .iter()
                .flat_map(|c| {
                    super::super::branches(&c.ty, &c.former)
                        .into_iter()
                        .map(|ty| (c.attribute.clone(), ty.clone()))
                })
                .collect();
            for shape in [Shape::Flat, Shape::Envelope] {
                let text = value_schema(&schema, shape).unwrap().json.to_string();
                let got = registered_columns(&text, "orders", shape).unwrap();
                assert_eq!(got, want, "{mode:?} {shape:?}");
                // Continued from, it is the same schema again.
                let again = TableSchema::resume_columns("orders", Some(&declared), mode, &got);
                assert_eq!(value_schema(&again, shape).unwrap().json.to_string(), text);
            }
        }
    }

    #[test]
    fn a_set_of_strings_whose_kind_is_not_named_is_inferred_again() {
        // As schemas made before sets named their DynamoDB type: text or
        // numbers cannot be told apart, so the column starts anew.
        let text = r#"{"type":"record","name":"Value","namespace":"dynamo_cdc.orders","fields":[
            {"name":"tags","type":["null",{"type":"array","items":"string"}],"default":null},
            {"name":"ids","type":["null",{"type":"array","items":"long"}],"default":null},
            {"name":"note","type":["null","string"],"default":null},
            {"name":"__op","type":"string"},{"name":"__table","type":"string"},
            {"name":"__shard_id","type":"string"},{"name":"__sequence_number","type":"string"},
            {"name":"__event_id","type":"string"},
            {"name":"__source_ts_ms","type":["null","long"],"default":null},
            {"name":"__deleted","type":"boolean"},{"name":"__ttl_delete","type":"boolean"}]}"#;
        let got = registered_columns(text, "orders", Shape::Flat).unwrap();
        assert_eq!(
            got,
            [
                (
                    "ids".to_owned(),
                    ColumnType::Set(Box::new(ColumnType::Int64))
                ),
                ("note".to_owned(), ColumnType::Utf8),
            ]
        );
    }

    #[test]
    fn a_schema_of_another_shape_or_table_is_not_continued() {
        let mut schema = TableSchema::new("orders", None, NumbersMode::Auto);
        schema
            .admit(&parse_item(r#"{"id":{"S":"a"}}"#, "NewImage").unwrap())
            .unwrap();
        let flat = value_schema(&schema, Shape::Flat).unwrap().json.to_string();
        let envelope = value_schema(&schema, Shape::Envelope)
            .unwrap()
            .json
            .to_string();
        assert!(registered_columns(&flat, "orders", Shape::Envelope).is_none());
        assert!(registered_columns(&envelope, "orders", Shape::Flat).is_none());
        assert!(registered_columns(&flat, "other", Shape::Flat).is_none());
        assert!(registered_columns(r#"{"type":"string"}"#, "orders", Shape::Flat).is_none());
        assert!(registered_columns("not json", "orders", Shape::Flat).is_none());
    }
}
