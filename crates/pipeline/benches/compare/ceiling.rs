//! The physical limit of the job: parsing the same GetRecords pages into
//! typed Rust structs with serde_json, and doing nothing else. A bridge
//! cannot be faster than reading its input; how close it gets is the
//! `dynamo-cdc / ceiling` ratio.
//!
//! The structs are what a straightforward typed client would declare:
//! owned strings, a map per image, an enum per attribute value. Binary
//! values stay base64 text (decoding them is work the bridge does and the
//! ceiling does not).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)] // fields are parsed, which is the point, and never read
struct Page {
    #[serde(rename = "Records")]
    records: Vec<Record>,
    #[serde(rename = "NextShardIterator")]
    next_shard_iterator: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Record {
    #[serde(rename = "eventID")]
    event_id: String,
    event_name: String,
    event_version: String,
    event_source: String,
    aws_region: String,
    dynamodb: StreamRecord,
    #[serde(rename = "eventSourceARN")]
    event_source_arn: Option<String>,
    user_identity: Option<Identity>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Identity {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "principalId")]
    principal_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(dead_code)]
struct StreamRecord {
    approximate_creation_date_time: Option<f64>,
    keys: HashMap<String, Value>,
    new_image: Option<HashMap<String, Value>>,
    old_image: Option<HashMap<String, Value>>,
    sequence_number: String,
    size_bytes: u64,
    stream_view_type: String,
}

/// A DynamoDB attribute value, `{"S": "..."}` and so on.
#[derive(Deserialize)]
#[allow(dead_code, clippy::upper_case_acronyms)]
enum Value {
    S(String),
    N(String),
    B(String),
    SS(Vec<String>),
    NS(Vec<String>),
    BS(Vec<String>),
    M(HashMap<String, Value>),
    L(Vec<Value>),
    NULL(bool),
    BOOL(bool),
}

/// Parses every page of every `.jsonl` file under `dir`; returns the
/// number of records.
pub(crate) fn parse_capture(dir: &Path) -> u64 {
    let mut records = 0u64;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("capture dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut line = Vec::with_capacity(1 << 20);
    for path in files {
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&path).expect("capture"));
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).expect("read capture") == 0 {
                break;
            }
            let page: Page = serde_json::from_slice(&line)
                .unwrap_or_else(|e| panic!("{}: not a GetRecords page: {e}", path.display()));
            records += page.records.len() as u64;
            // Dropping the page is part of the cost, as it is for the bridge.
            drop(std::hint::black_box(page));
        }
    }
    records
}
