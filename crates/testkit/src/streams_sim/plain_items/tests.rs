//! Item calls on a plain table, straight on the state: writes with and
//! without conditions, what they return, Scan paging, and validation.

use serde_json::{Value, json};

use super::*;
use crate::streams_sim::plain::create_table;

fn state() -> State {
    let mut st = State::new();
    create_table(
        &mut st,
        &json!({
            "TableName": "leases",
            "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
        }),
    )
    .expect("created");
    st
}

fn put(st: &mut State, mut body: Value) -> Result<Value, Fault> {
    body["TableName"] = json!("leases");
    put_item(st, &body)
}

fn delete(st: &mut State, mut body: Value) -> Result<Value, Fault> {
    body["TableName"] = json!("leases");
    delete_item(st, &body)
}

fn get(st: &State, key: &str) -> Value {
    get_item(
        st,
        &json!({"TableName": "leases", "Key": {"key": {"S": key}}, "ConsistentRead": true}),
    )
    .expect("got")
}

fn lease(key: &str, counter: u64) -> Value {
    json!({"key": {"S": key}, "counter": {"N": counter.to_string()}, "owner": {"S": "w1"}})
}

fn failed(result: Result<Value, Fault>) {
    let f = result.expect_err("the condition fails");
    assert_eq!(
        (f.status, f.code, f.message.as_str()),
        (
            400,
            "ConditionalCheckFailedException",
            "The conditional request failed"
        )
    );
}

fn invalid(result: Result<Value, Fault>) -> String {
    let f = result.expect_err("invalid");
    assert_eq!(
        f.code, "com.amazon.coral.validate#ValidationException",
        "{}",
        f.message
    );
    f.message
}

#[test]
fn put_then_get_and_absent_items() {
    let mut st = state();
    assert_eq!(get(&st, "a"), json!({}));
    assert_eq!(
        put(&mut st, json!({"Item": lease("a", 1)})).unwrap(),
        json!({})
    );
    assert_eq!(get(&st, "a"), json!({"Item": lease("a", 1)}));
    // A put replaces the whole item.
    put(&mut st, json!({"Item": {"key": {"S": "a"}}})).unwrap();
    assert_eq!(get(&st, "a"), json!({"Item": {"key": {"S": "a"}}}));
}

#[test]
fn create_once_with_attribute_not_exists() {
    let mut st = state();
    let once = json!({
        "Item": lease("a", 0),
        "ConditionExpression": "attribute_not_exists(#k)",
        "ExpressionAttributeNames": {"#k": "key"},
    });
    put(&mut st, once.clone()).unwrap();
    let mut again = once;
    again["Item"] = lease("a", 7);
    failed(put(&mut st, again));
    assert_eq!(get(&st, "a"), json!({"Item": lease("a", 0)}), "unchanged");
}

#[test]
fn compare_and_set_succeeds_once_per_old_value() {
    let mut st = state();
    put(&mut st, json!({"Item": lease("a", 0)})).unwrap();
    let cas = |old: u64| {
        json!({
            "Item": lease("a", old + 1),
            "ConditionExpression": "#c = :old AND #o = :me",
            "ExpressionAttributeNames": {"#c": "counter", "#o": "owner"},
            "ExpressionAttributeValues": {":old": {"N": old.to_string()}, ":me": {"S": "w1"}},
            "ReturnValues": "ALL_OLD",
        })
    };
    assert_eq!(
        put(&mut st, cas(0)).unwrap(),
        json!({"Attributes": lease("a", 0)})
    );
    failed(put(&mut st, cas(0)));
    put(&mut st, cas(1)).unwrap();
    assert_eq!(get(&st, "a"), json!({"Item": lease("a", 2)}));
    // On an absent item every comparison with `=` fails.
    let mut other = cas(0);
    other["Item"] = lease("b", 1);
    failed(put(&mut st, other));
}

#[test]
fn conditional_deletes() {
    let mut st = state();
    put(&mut st, json!({"Item": lease("a", 3)})).unwrap();
    let del = |old: &str| {
        json!({
            "Key": {"key": {"S": "a"}},
            "ConditionExpression": "counter = :c",
            "ExpressionAttributeValues": {":c": {"N": old}},
            "ReturnValues": "ALL_OLD",
        })
    };
    failed(delete(&mut st, del("2")));
    assert_eq!(get(&st, "a"), json!({"Item": lease("a", 3)}));
    assert_eq!(
        delete(&mut st, del("3.0")).unwrap(),
        json!({"Attributes": lease("a", 3)})
    );
    assert_eq!(get(&st, "a"), json!({}));
    failed(delete(&mut st, del("3")));
    // Deleting nothing, unconditionally, is fine.
    assert_eq!(
        delete(&mut st, json!({"Key": {"key": {"S": "a"}}})).unwrap(),
        json!({})
    );
}

#[test]
fn scan_pages_in_key_order() {
    let mut st = state();
    for k in ["d", "b", "e", "a", "c"] {
        put(&mut st, json!({"Item": lease(k, 1)})).unwrap();
    }
    let table = &st.plain["leases"];
    let page = |limit: u64, start: Option<&str>| {
        let mut body = json!({"TableName": "leases", "Limit": limit, "ConsistentRead": true});
        if let Some(s) = start {
            body["ExclusiveStartKey"] = json!({"key": {"S": s}});
        }
        scan(table, &body).expect("a page")
    };
    let keys = |p: &Value| -> Vec<String> {
        p["Items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"]["S"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = page(2, None);
    assert_eq!(keys(&first), ["a", "b"]);
    assert_eq!(
        (first["Count"].clone(), first["ScannedCount"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(first["LastEvaluatedKey"], json!({"key": {"S": "b"}}));
    let last = page(2, Some("d"));
    assert_eq!(keys(&last), ["e"]);
    assert!(last.get("LastEvaluatedKey").is_none());
    // Exactly the rest: still cut, then an empty page, as in the service.
    let exact = page(2, Some("c"));
    assert_eq!(keys(&exact), ["d", "e"]);
    assert_eq!(exact["LastEvaluatedKey"], json!({"key": {"S": "e"}}));
    let empty = page(2, Some("e"));
    assert_eq!(keys(&empty), Vec::<String>::new());
    assert!(empty.get("LastEvaluatedKey").is_none());
    // A start key that is no item (deleted meanwhile) still resumes in order.
    assert_eq!(keys(&page(10, Some("bb"))), ["c", "d", "e"]);
    let all = scan(table, &json!({"TableName": "leases"})).unwrap();
    assert_eq!(keys(&all), ["a", "b", "c", "d", "e"]);
    assert!(all.get("LastEvaluatedKey").is_none());
}

#[test]
fn scan_pages_stop_at_a_megabyte() {
    let mut st = state();
    let big = "x".repeat(300 * 1024);
    for k in ["a", "b", "c", "d", "e"] {
        put(&mut st, json!({"Item": {"key": {"S": k}, "v": {"S": big}}})).unwrap();
    }
    let table = &st.plain["leases"];
    let first = scan(table, &json!({"TableName": "leases"})).unwrap();
    assert_eq!(first["Count"], 4);
    assert_eq!(first["LastEvaluatedKey"], json!({"key": {"S": "d"}}));
    let rest = scan(
        table,
        &json!({"TableName": "leases", "ExclusiveStartKey": first["LastEvaluatedKey"]}),
    )
    .unwrap();
    assert_eq!(rest["Count"], 1);
    assert!(rest.get("LastEvaluatedKey").is_none());
}

#[test]
fn scan_refuses_what_it_does_not_model() {
    let st = state();
    let table = &st.plain["leases"];
    for (extra, says) in [
        (
            json!({"FilterExpression": "a = b"}),
            "FilterExpression is not supported",
        ),
        (
            json!({"Segment": 0, "TotalSegments": 2}),
            "Segment is not supported",
        ),
        (json!({"Limit": 0}), "greater than or equal to 1"),
        (
            json!({"ConsistentRead": "yes"}),
            "ConsistentRead must be a boolean",
        ),
        (
            json!({"ExclusiveStartKey": {"key": {"N": "1"}}}),
            "starting key is invalid",
        ),
    ] {
        let mut body = json!({"TableName": "leases"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let e = invalid(scan(table, &body));
        assert!(e.contains(says), "{extra}: {e}");
    }
}

#[test]
fn writes_check_items_keys_and_options() {
    let mut st = state();
    for (body, says) in [
        (
            json!({"Item": {"counter": {"N": "1"}}}),
            "Missing the key key in the item",
        ),
        (
            json!({"Item": {"key": {"N": "1"}}}),
            "Type mismatch for key key expected: S actual: N",
        ),
        (
            json!({"Item": {"key": {"S": ""}}}),
            "cannot contain an empty string value. Key: key",
        ),
        (
            json!({"Item": {"key": {"S": "a"}, "n": {"N": "x"}}}),
            "attribute n: `x` is not a decimal",
        ),
        (json!({"Item": "a"}), "Item must be a map"),
        (json!({}), "'item' failed to satisfy constraint"),
        (
            json!({"Item": lease("a", 1), "ReturnValues": "UPDATED_NEW"}),
            "Return values set to invalid value",
        ),
        (
            json!({"Item": lease("a", 1), "Expected": {}}),
            "Expected is not supported",
        ),
        (
            json!({"Item": lease("a", 1), "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}),
            "ReturnValuesOnConditionCheckFailure",
        ),
        (
            json!({"Item": lease("a", 1), "ConditionExpression": "#x = :v", "ExpressionAttributeValues": {":v": {"N": "1"}}}),
            "attribute name: #x",
        ),
        (
            json!({"Item": lease("a", 1), "ExpressionAttributeNames": {"#k": "key"}}),
            "can only be specified when using expressions",
        ),
    ] {
        let e = invalid(put(&mut st, body.clone()));
        assert!(e.contains(says), "{body}: {e}");
    }
    let e = invalid(put(
        &mut st,
        json!({"Item": {"key": {"S": "a"}, "v": {"S": "x".repeat(401 * 1024)}}}),
    ));
    assert!(e.contains("Item size has exceeded"), "{e}");
    let e = invalid(delete(
        &mut st,
        json!({"Key": {"key": {"S": "a"}, "x": {"S": "b"}}}),
    ));
    assert!(e.contains("does not match the schema"), "{e}");
    let e = invalid(get_item(
        &st,
        &json!({"TableName": "leases", "Key": {"key": {"S": "a"}}, "ProjectionExpression": "a"}),
    ));
    assert!(e.contains("ProjectionExpression is not supported"), "{e}");
    assert!(st.plain["leases"].items.is_empty(), "nothing was written");
}

#[test]
fn unknown_and_scripted_tables() {
    let mut st = state();
    let body = json!({"TableName": "nope", "Item": lease("a", 1)});
    let f = put_item(&mut st, &body).unwrap_err();
    assert_eq!(f.code, "ResourceNotFoundException");
    crate::streams_sim::add_stream(&mut st, "orders");
    let body = json!({"TableName": "orders", "Key": {"key": {"S": "a"}}});
    let e = invalid(get_item(&st, &body));
    assert!(
        e.contains(
            "GetItem serves only tables created with CreateTable; orders is a scripted table"
        ),
        "{e}"
    );
    // By ARN, as the API allows.
    let arn = st.plain["leases"].arn.clone();
    put_item(&mut st, &json!({"TableName": arn, "Item": lease("a", 1)})).unwrap();
    assert_eq!(get(&st, "a"), json!({"Item": lease("a", 1)}));
}
