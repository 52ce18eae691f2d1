//! [`LeaseStore`] on a DynamoDB table, through the AWS SDK.
//!
//! The table has one string key, `key`; it is created on demand billing
//! when missing. Reads are strongly consistent: `GetItem`s of the leases a
//! coordinator watches (one per table, several at once), a `Scan` of everything
//! when a pass loads its positions. Writes are `PutItem` with a condition
//! expression:
//!
//! | condition | expression |
//! |---|---|
//! | `Absent` | `attribute_not_exists(#k)` |
//! | `Counter(c)` | `#c = :c` |
//! | `EpochAtMost(e)` | `attribute_not_exists(#k) OR #e <= :e` |

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};

use crate::item::{
    Condition, EndedItem, Item, KEY, Lease, PositionItem, StartItem, StateItem, lease_key,
};
use crate::store::{LeaseStore, StoreFailure};

/// Lease reads a round keeps in flight: enough for one round trip with a
/// few dozen tables, few enough not to crowd the connection pool or the
/// table's read capacity with hundreds.
const READS_IN_FLIGHT: usize = 16;

/// The lease table in DynamoDB; see the module docs.
pub struct DynamoLeaseStore {
    client: Client,
    table: String,
    runtime: tokio::runtime::Runtime,
}

impl DynamoLeaseStore {
    /// The table `table` reached through `client`, whose calls run on a
    /// runtime of this store's own (it is used from plain threads).
    ///
    /// # Errors
    /// When the runtime cannot be started.
    pub fn new(client: Client, table: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dynamo-cdc-lease-io")
            .enable_all()
            .build()?;
        Ok(Self::with_runtime(runtime, client, table))
    }

    /// Like [`DynamoLeaseStore::new`], on `runtime` (the one the client's
    /// configuration was loaded on). It must be a multi-thread runtime:
    /// calls come from several plain threads at once.
    pub fn with_runtime(runtime: tokio::runtime::Runtime, client: Client, table: &str) -> Self {
        DynamoLeaseStore {
            client,
            table: table.to_owned(),
            runtime,
        }
    }

    async fn describe_status(&self) -> Result<Option<TableStatus>, StoreFailure> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(out.table().and_then(|t| t.table_status().cloned())),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(classify(&e)),
        }
    }

    async fn ensure(&self) -> Result<(), StoreFailure> {
        if self.describe_status().await?.is_none() {
            let created = self
                .client
                .create_table()
                .table_name(&self.table)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(KEY)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| StoreFailure::Fatal(e.to_string()))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(KEY)
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(|e| StoreFailure::Fatal(e.to_string()))?,
                )
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await;
            match created {
                Ok(_) => tracing::info!(table = %self.table, "created the lease table"),
                // Another worker created it first.
                Err(e) if e.code() == Some("ResourceInUseException") => {}
                Err(e) => return Err(classify(&e)),
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.describe_status().await?.is_some_and(usable) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreFailure::Unavailable(format!(
                    "lease table {} is neither ACTIVE nor UPDATING after a minute",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One `GetItem` per table, up to [`READS_IN_FLIGHT`] at once: a round
    /// of the coordinator takes a round trip or a few whatever the number
    /// of tables.
    async fn get_leases(&self, tables: &[String]) -> Result<Vec<Lease>, StoreFailure> {
        let mut reads = tokio::task::JoinSet::new();
        let mut found = Vec::new();
        let mut next = tables.iter().enumerate();
        loop {
            while reads.len() < READS_IN_FLIGHT {
                let Some((i, table)) = next.next() else { break };
                let request = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key(KEY, s(&lease_key(table)))
                    .consistent_read(true);
                reads.spawn(async move { (i, request.send().await) });
            }
            let Some(joined) = reads.join_next().await else {
                break;
            };
            let (i, answer) = joined.map_err(|e| {
                if e.is_panic() {
                    StoreFailure::Fatal(format!("a lease read panicked: {e}"))
                } else {
                    StoreFailure::Unavailable(format!("a lease read: {e}"))
                }
            })?;
            let out = answer.map_err(|e| classify(&e))?;
            match out.item().map(decode) {
                Some(Some(Item::Lease(lease))) => found.push((i, lease)),
                Some(_) => tracing::warn!(
                    table = %tables[i],
                    "skipping a lease item that cannot be read"
                ),
                None => {}
            }
        }
        // In the order asked, as a scan would give them for one table each.
        found.sort_by_key(|(i, _)| *i);
        Ok(found.into_iter().map(|(_, lease)| lease).collect())
    }

    async fn scan_all(&self) -> Result<Vec<Item>, StoreFailure> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify(&e))?;
            for raw in out.items() {
                match decode(raw) {
                    Some(item) => items.push(item),
                    None => {
                        tracing::debug!(key = ?raw.get(KEY), "skipping an item that is not ours")
                    }
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(items),
            }
        }
    }

    async fn put_item(&self, item: &Item, condition: Condition) -> Result<(), StoreFailure> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(encode(item)));
        request = match condition {
            Condition::Always => request,
            Condition::Absent => request
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", KEY),
            Condition::Counter(c) => request
                .condition_expression("#c = :c")
                .expression_attribute_names("#c", "counter")
                .expression_attribute_values(":c", AttributeValue::N(c.to_string())),
            Condition::EpochAtMost(e) => request
                .condition_expression("attribute_not_exists(#k) OR #e <= :e")
                .expression_attribute_names("#k", KEY)
                .expression_attribute_names("#e", "epoch")
                .expression_attribute_values(":e", AttributeValue::N(e.to_string())),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Err(StoreFailure::Conflict)
            }
            Err(e) => Err(classify(&e)),
        }
    }
}

impl LeaseStore for DynamoLeaseStore {
    fn ensure_table(&self) -> Result<(), StoreFailure> {
        self.runtime.block_on(self.ensure())
    }

    fn leases(&self, tables: &[String]) -> Result<Vec<Lease>, StoreFailure> {
        self.runtime.block_on(self.get_leases(tables))
    }

    fn scan(&self) -> Result<Vec<Item>, StoreFailure> {
        self.runtime.block_on(self.scan_all())
    }

    fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreFailure> {
        self.runtime.block_on(self.put_item(item, condition))
    }

    fn describe(&self) -> String {
        format!("lease table {}", self.table)
    }
}

/// Throttling, server errors and anything that never got an answer may
/// pass; a refusal (no permission, a missing or misshapen table) does not.
fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(
    e: &SdkError<E, HttpResponse>,
) -> StoreFailure {
    let code = e.code().unwrap_or("");
    let text = match e.message() {
        Some(m) => format!("{}: {m}", if code.is_empty() { "error" } else { code }),
        None => format!("{e:?}"),
    };
    match e {
        // A request that cannot be serialized never will be. (A bad region
        // or endpoint is found later, while dispatching, and reads as no
        // answer.)
        SdkError::ConstructionFailure(_) => return StoreFailure::Fatal(text),
        SdkError::ServiceError(_) => {}
        // Dispatch, timeout, response errors: no (readable) answer.
        _ => return StoreFailure::Unavailable(text),
    }
    let status = e.raw_response().map_or(0, |r| r.status().as_u16());
    if status >= 500
        || code.contains("Throttl")
        || code == "ProvisionedThroughputExceededException"
        || code == "RequestLimitExceeded"
    {
        StoreFailure::Unavailable(text)
    } else {
        StoreFailure::Fatal(text)
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Whether a table in `status` serves reads and writes: while `UPDATING`
/// (a replica or a setting changing) it does, while `CREATING` it does not.
fn usable(status: TableStatus) -> bool {
    matches!(status, TableStatus::Active | TableStatus::Updating)
}

fn encode(item: &Item) -> HashMap<String, AttributeValue> {
    let mut m = HashMap::from([
        (KEY.to_owned(), s(&item.key())),
        ("table".to_owned(), s(item.table())),
    ]);
    match item {
        Item::Lease(l) => {
            m.insert("kind".into(), s("lease"));
            m.insert("owner".into(), s(l.owner.as_deref().unwrap_or("")));
            m.insert(
                "incarnation".into(),
                s(l.incarnation.as_deref().unwrap_or("")),
            );
            m.insert("counter".into(), n(l.counter));
            m.insert("epoch".into(), n(l.epoch));
            m.insert("claim".into(), s(l.claim.as_deref().unwrap_or("")));
            m.insert("renewed_ms".into(), n(l.renewed_ms));
            m.insert("duration_ms".into(), n(l.duration_ms));
            m.insert("settle_ms".into(), n(l.settle_ms));
            m.insert("pipeline".into(), s(l.pipeline.as_deref().unwrap_or("")));
        }
        Item::Position(p) => {
            m.insert("kind".into(), s("position"));
            m.insert("sink".into(), s(&p.sink));
            m.insert("shard".into(), s(&p.shard));
            m.insert("seq".into(), s(&p.seq));
            m.insert("epoch".into(), n(p.epoch));
            m.insert("updated_ms".into(), n(p.updated_ms));
        }
        Item::State(st) => {
            m.insert("kind".into(), s("state"));
            m.insert("sink".into(), s(&st.sink));
            m.insert("state".into(), s(&st.state));
            m.insert("epoch".into(), n(st.epoch));
        }
        Item::Start(st) => {
            m.insert("kind".into(), s("start"));
            m.insert("at_ms".into(), n(st.at_ms));
            // A JSON array: a string set cannot be empty.
            let closed = serde_json::to_string(&st.closed).unwrap_or_else(|_| "[]".into());
            m.insert("closed".into(), s(&closed));
            m.insert("epoch".into(), n(st.epoch));
        }
        Item::Ended(e) => {
            m.insert("kind".into(), s("ended"));
            m.insert("shard".into(), s(e.shard.as_deref().unwrap_or("")));
            m.insert("epoch".into(), n(e.epoch));
        }
    }
    m
}

fn decode(m: &HashMap<String, AttributeValue>) -> Option<Item> {
    let text = |k: &str| m.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        m.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let unsigned = |k: &str| num(k).and_then(|v| u64::try_from(v).ok());
    let optional = |k: &str| text(k).filter(|v| !v.is_empty());
    let table = text("table")?;
    Some(match text("kind")?.as_str() {
        "lease" => Item::Lease(Lease {
            table,
            owner: optional("owner"),
            incarnation: optional("incarnation"),
            counter: unsigned("counter")?,
            epoch: unsigned("epoch")?,
            claim: optional("claim"),
            renewed_ms: num("renewed_ms").unwrap_or(0),
            duration_ms: unsigned("duration_ms").unwrap_or(0),
            settle_ms: unsigned("settle_ms").unwrap_or(0),
            pipeline: optional("pipeline"),
        }),
        "position" => Item::Position(PositionItem {
            table,
            sink: text("sink")?,
            shard: text("shard")?,
            seq: text("seq")?,
            epoch: unsigned("epoch")?,
            updated_ms: num("updated_ms").unwrap_or(0),
        }),
        "state" => Item::State(StateItem {
            table,
            sink: text("sink")?,
            state: text("state")?,
            epoch: unsigned("epoch")?,
        }),
        "start" => Item::Start(StartItem {
            table,
            at_ms: num("at_ms")?,
            closed: serde_json::from_str(&text("closed")?).ok()?,
            epoch: unsigned("epoch")?,
        }),
        "ended" => Item::Ended(EndedItem {
            table,
            shard: optional("shard"),
            epoch: unsigned("epoch")?,
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_being_updated_serves_the_leases_one_being_created_does_not() {
        assert!(usable(TableStatus::Active));
        assert!(usable(TableStatus::Updating));
        assert!(!usable(TableStatus::Creating));
        assert!(!usable(TableStatus::Deleting));
    }

    #[test]
    fn items_round_trip_through_attribute_values() {
        let items = [
            Item::Lease(Lease {
                owner: Some("w1".into()),
                incarnation: Some("5f3a9c2e81d04b67".into()),
                counter: 7,
                epoch: 2,
                claim: Some("w2".into()),
                renewed_ms: 1_700_000_000_000,
                duration_ms: 30_000,
                settle_ms: 11_000,
                pipeline: Some("kafka cdc.{table}".into()),
                ..Lease::free("orders")
            }),
            Item::Lease(Lease::free("orders")),
            Item::Position(PositionItem {
                table: "orders".into(),
                sink: "parquet".into(),
                shard: "shardId-1".into(),
                seq: "4960000000000000000001".into(),
                epoch: 3,
                updated_ms: 5,
            }),
            Item::State(StateItem {
                table: "orders".into(),
                sink: "kafka".into(),
                state: "{\"offsets\":{}}".into(),
                epoch: 3,
            }),
            Item::Start(StartItem {
                table: "orders".into(),
                at_ms: 1_764_000_000_123,
                closed: ["shardId-0".to_owned(), "shardId-1".to_owned()].into(),
                epoch: 3,
            }),
            Item::Start(StartItem {
                table: "orders".into(),
                at_ms: 1,
                closed: Default::default(),
                epoch: 0,
            }),
            Item::Ended(EndedItem {
                table: "orders".into(),
                shard: Some("shardId-0".into()),
                epoch: 3,
            }),
            Item::Ended(EndedItem {
                table: "orders".into(),
                shard: None,
                epoch: 3,
            }),
        ];
        for item in items {
            assert_eq!(decode(&encode(&item)).as_ref(), Some(&item));
        }
    }
}
