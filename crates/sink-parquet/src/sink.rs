//! The sink: per-shard open files, schema tracking, commits and positions.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_cdc_core::{
    Change, Gap, Positions, Rejected, SequenceNumber, ShardKey, Sink, SinkError, SinkStats,
};
use dynamo_cdc_object_store::{CopyError, Location, ObjectError, ObjectPath, Objects, Upload};
use dynamo_cdc_transform::{
    ColumnType, DeclaredSchema, NumbersMode, TableSchema, flat_batch, snapshot_batch,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, parquet_to_arrow_schema};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

pub use crate::config::ParquetConfig;
use crate::events::FileCommitted;
use crate::layout::{self, FileRef, date_of, final_name, partition_dir, partition_key, temp_name};

/// The sink could not write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParquetSinkError {
    /// A file system operation failed.
    #[error("{action} {path}")]
    Io {
        /// what was being done
        action: &'static str,
        /// where
        path: PathBuf,
        /// the I/O error
        #[source]
        source: std::io::Error,
    },
    /// Writing an open file failed. Encoding valid rows does not fail, so
    /// this is the disk under it (full, read-only, an I/O error): it may pass.
    #[error("cannot write {file}")]
    Write {
        /// the file being written
        file: String,
        /// the parquet error, which wraps the I/O error
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Parquet encoding or decoding failed.
    #[error("parquet error on {file}")]
    Parquet {
        /// the file
        file: String,
        /// the parquet error
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Building rows failed (an internal inconsistency).
    #[error("cannot build rows for table {table}")]
    Arrow {
        /// the table
        table: String,
        /// the arrow error
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A committed file of an earlier run has a schema this version cannot read.
    #[error("cannot continue the schema of {at}: {reason}")]
    Schema {
        /// the table's directory or prefix
        at: String,
        /// what is wrong
        reason: String,
    },
    /// An object-store operation failed; its class says whether it may
    /// pass (see `dynamo_cdc_object_store::FailureClass`). A name that
    /// exists already means another writer committed that range.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

impl From<ParquetSinkError> for SinkError {
    /// File system failures may pass (a full disk, a read-only or vanished
    /// directory, an I/O error), as may object-store failures other than
    /// denied access and a missing bucket; the rest does not.
    fn from(e: ParquetSinkError) -> Self {
        match e {
            ParquetSinkError::Io { .. } | ParquetSinkError::Write { .. } => SinkError::transient(e),
            ParquetSinkError::Object(ref o) if o.is_transient() => SinkError::transient(e),
            _ => SinkError::fatal(e),
        }
    }
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ParquetSinkError + 'a {
    move |source| ParquetSinkError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Counts kept by the sink.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParquetStats {
    /// Files committed.
    pub files: u64,
    /// Rows in committed files.
    pub rows: u64,
    /// Bytes of committed files.
    pub bytes: u64,
    /// Changes dropped because a committed file already holds them.
    pub already_held: u64,
    /// Leftover temp files removed at start.
    pub swept: u64,
}

/// Where the dataset's files go.
enum Dataset {
    /// A local directory: temp file, fsync, rename, fsync directory.
    Local(PathBuf),
    /// A bucket prefix: a spool file, uploaded under its final name.
    Remote(Objects),
}

/// Where an open file's bytes are.
enum Target {
    /// The hidden temp file in its partition directory.
    Local { dir: PathBuf, temp: PathBuf },
    /// An unnamed local temp file (gone with the process), to be uploaded
    /// to `<partition>/<final name>` below the dataset's prefix.
    Spooled { partition: String },
}

/// A file being written for one shard.
struct OpenFile {
    writer: ArrowWriter<File>,
    target: Target,
    date: String,
    schema_version: u64,
    first: SequenceNumber,
    last: SequenceNumber,
    rows: usize,
    opened: Instant,
    /// Holds snapshot rows (with the snapshot columns).
    snapshot: bool,
}

impl OpenFile {
    /// The file being written, for messages.
    fn describe(&self) -> String {
        Self::describe_target(&self.target, &self.first)
    }

    fn describe_target(target: &Target, first: &SequenceNumber) -> String {
        match target {
            Target::Local { temp, .. } => temp.display().to_string(),
            Target::Spooled { partition } => {
                format!("the local spool of {partition}/ from {first}")
            }
        }
    }
}

/// Writes flat rows to committed Parquet files. See the crate docs.
pub struct ParquetSink {
    config: ParquetConfig,
    dataset: Dataset,
    mode: NumbersMode,
    declared: HashMap<String, DeclaredSchema>,
    schemas: HashMap<Arc<str>, TableSchema>,
    /// The last committed file of each shard, per table: a restart continues
    /// from their schemas.
    newest: HashMap<String, Vec<FileRef>>,
    open: HashMap<ShardKey, OpenFile>,
    /// Full files waiting for the next poll or flush to commit them, in order.
    /// Commits never happen inside `write`, so the pipeline can make the
    /// batch's rejects durable before the position moves past them.
    sealed: Vec<(ShardKey, OpenFile)>,
    durable: Positions,
    stats: ParquetStats,
}

impl ParquetSink {
    /// Opens the dataset at `config.path`: on a local disk, removes temp
    /// files left by a crash; on an object store, connects and lists the
    /// prefix (so a missing bucket or denied access stops the run before
    /// anything is read). Then reads the position from the committed file
    /// names.
    ///
    /// # Errors
    /// When `path` is not valid, or the root cannot be created, scanned or
    /// listed.
    pub fn open(
        config: ParquetConfig,
        mode: NumbersMode,
        declared: HashMap<String, DeclaredSchema>,
    ) -> Result<Self, ParquetSinkError> {
        let location = config.location().map_err(|e| ParquetSinkError::Schema {
            at: format!("config key `{}`", e.key),
            reason: e.reason,
        })?;
        let dataset = match location {
            Location::Local(root) => Dataset::Local(root),
            Location::Remote { url, options } => Dataset::Remote(Objects::connect(&url, &options)?),
        };
        Self::open_dataset(dataset, config, mode, declared)
    }

    /// Opens a dataset on an object store already connected (tests use
    /// object_store's in-memory store); `config.path` is not used.
    ///
    /// # Errors
    /// When the prefix cannot be listed.
    pub fn open_on(
        objects: Objects,
        config: ParquetConfig,
        mode: NumbersMode,
        declared: HashMap<String, DeclaredSchema>,
    ) -> Result<Self, ParquetSinkError> {
        Self::open_dataset(Dataset::Remote(objects), config, mode, declared)
    }

    fn open_dataset(
        dataset: Dataset,
        config: ParquetConfig,
        mode: NumbersMode,
        declared: HashMap<String, DeclaredSchema>,
    ) -> Result<Self, ParquetSinkError> {
        let mut stats = ParquetStats::default();
        let committed = match &dataset {
            Dataset::Local(root) => {
                layout::create_dir_durably(root).map_err(io("cannot create", root))?;
                let (committed, leftovers) = layout::scan(root).map_err(io("cannot scan", root))?;
                for path in leftovers {
                    tracing::info!(path = %path.display(), "removing a temp file left by an earlier run");
                    std::fs::remove_file(&path).map_err(io("cannot remove", &path))?;
                    stats.swept += 1;
                }
                committed
            }
            Dataset::Remote(objects) => layout::scan_objects(objects)?,
        };
        let mut durable = Positions::new();
        // The last file of each shard carries the widest schema that shard
        // reached; a restart widens over all of them.
        let mut last_of_shard: HashMap<ShardKey, (SequenceNumber, FileRef)> = HashMap::new();
        for found in committed {
            match last_of_shard.get(&found.key) {
                Some((seq, _)) if *seq >= found.last => {}
                _ => {
                    last_of_shard.insert(found.key.clone(), (found.last.clone(), found.file));
                }
            }
            durable.advance(found.key, found.last);
        }
        let mut newest: HashMap<String, Vec<FileRef>> = HashMap::new();
        for (key, (_, file)) in last_of_shard {
            newest.entry(key.table.to_string()).or_default().push(file);
        }
        Ok(ParquetSink {
            config,
            dataset,
            mode,
            declared,
            schemas: HashMap::new(),
            newest,
            open: HashMap::new(),
            sealed: Vec::new(),
            durable,
            stats,
        })
    }

    /// Counts so far.
    pub fn parquet_stats(&self) -> &ParquetStats {
        &self.stats
    }

    fn schema_for(&mut self, table: &Arc<str>) -> Result<&mut TableSchema, ParquetSinkError> {
        if !self.schemas.contains_key(table) {
            let declared = self.declared.get(&**table);
            let mut earlier = Vec::new();
            for file in self
                .newest
                .get(&**table)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                earlier.push(self.read_schema(file)?);
            }
            let refs: Vec<&arrow_schema::Schema> = earlier.iter().map(|s| s.as_ref()).collect();
            let schema =
                TableSchema::resume(table, declared, self.mode, &refs).map_err(|reason| {
                    ParquetSinkError::Schema {
                        at: self.describe_table(table),
                        reason,
                    }
                })?;
            self.schemas.insert(table.clone(), schema);
        }
        Ok(self.schemas.get_mut(table).expect("inserted above"))
    }

    /// The Arrow schema of a committed file. Of an object only the footer
    /// is read (a suffix range), not the whole file.
    fn read_schema(&self, file: &FileRef) -> Result<arrow_schema::SchemaRef, ParquetSinkError> {
        match (file, &self.dataset) {
            (FileRef::Local(path), _) => {
                let f = File::open(path).map_err(io("cannot open", path))?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|source| {
                    ParquetSinkError::Parquet {
                        file: path.display().to_string(),
                        source,
                    }
                })?;
                Ok(reader.schema().clone())
            }
            (FileRef::Remote { key, size }, Dataset::Remote(objects)) => {
                let parquet = |source| ParquetSinkError::Parquet {
                    file: objects.describe(key),
                    source,
                };
                let mut reader =
                    ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Skip);
                let mut want = (*size).min(FOOTER_GUESS_BYTES);
                loop {
                    let tail = objects.read_range(key, size - want..*size)?;
                    match reader.try_parse_sized(&tail, *size) {
                        Ok(()) => break,
                        Err(ParquetError::NeedMoreData(needed)) if (needed as u64) > want => {
                            want = needed as u64;
                        }
                        Err(source) => return Err(parquet(source)),
                    }
                }
                let metadata = reader.finish().map_err(parquet)?;
                let meta = metadata.file_metadata();
                let schema =
                    parquet_to_arrow_schema(meta.schema_descr(), meta.key_value_metadata())
                        .map_err(parquet)?;
                Ok(Arc::new(schema))
            }
            (FileRef::Remote { key, .. }, Dataset::Local(_)) => {
                unreachable!("object {key} listed for a local dataset")
            }
        }
    }

    /// A table's directory or prefix, for messages.
    fn describe_table(&self, table: &str) -> String {
        match &self.dataset {
            Dataset::Local(root) => root.join(table).display().to_string(),
            Dataset::Remote(objects) => objects.describe(&objects.path(table)),
        }
    }

    /// Appends rows of one shard, one date and the current schema.
    fn append(
        &mut self,
        key: &ShardKey,
        date: &str,
        rows: &[&Change],
    ) -> Result<(), ParquetSinkError> {
        let version = self.schemas[&key.table].version();
        if let Some(f) = self.open.get(key)
            && (f.date != date || f.schema_version != version)
        {
            self.seal(key);
        }
        let mut rows = rows;
        while !rows.is_empty() {
            if !self.open.contains_key(key) {
                let snapshot = rows[0].source.snapshot.is_some();
                let file = self.create(key, date, &rows[0].source.sequence_number, snapshot)?;
                self.open.insert(key.clone(), file);
            }
            let schema = &self.schemas[&key.table];
            let file = self.open.get_mut(key).expect("opened above");
            let take = rows.len().min(self.config.max_rows_per_file - file.rows);
            let build = if file.snapshot {
                snapshot_batch
            } else {
                flat_batch
            };
            let batch = build(schema, &rows[..take]).map_err(|source| ParquetSinkError::Arrow {
                table: key.table.to_string(),
                source,
            })?;
            file.writer
                .write(&batch)
                .map_err(|source| ParquetSinkError::Write {
                    file: file.describe(),
                    source,
                })?;
            file.rows += take;
            file.last = rows[take - 1].source.sequence_number.clone();
            rows = &rows[take..];
            let size = file.writer.bytes_written() + file.writer.in_progress_size();
            if file.rows >= self.config.max_rows_per_file
                || size as u64 >= self.config.max_file_bytes
            {
                self.seal(key);
            }
        }
        Ok(())
    }

    fn create(
        &self,
        key: &ShardKey,
        date: &str,
        first: &SequenceNumber,
        snapshot: bool,
    ) -> Result<OpenFile, ParquetSinkError> {
        let (file, target) = match &self.dataset {
            Dataset::Local(root) => {
                let dir = partition_dir(root, &key.table, date);
                layout::create_dir_durably(&dir).map_err(io("cannot create", &dir))?;
                let temp = dir.join(temp_name(&key.shard, first));
                let file = File::create(&temp).map_err(io("cannot create", &temp))?;
                (file, Target::Local { dir, temp })
            }
            Dataset::Remote(_) => {
                // The object's name holds the last sequence number, known
                // only when the file is sealed; an upload needs its name
                // when it starts. So the file is spooled locally, unnamed
                // (it vanishes with the process), and uploaded at commit.
                let spool = std::env::temp_dir();
                let file = tempfile::tempfile_in(&spool)
                    .map_err(io("cannot create a spool file in", &spool))?;
                let partition = partition_key(&key.table, date);
                (file, Target::Spooled { partition })
            }
        };
        let described = OpenFile::describe_target(&target, first);
        let level = ZstdLevel::try_new(self.config.zstd_level).map_err(|source| {
            ParquetSinkError::Parquet {
                file: described.clone(),
                source,
            }
        })?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            // Change data is mostly unique values: dictionaries cost time
            // and, under zstd, save nothing. The low-cardinality position
            // columns keep them, for readers that filter on them.
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(ColumnPath::from("__op"), true)
            .set_column_dictionary_enabled(ColumnPath::from("__table"), true)
            .set_column_dictionary_enabled(ColumnPath::from("__shard_id"), true)
            .set_max_row_group_row_count(Some(self.config.row_group_rows))
            // Each column buffers a page before compressing it; at the 1 MiB
            // default a table of 40 columns holds 40 MiB in flight.
            .set_data_page_size_limit(DATA_PAGE_BYTES)
            .set_created_by(format!("dynamo-cdc {}", env!("CARGO_PKG_VERSION")));
        let table = &self.schemas[&key.table];
        // Computing min/max compares every value (it was a tenth of the
        // run time); it is kept where a query engine can prune with it.
        for path in unprunable_leaf_paths(table) {
            props = props.set_column_statistics_enabled(path, EnabledStatistics::None);
        }
        let props = props.build();
        let schema = if snapshot {
            table.snapshot_arrow_schema()
        } else {
            table.arrow_schema()
        };
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|source| {
            ParquetSinkError::Write {
                file: described,
                source,
            }
        })?;
        Ok(OpenFile {
            writer,
            target,
            date: date.to_owned(),
            schema_version: self.schemas[&key.table].version(),
            first: first.clone(),
            last: first.clone(),
            rows: 0,
            opened: Instant::now(),
            snapshot,
        })
    }

    /// Takes a shard's open file out of use; the next poll commits it.
    fn seal(&mut self, key: &ShardKey) {
        if let Some(f) = self.open.remove(key) {
            self.sealed.push((key.clone(), f));
        }
    }

    /// Finishes a file and makes it visible under its final name; only
    /// then advances the position. Local: fsync, rename, fsync the
    /// directory. Object store: upload, created only if absent.
    fn commit(&mut self, key: &ShardKey, f: OpenFile) -> Result<(), ParquetSinkError> {
        let described = f.describe();
        let name = final_name(&key.shard, &f.first, &f.last);
        let file = f
            .writer
            .into_inner()
            .map_err(|source| ParquetSinkError::Write {
                file: described,
                source,
            })?;
        let (committed, bytes) = match (&f.target, &self.dataset) {
            (Target::Local { dir, temp }, _) => {
                file.sync_all().map_err(io("cannot fsync", temp))?;
                let bytes = file.metadata().map_err(io("cannot stat", temp))?.len();
                drop(file);
                let target = dir.join(&name);
                std::fs::rename(temp, &target).map_err(io("cannot rename into", &target))?;
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io("cannot fsync directory", dir))?;
                (target.display().to_string(), bytes)
            }
            (Target::Spooled { partition }, Dataset::Remote(objects)) => {
                let object = objects.path(&format!("{partition}/{name}"));
                let bytes = upload_spooled(objects, file, object.clone())?;
                (objects.describe(&object), bytes)
            }
            (Target::Spooled { .. }, Dataset::Local(_)) => {
                unreachable!("a local dataset does not spool")
            }
        };
        FileCommitted {
            file: &committed,
            table: &key.table,
            rows: f.rows as u64,
            bytes,
        }
        .emit();
        self.stats.files += 1;
        self.stats.rows += f.rows as u64;
        self.stats.bytes += bytes;
        self.durable.advance(key.clone(), f.last);
        Ok(())
    }

    /// Commits the sealed files, then the open ones that are `due`.
    fn commit_where(&mut self, due: impl Fn(&OpenFile) -> bool) -> Result<(), ParquetSinkError> {
        let mut keys: Vec<ShardKey> = self
            .open
            .iter()
            .filter(|(_, f)| due(f))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        for key in keys {
            self.seal(&key);
        }
        for (key, file) in std::mem::take(&mut self.sealed) {
            self.commit(&key, file)?;
        }
        Ok(())
    }
}

/// Uploads a spooled file under `object`, created only if absent, a part
/// at a time; returns its size.
fn upload_spooled(
    objects: &Objects,
    mut spool: File,
    object: ObjectPath,
) -> Result<u64, ParquetSinkError> {
    let spool_dir = std::env::temp_dir();
    spool
        .seek(SeekFrom::Start(0))
        .map_err(io("cannot read a spool file in", &spool_dir))?;
    let mut upload = Upload::new(objects, object);
    upload.copy_from(&mut spool).map_err(|e| match e {
        CopyError::Object(o) => ParquetSinkError::Object(o),
        CopyError::Read(e) => io("cannot read a spool file in", &spool_dir)(e),
    })?;
    Ok(upload.finish()?)
}

/// Bytes read from the end of an object to find its footer; enough for
/// the footers of wide tables, and read again when it is not.
const FOOTER_GUESS_BYTES: u64 = 64 * 1024;

/// Days since the epoch (UTC); cheaper to compare than formatted dates.
fn day_of(ms: Option<i64>) -> i64 {
    ms.unwrap_or(0).div_euclid(86_400_000)
}

/// The changes of each shard with their batch index, in order. Consecutive
/// changes of one shard share the `Arc`s the source gave them, so the common
/// case is a pointer comparison.
fn group_by_shard(changes: &[Change]) -> Vec<(ShardKey, Vec<(usize, &Change)>)> {
    let mut groups: Vec<(ShardKey, Vec<(usize, &Change)>)> = Vec::new();
    let mut current: Option<usize> = None;
    for (index, change) in changes.iter().enumerate() {
        let s = &change.source;
        let same = current.is_some_and(|g| {
            let k = &groups[g].0;
            (Arc::ptr_eq(&k.shard, &s.shard_id) || k.shard == s.shard_id)
                && (Arc::ptr_eq(&k.table, &s.table) || k.table == s.table)
        });
        if !same {
            let found = groups
                .iter()
                .position(|(k, _)| k.shard == s.shard_id && k.table == s.table);
            current = Some(found.unwrap_or_else(|| {
                groups.push((
                    ShardKey {
                        table: s.table.clone(),
                        shard: s.shard_id.clone(),
                    },
                    Vec::new(),
                ));
                groups.len() - 1
            }));
        }
        if let Some(g) = current {
            groups[g].1.push((index, change));
        }
    }
    groups
}

impl ParquetSink {
    fn write_changes(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, ParquetSinkError> {
        let mut rejected = Vec::new();
        for (key, rows) in group_by_shard(changes) {
            // Drop what this sink already holds: everything up to the highest
            // sequence number committed, sealed or buffered for the shard.
            let held = [
                self.durable.get(&key),
                self.open.get(&key).map(|f| &f.last),
                self.sealed
                    .iter()
                    .filter(|(k, _)| *k == key)
                    .map(|(_, f)| &f.last)
                    .max(),
            ]
            .into_iter()
            .flatten()
            .max()
            .cloned();
            // Admit every row first, so the batch is built once in the
            // widest schema.
            let schema = self.schema_for(&key.table)?;
            let mut admitted = Vec::with_capacity(rows.len());
            let mut already_held = 0;
            for (index, change) in rows {
                if held
                    .as_ref()
                    .is_some_and(|h| change.source.sequence_number <= *h)
                {
                    already_held += 1;
                    continue;
                }
                match schema.admit(change.row_image()) {
                    Ok(()) => admitted.push(change),
                    Err(error) => rejected.push(Rejected { index, error }),
                }
            }
            self.stats.already_held += already_held;
            // Consecutive runs of one UTC day go to one file.
            let mut start = 0;
            while start < admitted.len() {
                let day = day_of(admitted[start].source.approx_creation_ms);
                let end = admitted[start..]
                    .iter()
                    .position(|c| day_of(c.source.approx_creation_ms) != day)
                    .map_or(admitted.len(), |n| start + n);
                let date = date_of(admitted[start].source.approx_creation_ms);
                self.append(&key, &date, &admitted[start..end])?;
                start = end;
            }
        }
        rejected.sort_by_key(|r| r.index);
        Ok(rejected)
    }
}

impl Sink for ParquetSink {
    fn id(&self) -> &str {
        "parquet"
    }

    /// Raises positions to those recorded in the checkpoint, so that files
    /// removed by a retention job are not written again. The committed file
    /// names are the position; there is no other state.
    fn adopt(&mut self, positions: &Positions, _state: &serde_json::Value) {
        self.durable.merge_max(positions);
    }

    fn durable_positions(&self) -> &Positions {
        &self.durable
    }

    fn write(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, SinkError> {
        Ok(self.write_changes(changes)?)
    }

    /// Gap records live in the dead-letter store (beside the dataset when
    /// this sink is configured); the files themselves need none.
    fn record_gap(&mut self, _gap: &Gap) -> Result<(), SinkError> {
        Ok(())
    }

    fn poll(&mut self) -> Result<(), SinkError> {
        let max_age = Duration::from_millis(self.config.max_file_age_ms);
        Ok(self.commit_where(|f| f.opened.elapsed() >= max_age)?)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.commit_where(|_| true)?)
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            delivered: self.stats.rows,
            files: self.stats.files,
            bytes: self.stats.bytes,
            already_held: self.stats.already_held,
            temp_files_swept: self.stats.swept,
            ..SinkStats::default()
        }
    }
}

/// Uncompressed bytes of a data page (see where it is set).
const DATA_PAGE_BYTES: usize = 128 * 1024;

/// The Parquet paths of the columns whose min/max statistics would prune
/// nothing: DynamoDB-JSON text, binary values, and list or set elements
/// (query engines do not prune on element statistics). Scalar columns, the
/// keys and the `__` columns keep theirs.
fn unprunable_leaf_paths(schema: &TableSchema) -> Vec<ColumnPath> {
    fn walk(ty: &ColumnType, in_list: bool, path: &mut Vec<String>, out: &mut Vec<ColumnPath>) {
        match ty {
            ColumnType::Struct(fields) => {
                for (name, fty) in fields {
                    path.push(name.clone());
                    walk(fty, in_list, path, out);
                    path.pop();
                }
            }
            // Arrow lists are written as `<column>.list.<element field>`.
            ColumnType::List(inner) | ColumnType::Set(inner) => {
                path.extend(["list".to_owned(), "item".to_owned()]);
                walk(inner, true, path, out);
                path.truncate(path.len() - 2);
            }
            ColumnType::Json | ColumnType::Binary => out.push(ColumnPath::new(path.clone())),
            _ if in_list => out.push(ColumnPath::new(path.clone())),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for column in schema.columns() {
        walk(&column.ty, false, &mut vec![column.name.clone()], &mut out);
    }
    out
}
