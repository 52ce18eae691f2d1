//! The `dynamo-cdc` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dynamo_cdc::config::SourceKind;
use dynamo_cdc::logging::LogFormat;
use dynamo_cdc::{Config, RunOptions};
use signal_hook::consts::{SIGINT, SIGTERM};

mod allocator;

/// Exit code of a run that finished but dead-lettered records.
const EXIT_DEAD_LETTERS: u8 = 3;
/// Exit code of a configuration error (nothing was done).
const EXIT_CONFIG: u8 = 2;

/// Change-data-capture from DynamoDB Streams to Parquet, without losing or
/// duplicating a change.
#[derive(Parser)]
#[command(name = "dynamo-cdc", version, about, long_about = None)]
struct Cli {
    /// Log filter, e.g. `info`, `debug` or `dynamo_cdc_sink_parquet=debug`
    /// (the RUST_LOG variable overrides it).
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    /// Log lines as text for people, or as one JSON object per line for
    /// log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline, then print a summary.
    ///
    /// A replay source runs to the end of its capture; a dynamodb source
    /// runs until SIGTERM or SIGINT (Ctrl-C), or `--until-idle`. On a signal
    /// it stops reading, commits what it read and records positions, then
    /// exits 0; a second signal exits at once (nothing is lost: the next run
    /// resumes from the recorded positions).
    ///
    /// Exit codes: 0 success; 1 failure; 2 configuration error (nothing was
    /// done); 3 finished, but some records were dead-lettered.
    Run(RunArgs),
    /// Snapshot a table now, then run as `run` does: the table's existing
    /// items are read (as `[source] snapshot_method` says) and stitched to
    /// its stream, whatever the positions say. A snapshot a crash
    /// interrupted resumes on the next `run`.
    Snapshot {
        #[command(flatten)]
        run: RunArgs,
        /// The table (one of the source's tables).
        #[arg(long, value_name = "TABLE")]
        table: String,
    },
    /// List the leases of a `[coordination]` configuration: each table's
    /// owner, epoch, last renewal, and the positions recorded per sink.
    Leases {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file and exit: 0 when valid, 2 when not.
    Validate {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

/// How a run is started and ends.
#[derive(clap::Args)]
struct RunArgs {
    /// The TOML configuration file.
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    /// Stop the same graceful way once no shard has returned a new
    /// record for this many seconds (batch jobs, tests).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    until_idle: Option<Duration>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address, e.g.
    /// `127.0.0.1:9464` (overrides `[metrics] listen`).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    metrics_listen: Option<SocketAddr>,
    /// Do not print the summary or show progress.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "`{text}` is not a number of seconds between 0 and 86400"
        )),
    }
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("`{text}` is not an address to listen on: an IP address and a port, such as 127.0.0.1:9464 or [::]:9464")
    })
}

/// SIGTERM and SIGINT set `stop`; a second one while stopping exits at once.
fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // Registered first, so it sees the flag before the second handler
        // sets it: only a repeated signal exits.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    Ok(stop)
}

/// Reads and checks a configuration file; with `schemas`, its declared
/// schemas too (not for `leases`, which reads no data).
fn load(path: &PathBuf, schemas: bool) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config = Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    config
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if schemas {
        dynamo_cdc::check_schemas(&config).map_err(|e| format!("{}: {e:#}", path.display()))?;
    }
    Ok(config)
}

fn main() -> ExitCode {
    // Until a configuration says what is read (`run` and `snapshot` set
    // it again once they have one).
    allocator::tune(allocator::Reading::Files);
    // First, so that a stop request during start-up is a graceful stop too.
    let stop = match stop_on_signals() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse();
    dynamo_cdc::logging::init(&cli.log, cli.log_format);
    match cli.command {
        Command::Validate { config } => match load(&config, true) {
            Ok(_) => {
                eprintln!("{}: valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Leases { config } => {
            let config = match load(&config, false) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match dynamo_cdc::leases_report(&config) {
                Ok(report) => {
                    #[allow(clippy::print_stdout)]
                    {
                        print!("{report}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => run(args, stop, None),
        Command::Snapshot { run: args, table } => run(args, stop, Some(table)),
    }
}

/// `run` and `snapshot`: runs the pipeline and prints the summary.
fn run(args: RunArgs, stop: Arc<AtomicBool>, snapshot_table: Option<String>) -> ExitCode {
    let RunArgs {
        config,
        until_idle,
        summary_json,
        metrics_listen,
        quiet,
    } = args;
    let config = match load(&config, true) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    allocator::tune(match config.source.kind {
        SourceKind::Replay => allocator::Reading::Files,
        SourceKind::Dynamodb => allocator::Reading::Live,
    });
    let options = RunOptions {
        until_idle,
        stop,
        metrics_listen,
        progress: !quiet,
        snapshot_table,
    };
    let result = dynamo_cdc::run(&config, &options).and_then(|summary| {
        if let Some(path) = &summary_json {
            let text = serde_json::to_string_pretty(&summary)?;
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(summary)
    });
    match result {
        Ok(summary) => {
            if !quiet {
                #[allow(clippy::print_stdout)]
                {
                    println!("{summary}");
                }
            }
            let to_topic = summary.kafka.as_ref().map_or(0, |k| k.dead_lettered);
            if summary.dead_lettered > 0 {
                eprintln!(
                    "warning: {} records were dead-lettered; see {}",
                    summary.dead_lettered, summary.dead_letter_path
                );
            }
            if to_topic > 0 {
                eprintln!(
                    "warning: {to_topic} messages were sent to the Kafka dead-letter topic \
                     (`dead_letter_topic`)"
                );
            }
            if summary.dead_lettered + to_topic > 0 {
                ExitCode::from(EXIT_DEAD_LETTERS)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
