//! Item calls on plain tables: `GetItem`, `PutItem` and `DeleteItem` (the
//! writes optionally conditional, [`super::condition`]) and `Scan` in key
//! order with `Limit` paging.
//!
//! A conditional write evaluates its condition against the item as it is
//! when the call holds the state lock, and writes under the same lock: the
//! compare and the set are one step. A write refused by its condition
//! answers `ConditionalCheckFailedException` and changes nothing.
//! `ReturnValues` may be NONE or ALL_OLD; `ReturnConsumedCapacity` is
//! accepted and not answered (it changes no item). Legacy parameters
//! (`Expected`, `AttributesToGet`...) and projections are refused.

use std::ops::Bound;

use serde_json::{Map, Value, json};

use super::attr;
use super::condition::{self, Condition};
use super::keys::item_size;
use super::plain::{self, PlainTable, empty_key};
use super::scan::{PAGE_BYTES, UNSUPPORTED, constraint, limit};
use super::state::{Fault, State};

/// The service's cap on an item's size.
const MAX_ITEM_BYTES: u64 = 400 * 1024;

pub(crate) fn get_item(st: &State, body: &Value) -> Result<Value, Fault> {
    refuse(
        body,
        &[
            "ProjectionExpression",
            "AttributesToGet",
            "ExpressionAttributeNames",
        ],
    )?;
    consistent_read(body)?;
    let table = plain::get(st, body, "GetItem")?;
    let key = table.key_of(required(body, "Key", "key")?)?;
    Ok(match table.items.get(&key) {
        Some(item) => json!({ "Item": item }),
        None => json!({}),
    })
}

pub(crate) fn put_item(st: &mut State, body: &Value) -> Result<Value, Fault> {
    let all_old = write_options(body)?;
    let item = required(body, "Item", "item")?
        .as_object()
        .ok_or_else(|| Fault::validation("Item must be a map of attribute values"))?;
    for (name, value) in item {
        attr::check(value).map_err(|e| {
            Fault::validation(format!(
                "One or more parameter values were invalid: attribute {name}: {e}"
            ))
        })?;
    }
    if item_size(&Value::Object(item.clone())) > MAX_ITEM_BYTES {
        return Err(Fault::validation(
            "Item size has exceeded the maximum allowed size",
        ));
    }
    let condition = condition_of(body)?;
    let table = plain::find_mut(st, body, "PutItem")?;
    let key = item_key(table, item)?;
    check(condition.as_ref(), table.items.get(&key))?;
    let old = table.items.insert(key, item.clone());
    Ok(answer(all_old, old))
}

pub(crate) fn delete_item(st: &mut State, body: &Value) -> Result<Value, Fault> {
    let all_old = write_options(body)?;
    let condition = condition_of(body)?;
    let table = plain::find_mut(st, body, "DeleteItem")?;
    let key = table.key_of(required(body, "Key", "key")?)?;
    check(condition.as_ref(), table.items.get(&key))?;
    let old = table.items.remove(&key);
    Ok(answer(all_old, old))
}

/// `Scan` of a plain table: items in key order after `ExclusiveStartKey`,
/// a page ending at `Limit` items or 1 MB. As in the service, a page cut
/// short carries `LastEvaluatedKey` even when nothing follows (so a page
/// of exactly the remaining items is followed by an empty one).
pub(crate) fn scan(table: &PlainTable, body: &Value) -> Result<Value, Fault> {
    refuse(body, UNSUPPORTED)?;
    refuse(
        body,
        &[
            "Segment",
            "TotalSegments",
            "ExpressionAttributeNames",
            "ExpressionAttributeValues",
            "ExclusiveStartTableName",
        ],
    )?;
    consistent_read(body)?;
    let limit = limit(body)?;
    let from = match body.get("ExclusiveStartKey") {
        None => Bound::Unbounded,
        Some(key) => Bound::Excluded(table.key_of(key).map_err(|f| {
            Fault::validation(format!(
                "The provided starting key is invalid: {}",
                f.message
            ))
        })?),
    };
    let mut items = Vec::new();
    let mut bytes = 0;
    for item in table.items.range((from, Bound::Unbounded)).map(|(_, i)| i) {
        bytes += item_size(&Value::Object(item.clone()));
        items.push(item);
        if items.len() == limit || bytes >= PAGE_BYTES {
            break;
        }
    }
    // The service stops once it has read `Limit` items (or 1 MB) without
    // looking further: reaching either is a cut, even at the very end.
    let cut = items.len() == limit || bytes >= PAGE_BYTES;
    let mut out = json!({
        "Items": items,
        "Count": items.len(),
        "ScannedCount": items.len(),
    });
    if cut && let Some(last) = items.last() {
        let mut key = Map::new();
        key.insert(
            table.hash_key.clone(),
            last.get(&table.hash_key).cloned().unwrap_or_default(),
        );
        out["LastEvaluatedKey"] = Value::Object(key);
    }
    Ok(out)
}

/// The hash key of an item to put: present, a non-empty string.
fn item_key(table: &PlainTable, item: &Map<String, Value>) -> Result<String, Fault> {
    let name = &table.hash_key;
    let value = item.get(name).ok_or_else(|| {
        Fault::validation(format!(
            "One or more parameter values were invalid: Missing the key {name} in the item"
        ))
    })?;
    match attr::parts(value) {
        Some(("S", Value::String(s))) if s.is_empty() => Err(empty_key(name)),
        Some(("S", Value::String(s))) => Ok(s.clone()),
        _ => Err(Fault::validation(format!(
            "One or more parameter values were invalid: Type mismatch for key {name} expected: S actual: {}",
            attr::type_name(value)
        ))),
    }
}

/// The write's condition, if any, parsed with its placeholders.
fn condition_of(body: &Value) -> Result<Option<Condition>, Fault> {
    refuse(body, &["Expected", "ConditionalOperator"])?;
    condition::from_request(body).map_err(Fault::validation)
}

/// Applies a condition to the current item (absent: every attribute absent).
fn check(condition: Option<&Condition>, current: Option<&Map<String, Value>>) -> Result<(), Fault> {
    let empty = Map::new();
    match condition {
        Some(c) if !c.holds(current.unwrap_or(&empty)) => Err(Fault::client(
            "ConditionalCheckFailedException",
            "The conditional request failed",
        )),
        _ => Ok(()),
    }
}

/// Checks a write's `ReturnValues` (and the on-failure variant); whether
/// the old item is to be returned.
fn write_options(body: &Value) -> Result<bool, Fault> {
    if !body.is_object() {
        return Err(Fault::validation("The request body is not a JSON object"));
    }
    let all_old = match body.get("ReturnValues").map(Value::as_str) {
        None | Some(Some("NONE")) => false,
        Some(Some("ALL_OLD")) => true,
        Some(other) => {
            return Err(Fault::validation(format!(
                "Return values set to invalid value: {} (a put or delete takes NONE or ALL_OLD)",
                other.unwrap_or("not a string")
            )));
        }
    };
    match body
        .get("ReturnValuesOnConditionCheckFailure")
        .map(Value::as_str)
    {
        None | Some(Some("NONE")) => Ok(all_old),
        Some(_) => Err(Fault::validation(
            "ReturnValuesOnConditionCheckFailure other than NONE is not supported by the simulator",
        )),
    }
}

fn answer(all_old: bool, old: Option<Map<String, Value>>) -> Value {
    match old {
        Some(old) if all_old => json!({ "Attributes": old }),
        _ => json!({}),
    }
}

fn required<'a>(body: &'a Value, field: &str, member: &str) -> Result<&'a Value, Fault> {
    body.get(field)
        .ok_or_else(|| Fault::validation(constraint(member, "null", "not be null")))
}

fn consistent_read(body: &Value) -> Result<(), Fault> {
    match body.get("ConsistentRead") {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(Fault::validation("ConsistentRead must be a boolean")),
    }
}

/// Refuses parameters that would change the answer in ways plain tables
/// do not model, naming the first one present.
fn refuse(body: &Value, unsupported: &[&str]) -> Result<(), Fault> {
    match unsupported.iter().find(|p| body.get(**p).is_some()) {
        Some(p) => Err(Fault::validation(format!(
            "{p} is not supported by the simulator's plain tables"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
