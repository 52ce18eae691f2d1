//! `dynamo-cdc-gen`: writes captured DynamoDB Streams traffic for the
//! quickstart and for benchmarks, writes realistic load to a live table,
//! and serves the Schema Registry double. See `dynamo-cdc-gen --help`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dynamo_cdc_testkit::generator::{self, BenchShape, QUICKSTART_SEED};
use dynamo_cdc_testkit::load::{self, LoadArgs};
use dynamo_cdc_testkit::registry::RegistryDouble;
use signal_hook::consts::{SIGINT, SIGTERM};

const HELP: &str = "\
dynamo-cdc-gen: test traffic for dynamo-cdc: captured DynamoDB Streams traffic (JSON
Lines of GetRecords pages), realistic writes to a live table, a Schema Registry double

USAGE:
    dynamo-cdc-gen quickstart --out DIR [--seed N] [--gzip]
    dynamo-cdc-gen bench --out FILE --bytes SIZE [--shape SHAPE] [--seed N]
    dynamo-cdc-gen load --table T --rate N [--endpoint-url URL] [--duration S]
                        [--create] [--region R] [--seed N]
    dynamo-cdc-gen registry --listen ADDR

COMMANDS:
    quickstart   Tables `orders` and `customers`, 400 records using every DynamoDB
                 type, with inserts, modifies, deletes and TTL deletes; one file per
                 shard, e.g. DIR/orders-shard-0001.jsonl
    bench        One shard of a benchmark table, streamed in constant memory until
                 SIZE bytes; gzip-compressed when FILE ends in .gz. Name the file
                 after the shard, e.g. events-shard-0001.jsonl
    load         Writes to a live table (keys pk and sk, both strings) at a steady
                 rate: order lines, customers and device events using every
                 DynamoDB type (numbers of 38 digits, 1E-130 and 9.99E+125 among
                 them, nested maps and lists, every set type), a TTL attribute
                 `expires_at` (epoch seconds) on some items; about 40% inserts, 15%
                 puts over an existing item, 35% updates and 10% deletes. Prints
                 progress every 5 s and a summary with the stream records to expect.
                 Credentials and region come from the AWS chain (environment,
                 profile, instance role); the region defaults to us-east-1. Errors
                 are retried with backoff and counted; an outage is logged once.
                 Stops after --duration, or on Ctrl-C or SIGTERM (exit 0 after the
                 summary)
    registry     Serves the Schema Registry double (Confluent's REST subset) on
                 ADDR until stopped, printing its URL

OPTIONS:
    --out PATH          Directory (quickstart) or file (bench) to write
    --bytes SIZE        Uncompressed size to reach: bytes, or with K, M or G (KiB,
                        MiB, GiB)
    --shape SHAPE       bench input: f1 (`events`, mixed records of about 1.3 KB, 60%
                        INSERT, 30% MODIFY, 10% REMOVE; the default), f2 (`pings`,
                        items of about 100 bytes), f3 (`documents`, items near 400
                        KB) or f4 (`wide`, 200 attributes, 31 levels deep, number
                        edge cases)
    --seed N            Random seed; the same seed gives the same bytes (quickstart,
                        bench), or the same operations on the same partition keys
                        with other timestamps (load) (default: 20241119 for
                        quickstart, 1 for bench, the clock for load)
    --gzip              Write .jsonl.gz files (quickstart)
    --endpoint-url URL  DynamoDB endpoint, e.g. http://127.0.0.1:8000 for DynamoDB
                        Local (default: AWS's endpoint for the region)
    --table T           Table to write (load)
    --rate N            Writes per second, up to 10000 (load)
    --duration S        Stop after S seconds (load; default: until stopped)
    --create            Create the table when missing: on-demand, stream
                        NEW_AND_OLD_IMAGES, TTL on `expires_at`; waits until it is
                        ACTIVE. Without it a missing table is an error
    --region R          AWS region (default: AWS_REGION, the profile, else us-east-1)
    --listen ADDR       Address to serve on, e.g. 127.0.0.1:8081 (registry)
    -h, --help          Show this help
";

struct Args {
    command: String,
    out: Option<PathBuf>,
    bytes: Option<u64>,
    seed: Option<u64>,
    shape: BenchShape,
    gzip: bool,
    endpoint_url: Option<String>,
    table: Option<String>,
    rate: Option<f64>,
    duration: Option<Duration>,
    create: bool,
    region: Option<String>,
    listen: Option<SocketAddr>,
    /// Options given, to refuse those the command does not take.
    given: Vec<&'static str>,
}

/// The options each command takes.
const OPTIONS: &[(&str, &[&str])] = &[
    ("quickstart", &["--out", "--seed", "--gzip"]),
    ("bench", &["--out", "--bytes", "--shape", "--seed"]),
    (
        "load",
        &[
            "--endpoint-url",
            "--table",
            "--rate",
            "--duration",
            "--create",
            "--region",
            "--seed",
        ],
    ),
    ("registry", &["--listen"]),
];

fn parse_args(mut raw: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        command: String::new(),
        out: None,
        bytes: None,
        seed: None,
        shape: BenchShape::Mixed,
        gzip: false,
        endpoint_url: None,
        table: None,
        rate: None,
        duration: None,
        create: false,
        region: None,
        listen: None,
        given: Vec::new(),
    };
    while let Some(arg) = raw.next() {
        let mut value = |name: &str| raw.next().ok_or_else(|| format!("{name} needs a value"));
        let flag: &'static str = match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--out" => {
                args.out = Some(PathBuf::from(value("--out")?));
                "--out"
            }
            "--bytes" => {
                args.bytes = Some(parse_size(&value("--bytes")?)?);
                "--bytes"
            }
            "--seed" => {
                let text = value("--seed")?;
                args.seed = Some(
                    text.parse()
                        .map_err(|_| format!("--seed `{text}` is not a number"))?,
                );
                "--seed"
            }
            "--shape" => {
                let text = value("--shape")?;
                args.shape = BenchShape::parse(&text)
                    .ok_or_else(|| format!("--shape `{text}` is not one of f1, f2, f3, f4"))?;
                "--shape"
            }
            "--gzip" => {
                args.gzip = true;
                "--gzip"
            }
            "--endpoint-url" => {
                let url = value("--endpoint-url")?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "--endpoint-url `{url}` is not an http:// or https:// URL"
                    ));
                }
                args.endpoint_url = Some(url);
                "--endpoint-url"
            }
            "--table" => {
                let table = value("--table")?;
                load::check_table_name(&table).map_err(|e| format!("--table {e}"))?;
                args.table = Some(table);
                "--table"
            }
            "--rate" => {
                let text = value("--rate")?;
                args.rate = Some(match text.parse::<f64>() {
                    Ok(r) if r > 0.0 && r <= load::MAX_RATE => r,
                    _ => {
                        return Err(format!(
                            "--rate `{text}` is not a number of writes per second between 0 \
                             and {}",
                            load::MAX_RATE
                        ));
                    }
                });
                "--rate"
            }
            "--duration" => {
                let text = value("--duration")?;
                args.duration = Some(match text.parse::<f64>() {
                    Ok(s) if s > 0.0 && s <= 31_536_000.0 => Duration::from_secs_f64(s),
                    _ => {
                        return Err(format!(
                            "--duration `{text}` is not a number of seconds above 0 (at most \
                             a year)"
                        ));
                    }
                });
                "--duration"
            }
            "--create" => {
                args.create = true;
                "--create"
            }
            "--region" => {
                let region = value("--region")?;
                if region.is_empty() {
                    return Err("--region is empty".to_owned());
                }
                args.region = Some(region);
                "--region"
            }
            "--listen" => {
                let text = value("--listen")?;
                args.listen = Some(text.parse().map_err(|_| {
                    format!(
                        "--listen `{text}` is not an address to listen on: an IP address and \
                         a port, such as 127.0.0.1:8081"
                    )
                })?);
                "--listen"
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option `{flag}`")),
            command if args.command.is_empty() => {
                args.command = command.to_owned();
                continue;
            }
            extra => return Err(format!("unexpected argument `{extra}`")),
        };
        args.given.push(flag);
    }
    if args.command.is_empty() {
        return Ok(None);
    }
    let Some((_, takes)) = OPTIONS.iter().find(|(c, _)| *c == args.command) else {
        return Err(format!(
            "unknown command `{}`; expected quickstart, bench, load or registry",
            args.command
        ));
    };
    if let Some(flag) = args.given.iter().find(|f| !takes.contains(f)) {
        return Err(format!("{} does not take {flag}", args.command));
    }
    Ok(Some(args))
}

/// `123`, `64K`, `512M`, `2G` (binary multiples).
fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("--bytes `{text}` is not a size such as 1048576, 512M or 2G");
    let upper = text.trim().to_ascii_uppercase();
    let upper = upper.strip_suffix('B').unwrap_or(&upper);
    let upper = upper.strip_suffix('I').unwrap_or(upper);
    let (digits, shift) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 10),
        Some('M') => (&upper[..upper.len() - 1], 20),
        Some('G') => (&upper[..upper.len() - 1], 30),
        _ => (upper, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

fn run(args: Args) -> Result<(), String> {
    let mut stdout = io::stdout().lock();
    match args.command.as_str() {
        "quickstart" => {
            let dir = args.out.ok_or("quickstart needs --out DIR")?;
            let mut cfg = generator::quickstart();
            cfg.seed = args.seed.unwrap_or(QUICKSTART_SEED);
            cfg.gzip = args.gzip;
            let summary = generator::write_capture_dir(&dir, &cfg)
                .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
            for f in &summary.files {
                let c = f.counts;
                let _ = writeln!(
                    stdout,
                    "{}: {} records in {} pages ({} INSERT, {} MODIFY, {} REMOVE of which {} by TTL)",
                    f.path.display(),
                    c.total(),
                    f.pages,
                    c.insert,
                    c.modify,
                    c.remove,
                    c.ttl_remove,
                );
            }
            Ok(())
        }
        "bench" => {
            let path = args.out.ok_or("bench needs --out FILE")?;
            let bytes = args.bytes.ok_or("bench needs --bytes SIZE")?;
            let seed = args.seed.unwrap_or(1);
            let fail = |e: io::Error| format!("cannot write {}: {e}", path.display());
            let file = File::create(&path).map_err(fail)?;
            let w = BufWriter::with_capacity(1 << 20, file);
            let gzip = path.extension().is_some_and(|e| e == "gz");
            let records = if gzip {
                let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
                let n =
                    generator::write_bench_shape(&mut gz, args.shape, seed, bytes).map_err(fail)?;
                gz.finish()
                    .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
                    .map_err(fail)?;
                n
            } else {
                let mut w = w;
                let n =
                    generator::write_bench_shape(&mut w, args.shape, seed, bytes).map_err(fail)?;
                w.into_inner().map_err(|e| fail(e.into_error()))?;
                n
            };
            let _ = writeln!(stdout, "{}: {records} records", path.display());
            Ok(())
        }
        "load" => {
            let table = args.table.ok_or("load needs --table T")?;
            let rate = args.rate.ok_or("load needs --rate N (writes per second)")?;
            // A new seed per run, so runs against one table use new keys;
            // it is printed, so a run can be repeated.
            let seed = args.seed.unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
            let load = LoadArgs {
                endpoint_url: args.endpoint_url,
                table,
                rate,
                duration: args.duration,
                create: args.create,
                region: args.region,
                seed,
            };
            let stop = stop_on_signals()?;
            load::run(&load, stop, &mut stdout)
        }
        "registry" => {
            let addr = args.listen.ok_or("registry needs --listen ADDR")?;
            let stop = stop_on_signals()?;
            let registry = RegistryDouble::start_on(addr)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let _ = writeln!(
                stdout,
                "schema registry double listening on {}",
                registry.url()
            );
            let _ = stdout.flush();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
        other => Err(format!(
            "unknown command `{other}`; expected quickstart, bench, load or registry"
        )),
    }
}

/// SIGTERM and SIGINT set the flag; a second one exits at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // Registered first, so it sees the flag before the second handler
        // sets it: only a repeated signal exits.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }
    Ok(stop)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            let _ = io::stdout().write_all(HELP.as_bytes());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("dynamo-cdc-gen: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dynamo-cdc-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn args() {
        let parse = |s: &str| parse_args(s.split_whitespace().map(str::to_owned));
        let a = parse("bench --out x.jsonl --bytes 1M --seed 7")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.command.as_str(), a.bytes, a.seed),
            ("bench", Some(1 << 20), Some(7))
        );
        assert!(parse("--help").unwrap().is_none());
        assert!(parse("").unwrap().is_none());
        assert!(parse("bench --bogus").is_err());
        assert!(parse("bench --seed").is_err());
    }

    #[test]
    fn load_and_registry_args() {
        let parse = |s: &str| parse_args(s.split_whitespace().map(str::to_owned));
        let a = parse(
            "load --endpoint-url http://127.0.0.1:8000 --table t_1 --rate 50 --duration 3 --create",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.table.as_deref(), Some("t_1"));
        assert_eq!(a.rate, Some(50.0));
        assert_eq!(a.duration, Some(Duration::from_secs(3)));
        assert!(a.create);
        let err = |s: &str| parse(s).err().unwrap_or_default();
        assert!(err("load --rate 0").contains("--rate `0`"));
        assert!(err("load --rate fast").contains("--rate `fast`"));
        assert!(err("load --duration -1").contains("--duration `-1`"));
        assert!(err("load --table a/b").contains("`a/b` is not a DynamoDB table name"));
        assert!(err("load --endpoint-url localhost:8000").contains("http://"));
        assert!(err("load --out x").contains("load does not take --out"));
        assert!(err("quickstart --rate 5").contains("quickstart does not take --rate"));
        assert!(err("registry --listen nowhere").contains("--listen `nowhere`"));
        assert!(err("frobnicate").contains("unknown command `frobnicate`"));
        let r = parse("registry --listen 127.0.0.1:0").unwrap().unwrap();
        assert_eq!(r.listen, Some("127.0.0.1:0".parse().unwrap()));
    }
}
