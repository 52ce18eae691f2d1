//! The lease table's request shapes on moto's DynamoDB: table creation,
//! conditional writes (create, compare-and-set, never over a later epoch),
//! strongly consistent scans and lease reads, a claim handed over, positions recorded and
//! loaded, and `dynamo-cdc leases` reading it all back.
//!
//! moto is not linearizable under concurrent conditional writes, so the
//! concurrent rules are tested elsewhere (the in-memory store, and the
//! simulator's lease-table endpoint with several processes); here calls
//! are sequential and only their shape and meaning are checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use dynamo_cdc_core::{CheckpointStore, Recorded, SequenceNumber, ShardKey};
use dynamo_cdc_lease::{
    Condition, Coordinator, DynamoLeaseStore, Item, Lease, LeaseCheckpoints, LeaseStore,
    StoreFailure, SystemClock,
};
use dynamo_cdc_tests::Scratch;
use dynamo_cdc_tests::servers::{dynamodb, start_moto};

const DURATION: std::time::Duration = std::time::Duration::from_secs(30);

fn store(url: &str) -> Arc<DynamoLeaseStore> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(dynamodb(url));
    Arc::new(DynamoLeaseStore::with_runtime(
        runtime,
        client,
        "cdc-leases",
    ))
}

fn tables() -> Vec<String> {
    ["orders", "customers", "payments"]
        .map(String::from)
        .to_vec()
}

#[test]
#[ignore = "needs moto_server; scripts/test.sh installs it and runs this"]
fn leases_positions_and_the_leases_command_on_moto() {
    let s = Scratch::new();
    let (_moto, url) = start_moto(s.path());
    let store = store(&url);
    store.ensure_table().unwrap();
    // Twice: the second finds it.
    store.ensure_table().unwrap();

    // Conditional writes mean what they say.
    let lease = Item::Lease(Lease::free("probe"));
    store.put(&lease, Condition::Absent).unwrap();
    assert_eq!(
        store.put(&lease, Condition::Absent),
        Err(StoreFailure::Conflict)
    );
    assert_eq!(
        store.put(&lease, Condition::Counter(5)),
        Err(StoreFailure::Conflict)
    );
    let next = Item::Lease(Lease {
        counter: 1,
        ..Lease::free("probe")
    });
    store.put(&next, Condition::Counter(0)).unwrap();
    assert!(store.scan().unwrap().contains(&next));

    // Two workers: `a` takes all three, `b` claims one, `a` hands it over.
    let mut a = Coordinator::new(store.clone(), "worker-a", DURATION, &tables());
    let mut b = Coordinator::new(store.clone(), "worker-b", DURATION, &tables());
    a.tick(&SystemClock).unwrap();
    assert_eq!(a.grants().len(), 3);
    let happened = b.tick(&SystemClock).unwrap();
    assert!(
        happened
            .iter()
            .any(|h| matches!(h, dynamo_cdc_lease::Happened::Claimed { .. })),
        "{happened:?}"
    );
    a.tick(&SystemClock).unwrap();
    let claimed: Vec<String> = a
        .grants()
        .into_iter()
        .filter(|(_, g)| g.claimed)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(claimed.len(), 1);
    a.release(&claimed[0], &SystemClock).unwrap();
    b.tick(&SystemClock).unwrap();
    assert_eq!(b.grants().into_keys().collect::<Vec<_>>(), claimed);
    assert_eq!(
        b.grants()[&claimed[0]].epoch,
        2,
        "a change of owner bumps the epoch"
    );

    // Positions: written under the epoch, loaded back, never over a later one.
    let table = claimed[0].clone();
    let mut recorded = Recorded::default();
    let parquet = recorded.sinks.entry("parquet".into()).or_default();
    parquet.positions.advance(
        ShardKey::new(table.as_str(), "shardId-0001"),
        SequenceNumber::parse("4960000000000000000000123").unwrap(),
    );
    parquet.state = serde_json::json!({"offsets": {"cdc.x": {"0": 7}}});
    let mut now = LeaseCheckpoints::new(store.clone(), BTreeMap::from([(table.clone(), 2)]));
    now.store(&recorded).unwrap();
    let loaded = LeaseCheckpoints::new(store.clone(), BTreeMap::from([(table.clone(), 2)]))
        .load()
        .unwrap();
    assert_eq!(loaded, recorded);
    let mut stale = LeaseCheckpoints::new(store.clone(), BTreeMap::from([(table.clone(), 1)]));
    assert!(
        stale.store(&recorded).is_err(),
        "epoch 1 must not overwrite epoch 2"
    );

    // A round reads the leases it asks for, each with its own GetItem: not
    // the positions beside them, not a table without a lease yet.
    // More tables than the reads it keeps in flight.
    let mut asked = tables();
    asked.extend((0..40).map(|i| format!("no-lease-yet-{i}")));
    let leases = store.leases(&asked).unwrap();
    assert_eq!(
        leases.iter().map(|l| l.table.as_str()).collect::<Vec<_>>(),
        tables(),
        "{leases:?}"
    );
    assert!(leases.iter().all(|l| l.owner.is_some()), "{leases:?}");
    assert!(store.leases(&[]).unwrap().is_empty());

    // The operators' view.
    let config = s.path().join("leases.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"dynamodb\"\nregion = \"us-east-1\"\nendpoint_url = {url:?}\n\
             tables = [\"orders\", \"customers\", \"payments\"]\n\
             [sinks.parquet]\npath = \"out\"\n[checkpoint]\npath = \"cp.json\"\n\
             [coordination]\nlease_table = \"cdc-leases\"\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(dynamo_cdc_tests::binary())
        .args(["leases", "--config"])
        .arg(&config)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("TABLE") && text.contains("OWNER") && text.contains("EPOCH"),
        "{text}"
    );
    for t in tables() {
        let line = text
            .lines()
            .find(|l| l.starts_with(&t))
            .unwrap_or_else(|| panic!("{t}: {text}"));
        let owner = if t == table { "worker-b" } else { "worker-a" };
        assert!(line.contains(owner), "{line}");
    }
    let line = text.lines().find(|l| l.starts_with(&table)).unwrap();
    assert!(line.contains("parquet: 1 shards"), "{line}");
}
