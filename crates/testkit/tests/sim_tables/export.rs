//! Point-in-time recovery and exports: the API's answers, and export files
//! read back the way a consumer of the S3 layout reads them.

use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use dynamo_cdc_testkit::streams_sim::{StreamSim, write_export};
use md5::{Digest as _, Md5};
use serde_json::{Value, json};

use crate::http::{canonical, ddb_err, ddb_ok};

const TABLE_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/orders";

/// An export read back from the bucket directory, checking what the
/// manifests promise (counts, checksums, keys) on the way.
struct ReadBack {
    summary: Value,
    data_keys: Vec<String>,
    items: Vec<Value>,
}

fn read_back(bucket_dir: &Path, summary_key: &str) -> ReadBack {
    let text = std::fs::read_to_string(bucket_dir.join(summary_key)).unwrap();
    let summary: Value = serde_json::from_str(&text).unwrap();
    let files_key = summary["manifestFilesS3Key"].as_str().unwrap();
    let export_dir = summary_key.strip_suffix("/manifest-summary.json").unwrap();
    assert_eq!(files_key, format!("{export_dir}/manifest-files.json"));
    assert!(bucket_dir.join(export_dir).join("_started").is_file());
    let manifest = std::fs::read_to_string(bucket_dir.join(files_key)).unwrap();
    let mut items = Vec::new();
    let mut data_keys = Vec::new();
    for line in manifest.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let key = entry["dataFileS3Key"].as_str().unwrap().to_owned();
        assert!(key.starts_with(&format!("{export_dir}/data/")) && key.ends_with(".json.gz"));
        let bytes = std::fs::read(bucket_dir.join(&key)).unwrap();
        let digest = Md5::digest(&bytes);
        assert_eq!(entry["md5Checksum"], BASE64.encode(digest));
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(entry["etag"], hex);
        let mut lines = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut lines)
            .unwrap();
        let before = items.len();
        for line in lines.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            assert_eq!(row.as_object().unwrap().len(), 1, "{row}");
            items.push(row["Item"].clone());
        }
        assert_eq!(entry["itemCount"], items.len() - before);
        data_keys.push(key);
    }
    assert_eq!(summary["itemCount"], items.len());
    ReadBack {
        summary,
        data_keys,
        items,
    }
}

fn order(n: i64) -> Value {
    json!({"pk": {"S": format!("o{n}")}, "total": {"N": (n * 3).to_string()}, "tags": {"SS": ["a", "b"]}})
}

#[test]
fn continuous_backups_follow_set_pitr() {
    let sim = StreamSim::start();
    sim.create_table("orders", "pk", None);
    let status = |sim: &StreamSim| {
        let out = ddb_ok(
            sim,
            "DescribeContinuousBackups",
            json!({"TableName": "orders"}),
        );
        let d = &out["ContinuousBackupsDescription"];
        assert_eq!(d["ContinuousBackupsStatus"], "ENABLED");
        d["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status(&sim), "DISABLED");
    sim.set_pitr("orders", true);
    assert_eq!(status(&sim), "ENABLED");
    sim.set_pitr("orders", false);
    assert_eq!(status(&sim), "DISABLED");
    let (kind, _) = ddb_err(
        &sim,
        "DescribeContinuousBackups",
        json!({"TableName": "nope"}),
    );
    assert!(kind.ends_with("#TableNotFoundException"), "{kind}");
}

#[test]
fn an_export_needs_point_in_time_recovery() {
    let sim = StreamSim::start();
    sim.create_table("orders", "pk", None);
    let dir = tempfile::tempdir().unwrap();
    sim.set_export_root(dir.path());
    let request = json!({"TableArn": TABLE_ARN, "S3Bucket": "b", "ExportFormat": "DYNAMODB_JSON"});
    let (kind, _) = ddb_err(&sim, "ExportTableToPointInTime", request.clone());
    assert_eq!(
        kind,
        "com.amazonaws.dynamodb.v20120810#PointInTimeRecoveryUnavailableException"
    );

    sim.set_pitr("orders", true);
    let mut ion = request.clone();
    ion["ExportFormat"] = json!("ION");
    let (kind, _) = ddb_err(&sim, "ExportTableToPointInTime", ion);
    assert!(kind.ends_with("#ValidationException"));
    let mut future = request.clone();
    future["ExportTime"] = json!(crate::http::now() + 3600.0);
    let (kind, _) = ddb_err(&sim, "ExportTableToPointInTime", future);
    assert!(kind.ends_with("#InvalidExportTimeException"));
    let mut missing = request;
    missing["TableArn"] = json!("arn:aws:dynamodb:us-east-1:123456789012:table/nope");
    let (kind, _) = ddb_err(&sim, "ExportTableToPointInTime", missing);
    assert!(kind.ends_with("#TableNotFoundException"));
    let (kind, _) = ddb_err(&sim, "DescribeExport", json!({"ExportArn": "nope"}));
    assert!(kind.ends_with("#ExportNotFoundException"));
}

#[test]
fn an_export_completes_on_the_third_describe_and_its_files_read_back() {
    let sim = StreamSim::start();
    sim.create_table("orders", "pk", None);
    for n in 0..50 {
        sim.put_item("orders", order(n));
    }
    sim.set_pitr("orders", true);
    let dir = tempfile::tempdir().unwrap();
    sim.set_export_root(dir.path());
    let snapshot = sim.items("orders");

    let started = ddb_ok(
        &sim,
        "ExportTableToPointInTime",
        json!({"TableArn": TABLE_ARN, "S3Bucket": "exports", "S3Prefix": "snap/orders", "ExportFormat": "DYNAMODB_JSON"}),
    );
    let d = &started["ExportDescription"];
    assert_eq!(d["ExportStatus"], "IN_PROGRESS");
    let arn = d["ExportArn"].as_str().unwrap().to_owned();
    let id = arn
        .strip_prefix(&format!("{TABLE_ARN}/export/"))
        .expect("ARN under the table");
    let (millis, random) = id.split_once('-').unwrap();
    assert_eq!((millis.len(), random.len()), (14, 8));

    // Writes after the export started are not in it.
    sim.put_item("orders", order(1000));
    assert!(sim.delete_item("orders", order(0)).is_some());

    let describe =
        || ddb_ok(&sim, "DescribeExport", json!({"ExportArn": arn}))["ExportDescription"].clone();
    for _ in 0..2 {
        let d = describe();
        assert_eq!(d["ExportStatus"], "IN_PROGRESS");
        assert!(d.get("ExportManifest").is_none());
    }
    let done = describe();
    assert_eq!(done["ExportStatus"], "COMPLETED", "{done}");
    assert_eq!(done["ItemCount"], 50);
    assert_eq!(done["S3Bucket"], "exports");
    assert_eq!(done["S3Prefix"], "snap/orders");
    let start = done["StartTime"].as_f64().unwrap();
    let end = done["EndTime"].as_f64().unwrap();
    assert!(start <= end && done["ExportTime"].as_f64().unwrap() <= end);
    let manifest = done["ExportManifest"].as_str().unwrap().to_owned();
    assert_eq!(
        manifest,
        format!("snap/orders/AWSDynamoDB/{id}/manifest-summary.json")
    );

    let back = read_back(&dir.path().join("exports"), &manifest);
    assert_eq!(canonical(&back.items), canonical(&snapshot));
    assert!(back.data_keys.len() >= 2, "{:?}", back.data_keys);
    let s = &back.summary;
    assert_eq!(s["version"], "2020-06-30");
    assert_eq!(s["exportArn"], arn.as_str());
    assert_eq!(s["tableArn"], TABLE_ARN);
    assert_eq!(s["s3Bucket"], "exports");
    assert_eq!(s["s3Prefix"], "snap/orders");
    assert_eq!(s["outputFormat"], "DYNAMODB_JSON");
    assert!(s["s3SseKmsKeyId"].is_null());
    assert_eq!(s["billedSizeBytes"], done["BilledSizeBytes"]);
    for field in ["startTime", "endTime", "exportTime"] {
        let t = s[field].as_str().unwrap();
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
    let table = ddb_ok(&sim, "DescribeTable", json!({"TableName": "orders"}));
    assert_eq!(s["tableId"], table["Table"]["TableId"]);

    // Later calls report the same export without writing it again.
    let again = describe();
    assert_eq!(again["ExportManifest"], done["ExportManifest"]);
    assert_eq!(again["EndTime"], done["EndTime"]);
}

#[test]
fn an_export_without_a_prefix_starts_its_keys_at_the_bucket_root() {
    let sim = StreamSim::start();
    sim.create_table("orders", "pk", None);
    sim.put_item("orders", order(1));
    sim.set_pitr("orders", true);
    let dir = tempfile::tempdir().unwrap();
    sim.set_export_root(dir.path());
    // An export time inside the recovery window, which opened at set_pitr.
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Whole milliseconds: few enough digits that the JSON round trip is
    // exact (a full-precision float may come back one unit off).
    let at = ((crate::http::now() - 0.01) * 1000.0).floor() / 1000.0;
    let started = ddb_ok(
        &sim,
        "ExportTableToPointInTime",
        json!({"TableArn": TABLE_ARN, "S3Bucket": "b", "ExportTime": at}),
    );
    assert_eq!(started["ExportDescription"]["ExportTime"], at);
    assert!(started["ExportDescription"].get("S3Prefix").is_none());
    let arn = started["ExportDescription"]["ExportArn"].clone();
    for _ in 0..2 {
        ddb_ok(&sim, "DescribeExport", json!({"ExportArn": arn}));
    }
    let done = ddb_ok(&sim, "DescribeExport", json!({"ExportArn": arn}));
    let manifest = done["ExportDescription"]["ExportManifest"]
        .as_str()
        .unwrap();
    assert!(manifest.starts_with("AWSDynamoDB/"), "{manifest}");
    let back = read_back(&dir.path().join("b"), manifest);
    assert_eq!(back.items, [order(1)]);
    assert!(
        back.summary["manifestFilesS3Key"]
            .as_str()
            .unwrap()
            .starts_with("AWSDynamoDB/")
    );
}

#[test]
fn write_export_can_be_called_directly() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write_export(dir.path(), "bucket", "pre/", TABLE_ARN, &[]);
    assert_eq!(empty.item_count, 0);
    assert_eq!(
        empty.data_file_keys.len(),
        1,
        "an empty partition still has a file"
    );
    assert!(empty.manifest_summary_key.starts_with("pre/AWSDynamoDB/"));
    let back = read_back(&empty.bucket_dir, &empty.manifest_summary_key);
    assert!(back.items.is_empty());
    assert_eq!(back.data_keys, empty.data_file_keys);

    let items: Vec<Value> = (0..10).map(order).collect();
    let files = write_export(dir.path(), "bucket", "", TABLE_ARN, &items);
    assert_eq!(files.bucket_dir, dir.path().join("bucket"));
    assert_eq!(
        files.export_arn,
        format!("{TABLE_ARN}/export/{}", files.export_id)
    );
    assert!(files.data_file_keys.len() >= 2);
    assert!(files.path(&files.manifest_files_key).is_file());
    let back = read_back(&files.bucket_dir, &files.manifest_summary_key);
    assert_eq!(
        back.items, items,
        "files in manifest order hold the items in order"
    );
    assert_eq!(back.summary["billedSizeBytes"], files.billed_size_bytes);
    assert_ne!(files.export_id, empty.export_id);
}
