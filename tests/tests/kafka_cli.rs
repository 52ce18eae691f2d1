//! The `dynamo-cdc` binary writing to Kafka (librdkafka's mock cluster, on
//! real loopback ports): both sinks together, Avro through the registry
//! double, and SIGKILL restarts while the stream simulator keeps changing
//! items: every change in Kafka exactly once, in order per key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apache_avro::Schema;
use dynamo_cdc_testkit::registry::RegistryDouble;
use dynamo_cdc_testkit::strategies::{get_records_json, stream_record_json};
use dynamo_cdc_testkit::streams_sim::StreamSim;
use dynamo_cdc_tests::kafka::{TopicMessage, read_topic};
use dynamo_cdc_tests::{BootstrapGate, Scratch, StderrLines, read_rows, run_command};
use rdkafka::mocking::MockCluster;
use serde_json::json;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every change (not tombstone) exactly once, and per key in sequence order.
fn assert_once_in_order(got: &[TopicMessage], expected: &[u128]) {
    let mut seqs: Vec<u128> = got
        .iter()
        .filter(|g| g.value.is_some())
        .map(|g| g.seq())
        .collect();
    seqs.sort_unstable();
    let mut want = expected.to_vec();
    want.sort_unstable();
    assert_eq!(seqs, want, "every change exactly once");
    let mut by_key: BTreeMap<(Vec<u8>, i32), Vec<u128>> = BTreeMap::new();
    for g in got.iter().filter(|g| g.value.is_some()) {
        by_key
            .entry((g.key.clone(), g.partition))
            .or_default()
            .push(g.seq());
    }
    let keys: std::collections::BTreeSet<&Vec<u8>> = by_key.keys().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), by_key.len(), "every key in one partition");
    for ((key, _), seqs) in &by_key {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "changes of key {:?} out of order: {seqs:?}",
            String::from_utf8_lossy(key)
        );
    }
}

fn write_config(s: &Scratch, source: &str, sinks: &str) -> PathBuf {
    let text = format!(
        "[source]\n{source}\n\n{sinks}\n\n[checkpoint]\npath = {:?}\n",
        s.path().join("out/checkpoint.json")
    );
    let path = s.path().join("kafka.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_run_that_sent_messages_to_the_dead_letter_topic_exits_3() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    cluster.create_topic("cdc.dead", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let s = Scratch::new();
    let item = |id: &str, body: &str| -> dynamo_cdc_core::Item {
        [
            ("id", dynamo_cdc_core::AttributeValue::S(id.into())),
            ("body", dynamo_cdc_core::AttributeValue::S(body.into())),
        ]
        .into()
    };
    let small = item("a", "short");
    let large = item("b", &"x".repeat(20_000));
    let records = [
        stream_record_json(
            "orders",
            100_001,
            "INSERT",
            &small,
            None,
            Some(&small),
            false,
        ),
        stream_record_json(
            "orders",
            100_002,
            "INSERT",
            &large,
            None,
            Some(&large),
            false,
        ),
    ];
    s.write_capture("shard-1.jsonl", &get_records_json(&records, None));
    let config = write_config(
        &s,
        &format!("kind = \"replay\"\npath = {:?}", s.capture()),
        &format!(
            "[sinks.kafka]\nbrokers = {brokers:?}\nformat = \"json\"\n\
             dead_letter_topic = \"cdc.dead\"\n\
             [sinks.kafka.properties]\n\"message.max.bytes\" = \"10000\""
        ),
    );
    let out = run_command(s.path(), &config, None).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 messages were sent to the Kafka dead-letter topic"));
    assert_eq!(read_topic(&brokers, "cdc.orders", 1).len(), 1);
    assert_eq!(read_topic(&brokers, "cdc.dead", 1).len(), 1);
}

#[test]
fn both_sinks_together_hold_the_same_changes_and_a_rerun_sends_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let s = Scratch::new();
    let keys = |id: &str| -> dynamo_cdc_core::Item {
        [("id", dynamo_cdc_core::AttributeValue::S(id.into()))].into()
    };
    let mut records = Vec::new();
    let mut expected = Vec::new();
    for i in 0..40u128 {
        let id = format!("o{}", i % 7);
        let op = ["INSERT", "MODIFY", "REMOVE"][(i % 3) as usize];
        let k = keys(&id);
        let (old, new) = match op {
            "INSERT" => (None, Some(&k)),
            "MODIFY" => (Some(&k), Some(&k)),
            _ => (Some(&k), None),
        };
        let seq = 100_000 + i;
        expected.push(seq);
        records.push(stream_record_json("orders", seq, op, &k, old, new, false));
    }
    s.write_capture("shard-1.jsonl", &get_records_json(&records, None));
    let config = write_config(
        &s,
        &format!("kind = \"replay\"\npath = {:?}", s.capture()),
        &format!(
            "[sinks.parquet]\npath = {:?}\n\n[sinks.kafka]\nbrokers = {brokers:?}\nformat = \"json\"",
            s.parquet()
        ),
    );
    let out = run_command(s.path(), &config, None).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = read_topic(&brokers, "cdc.orders", 3);
    assert_once_in_order(&got, &expected);
    let tombstones = got.iter().filter(|g| g.value.is_none()).count();
    assert_eq!(tombstones, expected.len() / 3, "one tombstone per delete");
    let mut rows: Vec<u128> = read_rows(&s.parquet())
        .iter()
        .map(|r| r.seq.parse().unwrap())
        .collect();
    rows.sort_unstable();
    assert_eq!(rows, expected, "Parquet holds the same changes");
    assert!(String::from_utf8_lossy(&out.stdout).contains("kafka: 53 messages (13 tombstones)"));

    let out = run_command(s.path(), &config, None).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        read_topic(&brokers, "cdc.orders", 3).len(),
        got.len(),
        "a rerun sends nothing"
    );
}

/// `crates/object-store/tests/tls_server.py` forwarding HTTPS on a free
/// loopback port to `upstream`, with a certificate from a CA of its own
/// (`ca.pem` in `dir`); killed on drop.
struct TlsFront {
    child: std::process::Child,
    port: u16,
}

impl TlsFront {
    fn start(dir: &std::path::Path, upstream: &str) -> TlsFront {
        use std::io::BufRead as _;
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/object-store/tests/tls_server.py"
        );
        let mut child = std::process::Command::new(dynamo_cdc_tests::python())
            .arg(script)
            .arg(dir)
            .arg(upstream)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run tls_server.py: set DYNAMO_CDC_PYTHON to a Python with cryptography");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        TlsFront { child, port }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `command`'s output once it exits; killed (and the test failed) if it
/// has not within `limit`, as a run that waits out an error for ever.
fn output_within(mut command: std::process::Command, limit: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            let out = rx.recv().unwrap().unwrap();
            panic!("still running after {limit:?}: {}", stderr(&out));
        }
    }
}

/// A schema registry behind a private CA: refused while the process does
/// not trust the CA (the run pauses, naming the certificate), reached once
/// the system's roots include it (`SSL_CERT_FILE`, as an installed CA
/// bundle would).
#[test]
#[ignore = "needs Python with cryptography: DYNAMO_CDC_PYTHON, else .venv/bin/python (scripts/test.sh runs it)"]
fn a_registry_behind_a_private_ca_is_reached_once_the_system_trusts_the_ca() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let registry = RegistryDouble::start();
    let s = Scratch::new();
    let front = TlsFront::start(s.path(), &registry.url());
    let item: dynamo_cdc_core::Item =
        [("id", dynamo_cdc_core::AttributeValue::S("a".into()))].into();
    let record = stream_record_json("orders", 100_001, "INSERT", &item, None, Some(&item), false);
    s.write_capture("shard-1.jsonl", &get_records_json(&[record], None));
    let config = write_config(
        &s,
        &format!("kind = \"replay\"\npath = {:?}", s.capture()),
        &format!(
            "[sinks.kafka]\nbrokers = {brokers:?}\nformat = \"avro\"\n\
             schema_registry_url = \"https://127.0.0.1:{}\"",
            front.port
        ),
    );

    // Not trusted: a certificate error, waited out as an outage.
    let mut untrusted = run_command(s.path(), &config, None);
    untrusted
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    let mut child = dynamo_cdc_tests::Running(untrusted.stderr(Stdio::piped()).spawn().unwrap());
    let lines = StderrLines::follow(&mut child.0);
    let said = lines.wait_for("UnknownIssuer", Duration::from_secs(60));
    child.kill();
    assert!(said, "no certificate error: {}", lines.text());
    assert!(registry.requests().is_empty(), "{:?}", registry.requests());

    // Trusted through the system's roots: registered, sent.
    let ca = s.path().join("ca.pem");
    let mut trusted = run_command(s.path(), &config, None);
    trusted.env("SSL_CERT_FILE", &ca);
    let out = output_within(trusted, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(registry.versions("cdc.orders-value").len(), 1);
    assert_eq!(read_topic(&brokers, "cdc.orders", 1).len(), 1);
}

/// Avro asked for without a registry is refused, naming the key (left
/// unset, the format is JSON without a registry).
#[test]
fn avro_without_a_registry_is_a_config_error() {
    let s = Scratch::new();
    let config = write_config(
        &s,
        &format!("kind = \"replay\"\npath = {:?}", s.capture()),
        "[sinks.kafka]\nbrokers = \"127.0.0.1:9\"\nformat = \"avro\"",
    );
    let out = run_command(s.path(), &config, None).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("sinks.kafka.schema_registry_url"),
        "{}",
        stderr(&out)
    );
}

fn put(sim: &StreamSim, arn: &str, shard: &str, id: &str, version: u32) -> u128 {
    let op = match version % 5 {
        0 => "INSERT",
        4 => "REMOVE",
        _ => "MODIFY",
    };
    sim.put_json(
        arn,
        shard,
        op,
        json!({"id": {"S": id}}),
        Some((
            Some(json!({"id": {"S": id}, "v": {"N": (version.max(1) - 1).to_string()}})),
            Some(json!({"id": {"S": id}, "v": {"N": version.to_string()}, "note": {"S": "é ✓"}})),
        )),
    )
}

#[test]
fn sigkill_restarts_leave_every_change_in_kafka_exactly_once_in_order_per_key() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 4, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let registry = RegistryDouble::start();
    let sim = Arc::new(StreamSim::start());
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let s = Scratch::new();
    let config = write_config(
        &s,
        &format!(
            "kind = \"dynamodb\"\nstream_arns = [{arn:?}]\nregion = \"us-east-1\"\nendpoint_url = {:?}\n\
             poll_interval_ms = 20\nidle_poll_interval_ms = 50\nshard_refresh_interval_ms = 200",
            sim.endpoint_url()
        ),
        &format!(
            "[sinks.kafka]\nbrokers = {brokers:?}\nschema_registry_url = {:?}",
            registry.url()
        ),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (sim, arn, shard, stop) = (sim.clone(), arn.clone(), shard.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seqs = Vec::new();
            let mut versions: BTreeMap<u32, u32> = BTreeMap::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = i % 11;
                let v = versions.entry(key).or_insert(0);
                seqs.push(put(&sim, &arn, &shard, &format!("k{key}"), *v));
                *v = (*v + 1) % 5;
                i += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            seqs
        })
    };
    for round in 0..4u64 {
        let mut child = run_command(s.path(), &config, None)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + 200 * round));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    let out = run_command(s.path(), &config, Some("1.5"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = read_topic(&brokers, "cdc.orders", 4);
    assert_once_in_order(&got, &written);
    assert!(got.iter().all(|g| g.headers["dynamodb.shard_id"] == shard));
    // Values decode with the registry's schemas.
    let value = got.iter().find_map(|g| g.value.clone()).unwrap();
    assert_eq!(value[0], 0);
    let id = u32::from_be_bytes(value[1..5].try_into().unwrap());
    let schema = Schema::parse_str(&registry.schema(id).unwrap()).unwrap();
    let datum = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .unwrap()
        .read_value(&mut &value[5..])
        .unwrap();
    assert!(format!("{datum:?}").contains("é ✓"), "{datum:?}");
}

#[test]
fn a_broker_down_at_start_is_waited_out_and_every_change_arrives_once() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    // The bridge bootstraps through a gate that refuses connections until
    // opened: the broker is down at start.
    let gate = BootstrapGate::start(&brokers);
    let s = Scratch::new();
    let k: dynamo_cdc_core::Item = [("id", dynamo_cdc_core::AttributeValue::S("a".into()))].into();
    let expected: Vec<u128> = (0..30).map(|i| 200_000 + i).collect();
    let records: Vec<String> = expected
        .iter()
        .map(|seq| stream_record_json("orders", *seq, "MODIFY", &k, Some(&k), Some(&k), false))
        .collect();
    s.write_capture("shard-1.jsonl", &get_records_json(&records, None));
    let config = write_config(
        &s,
        &format!(
            "kind = \"replay\"\npath = {:?}\ntable = \"orders\"",
            s.capture()
        ),
        &format!(
            "[sinks.kafka]\nbrokers = {:?}\nformat = \"json\"",
            gate.addr()
        ),
    );
    let mut child = run_command(s.path(), &config, None)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = StderrLines::follow(&mut child);
    assert!(
        log.wait_for("cannot write; pausing", Duration::from_secs(90)),
        "the run did not pause: {}",
        log.text()
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run must wait, not exit"
    );
    gate.open();
    let status = child.wait().unwrap();
    let text = log.all();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("writes again"), "{text}");
    let errors = text.lines().filter(|l| l.contains("ERROR")).count();
    assert!(
        errors <= 2,
        "an outage is logged once, not per retry: {text}"
    );
    assert_once_in_order(&read_topic(&brokers, "cdc.orders", 2), &expected);
}

#[test]
fn a_broker_that_stops_acknowledging_mid_run_is_waited_out_without_exiting() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("cdc.orders", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let s = Scratch::new();
    let config = write_config(
        &s,
        &format!(
            "kind = \"dynamodb\"\nstream_arns = [{arn:?}]\nregion = \"us-east-1\"\nendpoint_url = {:?}\n\
             poll_interval_ms = 20\nidle_poll_interval_ms = 50",
            sim.endpoint_url()
        ),
        &format!("[sinks.kafka]\nbrokers = {brokers:?}\nformat = \"json\""),
    );
    let mut written = Vec::new();
    for i in 0..10 {
        written.push(put(&sim, &arn, &shard, &format!("k{}", i % 3), i + 1));
    }
    let mut child = run_command(s.path(), &config, None)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "dynamo_cdc=debug,warn")
        .spawn()
        .unwrap();
    let log = StderrLines::follow(&mut child);
    // Wait until the first changes are acknowledged, then take the broker
    // down and write more.
    assert!(
        log.wait_for("acknowledged", Duration::from_secs(60)),
        "{}",
        log.text()
    );
    // The broker stops acknowledging: every produce request fails with an
    // error the producer retries, until the errors are cleared. (Taking the
    // mock broker down and up again would re-bind its port, which another
    // connection may have taken meanwhile.)
    let refusals =
        vec![rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000];
    cluster.request_errors(rdkafka::types::RDKafkaApiKey::Produce, &refusals);
    for i in 10..20 {
        written.push(put(&sim, &arn, &shard, &format!("k{}", i % 3), i + 1));
    }
    assert!(
        log.wait_for("Kafka does not acknowledge", Duration::from_secs(60)),
        "{}",
        log.text()
    );
    assert!(child.try_wait().unwrap().is_none(), "the run must not exit");
    cluster.clear_request_errors(rdkafka::types::RDKafkaApiKey::Produce);
    for i in 20..25 {
        written.push(put(&sim, &arn, &shard, &format!("k{}", i % 3), i + 1));
    }
    // Every change arrives while the same process keeps running; then a
    // graceful stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read_topic(&brokers, "cdc.orders", 2)
        .iter()
        .filter(|m| m.value.is_some())
        .count()
        < written.len()
        && std::time::Instant::now() < deadline
    {
        assert!(child.try_wait().unwrap().is_none(), "the run must not exit");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let text = log.all();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("acknowledges messages again"), "{text}");
    assert_once_in_order(&read_topic(&brokers, "cdc.orders", 2), &written);
}
