//! Table exports in the layout DynamoDB's export to S3 writes, with a local
//! directory standing for S3 (`<root>/<bucket>/<key>`):
//!
//! ```text
//! <prefix>/AWSDynamoDB/<exportId>/_started
//! <prefix>/AWSDynamoDB/<exportId>/manifest-summary.json
//! <prefix>/AWSDynamoDB/<exportId>/manifest-files.json
//! <prefix>/AWSDynamoDB/<exportId>/data/<random>.json.gz
//! ```
//!
//! The summary is one JSON object; the files manifest has one JSON line per
//! data file (`itemCount`, `md5Checksum`, `etag`, `dataFileS3Key`); each data
//! file is gzipped JSON lines of `{"Item": {...}}` in DynamoDB JSON. Keys are
//! bucket-relative, as the manifests give them.
//!
//! [`write_export`] writes one directly; the simulator's
//! `ExportTableToPointInTime` goes through the same code.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flate2::Compression;
use flate2::write::GzEncoder;
use md5::{Digest as _, Md5};
use rand::Rng as _;
use serde_json::{Value, json};

use super::clock::{iso8601, now_secs};
use super::keys::item_size;
use super::table::table_id;

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportFiles {
    /// `<tableArn>/export/<exportId>`.
    pub export_arn: String,
    /// `01234567890123-a1b2c3d4`: the export's start in milliseconds and a
    /// random part.
    pub export_id: String,
    /// The bucket's directory, `<root>/<bucket>`; every key is relative to it.
    pub bucket_dir: PathBuf,
    /// `<prefix>/AWSDynamoDB/<exportId>/manifest-summary.json` (what
    /// `DescribeExport` calls `ExportManifest`).
    pub manifest_summary_key: String,
    /// `<prefix>/AWSDynamoDB/<exportId>/manifest-files.json`.
    pub manifest_files_key: String,
    /// `<prefix>/AWSDynamoDB/<exportId>/data/<name>.json.gz`, in manifest order.
    pub data_file_keys: Vec<String>,
    /// Items written over all data files.
    pub item_count: u64,
    /// The items' size by DynamoDB's rules.
    pub billed_size_bytes: u64,
}

impl ExportFiles {
    /// The local path of a bucket-relative key.
    pub fn path(&self, key: &str) -> PathBuf {
        self.bucket_dir.join(key)
    }
}

/// Writes an export of `items` (DynamoDB-JSON maps) for the table
/// `table_arn` to `<dir_root>/<bucket>/<prefix>/AWSDynamoDB/<new id>/`, with
/// the start, end and export times all now.
///
/// # Panics
/// When a file cannot be written.
pub fn write_export(
    dir_root: &Path,
    bucket: &str,
    prefix: &str,
    table_arn: &str,
    items: &[Value],
) -> ExportFiles {
    let now = now_secs();
    let spec = ExportSpec {
        root: dir_root,
        bucket,
        prefix,
        table_arn,
        export_id: &new_export_id(now),
        start: now,
        end: now,
        export_time: now,
    };
    write(&spec, items).unwrap_or_else(|e| panic!("write an export under {dir_root:?}: {e}"))
}

/// Everything about an export but its items.
pub(crate) struct ExportSpec<'a> {
    pub root: &'a Path,
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub table_arn: &'a str,
    pub export_id: &'a str,
    pub start: f64,
    pub end: f64,
    pub export_time: f64,
}

/// `<14-digit milliseconds>-<8 hex>`, as the service names exports.
pub(crate) fn new_export_id(now: f64) -> String {
    let millis = (now * 1000.0) as u64 % 100_000_000_000_000;
    format!("{millis:014}-{:08x}", rand::rng().random::<u32>())
}

/// The export's ARN for a table.
pub(crate) fn export_arn(table_arn: &str, export_id: &str) -> String {
    format!("{table_arn}/export/{export_id}")
}

pub(crate) fn write(spec: &ExportSpec<'_>, items: &[Value]) -> io::Result<ExportFiles> {
    // Leading or trailing slashes would give keys with empty path segments.
    let prefix = spec.prefix.trim_matches('/');
    let base = if prefix.is_empty() {
        format!("AWSDynamoDB/{}", spec.export_id)
    } else {
        format!("{prefix}/AWSDynamoDB/{}", spec.export_id)
    };
    let bucket_dir = spec.root.join(spec.bucket);
    let dir = bucket_dir.join(&base);
    fs::create_dir_all(dir.join("data"))?;
    fs::write(dir.join("_started"), b"")?;

    let mut manifest_lines = String::new();
    let mut data_file_keys = Vec::new();
    for chunk in chunks(items) {
        let key = format!("{base}/data/{}.json.gz", random_name());
        let bytes = gzip_lines(chunk)?;
        fs::write(bucket_dir.join(&key), &bytes)?;
        let digest = Md5::digest(&bytes);
        let line = json!({
            "itemCount": chunk.len(),
            "md5Checksum": BASE64.encode(digest),
            "etag": digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "dataFileS3Key": key,
        });
        manifest_lines.push_str(&line.to_string());
        manifest_lines.push('\n');
        data_file_keys.push(key);
    }
    let manifest_files_key = format!("{base}/manifest-files.json");
    fs::write(bucket_dir.join(&manifest_files_key), manifest_lines)?;

    let billed_size_bytes = items.iter().map(item_size).sum();
    let table_name = spec.table_arn.rsplit_once("table/").map_or("", |(_, n)| n);
    let summary = json!({
        "version": "2020-06-30",
        "exportArn": export_arn(spec.table_arn, spec.export_id),
        "startTime": iso8601(spec.start),
        "endTime": iso8601(spec.end),
        "tableArn": spec.table_arn,
        "tableId": table_id(table_name),
        "exportTime": iso8601(spec.export_time),
        "s3Bucket": spec.bucket,
        "s3Prefix": if spec.prefix.is_empty() { Value::Null } else { json!(spec.prefix) },
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": null,
        "manifestFilesS3Key": manifest_files_key,
        "billedSizeBytes": billed_size_bytes,
        "itemCount": items.len(),
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    });
    let manifest_summary_key = format!("{base}/manifest-summary.json");
    fs::write(bucket_dir.join(&manifest_summary_key), summary.to_string())?;

    Ok(ExportFiles {
        export_arn: export_arn(spec.table_arn, spec.export_id),
        export_id: spec.export_id.to_owned(),
        bucket_dir,
        manifest_summary_key,
        manifest_files_key,
        data_file_keys,
        item_count: items.len() as u64,
        billed_size_bytes,
    })
}

/// Items split over data files as the service splits them over partitions:
/// one file for a handful of items (an empty one for none), otherwise at
/// least two, so readers must combine files.
fn chunks(items: &[Value]) -> Vec<&[Value]> {
    if items.len() <= 3 {
        return vec![items];
    }
    let files = items.len().div_ceil(1000).clamp(2, 8);
    items.chunks(items.len().div_ceil(files)).collect()
}

fn gzip_lines(items: &[Value]) -> io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    for item in items {
        serde_json::to_writer(&mut gz, &json!({ "Item": item }))?;
        gz.write_all(b"\n")?;
    }
    gz.finish()
}

/// 26 characters of base32, like the service's data file names.
fn random_name() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rng();
    (0..26)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
