//! Where files go and what their names say.
//!
//! `<root>/<table>/date=YYYY-MM-DD/<shard>_<firstSeq>.parquet`: a committed
//! file is named after its first sequence number, the first one written
//! after the shard's previous position; its last sequence number is in its
//! footer (key-value metadata [`LAST_SEQUENCE_KEY`]). The committed files
//! are the sink's position, so their names must parse back.
//!
//! A commit creates its name only if absent. Two writers continuing a shard
//! from the same position (a process paused past its lease, waking up after
//! the shard moved on to another) name their files alike, whatever they
//! hold: the late commit collides instead of landing beside the other and
//! duplicating a range. Files of earlier versions,
//! `<shard>-<firstSeq>-<lastSeq>.parquet`, are still read.
//!
//! On a local disk, files being written are hidden
//! (`.<shard>_<firstSeq>.<pid>-<random>.parquet.inprogress`, unique per
//! writer so two processes never share one), which dataset readers
//! (pyarrow, Spark, DuckDB globs on `*.parquet`) skip. On an object store
//! nothing is written under a temporary name: a file is spooled to an
//! unnamed local temp file and uploaded under its final name when sealed.

use std::path::{Path, PathBuf};

use chrono::DateTime;
use dynamo_cdc_core::{SequenceNumber, ShardKey};
use dynamo_cdc_object_store::{ObjectError, ObjectPath, Objects, STAGING_DIR};

/// Suffix of files not yet committed.
pub(crate) const IN_PROGRESS: &str = ".parquet.inprogress";
/// Footer key-value metadata: the first sequence number a file holds.
pub(crate) const FIRST_SEQUENCE_KEY: &str = "dynamo_cdc.first_sequence_number";
/// Footer key-value metadata: the last sequence number a file holds (its
/// name has only the first).
pub(crate) const LAST_SEQUENCE_KEY: &str = "dynamo_cdc.last_sequence_number";
/// Footer key: the lease epoch of the table's owner when the file was
/// written, when the tables are shared between processes.
pub const LEASE_EPOCH_KEY: &str = "dynamo_cdc.lease_epoch";
pub(crate) use dynamo_cdc_core::durable::{create_dir_durably, sync_dir};
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

/// `.<shard>_<first>.<writer>.parquet.inprogress`; `writer` holds no `.`.
pub(crate) fn temp_name(shard: &str, first: &SequenceNumber, writer: &str) -> String {
    format!(".{shard}_{first}.{writer}{IN_PROGRESS}")
}

/// The shard and first sequence number a temp file was started for, from
/// its name: `.<shard>_<first>.<writer>` of this version, or
/// `.<shard>-<first>` of earlier ones.
pub(crate) fn parse_temp_name(name: &str) -> Option<(String, SequenceNumber)> {
    let stem = name.strip_prefix('.')?.strip_suffix(IN_PROGRESS)?;
    if let Some((named, writer)) = stem.rsplit_once('.')
        && !writer.is_empty()
        && let Some((shard, first)) = named.rsplit_once('_')
        && !shard.is_empty()
        && let Ok(first) = SequenceNumber::parse(first)
    {
        return Some((shard.to_owned(), first));
    }
    let (shard, first) = stem.rsplit_once('-')?;
    let first = SequenceNumber::parse(first).ok()?;
    (!shard.is_empty()).then(|| (shard.to_owned(), first))
}

/// `<shard>_<first>.parquet`: derived from the shard's previous position
/// only, so every writer continuing from it picks this name.
pub(crate) fn final_name(shard: &str, first: &SequenceNumber) -> String {
    format!("{shard}_{first}.parquet")
}

/// What a committed file's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileName {
    pub(crate) shard: String,
    pub(crate) first: SequenceNumber,
    /// In the names of earlier versions (`<shard>-<first>-<last>`); `None`
    /// for `<shard>_<first>`, whose last is in the footer.
    pub(crate) last: Option<SequenceNumber>,
}

/// Parses `<shard>_<first>.parquet`, else `<shard>-<first>-<last>.parquet`.
///
/// Shard ids hold `-` and may end in groups of digits, so the forms are told
/// apart by what follows the last `_`: a sequence number there is the new
/// form. An old name never qualifies: after its last `_` (inside the shard
/// id) come `-<first>-<last>`, which is not a number.
pub(crate) fn parse_final_name(name: &str) -> Option<FileName> {
    let stem = name.strip_suffix(".parquet")?;
    if let Some((shard, first)) = stem.rsplit_once('_')
        && let Ok(first) = SequenceNumber::parse(first)
    {
        return (!shard.is_empty()).then(|| FileName {
            shard: shard.to_owned(),
            first,
            last: None,
        });
    }
    let mut parts = stem.rsplitn(3, '-');
    let last = SequenceNumber::parse(parts.next()?).ok()?;
    let first = SequenceNumber::parse(parts.next()?).ok()?;
    let shard = parts.next().filter(|s| !s.is_empty())?;
    Some(FileName {
        shard: shard.to_owned(),
        first,
        last: Some(last),
    })
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
    pub(crate) name: FileName,
    pub(crate) file: FileRef,
}

/// A temp file found on disk: a crash's leftover, or a live writer's file.
#[derive(Debug, Clone)]
pub(crate) struct Leftover {
    pub(crate) path: PathBuf,
    /// The shard and first sequence number it was started for, when its
    /// name says.
    pub(crate) start: Option<(ShardKey, SequenceNumber)>,
}

/// Every committed file and every temp file under `root`.
pub(crate) fn scan(root: &Path) -> std::io::Result<(Vec<Committed>, Vec<Leftover>)> {
    let mut committed = Vec::new();
    let mut leftovers = Vec::new();
    // Missing: nothing written yet. Unreadable (permissions, a failing
    // disk or mount) is not the same as empty: positions read from it would
    // be too low, and files would be written again.
    let tables = match std::fs::read_dir(root) {
        Ok(tables) => tables,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((committed, leftovers)),
        Err(e) => return Err(e),
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
                    let start = parse_temp_name(&name)
                        .map(|(shard, first)| (ShardKey::new(table_name.as_str(), shard), first));
                    leftovers.push(Leftover {
                        path: file.path(),
                        start,
                    });
                } else if let Some(parsed) = parse_final_name(&name) {
                    committed.push(Committed {
                        key: ShardKey::new(table_name.as_str(), parsed.shard.as_str()),
                        name: parsed,
                        file: FileRef::Local(file.path()),
                    });
                }
            }
        }
    }
    Ok((committed, leftovers))
}

/// A staging object found in the bucket (see `Upload::fenced`): a crash's
/// leftover, or a live writer's commit under way.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub(crate) key: ObjectPath,
    pub(crate) modified: chrono::DateTime<chrono::Utc>,
}

/// Every committed object below the root, and the staging objects: listing
/// the prefix replaces `read_dir`. An upload a crash left incomplete is not
/// listed (the bucket's lifecycle rule aborts it).
pub(crate) fn scan_objects(
    objects: &Objects,
) -> Result<(Vec<Committed>, Vec<Staged>), ObjectError> {
    let mut committed = Vec::new();
    let mut staged = Vec::new();
    for meta in objects.list("")? {
        let Some(relative) = objects.relative(&meta.location) else {
            continue;
        };
        let parts: Vec<&str> = relative.split('/').collect();
        let (table, part, name) = match parts[..] {
            // `_staging/<table>/date=<day>/<name>.<token>`: four levels,
            // where a table named `_staging` has three.
            [STAGING_DIR, _, _, _] => {
                staged.push(Staged {
                    key: meta.location.clone(),
                    modified: meta.last_modified,
                });
                continue;
            }
            [table, part, name] => (table, part, name),
            _ => continue,
        };
        if [DEAD_LETTER_DIR, GAPS_DIR].contains(&table) || !part.starts_with("date=") {
            continue;
        }
        if let Some(parsed) = parse_final_name(name) {
            committed.push(Committed {
                key: ShardKey::new(table, parsed.shard.as_str()),
                name: parsed,
                file: FileRef::Remote {
                    key: meta.location.clone(),
                    size: meta.size,
                },
            });
        }
    }
    Ok((committed, staged))
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_core::writer_tag;

    use super::*;

    fn seq(text: &str) -> SequenceNumber {
        SequenceNumber::parse(text).unwrap()
    }

    /// Shard ids with `-`, `_`, trailing groups of digits and both.
    const SHARDS: &[&str] = &[
        "s1",
        "shardId-00000001536019433815-12345678",
        "shardId-00000001-abc",
        "snapshot-7f3a-12",
        "my_shard",
        "a_1",
        "x_1-2",
        "under_score-0001-22",
        "1_2_3",
    ];

    #[test]
    fn new_names_round_trip_whatever_the_shard_id() {
        let first = seq("100000000000000000001");
        for shard in SHARDS {
            let name = final_name(shard, &first);
            assert_eq!(
                parse_final_name(&name),
                Some(FileName {
                    shard: (*shard).to_owned(),
                    first: first.clone(),
                    last: None,
                }),
                "{name}"
            );
        }
    }

    #[test]
    fn old_names_still_parse_whatever_the_shard_id() {
        let (first, last) = (seq("100000000000000000001"), seq("100000000000000000900"));
        for shard in SHARDS {
            let name = format!("{shard}-{first}-{last}.parquet");
            assert_eq!(
                parse_final_name(&name),
                Some(FileName {
                    shard: (*shard).to_owned(),
                    first: first.clone(),
                    last: Some(last.clone()),
                }),
                "{name}"
            );
        }
    }

    #[test]
    fn what_follows_the_last_underscore_decides_the_form() {
        // A number after the last `_`: new form, even if the shard id looks
        // like an old name.
        let parsed = parse_final_name("shardId-0001-5-9_12.parquet").unwrap();
        assert_eq!(
            (parsed.shard.as_str(), parsed.first, parsed.last),
            ("shardId-0001-5-9", seq("12"), None)
        );
        // Anything else: the old form, or nothing.
        let parsed = parse_final_name("a_b-5-9.parquet").unwrap();
        assert_eq!(
            (parsed.shard.as_str(), parsed.first, parsed.last),
            ("a_b", seq("5"), Some(seq("9")))
        );
        for name in [
            "x-1.parquet",
            "_5.parquet",
            "s_.parquet",
            "s_abc.parquet",
            "-1-2.parquet",
            "s_1.parquet.inprogress",
            "notes.txt",
        ] {
            assert_eq!(parse_final_name(name), None, "{name}");
        }
    }

    #[test]
    fn temp_names_say_their_shard_and_first_and_are_unique_per_writer() {
        let first = seq("42");
        for shard in SHARDS.iter().chain(&["dotted.shard"]) {
            let tag = writer_tag();
            assert!(!tag.contains('.'), "{tag}");
            let name = temp_name(shard, &first, &tag);
            assert!(
                name.starts_with('.') && name.ends_with(IN_PROGRESS),
                "{name}"
            );
            assert!(parse_final_name(&name).is_none(), "{name}");
            assert_eq!(
                parse_temp_name(&name),
                Some(((*shard).to_owned(), first.clone())),
                "{name}"
            );
        }
        assert_ne!(writer_tag(), writer_tag());
        // Temp files of earlier versions: `.<shard>-<first>`.
        assert_eq!(
            parse_temp_name(".shardId-00000001-abc-123.parquet.inprogress"),
            Some(("shardId-00000001-abc".to_owned(), seq("123")))
        );
        assert_eq!(parse_temp_name(".junk.parquet.inprogress"), None);
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(date_of(Some(1_700_000_000_000)), "2023-11-14");
        assert_eq!(date_of(None), "1970-01-01");
    }

    #[test]
    fn a_missing_root_is_empty_but_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (committed, leftovers) = scan(&dir.path().join("not yet")).unwrap();
        assert!(committed.is_empty() && leftovers.is_empty());
        // A root that cannot be listed (here a file where the directory
        // should be) must not read as a dataset with nothing committed.
        let file = dir.path().join("a file");
        std::fs::write(&file, b"x").unwrap();
        assert!(scan(&file).is_err());
    }
}
