//! One data file being written: flat rows under Iceberg field ids, in the
//! project's own Parquet writer, and the metadata the Iceberg crate gets
//! for it once it is closed.
//!
//! A file's name is random (a UUIDv7) and it is not part of the table until
//! a commit names it, so it is written in place: on a local warehouse
//! straight to its final path, on a bucket into an unnamed local spool
//! uploaded at close. A crash leaves at most files no snapshot references.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StructArray, make_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use dynamo_cdc_core::durable::{create_dir_durably, sync_dir};
use dynamo_cdc_object_store::{CopyError, ObjectPath, Objects, Upload};
use dynamo_cdc_transform::is_long_text;
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Literal, Struct};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::IcebergSinkError;
use crate::metrics::FileMetrics;

/// Where a file's bytes go.
pub(crate) enum Target {
    /// Its final path on a local disk.
    Local(PathBuf),
    /// A local spool, uploaded to `key` on close.
    Spooled { objects: Objects, key: ObjectPath },
}

/// How data files are encoded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Encoding {
    pub zstd_level: i32,
    pub row_group_rows: usize,
    pub row_group_bytes: usize,
}

/// A data file being written.
pub(crate) struct OpenFile {
    writer: ArrowWriter<File>,
    /// The same file, to sync or upload once the writer has closed it.
    file: File,
    target: Target,
    /// The file's location as the table records it.
    location: String,
    schema: SchemaRef,
    /// The partition value: midnight (UTC) of the rows' day, in epoch ms.
    pub day_ms: Option<i64>,
    /// The table-schema version the file's columns follow.
    pub schema_version: u64,
    pub rows: u64,
}

/// A closed data file, waiting for a commit.
pub(crate) struct ClosedFile {
    pub location: String,
    pub day_ms: Option<i64>,
    pub rows: u64,
    pub bytes: u64,
    /// Counts and bounds per field, for the manifest.
    pub metrics: FileMetrics,
    pub target: Target,
}

impl OpenFile {
    /// Starts a file at `location` with columns `fields` (with field ids),
    /// for `first`, the values of its first batch, one array per field.
    pub(crate) fn create(
        target: Target,
        location: String,
        fields: Vec<Field>,
        first: &[ArrayRef],
        day_ms: Option<i64>,
        schema_version: u64,
        encoding: Encoding,
    ) -> Result<OpenFile, IcebergSinkError> {
        let file = match &target {
            Target::Local(path) => {
                if let Some(dir) = path.parent() {
                    create_dir_durably(dir).map_err(IcebergSinkError::io("create", dir))?;
                }
                File::create(path).map_err(IcebergSinkError::io("create", path))?
            }
            Target::Spooled { .. } => {
                let spool = std::env::temp_dir();
                tempfile::tempfile_in(&spool)
                    .map_err(IcebergSinkError::io("create a spool file in", &spool))?
            }
        };
        let handle = file.try_clone().map_err(|e| IcebergSinkError::Write {
            file: location.clone(),
            source: e.into(),
        })?;
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let level = ZstdLevel::try_new(encoding.zstd_level).map_err(|source| {
            IcebergSinkError::Parquet {
                file: location.clone(),
                source,
            }
        })?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            // As in the Parquet sink: change data is mostly unique values,
            // so dictionaries cost time and save nothing under zstd; the
            // low-cardinality position columns keep them.
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(ColumnPath::from("__op"), true)
            .set_column_dictionary_enabled(ColumnPath::from("__table"), true)
            .set_column_dictionary_enabled(ColumnPath::from("__shard_id"), true)
            .set_max_row_group_row_count(Some(encoding.row_group_rows))
            .set_max_row_group_bytes(Some(encoding.row_group_bytes))
            .set_data_page_size_limit(128 * 1024)
            .set_created_by(format!("dynamo-cdc {}", env!("CARGO_PKG_VERSION")));
        for (path, level) in statistics_levels(&schema, first) {
            props = props.set_column_statistics_enabled(path, level);
        }
        let writer =
            ArrowWriter::try_new(file, schema.clone(), Some(props.build())).map_err(|source| {
                IcebergSinkError::Write {
                    file: location.clone(),
                    source,
                }
            })?;
        Ok(OpenFile {
            writer,
            file: handle,
            target,
            location,
            schema,
            day_ms,
            schema_version,
            rows: 0,
        })
    }

    /// Appends rows: `columns` in the order of the file's fields.
    pub(crate) fn write(&mut self, columns: Vec<ArrayRef>) -> Result<(), IcebergSinkError> {
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(array, field)| retype(array, field.data_type()))
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|source| {
            IcebergSinkError::Arrow {
                file: self.location.clone(),
                source,
            }
        })?;
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(&batch)
            .map_err(|source| IcebergSinkError::Write {
                file: self.location.clone(),
                source,
            })
    }

    /// Compressed bytes so far, about.
    pub(crate) fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Finishes the file and makes it durable where the table will look:
    /// fsynced on a local disk (with its directory), uploaded (created only if absent) to a
    /// bucket.
    pub(crate) fn close(self) -> Result<ClosedFile, IcebergSinkError> {
        let location = self.location;
        let footer = self
            .writer
            .close()
            .map_err(|source| IcebergSinkError::Write {
                file: location.clone(),
                source,
            })?;
        let metrics = FileMetrics::read(&footer);
        let mut file = self.file;
        let bytes = match &self.target {
            Target::Local(path) => {
                file.sync_all()
                    .map_err(IcebergSinkError::io("fsync", path))?;
                // The file's name, which the commit will refer to.
                if let Some(dir) = path.parent() {
                    sync_dir(dir).map_err(IcebergSinkError::io("fsync", dir))?;
                }
                file.metadata()
                    .map_err(IcebergSinkError::io("stat", path))?
                    .len()
            }
            Target::Spooled { objects, key } => {
                let spool = std::env::temp_dir();
                file.seek(SeekFrom::Start(0))
                    .map_err(IcebergSinkError::io("read a spool file in", &spool))?;
                let mut upload = Upload::new(objects, key.clone());
                upload.copy_from(&mut file).map_err(|e| match e {
                    CopyError::Object(o) => IcebergSinkError::Object(o),
                    CopyError::Read(e) => IcebergSinkError::io("read a spool file in", &spool)(e),
                })?;
                match upload.finish() {
                    Ok(size) => size,
                    // A data file's name is this writer's own: a name that
                    // exists holds this file when a create whose answer was
                    // lost was retried (and refused).
                    Err(o) if o.class == dynamo_cdc_object_store::FailureClass::Collision => {
                        file.seek(SeekFrom::Start(0))
                            .map_err(IcebergSinkError::io("read a spool file in", &spool))?;
                        let size = file
                            .metadata()
                            .map_err(IcebergSinkError::io("read a spool file in", &spool))?
                            .len();
                        if !objects.holds(key, &mut file, size)? {
                            return Err(o.into());
                        }
                        size
                    }
                    Err(o) => return Err(o.into()),
                }
            }
        };
        Ok(ClosedFile {
            location,
            day_ms: self.day_ms,
            rows: self.rows,
            bytes,
            metrics,
            target: self.target,
        })
    }
}

impl ClosedFile {
    /// What the Iceberg crate needs to add the file to a snapshot, with
    /// the bounds of the fields `schema` gives types to.
    pub(crate) fn data_file(
        &self,
        spec_id: i32,
        schema: &iceberg::spec::Schema,
    ) -> Result<DataFile, IcebergSinkError> {
        let (lower_bounds, upper_bounds) = self.metrics.bounds(schema);
        DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(self.location.clone())
            .file_format(DataFileFormat::Parquet)
            .partition(Struct::from_iter([self.day_ms.map(Literal::long)]))
            .partition_spec_id(spec_id)
            .record_count(self.rows)
            .file_size_in_bytes(self.bytes)
            .column_sizes(self.metrics.column_sizes.clone())
            .value_counts(self.metrics.value_counts.clone())
            .null_value_counts(self.metrics.null_value_counts.clone())
            .lower_bounds(lower_bounds)
            .upper_bounds(upper_bounds)
            .build()
            .map_err(|e| IcebergSinkError::Internal(format!("data file {}: {e}", self.location)))
    }

    /// Removes a file no commit will name (another writer committed its
    /// rows). Best effort: an orphan file is harmless.
    pub(crate) fn discard(&self) {
        let result = match &self.target {
            Target::Local(path) => std::fs::remove_file(path).map_err(|e| e.to_string()),
            Target::Spooled { objects, key } => objects.delete(key).map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!(file = %self.location, error = %e, "cannot remove a data file no snapshot references");
        }
    }
}

/// `array` as `data_type`, which differs from the array's own type only in
/// field metadata (the field ids of list elements and struct children).
fn retype(array: ArrayRef, data_type: &DataType) -> ArrayRef {
    if array.data_type() == data_type {
        return array;
    }
    make_array(retype_data(array.to_data(), data_type))
}

fn retype_data(data: arrow_data::ArrayData, data_type: &DataType) -> arrow_data::ArrayData {
    let children: Vec<DataType> = match data_type {
        DataType::List(item) | DataType::Map(item, _) => vec![item.data_type().clone()],
        DataType::Struct(fields) => fields.iter().map(|f| f.data_type().clone()).collect(),
        _ => Vec::new(),
    };
    let child_data = data
        .child_data()
        .iter()
        .zip(&children)
        .map(|(c, t)| retype_data(c.clone(), t))
        .collect::<Vec<_>>();
    let builder = data.into_builder().data_type(data_type.clone());
    let builder = if children.is_empty() {
        builder
    } else {
        builder.child_data(child_data)
    };
    // Same buffers and layout, only the field metadata differs.
    builder.build().expect("retyping keeps the layout")
}

/// The statistics of the columns that do not keep the default, as in the
/// Parquet sink: none where min/max prunes nothing (DynamoDB JSON, binary,
/// list elements, and text whose values in `first`, the file's first batch,
/// are long: see [`is_long_text`]), per row group only for other text (the
/// page index's check of each page's whole min and max values costs a sixth
/// of a run on text of hundreds of KB; readers skip row groups by them, and
/// the manifests' bounds are taken from them: see [`crate::metrics`]).
fn statistics_levels(schema: &Schema, first: &[ArrayRef]) -> Vec<(ColumnPath, EnabledStatistics)> {
    fn walk(
        field: &Field,
        values: Option<&dyn Array>,
        in_list: bool,
        path: &mut Vec<String>,
        out: &mut Vec<(ColumnPath, EnabledStatistics)>,
    ) {
        path.push(field.name().clone());
        let none = EnabledStatistics::None;
        match field.data_type() {
            DataType::Struct(children) => {
                let fields = values.and_then(|v| v.as_any().downcast_ref::<StructArray>());
                for (i, c) in children.iter().enumerate() {
                    let child = fields.map(|f| f.column(i).as_ref());
                    walk(c, child, in_list, path, out);
                }
            }
            DataType::List(item) => {
                path.push("list".to_owned());
                walk(item, None, true, path, out);
                path.pop();
            }
            // `<column>.key_value.key` and `.value`, repeated.
            DataType::Map(entries, _) => walk(entries, None, true, path, out),
            DataType::Binary => out.push((ColumnPath::new(path.clone()), none)),
            _ if in_list => out.push((ColumnPath::new(path.clone()), none)),
            _ if field.metadata().get("dynamodb.type").map(String::as_str) == Some("json") => {
                out.push((ColumnPath::new(path.clone()), none));
            }
            DataType::Utf8 if !field.name().starts_with("__") => {
                let level = if values.is_some_and(is_long_text) {
                    none
                } else {
                    EnabledStatistics::Chunk
                };
                out.push((ColumnPath::new(path.clone()), level));
            }
            _ => {}
        }
        path.pop();
    }
    debug_assert_eq!(first.len(), schema.fields().len(), "one array per field");
    let mut out = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let values = first.get(i).map(|a| a.as_ref());
        walk(f, values, false, &mut Vec::new(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::Fields;
    use dynamo_cdc_transform::LONG_TEXT_BYTES;

    use super::*;

    fn text(values: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn long_text_json_binary_and_list_elements_have_no_statistics() {
        let long = "x".repeat(LONG_TEXT_BYTES);
        let json = HashMap::from([("dynamodb.type".to_owned(), "json".to_owned())]);
        let doc_fields = Fields::from(vec![
            Field::new("title", DataType::Utf8, true),
            Field::new("abstract", DataType::Utf8, true),
        ]);
        let doc = StructArray::new(
            doc_fields.clone(),
            vec![text(&["t"]), text(&[long.as_str()])],
            None,
        );
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("body", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("meta", DataType::Utf8, true).with_metadata(json),
            Field::new("doc", DataType::Struct(doc_fields), true),
            Field::new("__op", DataType::Utf8, false),
        ]);
        let first: Vec<ArrayRef> = vec![
            text(&["a"]),
            text(&[long.as_str()]),
            Arc::new(Int64Array::from(vec![1])),
            text(&["{}"]),
            Arc::new(doc),
            text(&["c"]),
        ];
        let levels: Vec<String> = statistics_levels(&schema, &first)
            .into_iter()
            .map(|(path, level)| format!("{}={level:?}", path.string()))
            .collect();
        assert_eq!(
            levels,
            [
                "id=Chunk",
                "body=None",
                "meta=None",
                "doc.title=Chunk",
                "doc.abstract=None"
            ]
        );
    }
}
