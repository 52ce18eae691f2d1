//! Plain tables through the real AWS SDK client: CreateTable and
//! DescribeTable, conditional writes and their typed errors, Scan paging,
//! scripted faults, and linearizable compare-and-set under concurrency.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use dynamo_cdc_testkit::streams_sim::{Fault, Op, StreamSim};
use serde_json::json;
use tokio::sync::Barrier;

fn client(sim: &StreamSim) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(sim.endpoint_url())
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .http_client(http)
        // Quick retries: the faults here are scripted, not load.
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(5))
                .with_max_backoff(Duration::from_millis(20)),
        )
        .build();
    Client::from_conf(config)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

async fn create_leases(c: &Client, name: &str) {
    c.create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("key")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("key")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
}

#[test]
fn create_and_describe_a_plain_table() {
    let sim = StreamSim::start();
    let c = client(&sim);
    runtime().block_on(async {
        create_leases(&c, "leases").await;
        let out = c
            .describe_table()
            .table_name("leases")
            .send()
            .await
            .unwrap();
        let t = out.table().unwrap();
        assert_eq!(t.table_name(), Some("leases"));
        assert_eq!(t.table_status(), Some(&TableStatus::Active));
        assert_eq!(
            t.table_arn(),
            Some("arn:aws:dynamodb:us-east-1:123456789012:table/leases")
        );
        let key = &t.key_schema()[0];
        assert_eq!(
            (key.attribute_name(), key.key_type()),
            ("key", &KeyType::Hash)
        );
        assert_eq!(t.item_count(), Some(0));
        assert!(t.creation_date_time().unwrap().secs() > 1_700_000_000);

        let again = c
            .create_table()
            .table_name("leases")
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("key")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("key")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            matches!(again, CreateTableError::ResourceInUseException(_)),
            "{again:?}"
        );
        let missing = c
            .describe_table()
            .table_name("nope")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            matches!(missing, DescribeTableError::ResourceNotFoundException(_)),
            "{missing:?}"
        );
    });
    assert_eq!(sim.plain_tables(), ["leases"]);
}

#[test]
fn conditional_puts_and_deletes_with_typed_errors() {
    let sim = StreamSim::start();
    let c = client(&sim);
    runtime().block_on(async {
        create_leases(&c, "leases").await;
        let create_once = |owner: &str| {
            c.put_item()
                .table_name("leases")
                .item("key", s("lease#t1"))
                .item("owner", s(owner))
                .item("counter", n(0))
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", "key")
        };
        create_once("w1").send().await.unwrap();
        let e = create_once("w2")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            matches!(e, PutItemError::ConditionalCheckFailedException(_)),
            "{e:?}"
        );
        assert_eq!(e.message(), Some("The conditional request failed"));

        let got = c
            .get_item()
            .table_name("leases")
            .key("key", s("lease#t1"))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        assert_eq!(got.item().unwrap()["owner"], s("w1"));
        let absent = c
            .get_item()
            .table_name("leases")
            .key("key", s("lease#t2"))
            .send()
            .await
            .unwrap();
        assert!(absent.item().is_none());

        // Release: only the owner may delete.
        let release = |owner: &str| {
            c.delete_item()
                .table_name("leases")
                .key("key", s("lease#t1"))
                .condition_expression("#o = :me AND #c >= :zero")
                .expression_attribute_names("#o", "owner")
                .expression_attribute_names("#c", "counter")
                .expression_attribute_values(":me", s(owner))
                .expression_attribute_values(":zero", n(0))
        };
        let e = release("w2").send().await.unwrap_err().into_service_error();
        assert!(
            matches!(e, DeleteItemError::ConditionalCheckFailedException(_)),
            "{e:?}"
        );
        assert_eq!(sim.plain_items("leases").len(), 1);
        release("w1").send().await.unwrap();
        assert!(sim.plain_items("leases").is_empty());

        // A malformed expression is a ValidationException naming the problem.
        let e = c
            .put_item()
            .table_name("leases")
            .item("key", s("x"))
            .condition_expression("#c = :old")
            .expression_attribute_values(":old", n(1))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(e.code(), Some("ValidationException"));
        assert!(e.message().unwrap().contains("#c"), "{e:?}");
    });
}

#[test]
fn scan_pages_with_limit_and_exclusive_start_key() {
    let sim = StreamSim::start();
    let c = client(&sim);
    let keys = runtime().block_on(async {
        create_leases(&c, "leases").await;
        for k in ["g", "c", "a", "e", "b", "f", "d"] {
            c.put_item()
                .table_name("leases")
                .item("key", s(k))
                .send()
                .await
                .unwrap();
        }
        let mut keys = Vec::new();
        let mut pages = Vec::new();
        let mut start = None;
        loop {
            let page = c
                .scan()
                .table_name("leases")
                .consistent_read(true)
                .limit(3)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .unwrap();
            assert_eq!(page.count(), page.items().len() as i32);
            pages.push(page.items().len());
            keys.extend(
                page.items()
                    .iter()
                    .map(|i| i["key"].as_s().unwrap().clone()),
            );
            match page.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        assert_eq!(pages, [3, 3, 1]);
        keys
    });
    assert_eq!(keys, ["a", "b", "c", "d", "e", "f", "g"]);
}

#[test]
fn faults_apply_to_item_calls_and_a_lost_answer_hides_a_write() {
    let sim = StreamSim::start();
    let c = client(&sim);
    runtime().block_on(async {
        create_leases(&c, "leases").await;
        // A throttled read is retried by the SDK.
        sim.fail_next(Op::GetItem, 1, Fault::Throttle);
        c.get_item()
            .table_name("leases")
            .key("key", s("a"))
            .send()
            .await
            .unwrap();
        assert_eq!(sim.calls(Op::GetItem), 2);

        // The put is applied but its answer lost; the SDK retries, and the
        // retry meets the first attempt's own write.
        sim.fail_next(Op::PutItem, 1, Fault::AnswerLost);
        let e = c
            .put_item()
            .table_name("leases")
            .item("key", s("a"))
            .item("owner", s("w1"))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", "key")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            matches!(e, PutItemError::ConditionalCheckFailedException(_)),
            "{e:?}"
        );
        assert_eq!(sim.calls(Op::PutItem), 2);
        assert_eq!(
            sim.plain_items("leases"),
            [json!({"key": {"S": "a"}, "owner": {"S": "w1"}})]
        );
    });
}

/// One compare-and-set increment of the counter: read it, then write
/// `old + 1` on condition that it is still `old`. `Some(old)` when it won.
async fn increment(c: &Client, worker: usize) -> Option<u64> {
    let old = counter(c).await;
    cas(c, worker, old).await.then_some(old)
}

/// The counter's value, read consistently.
async fn counter(c: &Client) -> u64 {
    let got = c
        .get_item()
        .table_name("leases")
        .key("key", s("counter"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    got.item().unwrap()["c"].as_n().unwrap().parse().unwrap()
}

async fn cas(c: &Client, worker: usize, old: u64) -> bool {
    let out = c
        .put_item()
        .table_name("leases")
        .item("key", s("counter"))
        .item("c", n(old + 1))
        .item("by", n(worker as u64))
        .condition_expression("#c = :old")
        .expression_attribute_names("#c", "c")
        .expression_attribute_values(":old", n(old))
        .send()
        .await;
    match out {
        Ok(_) => true,
        Err(e) => match e.into_service_error() {
            PutItemError::ConditionalCheckFailedException(_) => false,
            other => panic!("worker {worker}: {other:?}"),
        },
    }
}

#[test]
fn concurrent_compare_and_set_is_linearizable() {
    const WORKERS: usize = 8;
    const ROUNDS: usize = 10;
    const FREE_ATTEMPTS: usize = 25;
    let sim = StreamSim::start();
    let rt = runtime();
    let c = client(&sim);
    rt.block_on(async {
        create_leases(&c, "leases").await;
        c.put_item()
            .table_name("leases")
            .item("key", s("counter"))
            .item("c", n(0))
            .send()
            .await
            .unwrap();
    });

    // In lockstep: every worker reads before any writes, so each round has
    // exactly one winner among writers of the same old value.
    let barrier = Arc::new(Barrier::new(WORKERS));
    let lockstep: Vec<Vec<bool>> = rt.block_on(async {
        let tasks: Vec<_> = (0..WORKERS)
            .map(|w| {
                let c = client(&sim);
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let mut won = Vec::new();
                    for _ in 0..ROUNDS {
                        let old = counter(&c).await;
                        barrier.wait().await;
                        won.push(cas(&c, w, old).await);
                        barrier.wait().await;
                    }
                    won
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap());
        }
        all
    });
    for round in 0..ROUNDS {
        let winners = lockstep.iter().filter(|w| w[round]).count();
        assert_eq!(winners, 1, "round {round}");
    }

    // Free running: whatever the interleaving, every successful CAS moved
    // the counter by one from a distinct old value.
    let won: Vec<u64> = rt.block_on(async {
        let tasks: Vec<_> = (0..WORKERS)
            .map(|w| {
                let c = client(&sim);
                tokio::spawn(async move {
                    let mut won = Vec::new();
                    for _ in 0..FREE_ATTEMPTS {
                        won.extend(increment(&c, w).await);
                    }
                    won
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert!(!won.is_empty());
    let distinct: BTreeSet<u64> = won.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        won.len(),
        "two CASes won from one old value"
    );
    let start = ROUNDS as u64;
    let expected: BTreeSet<u64> = (start..start + won.len() as u64).collect();
    assert_eq!(
        distinct, expected,
        "the winners' old values are consecutive"
    );
    let items = sim.plain_items("leases");
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["c"]["N"],
        (start + won.len() as u64).to_string(),
        "the counter equals the number of successful CASes"
    );
    assert_eq!(
        sim.calls(Op::PutItem),
        1 + WORKERS * (ROUNDS + FREE_ATTEMPTS),
        "no call was retried"
    );
}
