//! The sink: per-shard open files, schema tracking, commits and positions.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind as IoErrorKind, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use dynamo_cdc_core::{
    Change, Gap, Positions, Refused, Rejected, SequenceNumber, ShardKey, Sink, SinkError,
    SinkStats, SnapshotRecord,
};
use dynamo_cdc_object_store::{
    CopyError, FailureClass, Location, ObjectError, ObjectPath, Objects, Upload,
};
use dynamo_cdc_transform::{DeclaredSchema, NumbersMode, TableSchema, flat_batch, snapshot_batch};
use parquet::arrow::{ArrowWriter, parquet_to_arrow_schema};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

pub use crate::config::ParquetConfig;
use crate::events::{CommitCollided, FileCommitted};
use crate::layout::{
    self, Committed, FIRST_SEQUENCE_KEY, FileRef, LAST_SEQUENCE_KEY, LEASE_EPOCH_KEY, Leftover,
    date_of, final_name, partition_dir, partition_key, temp_name,
};
use crate::snapshots;
use crate::statistics::statistics_levels;
use dynamo_cdc_dead_letter::{DEAD_LETTER_DIR, GAPS_DIR};
use dynamo_cdc_object_store::STAGING_DIR;

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
    /// The footer of a committed file cannot be read, or lacks the last
    /// sequence number its name leaves out: the position cannot be known.
    #[error("cannot read the footer of committed file {file}: {reason}")]
    Footer {
        /// the file or object
        file: String,
        /// what is wrong
        reason: String,
        /// the parquet error, when the footer does not parse
        #[source]
        source: Option<ParquetError>,
    },
    /// The file's name was taken when it was committed: another writer
    /// continued the shard from the same position (a process paused past
    /// its lease, or the one that took the shard over) and committed
    /// first. It may pass: the run starts over from the committed
    /// positions, which now include that writer's file. This sink's files
    /// of the shard are dropped, never committed under another name.
    #[error("cannot commit {file}: another writer committed this range of {shard} first")]
    Collision {
        /// the file or object that exists
        file: String,
        /// the table and shard
        shard: ShardKey,
        /// the disk's or the store's answer
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The dataset's file system cannot make hard links (some network and
    /// FUSE file systems, exFAT): a file is committed by linking it under
    /// its final name, which fails when the name exists, where a rename
    /// would replace another writer's file. Waiting does not help.
    #[error(
        "cannot commit {file}: the file system of {dir} does not make hard links, which \
         commits need (a link fails where another writer's file has the name, a rename would \
         replace it); put the dataset on a local file system such as ext4 or xfs, or in a \
         bucket"
    )]
    NoHardLinks {
        /// the file being committed
        file: String,
        /// the partition directory
        dir: PathBuf,
        /// the file system's answer
        #[source]
        source: std::io::Error,
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
    /// pass (see `dynamo_cdc_object_store::FailureClass`). A commit whose
    /// name exists is a [`ParquetSinkError::Collision`] instead.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

impl From<ParquetSinkError> for SinkError {
    /// File system failures may pass (a full disk, a read-only or vanished
    /// directory, an I/O error), as may collisions and object-store
    /// failures other than denied access and a missing bucket; the rest
    /// does not.
    fn from(e: ParquetSinkError) -> Self {
        match e {
            ParquetSinkError::Io { .. }
            | ParquetSinkError::Write { .. }
            | ParquetSinkError::Collision { .. } => SinkError::transient(e),
            ParquetSinkError::Object(ref o) if o.is_transient() => SinkError::transient(e),
            _ => SinkError::fatal(e),
        }
    }
}

pub(crate) fn io<'a>(
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
    /// A local directory: temp file, fsync, link under the final name,
    /// fsync directory.
    Local(PathBuf),
    /// A bucket prefix: a spool file, uploaded under its final name.
    Remote(Objects),
}

impl Dataset {
    /// A committed file, for messages.
    fn describe(&self, file: &FileRef) -> String {
        match (file, self) {
            (FileRef::Local(path), _) => path.display().to_string(),
            (FileRef::Remote { key, .. }, Dataset::Remote(objects)) => objects.describe(key),
            (FileRef::Remote { key, .. }, Dataset::Local(_)) => key.to_string(),
        }
    }
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

    /// Drops a file that will not be committed. Its temp file goes with it
    /// (a spool file vanishes when closed).
    fn discard(self) {
        let OpenFile { writer, target, .. } = self;
        drop(writer);
        if let Target::Local { temp, .. } = target {
            remove_temp(&temp);
        }
    }
}

/// Removes one of this sink's temp files, which nothing will commit. A
/// failure only leaves it to a later start's sweep.
fn remove_temp(temp: &Path) {
    match std::fs::remove_file(temp) {
        Ok(()) => {}
        Err(e) if e.kind() == IoErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %temp.display(), error = %e, "cannot remove a temp file");
        }
    }
}

/// What a restart continues a table's schema from: the newest committed
/// file of each shard.
#[derive(Default)]
struct Earlier {
    /// Schemas already read, distinct: the footers of `<shard>_<first>`
    /// files are read at open for their last sequence number.
    read: Vec<arrow_schema::SchemaRef>,
    /// Files of earlier versions, whose names held the position: their
    /// footers are read only when the table is written.
    unread: Vec<FileRef>,
}

impl Earlier {
    fn add_schema(&mut self, schema: arrow_schema::SchemaRef) {
        // Most shards of a table share their schema: keep one of each.
        if !self.read.contains(&schema) {
            self.read.push(schema);
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
    /// Per table, where a restart continues the schema from.
    earlier: HashMap<String, Earlier>,
    open: HashMap<ShardKey, OpenFile>,
    /// Full files waiting for the next poll or flush to commit them, in order.
    /// Commits never happen inside `write`, so the pipeline can make the
    /// batch's rejects durable before the position moves past them.
    sealed: Vec<(ShardKey, OpenFile)>,
    durable: Positions,
    /// Changes refused since the last commit, which the position passes
    /// once the rows before them are committed.
    refused: Refused,
    stats: ParquetStats,
    /// Table -> lease epoch, when the tables are shared (recorded in each
    /// file's footer, so a file can be traced to the owner that wrote it).
    lease_epochs: std::collections::BTreeMap<String, u64>,
}

impl ParquetSink {
    /// Opens the dataset at `config.path`: on an object store, connects
    /// and lists the prefix (so a missing bucket or denied access stops the
    /// run before anything is read); on a local disk, scans it. Then reads
    /// the position from the committed files (names, and the footer of the
    /// newest `<shard>_<first>` file of each shard), and on a local disk
    /// sweeps temp files: all of them when `config.exclusive`, else only
    /// those a committed file covers.
    ///
    /// # Errors
    /// When `path` is not valid, the root cannot be created, scanned or
    /// listed, or a footer the position needs cannot be read.
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
    /// When the prefix cannot be listed, or a footer the position needs
    /// cannot be read.
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
        let (committed, leftovers) = match &dataset {
            Dataset::Local(root) => {
                layout::create_dir_durably(root).map_err(io("cannot create", root))?;
                layout::scan(root).map_err(io("cannot scan", root))?
            }
            Dataset::Remote(objects) => {
                let (committed, staged) = layout::scan_objects(objects)?;
                stats.swept = sweep_staged(objects, staged, config.exclusive, chrono::Utc::now());
                (committed, Vec::new())
            }
        };
        let (durable, earlier) = positions(&dataset, committed)?;
        stats.swept += sweep(leftovers, &durable, config.exclusive)?;
        Ok(ParquetSink {
            config,
            dataset,
            mode,
            declared,
            schemas: HashMap::new(),
            earlier,
            open: HashMap::new(),
            sealed: Vec::new(),
            durable,
            refused: Refused::new(),
            stats,
            lease_epochs: std::collections::BTreeMap::new(),
        })
    }

    /// Counts so far.
    pub fn parquet_stats(&self) -> &ParquetStats {
        &self.stats
    }

    fn schema_for(&mut self, table: &Arc<str>) -> Result<&mut TableSchema, ParquetSinkError> {
        if !self.schemas.contains_key(table) {
            // A table of such a name would share the directory the dataset
            // keeps its dead letters, gap records or staged uploads in,
            // which every scan skips and a lifecycle rule may empty.
            if [DEAD_LETTER_DIR, GAPS_DIR, STAGING_DIR].contains(&&**table) {
                return Err(ParquetSinkError::Schema {
                    at: self.describe_table(table),
                    reason: format!(
                        "a table named `{table}` cannot be written to a Parquet dataset, whose \
                         `{table}/` holds the bridge's own records; write it with another sink \
                         (Kafka, Iceberg)"
                    ),
                });
            }
            let declared = self.declared.get(&**table);
            let mut earlier = Vec::new();
            if let Some(found) = self.earlier.get(&**table) {
                earlier.extend(found.read.iter().cloned());
                for file in &found.unread {
                    let footer = read_footer(&self.dataset, file)?;
                    earlier.push(schema_of(&footer, || self.dataset.describe(file))?);
                }
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
            // Only needed once per table.
            self.earlier.remove(&**table);
        }
        Ok(self.schemas.get_mut(table).expect("inserted above"))
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
            let (snapshot, room) = match self.open.get(key) {
                Some(f) => (f.snapshot, self.config.max_rows_per_file - f.rows),
                None => (
                    rows[0].source.snapshot.is_some(),
                    self.config.max_rows_per_file,
                ),
            };
            let take = rows.len().min(room);
            let build = if snapshot { snapshot_batch } else { flat_batch };
            let batch = build(&self.schemas[&key.table], &rows[..take]).map_err(|source| {
                ParquetSinkError::Arrow {
                    table: key.table.to_string(),
                    source,
                }
            })?;
            if !self.open.contains_key(key) {
                // The first batch is built before the file: it decides which
                // text columns are long (see `statistics`).
                let first = &rows[0].source.sequence_number;
                let file = self.create(key, date, first, snapshot, &batch)?;
                self.open.insert(key.clone(), file);
            }
            let file = self.open.get_mut(key).expect("opened above");
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
        first_batch: &RecordBatch,
    ) -> Result<OpenFile, ParquetSinkError> {
        let (file, target) = match &self.dataset {
            Dataset::Local(root) => {
                let dir = partition_dir(root, &key.table, date);
                layout::create_dir_durably(&dir).map_err(io("cannot create", &dir))?;
                let (temp, file) = create_temp(&dir, &key.shard, first)?;
                (file, Target::Local { dir, temp })
            }
            Dataset::Remote(_) => {
                // The file is spooled locally, unnamed (it vanishes with
                // the process), and uploaded whole at commit: writing it
                // makes no request, and a file that is never committed
                // costs the store nothing.
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
            .set_max_row_group_bytes(Some(self.config.row_group_bytes))
            // Each column buffers a page before compressing it; at the 1 MiB
            // default a table of 40 columns holds 40 MiB in flight.
            .set_data_page_size_limit(DATA_PAGE_BYTES)
            .set_created_by(format!("dynamo-cdc {}", env!("CARGO_PKG_VERSION")));
        let table = &self.schemas[&key.table];
        // Computing min/max compares every value (it was a tenth of the
        // run time); it is kept where a query engine can prune with it.
        // By their Arrow names, which may differ from the columns' in case.
        let arrow = table.arrow_schema();
        let columns =
            (table.columns().iter().zip(arrow.fields())).map(|(c, f)| (f.name().as_str(), &c.ty));
        for (path, level) in statistics_levels(columns, first_batch) {
            props = props.set_column_statistics_enabled(path, level);
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

    /// Finishes a file and makes it visible under its final name, created
    /// only if absent; only then advances the position. A file that is not
    /// committed leaves no temp file behind.
    fn commit(&mut self, key: &ShardKey, f: OpenFile) -> Result<(), ParquetSinkError> {
        let temp = match &f.target {
            Target::Local { temp, .. } => Some(temp.clone()),
            Target::Spooled { .. } => None,
        };
        let committed = self.publish(key, f);
        if committed.is_err()
            && let Some(temp) = temp
        {
            remove_temp(&temp);
        }
        committed
    }

    /// Local: fsync, link under the final name (refused when it exists,
    /// where a rename would replace it), remove the temp name, fsync the
    /// directory. Object store: upload, created only if absent.
    fn publish(&mut self, key: &ShardKey, mut f: OpenFile) -> Result<(), ParquetSinkError> {
        let described = f.describe();
        let name = final_name(&key.shard, &f.first);
        // The name has only the first sequence number; the footer has both.
        for (k, seq) in [(FIRST_SEQUENCE_KEY, &f.first), (LAST_SEQUENCE_KEY, &f.last)] {
            f.writer
                .append_key_value_metadata(KeyValue::new(k.to_owned(), seq.to_string()));
        }
        if let Some(epoch) = self.lease_epochs.get(&*key.table) {
            f.writer.append_key_value_metadata(KeyValue::new(
                LEASE_EPOCH_KEY.to_owned(),
                epoch.to_string(),
            ));
        }
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
                link_new(temp, &target, key)?;
                // Committed: a temp name left behind only waits for a sweep.
                remove_temp(temp);
                layout::sync_dir(dir).map_err(io("cannot fsync directory", dir))?;
                (target.display().to_string(), bytes)
            }
            (Target::Spooled { partition }, Dataset::Remote(objects)) => {
                let object = objects.path(&format!("{partition}/{name}"));
                let fenced = !self.config.exclusive;
                let bytes = upload_spooled(objects, file, object.clone(), key, fenced)?;
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
        let mut sealed = std::mem::take(&mut self.sealed).into_iter();
        while let Some((key, file)) = sealed.next() {
            if let Err(e) = self.commit(&key, file) {
                if let ParquetSinkError::Collision { file, .. } = &e {
                    CommitCollided {
                        file,
                        table: &key.table,
                        shard: &key.shard,
                    }
                    .emit();
                }
                self.abandon(&key, sealed.collect());
                self.refused.clear();
                return Err(e);
            }
        }
        let (open, sealed) = (&self.open, &self.sealed);
        self.refused.settle(&mut self.durable, |key| {
            let sealed = sealed
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, f)| &f.first);
            open.get(key)
                .map(|f| &f.first)
                .into_iter()
                .chain(sealed)
                .min()
                .cloned()
        });
        Ok(())
    }

    /// After a commit of `key` failed: its later files are dropped with
    /// its open file. Committed after it, they would leave a gap below
    /// them; after a collision their range is the other writer's, and under
    /// another name they would duplicate it. The other shards' files wait
    /// for the next commit.
    fn abandon(&mut self, key: &ShardKey, rest: Vec<(ShardKey, OpenFile)>) {
        for (k, f) in rest {
            if k == *key {
                f.discard();
            } else {
                self.sealed.push((k, f));
            }
        }
        if let Some(f) = self.open.remove(key) {
            f.discard();
        }
    }
}

impl Drop for ParquetSink {
    /// A sink dropped with files not committed (the run starting over after
    /// a failure) removes their temp files itself: in a dataset shared with
    /// other processes, no sweep at start may.
    fn drop(&mut self) {
        for (_, f) in self.open.drain().chain(self.sealed.drain(..)) {
            f.discard();
        }
    }
}

/// Creates `.<shard>_<first>.<pid>-<random>.parquet.inprogress` in `dir`,
/// exclusively: two writers never share a temp file, even should their
/// tags agree.
fn create_temp(
    dir: &Path,
    shard: &str,
    first: &SequenceNumber,
) -> Result<(PathBuf, File), ParquetSinkError> {
    let mut attempts = 0;
    loop {
        let temp = dir.join(temp_name(shard, first, &dynamo_cdc_core::writer_tag()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == IoErrorKind::AlreadyExists && attempts < 3 => attempts += 1,
            Err(e) => return Err(io("cannot create", &temp)(e)),
        }
    }
}

/// Gives `temp` the name `target` if no file has it: a hard link fails
/// when the name exists, where a rename would replace it.
fn link_new(temp: &Path, target: &Path, key: &ShardKey) -> Result<(), ParquetSinkError> {
    std::fs::hard_link(temp, target).map_err(|e| link_failed(e, target, key))
}

/// What a failed link under the name `target` means.
fn link_failed(e: std::io::Error, target: &Path, key: &ShardKey) -> ParquetSinkError {
    if e.kind() == IoErrorKind::AlreadyExists {
        ParquetSinkError::Collision {
            file: target.display().to_string(),
            shard: key.clone(),
            source: Box::new(e),
        }
    } else if cannot_link(&e) {
        ParquetSinkError::NoHardLinks {
            file: target.display().to_string(),
            dir: target.parent().unwrap_or(target).to_owned(),
            source: e,
        }
    } else {
        io("cannot link into", target)(e)
    }
}

/// Whether a failed `link(2)` says the file system makes no hard links:
/// `EPERM` (Linux's answer for such a file system; our own temp file is
/// never refused otherwise), `EOPNOTSUPP` or `ENOSYS`.
fn cannot_link(e: &std::io::Error) -> bool {
    const EPERM: i32 = 1;
    const ENOSYS: i32 = 38;
    const EOPNOTSUPP: i32 = 95;
    e.kind() == IoErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(EPERM | ENOSYS | EOPNOTSUPP))
}

/// The position per shard from the committed files, and where each table's
/// schema continues from. Names of earlier versions hold the last sequence
/// number; for the newest `<shard>_<first>` file of a shard (the highest
/// first) it is read from the footer, whose schema is kept so that it is
/// not read again.
fn positions(
    dataset: &Dataset,
    committed: Vec<Committed>,
) -> Result<(Positions, HashMap<String, Earlier>), ParquetSinkError> {
    struct Shard {
        newest: Committed,
        /// The highest last sequence number in names of earlier versions.
        named_last: Option<SequenceNumber>,
    }
    let mut shards: HashMap<ShardKey, Shard> = HashMap::new();
    for found in committed {
        let named_last = found.name.last.clone();
        match shards.get_mut(&found.key) {
            None => {
                let key = found.key.clone();
                shards.insert(
                    key,
                    Shard {
                        newest: found,
                        named_last,
                    },
                );
            }
            Some(shard) => {
                shard.named_last = shard.named_last.take().max(named_last);
                // On a tie, the file whose footer says its last.
                if (&found.name.first, found.name.last.is_none())
                    > (&shard.newest.name.first, shard.newest.name.last.is_none())
                {
                    shard.newest = found;
                }
            }
        }
    }
    let mut durable = Positions::new();
    let mut earlier: HashMap<String, Earlier> = HashMap::new();
    let footers: Vec<&FileRef> = (shards.values())
        .filter(|s| s.newest.name.last.is_none())
        .map(|s| &s.newest.file)
        .collect();
    let mut tails = prefetch_tails(dataset, &footers);
    for (key, shard) in shards {
        let continued = earlier.entry(key.table.to_string()).or_default();
        let mut last = shard.named_last;
        let newest = shard.newest;
        if newest.name.last.is_some() {
            continued.unread.push(newest.file);
        } else {
            let tail = match &newest.file {
                FileRef::Remote { key, .. } => tails.remove(key),
                FileRef::Local(_) => None,
            };
            let footer = read_footer_from(dataset, &newest.file, tail)?;
            let describe = || dataset.describe(&newest.file);
            last = last.max(Some(last_of(&footer, &newest.name.first, describe)?));
            continued.add_schema(schema_of(&footer, describe)?);
        }
        if let Some(last) = last {
            durable.advance(key, last);
        }
    }
    Ok((durable, earlier))
}

/// Removes temp files at open; returns how many. Exclusive: all of them,
/// left by a crash. Shared: only those whose shard's committed position is
/// at or past their first sequence number; a committed file covers their
/// start, so they can never be committed. The others may be a live
/// writer's.
fn sweep(
    leftovers: Vec<Leftover>,
    committed: &Positions,
    exclusive: bool,
) -> Result<u64, ParquetSinkError> {
    let mut swept = 0;
    for leftover in leftovers {
        let covered = leftover
            .start
            .as_ref()
            .is_some_and(|(key, first)| committed.get(key).is_some_and(|p| p >= first));
        let path = &leftover.path;
        if !exclusive && !covered {
            tracing::debug!(path = %path.display(), "keeping a temp file another writer may be writing");
            continue;
        }
        tracing::info!(path = %path.display(), "removing a temp file left by an earlier run");
        match std::fs::remove_file(path) {
            Ok(()) => swept += 1,
            // Another process sweeping the same directory was first.
            Err(e) if !exclusive && e.kind() == IoErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", path)(e)),
        }
    }
    Ok(swept)
}

/// A Parquet file ends with its footer's length (4 bytes) and `PAR1`.
const PARQUET_FOOTER_BYTES: u64 = 8;

/// The footer of a committed file. Of an object only the footer is read (a
/// suffix range), not the whole file.
fn read_footer(dataset: &Dataset, file: &FileRef) -> Result<ParquetMetaData, ParquetSinkError> {
    read_footer_from(dataset, file, None)
}

/// The last bytes of each object of `files` that [`read_footer`] asks for
/// first, fetched together (see [`Objects::read_ranges`]): a start reads
/// the footer of every shard's newest file.
fn prefetch_tails(dataset: &Dataset, files: &[&FileRef]) -> HashMap<ObjectPath, bytes::Bytes> {
    let Dataset::Remote(objects) = dataset else {
        return HashMap::new();
    };
    let ranges: Vec<(ObjectPath, std::ops::Range<u64>)> = files
        .iter()
        .filter_map(|f| match f {
            FileRef::Remote { key, size } if *size >= PARQUET_FOOTER_BYTES => {
                Some((key.clone(), size - (*size).min(FOOTER_GUESS_BYTES)..*size))
            }
            _ => None,
        })
        .collect();
    let tails = objects.read_ranges(&ranges);
    // A read that failed is asked again, alone, by `read_footer_from`,
    // whose error then names it.
    (ranges.into_iter().zip(tails))
        .filter_map(|((key, _), tail)| Some((key, tail.ok()?)))
        .collect()
}

/// [`read_footer`], starting from `tail` when the caller fetched the object's
/// last bytes already.
fn read_footer_from(
    dataset: &Dataset,
    file: &FileRef,
    mut tail: Option<bytes::Bytes>,
) -> Result<ParquetMetaData, ParquetSinkError> {
    let unreadable = |source| ParquetSinkError::Footer {
        file: dataset.describe(file),
        reason: "it is not a readable Parquet file".to_owned(),
        source: Some(source),
    };
    let reader = ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Skip);
    match (file, dataset) {
        (FileRef::Local(path), _) => {
            let f = File::open(path).map_err(io("cannot open", path))?;
            reader.parse_and_finish(&f).map_err(unreadable)
        }
        (FileRef::Remote { key, size }, Dataset::Remote(objects)) => {
            // Too short to hold a footer (empty, or cut off): said so here.
            // Asked for, the store would refuse the range before sending
            // anything, which reads as a store that may come back.
            let truncated = || ParquetSinkError::Footer {
                file: dataset.describe(file),
                reason: format!(
                    "it is {size} bytes, too short for the Parquet file it is named as"
                ),
                source: None,
            };
            if *size < PARQUET_FOOTER_BYTES {
                return Err(truncated());
            }
            let mut reader = reader;
            let mut want = (*size).min(FOOTER_GUESS_BYTES);
            loop {
                let tail = match tail.take() {
                    Some(tail) if tail.len() as u64 == want => tail,
                    _ => objects.read_range(key, size - want..*size)?,
                };
                match reader.try_parse_sized(&tail, *size) {
                    Ok(()) => break,
                    Err(ParquetError::NeedMoreData(needed)) if (needed as u64) > *size => {
                        return Err(truncated());
                    }
                    Err(ParquetError::NeedMoreData(needed)) if (needed as u64) > want => {
                        want = needed as u64;
                    }
                    Err(source) => return Err(unreadable(source)),
                }
            }
            reader.finish().map_err(unreadable)
        }
        (FileRef::Remote { key, .. }, Dataset::Local(_)) => {
            unreachable!("object {key} listed for a local dataset")
        }
    }
}

/// The Arrow schema a footer describes.
fn schema_of(
    footer: &ParquetMetaData,
    describe: impl Fn() -> String,
) -> Result<arrow_schema::SchemaRef, ParquetSinkError> {
    let meta = footer.file_metadata();
    parquet_to_arrow_schema(meta.schema_descr(), meta.key_value_metadata())
        .map(Arc::new)
        .map_err(|source| ParquetSinkError::Footer {
            file: describe(),
            reason: "its schema cannot be read as Arrow".to_owned(),
            source: Some(source),
        })
}

/// The last sequence number in the footer of a `<shard>_<first>` file.
fn last_of(
    footer: &ParquetMetaData,
    first: &SequenceNumber,
    describe: impl Fn() -> String,
) -> Result<SequenceNumber, ParquetSinkError> {
    let wrong = |reason: String| ParquetSinkError::Footer {
        file: describe(),
        reason,
        source: None,
    };
    let value = |key: &str| {
        footer
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == key))
            .and_then(|kv| kv.value.as_deref())
            .map(|text| {
                SequenceNumber::parse(text)
                    .map_err(|_| wrong(format!("its `{key}` is `{text}`, not a sequence number")))
            })
            .transpose()
    };
    let last = value(LAST_SEQUENCE_KEY)?.ok_or_else(|| {
        wrong(format!(
            "its key-value metadata has no `{LAST_SEQUENCE_KEY}`, which a file named \
             `<shard>_<firstSeq>.parquet` carries"
        ))
    })?;
    if let Some(named) = value(FIRST_SEQUENCE_KEY)?
        && named != *first
    {
        return Err(wrong(format!(
            "it says it starts at {named}, its name at {first}"
        )));
    }
    if last < *first {
        return Err(wrong(format!(
            "its last sequence number {last} is below its first {first}"
        )));
    }
    Ok(last)
}

/// Whether a file of `size` bytes is committed fenced: where processes
/// share the dataset (`shared`), when the store can copy it in one request.
fn fence_upload(shared: bool, objects: &Objects, size: u64) -> bool {
    shared && Upload::fits_fenced(objects, size)
}

/// How old a staging object must be before a sink that shares the dataset
/// takes it for a crash's leftover: a live commit copies and deletes its
/// own within seconds.
const STAGING_LEFTOVER_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Deletes staging objects a crash left between an upload and its copy:
/// all of them when the sink is alone on the dataset, else those older than
/// [`STAGING_LEFTOVER_AGE`]. Best effort (the lifecycle rule is the
/// backstop); returns how many went.
fn sweep_staged(
    objects: &Objects,
    staged: Vec<layout::Staged>,
    exclusive: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> u64 {
    let mut swept = 0;
    for s in staged {
        if !exclusive && now - s.modified < STAGING_LEFTOVER_AGE {
            continue;
        }
        match objects.delete(&s.key) {
            Ok(()) => swept += 1,
            Err(e) => tracing::warn!(error = %e, "cannot remove a staging object a crash left"),
        }
    }
    swept
}

/// Uploads a spooled file under `object`, created only if absent, a part
/// at a time; returns its size. `fenced` when other processes write the
/// dataset: a large file is then committed by a create-if-absent copy,
/// which no other writer can slip in front of (see `Upload::fenced`).
fn upload_spooled(
    objects: &Objects,
    mut spool: File,
    object: ObjectPath,
    key: &ShardKey,
    fenced: bool,
) -> Result<u64, ParquetSinkError> {
    let spool_dir = std::env::temp_dir();
    spool
        .seek(SeekFrom::Start(0))
        .map_err(io("cannot read a spool file in", &spool_dir))?;
    let size = spool
        .metadata()
        .map_err(io("cannot read a spool file in", &spool_dir))?
        .len();
    let mut upload = Upload::new(objects, object.clone());
    if fence_upload(fenced, objects, size) {
        upload = upload.fenced();
    } else if fenced {
        // Past the limit by a large last batch: committed with a look-up
        // before completion rather than not at all.
        tracing::warn!(
            file = %upload.describe(),
            bytes = size,
            "a file too large for a conditional copy is committed after a look-up instead; lower max_file_bytes"
        );
    }
    upload.copy_from(&mut spool).map_err(|e| match e {
        CopyError::Object(o) => ParquetSinkError::Object(o),
        CopyError::Read(e) => io("cannot read a spool file in", &spool_dir)(e),
    })?;
    match upload.finish() {
        Ok(size) => Ok(size),
        Err(o) if o.class == FailureClass::Collision => {
            // Our own commit, applied but answered too late, is found by
            // the client's retry and refused: the name then holds exactly
            // this file, which is as good as committed (whoever wrote it).
            spool
                .seek(SeekFrom::Start(0))
                .map_err(io("cannot read a spool file in", &spool_dir))?;
            if objects.holds(&object, &mut spool, size)? {
                tracing::info!(
                    file = %o.object,
                    "the file was committed already, by this very upload (its answer was lost)"
                );
                return Ok(size);
            }
            Err(ParquetSinkError::Collision {
                file: o.object.clone(),
                shard: key.clone(),
                source: Box::new(o),
            })
        }
        Err(o) => Err(ParquetSinkError::Object(o)),
    }
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
                match schema.admit_row(change) {
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
        self.refused.note_rejected(changes, &rejected);
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

    fn reads_modify_old_images(&self) -> bool {
        // A row shows the new image (a delete's, the old one), never the
        // image a modify replaced.
        false
    }

    fn reads_nested_trees(&self) -> bool {
        // Maps and lists are columns of DynamoDB JSON unless a declared
        // schema makes them records or arrays.
        self.declared
            .values()
            .any(DeclaredSchema::reads_nested_trees)
    }

    fn write(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, SinkError> {
        Ok(self.write_changes(changes)?)
    }

    /// Gap records live in the dead-letter store (beside the dataset when
    /// this sink is configured); the files themselves need none.
    fn record_gap(&mut self, _gap: &Gap) -> Result<(), SinkError> {
        Ok(())
    }

    fn record_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), SinkError> {
        match &self.dataset {
            Dataset::Local(root) => snapshots::record_local(root, snapshot)?,
            Dataset::Remote(objects) => snapshots::record_remote(objects, snapshot)?,
        }
        Ok(())
    }

    fn record_snapshot_start(&mut self, snapshot: &SnapshotRecord) -> Result<(), SinkError> {
        let held = match &self.dataset {
            Dataset::Local(root) => snapshots::held_local(root, snapshot),
            Dataset::Remote(objects) => snapshots::held_remote(objects, snapshot)?,
        };
        if !held {
            self.record_snapshot(snapshot)?;
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<(), SinkError> {
        let max_age = Duration::from_millis(self.config.max_file_age_ms);
        Ok(self.commit_where(|f| f.opened.elapsed() >= max_age)?)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.commit_where(|_| true)?)
    }

    fn lease_epochs(&mut self, epochs: &std::collections::BTreeMap<String, u64>) {
        self.lease_epochs.clone_from(epochs);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dynamo_cdc_object_store::{InMemory, StoreUrl};

    use super::*;

    fn snapshot_record(finished_ms: Option<i64>) -> SnapshotRecord {
        SnapshotRecord {
            id: "20240501T000000000Z".into(),
            table: "orders".into(),
            method: "scan".into(),
            s0: [("shardId-1".to_owned(), "42".to_owned())].into(),
            started_ms: 1_714_521_600_000,
            finished_ms,
            segments: 4,
            items: 10,
        }
    }

    /// A file system that makes no hard links fails every commit the same
    /// way: the run stops, naming the directory, instead of retrying. A
    /// name that exists is a collision; a full disk may pass.
    #[test]
    fn a_file_system_without_hard_links_stops_the_run_naming_it() {
        const EPERM: i32 = 1;
        const EEXIST: i32 = 17;
        const ENOSPC: i32 = 28;
        const ENOSYS: i32 = 38;
        const EOPNOTSUPP: i32 = 95;
        let target = Path::new("/mnt/fuse/orders/date=2024-05-01/s_1.parquet");
        let key = ShardKey::new("orders", "s");
        let failed = |errno| link_failed(std::io::Error::from_raw_os_error(errno), target, &key);
        for errno in [EPERM, ENOSYS, EOPNOTSUPP] {
            let e = failed(errno);
            assert!(
                matches!(e, ParquetSinkError::NoHardLinks { .. }),
                "{errno}: {e:?}"
            );
            assert!(
                e.to_string().contains(
                    "the file system of /mnt/fuse/orders/date=2024-05-01 does not make hard links"
                ),
                "{e}"
            );
            assert_eq!(SinkError::from(e).kind(), dynamo_cdc_core::ErrorKind::Fatal);
        }
        let e = failed(EEXIST);
        assert!(matches!(e, ParquetSinkError::Collision { .. }), "{e:?}");
        assert_eq!(
            SinkError::from(e).kind(),
            dynamo_cdc_core::ErrorKind::Transient
        );
        let e = failed(ENOSPC);
        assert!(matches!(e, ParquetSinkError::Io { .. }), "{e:?}");
        assert_eq!(
            SinkError::from(e).kind(),
            dynamo_cdc_core::ErrorKind::Transient
        );
    }

    /// A snapshot's record lands in `_snapshots/<table>/<id>.json`, its end
    /// replaces its start, and the dataset's own scan passes the folder by.
    #[test]
    fn snapshot_records_go_beside_the_data_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let config = ParquetConfig::new(dir.path().display().to_string());
        let mut sink =
            ParquetSink::open(config.clone(), NumbersMode::String, HashMap::new()).unwrap();
        sink.record_snapshot(&snapshot_record(None)).unwrap();
        sink.record_snapshot(&snapshot_record(Some(1_714_521_700_000)))
            .unwrap();
        let file = dir
            .path()
            .join("_snapshots/orders/20240501T000000000Z.json");
        let stored: SnapshotRecord =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(stored, snapshot_record(Some(1_714_521_700_000)));
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
        let again = ParquetSink::open(config, NumbersMode::String, HashMap::new()).unwrap();
        assert!(again.durable_positions().is_empty());
        assert_eq!(again.stats.swept, 0);
    }

    #[test]
    fn snapshot_records_go_beside_the_data_in_a_bucket() {
        let objects = Objects::with_store(
            Arc::new(InMemory::new()),
            StoreUrl::parse("s3://lake/cdc").unwrap(),
        );
        let mut sink = ParquetSink::open_on(
            objects.clone(),
            ParquetConfig::new("s3://lake/cdc"),
            NumbersMode::String,
            HashMap::new(),
        )
        .unwrap();
        sink.record_snapshot(&snapshot_record(None)).unwrap();
        let key = objects.path("_snapshots/orders/20240501T000000000Z.json");
        let stored: SnapshotRecord = serde_json::from_slice(&objects.read(&key).unwrap()).unwrap();
        assert_eq!(stored, snapshot_record(None));
        // A start for S0's sake leaves a record that is there alone.
        sink.record_snapshot(&snapshot_record(Some(1))).unwrap();
        sink.record_snapshot_start(&snapshot_record(None)).unwrap();
        let stored: SnapshotRecord = serde_json::from_slice(&objects.read(&key).unwrap()).unwrap();
        assert_eq!(stored, snapshot_record(Some(1)));
    }

    /// A start recorded for S0's sake is written where there is no record
    /// of the snapshot, and never takes a finished one back to running.
    #[test]
    fn a_snapshot_start_for_its_s0_never_replaces_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let config = ParquetConfig::new(dir.path().display().to_string());
        let mut sink = ParquetSink::open(config, NumbersMode::String, HashMap::new()).unwrap();
        let file = dir
            .path()
            .join("_snapshots/orders/20240501T000000000Z.json");
        let stored = || -> SnapshotRecord {
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
        };
        sink.record_snapshot_start(&snapshot_record(None)).unwrap();
        assert_eq!(stored(), snapshot_record(None), "none there: written");
        sink.record_snapshot(&snapshot_record(Some(1_714_521_700_000)))
            .unwrap();
        sink.record_snapshot_start(&snapshot_record(None)).unwrap();
        assert_eq!(
            stored(),
            snapshot_record(Some(1_714_521_700_000)),
            "still finished"
        );
    }

    /// Large files are staged and copied where processes share the
    /// dataset, unless S3 cannot copy them in one request.
    #[test]
    fn uploads_are_fenced_when_shared_and_the_copy_fits() {
        let on = |url: &str| {
            Objects::with_store(Arc::new(InMemory::new()), StoreUrl::parse(url).unwrap())
        };
        let (s3, gcs) = (on("s3://lake/cdc"), on("gs://lake/cdc"));
        let gib = 1u64 << 30;
        assert!(fence_upload(true, &s3, 128 << 20));
        assert!(fence_upload(true, &s3, gib));
        assert!(
            !fence_upload(true, &s3, gib + 1),
            "looked up and completed instead"
        );
        assert!(fence_upload(true, &gcs, 4 * gib));
        assert!(
            !fence_upload(false, &s3, 128 << 20),
            "alone: the look-up suffices"
        );
    }

    /// Sharing the dataset, a staging object is a leftover once it is an
    /// hour old; alone, at once.
    #[test]
    fn staging_leftovers_are_swept_by_age_when_shared() {
        let objects = Objects::with_store(
            Arc::new(InMemory::new()),
            StoreUrl::parse("s3://lake/cdc").unwrap(),
        );
        let key = objects.path("_staging/t/date=2024-05-01/s1_1.parquet.x");
        objects.create(&key, "x".into()).unwrap();
        let staged = || {
            let (_, staged) = layout::scan_objects(&objects).unwrap();
            staged
        };
        let created = staged()[0].modified;
        let shared_at = |minutes| {
            sweep_staged(
                &objects,
                staged(),
                false,
                created + chrono::TimeDelta::minutes(minutes),
            )
        };
        assert_eq!(shared_at(59), 0);
        assert_eq!(staged().len(), 1);
        assert_eq!(shared_at(61), 1);
        assert!(staged().is_empty());
        objects.create(&key, "x".into()).unwrap();
        assert_eq!(sweep_staged(&objects, staged(), true, created), 1);
        assert!(staged().is_empty());
    }
}
