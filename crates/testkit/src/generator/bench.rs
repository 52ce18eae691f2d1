//! The bench preset: one shard of the `events` table, streamed to any size.

use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::pages::Pager;
use super::table::TableState;
use super::{KeyAttr, OpMix, Profile, TableSpec};

/// Table of the bench capture.
pub const BENCH_TABLE: &str = "events";

/// Records per page: about 650 KB, under GetRecords' 1 MB page limit.
const BENCH_PAGE_RECORDS: usize = 500;
/// Tracked items; with about 2.5 KB per image in memory this bounds the
/// generator at a few tens of MB however large the capture.
const BENCH_MAX_LIVE: usize = 4096;
/// 2024-11-19T07:06:40Z, in ms.
const BENCH_START_MS: u64 = 1_732_000_000_000;

/// The inputs of the side-by-side benchmark, each one shard of its own
/// table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchShape {
    /// F1, `events`: mixed records of about 1.3 KB (60% INSERT, 30%
    /// MODIFY, 10% REMOVE), nested maps, every set type, binary.
    Mixed,
    /// F2, `pings`: items of about 100 bytes, so per-record costs dominate.
    Small,
    /// F3, `documents`: items near the 400 KB limit, one record a page
    /// (GetRecords returns at most 1 MB).
    Large,
    /// F4, `wide`: 200 attributes, one nested 31 levels deep, numbers at
    /// the edges of DynamoDB's range.
    Wide,
}

impl BenchShape {
    /// All shapes, F1 to F4.
    pub const ALL: [BenchShape; 4] = [
        BenchShape::Mixed,
        BenchShape::Small,
        BenchShape::Large,
        BenchShape::Wide,
    ];

    /// `F1` .. `F4`.
    pub fn label(self) -> &'static str {
        match self {
            BenchShape::Mixed => "F1",
            BenchShape::Small => "F2",
            BenchShape::Large => "F3",
            BenchShape::Wide => "F4",
        }
    }

    /// Parses `f1`..`f4` or `mixed`, `small`, `large`, `wide`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "f1" | "mixed" => Some(BenchShape::Mixed),
            "f2" | "small" => Some(BenchShape::Small),
            "f3" | "large" => Some(BenchShape::Large),
            "f4" | "wide" => Some(BenchShape::Wide),
            _ => None,
        }
    }

    /// The table the shape's records belong to.
    pub fn table(self) -> TableSpec {
        let (name, hash_key, range_key, profile, mix) = match self {
            BenchShape::Mixed => return TableSpec::events(),
            BenchShape::Small => (
                "pings",
                KeyAttr::s("host"),
                None,
                Profile::Pings,
                (70, 25, 5),
            ),
            BenchShape::Large => (
                "documents",
                KeyAttr::s("doc_id"),
                None,
                Profile::Documents,
                (60, 30, 10),
            ),
            BenchShape::Wide => (
                "wide",
                KeyAttr::s("id"),
                Some(KeyAttr::n("rev")),
                Profile::Wide,
                (60, 30, 10),
            ),
        };
        TableSpec {
            name: name.to_owned(),
            hash_key,
            range_key,
            profile,
            shards: 1,
            weight: 1,
            mix: OpMix {
                insert: mix.0,
                modify: mix.1,
                remove: mix.2,
            },
            ttl_attribute: None,
        }
    }

    /// Records per page, keeping pages under GetRecords' 1 MB.
    fn records_per_page(self) -> usize {
        match self {
            BenchShape::Mixed => BENCH_PAGE_RECORDS,
            BenchShape::Small => 1000,
            BenchShape::Large => 1,
            BenchShape::Wide => 50,
        }
    }

    /// Items tracked for updates: bounds the generator's memory.
    fn max_live(self) -> usize {
        match self {
            BenchShape::Large => 16,
            BenchShape::Wide => 512,
            BenchShape::Mixed | BenchShape::Small => BENCH_MAX_LIVE,
        }
    }
}

/// Streams a capture of the `events` table (see [`BenchShape::Mixed`]);
/// the same as [`write_bench_shape`] with that shape.
///
/// # Errors
/// Any error from `w`.
pub fn write_bench_capture(w: impl Write, seed: u64, target_bytes: u64) -> io::Result<u64> {
    write_bench_shape(w, BenchShape::Mixed, seed, target_bytes)
}

/// Streams a capture of `shape` to `w` until about `target_bytes` are
/// written (a record or so more), as one shard: JSON Lines of GetRecords
/// pages, the last with a null `NextShardIterator`. Memory stays constant,
/// so multi-GB fixtures are fine. Returns the number of records written.
/// The same shape, seed and size give the same bytes.
///
/// # Errors
/// Any error from `w`.
pub fn write_bench_shape(
    w: impl Write,
    shape: BenchShape,
    seed: u64,
    target_bytes: u64,
) -> io::Result<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut table = TableState::new(shape.table(), &mut rng, shape.max_live());
    let mut pager = Pager::new(
        w,
        table.arn().to_owned(),
        seed.rotate_left(17) ^ 0x5EED,
        shape.records_per_page(),
        0.0,
    );
    let mut now_ms = BENCH_START_MS;
    let mut scratch = Vec::with_capacity(4096);
    let mut records = 0u64;
    while pager.bytes_so_far() < target_bytes {
        // A busy table: a few hundred writes per second.
        now_ms += rng.random_range(0..=8);
        scratch.clear();
        table.next_record(&mut rng, now_ms, &mut scratch);
        pager.push(&scratch)?;
        records += 1;
    }
    pager.finish()?;
    Ok(records)
}
