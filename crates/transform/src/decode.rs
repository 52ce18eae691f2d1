//! Flat rows back to DynamoDB items, guided by each field's `dynamodb.type`.
//! Used to verify outputs; a top-level null reads as an absent attribute.

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use dynamo_cdc_core::{AttributeValue, Item, Number};

use crate::column::{ColumnType, attribute_name};
use crate::schema::{META_COLUMNS, SNAPSHOT_COLUMNS};

/// The attribute part of every row of a flat batch.
///
/// # Errors
/// When a column lacks `dynamodb.type` or holds a value its type cannot.
pub fn decode_items(batch: &RecordBatch) -> Result<Vec<Item>, String> {
    let mut items = vec![Item::new(); batch.num_rows()];
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        if META_COLUMNS.contains(&name) || SNAPSHOT_COLUMNS.contains(&name) {
            continue;
        }
        let ty = ColumnType::from_field(field)?;
        let attribute = attribute_name(field);
        for (row, item) in items.iter_mut().enumerate() {
            if let Some(v) = decode_value(array.as_ref(), &ty, row)
                .map_err(|e| format!("column `{}` row {row}: {e}", field.name()))?
            {
                item.insert(attribute.into(), v);
            }
        }
    }
    Ok(items)
}

fn decode_value(
    array: &dyn Array,
    ty: &ColumnType,
    row: usize,
) -> Result<Option<AttributeValue>, String> {
    if array.is_null(row) {
        return Ok(None);
    }
    let number = |text: &str| {
        Number::parse(text)
            .map(AttributeValue::N)
            .map_err(|e| e.to_string())
    };
    Ok(Some(match ty {
        ColumnType::Null => return Ok(None),
        ColumnType::Utf8 => AttributeValue::S(array.as_string::<i32>().value(row).into()),
        ColumnType::DecimalString => number(array.as_string::<i32>().value(row))?,
        ColumnType::Json => AttributeValue::from_ddb_json(array.as_string::<i32>().value(row))
            .map_err(|e| e.to_string())?,
        ColumnType::Int64 => {
            AttributeValue::N(Number::from(array.as_primitive::<Int64Type>().value(row)))
        }
        ColumnType::Float64 => number(&array.as_primitive::<Float64Type>().value(row).to_string())?,
        ColumnType::Decimal { scale, .. } => AttributeValue::N(
            Number::from_decimal128(array.as_primitive::<Decimal128Type>().value(row), *scale)
                .map_err(|e| e.to_string())?,
        ),
        ColumnType::Binary => AttributeValue::B(array.as_binary::<i32>().value(row).to_vec()),
        ColumnType::Boolean => AttributeValue::Bool(array.as_boolean().value(row)),
        ColumnType::Set(inner) | ColumnType::List(inner) => {
            let list = array.as_list::<i32>().value(row);
            let elements = (0..list.len())
                .map(|i| {
                    decode_value(list.as_ref(), inner, i).map(|v| v.unwrap_or(AttributeValue::Null))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if matches!(ty, ColumnType::List(_)) {
                AttributeValue::L(elements)
            } else {
                to_set(elements, inner)?
            }
        }
        ColumnType::Map(value) => {
            let entries = array.as_map().value(row);
            let names = entries.column(0).as_string::<i32>();
            let mut map = Item::new();
            for i in 0..entries.len() {
                let v = decode_value(entries.column(1).as_ref(), value, i)?;
                map.insert(names.value(i).into(), v.unwrap_or(AttributeValue::Null));
            }
            AttributeValue::M(map)
        }
        ColumnType::Struct(fields) => {
            let s = array.as_struct();
            let mut map = Item::new();
            for ((name, fty), child) in fields.iter().zip(s.columns()) {
                if let Some(v) = decode_value(child.as_ref(), fty, row)? {
                    map.insert(name.as_str().into(), v);
                }
            }
            AttributeValue::M(map)
        }
    }))
}

fn to_set(elements: Vec<AttributeValue>, inner: &ColumnType) -> Result<AttributeValue, String> {
    /// Unwraps each element with `pick`, failing on one of another type.
    fn all<T>(
        elements: Vec<AttributeValue>,
        pick: impl Fn(AttributeValue) -> Option<T>,
    ) -> Option<Vec<T>> {
        elements.into_iter().map(pick).collect()
    }
    let set = match inner {
        ColumnType::Utf8 => all(elements, |e| {
            if let AttributeValue::S(s) = e {
                Some(s.to_string())
            } else {
                None
            }
        })
        .map(AttributeValue::string_set),
        ColumnType::Binary => all(elements, |e| {
            if let AttributeValue::B(b) = e {
                Some(b)
            } else {
                None
            }
        })
        .map(AttributeValue::binary_set),
        _ => all(elements, |e| {
            if let AttributeValue::N(n) = e {
                Some(n)
            } else {
                None
            }
        })
        .map(AttributeValue::number_set),
    };
    set.ok_or_else(|| format!("set element of the wrong type for {inner:?}"))?
}
