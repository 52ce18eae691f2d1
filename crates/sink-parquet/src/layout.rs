//! Where files go and what their names say.
//!
//! `<root>/<table>/date=YYYY-MM-DD/<shard>-<firstSeq>-<lastSeq>.parquet`: the
//! committed files are the sink's position, so their names must parse back.
//! On a local disk, files being written are hidden
//! (`.<shard>-<firstSeq>.parquet.inprogress`), which dataset readers
//! (pyarrow, Spark, DuckDB globs on `*.parquet`) skip. On an object store
//! nothing is written under a temporary name: a file is spooled to an
//! unnamed local temp file and uploaded under its final name when sealed.

use std::path::{Path, PathBuf};

use chrono::DateTime;
use dynamo_cdc_core::{SequenceNumber, ShardKey};
use dynamo_cdc_object_store::{ObjectError, ObjectPath, Objects};

/// Suffix of files not yet committed.
pub(crate) const IN_PROGRESS: &str = ".parquet.inprogress";
pub(crate) use dynamo_cdc_dead_letter::create_dir_durably;
use dynamo_cdc_dead_letter::{DEAD_LETTER_DIR, GAPS_DIR};

/// `YYYY-MM-DD` (UTC) of a change's creation time; 1970-01-01 when unknown.
pub(crate) fn date_of(ms: Option<i64>) -> String {
    let t = ms
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_default();
    t.format("%Y-%m-%d").to_string()
}

pub(crate) fn partition_dir(root: &Path, table: &str, date: &str) -> PathBuf {
    root.join(table).join(format!("date={date}"))
}

/// `<table>/date=YYYY-MM-DD`, the partition's key prefix below the root of
/// an object-store dataset.
pub(crate) fn partition_key(table: &str, date: &str) -> String {
    format!("{table}/date={date}")
}

pub(crate) fn temp_name(shard: &str, first: &SequenceNumber) -> String {
    format!(".{shard}-{first}{IN_PROGRESS}")
}

pub(crate) fn final_name(shard: &str, first: &SequenceNumber, last: &SequenceNumber) -> String {
    format!("{shard}-{first}-{last}.parquet")
}

/// Where a committed file is.
#[derive(Debug, Clone)]
pub(crate) enum FileRef {
    /// A file on the local disk.
    Local(PathBuf),
    /// An object, with its size (reading its footer starts from the end).
    Remote { key: ObjectPath, size: u64 },
}

/// A committed file found on disk or in the bucket.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub(crate) key: ShardKey,
    pub(crate) last: SequenceNumber,
    pub(crate) file: FileRef,
}

/// Parses `<shard>-<first>-<last>.parquet`; shard ids may hold `-` themselves.
pub(crate) fn parse_final_name(name: &str) -> Option<(String, SequenceNumber, SequenceNumber)> {
    let stem = name.strip_suffix(".parquet")?;
    let mut parts = stem.rsplitn(3, '-');
    let last = SequenceNumber::parse(parts.next()?).ok()?;
    let first = SequenceNumber::parse(parts.next()?).ok()?;
    let shard = parts.next().filter(|s| !s.is_empty())?;
    Some((shard.to_owned(), first, last))
}

/// Every committed file and every leftover temp file under `root`.
pub(crate) fn scan(root: &Path) -> std::io::Result<(Vec<Committed>, Vec<PathBuf>)> {
    let mut committed = Vec::new();
    let mut leftovers = Vec::new();
    let Ok(tables) = std::fs::read_dir(root) else {
        return Ok((committed, leftovers));
    };
    for table in tables {
        let table = table?;
        let table_name = table.file_name().to_string_lossy().into_owned();
        if [DEAD_LETTER_DIR, GAPS_DIR].contains(&table_name.as_str())
            || !table.file_type()?.is_dir()
        {
            continue;
        }
        for part in std::fs::read_dir(table.path())? {
            let part = part?;
            if !part.file_type()?.is_dir()
                || !part.file_name().to_string_lossy().starts_with("date=")
            {
                continue;
            }
            for file in std::fs::read_dir(part.path())? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                if name.ends_with(IN_PROGRESS) {
                    leftovers.push(file.path());
                } else if let Some((shard, _, last)) = parse_final_name(&name) {
                    committed.push(Committed {
                        key: ShardKey::new(table_name.as_str(), shard),
                        last,
                        file: FileRef::Local(file.path()),
                    });
                }
            }
        }
    }
    Ok((committed, leftovers))
}

/// Every committed object below the root: listing the prefix replaces
/// `read_dir`. There are no temp objects to sweep: an object exists only
/// once complete, and an upload a crash left incomplete is not listed.
pub(crate) fn scan_objects(objects: &Objects) -> Result<Vec<Committed>, ObjectError> {
    let mut committed = Vec::new();
    for meta in objects.list("")? {
        let Some(relative) = objects.relative(&meta.location) else {
            continue;
        };
        let mut parts = relative.split('/');
        let (Some(table), Some(part), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if [DEAD_LETTER_DIR, GAPS_DIR].contains(&table) || !part.starts_with("date=") {
            continue;
        }
        if let Some((shard, _, last)) = parse_final_name(name) {
            committed.push(Committed {
                key: ShardKey::new(table, shard),
                last,
                file: FileRef::Remote {
                    key: meta.location.clone(),
                    size: meta.size,
                },
            });
        }
    }
    Ok(committed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_with_dashes_in_shard_ids() {
        let first = SequenceNumber::parse("100000000000000000001").unwrap();
        let last = SequenceNumber::parse("100000000000000000900").unwrap();
        let name = final_name("shardId-00000001-abc", &first, &last);
        let (shard, f, l) = parse_final_name(&name).unwrap();
        assert_eq!(
            (shard.as_str(), f, l),
            ("shardId-00000001-abc", first, last)
        );
        assert!(parse_final_name("x-1.parquet").is_none());
        assert!(parse_final_name("notes.txt").is_none());
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(date_of(Some(1_700_000_000_000)), "2023-11-14");
        assert_eq!(date_of(None), "1970-01-01");
    }
}
