//! Side by side, on the same input and the same single core: dynamo-cdc,
//! the common Python pipeline (boto3's TypeDeserializer, pyarrow, fastavro,
//! confluent-kafka; `scripts/bench/peer.py`) and the ceiling (serde_json
//! parsing the pages into typed structs and nothing else).
//!
//! ```text
//! scripts/bench.sh                 # sets up the Python environment, then:
//! cargo bench -p dynamo-cdc --bench compare
//! ```
//!
//! Environment: `BENCH_PYTHON` (the peer's interpreter, required for the
//! comparison), `BENCH_INPUTS` (`f1,f2,f3,f4`), `BENCH_BYTES` (input size,
//! `64M`), `BENCH_RUNS` (runs per dynamo-cdc contender, median reported, 3),
//! `BENCH_PARTS` (`compare,growth,sdk,s3,iceberg,latency`), `BENCH_LATENCY_SECS` (20).
//!
//! For each input it generates a seeded capture (cached under
//! `target/bench-data/compare`), starts librdkafka's mock cluster and a
//! schema registry in this process (their work is not charged to anyone),
//! and runs every contender as a child pinned to CPU 0, charging it its own
//! user + system time and reporting its peak RSS. Both outputs are then read
//! back and compared row for row and message for message
//! (`scripts/bench/check.py`), so no side wins by doing less. Figures are
//! printed, never asserted: machines are shared and noisy.
#![allow(clippy::print_stdout)]

mod ceiling;
mod iceberg_path;
mod latency;
mod measure;
mod report;
mod s3_path;
mod sdk_path;
mod sim_feed;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use dynamo_cdc_testkit::generator::{BenchShape, write_bench_shape};
use dynamo_cdc_testkit::registry::RegistryDouble;
use rdkafka::mocking::MockCluster;

use measure::Cost;
use report::{Row, Table};

/// Partitions of every topic.
const PARTITIONS: i32 = 4;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A seeded capture of `shape`, generated once and cached.
pub(crate) struct Input {
    pub(crate) shape: BenchShape,
    pub(crate) dir: PathBuf,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

impl Input {
    fn table(&self) -> String {
        self.shape.table().name
    }
}

fn fixture(shape: BenchShape, bytes: u64) -> Input {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data/compare");
    let dir = root.join(format!("{}-{bytes}", shape.label()));
    let count = root.join(format!("{}-{bytes}.records", shape.label()));
    let file = dir.join(format!("{}.jsonl", shape.table().shard_id(0)));
    let records = match std::fs::read_to_string(&count) {
        Ok(n) => n.trim().parse().expect("record count"),
        Err(_) => {
            std::fs::create_dir_all(&dir).expect("fixture dir");
            eprintln!(
                "generating {} ({} MB) in {}",
                shape.label(),
                bytes >> 20,
                dir.display()
            );
            let w = BufWriter::with_capacity(1 << 20, File::create(&file).expect("fixture"));
            let n = write_bench_shape(w, shape, 42, bytes).expect("write fixture");
            std::fs::write(&count, n.to_string()).expect("count file");
            n
        }
    };
    let bytes = std::fs::metadata(&file).expect("fixture").len();
    Input {
        shape,
        dir,
        records,
        bytes,
    }
}

/// What dynamo-cdc writes to, for one run.
struct Outputs<'a> {
    parquet: Option<PathBuf>,
    /// Topic template and the services behind it.
    kafka: Option<(String, &'a Services)>,
}

/// librdkafka's mock cluster and a schema registry, in this process.
pub(crate) struct Services {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    registry: RegistryDouble,
}

impl Services {
    pub(crate) fn start() -> Self {
        Services {
            cluster: MockCluster::new(1).expect("mock cluster"),
            registry: RegistryDouble::start(),
        }
    }

    pub(crate) fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub(crate) fn create_topic(&self, topic: &str) {
        self.cluster
            .create_topic(topic, PARTITIONS, 1)
            .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
    }

    /// The newest schema registered under `subject`, written to a file.
    fn schema_file(&self, subject: &str, to: &Path) -> PathBuf {
        let id = *self
            .registry
            .versions(subject)
            .last()
            .unwrap_or_else(|| panic!("nothing registered under {subject}"));
        let path = to.join(format!("{subject}.avsc"));
        std::fs::write(&path, self.registry.schema(id).expect("schema")).expect("schema file");
        path
    }
}

fn dynamo_cdc_config(input: &Input, work: &Path, name: &str, out: &Outputs<'_>) -> PathBuf {
    let mut text = format!(
        "[source]\nkind = \"replay\"\npath = {:?}\n\n[checkpoint]\npath = {:?}\n",
        input.dir,
        work.join(format!("{name}.checkpoint.json"))
    );
    if let Some(parquet) = &out.parquet {
        text.push_str(&format!("\n[sinks.parquet]\npath = {parquet:?}\n"));
    }
    if let Some((topic, services)) = &out.kafka {
        text.push_str(&format!(
            "\n[sinks.kafka]\nbrokers = {:?}\ntopic = {topic:?}\nschema_registry_url = {:?}\n",
            services.brokers(),
            services.registry.url()
        ));
    }
    let path = work.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("config");
    path
}

/// A config replaying `input` into the sinks of `sinks` (whole sections),
/// with its checkpoint in `work`.
pub(crate) fn replay_config(work: &Path, input: &Input, sinks: &str) -> PathBuf {
    let text = format!(
        "[source]\nkind = \"replay\"\npath = {:?}\n\n{sinks}\n\n[checkpoint]\npath = {:?}\n",
        input.dir,
        work.join("checkpoint.json")
    );
    let path = work.join("bench.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn run_dynamo_cdc(config: &Path, what: &str) -> Cost {
    let mut cmd = measure::pinned(env!("CARGO_BIN_EXE_dynamo-cdc"));
    cmd.args(["run", "--quiet", "--config"]).arg(config);
    measure::run(&mut cmd, what).0
}

/// The newest committed Parquet file under `root`: its schema is the
/// widest the table reached, which is the schema the peer is given.
fn newest_parquet(root: &Path) -> PathBuf {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if name.ends_with(".parquet") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    // Partition directory, then the first sequence number in the name
    // (shorter is smaller), so the last file holds the newest changes.
    files.sort_by_key(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        (p.parent().map(Path::to_path_buf), name.len(), name)
    });
    files
        .pop()
        .unwrap_or_else(|| panic!("no Parquet file under {}", root.display()))
}

/// The Python peer, or why it cannot run.
struct Peer {
    python: PathBuf,
    scripts: PathBuf,
}

impl Peer {
    fn find() -> Result<Peer, String> {
        let python = std::env::var("BENCH_PYTHON")
            .map_err(|_| "BENCH_PYTHON is not set (scripts/bench.sh sets it up)".to_owned())?;
        let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench");
        Ok(Peer {
            python: PathBuf::from(python),
            scripts,
        })
    }

    fn script(&self, name: &str) -> Command {
        let mut cmd = measure::pinned(self.python.to_str().expect("python path"));
        cmd.arg(self.scripts.join(name));
        cmd
    }

    /// Checks two outputs equal; panics with the checker's report if not.
    fn check(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.scripts.join("check.py")).args(args);
        let out = cmd.output().expect("run check.py");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "outputs differ ({args:?}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines().last().unwrap_or_default().to_owned()
    }
}

/// Every contender on one input; returns the table.
fn compare(input: &Input, peer: Option<&Peer>, runs: usize) -> Table {
    let work = tempfile::tempdir().expect("work dir");
    let work = work.path();
    let services = Services::start();
    let table = input.table();
    let mut rows = Vec::new();

    let ceiling = measure::median(
        (0..runs)
            .map(|_| {
                let mut cmd = measure::pinned(
                    std::env::current_exe()
                        .expect("exe")
                        .to_str()
                        .expect("path"),
                );
                cmd.arg("--ceiling").arg(&input.dir);
                let (cost, out) = measure::run(&mut cmd, "ceiling");
                assert_eq!(
                    out.trim(),
                    input.records.to_string(),
                    "ceiling read another count"
                );
                cost
            })
            .collect(),
    );
    rows.push(Row::new("ceiling: serde_json typed parse", "", ceiling));

    // dynamo-cdc: each run writes somewhere new, so reruns never resume.
    let ours = |mode: &str, parquet: bool, kafka: bool| {
        let costs = (0..runs)
            .map(|i| {
                let name = format!("ours-{mode}-{i}");
                let topic = format!("{name}.{{table}}");
                if kafka {
                    services.create_topic(&format!("{name}.{table}"));
                }
                let out = Outputs {
                    parquet: parquet.then(|| work.join(&name)),
                    kafka: kafka.then_some((topic, &services)),
                };
                let config = dynamo_cdc_config(input, work, &name, &out);
                run_dynamo_cdc(&config, &name)
            })
            .collect();
        measure::median(costs)
    };
    rows.push(Row::new(
        "dynamo-cdc",
        "parquet",
        ours("parquet", true, false),
    ));
    rows.push(Row::new("dynamo-cdc", "kafka", ours("kafka", false, true)));
    rows.push(Row::new("dynamo-cdc", "both", ours("both", true, true)));

    let mut checks = Vec::new();
    if let Some(peer) = peer {
        let arrow_schema = newest_parquet(&work.join("ours-parquet-0"));
        let value_schema = services.schema_file(&format!("ours-kafka-0.{table}-value"), work);
        let key_schema = services.schema_file(&format!("ours-kafka-0.{table}-key"), work);
        for mode in ["parquet", "kafka", "both"] {
            let name = format!("peer-{mode}");
            let mut cmd = peer.script("peer.py");
            cmd.arg("--input").arg(&input.dir).args(["--mode", mode]);
            if mode != "kafka" {
                cmd.arg("--parquet")
                    .arg(work.join(&name))
                    .arg("--arrow-schema")
                    .arg(&arrow_schema);
            }
            if mode != "parquet" {
                services.create_topic(&format!("{name}.{table}"));
                cmd.args(["--brokers", &services.brokers()])
                    .args(["--topic-template", &format!("{name}.{{table}}")])
                    .args(["--registry", &services.registry.url()])
                    .arg("--value-schema")
                    .arg(&value_schema)
                    .arg("--key-schema")
                    .arg(&key_schema);
            }
            let (cost, _) = measure::run(&mut cmd, &name);
            rows.push(Row::new("python peer", mode, cost));
        }
        let dir = |name: &str| work.join(name).to_string_lossy().into_owned();
        let topic = |name: &str| format!("{name}.{table}");
        let (brokers, registry) = (services.brokers(), services.registry.url());
        for (a, b) in [
            ("ours-parquet-0", "peer-parquet"),
            ("ours-both-0", "peer-both"),
        ] {
            checks.push(peer.check(&["parquet", &dir(a), &dir(b)]));
        }
        for (a, b) in [("ours-kafka-0", "peer-kafka"), ("ours-both-0", "peer-both")] {
            checks.push(peer.check(&[
                "kafka",
                "--brokers",
                &brokers,
                "--registry",
                &registry,
                &topic(a),
                &topic(b),
            ]));
        }
    }
    Table {
        input: format!(
            "{} `{table}`: {} records, {:.0} MB, {:.0} bytes a record",
            input.shape.label(),
            input.records,
            input.bytes as f64 / 1e6,
            input.bytes as f64 / input.records as f64
        ),
        records: input.records,
        bytes: input.bytes,
        rows,
        checks,
    }
}

/// dynamo-cdc's peak RSS on F1 and on ten times F1: memory must stay flat.
fn growth(bytes: u64, runs: usize) {
    println!("\n## Memory as the input grows tenfold (F1, dynamo-cdc)\n");
    println!(
        "| output | peak RSS at {} MB | at {} MB | ratio |",
        bytes >> 20,
        (bytes * 10) >> 20
    );
    println!("|---|---:|---:|---:|");
    let small = fixture(BenchShape::Mixed, bytes);
    let large = fixture(BenchShape::Mixed, bytes * 10);
    let services = Services::start();
    for (mode, parquet, kafka) in [
        ("parquet", true, false),
        ("kafka", false, true),
        ("both", true, true),
    ] {
        let mut rss = Vec::new();
        for input in [&small, &large] {
            let work = tempfile::tempdir().expect("work dir");
            let costs = (0..runs)
                .map(|i| {
                    let name = format!("growth-{mode}-{}-{i}", input.bytes);
                    if kafka {
                        services.create_topic(&format!("{name}.events"));
                    }
                    let out = Outputs {
                        parquet: parquet.then(|| work.path().join(&name)),
                        kafka: kafka.then(|| (format!("{name}.{{table}}"), &services)),
                    };
                    run_dynamo_cdc(&dynamo_cdc_config(input, work.path(), &name, &out), &name)
                })
                .collect();
            rss.push(measure::median(costs).max_rss_kib as f64 / 1024.0);
        }
        println!(
            "| {mode} | {:.0} MiB | {:.0} MiB | {:.2} |",
            rss[0],
            rss[1],
            rss[1] / rss[0]
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The ceiling runs as a child of this binary, measured like the others.
    if args.get(1).is_some_and(|a| a == "--ceiling") {
        let records = ceiling::parse_capture(Path::new(&args[2]));
        println!("{records}");
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not and only
    // wants to know the target builds and starts.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let parts = env_or("BENCH_PARTS", "compare,growth,sdk,s3,iceberg,latency");
    let bytes = measure::parse_size(&env_or("BENCH_BYTES", "64M"));
    let runs: usize = env_or("BENCH_RUNS", "3").parse().expect("BENCH_RUNS");
    let peer = match Peer::find() {
        Ok(p) => Some(p),
        Err(why) => {
            println!("(no Python peer: {why})");
            None
        }
    };
    println!("# dynamo-cdc benchmark\n");
    println!("{}", report::machine());
    if parts.contains("compare") {
        let mut tables = Vec::new();
        for shape in env_or("BENCH_INPUTS", "f1,f2,f3,f4").split(',') {
            let shape = BenchShape::parse(shape).unwrap_or_else(|| panic!("unknown input {shape}"));
            let input = fixture(shape, bytes);
            let table = compare(&input, peer.as_ref(), runs.max(1));
            table.print();
            tables.push(table);
        }
        if let Some(f1) = tables.iter().find(|t| t.input.starts_with("F1")) {
            f1.print_targets();
        }
    }
    if parts.contains("growth") {
        growth(bytes, runs.max(1));
    }
    if parts.contains("sdk") {
        sdk_path::run(&fixture(BenchShape::Mixed, bytes), runs.max(1));
    }
    if parts.contains("s3") {
        s3_path::run(&fixture(BenchShape::Mixed, bytes), runs.max(1));
    }
    if parts.contains("iceberg") {
        iceberg_path::run(&fixture(BenchShape::Mixed, bytes), runs.max(1));
    }
    if parts.contains("latency") {
        let secs: u64 = env_or("BENCH_LATENCY_SECS", "20")
            .parse()
            .expect("BENCH_LATENCY_SECS");
        latency::run(&fixture(BenchShape::Mixed, bytes), secs);
    }
}
