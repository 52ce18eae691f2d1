//! Seeded, deterministic DynamoDB Streams traffic, written as captures.
//!
//! A capture is JSON Lines: each line is one GetRecords response,
//! `{"Records":[...],"NextShardIterator":"..."}`, and the last line of a
//! shard has `"NextShardIterator":null`. One file holds one shard and is named
//! `<table>-shard-NNNN.jsonl` (optionally `.jsonl.gz`); readers take the file
//! name without extensions as the shard id.
//!
//! The same seed always gives the same bytes. Item histories are consistent:
//! a MODIFY's `OldImage` is the previous `NewImage`, a REMOVE's `OldImage` is
//! the last state, keys appear in `Keys` and in every image, and sequence
//! numbers rise strictly within each file.
//!
//! Presets: [`quickstart`] (two small tables using every DynamoDB type) and
//! [`write_bench_capture`] (one large shard streamed in constant memory).

mod bench;
mod bench_profiles;
mod pages;
mod profiles;
mod table;
mod values;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use bench::{BENCH_TABLE, BenchShape, write_bench_capture, write_bench_shape};
/// The profiles' item builders, shared with `dynamo-cdc-gen load`, which
/// writes the same items to a live table instead of a capture.
pub(crate) use profiles::{modify as modify_item, new_item};

use crate::record::EventName;
use pages::{FileOut, Pager};
use table::TableState;

/// How many items per table are tracked for later updates; bounds memory.
const MAX_LIVE_ITEMS: usize = 4096;

/// Seed of the quickstart preset.
pub const QUICKSTART_SEED: u64 = 20_241_119;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Seed of every random choice: the same seed gives the same bytes.
    pub seed: u64,
    /// The tables whose streams are generated.
    pub tables: Vec<TableSpec>,
    /// Records over all tables.
    pub records: usize,
    /// Records per GetRecords page (the API returns up to 1000).
    pub records_per_page: usize,
    /// `ApproximateCreationDateTime` of the first record, epoch seconds.
    pub start_epoch_s: f64,
    /// Mean time between two records, over all tables.
    pub mean_gap_ms: u64,
    /// Chance that a full page is followed by an empty one, as polling an
    /// open shard often returns.
    pub empty_page_ratio: f64,
    /// Write `.jsonl.gz` instead of `.jsonl`.
    pub gzip: bool,
}

/// One table and the shape of its traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// Table name, as in the stream ARN.
    pub name: String,
    /// Partition key.
    pub hash_key: KeyAttr,
    /// Sort key, if the table has one.
    pub range_key: Option<KeyAttr>,
    /// What the items look like.
    pub profile: Profile,
    /// Shards (files) the table's stream is spread over; an item always
    /// stays on one shard.
    pub shards: usize,
    /// Share of all records that belong to this table, relative to the
    /// other tables' weights.
    pub weight: u32,
    /// Relative frequency of inserts, modifies and removes.
    pub mix: OpMix,
    /// The TTL attribute (epoch seconds). Short-lived items get one, and
    /// expired items are removed by the TTL process (`userIdentity` set).
    pub ttl_attribute: Option<String>,
}

/// A key attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAttr {
    /// Attribute name.
    pub name: String,
    /// Key type: DynamoDB keys are strings, numbers or binary.
    pub kind: KeyKind,
}

impl KeyAttr {
    /// A string key.
    pub fn s(name: &str) -> Self {
        KeyAttr {
            name: name.to_owned(),
            kind: KeyKind::S,
        }
    }

    /// A number key.
    pub fn n(name: &str) -> Self {
        KeyAttr {
            name: name.to_owned(),
            kind: KeyKind::N,
        }
    }

    /// A binary key.
    pub fn b(name: &str) -> Self {
        KeyAttr {
            name: name.to_owned(),
            kind: KeyKind::B,
        }
    }
}

/// Type of a key attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `S`
    S,
    /// `N`
    N,
    /// `B`
    B,
}

/// The kind of items a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Order lines: every DynamoDB type, money as decimals, nested shipping
    /// data, a status history list; carts expire by TTL.
    Orders,
    /// Customer profiles: numbers at the edges of DynamoDB's range (beyond
    /// i64, 1E-130, 9.99…E+125), maps five levels deep, awkward nested
    /// attribute names; trial accounts expire by TTL.
    Customers,
    /// Telemetry events of about 600 bytes: nested maps, lists, every set
    /// type and binary.
    Events,
    /// Health checks of about 100 bytes: a few scalars.
    Pings,
    /// Documents near DynamoDB's 400 KB item limit: a long text body that
    /// needs JSON escaping and a binary attachment.
    Documents,
    /// 200 attributes of every type, one nested 31 levels deep, numbers
    /// at the edges of DynamoDB's range.
    Wide,
}

/// Relative frequency of each operation. The first record of a table (and
/// any record while no item exists) is an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpMix {
    /// INSERT weight.
    pub insert: u32,
    /// MODIFY weight.
    pub modify: u32,
    /// REMOVE weight.
    pub remove: u32,
}

impl TableSpec {
    /// `orders`: hash key `order_id` (S), range key `line` (N), TTL on
    /// `expires_at`.
    pub fn orders() -> Self {
        TableSpec {
            name: "orders".to_owned(),
            hash_key: KeyAttr::s("order_id"),
            range_key: Some(KeyAttr::n("line")),
            profile: Profile::Orders,
            shards: 1,
            weight: 3,
            mix: OpMix {
                insert: 50,
                modify: 38,
                remove: 12,
            },
            ttl_attribute: Some("expires_at".to_owned()),
        }
    }

    /// `customers`: hash key `customer_id` (S), TTL on `expires_at`.
    pub fn customers() -> Self {
        TableSpec {
            name: "customers".to_owned(),
            hash_key: KeyAttr::s("customer_id"),
            range_key: None,
            profile: Profile::Customers,
            shards: 1,
            weight: 2,
            mix: OpMix {
                insert: 45,
                modify: 45,
                remove: 10,
            },
            ttl_attribute: Some("expires_at".to_owned()),
        }
    }

    /// `events`, the bench table: hash key `pk` (S), range key `sk` (S),
    /// 60% inserts, 30% modifies, 10% removes.
    pub fn events() -> Self {
        TableSpec {
            name: BENCH_TABLE.to_owned(),
            hash_key: KeyAttr::s("pk"),
            range_key: Some(KeyAttr::s("sk")),
            profile: Profile::Events,
            shards: 1,
            weight: 1,
            mix: OpMix {
                insert: 60,
                modify: 30,
                remove: 10,
            },
            ttl_attribute: None,
        }
    }

    /// The id of shard `index` (0-based), also the capture file's stem:
    /// `orders-shard-0001`.
    pub fn shard_id(&self, index: usize) -> String {
        format!("{}-shard-{:04}", self.name, index + 1)
    }
}

/// The quickstart preset: `orders` and `customers`, 400 records with
/// inserts, modifies, user and TTL deletes, and every DynamoDB type.
pub fn quickstart() -> GenConfig {
    GenConfig {
        seed: QUICKSTART_SEED,
        tables: vec![TableSpec::orders(), TableSpec::customers()],
        records: 400,
        records_per_page: 25,
        // 2024-11-19T07:06:40Z
        start_epoch_s: 1_732_000_000.0,
        mean_gap_ms: 3_000,
        empty_page_ratio: 0.1,
        gzip: false,
    }
}

impl GenConfig {
    /// Checks the settings without touching the file system.
    ///
    /// # Errors
    /// A message naming the first bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.tables.is_empty() {
            return Err("no tables".to_owned());
        }
        if self.tables.iter().all(|t| t.weight == 0) {
            return Err("every table has weight 0".to_owned());
        }
        for (i, t) in self.tables.iter().enumerate() {
            if t.name.is_empty() || t.name.contains(['/', '\\']) {
                return Err(format!(
                    "table name `{}` is empty or has a path separator",
                    t.name
                ));
            }
            if self.tables[..i].iter().any(|o| o.name == t.name) {
                return Err(format!("table `{}` appears twice", t.name));
            }
            if t.shards == 0 {
                return Err(format!("table `{}` has no shards", t.name));
            }
            if t.mix.insert == 0 {
                return Err(format!("table `{}` never inserts", t.name));
            }
            if t.range_key
                .as_ref()
                .is_some_and(|r| r.name == t.hash_key.name)
            {
                return Err(format!(
                    "table `{}` uses one attribute as both keys",
                    t.name
                ));
            }
        }
        if self.records_per_page == 0 {
            return Err("records_per_page is 0".to_owned());
        }
        if !(self.start_epoch_s.is_finite() && self.start_epoch_s >= 0.0) {
            return Err("start_epoch_s is not a time".to_owned());
        }
        if !(0.0..=1.0).contains(&self.empty_page_ratio) {
            return Err("empty_page_ratio is outside 0..=1".to_owned());
        }
        Ok(())
    }
}

/// Counts of the operations in a file or table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// INSERT records.
    pub insert: u64,
    /// MODIFY records.
    pub modify: u64,
    /// REMOVE records, TTL deletes included.
    pub remove: u64,
    /// REMOVE records made by TTL.
    pub ttl_remove: u64,
}

impl OpCounts {
    /// All records.
    pub fn total(&self) -> u64 {
        self.insert + self.modify + self.remove
    }

    pub(crate) fn add(&mut self, event: EventName, ttl_delete: bool) {
        match event {
            EventName::Insert => self.insert += 1,
            EventName::Modify => self.modify += 1,
            EventName::Remove => {
                self.remove += 1;
                self.ttl_remove += u64::from(ttl_delete);
            }
        }
    }

    fn merge(&mut self, other: &OpCounts) {
        self.insert += other.insert;
        self.modify += other.modify;
        self.remove += other.remove;
        self.ttl_remove += other.ttl_remove;
    }
}

/// One written capture file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    /// Where it was written.
    pub path: PathBuf,
    /// Its table.
    pub table: String,
    /// Its shard id (the file name without extensions).
    pub shard_id: String,
    /// GetRecords pages (lines).
    pub pages: u64,
    /// Uncompressed size.
    pub bytes: u64,
    /// Records by operation.
    pub counts: OpCounts,
}

/// What [`write_capture_dir`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// One entry per file, in table then shard order.
    pub files: Vec<FileSummary>,
}

impl Summary {
    /// Records over all files.
    pub fn records(&self) -> u64 {
        self.files.iter().map(|f| f.counts.total()).sum()
    }

    /// Records of one table by operation.
    pub fn table_counts(&self, table: &str) -> OpCounts {
        let mut c = OpCounts::default();
        for f in self.files.iter().filter(|f| f.table == table) {
            c.merge(&f.counts);
        }
        c
    }
}

/// Writes one capture file per (table, shard) into `dir`, creating it;
/// existing files of the same names are replaced.
///
/// # Errors
/// `InvalidInput` for a config [`GenConfig::validate`] rejects; any I/O
/// error while writing.
pub fn write_capture_dir(dir: &Path, cfg: &GenConfig) -> io::Result<Summary> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut tables: Vec<TableState> = cfg
        .tables
        .iter()
        .map(|spec| TableState::new(spec.clone(), &mut rng, MAX_LIVE_ITEMS))
        .collect();

    let ext = if cfg.gzip { "jsonl.gz" } else { "jsonl" };
    let mut files: Vec<Vec<(FileSummary, Pager<FileOut>)>> = Vec::new();
    let mut file_no = 0u64;
    for table in &tables {
        let spec = table.spec();
        let mut shards = Vec::new();
        for shard in 0..spec.shards {
            let shard_id = spec.shard_id(shard);
            let path = dir.join(format!("{shard_id}.{ext}"));
            let out = FileOut::new(File::create(&path)?, cfg.gzip);
            file_no += 1;
            let pager = Pager::new(
                out,
                table.arn().to_owned(),
                cfg.seed ^ file_no.wrapping_mul(0xA24B_AED4_963E_E407),
                cfg.records_per_page,
                cfg.empty_page_ratio,
            );
            let summary = FileSummary {
                path,
                table: spec.name.clone(),
                shard_id,
                pages: 0,
                bytes: 0,
                counts: OpCounts::default(),
            };
            shards.push((summary, pager));
        }
        files.push(shards);
    }

    let total_weight: u64 = cfg.tables.iter().map(|t| u64::from(t.weight)).sum();
    let mut now_ms = (cfg.start_epoch_s * 1000.0).round() as u64;
    let mut scratch = Vec::with_capacity(4096);
    for _ in 0..cfg.records {
        // Uniform gaps around the mean: timestamps never go backwards.
        now_ms += rng.random_range(0..=cfg.mean_gap_ms.saturating_mul(2));
        let mut roll = rng.random_range(0..total_weight);
        let mut t = 0;
        while roll >= u64::from(cfg.tables[t].weight) {
            roll -= u64::from(cfg.tables[t].weight);
            t += 1;
        }
        scratch.clear();
        let produced = tables[t].next_record(&mut rng, now_ms, &mut scratch);
        let (summary, pager) = &mut files[t][produced.shard];
        pager.push(&scratch)?;
        summary.counts.add(produced.event, produced.ttl_delete);
    }

    let mut summary = Summary::default();
    for (mut file, pager) in files.into_iter().flatten() {
        let (out, pages, bytes) = pager.finish()?;
        out.close()?;
        file.pages = pages;
        file.bytes = bytes;
        summary.files.push(file);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests;
