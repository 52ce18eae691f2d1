//! A table export (`ExportTableToPointInTime`, DynamoDB JSON) read as
//! snapshot rows.
//!
//! DynamoDB writes, below `<prefix>/AWSDynamoDB/<exportId>/`:
//! `manifest-summary.json` (one object; `manifestFilesS3Key` names the files
//! manifest), `manifest-files.json` (a JSON line per data file:
//! `dataFileS3Key`, `itemCount`) and the gzipped data files, a JSON line
//! `{"Item": {...}}` per item. Keys are relative to the bucket.
//!
//! Export files never change, so a row's place is its identity: row `i` of
//! data file `f` (in the manifest's order) is sequence number
//! `(f + 1) × 10¹² + i` under the export's one segment. A restart reads on
//! from the first row some sink lacks; nothing needs to be kept locally.

use std::io::Read as _;
use std::path::PathBuf;

use dynamo_cdc_core::{Item, SequenceNumber, parse_item};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Rows of one data file are numbered below this.
const ROWS_PER_FILE: u64 = 1_000_000_000_000;

/// A data file's lines: items, or a line's text and why it is not one.
pub type DataRows = Vec<Result<Item, (String, String)>>;

/// Opens an export's bucket by name.
pub type OpenBucket<'a> = dyn Fn(&str) -> Result<Box<dyn ExportObjects>, String> + Sync + 'a;

/// Reads objects of the export's bucket by bucket-relative key.
pub trait ExportObjects: Send {
    /// The whole object.
    ///
    /// # Errors
    /// When it cannot be read, with the reason and whether it may pass.
    fn get(&self, key: &str) -> Result<Vec<u8>, ReadFailure>;
}

/// Why an export's object could not be read, or is not what it should be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReadFailure {
    /// What went wrong, naming the object.
    pub message: String,
    /// True when reading again later may work (the store is down, slow or
    /// throttling): the run pauses instead of stopping.
    pub passing: bool,
}

impl From<String> for ReadFailure {
    /// An object that was read but is not what an export writes: reading it
    /// again gives the same.
    fn from(message: String) -> Self {
        ReadFailure {
            message,
            passing: false,
        }
    }
}

/// A bucket laid out in a local directory (`<dir>/<key>`).
#[derive(Clone, Debug)]
pub struct LocalBucket {
    /// The bucket's directory.
    pub dir: PathBuf,
}

impl ExportObjects for LocalBucket {
    fn get(&self, key: &str) -> Result<Vec<u8>, ReadFailure> {
        let path = self.dir.join(key);
        std::fs::read(&path).map_err(|e| ReadFailure::from(format!("{}: {e}", path.display())))
    }
}

/// One data file of an export.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportFile {
    /// Its bucket-relative key.
    pub key: String,
    /// Items in it, as the manifest says.
    pub items: u64,
}

/// The data files an export's manifests list, in their order.
///
/// # Errors
/// When a manifest cannot be read or is not one.
pub fn data_files(
    objects: &dyn ExportObjects,
    summary_key: &str,
) -> Result<Vec<ExportFile>, ReadFailure> {
    #[derive(Deserialize)]
    struct Summary {
        #[serde(rename = "manifestFilesS3Key")]
        files_key: String,
    }
    #[derive(Deserialize)]
    struct Line {
        #[serde(rename = "dataFileS3Key")]
        key: String,
        #[serde(rename = "itemCount")]
        items: u64,
    }
    let summary: Summary = serde_json::from_slice(&objects.get(summary_key)?)
        .map_err(|e| format!("{summary_key} is not an export's manifest summary: {e}"))?;
    let text = objects.get(&summary.files_key)?;
    let text =
        String::from_utf8(text).map_err(|e| format!("{} is not text: {e}", summary.files_key))?;
    let mut files = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: Line = serde_json::from_str(line).map_err(|e| {
            format!(
                "{} line {}: not a data file entry: {e}",
                summary.files_key,
                n + 1
            )
        })?;
        files.push(ExportFile {
            key: line.key,
            items: line.items,
        });
    }
    Ok(files)
}

/// The items of a gzipped data file, in order; a line that is not an item
/// is kept as its text and the reason (it becomes a dead letter).
///
/// # Errors
/// When the file is not gzip or not text.
pub fn read_data_file(bytes: &[u8]) -> Result<DataRows, String> {
    #[derive(Deserialize)]
    struct Line<'a> {
        #[serde(rename = "Item", borrow)]
        item: &'a RawValue,
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| format!("not a gzipped text file: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            let fail = |e: String| (line.to_owned(), format!("line {}: {e}", n + 1));
            let parsed: Line<'_> =
                serde_json::from_str(line).map_err(|e| fail(format!("not an export line: {e}")))?;
            parse_item(parsed.item.get(), "Item").map_err(|e| fail(e.to_string()))
        })
        .collect())
}

/// The sequence number of row `row` of data file `file` (0-based).
pub(crate) fn sequence_of(file: usize, row: u64) -> SequenceNumber {
    let n = (file as u64 + 1) * ROWS_PER_FILE + row;
    SequenceNumber::parse(&n.to_string()).expect("digits")
}

/// Where a position falls: the data file and the row after it.
pub(crate) fn after(position: Option<&SequenceNumber>) -> (usize, u64) {
    let Some(n) = position.and_then(|p| p.as_str().parse::<u64>().ok()) else {
        return (0, 0);
    };
    let file = (n / ROWS_PER_FILE).saturating_sub(1);
    (
        usize::try_from(file).unwrap_or(usize::MAX),
        n % ROWS_PER_FILE + 1,
    )
}

/// How long an export of `size_bytes` is expected to take, export and
/// delivery together, in seconds: a fixed start-up, DynamoDB writing the
/// files, and the bridge reading them. Deliberately on the slow side: it
/// decides whether the stream, which waits meanwhile, would lose records.
pub(crate) fn estimated_seconds(size_bytes: u64) -> u64 {
    const START_UP: u64 = 15 * 60;
    // Bytes per second DynamoDB writes an export, and the bridge reads one.
    const EXPORTED_PER_SECOND: u64 = 10 * 1024 * 1024;
    const READ_PER_SECOND: u64 = 10 * 1024 * 1024;
    START_UP + size_bytes / EXPORTED_PER_SECOND + size_bytes / READ_PER_SECOND
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gz(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn data_files_read_items_and_keep_bad_lines_apart() {
        let file = gz(concat!(
            "{\"Item\":{\"pk\":{\"S\":\"a\"},\"n\":{\"N\":\"1.10\"}}}\n",
            "{\"Item\":{\"pk\":{\"Q\":\"?\"}}}\n",
            "\n",
            "{\"Item\":{\"pk\":{\"S\":\"b\"}}}\n"
        ));
        let rows = read_data_file(&file).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].is_ok() && rows[2].is_ok());
        let (raw, why) = rows[1].as_ref().unwrap_err();
        assert!(raw.contains("\"Q\"") && why.starts_with("line 2"), "{why}");
        assert!(read_data_file(b"plain").is_err());
    }

    #[test]
    fn positions_map_to_files_and_rows() {
        assert_eq!(after(None), (0, 0));
        assert_eq!(after(Some(&sequence_of(0, 4))), (0, 5));
        assert_eq!(after(Some(&sequence_of(3, 0))), (3, 1));
        assert!(sequence_of(0, ROWS_PER_FILE - 1) < sequence_of(1, 0));
    }

    #[test]
    fn a_terabyte_export_outlasts_the_stream_and_a_gigabyte_does_not() {
        assert!(estimated_seconds(1 << 30) < 3_600);
        assert!(estimated_seconds(1 << 40) > 86_400);
    }
}
