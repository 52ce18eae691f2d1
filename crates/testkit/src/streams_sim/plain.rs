//! Plain tables: tables a client creates through `CreateTable`, with a
//! single string hash key, no stream and conditional writes
//! ([`super::plain_items`]). They are what a lease table needs: several
//! processes coordinating through compare-and-set writes.
//!
//! Each request is applied whole under the simulator's one state lock, so
//! concurrent calls take effect one at a time in the order they get the
//! lock: every answer reflects every write answered before it was sent
//! (linearizable), which concurrent conditional writes rely on.
//!
//! The shapes follow the service: `TableDescription` and `Table` as
//! `CreateTable` and `DescribeTable` word them, `ResourceInUseException`
//! for a name already taken (by a plain or a scripted table). What plain
//! tables do not model (a sort key, other key types, indexes, streams) is
//! refused with a ValidationException naming it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::clock::now_secs;
use super::keys::item_size;
use super::scan::constraint;
use super::state::{Fault, State};
use super::table::{self, table_id};
use super::{StreamSim, lock};

/// What `CreateTable` may carry that would change how a table behaves but
/// plain tables do not model.
const UNSUPPORTED_CREATE: &[&str] = &[
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "StreamSpecification",
];

pub(crate) struct PlainTable {
    pub name: String,
    pub arn: String,
    pub id: String,
    pub hash_key: String,
    /// `PAY_PER_REQUEST`, or `PROVISIONED` with its read and write units.
    pub billing: Billing,
    pub created: f64,
    /// By hash key value, so Scan returns items in key order.
    pub items: BTreeMap<String, Map<String, Value>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Billing {
    PayPerRequest,
    Provisioned { read: u64, write: u64 },
}

impl PlainTable {
    /// The table as `TableDescription` (CreateTable) and `Table`
    /// (DescribeTable) hold it.
    pub(crate) fn describe(&self) -> Value {
        let size: u64 = self
            .items
            .values()
            .map(|item| item_size(&Value::Object(item.clone())))
            .sum();
        let (mode, read, write) = match self.billing {
            Billing::PayPerRequest => ("PAY_PER_REQUEST", 0, 0),
            Billing::Provisioned { read, write } => ("PROVISIONED", read, write),
        };
        json!({
            "TableName": self.name,
            "TableArn": self.arn,
            "TableId": self.id,
            "TableStatus": "ACTIVE",
            "KeySchema": [{"AttributeName": self.hash_key, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": self.hash_key, "AttributeType": "S"}],
            "ItemCount": self.items.len(),
            "TableSizeBytes": size,
            "BillingModeSummary": {"BillingMode": mode},
            "ProvisionedThroughput": {
                "NumberOfDecreasesToday": 0,
                "ReadCapacityUnits": read,
                "WriteCapacityUnits": write,
            },
            "DeletionProtectionEnabled": false,
            "CreationDateTime": self.created,
        })
    }

    /// The hash key value of a `Key` map, which must hold exactly the key
    /// attribute, as a non-empty string.
    pub(crate) fn key_of(&self, key: &Value) -> Result<String, Fault> {
        let mismatch = || Fault::validation("The provided key element does not match the schema");
        let map = key.as_object().ok_or_else(mismatch)?;
        if map.len() != 1 {
            return Err(mismatch());
        }
        let value = map.get(&self.hash_key).ok_or_else(mismatch)?;
        match value.get("S").and_then(Value::as_str) {
            Some("") => Err(empty_key(&self.hash_key)),
            Some(s) if value.as_object().is_some_and(|m| m.len() == 1) => Ok(s.to_owned()),
            _ => Err(mismatch()),
        }
    }
}

/// The service's wording for an empty string in a key attribute.
pub(crate) fn empty_key(name: &str) -> Fault {
    Fault::validation(format!(
        "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty string value. Key: {name}"
    ))
}

/// The request's `TableName`, which every plain-table call carries.
pub(crate) fn table_name(body: &Value) -> Result<&str, Fault> {
    if !body.is_object() {
        return Err(Fault::validation("The request body is not a JSON object"));
    }
    body["TableName"]
        .as_str()
        .ok_or_else(|| Fault::validation(constraint("tableName", "null", "not be null")))
}

/// The plain table a request names (by name or ARN, as the API takes
/// either), if there is one.
pub(crate) fn find<'a>(st: &'a State, body: &Value) -> Option<&'a PlainTable> {
    let name = body.get("TableName")?.as_str()?;
    st.plain
        .get(name)
        .or_else(|| st.plain.values().find(|t| t.arn == name))
}

/// The plain table an item call names, to write; a scripted table gets a
/// message saying where its items come from, since the two kinds do not mix.
pub(crate) fn find_mut<'a>(
    st: &'a mut State,
    body: &Value,
    op: &str,
) -> Result<&'a mut PlainTable, Fault> {
    let name = table_name(body)?;
    let found = st
        .plain
        .values()
        .find(|t| t.name == name || t.arn == name)
        .map(|t| t.name.clone());
    match found {
        Some(key) => st.plain.get_mut(&key).ok_or_else(|| table::not_found(name)),
        None if scripted(st, name) => Err(scripted_table(op, name)),
        None => Err(table::not_found(name)),
    }
}

/// As [`find_mut`], for calls that only read.
pub(crate) fn get<'a>(st: &'a State, body: &Value, op: &str) -> Result<&'a PlainTable, Fault> {
    let name = table_name(body)?;
    match find(st, body) {
        Some(t) => Ok(t),
        None if scripted(st, name) => Err(scripted_table(op, name)),
        None => Err(table::not_found(name)),
    }
}

fn scripted_table(op: &str, name: &str) -> Fault {
    Fault::validation(format!(
        "{op} serves only tables created with CreateTable; {name} is a scripted table (its items come from StreamSim::put_item)"
    ))
}

/// Whether a table name belongs to a scripted table or stream.
fn scripted(st: &State, name: &str) -> bool {
    st.table(name).is_some() || st.streams.values().any(|s| s.table == name)
}

/// `CreateTable`: a plain table keyed by one string hash key, ACTIVE at
/// once (there is nothing to wait for).
pub(crate) fn create_table(st: &mut State, body: &Value) -> Result<Value, Fault> {
    let name = table_name(body)?;
    check_table_name(name)?;
    if let Some(p) = UNSUPPORTED_CREATE.iter().find(|p| body.get(**p).is_some()) {
        return Err(Fault::validation(format!(
            "{p} is not supported by the simulator's plain tables"
        )));
    }
    let hash_key = key_schema(body)?;
    let billing = billing(body)?;
    if st.plain.contains_key(name) || scripted(st, name) {
        return Err(Fault::client(
            "ResourceInUseException",
            format!("Table already exists: {name}"),
        ));
    }
    let table = PlainTable {
        name: name.to_owned(),
        arn: format!("arn:aws:dynamodb:us-east-1:123456789012:table/{name}"),
        id: table_id(name),
        hash_key,
        billing,
        created: now_secs(),
        items: BTreeMap::new(),
    };
    let description = table.describe();
    st.plain.insert(name.to_owned(), table);
    Ok(json!({ "TableDescription": description }))
}

fn check_table_name(name: &str) -> Result<(), Fault> {
    let rule = if name.len() < 3 {
        "have length greater than or equal to 3"
    } else if name.len() > 255 {
        "have length less than or equal to 255"
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        "satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    } else {
        return Ok(());
    };
    Err(Fault::validation(constraint("tableName", name, rule)))
}

/// The hash key's name, from `KeySchema` and `AttributeDefinitions`, which
/// must describe a single HASH key of type S.
fn key_schema(body: &Value) -> Result<String, Fault> {
    let schema = body["KeySchema"]
        .as_array()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Fault::validation(constraint("keySchema", "null", "not be null")))?;
    let element = |e: &Value| -> Result<(String, String), Fault> {
        match (e["AttributeName"].as_str(), e["KeyType"].as_str()) {
            (Some(n), Some(k)) if !n.is_empty() => Ok((n.to_owned(), k.to_owned())),
            _ => Err(Fault::validation(format!(
                "a KeySchema element needs AttributeName and KeyType, got {e}"
            ))),
        }
    };
    let keys = schema.iter().map(element).collect::<Result<Vec<_>, _>>()?;
    let [(hash_key, kind)] = keys.as_slice() else {
        return Err(Fault::validation(format!(
            "the simulator's plain tables support only a single HASH key; KeySchema has {} elements",
            keys.len()
        )));
    };
    if kind != "HASH" {
        return Err(Fault::validation(format!(
            "the simulator's plain tables support only a single HASH key; {hash_key} has KeyType {kind}"
        )));
    }
    let definitions = body["AttributeDefinitions"].as_array().ok_or_else(|| {
        Fault::validation(constraint("attributeDefinitions", "null", "not be null"))
    })?;
    let names: Vec<&str> = definitions
        .iter()
        .filter_map(|d| d["AttributeName"].as_str())
        .collect();
    let Some(definition) = definitions
        .iter()
        .find(|d| d["AttributeName"].as_str() == Some(hash_key.as_str()))
    else {
        return Err(Fault::validation(format!(
            "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [{hash_key}], AttributeDefinitions: [{}]",
            names.join(", ")
        )));
    };
    if definitions.len() != 1 {
        return Err(Fault::validation(
            "One or more parameter values were invalid: Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
        ));
    }
    match definition["AttributeType"].as_str() {
        Some("S") => Ok(hash_key.clone()),
        Some(other @ ("N" | "B")) => Err(Fault::validation(format!(
            "the simulator's plain tables support only a key of type S; {hash_key} has AttributeType {other}"
        ))),
        _ => Err(Fault::validation(format!(
            "1 validation error detected: Value '{}' at 'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]",
            definition["AttributeType"]
        ))),
    }
}

/// `BillingMode` (PROVISIONED when absent) and its throughput, checked as
/// the service checks them.
fn billing(body: &Value) -> Result<Billing, Fault> {
    let throughput = body.get("ProvisionedThroughput");
    match body.get("BillingMode").map(|m| m.as_str()) {
        Some(Some("PAY_PER_REQUEST")) => match throughput {
            None => Ok(Billing::PayPerRequest),
            Some(_) => Err(Fault::validation(
                "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
            )),
        },
        None | Some(Some("PROVISIONED")) => {
            let units = |field: &str| {
                throughput
                    .and_then(|t| t.get(field))
                    .and_then(Value::as_u64)
                    .filter(|n| *n >= 1)
            };
            match (units("ReadCapacityUnits"), units("WriteCapacityUnits")) {
                (Some(read), Some(write)) => Ok(Billing::Provisioned { read, write }),
                _ => Err(Fault::validation(
                    "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified (and at least 1) when BillingMode is PROVISIONED",
                )),
            }
        }
        Some(other) => Err(Fault::validation(constraint(
            "billingMode",
            &other.map_or_else(|| "null".to_owned(), str::to_owned),
            "satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]",
        ))),
    }
}

impl StreamSim {
    /// The items of a table created through `CreateTable`, as DynamoDB-JSON
    /// maps in key order: what a test checks after clients wrote to it.
    ///
    /// # Panics
    /// When there is no such plain table.
    pub fn plain_items(&self, table: &str) -> Vec<Value> {
        let st = lock(&self.shared.state);
        let t = st
            .plain
            .get(table)
            .unwrap_or_else(|| panic!("no plain table {table}"));
        t.items.values().cloned().map(Value::Object).collect()
    }

    /// The names of the tables created through `CreateTable`, in order.
    pub fn plain_tables(&self) -> Vec<String> {
        lock(&self.shared.state).plain.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(st: &mut State, body: Value) -> Result<Value, Fault> {
        create_table(st, &body)
    }

    fn lease_table(name: &str) -> Value {
        json!({
            "TableName": name,
            "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
        })
    }

    fn says(message: &str, part: &str) {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }

    fn refused(st: &mut State, body: Value) -> String {
        let f = create(st, body).expect_err("refused");
        assert_eq!(f.status, 400);
        f.message
    }

    #[test]
    fn creates_an_active_table_described_like_the_service() {
        let mut st = State::new();
        let out = create(&mut st, lease_table("leases")).unwrap();
        let t = &out["TableDescription"];
        assert_eq!(t["TableName"], "leases");
        assert_eq!(t["TableStatus"], "ACTIVE");
        assert_eq!(
            t["TableArn"],
            "arn:aws:dynamodb:us-east-1:123456789012:table/leases"
        );
        assert_eq!(
            t["KeySchema"],
            json!([{"AttributeName": "key", "KeyType": "HASH"}])
        );
        assert_eq!(
            t["AttributeDefinitions"],
            json!([{"AttributeName": "key", "AttributeType": "S"}])
        );
        assert_eq!(t["ItemCount"], 0);
        assert_eq!(t["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST");
        assert!(t["CreationDateTime"].as_f64().unwrap() > 1.7e9);
        let found = find(&st, &json!({"TableName": t["TableArn"]})).expect("by ARN");
        assert_eq!(found.describe(), *t);
    }

    #[test]
    fn a_taken_name_is_in_use() {
        let mut st = State::new();
        create(&mut st, lease_table("leases")).unwrap();
        let f = create(&mut st, lease_table("leases")).unwrap_err();
        assert_eq!(
            (f.code, f.message.as_str()),
            ("ResourceInUseException", "Table already exists: leases")
        );
        // A scripted stream's table counts too.
        super::super::add_stream(&mut st, "orders");
        let f = create(&mut st, lease_table("orders")).unwrap_err();
        assert_eq!(f.code, "ResourceInUseException");
    }

    #[test]
    fn only_one_string_hash_key() {
        let mut st = State::new();
        let mut body = lease_table("table1");
        body["KeySchema"] = json!([
            {"AttributeName": "key", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"}
        ]);
        says(
            &refused(&mut st, body),
            "only a single HASH key; KeySchema has 2 elements",
        );
        let mut body = lease_table("table1");
        body["KeySchema"] = json!([{"AttributeName": "key", "KeyType": "RANGE"}]);
        says(&refused(&mut st, body), "key has KeyType RANGE");
        let mut body = lease_table("table1");
        body["AttributeDefinitions"] = json!([{"AttributeName": "key", "AttributeType": "N"}]);
        says(
            &refused(&mut st, body),
            "only a key of type S; key has AttributeType N",
        );
        let mut body = lease_table("table1");
        body["AttributeDefinitions"] = json!([{"AttributeName": "other", "AttributeType": "S"}]);
        says(
            &refused(&mut st, body),
            "Some index key attributes are not defined",
        );
        let mut body = lease_table("table1");
        body["AttributeDefinitions"] = json!([
            {"AttributeName": "key", "AttributeType": "S"},
            {"AttributeName": "x", "AttributeType": "S"}
        ]);
        says(&refused(&mut st, body), "does not exactly match");
        let mut body = lease_table("table1");
        body["GlobalSecondaryIndexes"] = json!([]);
        says(
            &refused(&mut st, body),
            "GlobalSecondaryIndexes is not supported",
        );
        assert!(st.plain.is_empty());
    }

    #[test]
    fn names_and_billing_are_checked() {
        let mut st = State::new();
        says(
            &refused(&mut st, lease_table("ab")),
            "length greater than or equal to 3",
        );
        says(
            &refused(&mut st, lease_table("a b c")),
            "regular expression pattern",
        );
        says(
            &refused(&mut st, json!({})),
            "'tableName' failed to satisfy constraint",
        );
        let mut body = lease_table("table1");
        body["ProvisionedThroughput"] = json!({"ReadCapacityUnits": 1, "WriteCapacityUnits": 1});
        says(&refused(&mut st, body.clone()), "PAY_PER_REQUEST");
        body.as_object_mut().unwrap().remove("BillingMode");
        create(&mut st, body).unwrap();
        let t = st.plain["table1"].describe();
        assert_eq!(t["BillingModeSummary"]["BillingMode"], "PROVISIONED");
        assert_eq!(t["ProvisionedThroughput"]["ReadCapacityUnits"], 1);
        let mut body = lease_table("table2");
        body.as_object_mut().unwrap().remove("BillingMode");
        says(&refused(&mut st, body), "must both be specified");
    }

    #[test]
    fn keys_must_match_the_schema() {
        let mut st = State::new();
        create(&mut st, lease_table("leases")).unwrap();
        let t = &st.plain["leases"];
        assert_eq!(t.key_of(&json!({"key": {"S": "a"}})).unwrap(), "a");
        for bad in [
            json!({"key": {"N": "1"}}),
            json!({"other": {"S": "a"}}),
            json!({"key": {"S": "a"}, "x": {"S": "b"}}),
            json!({"key": {"S": "a", "N": "1"}}),
            json!("a"),
        ] {
            let f = t.key_of(&bad).unwrap_err();
            assert!(f.message.contains("does not match the schema"), "{bad}");
        }
        let f = t.key_of(&json!({"key": {"S": ""}})).unwrap_err();
        assert!(
            f.message
                .contains("cannot contain an empty string value. Key: key")
        );
    }
}
