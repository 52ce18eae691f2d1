//! [`TableApi`]: the DynamoDB calls a snapshot makes, and nothing else, so
//! the simulator and other back ends can stand in for the SDK.

use std::future::Future;

use dynamo_cdc_core::{AttributeValue, Item, parse_item};

use crate::streams::api::{ApiError, ApiErrorKind};

/// What DescribeTable says about a table, as far as a snapshot cares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableInfo {
    /// The table's ARN.
    pub arn: String,
    /// The key attributes: the partition key, then the sort key if any.
    pub key_names: Vec<String>,
    /// DynamoDB's estimate of the item count (refreshed every ~6 hours).
    pub item_count: u64,
    /// DynamoDB's estimate of the table's size in bytes.
    pub size_bytes: u64,
    /// `StreamViewType` of the enabled stream; `None` without a stream.
    pub stream_view: Option<String>,
    /// The enabled stream's ARN (`LatestStreamArn`); `None` without one.
    pub stream_arn: Option<String>,
}

impl TableInfo {
    /// True when the stream carries the item after each change: a change
    /// then stands for the whole item, which the snapshot relies on when
    /// it drops a key the stream touched.
    pub fn stream_has_new_images(&self) -> bool {
        matches!(
            self.stream_view.as_deref(),
            Some("NEW_IMAGE" | "NEW_AND_OLD_IMAGES")
        )
    }
}

/// One Scan call of a parallel scan.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanRequest {
    /// The table.
    pub table: String,
    /// This segment (0-based).
    pub segment: u32,
    /// All segments.
    pub total_segments: u32,
    /// Resume after this key; `None` at the segment's start.
    pub exclusive_start: Option<Item>,
    /// Most items per page.
    pub limit: u32,
}

/// A Scan answer, read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanPage {
    /// The items, each with its DynamoDB JSON as the service sent it.
    pub items: Vec<Item>,
    /// Items that could not be read: their JSON and why.
    pub unreadable: Vec<(String, String)>,
    /// Where the next page starts; `None` on the segment's last page.
    pub last_key: Option<Item>,
    /// Read capacity units the call consumed.
    pub consumed: f64,
    /// Bytes of item JSON in the answer.
    pub bytes: u64,
}

impl ScanPage {
    /// Reads a Scan answer body (`{"Items": [...], "LastEvaluatedKey":
    /// {...}, "ConsumedCapacity": {"CapacityUnits": n}}`). An item that
    /// does not parse is kept in `unreadable`, not fatal: it becomes a dead
    /// letter and the other items flow.
    ///
    /// # Errors
    /// When the body is not a Scan answer at all.
    pub fn parse(body: &[u8]) -> Result<ScanPage, ApiError> {
        #[derive(serde::Deserialize)]
        struct Raw<'a> {
            #[serde(rename = "Items", borrow, default)]
            items: Vec<&'a serde_json::value::RawValue>,
            #[serde(rename = "LastEvaluatedKey", borrow, default)]
            last_key: Option<&'a serde_json::value::RawValue>,
            #[serde(rename = "ConsumedCapacity", default)]
            consumed: Option<Consumed>,
        }
        #[derive(serde::Deserialize)]
        struct Consumed {
            #[serde(rename = "CapacityUnits", default)]
            units: f64,
        }
        let fail = |message: String| ApiError {
            kind: ApiErrorKind::Fatal,
            operation: "Scan",
            message,
        };
        let raw: Raw<'_> = serde_json::from_slice(body)
            .map_err(|e| fail(format!("the answer is not a Scan page: {e}")))?;
        let mut page = ScanPage {
            consumed: raw.consumed.map_or(0.0, |c| c.units),
            ..ScanPage::default()
        };
        for (i, item) in raw.items.iter().enumerate() {
            let text = item.get();
            page.bytes += text.len() as u64;
            match parse_item(text, &format!("Items[{i}]")) {
                Ok(item) => page.items.push(item),
                Err(e) => page.unreadable.push((text.to_owned(), e.to_string())),
            }
        }
        if let Some(key) = raw.last_key {
            let key = parse_item(key.get(), "LastEvaluatedKey")
                .map_err(|e| fail(format!("unreadable LastEvaluatedKey: {e}")))?;
            page.last_key = Some(key);
        }
        Ok(page)
    }
}

/// The key attributes of `item` in one text, the same for a scanned item
/// and a stream record's `Keys`; `None` when a key attribute is missing.
pub fn key_text(item: &Item, key_names: &[String]) -> Option<String> {
    let mut out = String::new();
    for name in key_names {
        let value: &AttributeValue = item.get(name)?;
        out.push_str(name);
        out.push('=');
        value.write_ddb_json(&mut out);
        out.push('\u{1}');
    }
    Some(out)
}

/// The key attributes of `item` as an item of their own.
pub fn key_of(item: &Item, key_names: &[String]) -> Item {
    let entries = key_names
        .iter()
        .filter_map(|n| item.get(n).map(|v| (n.as_str().into(), v.clone())))
        .collect();
    Item::from_entries(entries).unwrap_or_default()
}

/// `ExportTableToPointInTime` of a table, as of now, in DynamoDB JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRequest {
    /// The table's ARN.
    pub table_arn: String,
    /// The bucket.
    pub bucket: String,
    /// The key prefix in the bucket (may be empty).
    pub prefix: String,
    /// The same for every request of one snapshot plan: asked again (after
    /// an answer that was lost, or a crash before the export's ARN was
    /// kept), DynamoDB answers with the export it started then, for eight
    /// hours, instead of starting another.
    pub client_token: String,
}

/// Where an export stands (`DescribeExport`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportState {
    /// Still being written.
    InProgress,
    /// Written: where its manifest summary is.
    Completed {
        /// The bucket.
        bucket: String,
        /// The bucket-relative key of `manifest-summary.json`.
        manifest_key: String,
        /// Items exported.
        item_count: u64,
    },
    /// Failed, with the service's reason.
    Failed(String),
}

/// The DynamoDB calls a snapshot makes.
pub trait TableApi: Send + Sync + 'static {
    /// The table's keys, size estimates and stream.
    fn describe_table(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<TableInfo, ApiError>> + Send;

    /// One page of one segment, with the capacity it consumed.
    fn scan(
        &self,
        request: &ScanRequest,
    ) -> impl Future<Output = Result<ScanPage, ApiError>> + Send;

    /// Whether point-in-time recovery (which an export needs) is on.
    fn point_in_time_recovery(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<bool, ApiError>> + Send;

    /// Starts an export; its ARN.
    fn export_table(
        &self,
        request: &ExportRequest,
    ) -> impl Future<Output = Result<String, ApiError>> + Send;

    /// Where the export stands.
    fn describe_export(
        &self,
        export_arn: &str,
    ) -> impl Future<Output = Result<ExportState, ApiError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_page_reads_items_keys_and_capacity_and_keeps_bad_items_apart() {
        let body = br#"{"Items":[{"pk":{"S":"a"},"n":{"N":"1.50"}},{"pk":{"X":"?"}}],
            "Count":2,"LastEvaluatedKey":{"pk":{"S":"a"}},
            "ConsumedCapacity":{"TableName":"t","CapacityUnits":2.5}}"#;
        let page = ScanPage::parse(body).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.unreadable.len(), 1);
        assert!(
            page.unreadable[0].1.contains("Items[1]"),
            "{:?}",
            page.unreadable
        );
        assert_eq!(page.consumed, 2.5);
        let keys = ["pk".to_owned()];
        assert_eq!(
            key_text(page.last_key.as_ref().unwrap(), &keys),
            key_text(&page.items[0], &keys)
        );
        assert!(ScanPage::parse(b"<html>").is_err());
        let last = ScanPage::parse(br#"{"Items":[]}"#).unwrap();
        assert!(last.last_key.is_none() && last.items.is_empty());
    }

    #[test]
    fn only_streams_with_new_images_can_be_stitched_to_a_scan() {
        let with = |view: Option<&str>| TableInfo {
            stream_view: view.map(str::to_owned),
            ..TableInfo::default()
        };
        assert!(with(Some("NEW_AND_OLD_IMAGES")).stream_has_new_images());
        assert!(with(Some("NEW_IMAGE")).stream_has_new_images());
        assert!(!with(Some("KEYS_ONLY")).stream_has_new_images());
        assert!(!with(Some("OLD_IMAGE")).stream_has_new_images());
        assert!(!with(None).stream_has_new_images());
    }

    #[test]
    fn key_texts_tell_types_and_sort_keys_apart() {
        let item = |json: &str| parse_item(json, "t").unwrap();
        let names = ["pk".to_owned(), "sk".to_owned()];
        let a = key_text(
            &item(r#"{"pk":{"S":"1"},"sk":{"N":"2"},"x":{"S":"y"}}"#),
            &names,
        );
        let b = key_text(&item(r#"{"pk":{"N":"1"},"sk":{"N":"2"}}"#), &names);
        let c = key_text(&item(r#"{"pk":{"S":"1"},"sk":{"N":"2"}}"#), &names);
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert_eq!(key_text(&item(r#"{"pk":{"S":"1"}}"#), &names), None);
    }
}
