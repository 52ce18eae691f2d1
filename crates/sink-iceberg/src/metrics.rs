//! A data file's column metrics for its manifest entry, read from the
//! Parquet footer the writer returns: bytes, values and nulls per field,
//! and lower and upper bounds, so that engines (Spark, Trino, Athena,
//! pyiceberg) skip files a filter excludes without opening them.
//!
//! Only what the footer states is reported, and a bound only where it
//! holds for every value of the file:
//!
//! - Fields inside lists are left out (their counts are of elements, not
//!   rows).
//! - Bounds come from column statistics, which the writer keeps for `long`,
//!   `boolean` and short `string` columns only (see `file.rs`). A row
//!   group without statistics, or with values but no minimum, leaves the
//!   field without bounds; row groups of nulls only do not count.
//! - `double` columns get no bounds: Parquet's minimum and maximum skip
//!   NaN, and the manifest would then also need NaN counts. Decimals and
//!   binary columns get none either (binary has no statistics).
//! - Null counts need statistics in every row group.
//!
//! Strings compare as their UTF-8 bytes and longs as signed integers, in
//! Parquet's statistics as in Iceberg's bounds.

use std::collections::HashMap;

use iceberg::spec::{Datum, PrimitiveType, Schema, Type};
use parquet::basic::{LogicalType, Type as PhysicalType};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;

/// A bound as the footer states it, before it meets the table's schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bound {
    Long(i64),
    Boolean(bool),
    String(String),
}

impl Bound {
    /// The bound as a value of a field of type `ty`, when the two agree.
    fn datum(&self, ty: &Type) -> Option<Datum> {
        match (self, ty) {
            (Bound::Long(v), Type::Primitive(PrimitiveType::Long)) => Some(Datum::long(*v)),
            (Bound::Boolean(v), Type::Primitive(PrimitiveType::Boolean)) => Some(Datum::bool(*v)),
            (Bound::String(v), Type::Primitive(PrimitiveType::String)) => Some(Datum::string(v)),
            _ => None,
        }
    }

    fn less_than(&self, other: &Bound) -> bool {
        match (self, other) {
            (Bound::Long(a), Bound::Long(b)) => a < b,
            (Bound::Boolean(a), Bound::Boolean(b)) => a < b,
            (Bound::String(a), Bound::String(b)) => a.as_bytes() < b.as_bytes(),
            _ => false,
        }
    }
}

/// The metrics of one data file, by field id.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct FileMetrics {
    pub column_sizes: HashMap<i32, u64>,
    pub value_counts: HashMap<i32, u64>,
    pub null_value_counts: HashMap<i32, u64>,
    pub lower_bounds: HashMap<i32, Bound>,
    pub upper_bounds: HashMap<i32, Bound>,
}

/// What the row groups seen so far say about one field's bounds.
enum Range {
    /// Nothing yet (no row group, or only nulls).
    Empty,
    Known(Bound, Bound),
    /// Some row group holds values without a usable minimum or maximum.
    Unknown,
}

impl FileMetrics {
    /// Reads the metrics of a file from its footer.
    pub(crate) fn read(metadata: &ParquetMetaData) -> FileMetrics {
        let mut metrics = FileMetrics::default();
        let schema = metadata.file_metadata().schema_descr();
        let mut ranges: HashMap<i32, Range> = HashMap::new();
        // `None` once a row group has no null count.
        let mut nulls_so_far: HashMap<i32, Option<u64>> = HashMap::new();
        for group in metadata.row_groups() {
            for (index, chunk) in group.columns().iter().enumerate() {
                let column = schema.column(index);
                let info = column.self_type().get_basic_info();
                if column.max_rep_level() > 0 || !info.has_id() {
                    continue;
                }
                let id = info.id();
                *metrics.column_sizes.entry(id).or_default() += chunk.compressed_size() as u64;
                let values = u64::try_from(chunk.num_values()).unwrap_or(0);
                *metrics.value_counts.entry(id).or_default() += values;
                let stats = chunk.statistics();
                let nulls = stats.and_then(Statistics::null_count_opt);
                let so_far = nulls_so_far.entry(id).or_insert(Some(0));
                *so_far = so_far.zip(nulls).map(|(a, n)| a + n);
                let kind = BoundKind::of(column.physical_type(), info.logical_type_ref());
                let range = ranges.entry(id).or_insert(Range::Empty);
                let non_null = nulls.map(|n| values.saturating_sub(n));
                let extremes = match (kind, stats) {
                    (Some(kind), Some(stats)) => kind.extremes(stats),
                    _ => None,
                };
                *range = match (std::mem::replace(range, Range::Unknown), extremes) {
                    (Range::Unknown, _) => Range::Unknown,
                    // Only nulls here: nothing to bound.
                    (before, None) if non_null == Some(0) => before,
                    (_, None) => Range::Unknown,
                    (Range::Empty, Some((lo, hi))) => Range::Known(lo, hi),
                    (Range::Known(lo, hi), Some((l, h))) => Range::Known(
                        if l.less_than(&lo) { l } else { lo },
                        if hi.less_than(&h) { h } else { hi },
                    ),
                };
            }
        }
        metrics.null_value_counts = nulls_so_far
            .into_iter()
            .filter_map(|(id, n)| Some((id, n?)))
            .collect();
        for (id, range) in ranges {
            if let Range::Known(lo, hi) = range {
                metrics.lower_bounds.insert(id, lo);
                metrics.upper_bounds.insert(id, hi);
            }
        }
        metrics
    }

    /// Bounds as the values of the fields of `schema`; a field it does not
    /// have, or of another type, gets none.
    pub(crate) fn bounds(&self, schema: &Schema) -> (HashMap<i32, Datum>, HashMap<i32, Datum>) {
        let convert = |bounds: &HashMap<i32, Bound>| {
            bounds
                .iter()
                .filter_map(|(id, b)| {
                    let field = schema.field_by_id(*id)?;
                    Some((*id, b.datum(&field.field_type)?))
                })
                .collect()
        };
        (convert(&self.lower_bounds), convert(&self.upper_bounds))
    }
}

/// The columns bounds are taken from.
#[derive(Clone, Copy)]
enum BoundKind {
    Long,
    Boolean,
    String,
}

impl BoundKind {
    fn of(physical: PhysicalType, logical: Option<&LogicalType>) -> Option<BoundKind> {
        match (physical, logical) {
            (PhysicalType::INT64, None) => Some(BoundKind::Long),
            (PhysicalType::INT64, Some(l)) if *l == LogicalType::integer(64, true) => {
                Some(BoundKind::Long)
            }
            (PhysicalType::BOOLEAN, None) => Some(BoundKind::Boolean),
            (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)) => Some(BoundKind::String),
            _ => None,
        }
    }

    /// The minimum and maximum `stats` give, when both are there.
    fn extremes(self, stats: &Statistics) -> Option<(Bound, Bound)> {
        match (self, stats) {
            (BoundKind::Long, Statistics::Int64(s)) => {
                Some((Bound::Long(*s.min_opt()?), Bound::Long(*s.max_opt()?)))
            }
            (BoundKind::Boolean, Statistics::Boolean(s)) => {
                Some((Bound::Boolean(*s.min_opt()?), Bound::Boolean(*s.max_opt()?)))
            }
            (BoundKind::String, Statistics::ByteArray(s)) => {
                let text = |b: &parquet::data_type::ByteArray| {
                    std::str::from_utf8(b.data()).ok().map(str::to_owned)
                };
                Some((
                    Bound::String(text(s.min_opt()?)?),
                    Bound::String(text(s.max_opt()?)?),
                ))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema as ArrowSchema};
    use iceberg::spec::NestedField;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use parquet::schema::types::ColumnPath;

    use super::*;

    fn field(id: i32, name: &str, ty: DataType) -> Field {
        Field::new(name, ty, true).with_metadata(HashMap::from([(
            "PARQUET:field_id".to_owned(),
            id.to_string(),
        )]))
    }

    /// Writes `batches` (row groups of two rows) and returns the footer.
    fn write(
        schema: &Arc<ArrowSchema>,
        batches: &[Vec<ArrayRef>],
        props: WriterProperties,
    ) -> ParquetMetaData {
        let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).unwrap();
        for columns in batches {
            writer
                .write(&RecordBatch::try_new(schema.clone(), columns.clone()).unwrap())
                .unwrap();
            writer.flush().unwrap();
        }
        writer.close().unwrap()
    }

    fn schema() -> Arc<ArrowSchema> {
        let item = Arc::new(field(6, "element", DataType::Utf8));
        Arc::new(ArrowSchema::new(vec![
            field(1, "id", DataType::Utf8),
            field(2, "ts", DataType::Int64),
            field(3, "flag", DataType::Boolean),
            field(4, "score", DataType::Float64),
            field(5, "tags", DataType::List(item)),
        ]))
    }

    fn batch(
        ids: [Option<&str>; 2],
        ts: [Option<i64>; 2],
        flag: [Option<bool>; 2],
    ) -> Vec<ArrayRef> {
        let mut tags = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(field(
            6,
            "element",
            DataType::Utf8,
        )));
        tags.append_value([Some("a")]);
        tags.append_value([Some("b")]);
        let tags: ArrayRef = Arc::new(tags.finish());
        vec![
            Arc::new(StringArray::from(ids.to_vec())),
            Arc::new(Int64Array::from(ts.to_vec())),
            Arc::new(BooleanArray::from(flag.to_vec())),
            Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN)])),
            tags,
        ]
    }

    fn iceberg_schema() -> Schema {
        let p = |p| Type::Primitive(p);
        Schema::builder()
            .with_fields(vec![
                NestedField::optional(1, "id", p(PrimitiveType::String)).into(),
                NestedField::optional(2, "ts", p(PrimitiveType::Long)).into(),
                NestedField::optional(3, "flag", p(PrimitiveType::Boolean)).into(),
                NestedField::optional(4, "score", p(PrimitiveType::Double)).into(),
            ])
            .build()
            .unwrap()
    }

    #[test]
    fn bounds_span_every_row_group_and_nulls_are_counted() {
        let metadata = write(
            &schema(),
            &[
                batch([Some("k3"), None], [Some(30), Some(-5)], [Some(true), None]),
                batch(
                    [Some("k10"), Some("k9")],
                    [None, None],
                    [Some(true), Some(true)],
                ),
                batch([None, None], [Some(7), Some(100)], [None, None]),
            ],
            WriterProperties::builder().build(),
        );
        let m = FileMetrics::read(&metadata);
        assert_eq!(m.value_counts[&1], 6);
        assert_eq!(m.null_value_counts[&1], 3);
        assert_eq!(m.null_value_counts[&2], 2);
        assert_eq!(m.null_value_counts[&3], 3);
        // By bytes: "k10" < "k3" < "k9".
        assert_eq!(m.lower_bounds[&1], Bound::String("k10".into()));
        assert_eq!(m.upper_bounds[&1], Bound::String("k9".into()));
        assert_eq!(m.lower_bounds[&2], Bound::Long(-5));
        assert_eq!(m.upper_bounds[&2], Bound::Long(100));
        assert_eq!(m.lower_bounds[&3], Bound::Boolean(true));
        assert_eq!(m.upper_bounds[&3], Bound::Boolean(true));
        // Doubles (NaN) and list elements get no bounds; elements no counts.
        assert!(!m.lower_bounds.contains_key(&4) && !m.upper_bounds.contains_key(&4));
        assert!(!m.value_counts.contains_key(&6) && !m.lower_bounds.contains_key(&6));
        assert!(m.column_sizes[&1] > 0);

        let (lower, upper) = m.bounds(&iceberg_schema());
        assert_eq!(lower[&2], Datum::long(-5));
        assert_eq!(upper[&1], Datum::string("k9"));
        assert_eq!(lower[&3], Datum::bool(true));
        assert_eq!(lower.len(), 3);
    }

    #[test]
    fn a_row_group_without_statistics_leaves_the_field_unbounded() {
        let props = WriterProperties::builder()
            .set_column_statistics_enabled(ColumnPath::from("ts"), EnabledStatistics::None)
            .build();
        let metadata = write(
            &schema(),
            &[batch(
                [Some("a"), Some("b")],
                [Some(1), Some(2)],
                [Some(false), Some(true)],
            )],
            props,
        );
        let m = FileMetrics::read(&metadata);
        assert!(!m.lower_bounds.contains_key(&2) && !m.null_value_counts.contains_key(&2));
        assert_eq!(m.value_counts[&2], 2, "counts still come from the chunk");
        assert_eq!(m.lower_bounds[&1], Bound::String("a".into()));
    }

    #[test]
    fn a_bound_of_another_type_than_the_field_is_dropped() {
        let m = FileMetrics {
            lower_bounds: [
                (1, Bound::Long(3)),
                (2, Bound::Long(4)),
                (9, Bound::Long(1)),
            ]
            .into(),
            ..FileMetrics::default()
        };
        let (lower, _) = m.bounds(&iceberg_schema());
        assert_eq!(lower, [(2, Datum::long(4))].into());
    }
}
