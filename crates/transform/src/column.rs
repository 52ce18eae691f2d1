//! Column types: how one attribute is laid out in Arrow, and back.
//!
//! Every attribute column's Arrow field carries metadata `dynamodb.type`
//! (see [`TYPE_KEY`]) so that any reader, and [`crate::decode`], can tell how
//! to turn the column back into DynamoDB values; `dynamodb.name` holds the
//! attribute's name when the column had to be named otherwise.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields};

/// Field metadata key: how the column encodes DynamoDB values.
pub const TYPE_KEY: &str = "dynamodb.type";
/// Field metadata key: the attribute name, when the column name differs.
pub const NAME_KEY: &str = "dynamodb.name";

/// How the `N` values of inferred columns are laid out (`numbers = ...`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumbersMode {
    /// Int64 while every value is an integer that fits; otherwise the exact
    /// decimal string. Never a float.
    #[default]
    Auto,
    /// The exact decimal string, always.
    String,
    /// Float64: lossy, only when asked for.
    Double,
}

/// The layout of one column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Only nulls seen so far.
    Null,
    /// `S` as Utf8.
    Utf8,
    /// `N` as Int64.
    Int64,
    /// `N` as its exact canonical decimal string.
    DecimalString,
    /// `N` as Float64 (lossy).
    Float64,
    /// `N` as Decimal128(precision, scale), only when declared.
    Decimal {
        /// total digits
        precision: u8,
        /// digits after the point
        scale: u8,
    },
    /// `B` as Binary.
    Binary,
    /// `BOOL` as Boolean.
    Boolean,
    /// `SS`, `NS` or `BS` as a sorted list of the element layout.
    Set(Box<ColumnType>),
    /// `L` with a declared element layout.
    List(Box<ColumnType>),
    /// `M` with declared fields.
    Struct(Vec<(String, ColumnType)>),
    /// `M` whose names are free and whose values share a declared layout.
    Map(Box<ColumnType>),
    /// Any value as its typed DynamoDB JSON, e.g. `{"M":{"a":{"S":"x"}}}`.
    Json,
}

impl ColumnType {
    /// The Arrow type of this layout.
    pub fn data_type(&self) -> DataType {
        match self {
            ColumnType::Null => DataType::Null,
            ColumnType::Utf8 | ColumnType::DecimalString | ColumnType::Json => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Decimal { precision, scale } => {
                DataType::Decimal128(*precision, *scale as i8)
            }
            ColumnType::Binary => DataType::Binary,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Set(inner) | ColumnType::List(inner) => {
                DataType::List(Arc::new(inner.field("item", None)))
            }
            ColumnType::Struct(fields) => DataType::Struct(struct_fields(fields)),
            ColumnType::Map(value) => DataType::Map(Arc::new(map_entries(value)), false),
        }
    }

    /// The `dynamodb.type` tag of this layout.
    pub fn tag(&self) -> &'static str {
        match self {
            ColumnType::Null => "NULL",
            ColumnType::Utf8 => "S",
            ColumnType::Int64
            | ColumnType::DecimalString
            | ColumnType::Float64
            | ColumnType::Decimal { .. } => "N",
            ColumnType::Binary => "B",
            ColumnType::Boolean => "BOOL",
            ColumnType::Set(inner) => match **inner {
                ColumnType::Utf8 => "SS",
                ColumnType::Binary => "BS",
                _ => "NS",
            },
            ColumnType::List(_) => "L",
            ColumnType::Struct(_) | ColumnType::Map(_) => "M",
            ColumnType::Json => "json",
        }
    }

    /// An Arrow field for this layout; `attribute` is recorded when it differs
    /// from `name`.
    pub fn field(&self, name: &str, attribute: Option<&str>) -> Field {
        let mut meta = HashMap::from([(TYPE_KEY.to_owned(), self.tag().to_owned())]);
        if let Some(attr) = attribute.filter(|a| *a != name) {
            meta.insert(NAME_KEY.to_owned(), attr.to_owned());
        }
        Field::new(name, self.data_type(), true).with_metadata(meta)
    }

    /// Reads the layout back from a field written by [`ColumnType::field`].
    ///
    /// # Errors
    /// When the field has no `dynamodb.type` or it does not match the Arrow type.
    pub fn from_field(field: &Field) -> Result<ColumnType, String> {
        let tag = field.metadata().get(TYPE_KEY).map(String::as_str);
        let mismatch = || {
            format!(
                "column `{}`: Arrow type {} does not match dynamodb.type {:?}",
                field.name(),
                field.data_type(),
                tag
            )
        };
        Ok(match (tag, field.data_type()) {
            (Some("NULL"), DataType::Null) => ColumnType::Null,
            (Some("S"), DataType::Utf8) => ColumnType::Utf8,
            (Some("N"), DataType::Int64) => ColumnType::Int64,
            (Some("N"), DataType::Utf8) => ColumnType::DecimalString,
            (Some("N"), DataType::Float64) => ColumnType::Float64,
            (Some("N"), DataType::Decimal128(p, s)) if *s >= 0 => ColumnType::Decimal {
                precision: *p,
                scale: *s as u8,
            },
            (Some("B"), DataType::Binary) => ColumnType::Binary,
            (Some("BOOL"), DataType::Boolean) => ColumnType::Boolean,
            (Some("json"), DataType::Utf8) => ColumnType::Json,
            (Some("SS" | "NS" | "BS"), DataType::List(item)) => {
                ColumnType::Set(Box::new(ColumnType::from_field(item)?))
            }
            (Some("L"), DataType::List(item)) => {
                ColumnType::List(Box::new(ColumnType::from_field(item)?))
            }
            (Some("M"), DataType::Map(entries, _)) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => {
                    ColumnType::Map(Box::new(ColumnType::from_field(&kv[1])?))
                }
                _ => return Err(mismatch()),
            },
            (Some("M"), DataType::Struct(fields)) => ColumnType::Struct(
                fields
                    .iter()
                    .map(|f| Ok((attribute_name(f).to_owned(), ColumnType::from_field(f)?)))
                    .collect::<Result<_, String>>()?,
            ),
            _ => return Err(mismatch()),
        })
    }
}

/// The attribute a field stands for.
pub fn attribute_name(field: &Field) -> &str {
    field
        .metadata()
        .get(NAME_KEY)
        .map_or(field.name().as_str(), String::as_str)
}

/// A map's entries as Parquet names them (`key_value`, with `key` and
/// `value`), which every reader takes: the names are free in Arrow.
pub(crate) fn map_entries(value: &ColumnType) -> Field {
    let fields = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        value.field("value", None),
    ]);
    Field::new("key_value", DataType::Struct(fields), false)
}

fn struct_fields(fields: &[(String, ColumnType)]) -> Fields {
    fields
        .iter()
        .map(|(name, ty)| ty.field(name, None))
        .collect()
}
