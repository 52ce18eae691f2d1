//! The physical limit of the job: parsing the same GetRecords pages into
//! typed Rust structs, and doing nothing else. A bridge cannot be faster
//! than reading its input; how close it gets is the `dynamo-cdc / ceiling`
//! ratio.
//!
//! Two parsers set the limit (see [`Parser`]): serde_json, the common
//! choice, and simd-json, a SIMD parser behind the same serde interface. A
//! limit set by one parser's speed alone would flatter the ratio, so the
//! report gives the share of each and of the faster of the two.
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

/// The JSON parser of one ceiling. Both deserialize each page into the
/// same structs through serde, so they differ only in how they read JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parser {
    /// `serde_json::from_slice`.
    SerdeJson,
    /// `simd_json::serde::from_slice`, which picks AVX2, SSE4.2 or its
    /// scalar code at run time, so the build needs no `target-cpu`.
    SimdJson,
}

impl Parser {
    pub(crate) const ALL: [Parser; 2] = [Parser::SerdeJson, Parser::SimdJson];

    /// Its row in the tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Parser::SerdeJson => "ceiling: serde_json typed parse",
            Parser::SimdJson => "ceiling: simd-json typed parse",
        }
    }

    /// The flag that runs it as a child of the benchmark binary, so it is
    /// measured like the other contenders.
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Parser::SerdeJson => "--ceiling",
            Parser::SimdJson => "--ceiling-simd",
        }
    }

    pub(crate) fn from_flag(flag: &str) -> Option<Parser> {
        Parser::ALL.into_iter().find(|p| p.flag() == flag)
    }

    /// One page. simd-json unescapes strings in place, so it is given the
    /// line buffer itself, which the next line overwrites anyway.
    fn parse(self, line: &mut [u8]) -> Result<Page, String> {
        match self {
            Parser::SerdeJson => serde_json::from_slice(line).map_err(|e| e.to_string()),
            Parser::SimdJson => simd_json::serde::from_slice(line).map_err(|e| e.to_string()),
        }
    }
}

/// Parses every page of every `.jsonl` file under `dir` with `parser`;
/// returns the number of records.
pub(crate) fn parse_capture(dir: &Path, parser: Parser) -> u64 {
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
            let page = parser
                .parse(&mut line)
                .unwrap_or_else(|e| panic!("{}: not a GetRecords page: {e}", path.display()));
            records += page.records.len() as u64;
            // Dropping the page is part of the cost, as it is for the bridge.
            drop(std::hint::black_box(page));
        }
    }
    records
}
