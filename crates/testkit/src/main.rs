//! `dynamo-cdc-gen`: writes captured DynamoDB Streams traffic for the
//! quickstart and for benchmarks. See `dynamo-cdc-gen --help`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use dynamo_cdc_testkit::generator::{self, BenchShape, QUICKSTART_SEED};

const HELP: &str = "\
dynamo-cdc-gen: write captured DynamoDB Streams traffic (JSON Lines of GetRecords pages)

USAGE:
    dynamo-cdc-gen quickstart --out DIR [--seed N] [--gzip]
    dynamo-cdc-gen bench --out FILE --bytes SIZE [--shape SHAPE] [--seed N]

COMMANDS:
    quickstart   Tables `orders` and `customers`, 400 records using every DynamoDB
                 type, with inserts, modifies, deletes and TTL deletes; one file per
                 shard, e.g. DIR/orders-shard-0001.jsonl
    bench        One shard of a benchmark table, streamed in constant memory until
                 SIZE bytes; gzip-compressed when FILE ends in .gz. Name the file
                 after the shard, e.g. events-shard-0001.jsonl

OPTIONS:
    --out PATH     Directory (quickstart) or file (bench) to write
    --bytes SIZE   Uncompressed size to reach: bytes, or with K, M or G (KiB, MiB, GiB)
    --shape SHAPE  bench input: f1 (`events`, mixed records of about 1.3 KB, 60%
                   INSERT, 30% MODIFY, 10% REMOVE; the default), f2 (`pings`, items
                   of about 100 bytes), f3 (`documents`, items near 400 KB) or f4
                   (`wide`, 200 attributes, 31 levels deep, number edge cases)
    --seed N       Random seed; the same seed gives the same bytes
                   (default: 20241119 for quickstart, 1 for bench)
    --gzip         Write .jsonl.gz files (quickstart)
    -h, --help     Show this help
";

struct Args {
    command: String,
    out: Option<PathBuf>,
    bytes: Option<u64>,
    seed: Option<u64>,
    shape: BenchShape,
    gzip: bool,
}

fn parse_args(mut raw: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        command: String::new(),
        out: None,
        bytes: None,
        seed: None,
        shape: BenchShape::Mixed,
        gzip: false,
    };
    while let Some(arg) = raw.next() {
        let mut value = |name: &str| raw.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--out" => args.out = Some(PathBuf::from(value("--out")?)),
            "--bytes" => args.bytes = Some(parse_size(&value("--bytes")?)?),
            "--seed" => {
                let text = value("--seed")?;
                args.seed = Some(
                    text.parse()
                        .map_err(|_| format!("--seed `{text}` is not a number"))?,
                );
            }
            "--shape" => {
                let text = value("--shape")?;
                args.shape = BenchShape::parse(&text)
                    .ok_or_else(|| format!("--shape `{text}` is not one of f1, f2, f3, f4"))?;
            }
            "--gzip" => args.gzip = true,
            flag if flag.starts_with('-') => return Err(format!("unknown option `{flag}`")),
            command if args.command.is_empty() => args.command = command.to_owned(),
            extra => return Err(format!("unexpected argument `{extra}`")),
        }
    }
    if args.command.is_empty() {
        return Ok(None);
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
        other => Err(format!(
            "unknown command `{other}`; expected quickstart or bench"
        )),
    }
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
}
