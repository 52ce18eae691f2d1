//! Helpers for the end-to-end tests: find the built binary, lay out a
//! scratch directory with a capture and a config, and read the Parquet output
//! back into DynamoDB items.

pub mod kafka;
pub mod servers;
pub mod snapshots;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use dynamo_cdc_core::Item;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A child process killed when dropped, so a test that fails while its
/// bridge (or a server it started) runs does not leave it running.
pub struct Running(pub std::process::Child);

impl Running {
    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python interpreter of the checks that read our output with other
/// readers: `DYNAMO_CDC_PYTHON`, else the repository's `.venv` (where
/// `scripts/test.sh` puts pyarrow, DuckDB, pyiceberg and pyspark).
pub fn python() -> PathBuf {
    std::env::var_os("DYNAMO_CDC_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
        PathBuf::from,
    )
}

/// Runs [`python`] with `args` (a script, or `-c` and its code, then its
/// arguments) and returns what it printed; a check that fails fails the
/// test with everything it printed.
pub fn run_python<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let python = python();
    let out = std::process::Command::new(&python)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e})", python.display()));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

/// The `dynamo-cdc` binary cargo built beside this test binary.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/dynamo-cdc
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("dynamo-cdc{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p dynamo-cdc`",
        bin.display()
    );
    bin
}

/// The `dynamo-cdc-gen` binary (the testkit's) cargo built beside this
/// test binary.
pub fn gen_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("dynamo-cdc-gen{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p dynamo-cdc-testkit`",
        bin.display()
    );
    bin
}

/// A scratch directory with `capture/` for input and `out/` for output.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// A fresh, empty scratch directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("capture")).expect("capture dir");
        Scratch { dir }
    }

    /// The scratch root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The capture directory.
    pub fn capture(&self) -> PathBuf {
        self.path().join("capture")
    }

    /// The Parquet root.
    pub fn parquet(&self) -> PathBuf {
        self.path().join("out/parquet")
    }

    /// Writes a capture file.
    pub fn write_capture(&self, name: &str, text: &str) {
        std::fs::write(self.capture().join(name), text).expect("write capture");
    }

    /// Writes `config.toml` for a replay of `capture/` into `out/`, with
    /// `extra` lines appended to `[sinks.parquet]` and `transform` lines to
    /// `[transform]`.
    pub fn config(&self, transform: &str, extra: &str) -> PathBuf {
        let text = format!(
            "[source]\nkind = \"replay\"\npath = {:?}\n\n[transform]\n{transform}\n\n[sinks.parquet]\npath = {:?}\n{extra}\n\n[checkpoint]\npath = {:?}\n",
            self.capture(),
            self.parquet(),
            self.path().join("out/checkpoint.json"),
        );
        let path = self.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Runs `dynamo-cdc run --config <config>`.
    pub fn run(&self, config: &Path) -> Output {
        Command::new(binary())
            .args(["run", "--config"])
            .arg(config)
            .current_dir(self.path())
            .output()
            .expect("run dynamo-cdc")
    }
}

/// `command` run by `taskset`, pinned to the first CPU this process may
/// use, so that it may use one CPU only (its arguments, environment and
/// directory kept), with debug logs.
pub fn on_one_cpu(command: &Command) -> Command {
    // `Cpus_allowed_list: 2-3,6`: a container need not own CPU 0.
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let first = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|list| list.trim().split([',', '-']).next())
        .expect("Cpus_allowed_list in /proc/self/status")
        .to_owned();
    let mut pinned = Command::new("taskset");
    pinned
        .args(["-c", &first])
        .arg(command.get_program())
        .args(command.get_args())
        .env("RUST_LOG", "dynamo_cdc=debug,dynamo_cdc_source=debug");
    if let Some(dir) = command.get_current_dir() {
        pinned.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => pinned.env(key, value),
            None => pinned.env_remove(key),
        };
    }
    pinned
}

/// `dynamo-cdc run --config <config> [--until-idle S]` in `dir`, with test
/// credentials for local endpoints (never the machine's own).
pub fn run_command(dir: &Path, config: &Path, until_idle: Option<&str>) -> Command {
    command(dir, "run", config, until_idle)
}

/// `dynamo-cdc <subcommand> --config <config> [--until-idle S]` in `dir`,
/// as [`run_command`] does for `run`.
pub fn command(dir: &Path, subcommand: &str, config: &Path, until_idle: Option<&str>) -> Command {
    let mut c = Command::new(binary());
    c.args([subcommand, "--config"])
        .arg(config)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    if let Some(secs) = until_idle {
        c.args(["--until-idle", secs]);
    }
    c
}

/// One flat row read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `__table`
    pub table: String,
    /// `__shard_id`
    pub shard: String,
    /// `__sequence_number`
    pub seq: String,
    /// `__op`
    pub op: String,
    /// `__event_id`
    pub event_id: String,
    /// `__source_ts_ms`
    pub ts_ms: Option<i64>,
    /// `__deleted`
    pub deleted: bool,
    /// `__ttl_delete`
    pub ttl_delete: bool,
    /// The attributes.
    pub item: Item,
}

/// Every committed `.parquet` file under `root`, sorted.
pub fn parquet_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The batches of one file.
pub fn read_file(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).expect("open parquet");
    ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet footer")
        .build()
        .expect("reader")
        .map(|b| b.expect("batch"))
        .collect()
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
    let col = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let a = col.as_string::<i32>();
    (0..a.len()).map(|i| a.value(i).to_owned()).collect()
}

fn bools(batch: &RecordBatch, name: &str) -> Vec<bool> {
    let a = batch
        .column_by_name(name)
        .expect("bool column")
        .as_boolean()
        .clone();
    (0..a.len()).map(|i| a.value(i)).collect()
}

/// Every row of every committed file under `root`.
pub fn read_rows(root: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for path in parquet_files(root) {
        for batch in read_file(&path) {
            let items = dynamo_cdc_transform::decode_items(&batch).expect("decodable columns");
            let ts = batch
                .column_by_name("__source_ts_ms")
                .expect("ts")
                .as_primitive::<Int64Type>()
                .clone();
            let (tables, shards, seqs, ops, ids) = (
                strings(&batch, "__table"),
                strings(&batch, "__shard_id"),
                strings(&batch, "__sequence_number"),
                strings(&batch, "__op"),
                strings(&batch, "__event_id"),
            );
            let (deleted, ttl) = (bools(&batch, "__deleted"), bools(&batch, "__ttl_delete"));
            for (i, item) in items.into_iter().enumerate() {
                rows.push(Row {
                    table: tables[i].clone(),
                    shard: shards[i].clone(),
                    seq: seqs[i].clone(),
                    op: ops[i].clone(),
                    event_id: ids[i].clone(),
                    ts_ms: ts.is_valid(i).then(|| ts.value(i)),
                    deleted: deleted[i],
                    ttl_delete: ttl[i],
                    item,
                });
            }
        }
    }
    rows
}

/// Every dead-letter entry under `root`.
pub fn dead_letters(root: &Path) -> Vec<serde_json::Value> {
    let dir = root.join("_dead_letter");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        for line in std::fs::read_to_string(&p)
            .expect("read dead letters")
            .lines()
        {
            out.push(serde_json::from_str(line).expect("dead letter is JSON"));
        }
    }
    out
}

/// A child's standard error, read line by line on a thread of its own, so a
/// test can wait for a log line (an event) instead of sleeping.
pub struct StderrLines {
    seen: std::sync::Arc<(std::sync::Mutex<(String, bool)>, std::sync::Condvar)>,
}

impl StderrLines {
    /// Starts reading `child`'s stderr (which must be piped).
    pub fn follow(child: &mut std::process::Child) -> Self {
        let stderr = child.stderr.take().expect("stderr is piped");
        let seen = std::sync::Arc::new((
            std::sync::Mutex::new((String::new(), false)),
            std::sync::Condvar::new(),
        ));
        let shared = seen.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (lock, cv) = &*shared;
                let mut s = lock.lock().unwrap();
                s.0.push_str(&line);
                s.0.push('\n');
                cv.notify_all();
            }
            let (lock, cv) = &*shared;
            lock.lock().unwrap().1 = true;
            cv.notify_all();
        });
        StderrLines { seen }
    }

    /// Waits until stderr holds `needle` (true) or ends or `limit` passes
    /// without it (false).
    pub fn wait_for(&self, needle: &str, limit: std::time::Duration) -> bool {
        let (lock, cv) = &*self.seen;
        let deadline = std::time::Instant::now() + limit;
        let mut s = lock.lock().unwrap();
        loop {
            if s.0.contains(needle) {
                return true;
            }
            let now = std::time::Instant::now();
            if s.1 || now >= deadline {
                return false;
            }
            s = cv.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.seen.0.lock().unwrap().0.clone()
    }

    /// Everything the child wrote, once its stderr has ended (call it after
    /// the child exited: the reader may still be taking the last lines).
    pub fn all(&self) -> String {
        let (lock, cv) = &*self.seen;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut s = lock.lock().unwrap();
        while !s.1 {
            let now = std::time::Instant::now();
            assert!(now < deadline, "stderr did not end");
            s = cv.wait_timeout(s, deadline - now).unwrap().0;
        }
        s.0.clone()
    }
}

/// A loopback port in front of a broker's bootstrap address that refuses
/// every connection (closes it at once, as a broker that is down) until
/// opened, then forwards. Clients learn the brokers' own addresses from the
/// metadata they bootstrap with, so only bootstrapping goes through it.
/// The port stays bound throughout: unlike a broker taken down and brought
/// up again, nothing else can take it meanwhile.
pub struct BootstrapGate {
    addr: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BootstrapGate {
    /// A closed gate in front of `target` (`host:port`).
    pub fn start(target: &str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, target) = (open.clone(), target.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        BootstrapGate { addr, open }
    }

    /// The gate's address, to give as the bootstrap server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Lets connections through from now on.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
