//! Point-in-time recovery and exports: `DescribeContinuousBackups`,
//! `ExportTableToPointInTime` and `DescribeExport`.
//!
//! An export takes the table's items when it is requested (whatever
//! `ExportTime` says: the simulator keeps no history), reports IN_PROGRESS
//! to the first two `DescribeExport` calls so pollers really poll, and
//! writes its files when the third call finds it done.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::clock::now_secs;
use super::export::{self, ExportFiles, ExportSpec};
use super::state::{Fault, State};

/// `DescribeExport` calls answered IN_PROGRESS before the export completes.
const IN_PROGRESS_DESCRIBES: usize = 2;

pub(crate) struct ExportJob {
    pub arn: String,
    pub id: String,
    pub table_arn: String,
    pub table_id: String,
    pub bucket: String,
    pub prefix: Option<String>,
    pub client_token: Option<String>,
    pub root: PathBuf,
    pub items: Vec<Value>,
    pub start: f64,
    pub export_time: f64,
    pub describes: usize,
    pub outcome: Option<Outcome>,
}

pub(crate) enum Outcome {
    Completed { files: ExportFiles, end: f64 },
    Failed { message: String, end: f64 },
}

pub(crate) fn describe_continuous_backups(st: &State, body: &Value) -> Result<Value, Fault> {
    let name = body["TableName"].as_str().unwrap_or_default();
    // A plain stream's table exists for DescribeTable, so it does here too.
    let enabled = match st.table(name) {
        Some(t) => t.pitr_since,
        None if st.streams.values().any(|s| s.table == name) => None,
        None => return Err(table_not_found(name)),
    };
    let mut pitr = json!({"PointInTimeRecoveryStatus": if enabled.is_some() { "ENABLED" } else { "DISABLED" }});
    if let Some(since) = enabled {
        pitr["EarliestRestorableDateTime"] = json!(since);
        pitr["LatestRestorableDateTime"] = json!(now_secs());
        pitr["RecoveryPeriodInDays"] = json!(35);
    }
    Ok(json!({"ContinuousBackupsDescription": {
        "ContinuousBackupsStatus": "ENABLED",
        "PointInTimeRecoveryDescription": pitr,
    }}))
}

pub(crate) fn export_table(st: &mut State, body: &Value) -> Result<Value, Fault> {
    let table_arn = body["TableArn"]
        .as_str()
        .ok_or_else(|| Fault::validation("TableArn is required"))?;
    let bucket = body["S3Bucket"]
        .as_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| Fault::validation("S3Bucket is required"))?;
    let prefix = optional_string(body, "S3Prefix")?;
    match body.get("ExportFormat").and_then(Value::as_str) {
        None | Some("DYNAMODB_JSON") => {}
        Some(other) => {
            return Err(Fault::validation(format!(
                "ExportFormat {other} is not supported by the simulator (only DYNAMODB_JSON)"
            )));
        }
    }
    match body.get("ExportType").and_then(Value::as_str) {
        None | Some("FULL_EXPORT") => {}
        Some(other) => {
            return Err(Fault::validation(format!(
                "ExportType {other} is not supported by the simulator (only FULL_EXPORT)"
            )));
        }
    }
    let table = st
        .tables
        .values()
        .find(|t| t.arn == table_arn)
        .ok_or_else(|| table_not_found(table_arn))?;
    let Some(since) = table.pitr_since else {
        return Err(Fault::client(
            "PointInTimeRecoveryUnavailableException",
            format!(
                "Point in time recovery is not enabled for table '{}'",
                table.name
            ),
        ));
    };
    let now = now_secs();
    let export_time = match body.get("ExportTime") {
        None => now,
        Some(v) => {
            let t = v
                .as_f64()
                .ok_or_else(|| Fault::validation("ExportTime must be a timestamp"))?;
            // A millisecond's slack: client and simulator round differently.
            if t > now + 0.001 || t < since - 0.001 {
                return Err(Fault::client(
                    "InvalidExportTimeException",
                    "Export time must be within the table's point in time recovery window",
                ));
            }
            t
        }
    };
    // A token asked again answers with the export it started (DynamoDB
    // keeps tokens for eight hours), or is refused for another table.
    let client_token = optional_string(body, "ClientToken")?;
    if let Some(token) = &client_token
        && let Some(job) = st
            .exports
            .values()
            .find(|j| j.client_token.as_ref() == Some(token))
    {
        if job.table_arn != table_arn || job.bucket != bucket {
            return Err(Fault::client(
                "ExportConflictException",
                "The request uses the same client token as a previous, but non-identical request",
            ));
        }
        return Ok(json!({ "ExportDescription": describe(job) }));
    }
    let root = st.export_root.clone().ok_or_else(|| {
        Fault::validation("the simulator has no export root: call StreamSim::set_export_root")
    })?;
    let id = export::new_export_id(now);
    let job = ExportJob {
        arn: export::export_arn(table_arn, &id),
        id,
        table_arn: table_arn.to_owned(),
        table_id: table.id.clone(),
        bucket: bucket.to_owned(),
        prefix,
        client_token,
        root,
        items: table.items.values().cloned().collect(),
        start: now,
        export_time,
        describes: 0,
        outcome: None,
    };
    let description = describe(&job);
    st.exports.insert(job.arn.clone(), job);
    Ok(json!({ "ExportDescription": description }))
}

pub(crate) fn describe_export(st: &mut State, body: &Value) -> Result<Value, Fault> {
    let arn = body["ExportArn"].as_str().unwrap_or_default();
    let job = st.exports.get_mut(arn).ok_or_else(|| {
        Fault::client(
            "ExportNotFoundException",
            format!("Export not found: {arn}"),
        )
    })?;
    job.describes += 1;
    if job.describes > IN_PROGRESS_DESCRIBES && job.outcome.is_none() {
        job.outcome = Some(finish(job));
    }
    Ok(json!({ "ExportDescription": describe(job) }))
}

fn finish(job: &ExportJob) -> Outcome {
    let end = now_secs();
    let spec = ExportSpec {
        root: &job.root,
        bucket: &job.bucket,
        prefix: job.prefix.as_deref().unwrap_or_default(),
        table_arn: &job.table_arn,
        export_id: &job.id,
        start: job.start,
        end,
        export_time: job.export_time,
    };
    match export::write(&spec, &job.items) {
        Ok(files) => Outcome::Completed { files, end },
        // The service reports a bucket it cannot write to on the export.
        Err(e) => Outcome::Failed {
            message: format!("Failed to write to S3 bucket {}: {e}", job.bucket),
            end,
        },
    }
}

fn describe(job: &ExportJob) -> Value {
    let mut d = json!({
        "ExportArn": job.arn,
        "ExportStatus": "IN_PROGRESS",
        "StartTime": job.start,
        "TableArn": job.table_arn,
        "TableId": job.table_id,
        "ExportTime": job.export_time,
        "S3Bucket": job.bucket,
        "S3SseAlgorithm": "AES256",
        "ExportFormat": "DYNAMODB_JSON",
        "ExportType": "FULL_EXPORT",
    });
    if let Some(prefix) = &job.prefix {
        d["S3Prefix"] = json!(prefix);
    }
    if let Some(token) = &job.client_token {
        d["ClientToken"] = json!(token);
    }
    match &job.outcome {
        None => {}
        Some(Outcome::Completed { files, end }) => {
            d["ExportStatus"] = json!("COMPLETED");
            d["EndTime"] = json!(end);
            d["ExportManifest"] = json!(files.manifest_summary_key);
            d["ItemCount"] = json!(files.item_count);
            d["BilledSizeBytes"] = json!(files.billed_size_bytes);
        }
        Some(Outcome::Failed { message, end }) => {
            d["ExportStatus"] = json!("FAILED");
            d["EndTime"] = json!(end);
            d["FailureCode"] = json!("S3AccessDenied");
            d["FailureMessage"] = json!(message);
        }
    }
    d
}

fn optional_string(body: &Value, field: &str) -> Result<Option<String>, Fault> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Fault::validation(format!(
            "{field} must be a string, got {other}"
        ))),
    }
}

fn table_not_found(name: &str) -> Fault {
    Fault::client("TableNotFoundException", format!("Table not found: {name}"))
}
