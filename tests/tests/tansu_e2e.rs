//! End to end on real servers: a moto server's DynamoDB Streams, through the
//! binary, into a tansu broker (a separate Kafka-protocol process), Avro via
//! the registry double; the binary is killed with SIGKILL while a writer
//! keeps changing items, then every change must be in Kafka exactly once,
//! in order per key, and decode with the registry's schemas.
//!
//! It needs `tansu` (`cargo install tansu --locked --features dynostore`)
//! and `moto_server` (`pip install 'moto[server]'`); `scripts/test.sh`
//! installs both and runs this test. `DYNAMO_CDC_TANSU` and
//! `DYNAMO_CDC_MOTO_SERVER` name the binaries when they are not on the
//! usual paths.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value;
use dynamo_cdc_testkit::registry::RegistryDouble;
use dynamo_cdc_tests::kafka::{TopicMessage, read_topic};
use dynamo_cdc_tests::servers::{
    Storage, Tansu, create_table, dynamodb, start_moto, stream_records, write_changes,
};
use dynamo_cdc_tests::{Scratch, run_command};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const TABLE: &str = "e2e_orders";
const TOPIC: &str = "cdc.e2e_orders";
const PARTITIONS: i32 = 3;

fn decode(registry: &RegistryDouble, framed: &[u8]) -> Value {
    assert_eq!(framed[0], 0, "Confluent magic byte");
    let id = u32::from_be_bytes(framed[1..5].try_into().unwrap());
    let schema = Schema::parse_str(&registry.schema(id).expect("a registered schema")).unwrap();
    apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .unwrap()
        .read_value(&mut &framed[5..])
        .unwrap()
}

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    match record {
        Value::Record(fields) => &fields.iter().find(|(n, _)| n == name).unwrap().1,
        Value::Union(_, inner) => field(inner, name),
        other => panic!("not a record: {other:?}"),
    }
}

#[test]
#[ignore = "needs a tansu broker and a moto server: scripts/test.sh installs both and runs it"]
fn moto_streams_into_tansu_exactly_once_across_sigkill_restarts() {
    let s = Scratch::new();
    let tansu = Tansu::start(s.path(), Storage::Memory);
    let brokers = tansu.brokers();
    let (_moto, moto_url) = start_moto(s.path());
    let registry = RegistryDouble::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // tansu does not create topics on demand: the sink creates its topic
    // at start (`create_topics` is on by default) with the configured
    // partitions.
    let db = runtime.block_on(dynamodb(&moto_url));
    runtime.block_on(create_table(&db, TABLE));
    let config = s.path().join("e2e.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"dynamodb\"\ntables = [\"{TABLE}\"]\nregion = \"us-east-1\"\n\
             endpoint_url = {moto_url:?}\npoll_interval_ms = 50\nidle_poll_interval_ms = 200\n\n\
             [sinks.kafka]\nbrokers = {brokers:?}\nschema_registry_url = {:?}\n\
             topic_partitions = {PARTITIONS}\ntopic_replication_factor = 1\n\n\
             [checkpoint]\npath = {:?}\n",
            registry.url(),
            s.path().join("out/checkpoint.json"),
        ),
    )
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = runtime.spawn(write_changes(
        db,
        TABLE,
        Duration::from_millis(5),
        stop.clone(),
    ));
    for round in 0..4u64 {
        let mut child = run_command(s.path(), &config, None)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1200 + 400 * round));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let writes = runtime.block_on(writer).unwrap();
    assert!(writes > 100, "the writer made {writes} changes");
    let out = run_command(s.path(), &config, Some("3")).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let reference: Vec<(u128, String)> = runtime
        .block_on(stream_records(&moto_url, TABLE))
        .into_iter()
        .map(|(seq, event, _)| (seq, event))
        .collect();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        metadata.topics()[0].partitions().len(),
        PARTITIONS as usize,
        "the sink created its topic with `topic_partitions`"
    );
    let got = read_topic(&brokers, TOPIC, PARTITIONS);
    let changes: Vec<&TopicMessage> = got.iter().filter(|g| g.value.is_some()).collect();
    let mut seqs: Vec<u128> = changes.iter().map(|g| g.seq()).collect();
    seqs.sort_unstable();
    let want: Vec<u128> = reference.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, want, "every change of the stream exactly once");
    let deletes = reference.iter().filter(|(_, e)| e == "REMOVE").count();
    assert_eq!(got.len() - changes.len(), deletes, "a tombstone per delete");

    let mut by_key: BTreeMap<Vec<u8>, Vec<(i32, u128)>> = BTreeMap::new();
    let events: BTreeMap<u128, &str> = reference.iter().map(|(s, e)| (*s, e.as_str())).collect();
    for g in &changes {
        by_key
            .entry(g.key.clone())
            .or_default()
            .push((g.partition, g.seq()));
        let value = decode(&registry, g.value.as_ref().unwrap());
        let op = match field(&value, "op") {
            Value::String(op) => op.clone(),
            other => panic!("{other:?}"),
        };
        let want = match events[&g.seq()] {
            "INSERT" => "c",
            "MODIFY" => "u",
            _ => "d",
        };
        assert_eq!(op, want, "change {}", g.seq());
        let source = field(&value, "source");
        assert_eq!(
            field(source, "sequence_number"),
            &Value::String(g.seq().to_string())
        );
        decode(&registry, &g.key);
    }
    for (key, seen) in &by_key {
        assert!(
            seen.iter().all(|(p, _)| *p == seen[0].0),
            "{key:?} spans partitions"
        );
        assert!(
            seen.windows(2).all(|w| w[0].1 < w[1].1),
            "changes of {:?} out of order",
            String::from_utf8_lossy(key)
        );
    }
}
