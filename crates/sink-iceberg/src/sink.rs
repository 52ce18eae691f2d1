//! The sink: tables loaded or created on first use, data files per table
//! and day, schema evolution, and commits that carry their positions.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::ArrayRef;
use arrow_array::builder::{Int64Builder, StringBuilder};
use dynamo_cdc_core::durable::create_dir_durably;
use dynamo_cdc_core::{
    Change, Gap, Positions, Refused, Rejected, ShardKey, Sink, SinkError, SinkStats, SnapshotRecord,
};
use dynamo_cdc_object_store::{Buckets, Location, Scheme, looks_like_url};
use dynamo_cdc_transform::{DeclaredSchema, META_COLUMNS, NumbersMode, TableSchema, flat_batch};
use iceberg::io::StorageFactory;
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::{Catalog, ErrorKind, NamespaceIdent, TableIdent};

use crate::catalog::{self, DAY_MS, PARTITION_FIELD, Pinned};
use crate::columns::{FIELD_PROPERTY, FieldMap};
use crate::config::{self, CatalogKind, IcebergConfig};
use crate::error::IcebergSinkError;
use crate::events::{Committed, Conflict};
use crate::file::{ClosedFile, Encoding, OpenFile, Target};
use crate::local::DurableLocalStorageFactory;
use crate::sigv4::SigningProxy;
use crate::snapshots;
use crate::storage::{BucketStorage, BucketStorageFactory, TableBuckets};
use crate::summary::{self, SnapshotView};

/// How many times a commit is tried again after losing a race to a writer
/// of other shards.
const COMMIT_ATTEMPTS: usize = 5;

/// Where table files go.
enum Warehouse {
    /// An absolute local directory.
    Local(PathBuf),
    /// Buckets: tables below `url` (a bucket prefix or, for S3 Tables, the
    /// table bucket's ARN) unless the catalog places them elsewhere.
    Remote {
        url: String,
        buckets: Arc<TableBuckets>,
    },
}

impl Warehouse {
    /// The warehouse as table locations start: an absolute path, a URL or
    /// an ARN.
    fn url(&self) -> String {
        match self {
            Warehouse::Local(dir) => dir.display().to_string(),
            Warehouse::Remote { url, .. } => url.trim_end_matches('/').to_owned(),
        }
    }

    /// Where to write the data file at `location`.
    fn target(&self, location: &str) -> Result<Target, IcebergSinkError> {
        let refused = |reason: String| IcebergSinkError::Table {
            table: location.to_owned(),
            reason,
        };
        match self {
            Warehouse::Local(_) if looks_like_url(location) && !location.starts_with("file:") => {
                Err(refused(
                    "the catalog placed the table in an object store, but `warehouse` is a \
                     local directory: set `warehouse` to a URL of that store"
                        .to_owned(),
                ))
            }
            Warehouse::Local(_) => {
                let path = location.strip_prefix("file://").unwrap_or(location);
                Ok(Target::Local(PathBuf::from(path)))
            }
            Warehouse::Remote { buckets, .. } => {
                let (objects, key) = buckets.resolve(location).map_err(refused)?;
                Ok(Target::Spooled { objects, key })
            }
        }
    }
}

/// A warehouse in buckets, and the catalog's file I/O on them.
fn remote(url: String, buckets: Buckets) -> (Warehouse, Arc<dyn StorageFactory>) {
    let buckets = Arc::new(TableBuckets::new(buckets));
    let storage = BucketStorageFactory(BucketStorage::new(buckets.clone()));
    (Warehouse::Remote { url, buckets }, Arc::new(storage))
}

/// One Iceberg table and what is being written to it.
struct TableState {
    ident: TableIdent,
    table: Table,
    /// The current snapshot when this sink last looked (or committed).
    known: Option<i64>,
    schema: TableSchema,
    fields: FieldMap,
    /// The schema version `fields` was brought up to.
    fields_version: u64,
    /// Open data files by partition day.
    open: BTreeMap<Option<i64>, OpenFile>,
    /// Closed data files waiting for the next commit.
    closed: Vec<ClosedFile>,
    /// Per shard, the first and last change in those files.
    first: Positions,
    last: Positions,
    /// The token of the commit of `closed`, from its first attempt until
    /// it is known to be applied: an attempt whose answer was lost may have
    /// been applied all the same (see [`summary`]). While it is set, no
    /// file joins `closed`: the token names exactly these files.
    commit: Option<String>,
}

impl TableState {
    fn close_open(&mut self) -> Result<(), IcebergSinkError> {
        for (_, file) in std::mem::take(&mut self.open) {
            self.closed.push(file.close()?);
        }
        Ok(())
    }
}

/// Counts kept by the sink.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IcebergStats {
    /// Snapshots committed.
    pub commits: u64,
    /// Data files committed.
    pub files: u64,
    /// Rows committed.
    pub rows: u64,
    /// Bytes of committed data files.
    pub bytes: u64,
    /// Changes dropped because the table already held them.
    pub already_held: u64,
}

/// Writes flat rows to one Iceberg table per DynamoDB table. See the crate
/// docs.
pub struct IcebergSink {
    config: IcebergConfig,
    runtime: tokio::runtime::Runtime,
    catalog: Arc<dyn Catalog>,
    /// Keeps the REST catalog's signing proxy running (`rest.sigv4-enabled`).
    _signing: Option<SigningProxy>,
    namespace: NamespaceIdent,
    warehouse: Warehouse,
    declared: HashMap<String, DeclaredSchema>,
    tables: HashMap<Arc<str>, TableState>,
    durable: Positions,
    /// Changes refused since the last commit, which the position passes
    /// once the rows before them are committed.
    refused: Refused,
    last_commit: Instant,
    encoding: Encoding,
    stats: IcebergStats,
    /// Table -> lease epoch, when the tables are shared (recorded in each
    /// commit's summary).
    lease_epochs: std::collections::BTreeMap<String, u64>,
    #[cfg(test)]
    lost_answers: LostAnswers,
}

/// Failed commits to make (tests only).
#[cfg(test)]
#[derive(Default)]
struct LostAnswers {
    /// Errors to answer applied commits with, in turn: the commit happens,
    /// the sink hears that it failed, as after a timeout.
    applied: Vec<iceberg::ErrorKind>,
    /// Commits that fail before they reach the catalog.
    unsent: u32,
}

impl IcebergSink {
    /// Connects to the catalog (and the warehouse's bucket) and creates the
    /// namespace when it is missing. Tables are loaded or created when
    /// first prepared or written.
    ///
    /// # Errors
    /// When the warehouse or the catalog cannot be reached or refuses.
    pub fn open(
        config: IcebergConfig,
        declared: HashMap<String, DeclaredSchema>,
    ) -> Result<Self, IcebergSinkError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("iceberg-io")
            .enable_all()
            .build()
            .map_err(IcebergSinkError::io(
                "start a runtime for",
                std::path::Path::new("the catalog"),
            ))?;
        let warehouse = config.warehouse().map_err(|e| IcebergSinkError::Table {
            table: config.namespace.clone(),
            reason: format!("config key `{}`: {}", e.key, e.reason),
        })?;
        let (warehouse, storage): (Warehouse, Arc<dyn StorageFactory>) = match warehouse {
            config::Warehouse::Path(Location::Local(dir)) => {
                create_dir_durably(&dir).map_err(IcebergSinkError::io("create", &dir))?;
                let dir =
                    std::path::absolute(&dir).map_err(IcebergSinkError::io("resolve", &dir))?;
                (Warehouse::Local(dir), Arc::new(DurableLocalStorageFactory))
            }
            config::Warehouse::Path(Location::Remote { url, options }) => {
                let buckets = Buckets::new(url.scheme, &options);
                // A missing bucket or denied access stops the start.
                buckets.open(&url)?.check_access()?;
                remote(url.to_string(), buckets)
            }
            config::Warehouse::TableBucket { arn, options } => {
                // Each table's bucket is checked by its first write.
                remote(arn, Buckets::new(Scheme::S3, &options))
            }
        };
        let catalog::Connected { catalog, signing } = wait(
            &runtime,
            catalog::connect(&config, storage, &warehouse.url()),
        )
        .map_err(IcebergSinkError::catalog(format!(
            "connect to the {} catalog `{}` at {}",
            match config.catalog {
                CatalogKind::Sql => "SQL",
                CatalogKind::Rest => "REST",
            },
            config.catalog_name,
            redact_uri(&config.catalog_uri)
        )))?;
        let namespace = NamespaceIdent::from_vec(config.namespace_levels()).map_err(
            IcebergSinkError::catalog(format!("use namespace `{}`", config.namespace)),
        )?;
        wait(
            &runtime,
            catalog::ensure_namespace(catalog.as_ref(), &namespace),
        )
        .map_err(IcebergSinkError::catalog(format!(
            "create namespace `{}`",
            config.namespace
        )))?;
        let encoding = Encoding {
            zstd_level: config.zstd_level,
            row_group_rows: config.row_group_rows,
            row_group_bytes: config.row_group_bytes,
        };
        Ok(IcebergSink {
            config,
            runtime,
            catalog,
            _signing: signing,
            namespace,
            warehouse,
            declared,
            tables: HashMap::new(),
            durable: Positions::new(),
            refused: Refused::new(),
            last_commit: Instant::now(),
            encoding,
            stats: IcebergStats::default(),
            lease_epochs: std::collections::BTreeMap::new(),
            #[cfg(test)]
            lost_answers: LostAnswers::default(),
        })
    }

    /// Counts so far.
    pub fn iceberg_stats(&self) -> &IcebergStats {
        &self.stats
    }

    /// The table of `table`, loaded (or created) and its position read on
    /// first use.
    fn state(&mut self, table: &Arc<str>) -> Result<&mut TableState, IcebergSinkError> {
        if !self.tables.contains_key(table) {
            let state = self.load(table)?;
            self.tables.insert(table.clone(), state);
        }
        Ok(self.tables.get_mut(table).expect("inserted above"))
    }

    fn load(&mut self, table: &Arc<str>) -> Result<TableState, IcebergSinkError> {
        let name = self.config.table_name(table);
        let ident = TableIdent::new(self.namespace.clone(), name);
        let location = match self.config.catalog {
            // A REST catalog places its tables itself.
            CatalogKind::Rest => None,
            CatalogKind::Sql => Some(format!(
                "{}/{}/{}",
                self.warehouse.url(),
                self.config.namespace_levels().join("/"),
                ident.name()
            )),
        };
        let loaded = wait(
            &self.runtime,
            catalog::ensure_table(self.catalog.as_ref(), &ident, location, table),
        )
        .map_err(IcebergSinkError::catalog(format!(
            "load or create table {ident}"
        )))?;
        let fields = FieldMap::read(
            loaded.metadata().current_schema(),
            loaded.metadata().properties(),
        );
        let earlier = arrow_schema::Schema::new(fields.earlier_fields());
        let schema = TableSchema::resume(
            table,
            self.declared.get(&**table),
            NumbersMode::String,
            &[&earlier],
        )
        .map_err(|reason| IcebergSinkError::Table {
            table: ident.to_string(),
            reason,
        })?;
        let known = loaded.metadata().current_snapshot_id();
        let committed =
            summary::committed(table, &snapshot_views(&loaded), known, None).map_err(|reason| {
                IcebergSinkError::Table {
                    table: ident.to_string(),
                    reason,
                }
            })?;
        self.durable.merge_max(&committed);
        crate::events::Ready {
            table: &ident.to_string(),
            shards: committed.len(),
            snapshot: known,
        }
        .emit();
        Ok(TableState {
            ident,
            table: loaded,
            known,
            fields_version: schema.version().wrapping_sub(1),
            schema,
            fields,
            open: BTreeMap::new(),
            closed: Vec::new(),
            first: Positions::new(),
            last: Positions::new(),
            commit: None,
        })
    }

    /// Brings the table's fields up to its flat-row schema: new columns and
    /// changed forms, in one schema commit (data files name field ids, so
    /// the fields must exist before rows are written under them).
    fn evolve(&mut self, table: &Arc<str>) -> Result<(), IcebergSinkError> {
        let catalog = self.catalog.clone();
        let state = self.tables.get_mut(table).expect("loaded before evolving");
        if state.fields_version == state.schema.version() {
            return Ok(());
        }
        // The columns the last schema commit added, as asked.
        let mut added: Vec<String> = Vec::new();
        for attempt in 1.. {
            let missing = state.fields.missing(&state.schema);
            // A table from before the snapshot columns gets them with its
            // first schema change.
            let snapshot = state.fields.missing_snapshot_fields();
            if missing.is_empty() && snapshot.is_empty() {
                break;
            }
            // Committed, yet still missing: the catalog did not keep the
            // columns as asked (one that folds names to lower case). Asking
            // again would add a suffixed column after another, for ever.
            let lost: Vec<&str> = missing
                .iter()
                .filter(|(_, _, form)| added.contains(&form.attribute))
                .map(|(_, _, form)| form.attribute.as_str())
                .collect();
            if !lost.is_empty() {
                return Err(IcebergSinkError::Table {
                    table: state.ident.to_string(),
                    reason: format!(
                        "the catalog accepted new columns for attribute(s) {lost:?} but does not \
                         hold them under the names asked for (the table's columns are now {:?}): \
                         columns are named after their attributes, so a catalog that renames \
                         them (one keeping lower-case names only) cannot hold attributes whose \
                         names have capitals",
                        state
                            .table
                            .metadata()
                            .current_schema()
                            .as_struct()
                            .fields()
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                    ),
                });
            }
            // Files open under the old fields are finished as they are.
            state.close_open()?;
            let tx = Transaction::new(&state.table);
            let mut update = tx.update_schema();
            for (name, ty, form) in &missing {
                update = update.add_column(
                    AddColumn::builder()
                        .name(name.clone())
                        .field_type(ty.clone())
                        .doc(crate::columns::column_doc(form))
                        .build(),
                );
            }
            for field in &snapshot {
                update = update.add_column(
                    AddColumn::builder()
                        .name(field.name.clone())
                        .field_type((*field.field_type).clone())
                        .doc(field.doc.clone().unwrap_or_default())
                        .build(),
                );
            }
            let tx = update.apply(tx).map_err(IcebergSinkError::catalog(format!(
                "add columns to {}",
                state.ident
            )))?;
            // The forms go in the same commit as the fields.
            let mut props = tx.update_table_properties();
            for (name, _, form) in &missing {
                props = props.set(
                    format!("{FIELD_PROPERTY}{name}"),
                    serde_json::to_string(form).expect("a form serializes"),
                );
            }
            let tx = props.apply(tx).map_err(IcebergSinkError::catalog(format!(
                "record column forms of {}",
                state.ident
            )))?;
            match wait(&self.runtime, tx.commit(catalog.as_ref())) {
                Ok(updated) => {
                    state.table = updated;
                    added = missing
                        .iter()
                        .map(|(_, _, f)| f.attribute.clone())
                        .collect();
                }
                Err(e) if attempt < COMMIT_ATTEMPTS => {
                    // Another writer evolved the table meanwhile (perhaps
                    // adding the same columns): look again.
                    tracing::info!(table = %state.ident, error = %e, "schema commit refused; reloading the table");
                    added.clear();
                    state.table = wait(&self.runtime, catalog.load_table(&state.ident))
                        .map_err(IcebergSinkError::catalog(format!("reload {}", state.ident)))?;
                }
                Err(e) => {
                    return Err(IcebergSinkError::catalog(format!(
                        "evolve the schema of {}",
                        state.ident
                    ))(e));
                }
            }
            state.fields = FieldMap::read(
                state.table.metadata().current_schema(),
                state.table.metadata().properties(),
            );
        }
        state.fields_version = state.schema.version();
        Ok(())
    }

    /// Records a snapshot's start or end in the table's properties (see
    /// [`snapshots`]), in a commit of its own. Another writer's commit in
    /// between is no conflict: the `iceberg` crate's commit reloads the
    /// table and sets the properties on top of it.
    fn record_snapshot(&mut self, record: &SnapshotRecord) -> Result<(), IcebergSinkError> {
        let table: Arc<str> = record.table.as_str().into();
        let catalog = self.catalog.clone();
        self.state(&table)?;
        let state = self.tables.get_mut(&table).expect("loaded above");
        let changes = snapshots::properties(record, state.table.metadata().properties());
        if changes.is_empty() {
            return Ok(());
        }
        let failed = || {
            IcebergSinkError::catalog(format!("record snapshot {} in {}", record.id, state.ident))
        };
        let tx = Transaction::new(&state.table);
        let mut update = tx.update_table_properties();
        for (key, value) in changes {
            update = update.set(key, value);
        }
        let tx = update.apply(tx).map_err(failed())?;
        state.table = wait(&self.runtime, tx.commit(catalog.as_ref())).map_err(failed())?;
        tracing::info!(table = %state.ident, id = %record.id, "snapshot recorded in the table's properties");
        Ok(())
    }

    fn write_changes(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, IcebergSinkError> {
        let mut rejected = Vec::new();
        for (table, runs) in group(changes) {
            self.state(&table)?;
            if self.tables[&table].commit.is_some() {
                // A commit whose answer was lost: settled before any file
                // joins those it names.
                self.commit_table(&table)?;
            }
            let durable = &self.durable;
            let state = self.tables.get_mut(&table).expect("loaded above");
            let mut admitted: Vec<&Change> = Vec::new();
            // Per run of one shard: its first and last admitted change.
            let mut spans = Vec::new();
            for (key, run) in runs {
                let before = admitted.len();
                let held = [durable.get(&key), state.last.get(&key)]
                    .into_iter()
                    .flatten()
                    .max()
                    .cloned();
                for (index, change) in run {
                    if held
                        .as_ref()
                        .is_some_and(|h| change.source.sequence_number <= *h)
                    {
                        self.stats.already_held += 1;
                        continue;
                    }
                    match state.schema.admit_row(change) {
                        Ok(()) => admitted.push(change),
                        Err(error) => rejected.push(Rejected { index, error }),
                    }
                }
                if let (Some(first), Some(last)) = (admitted.get(before), admitted.last()) {
                    let seq = |c: &Change| c.source.sequence_number.clone();
                    spans.push((key, seq(first), seq(last)));
                }
            }
            if admitted.is_empty() {
                continue;
            }
            self.evolve(&table)?;
            self.append(&table, &admitted)?;
            // Only rows now in a data file count as pending.
            let state = self.tables.get_mut(&table).expect("loaded above");
            for (key, first, last) in spans {
                if state.first.get(&key).is_none() {
                    state.first.advance(key.clone(), first);
                }
                state.last.advance(key, last);
            }
        }
        // Noted once the write succeeded as a whole.
        self.refused.note_rejected(changes, &rejected);
        rejected.sort_by_key(|r| r.index);
        Ok(rejected)
    }

    /// Writes admitted changes of one table, a file per day.
    fn append(&mut self, table: &Arc<str>, changes: &[&Change]) -> Result<(), IcebergSinkError> {
        let max_bytes = self.config.max_file_bytes;
        let encoding = self.encoding;
        let state = self.tables.get_mut(table).expect("loaded before appending");
        let (columns, meta) =
            state
                .fields
                .file_fields(&state.schema)
                .map_err(|reason| IcebergSinkError::Table {
                    table: state.ident.to_string(),
                    reason,
                })?;
        let mut start = 0;
        while start < changes.len() {
            let day = day_ms(changes[start].source.approx_creation_ms);
            let end = changes[start..]
                .iter()
                .position(|c| day_ms(c.source.approx_creation_ms) != day)
                .map_or(changes.len(), |n| start + n);
            let rows = &changes[start..end];
            start = end;
            let version = state.schema.version();
            if state
                .open
                .get(&day)
                .is_some_and(|f| f.schema_version != version)
            {
                let stale = state.open.remove(&day).expect("checked above");
                state.closed.push(stale.close()?);
            }
            let batch =
                flat_batch(&state.schema, rows).map_err(|source| IcebergSinkError::Arrow {
                    file: state.ident.to_string(),
                    source,
                })?;
            let n = batch.num_columns();
            let arrays: Vec<ArrayRef> = columns
                .iter()
                .enumerate()
                .filter(|(_, f)| f.is_some())
                .map(|(i, _)| batch.column(i).clone())
                .chain(batch.columns()[n - META_COLUMNS.len()..].iter().cloned())
                .chain(snapshot_arrays(rows, &meta[META_COLUMNS.len()..]))
                .collect();
            if !state.open.contains_key(&day) {
                let location = format!(
                    "{}/data/{PARTITION_FIELD}={}/{}.parquet",
                    state.table.metadata().location().trim_end_matches('/'),
                    day.map_or_else(|| "null".to_owned(), |d| d.to_string()),
                    uuid::Uuid::now_v7()
                );
                let target = self.warehouse.target(&location)?;
                let fields = columns.iter().flatten().chain(&meta).cloned().collect();
                // The first batch is built before the file: it decides which
                // text columns are long (see `file::statistics_levels`).
                let file =
                    OpenFile::create(target, location, fields, &arrays, day, version, encoding)?;
                state.open.insert(day, file);
            }
            let file = state.open.get_mut(&day).expect("opened above");
            file.write(arrays)?;
            if file.size() >= max_bytes {
                let full = state.open.remove(&day).expect("written above");
                state.closed.push(full.close()?);
            }
        }
        Ok(())
    }

    /// Commits every table's data files, each table in one snapshot.
    fn commit_all(&mut self) -> Result<(), IcebergSinkError> {
        let mut tables: Vec<Arc<str>> = self.tables.keys().cloned().collect();
        tables.sort();
        for table in tables {
            // A failed commit may have dropped rows that came before a
            // refused change: the position must not pass it in this pass.
            self.commit_table(&table)
                .inspect_err(|_| self.refused.clear())?;
        }
        self.last_commit = Instant::now();
        self.settle_refused();
        Ok(())
    }

    /// Moves positions over refused changes that no uncommitted row of
    /// their shard precedes.
    fn settle_refused(&mut self) {
        let tables = &self.tables;
        self.refused.settle(&mut self.durable, |key| {
            tables.get(&key.table)?.first.get(key).cloned()
        });
    }

    /// Commits one table's data files with their positions, on top of the
    /// snapshot checked (see `catalog::Pinned`). When another writer's
    /// commits since hold any of these changes, the files are dropped and
    /// the run resumes from the table's position instead. An earlier
    /// attempt of this commit found applied is taken as its success.
    fn commit_table(&mut self, table: &Arc<str>) -> Result<(), IcebergSinkError> {
        let catalog = self.catalog.clone();
        let state = self.tables.get_mut(table).expect("a loaded table");
        state.close_open()?;
        if state.closed.is_empty() {
            return Ok(());
        }
        let token = state
            .commit
            .get_or_insert_with(|| uuid::Uuid::now_v7().to_string())
            .clone();
        for _ in 0..COMMIT_ATTEMPTS {
            let state = self.tables.get_mut(table).expect("a loaded table");
            let loaded = wait(&self.runtime, catalog.load_table(&state.ident))
                .map_err(IcebergSinkError::catalog(format!("reload {}", state.ident)))?;
            // Its partitioning may have been changed meanwhile.
            catalog::check_partitioning(&state.ident, loaded.metadata()).map_err(
                IcebergSinkError::catalog(format!("commit to {}", state.ident)),
            )?;
            let current = loaded.metadata().current_snapshot_id();
            if current != state.known {
                let views = snapshot_views(&loaded);
                let theirs =
                    summary::committed(table, &views, current, state.known).map_err(|reason| {
                        IcebergSinkError::Table {
                            table: state.ident.to_string(),
                            reason,
                        }
                    })?;
                if let Some(ours) = summary::applied(&views, current, state.known, &token) {
                    tracing::info!(table = %state.ident, snapshot = ours, "a commit whose answer was lost was applied");
                    // Ours and whatever others committed after it.
                    self.durable.merge_max(&theirs);
                    self.committed(table, loaded, Some(ours));
                    return Ok(());
                }
                let overlapped = summary::overlaps(&theirs, &state.first);
                Conflict {
                    table: &state.ident.to_string(),
                    overlapped,
                }
                .emit();
                if overlapped {
                    let shards: Vec<String> = state
                        .first
                        .iter()
                        .filter(|(k, s)| theirs.covers(k, s))
                        .map(|(k, _)| k.shard.to_string())
                        .collect();
                    for file in &state.closed {
                        file.discard();
                    }
                    let ident = state.ident.to_string();
                    self.tables.remove(table);
                    self.durable.merge_max(&theirs);
                    return Err(IcebergSinkError::Overtaken {
                        table: ident,
                        shards: shards.join(", "),
                    });
                }
                // Their ranges are the table's now: a change of them this
                // sink reads later is already held, not ours to commit.
                self.durable.merge_max(&theirs);
                state.known = current;
            }
            state.table = loaded;
            let spec = state.table.metadata().default_partition_spec_id();
            let schema = state.table.metadata().current_schema();
            let files = state
                .closed
                .iter()
                .map(|f| f.data_file(spec, schema))
                .collect::<Result<Vec<_>, _>>()?;
            let tx = Transaction::new(&state.table);
            let epoch = self.lease_epochs.get(&**table).copied();
            let append = tx
                .fast_append()
                // File names are fresh UUIDs; checking reads every manifest.
                .with_check_duplicate(false)
                .add_data_files(files)
                .set_snapshot_properties(
                    summary::encode(&state.last, epoch, &token)
                        .into_iter()
                        .collect(),
                );
            let tx = append.apply(tx).map_err(IcebergSinkError::catalog(format!(
                "prepare a commit to {}",
                state.ident
            )))?;
            let pinned = Pinned {
                inner: catalog.clone(),
                snapshot: state.known,
            };
            match self.send(tx.commit(&pinned)) {
                Ok(updated) => {
                    let snapshot = updated.metadata().current_snapshot_id();
                    self.committed(table, updated, snapshot);
                    return Ok(());
                }
                // Lost a race (or the answer to an attempt that was
                // applied): look at what the table holds now.
                Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => {}
                Err(e) => {
                    return Err(IcebergSinkError::catalog(format!(
                        "commit to {}",
                        self.tables[table].ident
                    ))(e));
                }
            }
        }
        let state = &self.tables[table];
        Err(IcebergSinkError::catalog(format!(
            "commit to {}",
            state.ident
        ))(
            iceberg::Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("other writers kept committing first ({COMMIT_ATTEMPTS} attempts)"),
            )
            .with_retryable(true),
        ))
    }

    /// Sends a commit to the catalog; in tests, as `lost_answers` says.
    fn send(
        &mut self,
        commit: impl std::future::Future<Output = iceberg::Result<Table>>,
    ) -> iceberg::Result<Table> {
        #[cfg(test)]
        {
            let lost = &mut self.lost_answers;
            if lost.unsent > 0 {
                lost.unsent -= 1;
                return Err(iceberg::Error::new(
                    ErrorKind::Unexpected,
                    "the commit never reached the catalog",
                ));
            }
            let answer = wait(&self.runtime, commit);
            let lost = &mut self.lost_answers;
            match answer {
                Ok(_) if !lost.applied.is_empty() => Err(iceberg::Error::new(
                    lost.applied.remove(0),
                    "the answer to an applied commit was lost",
                )),
                answer => answer,
            }
        }
        #[cfg(not(test))]
        wait(&self.runtime, commit)
    }

    /// Takes the commit of `table`'s closed files as made, as `snapshot`
    /// (with `updated` the table as of it, or later).
    fn committed(&mut self, table: &Arc<str>, updated: Table, snapshot: Option<i64>) {
        let state = self.tables.get_mut(table).expect("a loaded table");
        let rows: u64 = state.closed.iter().map(|f| f.rows).sum();
        let bytes: u64 = state.closed.iter().map(|f| f.bytes).sum();
        let files = state.closed.len() as u64;
        state.known = updated.metadata().current_snapshot_id();
        state.table = updated;
        Committed {
            table: &state.ident.to_string(),
            source_table: table,
            snapshot,
            files,
            rows,
            bytes,
        }
        .emit();
        self.stats.commits += 1;
        self.stats.files += files;
        self.stats.rows += rows;
        self.stats.bytes += bytes;
        self.durable.merge_max(&state.last);
        state.closed.clear();
        state.first = Positions::new();
        state.last = Positions::new();
        state.commit = None;
    }
}

/// The snapshot columns of `rows`, as the file's `fields` for them say
/// (see `columns::snapshot_fields`): null for changes of the stream.
fn snapshot_arrays(rows: &[&Change], fields: &[arrow_schema::Field]) -> Vec<ArrayRef> {
    if rows.iter().all(|c| c.source.snapshot.is_none()) {
        // The stream's batches: null arrays, no per-row work.
        return fields
            .iter()
            .map(|f| arrow_array::new_null_array(f.data_type(), rows.len()))
            .collect();
    }
    let mut ids = StringBuilder::with_capacity(rows.len(), 0);
    let mut read = Int64Builder::with_capacity(rows.len());
    let mut markers = StringBuilder::with_capacity(rows.len(), 0);
    for c in rows {
        match &c.source.snapshot {
            Some(s) => {
                ids.append_value(&s.id);
                read.append_value(s.read_ms);
                markers.append_value(s.marker.code());
            }
            None => {
                ids.append_null();
                read.append_null();
                markers.append_null();
            }
        }
    }
    vec![
        Arc::new(ids.finish()),
        Arc::new(read.finish()),
        Arc::new(markers.finish()),
    ]
}

/// The snapshots of a table, as positions need them.
fn snapshot_views(table: &Table) -> Vec<SnapshotView> {
    table
        .metadata()
        .snapshots()
        .map(|s| SnapshotView {
            id: s.snapshot_id(),
            parent: s.parent_snapshot_id(),
            positions: s
                .summary()
                .additional_properties
                .get(summary::POSITIONS)
                .cloned(),
            commit: s
                .summary()
                .additional_properties
                .get(summary::COMMIT)
                .cloned(),
        })
        .collect()
}

/// Midnight (UTC) of the change's day in epoch milliseconds: the partition
/// value of `truncate(86400000, __source_ts_ms)`.
fn day_ms(ms: Option<i64>) -> Option<i64> {
    ms.map(|ms| ms - ms.rem_euclid(i64::from(DAY_MS)))
}

/// A batch's changes by table, then in runs of one shard, with their index.
type Runs<'a> = Vec<(ShardKey, Vec<(usize, &'a Change)>)>;

fn group(changes: &[Change]) -> Vec<(Arc<str>, Runs<'_>)> {
    let mut tables: Vec<(Arc<str>, Runs<'_>)> = Vec::new();
    for (index, change) in changes.iter().enumerate() {
        let s = &change.source;
        let t = match tables.iter().position(|(t, _)| *t == s.table) {
            Some(t) => t,
            None => {
                tables.push((s.table.clone(), Vec::new()));
                tables.len() - 1
            }
        };
        let runs = &mut tables[t].1;
        match runs.last_mut() {
            Some((key, run)) if key.shard == s.shard_id => run.push((index, change)),
            _ => runs.push((
                ShardKey::new(s.table.clone(), s.shard_id.clone()),
                vec![(index, change)],
            )),
        }
    }
    tables
}

/// A catalog URI for messages: without a password.
fn redact_uri(uri: &str) -> String {
    match (uri.find("://"), uri.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &uri[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &uri[..scheme + 3], &uri[at..]),
                None => uri.to_owned(),
            }
        }
        _ => uri.to_owned(),
    }
}

impl Sink for IcebergSink {
    fn id(&self) -> &str {
        "iceberg"
    }

    /// Raises positions to those the checkpoint recorded (the tables'
    /// snapshots are read as each table is loaded).
    fn adopt(&mut self, positions: &Positions, _state: &serde_json::Value) {
        self.durable.merge_max(positions);
    }

    /// Loads or creates the tables and reads their positions, so a
    /// catalog problem stops the run before anything is read.
    fn prepare(&mut self, tables: &[String]) -> Result<(), SinkError> {
        for table in tables {
            self.state(&Arc::from(table.as_str()))?;
        }
        Ok(())
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

    fn lease_epochs(&mut self, epochs: &std::collections::BTreeMap<String, u64>) {
        self.lease_epochs.clone_from(epochs);
    }

    fn write(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, SinkError> {
        Ok(self.write_changes(changes)?)
    }

    /// Gap records live in the dead-letter store; the table needs none.
    fn record_gap(&mut self, _gap: &Gap) -> Result<(), SinkError> {
        Ok(())
    }

    fn record_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), SinkError> {
        Ok(IcebergSink::record_snapshot(self, snapshot)?)
    }

    fn record_snapshot_start(&mut self, snapshot: &SnapshotRecord) -> Result<(), SinkError> {
        let table: Arc<str> = snapshot.table.as_str().into();
        self.state(&table)?;
        let properties = self.tables[&table].table.metadata().properties();
        if !snapshots::holds(snapshot, properties) {
            IcebergSink::record_snapshot(self, snapshot)?;
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<(), SinkError> {
        if self.last_commit.elapsed() >= Duration::from_millis(self.config.commit_interval_ms) {
            self.commit_all()?;
        } else {
            self.settle_refused();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.commit_all()?)
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            delivered: self.stats.rows,
            files: self.stats.files,
            bytes: self.stats.bytes,
            already_held: self.stats.already_held,
            ..SinkStats::default()
        }
    }
}

/// The longest one call to the catalog may take. Its clients set no
/// timeout of their own, so a catalog that holds a connection without
/// answering would hold the run for ever; past this the call fails as an
/// outage (a commit whose answer is lost is found by its token after).
const CATALOG_CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs a catalog call on `runtime`, saying every 5 s that this thread is
/// alive while it waits: one call may wait minutes (a bucket's retries
/// under a commit, a slow catalog), which is an outage to ride out, not a
/// hang for `/healthz` to restart the process over. A call that takes
/// [`CATALOG_CALL_DEADLINE`] fails as passing.
fn wait<T>(
    runtime: &tokio::runtime::Runtime,
    future: impl std::future::Future<Output = iceberg::Result<T>>,
) -> iceberg::Result<T> {
    wait_within(runtime, future, CATALOG_CALL_DEADLINE)
}

/// [`wait`] with another deadline.
fn wait_within<T>(
    runtime: &tokio::runtime::Runtime,
    future: impl std::future::Future<Output = iceberg::Result<T>>,
    within: std::time::Duration,
) -> iceberg::Result<T> {
    let deadline = async {
        tokio::time::timeout(within, future)
            .await
            .unwrap_or_else(|_| {
                Err(iceberg::Error::new(
                    iceberg::ErrorKind::Unexpected,
                    format!(
                        "the catalog did not answer within {} ms",
                        within.as_millis()
                    ),
                )
                .with_retryable(true))
            })
    };
    dynamo_cdc_object_store::block_on_saying(
        runtime,
        deadline,
        std::time::Duration::from_secs(5),
        dynamo_cdc_core::alive::still_waiting,
    )
}

#[cfg(test)]
mod tests {
    /// A catalog call that waits says the thread is alive while it does,
    /// not only once answered.
    #[test]
    fn a_slow_catalog_call_is_waited_for_with_signs_of_life() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SIGNS: AtomicUsize = AtomicUsize::new(0);
        fn sign() {
            SIGNS.fetch_add(1, Ordering::SeqCst);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        dynamo_cdc_object_store::block_on_saying(
            &runtime,
            async { tokio::time::sleep(std::time::Duration::from_millis(600)).await },
            std::time::Duration::from_millis(50),
            sign,
        );
        let signs = SIGNS.load(Ordering::SeqCst);
        assert!(signs >= 6, "{signs} signs of life in a 600 ms wait");
        // A call that never answers fails, as passing, at its deadline.
        let e = wait_within(
            &runtime,
            std::future::pending::<iceberg::Result<()>>(),
            std::time::Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(crate::catalog::is_transient(&e), "{e}");
        assert!(
            e.to_string().contains("did not answer within 100 ms"),
            "{e}"
        );
    }

    use super::*;

    #[test]
    fn days_are_utc_midnights_in_milliseconds() {
        assert_eq!(day_ms(Some(1_700_000_000_123)), Some(1_699_920_000_000));
        assert_eq!(day_ms(Some(-1)), Some(-86_400_000));
        assert_eq!(day_ms(None), None);
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact_uri("postgres://cdc:hunter2@db:5432/catalog"),
            "postgres://cdc:***@db:5432/catalog"
        );
        assert_eq!(redact_uri("sqlite://out/c.db"), "sqlite://out/c.db");
    }
}

/// Two sinks on one sqlite catalog: the commit is the position, and a
/// writer that was overtaken drops its files instead of committing twice.
#[cfg(test)]
mod commit_tests {
    use dynamo_cdc_core::{
        AttributeValue, ErrorKind, Item, Op, SequenceNumber, SnapshotMarker, SnapshotRead,
        SourceInfo,
    };

    use super::*;

    fn change(shard: &str, seq: u64) -> Change {
        let keys: Item = [("id", AttributeValue::S(format!("{shard}-{seq}").into()))].into();
        let mut image = keys.clone();
        image.insert("n".into(), AttributeValue::S(seq.to_string().into()));
        Change {
            op: Op::Insert,
            keys,
            old_image: None,
            unread_old_image: None,
            new_image: Some(image),
            source: SourceInfo {
                table: "orders".into(),
                stream_arn: None,
                shard_id: shard.into(),
                sequence_number: SequenceNumber::parse(&format!("{seq:021}")).unwrap(),
                event_id: format!("e{seq}"),
                approx_creation_ms: Some(1_732_000_000_000 + seq as i64),
                ttl_delete: false,
                snapshot: None,
            },
        }
    }

    fn changes(shard: &str, seqs: std::ops::Range<u64>) -> Vec<Change> {
        seqs.map(|s| change(shard, s)).collect()
    }

    fn open(dir: &std::path::Path) -> IcebergSink {
        let config = IcebergConfig::new(
            format!("sqlite://{}", dir.join("catalog.db").display()),
            dir.join("warehouse").display().to_string(),
        );
        IcebergSink::open(config, HashMap::new()).unwrap()
    }

    /// Rows in the table's current snapshot, and its snapshot count.
    fn rows_and_snapshots(sink: &mut IcebergSink) -> (u64, usize) {
        let state = sink.load(&Arc::from("orders")).unwrap();
        let meta = state.table.metadata();
        let rows = meta.current_snapshot().map_or(0, |s| {
            s.summary()
                .additional_properties
                .get("total-records")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        });
        (rows, meta.snapshots().len())
    }

    /// Every row of the table: the data files the Iceberg crate plans for a
    /// scan of the current snapshot, read with parquet-rs.
    fn read_table(sink: &mut IcebergSink) -> Vec<arrow_array::RecordBatch> {
        use futures_util::TryStreamExt as _;
        let state = sink.load(&Arc::from("orders")).unwrap();
        let scan = state.table.scan().select_all().build().unwrap();
        let tasks: Vec<_> = sink.runtime.block_on(async {
            scan.plan_files()
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap()
        });
        let mut batches = Vec::new();
        for task in tasks {
            let path = task.data_file_path.trim_start_matches("file://");
            let file = std::fs::File::open(path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            batches.extend(reader.map(Result::unwrap));
        }
        batches
    }

    fn snapshot_row(seq: u64, marker: SnapshotMarker) -> Change {
        let mut c = change("snapshot-s1-0", seq);
        c.op = Op::Read;
        c.source.snapshot = Some(SnapshotRead {
            id: "s1".into(),
            read_ms: 1_732_000_000_000,
            marker,
        });
        c
    }

    /// A snapshot's record is a table property before its first row is
    /// committed, its end replaces it, and a reopened sink (another process)
    /// reads both back from the catalog.
    #[test]
    fn snapshots_are_recorded_in_the_table_properties_before_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path());
        let mut record = SnapshotRecord {
            id: "s1".into(),
            table: "orders".into(),
            method: "scan".into(),
            s0: [("shardId-1".to_owned(), "000000000000000000042".to_owned())].into(),
            started_ms: 1_732_000_000_000,
            finished_ms: None,
            segments: 1,
            items: 0,
        };
        let properties = |sink: &mut IcebergSink| {
            let state = sink.load(&Arc::from("orders")).unwrap();
            state.table.metadata().properties().clone()
        };
        Sink::record_snapshot(&mut sink, &record).unwrap();
        let before_rows = properties(&mut sink);
        assert_eq!(rows_and_snapshots(&mut sink), (0, 0), "no rows yet");
        let stored: SnapshotRecord =
            serde_json::from_str(&before_rows["dynamo-cdc.snapshot.s1"]).unwrap();
        assert_eq!(stored, record);
        assert!(
            !before_rows.contains_key("dynamo-cdc.snapshot-newest"),
            "a running snapshot is not the newest"
        );

        let rows = [
            snapshot_row(1, SnapshotMarker::First),
            snapshot_row(2, SnapshotMarker::Last),
        ];
        assert!(Sink::write(&mut sink, &rows).unwrap().is_empty());
        Sink::flush(&mut sink).unwrap();
        record.finished_ms = Some(1_732_000_005_000);
        record.items = 2;
        Sink::record_snapshot(&mut sink, &record).unwrap();
        let metadata = |sink: &mut IcebergSink| {
            let state = sink.load(&Arc::from("orders")).unwrap();
            state.table.metadata_location().map(str::to_owned)
        };
        let before = metadata(&mut sink);
        // Recorded again after a restart: nothing to commit.
        Sink::record_snapshot(&mut sink, &record).unwrap();
        assert_eq!(metadata(&mut sink), before, "no commit for the same record");

        let mut again = open(dir.path());
        let after = properties(&mut again);
        let stored: SnapshotRecord =
            serde_json::from_str(&after["dynamo-cdc.snapshot.s1"]).unwrap();
        assert_eq!(stored, record);
        assert_eq!(after["dynamo-cdc.snapshot-newest"], "s1");
        assert_eq!(rows_and_snapshots(&mut again), (2, 1), "one data commit");
    }

    /// Snapshot rows carry their id, read time and marker; stream changes
    /// nulls. A table made before these columns existed gets them with the
    /// sink's first schema change.
    #[test]
    fn snapshot_rows_carry_their_snapshot_columns_even_in_older_tables() {
        use arrow_array::cast::AsArray as _;
        use arrow_array::types::Int64Type;
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path());
        // An older table: the meta columns only.
        let ident = TableIdent::new(sink.namespace.clone(), "orders".to_owned());
        let location = format!("{}/cdc/orders", sink.warehouse.url());
        let creation = catalog::table_creation(
            &ident,
            Some(location),
            "orders",
            crate::columns::meta_fields(),
        )
        .unwrap();
        let catalog = sink.catalog.clone();
        sink.runtime
            .block_on(catalog.create_table(ident.namespace(), creation))
            .unwrap();
        let mut rows = vec![
            snapshot_row(1, SnapshotMarker::First),
            snapshot_row(2, SnapshotMarker::Last),
        ];
        rows.extend(changes("s1", 1..3));
        sink.write(&rows).unwrap();
        sink.flush().unwrap();
        let mut seen = Vec::new();
        for batch in read_table(&mut sink) {
            let col = |name: &str| batch.column_by_name(name).unwrap().clone();
            let (shards, ids, read, marks) = (
                col("__shard_id"),
                col("__snapshot_id"),
                col("__snapshot_read_ms"),
                col("__snapshot"),
            );
            for i in 0..batch.num_rows() {
                let text = |a: &ArrayRef| {
                    (!a.is_null(i)).then(|| a.as_string::<i32>().value(i).to_owned())
                };
                let read = (!read.is_null(i)).then(|| read.as_primitive::<Int64Type>().value(i));
                seen.push((text(&shards).unwrap(), text(&ids), read, text(&marks)));
            }
        }
        seen.sort();
        let snap = |m: &str| {
            (
                "snapshot-s1-0".to_owned(),
                Some("s1".to_owned()),
                Some(1_732_000_000_000),
                Some(m.to_owned()),
            )
        };
        let stream = ("s1".to_owned(), None, None, None);
        assert_eq!(
            seen,
            [stream.clone(), stream, snap("first"), snap("last")],
            "{seen:?}"
        );
    }

    /// Shared tables: each commit's summary names the lease epoch it was
    /// made under; alone, there is none.
    #[test]
    fn commits_under_a_lease_carry_its_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path());
        let epoch_of_current = |sink: &mut IcebergSink| {
            let state = sink.load(&Arc::from("orders")).unwrap();
            let meta = state.table.metadata();
            meta.current_snapshot().and_then(|s| {
                s.summary()
                    .additional_properties
                    .get(summary::LEASE_EPOCH)
                    .cloned()
            })
        };
        sink.write(&changes("s1", 1..3)).unwrap();
        sink.flush().unwrap();
        assert_eq!(epoch_of_current(&mut sink), None);
        sink.lease_epochs(&[("orders".to_owned(), 4)].into());
        sink.write(&changes("s1", 3..5)).unwrap();
        sink.flush().unwrap();
        assert_eq!(epoch_of_current(&mut sink).as_deref(), Some("4"));
    }

    #[test]
    fn a_restart_reads_its_position_from_the_table_and_writes_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = open(dir.path());
        assert!(first.write(&changes("s1", 1..11)).unwrap().is_empty());
        first.flush().unwrap();
        drop(first);
        // No checkpoint: the table alone says how far it got.
        let mut again = open(dir.path());
        again.prepare(&["orders".to_owned()]).unwrap();
        let key = ShardKey::new("orders", "s1");
        assert_eq!(
            again.durable_positions().get(&key),
            Some(&SequenceNumber::parse(&format!("{:021}", 10)).unwrap())
        );
        again.write(&changes("s1", 5..15)).unwrap();
        again.flush().unwrap();
        assert_eq!(again.iceberg_stats().already_held, 6);
        assert_eq!(rows_and_snapshots(&mut again), (14, 2));
    }

    /// A catalog that does not keep columns as asked (one that folds their
    /// names to lower case, as AWS Glue does): here, it drops their forms,
    /// so no column reads as this sink's. Counts schema commits.
    #[derive(Debug)]
    struct Forgetful {
        inner: Arc<dyn Catalog>,
        /// Schema commits whose forms it dropped.
        forgot: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Catalog for Forgetful {
        async fn list_namespaces(
            &self,
            parent: Option<&iceberg::NamespaceIdent>,
        ) -> iceberg::Result<Vec<iceberg::NamespaceIdent>> {
            self.inner.list_namespaces(parent).await
        }
        async fn create_namespace(
            &self,
            namespace: &iceberg::NamespaceIdent,
            properties: HashMap<String, String>,
        ) -> iceberg::Result<iceberg::Namespace> {
            self.inner.create_namespace(namespace, properties).await
        }
        async fn get_namespace(
            &self,
            namespace: &iceberg::NamespaceIdent,
        ) -> iceberg::Result<iceberg::Namespace> {
            self.inner.get_namespace(namespace).await
        }
        async fn namespace_exists(
            &self,
            namespace: &iceberg::NamespaceIdent,
        ) -> iceberg::Result<bool> {
            self.inner.namespace_exists(namespace).await
        }
        async fn update_namespace(
            &self,
            namespace: &iceberg::NamespaceIdent,
            properties: HashMap<String, String>,
        ) -> iceberg::Result<()> {
            self.inner.update_namespace(namespace, properties).await
        }
        async fn drop_namespace(&self, namespace: &iceberg::NamespaceIdent) -> iceberg::Result<()> {
            self.inner.drop_namespace(namespace).await
        }
        async fn list_tables(
            &self,
            namespace: &iceberg::NamespaceIdent,
        ) -> iceberg::Result<Vec<TableIdent>> {
            self.inner.list_tables(namespace).await
        }
        async fn create_table(
            &self,
            namespace: &iceberg::NamespaceIdent,
            creation: iceberg::TableCreation,
        ) -> iceberg::Result<Table> {
            self.inner.create_table(namespace, creation).await
        }
        async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
            self.inner.load_table(table).await
        }
        async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
            self.inner.drop_table(table).await
        }
        async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
            self.inner.purge_table(table).await
        }
        async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
            self.inner.table_exists(table).await
        }
        async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
            self.inner.rename_table(src, dest).await
        }
        async fn register_table(
            &self,
            table: &TableIdent,
            metadata_location: String,
        ) -> iceberg::Result<Table> {
            self.inner.register_table(table, metadata_location).await
        }
        async fn update_table(&self, commit: iceberg::TableCommit) -> iceberg::Result<Table> {
            let table = self.inner.update_table(commit).await?;
            let forms: Vec<String> = (table.metadata().properties().keys())
                .filter(|k| k.starts_with(FIELD_PROPERTY))
                .cloned()
                .collect();
            if forms.is_empty() {
                return Ok(table);
            }
            if self
                .forgot
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                >= 10
            {
                return Err(iceberg::Error::new(
                    iceberg::ErrorKind::Unexpected,
                    "ten schema commits",
                ));
            }
            let tx = Transaction::new(&table);
            let mut props = tx.update_table_properties();
            for key in forms {
                props = props.remove(key);
            }
            props.apply(tx)?.commit(self.inner.as_ref()).await
        }
    }

    /// A catalog that accepts new columns but does not hold them as asked
    /// (AWS Glue folds names to lower case) stops the sink with an error
    /// naming the attribute, after one schema commit: asking again added a
    /// suffixed column after another, for ever.
    #[test]
    fn columns_the_catalog_does_not_keep_as_asked_stop_the_sink_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path());
        sink.write(&changes("s1", 1..3)).unwrap();
        sink.flush().unwrap();
        let forgetful = Arc::new(Forgetful {
            inner: sink.catalog.clone(),
            forgot: std::sync::atomic::AtomicUsize::new(0),
        });
        sink.catalog = forgetful.clone();
        let mut more = change("s1", 3);
        if let Some(image) = more.new_image.as_mut() {
            image.insert("userId".into(), AttributeValue::S("u-1".into()));
        }
        let e = sink
            .write(&[more])
            .and_then(|_| sink.flush())
            .expect_err("the catalog lost the column");
        assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
        assert!(e.to_string().contains("userId"), "{e}");
        assert_eq!(
            forgetful.forgot.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one schema commit"
        );
    }

    #[test]
    fn an_overtaken_writer_drops_its_files_and_resumes_from_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = open(dir.path());
        let mut b = open(dir.path());
        a.prepare(&["orders".to_owned()]).unwrap();
        b.prepare(&["orders".to_owned()]).unwrap();
        // Both read the same changes; b commits first.
        a.write(&changes("s1", 1..21)).unwrap();
        b.write(&changes("s1", 1..11)).unwrap();
        b.flush().unwrap();
        let err = a.flush().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert!(
            err.to_string().contains("another writer committed"),
            "{err}"
        );
        assert_eq!(rows_and_snapshots(&mut b), (10, 1));
        // The files a wrote were removed: only b's data file is left.
        let data_files = walk(&dir.path().join("warehouse"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count();
        assert_eq!(data_files, 1);
        // The run starts over: a new sink reads b's position and writes the rest.
        let mut a = open(dir.path());
        a.write(&changes("s1", 1..21)).unwrap();
        a.flush().unwrap();
        assert_eq!(rows_and_snapshots(&mut a), (20, 2));
    }

    /// A commit applied whose answer is lost (`kind`): the sink takes it as
    /// made, and neither drops its files nor commits them twice.
    fn a_lost_answer_is_taken_for_its_commit(kind: iceberg::ErrorKind, fails: bool) {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path());
        sink.write(&changes("s1", 1..11)).unwrap();
        sink.lost_answers.applied.push(kind);
        if fails {
            let err = sink.flush().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
        } else {
            sink.flush().unwrap();
        }
        // The run goes on (after a failure, from the same changes again).
        assert!(sink.write(&changes("s1", 1..16)).unwrap().is_empty());
        sink.flush().unwrap();
        assert_eq!(rows_and_snapshots(&mut sink), (15, 2));
        let rows: usize = read_table(&mut sink).iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 15, "every data file committed is still there");
        assert_eq!(sink.iceberg_stats().commits, 2);
        assert_eq!(sink.iceberg_stats().already_held, 10);
        let mut again = open(dir.path());
        again.write(&changes("s1", 1..16)).unwrap();
        assert_eq!(again.iceberg_stats().already_held, 15);
    }

    #[test]
    fn a_commit_that_failed_unapplied_is_made_with_the_same_files_before_any_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path());
        sink.write(&changes("s1", 1..11)).unwrap();
        sink.lost_answers.unsent = 1;
        let err = sink.flush().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
        assert_eq!(rows_and_snapshots(&mut sink), (0, 0));
        // The run reads the same changes again: the pending commit is made
        // first, its ten rows in a snapshot of their own, then the rest.
        assert!(sink.write(&changes("s1", 1..16)).unwrap().is_empty());
        assert_eq!(rows_and_snapshots(&mut sink), (10, 1));
        sink.flush().unwrap();
        assert_eq!(rows_and_snapshots(&mut sink), (15, 2));
        let rows: usize = read_table(&mut sink).iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 15);
        assert_eq!(sink.iceberg_stats().already_held, 10);
    }

    #[test]
    fn a_commit_applied_whose_answer_timed_out_is_not_dropped_or_made_twice() {
        a_lost_answer_is_taken_for_its_commit(iceberg::ErrorKind::Unexpected, true);
    }

    #[test]
    fn a_commit_applied_whose_retried_request_met_409_is_taken_as_made() {
        a_lost_answer_is_taken_for_its_commit(iceberg::ErrorKind::CatalogCommitConflicts, false);
    }

    #[test]
    fn writers_of_other_shards_commit_on_top_of_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = open(dir.path());
        let mut b = open(dir.path());
        a.prepare(&["orders".to_owned()]).unwrap();
        b.prepare(&["orders".to_owned()]).unwrap();
        a.write(&changes("s1", 1..6)).unwrap();
        b.write(&changes("s2", 1..4)).unwrap();
        b.flush().unwrap();
        a.flush().unwrap();
        assert_eq!(rows_and_snapshots(&mut a), (8, 2));
    }

    /// Another writer committed shards this sink has nothing pending of:
    /// this sink commits on top, and what that writer committed is held,
    /// so reading those changes later writes them nowhere.
    #[test]
    fn a_range_another_writer_committed_is_not_committed_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = open(dir.path());
        let mut b = open(dir.path());
        a.prepare(&["orders".to_owned()]).unwrap();
        b.prepare(&["orders".to_owned()]).unwrap();
        a.write(&changes("s1", 1..11)).unwrap();
        a.flush().unwrap();
        b.write(&changes("s2", 1..6)).unwrap();
        b.flush().unwrap();
        // b's reader of s1 catches up with what a committed.
        b.write(&changes("s1", 1..11)).unwrap();
        b.flush().unwrap();
        assert_eq!(b.iceberg_stats().already_held, 10);
        assert_eq!(rows_and_snapshots(&mut b), (15, 2));
    }

    /// A sink on `dir`'s catalog with `orders` declared, `n` a long: a
    /// change from [`change`] (its `n` is text) is refused; one from
    /// [`fitting`] is not. Commits are not due for ten minutes, so a poll
    /// commits nothing.
    fn open_declared(dir: &std::path::Path) -> IcebergSink {
        let mut config = IcebergConfig::new(
            format!("sqlite://{}", dir.join("catalog.db").display()),
            dir.join("warehouse").display().to_string(),
        );
        config.commit_interval_ms = 600_000;
        let declared = DeclaredSchema::parse_avsc(
            r#"{"type":"record","name":"orders","fields":[
                {"name":"id","type":"string"},{"name":"n","type":["null","long"]}]}"#,
        )
        .unwrap();
        IcebergSink::open(config, [("orders".to_owned(), declared)].into()).unwrap()
    }

    fn fitting(shard: &str, seq: u64) -> Change {
        let mut c = change(shard, seq);
        let n = dynamo_cdc_core::Number::parse(&seq.to_string()).unwrap();
        c.new_image
            .as_mut()
            .unwrap()
            .insert("n".into(), AttributeValue::N(n));
        c
    }

    fn seq(n: u64) -> Option<SequenceNumber> {
        Some(SequenceNumber::parse(&format!("{n:021}")).unwrap())
    }

    /// A change refused (it does not fit the declared schema) goes to the
    /// dead letters; the position passes it once the rows before it are
    /// committed, so a shard ending with it is not read again.
    #[test]
    fn the_position_passes_a_refused_change_once_the_rows_before_it_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open_declared(dir.path());
        let fits = |seq: u64| fitting("s1", seq);
        let key = ShardKey::new("orders", "s1");
        let position = |sink: &IcebergSink| sink.durable_positions().get(&key).cloned();

        // Rows 1 and 2 are written, 3 is refused: the position waits for
        // the commit of 1 and 2, then passes 3.
        let rejected = sink.write(&[fits(1), fits(2), change("s1", 3)]).unwrap();
        assert_eq!(rejected.iter().map(|r| r.index).collect::<Vec<_>>(), [2]);
        sink.poll().unwrap();
        assert_eq!(position(&sink), None, "rows 1 and 2 are not committed yet");
        sink.flush().unwrap();
        assert_eq!(position(&sink), seq(3));
        assert_eq!(rows_and_snapshots(&mut sink), (2, 1));

        // Refused with nothing pending: passed at the next poll, with no
        // commit to the table.
        assert_eq!(sink.write(&[change("s1", 4)]).unwrap().len(), 1);
        assert_eq!(position(&sink), seq(3), "not inside the write");
        sink.poll().unwrap();
        assert_eq!(position(&sink), seq(4));
        assert_eq!(rows_and_snapshots(&mut sink), (2, 1));

        // Rows after a refused one do not hold it back.
        assert_eq!(sink.write(&[change("s1", 5), fits(6)]).unwrap().len(), 1);
        sink.poll().unwrap();
        assert_eq!(position(&sink), seq(5));
        sink.flush().unwrap();
        assert_eq!(position(&sink), seq(6));
    }

    /// A writer overtaken on a table drops its files; rows it dropped come
    /// before a change it refused, so a later poll must not move its
    /// position over that change (it holds the other writer's position).
    #[test]
    fn an_overtaken_writer_does_not_pass_a_change_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = open_declared(dir.path());
        let mut b = open_declared(dir.path());
        a.prepare(&["orders".to_owned()]).unwrap();
        b.prepare(&["orders".to_owned()]).unwrap();
        let mut ours: Vec<Change> = (1..=14).map(|s| fitting("s1", s)).collect();
        ours.push(change("s1", 15));
        assert_eq!(a.write(&ours).unwrap().len(), 1);
        let theirs: Vec<Change> = (1..=10).map(|s| fitting("s1", s)).collect();
        assert!(b.write(&theirs).unwrap().is_empty());
        b.flush().unwrap();
        let err = a.flush().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
        a.poll().unwrap();
        let key = ShardKey::new("orders", "s1");
        assert_eq!(
            a.durable_positions().get(&key).cloned(),
            seq(10),
            "rows 11 to 14 were dropped, not committed"
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
