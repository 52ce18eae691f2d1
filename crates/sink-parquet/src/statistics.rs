//! Which columns of a file carry min/max statistics, and at what level.
//!
//! Statistics cost time to compute and help only where a query engine can
//! skip row groups or pages with them. The writer's default (min/max per row
//! group and per page) is kept for numbers, booleans and the `__` columns;
//! the rest is decided here, once per file, from the table's schema and the
//! first batch written to the file. One batch is enough: a column either
//! holds bodies or it does not, and a wrong guess costs only the copies (or
//! the statistics) of one file.

use arrow_array::{Array, RecordBatch, StructArray};
use parquet::file::properties::EnabledStatistics;
use parquet::schema::types::ColumnPath;

use dynamo_cdc_transform::{ColumnType, is_long_text};

/// The statistics of the table's attribute `columns` (name and layout) that
/// do not keep the default:
/// - none for the columns whose min/max would prune nothing: DynamoDB-JSON
///   text, binary values, list or set elements (query engines do not prune
///   on element statistics), and long text (values averaging a kilobyte or
///   more in `first`, the file's first batch; see [`is_long_text`] for why);
/// - per row group only for other text. The writer checks a page's whole min
///   and max values as UTF-8 before truncating them for the page index, and
///   unordered text prunes nothing page by page.
pub(crate) fn statistics_levels<'a>(
    columns: impl IntoIterator<Item = (&'a str, &'a ColumnType)>,
    first: &RecordBatch,
) -> Vec<(ColumnPath, EnabledStatistics)> {
    let mut out = Vec::new();
    for (name, ty) in columns {
        let array = first.column_by_name(name).map(|a| a.as_ref());
        walk(ty, array, false, &mut vec![name.to_owned()], &mut out);
    }
    out
}

/// One column (or struct field), with its values in the first batch when
/// they can be told apart (not inside lists).
fn walk(
    ty: &ColumnType,
    values: Option<&dyn Array>,
    in_list: bool,
    path: &mut Vec<String>,
    out: &mut Vec<(ColumnPath, EnabledStatistics)>,
) {
    match ty {
        ColumnType::Struct(fields) => {
            let fields_values = values.and_then(|v| v.as_any().downcast_ref::<StructArray>());
            for (name, fty) in fields {
                let child = fields_values
                    .and_then(|s| s.column_by_name(name))
                    .map(|a| a.as_ref());
                path.push(name.clone());
                walk(fty, child, in_list, path, out);
                path.pop();
            }
        }
        // Arrow lists are written as `<column>.list.<element field>`.
        ColumnType::List(inner) | ColumnType::Set(inner) => {
            path.extend(["list".to_owned(), "item".to_owned()]);
            walk(inner, None, true, path, out);
            path.truncate(path.len() - 2);
        }
        // Maps as `<column>.key_value.key` and `.value`, repeated like a
        // list's elements.
        ColumnType::Map(value) => {
            path.extend(["key_value".to_owned(), "key".to_owned()]);
            out.push((ColumnPath::new(path.clone()), EnabledStatistics::None));
            path.pop();
            path.push("value".to_owned());
            walk(value, None, true, path, out);
            path.truncate(path.len() - 2);
        }
        ColumnType::Json | ColumnType::Binary => {
            out.push((ColumnPath::new(path.clone()), EnabledStatistics::None));
        }
        _ if in_list => out.push((ColumnPath::new(path.clone()), EnabledStatistics::None)),
        ColumnType::Utf8 => {
            let level = if values.is_some_and(is_long_text) {
                EnabledStatistics::None
            } else {
                EnabledStatistics::Chunk
            };
            out.push((ColumnPath::new(path.clone()), level));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Fields};
    use dynamo_cdc_transform::LONG_TEXT_BYTES;

    use super::*;

    fn text(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    fn levels_of(columns: &[(&str, ColumnType)], arrays: Vec<(&str, ArrayRef)>) -> Vec<String> {
        let batch = RecordBatch::try_from_iter(arrays).unwrap();
        statistics_levels(columns.iter().map(|(n, t)| (*n, t)), &batch)
            .into_iter()
            .map(|(path, level)| format!("{}={level:?}", path.string()))
            .collect()
    }

    #[test]
    fn short_text_keeps_row_group_statistics_and_long_text_has_none() {
        let long = "x".repeat(LONG_TEXT_BYTES);
        let levels = levels_of(
            &[
                ("id", ColumnType::Utf8),
                ("body", ColumnType::Utf8),
                ("n", ColumnType::Int64),
            ],
            vec![
                ("id", text(&[Some("a"), Some("b"), Some("c")])),
                ("body", text(&[Some(&long), None, Some(&long)])),
                ("n", Arc::new(Int64Array::from(vec![1, 2, 3]))),
            ],
        );
        assert_eq!(levels, ["id=Chunk", "body=None"]);
    }

    #[test]
    fn a_column_of_nulls_or_absent_from_the_batch_keeps_row_group_statistics() {
        let levels = levels_of(
            &[("gone", ColumnType::Utf8), ("empty", ColumnType::Utf8)],
            vec![("empty", text(&[None, None]))],
        );
        assert_eq!(levels, ["gone=Chunk", "empty=Chunk"]);
    }

    #[test]
    fn struct_fields_are_measured_and_list_and_map_entries_have_none() {
        let long = "y".repeat(LONG_TEXT_BYTES + 1);
        let fields = Fields::from(vec![
            Field::new("title", DataType::Utf8, true),
            Field::new("abstract", DataType::Utf8, true),
        ]);
        let doc = StructArray::new(fields, vec![text(&[Some("t")]), text(&[Some(&long)])], None);
        let levels = levels_of(
            &[
                (
                    "doc",
                    ColumnType::Struct(vec![
                        ("title".to_owned(), ColumnType::Utf8),
                        ("abstract".to_owned(), ColumnType::Utf8),
                    ]),
                ),
                ("tags", ColumnType::List(Box::new(ColumnType::Utf8))),
                ("prices", ColumnType::Map(Box::new(ColumnType::Int64))),
            ],
            vec![("doc", Arc::new(doc) as ArrayRef)],
        );
        assert_eq!(
            levels,
            [
                "doc.title=Chunk",
                "doc.abstract=None",
                "tags.list.item=None",
                "prices.key_value.key=None",
                "prices.key_value.value=None"
            ]
        );
    }
}
