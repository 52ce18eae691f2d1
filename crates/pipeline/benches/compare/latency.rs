//! End-to-end latency at a steady rate: the stream simulator makes 5,000
//! changes a second readable over 8 shards (F1's items), the bridge runs
//! with both sinks, and observers note when each change becomes visible:
//! to a Kafka consumer tailing the topic (which is after the producer's
//! acknowledgement: acks=all on a single replica) and in a committed
//! Parquet file (which depends on the roll settings, printed with the
//! figures).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use dynamo_cdc_testkit::streams_sim::StreamSim;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::sim_feed::{changes, local_credentials};
use crate::{Input, PARTITIONS, Services};

const RATE_PER_S: u64 = 5_000;
const SHARDS: usize = 8;
const TICK: Duration = Duration::from_millis(10);
const FILE_AGE_MS: u64 = 1_000;
const WARM_UP_S: u64 = 12;

type Seen = Arc<Mutex<HashMap<u128, Instant>>>;

/// Eight open shards: the first one split, and its children split again.
fn eight_shards(sim: &StreamSim, arn: &str) -> Vec<String> {
    while sim.open_shards(arn).len() < SHARDS {
        let shard = sim.open_shards(arn).remove(0);
        sim.split(arn, &shard);
    }
    sim.open_shards(arn)
}

fn watch_kafka(brokers: String, topic: String, seen: Seen, stop: Arc<AtomicBool>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "latency-observer")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(&topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(20)) else {
            continue;
        };
        let now = Instant::now();
        let seq = msg.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "dynamodb.sequence_number")
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<u128>().ok())
        });
        if let Some(seq) = seq {
            seen.lock().expect("seen").entry(seq).or_insert(now);
        }
    }
}

fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            parquet_files(&path, out);
        } else if name.ends_with(".parquet") {
            out.push(path);
        }
    }
}

fn watch_parquet(root: PathBuf, seen: Seen, stop: Arc<AtomicBool>) {
    let mut done = std::collections::HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let mut files = Vec::new();
        parquet_files(&root, &mut files);
        for file in files {
            if !done.insert(file.clone()) {
                continue;
            }
            let now = Instant::now();
            let reader = ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&file).expect("parquet file"),
            )
            .and_then(|b| b.build())
            .expect("committed files are complete");
            let mut seen = seen.lock().expect("seen");
            for batch in reader {
                let batch = batch.expect("batch");
                let column = batch
                    .column_by_name("__sequence_number")
                    .expect("__sequence_number");
                for seq in column.as_string::<i32>().iter().flatten() {
                    if let Ok(seq) = seq.parse::<u128>() {
                        seen.entry(seq).or_insert(now);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn percentiles(readable: &HashMap<u128, Instant>, seen: &Seen) -> (usize, f64, f64, f64) {
    let seen = seen.lock().expect("seen");
    let mut ms: Vec<f64> = readable
        .iter()
        .filter_map(|(seq, at)| {
            seen.get(seq)
                .map(|s| s.duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 * q) as usize).min(ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    (
        ms.len(),
        at(0.5),
        at(0.99),
        ms.last().copied().unwrap_or(f64::NAN),
    )
}

pub(crate) fn run(input: &Input, secs: u64) {
    println!(
        "\n## Latency: {RATE_PER_S} changes/s over {SHARDS} shards for {secs} s (dynamo-cdc, both sinks)\n"
    );
    let total = (RATE_PER_S * secs) as usize;
    let pool = changes(input, total);
    let sim = StreamSim::start();
    let arn = sim.create_stream("events");
    let shards = eight_shards(&sim, &arn);
    let services = Services::start();
    let topic = "latency.events".to_owned();
    services.create_topic(&topic);
    let work = tempfile::tempdir().expect("work");
    let parquet = work.path().join("parquet");
    let config = work.path().join("latency.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"dynamodb\"\nregion = \"us-east-1\"\nendpoint_url = {:?}\nstream_arns = [{arn:?}]\n\n\
             [sinks.parquet]\npath = {parquet:?}\nmax_file_age_ms = {FILE_AGE_MS}\n\n\
             [sinks.kafka]\nbrokers = {:?}\ntopic = \"latency.{{table}}\"\nschema_registry_url = {:?}\n\n\
             [checkpoint]\npath = {:?}\n",
            sim.endpoint_url(),
            services.brokers(),
            services.registry.url(),
            work.path().join("checkpoint.json"),
        ),
    )
    .expect("config");
    let mut bridge = local_credentials(&mut crate::measure::pinned(&crate::bridge()))
        .args(["run", "--quiet", "--config"])
        .arg(&config)
        .spawn()
        .expect("start dynamo-cdc");

    let stop = Arc::new(AtomicBool::new(false));
    let kafka_seen: Seen = Arc::default();
    let parquet_seen: Seen = Arc::default();
    let observers = [
        {
            let (b, s, st) = (services.brokers(), kafka_seen.clone(), stop.clone());
            std::thread::spawn(move || watch_kafka(b, topic, s, st))
        },
        {
            let (p, s, st) = (parquet.clone(), parquet_seen.clone(), stop.clone());
            std::thread::spawn(move || watch_parquet(p, s, st))
        },
    ];

    // Measure the steady state, not the start: the bridge lists the stream,
    // walks the split parents (closed and empty) to the open shards, and
    // refreshes the listing (every 10 s by default) before the clock starts.
    std::thread::sleep(Duration::from_secs(WARM_UP_S));
    let mut readable: HashMap<u128, Instant> = HashMap::with_capacity(total);
    let per_tick = (RATE_PER_S as f64 * TICK.as_secs_f64()) as usize;
    let started = Instant::now();
    for (i, chunk) in pool
        .chunks(per_tick)
        .cycle()
        .take(total.div_ceil(per_tick))
        .enumerate()
    {
        // Paced against the start, so a late tick catches up.
        let due = started + TICK * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for c in chunk {
            let seq = c.put(&sim, &arn, &shards);
            readable.insert(seq, Instant::now());
        }
    }
    let fed_s = started.elapsed().as_secs_f64();
    // Wait for the last changes to arrive everywhere (files roll by age).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let k = kafka_seen.lock().expect("seen").len();
        let p = parquet_seen.lock().expect("seen").len();
        if k >= readable.len() && p >= readable.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: plain kill(2) of our own child.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(bridge.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = bridge.wait().expect("wait for dynamo-cdc");
    stop.store(true, Ordering::Relaxed);
    for o in observers {
        o.join().expect("observer");
    }
    println!(
        "{} changes made readable in {fed_s:.1} s ({:.0}/s); the bridge exited with {status}.\n",
        readable.len(),
        readable.len() as f64 / fed_s
    );
    println!("| from readable to | delivered | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, seen) in [
        ("visible to a Kafka consumer (after the ack)", &kafka_seen),
        ("in a committed Parquet file", &parquet_seen),
    ] {
        let (n, p50, p99, max) = percentiles(&readable, seen);
        println!("| {name} | {n} | {p50:.0} | {p99:.0} | {max:.0} |");
    }
    println!(
        "\nSettings: `poll_interval_ms` 250 (default), Parquet `max_file_age_ms` {FILE_AGE_MS}, other settings default; the bridge pinned to CPU 0."
    );
}
