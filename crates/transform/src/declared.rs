//! Declared table schemas: `schemas/<table>.avsc` read into column layouts,
//! and the check that a value fits its declared layout.
//!
//! An `.avsc` is an Avro record whose fields are the table's attributes.
//! Supported field types: `string`, `boolean`, `int`/`long` (and their
//! time logical types) as Int64, `float`/`double`, `bytes`, `decimal`
//! (precision at most 38), `array`, nested `record` (a map with known
//! names), `map` (a map with free names whose values share a layout), and
//! unions of `null` with one of these. A field may carry `"dynamodb_name"` when the
//! attribute name is not a valid Avro name, and `"dynamodb_type": "number"`
//! (exact decimal string) or `"json"` (typed DynamoDB JSON) on a `string`.

use apache_avro::Schema;
use apache_avro::schema::RecordField;
use dynamo_cdc_core::{AttributeValue, Number, PathName};

use crate::column::ColumnType;

/// The declared columns of one table, in declaration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredSchema {
    /// Attribute name and layout of each declared column.
    pub columns: Vec<(String, ColumnType)>,
}

impl DeclaredSchema {
    /// Whether a column looks inside maps or lists (a declared record or
    /// array): rows of such a table need their trees, not their text (see
    /// [`dynamo_cdc_core::NestedText`]).
    pub fn reads_nested_trees(&self) -> bool {
        self.columns.iter().any(|(_, ty)| {
            matches!(
                ty,
                ColumnType::List(_) | ColumnType::Struct(_) | ColumnType::Map(_)
            )
        })
    }

    /// Parses the text of an `.avsc` file.
    ///
    /// # Errors
    /// A message naming the field and the unsupported or invalid type.
    pub fn parse_avsc(text: &str) -> Result<Self, String> {
        let schema =
            Schema::parse_str(text).map_err(|e| format!("not a valid Avro schema: {e}"))?;
        let Schema::Record(record) = &schema else {
            return Err(
                "the top-level type must be an Avro record whose fields are attributes".into(),
            );
        };
        let resolved = apache_avro::schema::ResolvedSchema::new(&schema)
            .map_err(|e| format!("not a valid Avro schema: {e}"))?;
        let mut names = Names {
            known: resolved.get_names(),
            expanding: vec![record.name.clone()],
        };
        let columns = fields_columns(&record.fields, None, &mut names)?;
        Ok(DeclaredSchema { columns })
    }
}

/// The named types of a schema, for its references (a record declared once
/// and used again by name: `"type": "Address"`), and those being expanded,
/// to refuse a type that contains itself.
struct Names<'a> {
    known: &'a apache_avro::schema::NamesRef<'a>,
    expanding: Vec<apache_avro::schema::Name>,
}

/// The columns of a record's fields (`parent`: the record's path, `None`
/// at the top), each attribute at most once: two fields of one attribute
/// would leave the second always null.
fn fields_columns(
    fields: &[RecordField],
    parent: Option<&str>,
    names: &mut Names<'_>,
) -> Result<Vec<(String, ColumnType)>, String> {
    let mut columns: Vec<(String, ColumnType)> = Vec::with_capacity(fields.len());
    let mut by: Vec<&str> = Vec::with_capacity(fields.len());
    for field in fields {
        let path = match parent {
            None => field.name.clone(),
            Some(p) => format!("{p}.{}", field.name),
        };
        let (attribute, ty) = field_column(field, &path, names)?;
        if let Some(i) = columns.iter().position(|(a, _)| *a == attribute) {
            return Err(format!(
                "fields `{}` and `{}` both declare attribute `{attribute}`: give each attribute \
                 one field",
                by[i], field.name
            ));
        }
        columns.push((attribute, ty));
        by.push(&field.name);
    }
    Ok(columns)
}

fn attribute_of(field: &RecordField, path: &str) -> Result<String, String> {
    match field.custom_attributes.get("dynamodb_name") {
        None => Ok(field.name.clone()),
        Some(serde_json::Value::String(name)) if !name.is_empty() => Ok(name.clone()),
        Some(other) => Err(format!(
            "field `{path}`: dynamodb_name {other} is not an attribute name (a non-empty string)"
        )),
    }
}

fn field_column(
    field: &RecordField,
    path: &str,
    names: &mut Names<'_>,
) -> Result<(String, ColumnType), String> {
    let hint = match field.custom_attributes.get("dynamodb_type") {
        None => None,
        Some(serde_json::Value::String(h)) if h == "number" || h == "json" => Some(h.as_str()),
        Some(other) => {
            return Err(format!(
                "field `{path}`: dynamodb_type {other} is not \"number\" or \"json\""
            ));
        }
    };
    let mut ty = layout(&field.schema, path, names)?;
    if let Some(h) = hint {
        if ty != ColumnType::Utf8 {
            return Err(format!(
                "field `{path}`: dynamodb_type \"{h}\" needs type string"
            ));
        }
        ty = if h == "number" {
            ColumnType::DecimalString
        } else {
            ColumnType::Json
        };
    }
    Ok((attribute_of(field, path)?, ty))
}

fn layout(schema: &Schema, path: &str, names: &mut Names<'_>) -> Result<ColumnType, String> {
    Ok(match schema {
        Schema::Null => ColumnType::Null,
        Schema::Boolean => ColumnType::Boolean,
        Schema::Int
        | Schema::Long
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => ColumnType::Int64,
        Schema::Float | Schema::Double => ColumnType::Float64,
        Schema::Bytes => ColumnType::Binary,
        Schema::String | Schema::Uuid(_) => ColumnType::Utf8,
        Schema::Decimal(d) => {
            if d.precision == 0 || d.precision > 38 || d.scale > d.precision {
                return Err(format!(
                    "field `{path}`: decimal({}, {}) is not supported; precision must be 1 to 38 and scale at most precision",
                    d.precision, d.scale
                ));
            }
            ColumnType::Decimal {
                precision: d.precision as u8,
                scale: d.scale as u8,
            }
        }
        Schema::Array(a) => {
            ColumnType::List(Box::new(layout(&a.items, &format!("{path}[]"), names)?))
        }
        Schema::Map(m) => {
            ColumnType::Map(Box::new(layout(&m.types, &format!("{path}{{}}"), names)?))
        }
        Schema::Record(r) => {
            names.expanding.push(r.name.clone());
            let fields = fields_columns(&r.fields, Some(path), names);
            names.expanding.pop();
            ColumnType::Struct(fields?)
        }
        Schema::Ref { name } => {
            if names.expanding.contains(name) {
                return Err(format!(
                    "field `{path}`: type `{name}` contains itself; a DynamoDB attribute's \
                     declaration must end (leave it undeclared to store it as DynamoDB JSON)"
                ));
            }
            let Some(named) = names.known.get(name).copied() else {
                return Err(format!("field `{path}`: type `{name}` is not declared"));
            };
            layout(named, path, names)?
        }
        Schema::Union(u) => {
            let non_null: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|v| **v != Schema::Null)
                .collect();
            match non_null.as_slice() {
                [one] => layout(one, path, names)?,
                [] => ColumnType::Null,
                _ => {
                    return Err(format!(
                        "field `{path}`: only unions of null and one type are supported"
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "field `{path}`: Avro type {other:?} is not supported; declare a record or a map for a DynamoDB map, or leave the attribute undeclared to store it as DynamoDB JSON"
            ));
        }
    })
}

/// Where a value sits in an item (`tags[2]`, `addr.city`), spelled out only
/// when a message needs it: every value of a declared column is checked, and
/// nearly all of them fit.
#[derive(Clone, Copy)]
pub(crate) enum AttrPath<'a> {
    /// A top-level attribute.
    Attribute(&'a str),
    /// An element of a list or set.
    Index(&'a AttrPath<'a>, usize),
    /// A field of a map.
    Field(&'a AttrPath<'a>, &'a str),
}

impl std::fmt::Display for AttrPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrPath::Attribute(name) => write!(f, "{}", PathName(name)),
            AttrPath::Index(parent, i) => write!(f, "{parent}[{i}]"),
            AttrPath::Field(parent, name) => write!(f, "{parent}.{}", PathName(name)),
        }
    }
}

/// Checks that `value` fits `ty` without loss.
///
/// # Errors
/// A message naming the attribute path, the declared layout and the value.
pub(crate) fn fits(
    value: &AttributeValue,
    ty: &ColumnType,
    path: AttrPath<'_>,
) -> Result<(), String> {
    let mismatch = || {
        let mut shown = value.to_ddb_json();
        if shown.len() > 80 {
            let mut cut = 80;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
            shown.push('…');
        }
        Err(format!(
            "`{path}` is declared {} but holds {shown}",
            describe(ty)
        ))
    };
    match (ty, value) {
        (_, AttributeValue::Null) | (ColumnType::Json, _) => Ok(()),
        (ColumnType::Utf8, AttributeValue::S(_))
        | (ColumnType::DecimalString, AttributeValue::N(_))
        | (ColumnType::Binary, AttributeValue::B(_))
        | (ColumnType::Boolean, AttributeValue::Bool(_)) => Ok(()),
        (ColumnType::Int64, AttributeValue::N(n)) if n.to_i64().is_some() => Ok(()),
        // A double holds most numbers people write (`10.99` reads back as
        // `10.99`), but not every one: a digit it would drop is refused.
        (ColumnType::Float64, AttributeValue::N(n)) => match n.to_f64_exact() {
            Some(_) => Ok(()),
            None => Err(format!(
                "`{path}` is declared double but holds {n}, which a double cannot hold exactly \
                 (it would read {}); declare it a decimal or a string to keep every digit",
                n.to_f64()
            )),
        },
        (ColumnType::Decimal { precision, scale }, AttributeValue::N(n))
            if decimal_fits(n, *precision, *scale) =>
        {
            Ok(())
        }
        (ColumnType::List(inner), AttributeValue::L(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| fits(v, inner, AttrPath::Index(&path, i))),
        // A declared array holds lists only: a set stored there would read
        // back as a list. The usual element layouts fit every element.
        (ColumnType::Set(inner), AttributeValue::Ss(_)) if **inner == ColumnType::Utf8 => Ok(()),
        (ColumnType::Set(inner), AttributeValue::Bs(_)) if **inner == ColumnType::Binary => Ok(()),
        (ColumnType::Set(inner), AttributeValue::Ns(_)) if **inner == ColumnType::DecimalString => {
            Ok(())
        }
        (
            ColumnType::Set(inner),
            AttributeValue::Ss(_) | AttributeValue::Ns(_) | AttributeValue::Bs(_),
        ) => set_elements(value)
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| fits(v, inner, AttrPath::Index(&path, i))),
        (ColumnType::Map(value_ty), AttributeValue::M(map)) => map
            .iter()
            .try_for_each(|(name, v)| fits(v, value_ty, AttrPath::Field(&path, name))),
        (ColumnType::Struct(fields), AttributeValue::M(map)) => {
            for (name, v) in map {
                let Some((_, fty)) = fields.iter().find(|(f, _)| f == name) else {
                    return Err(format!(
                        "`{}` is not declared in the table schema; the declared map has no such field",
                        AttrPath::Field(&path, name)
                    ));
                };
                fits(v, fty, AttrPath::Field(&path, name))?;
            }
            Ok(())
        }
        (
            ColumnType::List(_) | ColumnType::Struct(_) | ColumnType::Map(_),
            AttributeValue::Nested(text),
        ) => fits(&text.tree(), ty, path),
        _ => mismatch(),
    }
}

fn decimal_fits(n: &Number, precision: u8, scale: u8) -> bool {
    n.to_decimal128(scale)
        .is_some_and(|v| v.unsigned_abs() < 10u128.pow(u32::from(precision)))
}

/// The elements of a set as single values.
pub(crate) fn set_elements(value: &AttributeValue) -> Vec<AttributeValue> {
    match value {
        AttributeValue::Ss(v) => v.iter().map(|s| AttributeValue::S(s.into())).collect(),
        AttributeValue::Ns(v) => v.iter().cloned().map(AttributeValue::N).collect(),
        AttributeValue::Bs(v) => v.iter().cloned().map(AttributeValue::B).collect(),
        _ => Vec::new(),
    }
}

fn describe(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Null => "null".into(),
        ColumnType::Utf8 => "string".into(),
        ColumnType::Int64 => "long (64-bit integer)".into(),
        ColumnType::DecimalString => "number".into(),
        ColumnType::Float64 => "double".into(),
        ColumnType::Decimal { precision, scale } => format!("decimal({precision}, {scale})"),
        ColumnType::Binary => "bytes".into(),
        ColumnType::Boolean => "boolean".into(),
        ColumnType::Set(inner) => format!("set of {}", describe(inner)),
        ColumnType::List(inner) => format!("array of {}", describe(inner)),
        ColumnType::Struct(_) => "record".into(),
        ColumnType::Map(inner) => format!("map of {}", describe(inner)),
        ColumnType::Json => "json".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_cdc_core::parse_item;

    const AVSC: &str = r#"{"type":"record","name":"orders","fields":[
        {"name":"order_id","type":"string"},
        {"name":"total","type":["null",{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}]},
        {"name":"qty","type":"long"},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"addr","type":["null",{"type":"record","name":"addr","fields":[{"name":"zip","type":"string"}]}]},
        {"name":"order_date","type":"string","dynamodb_name":"order-date"},
        {"name":"raw","type":"string","dynamodb_type":"json"}
    ]}"#;

    #[test]
    fn parses_declarations() {
        let d = DeclaredSchema::parse_avsc(AVSC).unwrap();
        assert_eq!(
            d.columns[1].1,
            ColumnType::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(d.columns[3].1, ColumnType::List(Box::new(ColumnType::Utf8)));
        assert_eq!(d.columns[5].0, "order-date");
        assert_eq!(d.columns[6].1, ColumnType::Json);
        let bad = r#"{"type":"record","name":"t","fields":[{"name":"m","type":{"type":"enum","name":"e","symbols":["a"]}}]}"#;
        assert!(
            DeclaredSchema::parse_avsc(bad)
                .unwrap_err()
                .contains("field `m`")
        );
    }

    /// A record type declared once and used again by name is the same
    /// layout; a type that contains itself, two fields of one attribute and
    /// a `dynamodb_name` that is not a name are refused, naming the field.
    #[test]
    fn named_types_are_reused_and_ambiguous_declarations_refused() {
        let d = DeclaredSchema::parse_avsc(
            r#"{"type":"record","name":"t","fields":[
                {"name":"ship","type":{"type":"record","name":"Address","namespace":"x",
                    "fields":[{"name":"city","type":"string"}]}},
                {"name":"bill","type":["null","x.Address"]},
                {"name":"old","type":{"type":"array","items":"x.Address"}}]}"#,
        )
        .unwrap();
        let address = ColumnType::Struct(vec![("city".into(), ColumnType::Utf8)]);
        assert_eq!(d.columns[0].1, address);
        assert_eq!(d.columns[1], ("bill".into(), address.clone()));
        assert_eq!(d.columns[2].1, ColumnType::List(Box::new(address)));

        let refused = |text: &str| DeclaredSchema::parse_avsc(text).unwrap_err();
        let e = refused(
            r#"{"type":"record","name":"t","fields":[{"name":"head","type":{"type":"record",
                "name":"Node","fields":[{"name":"next","type":["null","Node"]}]}}]}"#,
        );
        assert!(
            e.contains("field `head.next`") && e.contains("contains itself"),
            "{e}"
        );
        let e = refused(
            r#"{"type":"record","name":"t","fields":[{"name":"a","type":"string"},
                {"name":"a2","type":"long","dynamodb_name":"a"}]}"#,
        );
        assert!(
            e.contains("`a` and `a2`") && e.contains("attribute `a`"),
            "{e}"
        );
        let e = refused(
            r#"{"type":"record","name":"t","fields":[{"name":"m","type":{"type":"record",
                "name":"M","fields":[{"name":"x","type":"string"},
                {"name":"y","type":"string","dynamodb_name":"x"}]}}]}"#,
        );
        assert!(e.contains("`x` and `y`"), "{e}");
        let e = refused(
            r#"{"type":"record","name":"t","fields":[{"name":"a","type":"string","dynamodb_name":7}]}"#,
        );
        assert!(e.contains("field `a`: dynamodb_name 7"), "{e}");
    }

    /// A `map` takes any names; each value must fit the declared layout,
    /// and a message names the entry that does not.
    #[test]
    fn maps_have_free_names_and_values_of_one_layout() {
        let d = DeclaredSchema::parse_avsc(
            r#"{"type":"record","name":"t","fields":[
                {"name":"prices","type":["null",{"type":"map","values":["null","long"]}]},
                {"name":"nested","type":{"type":"map","values":{"type":"map","values":"string"}}}]}"#,
        )
        .unwrap();
        let long_map = ColumnType::Map(Box::new(ColumnType::Int64));
        assert_eq!(d.columns[0].1, long_map);
        assert_eq!(
            d.columns[1].1,
            ColumnType::Map(Box::new(ColumnType::Map(Box::new(ColumnType::Utf8))))
        );
        assert!(d.reads_nested_trees());
        let item = parse_item(
            r#"{"ok":{"M":{"a b":{"N":"1"},"é":{"NULL":true}}},"bad":{"M":{"x":{"N":"2"},"y":{"N":"2.5"}}},
                "empty":{"M":{}},"list":{"L":[]},"dotted":{"M":{"eu.de":{"S":"x"}}}}"#,
            "NewImage",
        )
        .unwrap();
        let at = AttrPath::Attribute;
        assert!(fits(&item["ok"], &long_map, at("prices")).is_ok());
        assert!(fits(&item["empty"], &long_map, at("prices")).is_ok());
        let e = fits(&item["bad"], &long_map, at("prices")).unwrap_err();
        assert!(e.contains("`prices.y` is declared long"), "{e}");
        let e = fits(&item["list"], &long_map, at("prices")).unwrap_err();
        assert!(e.contains("`prices` is declared map of long"), "{e}");
        // A name holding a dot is quoted, so it does not read as two steps.
        let e = fits(&item["dotted"], &long_map, at("prices")).unwrap_err();
        assert!(e.contains(r#"`prices."eu.de"` is declared long"#), "{e}");
        let e = fits(&item["bad"], &long_map, at("price list")).unwrap_err();
        assert!(e.contains(r#"`"price list".y` is declared long"#), "{e}");
    }

    #[test]
    fn values_must_fit() {
        let d = DeclaredSchema::parse_avsc(AVSC).unwrap();
        let ty = |name: &str| &d.columns.iter().find(|(n, _)| n == name).unwrap().1;
        let item = parse_item(
            r#"{"total":{"N":"12.345"},"qty":{"N":"1.5"},"tags":{"SS":["a"]},"addr":{"M":{"zip":{"S":"1"},"city":{"S":"x"}}}}"#,
            "NewImage",
        )
        .unwrap();
        let e = fits(&item["total"], ty("total"), AttrPath::Attribute("total")).unwrap_err();
        assert!(
            e.contains("declared decimal(12, 2)") && e.contains("12.345"),
            "{e}"
        );
        assert!(
            fits(&item["qty"], ty("qty"), AttrPath::Attribute("qty"))
                .unwrap_err()
                .contains("declared long")
        );
        let e = fits(&item["tags"], ty("tags"), AttrPath::Attribute("tags")).unwrap_err();
        assert!(
            e.contains("declared array of string") && e.contains("SS"),
            "{e}"
        );
        let e = fits(&item["addr"], ty("addr"), AttrPath::Attribute("addr")).unwrap_err();
        assert!(e.contains("`addr.city` is not declared"), "{e}");
    }

    /// A misfit deep in a value is named by its whole path; sets of the
    /// usual element layouts fit whole, and the others element by element.
    #[test]
    fn a_nested_misfit_names_its_path() {
        let list_of_records = ColumnType::List(Box::new(ColumnType::Struct(vec![(
            "qty".into(),
            ColumnType::Int64,
        )])));
        let item = parse_item(
            r#"{"lines":{"L":[{"M":{"qty":{"N":"1"}}},{"M":{"qty":{"N":"2.5"}}}]},"ns":{"NS":["1","2.5"]}}"#,
            "NewImage",
        )
        .unwrap();
        let e = fits(
            &item["lines"],
            &list_of_records,
            AttrPath::Attribute("lines"),
        )
        .unwrap_err();
        assert!(e.starts_with("`lines[1].qty` is declared long"), "{e}");
        let set = |inner: ColumnType| ColumnType::Set(Box::new(inner));
        assert!(
            fits(
                &item["ns"],
                &set(ColumnType::Float64),
                AttrPath::Attribute("ns")
            )
            .is_ok()
        );
        let e = fits(
            &item["ns"],
            &set(ColumnType::Int64),
            AttrPath::Attribute("ns"),
        )
        .unwrap_err();
        assert!(e.starts_with("`ns[1]` is declared long"), "{e}");
    }

    /// A declared double takes the numbers it reads back as written, and
    /// refuses one whose digits it would change, alone or in a set.
    #[test]
    fn a_declared_double_never_rounds() {
        let item = parse_item(
            r#"{"price":{"N":"10.99"},"id":{"N":"9007199254740993"},"big":{"N":"1152921504606846976"},
                "ns":{"NS":["0.5","9007199254740993"]},"fine":{"NS":["0.1","2"]}}"#,
            "NewImage",
        )
        .unwrap();
        let at = AttrPath::Attribute;
        let double = ColumnType::Float64;
        assert!(fits(&item["price"], &double, at("price")).is_ok());
        assert!(fits(&item["big"], &double, at("big")).is_ok());
        let e = fits(&item["id"], &double, at("id")).unwrap_err();
        assert!(
            e.starts_with("`id` is declared double but holds 9007199254740993")
                && e.contains("it would read 9007199254740992"),
            "{e}"
        );
        let set = ColumnType::Set(Box::new(ColumnType::Float64));
        assert!(fits(&item["fine"], &set, at("fine")).is_ok());
        let e = fits(&item["ns"], &set, at("ns")).unwrap_err();
        assert!(e.starts_with("`ns[1]` is declared double"), "{e}");
    }
}
