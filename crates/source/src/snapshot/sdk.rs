//! [`TableApi`] over the AWS SDK for Rust. Scan answers are read from the
//! body as the service sent it (numbers stay exact text), like GetRecords.

use aws_sdk_dynamodb::types::{
    AttributeValue as SdkValue, ExportFormat, ExportStatus, KeyType, PointInTimeRecoveryStatus,
    ReturnConsumedCapacity,
};
use dynamo_cdc_core::AttributeValue;

use crate::events::Request;
use crate::snapshot::api::{
    ExportRequest, ExportState, ScanPage, ScanRequest, TableApi, TableInfo,
};
use crate::streams::api::{ApiError, ApiErrorKind};
use crate::streams::raw_records::{KeepBody, Stash};
use crate::streams::sdk::{SdkStreams, classify, counted};

impl TableApi for SdkStreams {
    async fn describe_table(&self, table: &str) -> Result<TableInfo, ApiError> {
        let out = self
            .tables
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| classify(Request::DescribeTable, &e));
        let out = counted(Request::DescribeTable, out)?;
        let Some(t) = out.table() else {
            return Err(ApiError {
                kind: ApiErrorKind::Fatal,
                operation: Request::DescribeTable.name(),
                message: "the answer has no Table".into(),
            });
        };
        let mut keys: Vec<(bool, String)> = t
            .key_schema()
            .iter()
            .map(|k| {
                (
                    *k.key_type() != KeyType::Hash,
                    k.attribute_name().to_owned(),
                )
            })
            .collect();
        keys.sort();
        let enabled = t.stream_specification().filter(|s| s.stream_enabled());
        let stream_view = enabled
            .and_then(|s| s.stream_view_type())
            .map(|v| v.as_str().to_owned());
        let stream_arn = enabled.and(t.latest_stream_arn()).map(str::to_owned);
        Ok(TableInfo {
            arn: t.table_arn().unwrap_or_default().to_owned(),
            key_names: keys.into_iter().map(|(_, n)| n).collect(),
            item_count: t.item_count().unwrap_or(0).max(0).unsigned_abs(),
            size_bytes: t.table_size_bytes().unwrap_or(0).max(0).unsigned_abs(),
            stream_view,
            stream_arn,
        })
    }

    async fn scan(&self, request: &ScanRequest) -> Result<ScanPage, ApiError> {
        let stash = Stash::default();
        let start = request.exclusive_start.as_ref().map(|key| {
            key.iter()
                .filter_map(|(name, value)| Some((name.to_string(), key_value(value)?)))
                .collect()
        });
        let out = self
            .tables
            .scan()
            .table_name(&request.table)
            .segment(i32::try_from(request.segment).unwrap_or(i32::MAX))
            .total_segments(i32::try_from(request.total_segments).unwrap_or(i32::MAX))
            .limit(i32::try_from(request.limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .customize()
            .interceptor(KeepBody {
                stash: stash.clone(),
            })
            .send()
            .await
            .map_err(|e| classify(Request::Scan, &e));
        counted(Request::Scan, out)?;
        let body = stash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| ApiError {
                kind: ApiErrorKind::Fatal,
                operation: Request::Scan.name(),
                message: "the Scan answer's body was not kept".into(),
            })?;
        ScanPage::parse(&body)
    }

    async fn point_in_time_recovery(&self, table: &str) -> Result<bool, ApiError> {
        let out = self
            .tables
            .describe_continuous_backups()
            .table_name(table)
            .send()
            .await
            .map_err(|e| classify(Request::DescribeContinuousBackups, &e));
        let out = counted(Request::DescribeContinuousBackups, out)?;
        Ok(out
            .continuous_backups_description()
            .and_then(|d| d.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status())
            == Some(&PointInTimeRecoveryStatus::Enabled))
    }

    async fn export_table(&self, request: &ExportRequest) -> Result<String, ApiError> {
        let out = self
            .tables
            .export_table_to_point_in_time()
            .table_arn(&request.table_arn)
            .s3_bucket(&request.bucket)
            .set_s3_prefix((!request.prefix.is_empty()).then(|| request.prefix.clone()))
            .export_format(ExportFormat::DynamodbJson)
            .client_token(&request.client_token)
            .send()
            .await
            .map_err(|e| classify(Request::ExportTableToPointInTime, &e));
        let out = counted(Request::ExportTableToPointInTime, out)?;
        out.export_description()
            .and_then(|d| d.export_arn())
            .map(str::to_owned)
            .ok_or_else(|| ApiError {
                kind: ApiErrorKind::Fatal,
                operation: Request::ExportTableToPointInTime.name(),
                message: "the answer has no ExportArn".into(),
            })
    }

    async fn describe_export(&self, export_arn: &str) -> Result<ExportState, ApiError> {
        let out = self
            .tables
            .describe_export()
            .export_arn(export_arn)
            .send()
            .await
            .map_err(|e| classify(Request::DescribeExport, &e));
        let out = counted(Request::DescribeExport, out)?;
        let Some(d) = out.export_description() else {
            return Err(ApiError {
                kind: ApiErrorKind::Fatal,
                operation: Request::DescribeExport.name(),
                message: "the answer has no ExportDescription".into(),
            });
        };
        Ok(match d.export_status() {
            Some(ExportStatus::Completed) => ExportState::Completed {
                bucket: d.s3_bucket().unwrap_or_default().to_owned(),
                manifest_key: d.export_manifest().unwrap_or_default().to_owned(),
                item_count: d.item_count().unwrap_or(0).max(0).unsigned_abs(),
            },
            Some(ExportStatus::Failed) => ExportState::Failed(format!(
                "{}: {}",
                d.failure_code().unwrap_or("FAILED"),
                d.failure_message().unwrap_or("no reason given")
            )),
            _ => ExportState::InProgress,
        })
    }
}

/// A key attribute for `ExclusiveStartKey`: keys are strings, numbers or
/// binaries only.
fn key_value(value: &AttributeValue) -> Option<SdkValue> {
    Some(match value {
        AttributeValue::S(s) => SdkValue::S(s.to_string()),
        AttributeValue::N(n) => SdkValue::N(n.as_str().to_owned()),
        AttributeValue::B(b) => SdkValue::B(aws_sdk_dynamodb::primitives::Blob::new(b.clone())),
        _ => return None,
    })
}
