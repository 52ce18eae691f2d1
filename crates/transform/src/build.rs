//! Flat rows as Arrow arrays, one column at a time.
//!
//! Values are admitted by [`TableSchema::admit`] first, so a value that does
//! not match its column's layout should never get here. If one does, that is
//! a bug: building fails with an error naming the value and the layout. It
//! is never written as null, which would lose it silently.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::{
    ArrayRef, ListArray, MapArray, NullArray, RecordBatch, StringArray, StructArray,
};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer};
use arrow_schema::{ArrowError, Field};
use dynamo_cdc_core::{AttributeValue, Change, Op};

use crate::column::ColumnType;
use crate::declared::set_elements;
use crate::schema::TableSchema;

/// Builds the flat rows of `changes` (all of one table) in `schema`.
///
/// # Errors
/// Only on an internal inconsistency between schema and arrays.
pub fn flat_batch(schema: &TableSchema, changes: &[&Change]) -> Result<RecordBatch, ArrowError> {
    let mut values: Vec<Vec<Option<&AttributeValue>>> =
        vec![Vec::with_capacity(changes.len()); schema.columns().len()];
    for change in changes {
        schema.each_value(change.row_image(), |ci, value| values[ci].push(value));
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.columns().len() + 8);
    for (column, values) in schema.columns().iter().zip(&values) {
        columns.push(build_array(&column.ty, values)?);
    }
    columns.extend(meta_arrays(changes));
    RecordBatch::try_new(schema.arrow_schema(), columns)
}

/// Builds the rows of snapshot rows: [`flat_batch`]'s columns, then the
/// snapshot's id, each item's read time and its marker.
///
/// # Errors
/// Only on an internal inconsistency between schema and arrays, or a change
/// that is not a snapshot row.
pub fn snapshot_batch(
    schema: &TableSchema,
    changes: &[&Change],
) -> Result<RecordBatch, ArrowError> {
    let flat = flat_batch(schema, changes)?;
    let mut ids = StringBuilder::with_capacity(changes.len(), changes.len() * 20);
    let mut read = Int64Builder::with_capacity(changes.len());
    let mut markers = StringBuilder::with_capacity(changes.len(), changes.len() * 4);
    for c in changes {
        let s = c.source.snapshot.as_ref().ok_or_else(|| {
            ArrowError::InvalidArgumentError(format!(
                "internal error: change {} of shard {} is not a snapshot row",
                c.source.sequence_number, c.source.shard_id
            ))
        })?;
        ids.append_value(&s.id);
        read.append_value(s.read_ms);
        markers.append_value(s.marker.code());
    }
    let mut columns = flat.columns().to_vec();
    columns.push(Arc::new(ids.finish()));
    columns.push(Arc::new(read.finish()));
    columns.push(Arc::new(markers.finish()));
    RecordBatch::try_new(schema.snapshot_arrow_schema(), columns)
}

fn meta_arrays(changes: &[&Change]) -> [ArrayRef; 8] {
    let n = changes.len();
    let strings = |f: &dyn Fn(&Change) -> &str| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 8);
        for c in changes {
            b.append_value(f(c));
        }
        Arc::new(b.finish())
    };
    let bools = |f: &dyn Fn(&Change) -> bool| -> ArrayRef {
        let mut b = BooleanBuilder::with_capacity(n);
        for c in changes {
            b.append_value(f(c));
        }
        Arc::new(b.finish())
    };
    let mut ts = Int64Builder::with_capacity(n);
    for c in changes {
        ts.append_option(c.source.approx_creation_ms);
    }
    [
        strings(&|c| c.op.code()),
        strings(&|c| &c.source.table),
        strings(&|c| &c.source.shard_id),
        strings(&|c| c.source.sequence_number.as_str()),
        strings(&|c| &c.source.event_id),
        Arc::new(ts.finish()),
        bools(&|c| c.op == Op::Remove),
        bools(&|c| c.source.ttl_delete),
    ]
}

/// The error for a value that does not fit its column: an admitted value
/// always fits, so this is a bug, reported rather than written as null.
fn unfit(ty: &ColumnType, v: &AttributeValue) -> ArrowError {
    let mut text = String::new();
    v.write_ddb_json(&mut text);
    if text.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    ArrowError::InvalidArgumentError(format!(
        "internal error: the value {text} does not fit its column's layout {ty:?}, \
         although the schema admitted it"
    ))
}

/// Applies `pick` to each value that is neither absent nor `NULL` (those
/// become null); `pick` returns `None` for a value that does not fit.
fn each<'a, T>(
    ty: &ColumnType,
    values: &[Option<&'a AttributeValue>],
    mut put: impl FnMut(Option<T>),
    pick: impl Fn(&'a AttributeValue) -> Option<T>,
) -> Result<(), ArrowError> {
    for v in values {
        match v {
            None | Some(AttributeValue::Null) => put(None),
            Some(v) => put(Some(pick(v).ok_or_else(|| unfit(ty, v))?)),
        }
    }
    Ok(())
}

/// One column of values in the given layout; `None` and `NULL` become null.
///
/// # Errors
/// When a value does not fit the layout (see the module docs), or Arrow
/// refuses the arrays.
pub(crate) fn build_array<'a>(
    ty: &ColumnType,
    values: &[Option<&'a AttributeValue>],
) -> Result<ArrayRef, ArrowError> {
    let n = values.len();
    if matches!(
        ty,
        ColumnType::List(_) | ColumnType::Set(_) | ColumnType::Struct(_) | ColumnType::Map(_)
    ) && values
        .iter()
        .any(|v| matches!(v, Some(AttributeValue::Nested(_))))
    {
        // A declared list, struct or map reads inside maps and lists: their
        // trees.
        let trees: Vec<Option<Cow<'_, AttributeValue>>> = values
            .iter()
            .map(|v| v.map(AttributeValue::as_tree))
            .collect();
        let refs: Vec<Option<&AttributeValue>> = trees.iter().map(Option::as_deref).collect();
        return build_array(ty, &refs);
    }
    Ok(match ty {
        ColumnType::Null => {
            if let Some(v) = values
                .iter()
                .flatten()
                .find(|v| **v != &AttributeValue::Null)
            {
                return Err(unfit(ty, v));
            }
            Arc::new(NullArray::new(n))
        }
        ColumnType::Json => json_array(values)?,
        ColumnType::Utf8 | ColumnType::DecimalString => {
            let text = |v: &'a AttributeValue| -> Option<&'a str> {
                match (ty, v) {
                    (ColumnType::Utf8, AttributeValue::S(s)) => Some(s),
                    (ColumnType::DecimalString, AttributeValue::N(num)) => Some(num.as_str()),
                    _ => None,
                }
            };
            // Sized up front: growing the value buffer copies it each time.
            let bytes = values
                .iter()
                .flatten()
                .filter_map(|v| text(v))
                .map(str::len)
                .sum();
            let mut b = StringBuilder::with_capacity(n, bytes);
            each(ty, values, |t| b.append_option(t), text)?;
            Arc::new(b.finish())
        }
        ColumnType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            each(
                ty,
                values,
                |x| b.append_option(x),
                |v| match v {
                    AttributeValue::N(num) => num.to_i64(),
                    _ => None,
                },
            )?;
            Arc::new(b.finish())
        }
        ColumnType::Float64 => {
            let mut b = Float64Builder::with_capacity(n);
            each(
                ty,
                values,
                |x| b.append_option(x),
                |v| match v {
                    AttributeValue::N(num) => Some(num.to_f64()),
                    _ => None,
                },
            )?;
            Arc::new(b.finish())
        }
        ColumnType::Decimal { precision, scale } => {
            let mut b = Decimal128Builder::with_capacity(n);
            each(
                ty,
                values,
                |x| b.append_option(x),
                |v| match v {
                    AttributeValue::N(num) => num.to_decimal128(*scale),
                    _ => None,
                },
            )?;
            Arc::new(
                b.finish()
                    .with_precision_and_scale(*precision, *scale as i8)?,
            )
        }
        ColumnType::Binary => {
            let bytes = values
                .iter()
                .map(|v| match v {
                    Some(AttributeValue::B(bytes)) => bytes.len(),
                    _ => 0,
                })
                .sum();
            let mut b = BinaryBuilder::with_capacity(n, bytes);
            each(
                ty,
                values,
                |x| b.append_option(x),
                |v| match v {
                    AttributeValue::B(bytes) => Some(&bytes[..]),
                    _ => None,
                },
            )?;
            Arc::new(b.finish())
        }
        ColumnType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(n);
            each(
                ty,
                values,
                |x| b.append_option(x),
                |v| match v {
                    AttributeValue::Bool(x) => Some(*x),
                    _ => None,
                },
            )?;
            Arc::new(b.finish())
        }
        ColumnType::Set(inner) => match set_array(inner, values) {
            Some(array) => array?,
            None => list_array(inner, values)?,
        },
        ColumnType::List(inner) => list_array(inner, values)?,
        ColumnType::Map(value) => map_array(ty, value, values)?,
        ColumnType::Struct(fields) => {
            if let Some(v) = values
                .iter()
                .flatten()
                .find(|v| !matches!(v, AttributeValue::M(_) | AttributeValue::Null))
            {
                return Err(unfit(ty, v));
            }
            let mut children = Vec::with_capacity(fields.len());
            let mut child_values = Vec::with_capacity(n);
            for (name, fty) in fields {
                child_values.clear();
                child_values.extend(values.iter().map(|v| match v {
                    Some(AttributeValue::M(m)) => m.get(name.as_str()),
                    _ => None,
                }));
                children.push(build_array(fty, &child_values)?);
            }
            let valid = NullBuffer::from_iter(
                values
                    .iter()
                    .map(|v| matches!(v, Some(AttributeValue::M(_)))),
            );
            let arrow_fields = match ty.data_type() {
                arrow_schema::DataType::Struct(f) => f,
                _ => unreachable!("a struct layout has a struct type"),
            };
            Arc::new(StructArray::try_new(arrow_fields, children, Some(valid))?)
        }
    })
}

/// Values as DynamoDB-JSON text, written straight into one value buffer.
fn json_array(values: &[Option<&AttributeValue>]) -> Result<ArrayRef, ArrowError> {
    // Sized up front where the texts are at hand (maps and lists kept as
    // text, the usual case), a guess for trees: growing it copies it.
    let bytes = values
        .iter()
        .map(|v| match v {
            Some(AttributeValue::Nested(text)) => text.as_str().len(),
            Some(AttributeValue::Null) | None => 0,
            Some(_) => 64,
        })
        .sum();
    let mut text = String::with_capacity(bytes);
    let mut offsets = Vec::with_capacity(values.len() + 1);
    offsets.push(0i32);
    let mut valid = Vec::with_capacity(values.len());
    for v in values {
        match v {
            None | Some(AttributeValue::Null) => valid.push(false),
            Some(v) => {
                v.write_ddb_json(&mut text);
                valid.push(true);
            }
        }
        let end = i32::try_from(text.len()).map_err(|_| {
            ArrowError::InvalidArgumentError(
                "a JSON column holds over 2 GiB of text in one batch".into(),
            )
        })?;
        offsets.push(end);
    }
    Ok(Arc::new(StringArray::try_new(
        OffsetBuffer::new(offsets.into()),
        Buffer::from(text.into_bytes()),
        Some(NullBuffer::from(valid)),
    )?))
}

/// A column of sets of text, numbers as text or bytes, built from the
/// sets' elements where they lie, where [`list_array`] would make each
/// element a value of its own first (a copy, and an allocation for bytes).
/// `None` for other element layouts, or when a value is not a set of the
/// column's kind: the general path then builds it, or names the misfit.
fn set_array(
    item: &ColumnType,
    values: &[Option<&AttributeValue>],
) -> Option<Result<ArrayRef, ArrowError>> {
    let mut lengths = Vec::with_capacity(values.len());
    let mut valid = Vec::with_capacity(values.len());
    let mut set = |len: Option<usize>| {
        lengths.push(len.unwrap_or(0));
        valid.push(len.is_some());
    };
    let child: ArrayRef = match item {
        ColumnType::Utf8 | ColumnType::DecimalString => {
            let mut b = StringBuilder::new();
            for v in values {
                match (item, v) {
                    (_, None | Some(AttributeValue::Null)) => set(None),
                    (ColumnType::Utf8, Some(AttributeValue::Ss(texts))) => {
                        texts.iter().for_each(|t| b.append_value(t));
                        set(Some(texts.len()));
                    }
                    (ColumnType::DecimalString, Some(AttributeValue::Ns(numbers))) => {
                        numbers.iter().for_each(|n| b.append_value(n.as_str()));
                        set(Some(numbers.len()));
                    }
                    _ => return None,
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Binary => {
            let mut b = BinaryBuilder::new();
            for v in values {
                match v {
                    None | Some(AttributeValue::Null) => set(None),
                    Some(AttributeValue::Bs(blobs)) => {
                        blobs.iter().for_each(|x| b.append_value(x));
                        set(Some(blobs.len()));
                    }
                    _ => return None,
                }
            }
            Arc::new(b.finish())
        }
        _ => return None,
    };
    let field: Arc<Field> = Arc::new(item.field("item", None));
    Some(
        ListArray::try_new(
            field,
            OffsetBuffer::from_lengths(lengths),
            child,
            Some(NullBuffer::from(valid)),
        )
        .map(|a| Arc::new(a) as ArrayRef),
    )
}

/// Maps with free names: the names in a key column, the values in the
/// declared layout, both in each map's (name) order.
fn map_array(
    ty: &ColumnType,
    value: &ColumnType,
    values: &[Option<&AttributeValue>],
) -> Result<ArrayRef, ArrowError> {
    let mut names: Vec<&str> = Vec::new();
    let mut entries: Vec<Option<&AttributeValue>> = Vec::new();
    let mut lengths = Vec::with_capacity(values.len());
    let mut valid = Vec::with_capacity(values.len());
    for v in values {
        match v {
            Some(AttributeValue::M(map)) => {
                for (name, v) in map {
                    names.push(name);
                    entries.push(Some(v));
                }
                lengths.push(map.len());
                valid.push(true);
            }
            None | Some(AttributeValue::Null) => {
                lengths.push(0);
                valid.push(false);
            }
            Some(other) => return Err(unfit(ty, other)),
        }
    }
    let field = crate::column::map_entries(value);
    let arrow_schema::DataType::Struct(kv) = field.data_type() else {
        unreachable!("a map's entries are a struct")
    };
    let keys: ArrayRef = Arc::new(StringArray::from(names));
    let entries =
        StructArray::try_new(kv.clone(), vec![keys, build_array(value, &entries)?], None)?;
    Ok(Arc::new(MapArray::try_new(
        Arc::new(field),
        OffsetBuffer::from_lengths(lengths),
        entries,
        Some(NullBuffer::from(valid)),
        false,
    )?))
}

fn list_array(
    item: &ColumnType,
    values: &[Option<&AttributeValue>],
) -> Result<ArrayRef, ArrowError> {
    let mut elements: Vec<Cow<'_, AttributeValue>> = Vec::new();
    let mut lengths = Vec::with_capacity(values.len());
    let mut valid = Vec::with_capacity(values.len());
    for v in values {
        let before = elements.len();
        match v {
            Some(AttributeValue::L(items)) => {
                elements.extend(items.iter().map(Cow::Borrowed));
                valid.push(true);
            }
            Some(set @ (AttributeValue::Ss(_) | AttributeValue::Ns(_) | AttributeValue::Bs(_))) => {
                elements.extend(set_elements(set).into_iter().map(Cow::Owned));
                valid.push(true);
            }
            None | Some(AttributeValue::Null) => valid.push(false),
            Some(other) => return Err(unfit(&ColumnType::List(Box::new(item.clone())), other)),
        }
        lengths.push(elements.len() - before);
    }
    let refs: Vec<Option<&AttributeValue>> = elements.iter().map(|e| Some(e.as_ref())).collect();
    let child = build_array(item, &refs)?;
    let field: Arc<Field> = Arc::new(item.field("item", None));
    Ok(Arc::new(ListArray::try_new(
        field,
        OffsetBuffer::from_lengths(lengths),
        child,
        Some(NullBuffer::from(valid)),
    )?))
}

#[cfg(test)]
mod unfit_values {
    use super::*;

    #[test]
    fn a_value_that_does_not_fit_is_an_error_never_a_null() {
        let s = AttributeValue::S("x".into());
        let n =
            AttributeValue::N(dynamo_cdc_core::Number::parse("12345678901234567890123").unwrap());
        let m = AttributeValue::M(Default::default());
        for (ty, v) in [
            (ColumnType::Int64, &s),
            (ColumnType::Int64, &n),
            (ColumnType::Utf8, &n),
            (ColumnType::Boolean, &s),
            (ColumnType::Binary, &s),
            (ColumnType::Null, &s),
            (ColumnType::List(Box::new(ColumnType::Utf8)), &m),
            (ColumnType::Struct(Vec::new()), &s),
        ] {
            let e = build_array(&ty, &[Some(&AttributeValue::Null), Some(v)]).unwrap_err();
            assert!(e.to_string().contains("does not fit"), "{ty:?}: {e}");
        }
        // Absent values and NULL are nulls, in every layout.
        let built = build_array(&ColumnType::Int64, &[None, Some(&AttributeValue::Null)]).unwrap();
        assert_eq!(built.null_count(), 2);
    }
}

#[cfg(test)]
mod sets {
    use dynamo_cdc_core::Number;

    use super::*;

    /// Sets built where they lie are the arrays the general path builds
    /// from each element, nulls and all; any other value goes the general
    /// way, which names a misfit.
    #[test]
    fn sets_read_in_place_build_what_the_general_path_builds() {
        let texts =
            AttributeValue::string_set(vec!["b".into(), "a long text past 22 bytes".into()])
                .unwrap();
        let numbers = AttributeValue::number_set(
            ["1.5", "-7", "12345678901234567890123456789"]
                .iter()
                .map(|n| Number::parse(n).unwrap())
                .collect(),
        )
        .unwrap();
        let blobs = AttributeValue::binary_set(vec![vec![0, 1], vec![255; 40]]).unwrap();
        let null = AttributeValue::Null;
        for (item, set) in [
            (ColumnType::Utf8, &texts),
            (ColumnType::DecimalString, &numbers),
            (ColumnType::Binary, &blobs),
        ] {
            let values = [Some(set), None, Some(&null), Some(set)];
            let fast = set_array(&item, &values).unwrap().unwrap();
            let general = list_array(&item, &values).unwrap();
            assert_eq!(fast.to_data(), general.to_data(), "{item:?}");
            assert_eq!(fast.null_count(), 2);
        }
        let list = AttributeValue::L(vec![AttributeValue::S("a".into())]);
        assert!(set_array(&ColumnType::Utf8, &[Some(&list)]).is_none());
        assert!(set_array(&ColumnType::Utf8, &[Some(&numbers)]).is_none());
        assert!(set_array(&ColumnType::Float64, &[Some(&numbers)]).is_none());
        let mixed = ColumnType::Set(Box::new(ColumnType::Binary));
        let e = build_array(&mixed, &[Some(&texts)]).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }
}
