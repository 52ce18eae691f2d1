//! The Kafka sink on librdkafka's mock cluster: message shapes, Avro with the
//! registry double, effectively-once resume, oversized messages and broker
//! trouble.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use apache_avro::Schema;
use dynamo_cdc_core::{
    AttributeValue, Change, ErrorKind, Item, Number, Op, SequenceNumber, ShardKey, Sink, SourceInfo,
};
use dynamo_cdc_sink_kafka::{
    Envelope, Format, HEADER_ERROR, HEADER_SEQUENCE, HEADER_SHARD, HEADER_TABLE, KafkaConfig,
    KafkaSink, KafkaSinkError, RegistryConfig,
};
use dynamo_cdc_testkit::refused_port;
use dynamo_cdc_testkit::registry::RegistryDouble;
use dynamo_cdc_transform::NumbersMode;
use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;

struct Got {
    partition: i32,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    headers: BTreeMap<String, String>,
}

/// Every message of `topic`, per partition in offset order.
fn consume(brokers: &str, topic: &str, partitions: i32) -> Vec<Got> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut open = partitions;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while open > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "topic {topic} never ended"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Got {
                partition: m.partition(),
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default()).into(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            _ => {}
        }
    }
    out
}

/// A message's key or value in the Confluent wire format (magic byte,
/// schema id, Avro), read with the schema the registry holds for its id.
fn registered(registry: &RegistryDouble, framed: &[u8]) -> apache_avro::types::Value {
    let id = u32::from_be_bytes(framed[1..5].try_into().unwrap());
    let schema = Schema::parse_str(&registry.schema(id).unwrap()).unwrap();
    decode(&schema, &framed[5..])
}

fn decode(schema: &Schema, mut bytes: &[u8]) -> apache_avro::types::Value {
    apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()
        .unwrap()
        .read_value(&mut bytes)
        .unwrap()
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.into())
}

fn n(text: &str) -> AttributeValue {
    AttributeValue::N(Number::parse(text).unwrap())
}

fn change(seq: u64, id: &str, op: Op, price: &str) -> Change {
    let keys: Item = [("id", s(id))].into();
    let image: Item = [
        ("id", s(id)),
        ("price", n(price)),
        ("tags", AttributeValue::Ss(vec!["a".into()])),
    ]
    .into();
    Change {
        op,
        keys,
        old_image: (op != Op::Insert).then(|| image.clone()),
        unread_old_image: None,
        new_image: (op != Op::Remove).then_some(image),
        source: SourceInfo {
            table: "orders".into(),
            stream_arn: None,
            shard_id: "shard-1".into(),
            sequence_number: SequenceNumber::parse(&(1000 + seq).to_string()).unwrap(),
            event_id: format!("e{seq}"),
            approx_creation_ms: Some(1_700_000_000_000 + seq as i64),
            ttl_delete: false,
            snapshot: None,
        },
    }
}

fn config(brokers: &str, format: Format) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_owned(),
        topic: "cdc.{table}".into(),
        format,
        envelope: Envelope::Debezium,
        tombstones: true,
        registry: None,
        dead_letter_topic: None,
        properties: vec![("linger.ms".into(), "1".into())],
        // Each `poll` sends what was written: the tests crash sinks at
        // chosen points.
        send_batch_messages: 1,
        create_topics: true,
        topic_partitions: 1,
        topic_replication_factor: -1,
    }
}

/// [`config`] for Avro with the registry at `url` (no sign-in).
fn with_registry(brokers: &str, url: String) -> KafkaConfig {
    let mut c = config(brokers, Format::Avro);
    c.registry = Some(RegistryConfig {
        url,
        username: None,
        password: None,
    });
    c
}

fn open(config: KafkaConfig) -> KafkaSink {
    KafkaSink::open(config, NumbersMode::Auto, HashMap::new()).unwrap()
}

/// Writes and sends `changes` without waiting for their acknowledgements,
/// as the pipeline does after each batch.
fn send(sink: &mut KafkaSink, changes: &[Change]) {
    let rejected = sink.write(changes).unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    sink.poll().unwrap();
}

/// Writes `changes` and waits until they are acknowledged: the point at
/// which the tests take checkpoints or crash sinks.
fn deliver(sink: &mut KafkaSink, changes: &[Change]) {
    send(sink, changes);
    sink.flush().unwrap();
}

fn seqs(got: &[Got]) -> Vec<String> {
    let mut v: Vec<String> = got
        .iter()
        .filter(|g| g.value.is_some())
        .map(|g| g.headers[HEADER_SEQUENCE].clone())
        .collect();
    v.sort();
    v
}

#[test]
fn json_envelopes_keys_headers_and_tombstones() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut sink = open(config(&brokers, Format::Json));
    let changes = [
        change(1, "a", Op::Insert, "1.50"),
        change(2, "b", Op::Insert, "2"),
        change(3, "a", Op::Modify, "12345678901234567890123456789.5"),
        change(4, "a", Op::Remove, "3"),
    ];
    deliver(&mut sink, &changes);
    sink.flush().unwrap();
    let got = consume(&brokers, "cdc.orders", 3);
    assert_eq!(got.len(), 5, "four changes and one tombstone");
    let a: Vec<&Got> = got.iter().filter(|g| g.key == br#"{"id":"a"}"#).collect();
    assert_eq!(a.len(), 4);
    assert!(
        a.iter().all(|g| g.partition == a[0].partition),
        "one partition per key"
    );
    let ops: Vec<String> = a
        .iter()
        .map(|g| match &g.value {
            Some(v) => serde_json::from_slice::<serde_json::Value>(v).unwrap()["op"]
                .as_str()
                .unwrap()
                .to_owned(),
            None => "tombstone".into(),
        })
        .collect();
    assert_eq!(
        ops,
        ["c", "u", "d", "tombstone"],
        "in order per key, tombstone last"
    );
    let text = String::from_utf8(a[1].value.clone().unwrap()).unwrap();
    assert!(
        text.contains(r#""price":12345678901234567890123456789.5"#),
        "numbers keep every digit: {text}"
    );
    let modify: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(modify["source"]["sequence_number"], "1003");
    for g in &got {
        assert_eq!(g.headers["dynamodb.table"], "orders");
        assert_eq!(g.headers["dynamodb.shard_id"], "shard-1");
    }
    assert_eq!(sink.stats().tombstones, 1);
    let positions = sink.durable_positions().clone();
    assert!(positions.covers(
        &dynamo_cdc_core::ShardKey::new("orders", "shard-1"),
        &SequenceNumber::parse("1004").unwrap()
    ));
}

#[test]
fn avro_values_use_the_registry_and_decode_with_its_schemas() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let registry = RegistryDouble::start();
    let mut c = config(&brokers, Format::Avro);
    c.registry = Some(RegistryConfig {
        url: registry.url(),
        username: Some("user".into()),
        password: Some(dynamo_cdc_core::Secret::new("secret")),
    });
    let mut sink = open(c);
    deliver(&mut sink, &[change(1, "a", Op::Insert, "7")]);
    // A fraction widens the inferred int64 column: a new value version.
    deliver(&mut sink, &[change(2, "a", Op::Modify, "0.25")]);
    let got = consume(&brokers, "cdc.orders", 1);
    assert_eq!(got.len(), 2);
    assert_eq!(registry.versions("cdc.orders-key").len(), 1);
    let versions = registry.versions("cdc.orders-value");
    assert_eq!(versions.len(), 2, "a widened schema is a new version");
    // One a registry checking BACKWARD compatibility (Confluent's default)
    // takes: it reads every datum the version before could write.
    let parsed = |id: u32| apache_avro::Schema::parse_str(&registry.schema(id).unwrap()).unwrap();
    assert_eq!(
        apache_avro::schema_compatibility::SchemaCompatibility::can_read(
            &parsed(versions[0]),
            &parsed(versions[1])
        )
        .unwrap(),
        apache_avro::schema_compatibility::Compatibility::Full
    );
    for (g, price) in got.iter().zip(["Long(7)", "String(\"0.25\")"]) {
        let value = g.value.as_ref().unwrap();
        assert_eq!(value[0], 0, "magic byte");
        let text = format!("{:?}", registered(&registry, value));
        assert!(text.contains(price), "{price} in {text}");
        let key = registered(&registry, &g.key);
        assert!(format!("{key:?}").contains("\"a\""), "{key:?}");
    }

    // A set of integers that takes a fraction: two arrays cannot share a
    // union, so the set becomes DynamoDB-JSON text, and the new version
    // still reads what the last one wrote.
    let with_set = |seq, numbers: &[&str]| {
        let mut c = change(seq, "c", Op::Insert, "1");
        let set = numbers.iter().map(|t| Number::parse(t).unwrap()).collect();
        c.new_image
            .as_mut()
            .unwrap()
            .insert("sizes".into(), AttributeValue::Ns(set));
        c
    };
    deliver(&mut sink, &[with_set(10, &["1", "2"])]);
    deliver(&mut sink, &[with_set(11, &["2.5"])]);
    let versions = registry.versions("cdc.orders-value");
    assert_eq!(versions.len(), 4);
    assert_eq!(
        apache_avro::schema_compatibility::SchemaCompatibility::can_read(
            &parsed(versions[2]),
            &parsed(versions[3])
        )
        .unwrap(),
        apache_avro::schema_compatibility::Compatibility::Full
    );
    let got = consume(&brokers, "cdc.orders", 1);
    let last = format!(
        "{:?}",
        registered(&registry, got[3].value.as_ref().unwrap())
    );
    assert!(last.contains(r#"{\"NS\":[\"2.5\"]}"#), "{last}");

    registry.refuse_new_versions("cdc.orders-value");
    let mut wide = change(12, "b", Op::Insert, "1");
    wide.new_image
        .as_mut()
        .unwrap()
        .insert("extra".into(), s("x"));
    let error = sink.write(&[wide]).unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(
            error.inner().downcast_ref::<KafkaSinkError>(),
            Some(KafkaSinkError::Registry { .. })
        ),
        "{text}"
    );
    // A schema the registry refuses does not pass by waiting.
    assert_eq!(error.kind(), dynamo_cdc_core::ErrorKind::Fatal, "{text}");
    assert!(text.contains("cdc.orders-value"), "{text}");
    assert!(text.contains("incompatible"), "{text}");
}

#[test]
fn the_flat_shape_fits_its_schema_to_the_row_it_writes_not_the_old_image() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let registry = RegistryDouble::start();
    let mut c = with_registry(&brokers, registry.url());
    c.envelope = Envelope::Flat;
    let mut sink = open(c);
    deliver(&mut sink, &[change(1, "a", Op::Insert, "7")]);
    // The old image held a fraction; the row written holds an integer.
    let mut modify = change(2, "a", Op::Modify, "8");
    modify
        .old_image
        .as_mut()
        .unwrap()
        .insert("price".into(), n("0.5"));
    deliver(&mut sink, &[modify]);
    assert_eq!(
        registry.versions("cdc.orders-value").len(),
        1,
        "an image the flat message does not carry widens nothing"
    );
    let got = consume(&brokers, "cdc.orders", 1);
    let prices: Vec<String> = got
        .iter()
        .map(|g| {
            let text = format!("{:?}", registered(&registry, g.value.as_ref().unwrap()));
            ["Long(7)", "Long(8)"]
                .into_iter()
                .find(|p| text.contains(p))
                .unwrap_or_else(|| panic!("no integer price in {text}"))
                .to_owned()
        })
        .collect();
    assert_eq!(prices, ["Long(7)", "Long(8)"]);
}

/// A message of ours as a run before this one left it: sequence number,
/// key, value (`None`: a tombstone).
type Earlier<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);

/// Messages of table `orders`, shard `shard-1`, on `cdc.orders` as a run
/// before this one left them.
fn written_by_an_earlier_run(brokers: &str, messages: &[Earlier<'_>]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (seq, key, value) in messages {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_TABLE,
                value: Some("orders"),
            })
            .insert(Header {
                key: HEADER_SHARD,
                value: Some("shard-1"),
            })
            .insert(Header {
                key: HEADER_SEQUENCE,
                value: Some(*seq),
            });
        let mut record = BaseRecord::<[u8], [u8]>::to("cdc.orders")
            .key(*key)
            .headers(headers);
        if let Some(value) = value {
            record = record.payload(*value);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_tombstone_alone_does_not_count_as_its_change_delivered() {
    // A run stopped after a delete's tombstone landed but before its value
    // (too large for the topic) reached the dead-letter topic: the value
    // is nowhere, so the change must be written again.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    written_by_an_earlier_run(&brokers, &[("1001", br#"{"id":"a"}"#, None)]);

    let mut sink = open(config(&brokers, Format::Json));
    deliver(&mut sink, &[change(1, "a", Op::Remove, "1")]);
    assert_eq!(sink.stats().already_held, 0, "not found: written again");
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 1)), ["1001"]);
}

#[test]
fn a_delete_whose_value_landed_without_its_tombstone_gets_the_tombstone_alone() {
    // A run stopped between a delete's value and its tombstone: the value
    // is not sent again, the tombstone is (compaction would keep the
    // deleted item otherwise), and the change's position moves.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    // Change 1001's value and tombstone both landed; 1002's value only;
    // 1003's value too, then a later change of its item (1004).
    written_by_an_earlier_run(
        &brokers,
        &[
            ("1001", br#"{"id":"a"}"#, Some(b"{}")),
            ("1001", br#"{"id":"a"}"#, None),
            ("1002", br#"{"id":"b"}"#, Some(b"{}")),
            ("1003", br#"{"id":"c"}"#, Some(b"{}")),
            ("1004", br#"{"id":"c"}"#, Some(b"{}")),
        ],
    );

    let mut sink = open(config(&brokers, Format::Json));
    deliver(
        &mut sink,
        &[
            change(1, "a", Op::Remove, "1"),
            change(2, "b", Op::Remove, "1"),
            change(3, "c", Op::Remove, "1"),
            change(4, "c", Op::Insert, "1"),
        ],
    );
    sink.flush().unwrap();
    assert_eq!(sink.stats().already_held, 4, "every value found");
    let got = consume(&brokers, "cdc.orders", 1);
    let shapes: Vec<(String, bool)> = got
        .iter()
        .map(|g| (g.headers[HEADER_SEQUENCE].clone(), g.value.is_some()))
        .collect();
    let want = [
        ("1001", true),
        ("1001", false),
        ("1002", true),
        ("1003", true),
        ("1004", true),
        ("1002", false),
    ];
    assert_eq!(
        shapes,
        want.map(|(s, v)| (s.to_owned(), v)),
        "1002's tombstone alone was sent; not 1003's, which would delete the item 1004 wrote"
    );
    assert_eq!(got[5].key, br#"{"id":"b"}"#);
    let shard = ShardKey::new("orders", "shard-1");
    assert_eq!(
        sink.durable_positions().get(&shard).map(|s| s.as_str()),
        Some("1004")
    );
}

#[test]
fn a_restarted_sink_skips_what_the_topic_already_holds() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let all: Vec<Change> = (1..=9)
        .map(|i| change(i, &format!("k{}", i % 4), Op::Insert, "1"))
        .collect();

    let mut first = open(config(&brokers, Format::Json));
    deliver(&mut first, &all[..3]);
    // The checkpoint after the first batch (as the driver records it:
    // positions and the opaque state, through JSON)...
    let (positions, state) = (first.durable_positions().clone(), first.resume_state());
    let state: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(
        state["offsets"]["cdc.orders"].as_object().map(|o| o.len()),
        Some(2),
        "{state}"
    );
    // ...then more was sent before a crash.
    deliver(&mut first, &all[3..6]);
    drop(first);

    let mut second = open(config(&brokers, Format::Json));
    second.adopt(&positions, &state);
    assert_eq!(
        second.resume_state(),
        state,
        "the offsets survive the round trip"
    );
    // The source resumes at the checkpoint: changes 4 to 9 come again.
    deliver(&mut second, &all[3..]);
    second.flush().unwrap();
    assert_eq!(second.stats().already_held, 3);
    let got = consume(&brokers, "cdc.orders", 2);
    let want: Vec<String> = (1001..=1009).map(|s| s.to_string()).collect();
    assert_eq!(seqs(&got), want, "every change exactly once");
}

#[test]
fn oversized_messages_go_to_the_dead_letter_topic_or_stop_the_run() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    cluster.create_topic("cdc.dead", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut big = change(1, "big", Op::Insert, "1");
    big.new_image
        .as_mut()
        .unwrap()
        .insert("blob".into(), AttributeValue::B(vec![7; 4000]));
    let small = change(2, "small", Op::Insert, "1");

    let mut c = config(&brokers, Format::Json);
    c.properties
        .push(("message.max.bytes".into(), "3000".into()));
    let mut no_dlq = open(c.clone());
    let error = no_dlq
        .write(&[big.clone(), small.clone()])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("1001") && error.contains("dead_letter_topic"),
        "{error}"
    );
    no_dlq.flush().unwrap();
    assert!(
        consume(&brokers, "cdc.orders", 1).is_empty(),
        "nothing after the undeliverable change was sent"
    );

    c.dead_letter_topic = Some("cdc.dead".into());
    let mut with_dlq = open(c);
    // The dead-lettered change is counted there, not as delivered.
    let counters = dynamo_cdc_testkit::metrics::Counters::default();
    metrics::with_local_recorder(&counters, || {
        deliver(&mut with_dlq, &[big, small]);
        with_dlq.flush().unwrap();
    });
    assert_eq!(
        counters.get("dynamo_cdc_changes_delivered_total{sink=kafka,table=orders}"),
        1
    );
    assert_eq!(
        counters.get("dynamo_cdc_kafka_dead_letter_messages_total{table=orders}"),
        1
    );
    let dead = consume(&brokers, "cdc.dead", 1);
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].headers[HEADER_ERROR].contains("message.max.bytes"),
        "{:?}",
        dead[0].headers
    );
    assert_eq!(dead[0].headers["dynamo-cdc.topic"], "cdc.orders");
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 1)), ["1002"]);
    assert_eq!(with_dlq.stats().dead_lettered, 1);
}

#[test]
fn a_broker_that_cannot_be_reached_at_start_is_transient() {
    // Nothing listens there. (The binary's tests bring the broker up
    // afterwards; see tests/tests/kafka_cli.rs.)
    let nowhere = refused_port();
    let mut sink = open(config(&nowhere.address(), Format::Json));
    let e = sink.prepare(&["orders".to_owned()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("cannot reach"), "{e}");
}

#[test]
fn a_registry_that_cannot_be_reached_is_waited_out_not_fatal() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let nowhere = refused_port();
    let mut sink = open(with_registry(
        &brokers,
        format!("http://{}", nowhere.address()),
    ));
    let e = sink.write(&[change(1, "a", Op::Insert, "1")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("cannot reach"), "{e}");
}

#[test]
fn a_topic_without_a_leader_yet_is_waited_out_not_taken_for_missing() {
    // Right after its creation, or while its leader moves, a topic answers
    // metadata requests with an error that passes by itself: the run
    // pauses and asks again, whether or not it may create topics.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    cluster
        .topic_error(
            "cdc.orders",
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        )
        .unwrap();
    let brokers = cluster.bootstrap_servers();
    for create_topics in [false, true] {
        let mut c = config(&brokers, Format::Json);
        c.create_topics = create_topics;
        let mut sink = open(c);
        let e = sink.prepare(&["orders".to_owned()]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
        assert!(e.to_string().contains("not ready"), "{e}");
    }
    cluster
        .topic_error(
            "cdc.orders",
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
        )
        .unwrap();
    let mut c = config(&brokers, Format::Json);
    c.create_topics = false;
    let mut sink = open(c);
    sink.prepare(&["orders".to_owned()]).unwrap();
    deliver(&mut sink, &[change(1, "a", Op::Insert, "1")]);
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 1)), ["1001"]);
}

#[test]
fn a_topic_the_checkpoint_knows_but_the_brokers_do_not_show_is_waited_for() {
    // A broker just restarted may answer metadata without a topic for a
    // while. One the checkpoint recorded offsets in existed: the run
    // waits for it; a topic nothing knows of stops it (create_topics off).
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut c = config(&brokers, Format::Json);
    c.create_topics = false;
    let mut first = open(c.clone());
    deliver(&mut first, &[change(1, "a", Op::Insert, "1")]);
    first.flush().unwrap();
    let (positions, offsets) = (first.durable_positions().clone(), first.offsets());
    drop(first);
    let hidden = || {
        cluster
            .topic_error(
                "cdc.orders",
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
            )
            .unwrap();
    };
    hidden();
    let mut unknown = open(c.clone());
    let e = unknown.prepare(&["orders".to_owned()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
    let mut second = open(c);
    second.adopt_checkpoint(&positions, offsets);
    let e = second.prepare(&["orders".to_owned()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("checkpoint"), "{e}");
    cluster
        .topic_error(
            "cdc.orders",
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
        )
        .unwrap();
    second.prepare(&["orders".to_owned()]).unwrap();
    deliver(
        &mut second,
        &[
            change(1, "a", Op::Insert, "1"),
            change(2, "b", Op::Insert, "1"),
        ],
    );
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 1)), ["1001", "1002"]);
}

#[test]
fn a_topic_whose_offsets_cannot_be_asked_is_waited_out() {
    // The read-back asks each partition's offsets first: a broker that
    // fails that request pauses the run, and the next attempt reads back.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::ListOffsets,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN; 8],
    );
    let mut sink = open(config(&brokers, Format::Json));
    let e = sink.prepare(&["orders".to_owned()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("offsets"), "{e}");
    cluster.clear_request_errors(rdkafka::types::RDKafkaApiKey::ListOffsets);
    sink.prepare(&["orders".to_owned()]).unwrap();
    deliver(&mut sink, &[change(1, "a", Op::Insert, "1")]);
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 1)), ["1001"]);
}

#[test]
fn a_read_back_the_brokers_refuse_by_their_access_rules_stops_the_run() {
    // Messages past the recorded offset must be read back; a principal
    // allowed to write the topic but not to read it would otherwise wait
    // on the read-back for ever.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut first = open(config(&brokers, Format::Json));
    deliver(&mut first, &[change(1, "a", Op::Insert, "1")]);
    first.flush().unwrap();
    drop(first);
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::Fetch,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1000],
    );
    let mut second = open(config(&brokers, Format::Json));
    let e = second.prepare(&["orders".to_owned()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
    assert!(e.to_string().contains("READ"), "{e}");
}

#[test]
fn a_missing_dead_letter_topic_stops_the_run_before_reading_when_it_may_not_be_created() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut c = config(&brokers, Format::Json);
    c.create_topics = false;
    c.dead_letter_topic = Some("cdc.dead".into());
    let mut sink = open(c);
    let e = sink.prepare(&["orders".to_owned()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
    let text = e.to_string();
    assert!(text.contains("cdc.dead"), "{text}");
    assert!(text.contains("create_topics = true"), "{text}");
}

#[test]
fn a_missing_topic_stops_the_run_before_reading_when_it_may_not_be_created() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut c = config(&brokers, Format::Json);
    c.create_topics = false;
    let mut sink = open(c);
    let e = sink.prepare(&["orders".to_owned()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
    let text = e.to_string();
    assert!(text.contains("cdc.orders"), "{text}");
    assert!(text.contains("create_topics = true"), "{text}");
}

#[test]
fn broker_trouble_pauses_and_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let changes: Vec<Change> = (1..=20)
        .map(|i| change(i, &format!("k{i}"), Op::Insert, "1"))
        .collect();
    let mut sink = open(config(&brokers, Format::Json));
    deliver(&mut sink, &changes[..5]);
    // Request errors the idempotent producer retries.
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    send(&mut sink, &changes[5..10]);
    // Slow round trips.
    cluster
        .broker_round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    send(&mut sink, &changes[10..12]);
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    // Nothing in flight from here: with the window full, `poll` would wait
    // for the broker (the pause the pipeline relies on).
    sink.flush().unwrap();
    // The broker goes down with a group in flight: `poll` goes on (the
    // next group is encoded meanwhile), the group's changes are not
    // delivered yet, and `flush` waits for the broker.
    cluster.broker_down(-1).unwrap();
    send(&mut sink, &changes[12..]);
    let key = dynamo_cdc_core::ShardKey::new("orders", "shard-1");
    let last = SequenceNumber::parse("1020").unwrap();
    assert!(!sink.durable_positions().covers(&key, &last));
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let flusher = scope.spawn(|| {
            sink.flush().unwrap();
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!flusher.is_finished(), "the sink waited for the broker");
        cluster.broker_up(-1).unwrap();
        let waited = flusher.join().unwrap();
        assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    });
    let want: Vec<String> = (1001..=1020).map(|s| s.to_string()).collect();
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 1)), want);
    assert_eq!(
        sink.durable_positions().get(&key).map(ToString::to_string),
        Some("1020".to_owned())
    );
}

/// A stop asked for while the brokers are down ends the sink's wait
/// (after a few seconds without an answer, not for ever): the pass ends
/// with a transient error and the run stops at its last commit. What was
/// in flight is not counted as delivered.
#[test]
fn a_stop_ends_a_wait_on_brokers_that_are_down() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let changes: Vec<Change> = (1..=3)
        .map(|i| change(i, &format!("k{i}"), Op::Insert, "1"))
        .collect();
    let mut sink = open(config(&brokers, Format::Json));
    // Brokers that answer are waited for, stop or not: the graceful stop.
    let stop = Arc::new(AtomicBool::new(true));
    sink.stop_flag(&stop);
    deliver(&mut sink, &changes[..1]);
    stop.store(false, Ordering::SeqCst);
    cluster.broker_down(-1).unwrap();
    send(&mut sink, &changes[1..]);
    std::thread::scope(|scope| {
        let flusher = scope.spawn(|| sink.flush());
        // Without a stop, the wait lasts while the brokers are down.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!flusher.is_finished(), "the sink waits for the brokers");
        stop.store(true, Ordering::SeqCst);
        let e = flusher.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert!(e.to_string().contains("stopping"), "{e}");
    });
    let key = ShardKey::new("orders", "shard-1");
    assert!(
        !sink
            .durable_positions()
            .covers(&key, &SequenceNumber::parse("1002").unwrap())
    );
}

#[test]
fn a_sink_waiting_for_room_hands_nothing_over_once_its_lease_ended() {
    // The run loop checked the lease before the batch; the sink then waited
    // for room while the brokers were slow, and the lease ended meanwhile.
    // A message handed over now could land after the next owner read the
    // topic back: it is not handed over.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let changes: Vec<Change> = (1..=4)
        .map(|i| change(i, &format!("k{i}"), Op::Insert, "1"))
        .collect();
    let mut sink = open(config(&brokers, Format::Json));
    let lease_over = Arc::new(AtomicBool::new(false));
    let over = lease_over.clone();
    sink.write_guard(Arc::new(move || {
        if over.load(Ordering::SeqCst) {
            Err("the lease on table orders (epoch 7) ran out".to_owned())
        } else {
            Ok(())
        }
    }));
    deliver(&mut sink, &changes[..1]);
    // Two groups in flight, unanswered: no room for a third.
    cluster.broker_down(-1).unwrap();
    send(&mut sink, &changes[1..2]);
    send(&mut sink, &changes[2..3]);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            assert!(sink.write(&changes[3..]).unwrap().is_empty());
            sink.poll()
        });
        // Room comes only once the broker answers, after the lease ended.
        lease_over.store(true, Ordering::SeqCst);
        cluster.broker_up(-1).unwrap();
        let e = writer.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert!(e.to_string().contains("epoch 7"), "{e}");
    });
    // What was in flight before lands.
    sink.flush().unwrap();
    let want: Vec<String> = (1001..=1003).map(|s| s.to_string()).collect();
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 1)), want);
    let key = ShardKey::new("orders", "shard-1");
    assert!(
        !sink
            .durable_positions()
            .covers(&key, &SequenceNumber::parse("1004").unwrap())
    );
}

#[test]
fn a_record_the_broker_refuses_goes_to_the_dead_letter_topic_and_the_rest_flows() {
    // A broker whose record checks refuse a message refuses it again on
    // every retry: it is kept in the dead-letter topic, or stops the run
    // without one, instead of pausing the pipeline for good.
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    cluster.create_topic("cdc.dead", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let changes: Vec<Change> = (1..=3)
        .map(|i| change(i, &format!("k{i}"), Op::Insert, "1"))
        .collect();
    let mut with_dead = config(&brokers, Format::Json);
    with_dead.dead_letter_topic = Some("cdc.dead".into());
    let mut sink = open(with_dead);
    deliver(&mut sink, &changes[..1]);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    );
    let counters = dynamo_cdc_testkit::metrics::Counters::default();
    metrics::with_local_recorder(&counters, || {
        deliver(&mut sink, &changes[1..2]);
        deliver(&mut sink, &changes[2..]);
    });
    // Delivered: 1003 only (1002 went to the dead-letter topic).
    assert_eq!(
        counters.get("dynamo_cdc_changes_delivered_total{sink=kafka,table=orders}"),
        1
    );
    assert_eq!(
        counters.get("dynamo_cdc_kafka_dead_letter_messages_total{table=orders}"),
        1
    );
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 1)), ["1001", "1003"]);
    let dead = consume(&brokers, "cdc.dead", 1);
    assert_eq!(seqs(&dead), ["1002"]);
    assert!(
        dead[0].headers[HEADER_ERROR].contains("INVALID_RECORD"),
        "{:?}",
        dead[0].headers
    );
    let key = ShardKey::new("orders", "shard-1");
    assert_eq!(
        sink.durable_positions().get(&key).map(ToString::to_string),
        Some("1003".to_owned())
    );

    // Without a dead-letter topic the run stops, naming the change.
    let mut sink = open(config(&brokers, Format::Json));
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    );
    let later = [change(4, "k4", Op::Insert, "1")];
    assert!(sink.write(&later).unwrap().is_empty());
    let e = sink.poll().and_then(|()| sink.flush()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fatal);
    assert!(
        e.to_string().contains("1004") && e.to_string().contains("INVALID_RECORD"),
        "{e}"
    );

    // A missing permission is no outage: the run stops.
    let mut sink = open(config(&brokers, Format::Json));
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let later = [change(5, "k5", Op::Insert, "1")];
    assert!(sink.write(&later).unwrap().is_empty());
    let e = sink.poll().and_then(|()| sink.flush()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");

    // Nor is one the idempotent producer needs to get its id: librdkafka
    // fails for good, and its messages only say so (`_FATAL`, purged).
    cluster.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
    );
    let mut sink = open(config(&brokers, Format::Json));
    let later = [change(6, "k6", Op::Insert, "1")];
    assert!(sink.write(&later).unwrap().is_empty());
    let e = sink.poll().and_then(|()| sink.flush()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
}

#[test]
fn an_envelope_whose_new_image_does_not_fit_widens_nothing() {
    // The old image fits (and has an attribute the schema lacks); the new
    // one breaks the declaration. The change is dead-lettered, and the
    // schema is not left widened by the old image alone.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let registry = RegistryDouble::start();
    let c = with_registry(&brokers, registry.url());
    let declared = dynamo_cdc_transform::DeclaredSchema::parse_avsc(
        r#"{"type":"record","name":"orders","fields":[{"name":"price","type":["null","long"]}]}"#,
    )
    .unwrap();
    let mut sink = KafkaSink::open(
        c,
        NumbersMode::Auto,
        HashMap::from([("orders".to_owned(), declared)]),
    )
    .unwrap();
    let mut modify = change(1, "a", Op::Modify, "7.5");
    let old = modify.old_image.as_mut().unwrap();
    old.insert("price".into(), n("7"));
    old.insert("extra".into(), s("only in the old image"));
    let rejected = sink.write(&[modify]).unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].error.contains("price"), "{}", rejected[0].error);
    deliver(&mut sink, &[change(2, "a", Op::Insert, "8")]);
    let versions = registry.versions("cdc.orders-value");
    assert_eq!(versions.len(), 1);
    let schema = registry.schema(versions[0]).unwrap();
    assert!(!schema.contains("extra"), "{schema}");
}

/// A delete whose old image does not fit the declaration is dead-lettered,
/// and its tombstone is sent all the same: the key does not depend on the
/// value, and a compacted topic would otherwise keep the deleted item.
#[test]
fn a_delete_that_cannot_be_encoded_still_sends_its_tombstone() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let registry = RegistryDouble::start();
    let c = with_registry(&brokers, registry.url());
    let declared = dynamo_cdc_transform::DeclaredSchema::parse_avsc(
        r#"{"type":"record","name":"orders","fields":[{"name":"price","type":["null","long"]}]}"#,
    )
    .unwrap();
    let mut sink = KafkaSink::open(
        c,
        NumbersMode::Auto,
        HashMap::from([("orders".to_owned(), declared)]),
    )
    .unwrap();
    deliver(&mut sink, &[change(1, "a", Op::Insert, "7")]);
    // Written before the declaration: a price that is not a long.
    let remove = change(2, "a", Op::Remove, "7.5");
    let rejected = sink.write(&[remove]).unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].error.contains("price"), "{}", rejected[0].error);
    sink.poll().unwrap();
    sink.flush().unwrap();
    let got = consume(&brokers, "cdc.orders", 1);
    assert_eq!(got.len(), 2, "the insert, then the tombstone");
    assert!(got[0].value.is_some());
    assert!(got[1].value.is_none(), "a tombstone");
    assert_eq!(got[1].key, got[0].key, "for the deleted item's key");
    assert_eq!(got[1].headers[HEADER_SEQUENCE], "1002");
    // The change's position moves past it: it is dead-lettered, not lost.
    let key = ShardKey::new("orders", "shard-1");
    assert!(
        sink.durable_positions()
            .covers(&key, &SequenceNumber::parse("1002").unwrap())
    );
}

#[test]
fn a_restart_continues_the_value_schema_registered_last() {
    // The last run widened `gift` to a string. A restart whose first change
    // has `gift` as NULL would register a narrower schema (a `"null"`
    // field), which a registry checking compatibility refuses, stopping
    // the run: it continues from the registered schema instead.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let registry = RegistryDouble::start();
    let c = with_registry(&brokers, registry.url());
    let with_gift = |seq: u64, gift: AttributeValue| {
        let mut ch = change(seq, "a", Op::Insert, "7");
        ch.new_image.as_mut().unwrap().insert("gift".into(), gift);
        ch
    };
    let mut first = open(c.clone());
    deliver(&mut first, &[with_gift(1, s("wrapped"))]);
    drop(first);
    let subject = "cdc.orders-value";
    assert_eq!(registry.versions(subject).len(), 1);
    registry.refuse_new_versions(subject);

    let mut second = open(c);
    deliver(&mut second, &[with_gift(2, AttributeValue::Null)]);
    assert_eq!(registry.versions(subject).len(), 1, "no new version");
    let got = consume(&brokers, "cdc.orders", 1);
    let ids: Vec<&[u8]> = got
        .iter()
        .map(|g| &g.value.as_ref().unwrap()[1..5])
        .collect();
    assert_eq!(ids[0], ids[1], "both written with the registered schema");
    let text = format!(
        "{:?}",
        registered(&registry, got[1].value.as_ref().unwrap())
    );
    assert!(text.contains("gift"), "{text}");
}

#[test]
fn a_checkpoint_offset_past_the_end_does_not_stall_the_read_back() {
    // A broker that lost acknowledged messages (or a recreated topic) ends
    // before the offsets the checkpoint recorded: reading back must still
    // finish, and what the topic holds is still skipped.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let all: Vec<Change> = (1..=4)
        .map(|i| change(i, &format!("k{i}"), Op::Insert, "1"))
        .collect();
    let mut first = open(config(&brokers, Format::Json));
    deliver(&mut first, &all[..2]);
    first.flush().unwrap();
    drop(first);

    let mut second = open(config(&brokers, Format::Json));
    let offsets = BTreeMap::from([("cdc.orders".to_owned(), BTreeMap::from([(0, 1_000)]))]);
    second.adopt_checkpoint(&dynamo_cdc_core::Positions::new(), offsets);
    let started = std::time::Instant::now();
    deliver(&mut second, &all);
    second.flush().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let want: Vec<String> = (1001..=1004).map(|s| s.to_string()).collect();
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 1)), want);
    // The offset recorded from now on is the partition's own end, not the
    // lost one: kept, it would be recorded forever, and once the partition
    // grew past it a start would read back from there and miss what came
    // before.
    assert_eq!(second.offsets()["cdc.orders"][&0], 4);
}

#[test]
fn a_partition_past_its_end_has_every_partition_of_the_topic_read_back() {
    // One partition ends before its recorded offset, so every end the
    // broker gave is suspect and each partition is read back, those that
    // end at their recorded offset too: reading from the end itself must
    // finish, and nothing is written twice.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 4, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let all: Vec<Change> = (1..=8)
        .map(|i| change(i, &format!("k{i}"), Op::Insert, "1"))
        .collect();
    let mut first = open(config(&brokers, Format::Json));
    deliver(&mut first, &all[..4]);
    first.flush().unwrap();
    let (positions, ends) = (first.durable_positions().clone(), first.offsets());
    drop(first);
    let mut recorded = ends["cdc.orders"].clone();
    let (&lost, _) = recorded.iter().find(|(_, end)| **end > 0).unwrap();
    recorded.insert(lost, 1_000);
    let mut second = open(config(&brokers, Format::Json));
    second.adopt_checkpoint(
        &positions,
        BTreeMap::from([("cdc.orders".to_owned(), recorded)]),
    );
    deliver(&mut second, &all);
    second.flush().unwrap();
    let want: Vec<String> = (1001..=1008).map(|s| s.to_string()).collect();
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 4)), want);
}

#[test]
fn a_checkpoint_offset_below_what_retention_kept_reads_back_from_the_first_message_held() {
    // The topic's retention deleted the offset the checkpoint recorded
    // (the bridge was stopped longer than the topic keeps messages), but
    // not the messages the sink wrote after it. Reading back starts at the
    // first offset still held, not at the recorded one, which the broker no
    // longer has (left to `auto.offset.reset`, set to `latest` here, it
    // would read from the end and find nothing): the changes it finds are
    // not written twice.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let all: Vec<Change> = (1..=6)
        .map(|i| change(i, &format!("k{i}"), Op::Insert, "1"))
        .collect();
    let mut first = open(config(&brokers, Format::Json));
    deliver(&mut first, &all[..2]);
    let (positions, state) = (first.durable_positions().clone(), first.resume_state());
    assert_eq!(state["offsets"]["cdc.orders"]["0"], 2, "{state}");

    // Another writer's messages, then the sink's next two, then the crash.
    // The mock cluster keeps 5 MiB a partition: the first messages go.
    let filler: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let payload = vec![b'x'; 512 * 1024];
    for _ in 0..12 {
        filler
            .send(
                rdkafka::producer::BaseRecord::to("cdc.orders")
                    .partition(0)
                    .key("filler")
                    .payload(&payload),
            )
            .unwrap();
        rdkafka::producer::Producer::flush(&filler, Duration::from_secs(30)).unwrap();
    }
    deliver(&mut first, &all[2..4]);
    drop(first);
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let (low, high) = watcher
        .fetch_watermarks("cdc.orders", 0, Duration::from_secs(10))
        .unwrap();
    assert!(
        low > 2 && high - low > 2,
        "watermarks {low}..{high}: the test needs the recorded offset gone and changes 3 and 4 kept"
    );

    let mut c = config(&brokers, Format::Json);
    c.properties
        .push(("auto.offset.reset".into(), "latest".into()));
    let mut second = open(c);
    second.adopt(&positions, &state);
    // The source resumes at the checkpoint: changes 3 to 6 come again.
    deliver(&mut second, &all[2..]);
    second.flush().unwrap();
    assert_eq!(second.stats().already_held, 2, "changes 3 and 4, found");
    let got = consume(&brokers, "cdc.orders", 1);
    let ours: Vec<Got> = got.into_iter().filter(|g| g.key != b"filler").collect();
    let want: Vec<String> = (1003..=1006).map(|s| s.to_string()).collect();
    assert_eq!(seqs(&ours), want, "each change once");
    assert_eq!(second.offsets()["cdc.orders"][&0], high + 2);
}

#[test]
fn a_crash_mid_batch_across_partitions_resends_only_what_is_missing() {
    // Found by the chaos harness: a batch spreads over partitions that are
    // acknowledged independently, so a crash can leave change 1003 of a
    // shard in one partition while 1001 and 1002, bound for others, never
    // arrived. Reading back must not take 1003 to mean "up to 1003".
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let all: Vec<Change> = (1..=4)
        .map(|i| change(i, &format!("key-{i}"), Op::Insert, "1"))
        .collect();
    let mut crashed = open(config(&brokers, Format::Json));
    deliver(&mut crashed, &all[2..3]);
    drop(crashed);

    let mut restarted = open(config(&brokers, Format::Json));
    deliver(&mut restarted, &all);
    restarted.flush().unwrap();
    assert_eq!(restarted.stats().already_held, 1);
    let want: Vec<String> = (1001..=1004).map(|s| s.to_string()).collect();
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 3)), want);
}

#[test]
fn a_checkpoint_taken_before_read_back_changes_come_again_keeps_them_findable() {
    // Found by the chaos harness's long profile: a restarted sink read back
    // changes a crashed run had sent, and a checkpoint was stored before the
    // source had brought those changes again. Its offsets pointed past them
    // while its positions did not cover them, so the next start read back
    // from past them, found nothing, and sent them a second time.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let all: Vec<Change> = (1..=6)
        .map(|i| change(i, &format!("k{}", i % 3), Op::Insert, "1"))
        .collect();

    let mut crashed = open(config(&brokers, Format::Json));
    deliver(&mut crashed, &all[..4]);
    drop(crashed);

    // The restart reads back 1 to 4; the source brings only 1 and 2 before
    // a checkpoint is stored, then the run fails again.
    let mut second = open(config(&brokers, Format::Json));
    deliver(&mut second, &all[..2]);
    let (positions, offsets) = (second.durable_positions().clone(), second.offsets());
    drop(second);

    let mut third = open(config(&brokers, Format::Json));
    third.adopt_checkpoint(&positions, offsets);
    deliver(&mut third, &all);
    third.flush().unwrap();
    let want: Vec<String> = (1001..=1006).map(|s| s.to_string()).collect();
    assert_eq!(
        seqs(&consume(&brokers, "cdc.orders", 2)),
        want,
        "every change exactly once"
    );
}

#[test]
fn changes_found_by_the_read_back_move_the_position() {
    // A crash after the shard's last changes reached the topic, before the
    // checkpoint. The restart finds them; the source brings them again and
    // nothing comes after them (the shard closed). The position must still
    // reach them, and the topic's offsets must move past them: a position
    // left behind for good would be read from again at every start, and
    // once those records were trimmed it would look like a gap.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let all: Vec<Change> = (1..=6)
        .map(|i| change(i, &format!("k{}", i % 3), Op::Insert, "1"))
        .collect();

    let mut crashed = open(config(&brokers, Format::Json));
    deliver(&mut crashed, &all[..3]);
    let (positions, offsets) = (crashed.durable_positions().clone(), crashed.offsets());
    deliver(&mut crashed, &all[3..]);
    let end = crashed.offsets();
    drop(crashed);

    let mut restarted = open(config(&brokers, Format::Json));
    restarted.adopt_checkpoint(&positions, offsets.clone());
    deliver(&mut restarted, &all[3..]);
    assert_eq!(restarted.stats().already_held, 3, "all found");
    let shard = ShardKey::new("orders", "shard-1");
    assert_eq!(
        restarted.durable_positions().get(&shard),
        Some(&SequenceNumber::parse("1006").unwrap()),
        "the found changes are durable"
    );
    assert_ne!(
        offsets, end,
        "the crashed run had moved past the checkpoint"
    );
    assert_eq!(
        restarted.offsets(),
        end,
        "the next start reads back from past what was found"
    );
    assert_eq!(
        seqs(&consume(&brokers, "cdc.orders", 2)),
        (1001..=1006).map(|s| s.to_string()).collect::<Vec<_>>(),
        "every change exactly once"
    );
}

#[test]
fn a_group_acknowledged_early_waits_for_the_groups_sent_before_it() {
    // Two tables whose topics live on different brokers: the first
    // table's group is held up by its broker, the second's is acknowledged
    // at once. The second must not count as delivered before the first,
    // neither in the positions nor in the offsets recorded for the
    // read-back (a restart would skip a change that was never stored, or
    // read back from past one the positions do not cover).
    let cluster = MockCluster::new(2).unwrap();
    for (topic, broker) in [("cdc.slow", 1), ("cdc.fast", 2)] {
        cluster.create_topic(topic, 1, 1).unwrap();
        cluster.partition_leader(topic, 0, Some(broker)).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let on = |table: &str, seq: u64| {
        let mut c = change(seq, &format!("k{seq}"), Op::Insert, "1");
        c.source.table = table.into();
        c
    };
    let mut sink = open(config(&brokers, Format::Json));
    deliver(&mut sink, &[on("slow", 1), on("fast", 2)]);
    let offsets = |sink: &KafkaSink| sink.resume_state()["offsets"].clone();
    let before = offsets(&sink);
    assert_eq!(before["cdc.fast"]["0"], 1, "{before}");

    cluster.broker_down(1).unwrap();
    send(&mut sink, &[on("slow", 3)]);
    send(&mut sink, &[on("fast", 4)]);
    // The second group is stored while the first waits ...
    let mut stored = consume(&brokers, "cdc.fast", 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "never stored");
        sink.poll().unwrap();
        stored = consume(&brokers, "cdc.fast", 1);
    }
    // ... and for a while after its acknowledgement came, nothing moves.
    let fast = dynamo_cdc_core::ShardKey::new("fast", "shard-1");
    let fourth = SequenceNumber::parse("1004").unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        sink.poll().unwrap();
        assert!(!sink.durable_positions().covers(&fast, &fourth));
        assert_eq!(offsets(&sink), before);
        std::thread::sleep(Duration::from_millis(50));
    }

    cluster.broker_up(1).unwrap();
    sink.flush().unwrap();
    assert!(sink.durable_positions().covers(&fast, &fourth));
    let after = offsets(&sink);
    assert_eq!(after["cdc.fast"]["0"], 2, "{after}");
    assert_eq!(after["cdc.slow"]["0"], 2, "{after}");
    assert_eq!(seqs(&consume(&brokers, "cdc.slow", 1)), ["1001", "1003"]);
}

#[test]
fn a_full_window_of_groups_in_flight_pauses_the_writer_until_the_broker_answers() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let changes: Vec<Change> = (1..=6)
        .map(|i| change(i, &format!("k{i}"), Op::Insert, "1"))
        .collect();
    let mut sink = open(config(&brokers, Format::Json));
    deliver(&mut sink, &changes[..1]);
    cluster.broker_down(-1).unwrap();
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            // One group per change: the window fills, then `poll` waits.
            for c in &changes[1..] {
                send(&mut sink, std::slice::from_ref(c));
            }
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!writer.is_finished(), "the writer waited for the broker");
        cluster.broker_up(-1).unwrap();
        let waited = writer.join().unwrap();
        assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    });
    sink.flush().unwrap();
    let want: Vec<String> = (1001..=1006).map(|s| s.to_string()).collect();
    assert_eq!(seqs(&consume(&brokers, "cdc.orders", 1)), want);
}
