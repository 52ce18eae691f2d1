//! A simulated DynamoDB table: its key schema, its items in scan order, and
//! its description as `DescribeTable` words it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::keys::{ItemKey, KeyValue, item_size};
use super::state::Fault;

pub(crate) struct Table {
    pub name: String,
    pub arn: String,
    pub id: String,
    pub hash_key: String,
    pub range_key: Option<String>,
    /// The key attributes' types. The constructor takes only names, so the
    /// first write fixes them (until then they read as `S`), and later
    /// writes must agree, as the service enforces its attribute definitions.
    pub key_types: Option<(&'static str, Option<&'static str>)>,
    pub stream_arn: String,
    pub created: f64,
    pub items: BTreeMap<ItemKey, Value>,
    /// When point-in-time recovery was turned on; `None` while it is off.
    pub pitr_since: Option<f64>,
}

/// What a write did to one item, for its stream record.
pub(crate) struct Written {
    pub key: ItemKey,
    /// The key attributes alone (the record's `Keys`).
    pub keys: Value,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl Table {
    pub(crate) fn new(
        name: &str,
        hash_key: &str,
        range_key: Option<&str>,
        stream_arn: String,
        created: f64,
    ) -> Self {
        Table {
            name: name.to_owned(),
            arn: format!("arn:aws:dynamodb:us-east-1:123456789012:table/{name}"),
            id: table_id(name),
            hash_key: hash_key.to_owned(),
            range_key: range_key.map(str::to_owned),
            key_types: None,
            stream_arn,
            created,
            items: BTreeMap::new(),
            pitr_since: None,
        }
    }

    /// The key of an item or key map, checked against the key schema.
    /// With `exact`, attributes other than the key ones are refused (as for
    /// `ExclusiveStartKey`).
    pub(crate) fn key_of(&self, map: &Value, exact: bool) -> Result<ItemKey, String> {
        let attrs = map
            .as_object()
            .ok_or_else(|| format!("expected a map of attributes, got {map}"))?;
        let part = |name: &str| -> Result<KeyValue, String> {
            let value = attrs
                .get(name)
                .ok_or_else(|| format!("the key attribute {name} is missing"))?;
            KeyValue::parse(value).map_err(|e| format!("{name}: {e}"))
        };
        let partition = part(&self.hash_key)?;
        let sort = self.range_key.as_deref().map(part).transpose()?;
        if exact && attrs.len() != 1 + usize::from(sort.is_some()) {
            return Err("the map has attributes other than the key".into());
        }
        if let Some((hash_type, range_type)) = self.key_types {
            let found = (
                partition.type_name(),
                sort.as_ref().map(KeyValue::type_name),
            );
            if found != (hash_type, range_type) {
                return Err(format!(
                    "key types {found:?} do not match the table's {:?}",
                    (hash_type, range_type)
                ));
            }
        }
        Ok(ItemKey::new(partition, sort))
    }

    /// The key attributes of `item`, as `Keys` and `LastEvaluatedKey` carry them.
    pub(crate) fn key_attributes(&self, item: &Value) -> Value {
        let mut keys = Map::new();
        for name in std::iter::once(&self.hash_key).chain(&self.range_key) {
            if let Some(v) = item.get(name) {
                keys.insert(name.clone(), v.clone());
            }
        }
        Value::Object(keys)
    }

    /// Inserts or replaces a whole item.
    pub(crate) fn put(&mut self, item: Value) -> Result<Written, String> {
        let key = self.key_of(&item, false)?;
        if self.key_types.is_none() {
            self.key_types = Some((
                key.partition.type_name(),
                key.sort.as_ref().map(KeyValue::type_name),
            ));
        }
        let keys = self.key_attributes(&item);
        let old = self.items.insert(key.clone(), item.clone());
        Ok(Written {
            key,
            keys,
            old,
            new: Some(item),
        })
    }

    /// Deletes the item with the key in `key` (other attributes ignored);
    /// `None` when there was none.
    pub(crate) fn delete(&mut self, key: &Value) -> Result<Option<Written>, String> {
        let key = self.key_of(key, false)?;
        Ok(self.items.remove(&key).map(|old| Written {
            keys: self.key_attributes(&old),
            key,
            old: Some(old),
            new: None,
        }))
    }

    pub(crate) fn describe(&self) -> Value {
        let (hash_type, range_type) = self.key_types.unwrap_or(("S", Some("S")));
        let mut definitions =
            vec![json!({"AttributeName": self.hash_key, "AttributeType": hash_type})];
        if let Some(range) = &self.range_key {
            definitions
                .push(json!({"AttributeName": range, "AttributeType": range_type.unwrap_or("S")}));
        }
        let size: u64 = self.items.values().map(item_size).sum();
        json!({"Table": {
            "TableName": self.name,
            "TableArn": self.arn,
            "TableId": self.id,
            "TableStatus": "ACTIVE",
            "KeySchema": self.key_schema(),
            "AttributeDefinitions": definitions,
            "ItemCount": self.items.len(),
            "TableSizeBytes": size,
            "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
            "ProvisionedThroughput": {
                "NumberOfDecreasesToday": 0,
                "ReadCapacityUnits": 0,
                "WriteCapacityUnits": 0,
            },
            "StreamSpecification": {"StreamEnabled": true, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            "LatestStreamArn": self.stream_arn,
            "LatestStreamLabel": self.stream_arn.rsplit('/').next(),
            "CreationDateTime": self.created,
        }})
    }

    /// `KeySchema` for the stream's description.
    pub(crate) fn key_schema(&self) -> Value {
        let mut schema = vec![json!({"AttributeName": self.hash_key, "KeyType": "HASH"})];
        if let Some(range) = &self.range_key {
            schema.push(json!({"AttributeName": range, "KeyType": "RANGE"}));
        }
        Value::Array(schema)
    }
}

/// A table id shaped like the service's (a UUID), fixed by the name so
/// reruns produce the same descriptions and manifests.
pub(crate) fn table_id(name: &str) -> String {
    let a = KeyValue::S(format!("{name}#id-a")).stable_hash();
    let b = KeyValue::S(format!("{name}#id-b")).stable_hash();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// `ResourceNotFoundException` for a table, worded as the service does.
pub(crate) fn not_found(name: &str) -> Fault {
    Fault::client(
        "ResourceNotFoundException",
        format!("Requested resource not found: Table: {name} not found"),
    )
}
