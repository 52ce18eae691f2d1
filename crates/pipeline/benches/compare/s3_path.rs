//! Parquet on an object store against the local disk: the same F1 replay
//! written to `s3://` on a moto server (a separate process, so only the
//! bridge's own work is charged) and to a local directory.
//!
//! moto_server comes from `DYNAMO_CDC_MOTO_SERVER`, else `.venv/bin/moto_server`
//! (what the test command installs); without it the part is skipped.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Input, measure, replay_cost};

fn moto_server() -> Option<PathBuf> {
    let path = std::env::var_os("DYNAMO_CDC_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server")
        });
    path.exists().then_some(path)
}

/// A moto server on a free loopback port, stopped on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP request; moto takes unsigned ones. Returns the status.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

fn start_moto(server: &Path) -> Moto {
    let port = dynamo_cdc_testkit::free_port();
    let child = Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server");
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "PUT", "/bench").map_or(true, |s| s != 200) {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

pub(crate) fn run(input: &Input, runs: usize) {
    println!("\n## Parquet on an object store: replay -> s3:// (moto) vs local disk (F1)\n");
    let Some(server) = moto_server() else {
        println!("(skipped: no moto_server; set DYNAMO_CDC_MOTO_SERVER)");
        return;
    };
    let moto = start_moto(&server);
    // moto takes any credentials; the AWS chain needs some to sign with.
    let credentials = [
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
    ];
    let port = moto.port;
    let pair = measure::paired(
        runs,
        |_| {
            let sinks = |work: &Path| format!("[sinks.parquet]\npath = {:?}", work.join("parquet"));
            replay_cost(input, &sinks, &credentials, "replay -> local parquet")
        },
        |i| {
            let sinks = |_: &Path| {
                format!(
                    "[sinks.parquet]\npath = \"s3://bench/run-{i}\"\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:{port}\""
                )
            };
            replay_cost(input, &sinks, &credentials, "replay -> s3 parquet")
        },
    );
    crate::report::print_sink_pair(
        input.records,
        ["local disk", "s3:// (moto)"],
        &pair,
        "Writing to s3://",
        1.25,
    );
}
