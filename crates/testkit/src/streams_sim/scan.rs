//! `Scan`: parallel segments over the partition-key hash space, pages cut
//! at `Limit` items or 1 MB, `LastEvaluatedKey` paging that also resumes
//! from the key of an item deleted meanwhile, and consumed capacity.

use std::ops::Bound;

use serde_json::{Value, json};

use super::keys::{ItemKey, item_size, segment_of, segment_start};
use super::state::{Fault, State};
use super::table::{self, Table};

/// The service stops a page once it has read this much.
pub(crate) const PAGE_BYTES: u64 = 1024 * 1024;
/// One read unit covers this much of a scan (rounded up over the page).
const READ_UNIT_BYTES: u64 = 4096;

/// Parameters that would change what a page holds; refused rather than
/// ignored, so a test never passes on results the service would filter.
pub(crate) const UNSUPPORTED: &[&str] = &[
    "IndexName",
    "Select",
    "FilterExpression",
    "ScanFilter",
    "ConditionalOperator",
    "ProjectionExpression",
    "AttributesToGet",
];

struct Request<'a> {
    table: &'a Table,
    segment: u64,
    total: u64,
    limit: usize,
    start: Option<ItemKey>,
    capacity: &'a str,
    consistent: bool,
}

pub(crate) fn scan(st: &State, body: &Value) -> Result<Value, Fault> {
    let req = parse(st, body)?;
    let from = match &req.start {
        Some(key) => Bound::Excluded(key.clone()),
        None => Bound::Included(ItemKey::first_at(segment_start(req.segment, req.total))),
    };
    let mut in_segment = req
        .table
        .items
        .range((from, Bound::Unbounded))
        .take_while(|(k, _)| segment_of(k.hash, req.total) == req.segment)
        .peekable();
    let mut items = Vec::new();
    let mut bytes = 0;
    let mut last = None;
    while items.len() < req.limit && bytes < PAGE_BYTES {
        let Some((_, item)) = in_segment.next() else {
            break;
        };
        bytes += item_size(item);
        items.push(item.clone());
        last = Some(item);
    }
    let mut out = json!({
        "Items": items,
        "Count": items.len(),
        "ScannedCount": items.len(),
    });
    if in_segment.peek().is_some()
        && let Some(last) = last
    {
        out["LastEvaluatedKey"] = req.table.key_attributes(last);
    }
    if req.capacity != "NONE" {
        let per_unit = if req.consistent { 1.0 } else { 0.5 };
        let units = bytes.div_ceil(READ_UNIT_BYTES) as f64 * per_unit;
        out["ConsumedCapacity"] = json!({"TableName": req.table.name, "CapacityUnits": units});
        if req.capacity == "INDEXES" {
            out["ConsumedCapacity"]["Table"] = json!({"CapacityUnits": units});
        }
    }
    Ok(out)
}

fn parse<'a>(st: &'a State, body: &'a Value) -> Result<Request<'a>, Fault> {
    if !body.is_object() {
        return Err(Fault::validation("The request body is not a JSON object"));
    }
    let name = body["TableName"]
        .as_str()
        .ok_or_else(|| Fault::validation(constraint("tableName", "null", "not be null")))?;
    if let Some(p) = UNSUPPORTED.iter().find(|p| body.get(**p).is_some()) {
        return Err(Fault::validation(format!(
            "{p} is not supported by the simulator"
        )));
    }
    let table = st.table(name).ok_or_else(|| table::not_found(name))?;
    let (segment, total) = segments(body)?;
    let limit = limit(body)?;
    let capacity = match body.get("ReturnConsumedCapacity") {
        None => "NONE",
        Some(v) => match v.as_str() {
            Some(c @ ("NONE" | "TOTAL" | "INDEXES")) => c,
            _ => {
                return Err(Fault::validation(constraint(
                    "returnConsumedCapacity",
                    &v.to_string(),
                    "satisfy enum value set: [INDEXES, TOTAL, NONE]",
                )));
            }
        },
    };
    let consistent = match body.get("ConsistentRead") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| Fault::validation("ConsistentRead must be a boolean"))?,
    };
    let start = match body.get("ExclusiveStartKey") {
        None => None,
        Some(key) => {
            let key = table.key_of(key, true).map_err(|e| {
                Fault::validation(format!("The provided starting key is invalid: {e}"))
            })?;
            if segment_of(key.hash, total) != segment {
                return Err(Fault::validation(
                    "The provided Exclusive start key does not map to the provided Segment and TotalSegments values.",
                ));
            }
            Some(key)
        }
    };
    Ok(Request {
        table,
        segment,
        total,
        limit,
        start,
        capacity,
        consistent,
    })
}

fn segments(body: &Value) -> Result<(u64, u64), Fault> {
    let int = |field: &str, name: &str| -> Result<Option<i64>, Fault> {
        body.get(field)
            .map(|v| {
                v.as_i64().ok_or_else(|| {
                    Fault::validation(constraint(name, &v.to_string(), "be an integer"))
                })
            })
            .transpose()
    };
    match (
        int("Segment", "segment")?,
        int("TotalSegments", "totalSegments")?,
    ) {
        (None, None) => Ok((0, 1)),
        (Some(_), None) => Err(Fault::validation(
            "The TotalSegments parameter is required but was not present in the request when Segment parameter is present",
        )),
        (None, Some(_)) => Err(Fault::validation(
            "The Segment parameter is required but was not present in the request when parameter TotalSegments is present",
        )),
        (Some(segment), Some(total)) => {
            if !(1..=1_000_000).contains(&total) {
                return Err(Fault::validation(constraint(
                    "totalSegments",
                    &total.to_string(),
                    "have value between 1 and 1000000",
                )));
            }
            if !(0..=999_999).contains(&segment) {
                return Err(Fault::validation(constraint(
                    "segment",
                    &segment.to_string(),
                    "have value between 0 and 999999",
                )));
            }
            if segment >= total {
                return Err(Fault::validation(format!(
                    "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: {segment} is not less than TotalSegments: {total}"
                )));
            }
            Ok((segment as u64, total as u64))
        }
    }
}

/// The validation layer's wording for a field that breaks a constraint.
/// A Scan's `Limit`: at least 1; no limit when absent.
pub(crate) fn limit(body: &Value) -> Result<usize, Fault> {
    match body.get("Limit") {
        None => Ok(usize::MAX),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => Err(Fault::validation(constraint(
                "limit",
                &v.to_string(),
                "have value greater than or equal to 1",
            ))),
        },
    }
}

pub(crate) fn constraint(field: &str, value: &str, rule: &str) -> String {
    format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must {rule}"
    )
}
