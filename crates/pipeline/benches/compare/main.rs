//! Side by side, on the same input and the same single core: dynamo-cdc,
//! three peers written the way Lambda functions are (see [`PeerKind`]: the
//! common Python pipeline of `scripts/bench/peer.py`, its lean variant
//! `peer_lean.py`, and the Node.js one in `scripts/bench/node`) and two
//! ceilings (serde_json and simd-json parsing the pages into typed structs
//! and nothing else; see [`ceiling`]).
//!
//! ```text
//! scripts/bench.sh                 # sets up the peers' environments, then:
//! cargo bench -p dynamo-cdc --bench compare
//! ```
//!
//! Environment: `BENCH_PYTHON` (the Python peers' interpreter, which also
//! runs the output checker: required for any peer), `BENCH_NODE` (the Node.js
//! peer's `node`, default `node` from `PATH`; the peer is left out when it
//! cannot run or `scripts/bench/node/node_modules` is missing),
//! `BENCH_INPUTS` (`f1,f2,f3,f4`), `BENCH_BYTES` (input size,
//! `64M`), `BENCH_RUNS` (runs per contender, in rounds, median reported, 3),
//! `BENCH_PAIRED_RUNS` (rounds of the live/replay, s3/local and
//! Iceberg/Parquet pairs, whose ratios are the medians of the rounds' own:
//! 9, or `BENCH_RUNS` when higher; each round takes a second or two),
//! `BENCH_PARTS` (`compare,growth,sdk,s3,iceberg,latency`), `BENCH_LATENCY_SECS` (20),
//! `BENCH_BRIDGE` (the dynamo-cdc binary to measure, default the one this
//! bench was built with: set it to an older build, or to a wrapper that
//! profiles the run, and compare), `BENCH_BASELINE` (another dynamo-cdc
//! binary, run in turns with the measured one in every round of the
//! comparison, and of the live path: its rows and the median of the
//! rounds' own ratios are reported, which is how two builds are told apart
//! on a noisy machine).
//!
//! For each input it generates a seeded capture (cached under
//! `target/bench-data/compare`), starts librdkafka's mock cluster and a
//! schema registry in this process (their work is not charged to anyone),
//! and runs every contender as a child pinned to CPU 0, charging it its own
//! user + system time and reporting its peak RSS. Each peer's outputs are
//! then read back and compared with dynamo-cdc's row for row and message for
//! message (`scripts/bench/check.py`), so no side wins by doing less.
//! Figures are printed, never asserted: machines are shared and noisy.
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

/// One replay of `input` measured, into the sinks that `sinks` writes for
/// the run's work directory, with `env` added to the bridge's environment.
pub(crate) fn replay_cost(
    input: &Input,
    sinks: &dyn Fn(&Path) -> String,
    env: &[(&str, &str)],
    what: &str,
) -> Cost {
    let work = tempfile::tempdir().expect("work");
    let config = replay_config(work.path(), input, &sinks(work.path()));
    let mut cmd = measure::pinned(&bridge());
    cmd.envs(env.iter().copied())
        .args(["run", "--quiet", "--config"])
        .arg(config);
    measure::run(&mut cmd, what).0
}

/// The dynamo-cdc binary measured: `BENCH_BRIDGE`, else this build's.
pub(crate) fn bridge() -> String {
    std::env::var("BENCH_BRIDGE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dynamo-cdc").to_owned())
}

fn run_dynamo_cdc(binary: &str, config: &Path, what: &str) -> Cost {
    let mut cmd = measure::pinned(binary);
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

/// The peers: the same pipeline written the way Lambda functions are, each
/// run on the same capture and given dynamo-cdc's newest schemas, its output
/// then checked equal to dynamo-cdc's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerKind {
    /// `scripts/bench/peer.py`: boto3's TypeDeserializer, pyarrow, fastavro
    /// and confluent-kafka, checking every value against the schema.
    Python,
    /// `scripts/bench/peer_lean.py`: the same libraries doing only what most
    /// Lambda functions do (dict rows, `Table.from_pylist`, no checks).
    PythonLean,
    /// `scripts/bench/node/peer.mjs`: `unmarshall`, apache-arrow with
    /// parquet-wasm, avsc and kafkajs.
    Node,
}

impl PeerKind {
    pub(crate) const ALL: [PeerKind; 3] = [PeerKind::Python, PeerKind::PythonLean, PeerKind::Node];

    /// Its name in the tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            PeerKind::Python => "python peer",
            PeerKind::PythonLean => "python peer (lean)",
            PeerKind::Node => "node peer",
        }
    }

    /// The heading of the column of dynamo-cdc's ratio against it.
    pub(crate) fn column(self) -> &'static str {
        match self {
            PeerKind::Python => "vs peer",
            PeerKind::PythonLean => "vs lean",
            PeerKind::Node => "vs node",
        }
    }

    /// The prefix of its output directories and topics.
    fn slug(self) -> &'static str {
        match self {
            PeerKind::Python => "peer",
            PeerKind::PythonLean => "lean",
            PeerKind::Node => "node",
        }
    }
}

fn bench_scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench")
}

/// `scripts/bench/check.py`, run with `BENCH_PYTHON`; without it no peer's
/// output could be checked, so no peer runs.
struct Checker {
    python: PathBuf,
}

impl Checker {
    fn find() -> Result<Checker, String> {
        let python = std::env::var("BENCH_PYTHON")
            .map_err(|_| "BENCH_PYTHON is not set (scripts/bench.sh sets it up)".to_owned())?;
        Ok(Checker {
            python: PathBuf::from(python),
        })
    }

    /// Checks two outputs equal; panics with the checker's report if not.
    fn check(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.python);
        cmd.arg(bench_scripts().join("check.py")).args(args);
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

/// A peer that can run here: the program and the script it is given.
struct Peer {
    kind: PeerKind,
    program: PathBuf,
    script: PathBuf,
}

impl Peer {
    /// The peer of `kind`, or why it cannot run here.
    fn find(kind: PeerKind, checker: &Checker) -> Result<Peer, String> {
        let python = |script: &str| Peer {
            kind,
            program: checker.python.clone(),
            script: bench_scripts().join(script),
        };
        match kind {
            PeerKind::Python => Ok(python("peer.py")),
            PeerKind::PythonLean => Ok(python("peer_lean.py")),
            PeerKind::Node => {
                let node = env_or("BENCH_NODE", "node");
                let runs = Command::new(&node)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !runs {
                    return Err(format!(
                        "`{node}` cannot be run (install Node.js 20 or set BENCH_NODE)"
                    ));
                }
                let dir = bench_scripts().join("node");
                if !dir.join("node_modules").is_dir() {
                    return Err(format!(
                        "its packages are not installed in {} (scripts/bench.sh runs npm ci there)",
                        dir.display()
                    ));
                }
                Ok(Peer {
                    kind,
                    program: PathBuf::from(node),
                    script: dir.join("peer.mjs"),
                })
            }
        }
    }

    /// Its output directory or topic prefix for one mode and round.
    fn name(&self, mode: &str, round: usize) -> String {
        format!("{}-{mode}-{round}", self.kind.slug())
    }
}

/// The peers that can run, saying why each of the others cannot.
fn find_peers() -> (Option<Checker>, Vec<Peer>) {
    let checker = match Checker::find() {
        Ok(checker) => checker,
        Err(why) => {
            println!("(no peers: {why})");
            return (None, Vec::new());
        }
    };
    let mut peers = Vec::new();
    for kind in PeerKind::ALL {
        match Peer::find(kind, &checker) {
            Ok(peer) => peers.push(peer),
            Err(why) => println!("(no {}: {why})", kind.label()),
        }
    }
    (Some(checker), peers)
}

/// What every peer is given on one input: the capture, the schemas
/// dynamo-cdc ended with (its newest Parquet file and registered Avro
/// schemas, as a production pipeline has a fixed target schema), and the
/// services dynamo-cdc wrote to.
struct PeerSetup<'a> {
    input: &'a Input,
    work: &'a Path,
    services: &'a Services,
    arrow_schema: PathBuf,
    value_schema: PathBuf,
    key_schema: PathBuf,
}

impl<'a> PeerSetup<'a> {
    fn new(input: &'a Input, work: &'a Path, services: &'a Services) -> Self {
        let table = input.table();
        PeerSetup {
            input,
            work,
            services,
            arrow_schema: newest_parquet(&work.join("ours-parquet-0")),
            value_schema: services.schema_file(&format!("ours-kafka-0.{table}-value"), work),
            key_schema: services.schema_file(&format!("ours-kafka-0.{table}-key"), work),
        }
    }

    /// Runs `peer` in `mode` (`parquet`, `kafka` or `both`), pinned and
    /// charged like dynamo-cdc, writing the outputs of `round`.
    fn run(&self, peer: &Peer, mode: &str, round: usize) -> Cost {
        let name = peer.name(mode, round);
        let mut cmd = measure::pinned(peer.program.to_str().expect("peer program path"));
        cmd.arg(&peer.script)
            .arg("--input")
            .arg(&self.input.dir)
            .args(["--mode", mode]);
        if mode != "kafka" {
            cmd.arg("--parquet")
                .arg(self.work.join(&name))
                .arg("--arrow-schema")
                .arg(&self.arrow_schema);
        }
        if mode != "parquet" {
            self.services.create_topic(&self.topic(&name));
            cmd.args(["--brokers", &self.services.brokers()])
                .args(["--topic-template", &format!("{name}.{{table}}")])
                .args(["--registry", &self.services.registry.url()])
                .arg("--value-schema")
                .arg(&self.value_schema)
                .arg("--key-schema")
                .arg(&self.key_schema);
        }
        measure::run(&mut cmd, &name).0
    }

    fn topic(&self, name: &str) -> String {
        format!("{name}.{}", self.input.table())
    }

    /// Checks `peer`'s outputs equal to dynamo-cdc's (the same mode's first
    /// round, both), each sink of each mode; returns the checker's summaries.
    fn check(&self, checker: &Checker, peer: &Peer) -> Vec<String> {
        let dir = |name: &str| self.work.join(name).to_string_lossy().into_owned();
        let (brokers, registry) = (self.services.brokers(), self.services.registry.url());
        let mut lines = Vec::new();
        for mode in ["parquet", "both"] {
            let ours = dir(&format!("ours-{mode}-0"));
            let summary = checker.check(&["parquet", &ours, &dir(&peer.name(mode, 0))]);
            lines.push(format!("{} {mode}: {summary}", peer.kind.label()));
        }
        for mode in ["kafka", "both"] {
            let summary = checker.check(&[
                "kafka",
                "--brokers",
                &brokers,
                "--registry",
                &registry,
                &self.topic(&format!("ours-{mode}-0")),
                &self.topic(&peer.name(mode, 0)),
            ]);
            lines.push(format!("{} {mode}: {summary}", peer.kind.label()));
        }
        lines
    }
}

/// Every contender on one input; returns the table.
fn compare(input: &Input, checker: Option<&Checker>, peers: &[Peer], runs: usize) -> Table {
    let work = tempfile::tempdir().expect("work dir");
    let work = work.path();
    let services = Services::start();
    let table = input.table();
    let mut rows = Vec::new();

    for parser in ceiling::Parser::ALL {
        let ceiling = measure::median(
            (0..runs)
                .map(|_| {
                    let mut cmd = measure::pinned(
                        std::env::current_exe()
                            .expect("exe")
                            .to_str()
                            .expect("path"),
                    );
                    cmd.arg(parser.flag()).arg(&input.dir);
                    let (cost, out) = measure::run(&mut cmd, parser.label());
                    assert_eq!(
                        out.trim(),
                        input.records.to_string(),
                        "{} read another count",
                        parser.label()
                    );
                    cost
                })
                .collect(),
        );
        rows.push(Row::new(parser.label(), "", ceiling));
    }

    // Every contender runs `runs` times, in rounds: a round runs dynamo-cdc
    // and then each peer once in every mode, so that a slow phase of the
    // shared machine falls on all of them alike. Each contender's median is
    // reported. The peers need round 0 of dynamo-cdc first: they take their
    // schemas from its outputs. Each run writes somewhere new, so reruns
    // never resume or append; the checks read round 0.
    const MODES: [(&str, bool, bool); 3] = [
        ("parquet", true, false),
        ("kafka", false, true),
        ("both", true, true),
    ];
    let bridge = bridge();
    let baseline = std::env::var("BENCH_BASELINE").ok();
    let run = |binary: &str, who: &str, mode: &str, parquet: bool, kafka: bool, round: usize| {
        let name = format!("{who}-{mode}-{round}");
        let topic = format!("{name}.{{table}}");
        if kafka {
            services.create_topic(&format!("{name}.{table}"));
        }
        let out = Outputs {
            parquet: parquet.then(|| work.join(&name)),
            kafka: kafka.then_some((topic, &services)),
        };
        let config = dynamo_cdc_config(input, work, &name, &out);
        run_dynamo_cdc(binary, &config, &name)
    };
    let peers = if checker.is_some() { peers } else { &[] };
    let mut our_costs: Vec<Vec<Cost>> = vec![Vec::new(); MODES.len()];
    let mut peer_costs: Vec<Vec<Vec<Cost>>> = vec![vec![Vec::new(); MODES.len()]; peers.len()];
    let mut base_costs: Vec<Vec<Cost>> = vec![Vec::new(); MODES.len()];
    let mut setup = None;
    for round in 0..runs {
        for (i, (mode, parquet, kafka)) in MODES.into_iter().enumerate() {
            let ours = || run(&bridge, "ours", mode, parquet, kafka, round);
            let Some(baseline) = &baseline else {
                our_costs[i].push(ours());
                continue;
            };
            let base = || run(baseline, "base", mode, parquet, kafka, round);
            let (ours, base) = measure::in_turns(round, ours, base);
            base_costs[i].push(base);
            our_costs[i].push(ours);
        }
        if peers.is_empty() {
            continue;
        }
        let setup = setup.get_or_insert_with(|| PeerSetup::new(input, work, &services));
        for (peer, costs) in peers.iter().zip(&mut peer_costs) {
            for (costs, (mode, ..)) in costs.iter_mut().zip(MODES) {
                costs.push(setup.run(peer, mode, round));
            }
        }
    }
    let mut checks = Vec::new();
    for ((ours, base), (mode, ..)) in our_costs.into_iter().zip(base_costs).zip(MODES) {
        if base.is_empty() {
            rows.push(Row::new("dynamo-cdc", mode, measure::median(ours)));
            continue;
        }
        let pair = measure::pair(base, ours);
        let each: Vec<String> = pair.ratios.iter().map(|r| format!("{r:.3}")).collect();
        checks.push(format!(
            "{mode}: dynamo-cdc's CPU over the baseline's, median of {} rounds: {:.3} ({})",
            pair.ratios.len(),
            pair.ratio,
            each.join(", ")
        ));
        rows.push(Row::new("dynamo-cdc (baseline)", mode, pair.first));
        rows.push(Row::new("dynamo-cdc", mode, pair.second));
    }
    for (peer, costs) in peers.iter().zip(peer_costs) {
        for (costs, (mode, ..)) in costs.into_iter().zip(MODES) {
            rows.push(Row::new(peer.kind.label(), mode, measure::median(costs)));
        }
        if let (Some(checker), Some(setup)) = (checker, &setup) {
            checks.extend(setup.check(checker, peer));
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
                    run_dynamo_cdc(
                        &bridge(),
                        &dynamo_cdc_config(input, work.path(), &name, &out),
                        &name,
                    )
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
    // The ceilings run as children of this binary, measured like the others.
    if let Some(parser) = args.get(1).and_then(|a| ceiling::Parser::from_flag(a)) {
        let records = ceiling::parse_capture(Path::new(&args[2]), parser);
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
    let paired_runs: usize = env_or("BENCH_PAIRED_RUNS", &runs.max(9).to_string())
        .parse()
        .expect("BENCH_PAIRED_RUNS");
    let (checker, peers) = find_peers();
    println!("# dynamo-cdc benchmark\n");
    println!("{}", report::machine());
    if parts.contains("compare") {
        let mut tables = Vec::new();
        for shape in env_or("BENCH_INPUTS", "f1,f2,f3,f4").split(',') {
            let shape = BenchShape::parse(shape).unwrap_or_else(|| panic!("unknown input {shape}"));
            let input = fixture(shape, bytes);
            let table = compare(&input, checker.as_ref(), &peers, runs.max(1));
            table.print();
            tables.push(table);
        }
        report::print_targets(&tables);
    }
    if parts.contains("growth") {
        growth(bytes, runs.max(1));
    }
    if parts.contains("sdk") {
        sdk_path::run(&fixture(BenchShape::Mixed, bytes), paired_runs.max(1));
    }
    if parts.contains("s3") {
        s3_path::run(&fixture(BenchShape::Mixed, bytes), paired_runs.max(1));
    }
    if parts.contains("iceberg") {
        iceberg_path::run(&fixture(BenchShape::Mixed, bytes), paired_runs.max(1));
    }
    if parts.contains("latency") {
        let secs: u64 = env_or("BENCH_LATENCY_SECS", "20")
            .parse()
            .expect("BENCH_LATENCY_SECS");
        latency::run(&fixture(BenchShape::Mixed, bytes), secs);
    }
}
