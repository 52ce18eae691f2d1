//! Where log lines go and what they look like: always standard error,
//! either as text for people (`--log-format text`, the default) or as one
//! JSON object per line for log collectors (`--log-format json`).
//!
//! A JSON line has a fixed shape:
//!
//! ```json
//! {"timestamp":"2026-12-01T22:06:34.123456Z","level":"WARN",
//!  "fields":{"message":"broker unreachable","sink":"kafka"},
//!  "target":"dynamo_cdc_sink_kafka"}
//! ```
//!
//! The message is always `fields.message`, next to the event's other
//! fields; nothing an event records is ever lifted to the top level, so a
//! field can never collide with `timestamp`, `level` or `target`. Inside a
//! span, a `span` object (its name and fields) is added. Events that come
//! from the `log` crate (some dependencies) may carry `log.*` fields too.
//!
//! Which lines are written is decided by the `RUST_LOG` variable when it is
//! set and valid, else by `--log` (`warn`, `info`, `dynamo_cdc=debug`, ...).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The shape of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colored when standard error is a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with
    /// `message`), `target`.
    Json,
}

/// Installs the process's log subscriber, writing to standard error.
/// `filter` applies unless `RUST_LOG` is set and valid.
///
/// # Panics
/// When a global subscriber is already installed (call it once, first
/// thing in `main`).
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => json(filter, std::io::stderr).init(),
    }
}

/// The JSON subscriber, writing to `writer` (standard error, or a buffer in
/// tests).
fn json<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        // Fields stay under `fields` (see the module docs).
        .flatten_event(false)
        .with_current_span(true)
        // The list of all enclosing spans repeats what `span` says for the
        // shallow spans this program uses; leave it out to keep lines short.
        .with_span_list(false)
        .with_ansi(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Buffer;

    /// The JSON lines written while `f` runs with the JSON subscriber.
    fn json_lines(filter: &str, f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = json(EnvFilter::new(filter), move || writer.clone());
        tracing::subscriber::with_default(subscriber, f);
        let text = buffer.take();
        text.lines()
            .map(|line| serde_json::from_str(line).expect(line))
            .collect()
    }

    #[test]
    fn json_lines_have_the_documented_shape() {
        let lines = json_lines("info", || {
            tracing::info!(table = "orders", count = 3, "batch written");
            tracing::debug!("filtered out");
            tracing::warn!(message = "quoted \"text\"\nand a newline", level = "field");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");

        let first = lines[0].as_object().unwrap();
        let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["fields", "level", "target", "timestamp"]);
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["target"], module_path!());
        assert_eq!(
            first["fields"],
            serde_json::json!({"message": "batch written", "table": "orders", "count": 3})
        );
        assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));

        // A field named like a top-level key stays inside `fields`.
        let second = &lines[1];
        assert_eq!(second["level"], "WARN");
        assert_eq!(second["fields"]["level"], "field");
        assert_eq!(
            second["fields"]["message"],
            "quoted \"text\"\nand a newline"
        );
    }

    #[test]
    fn json_lines_inside_a_span_name_it() {
        let lines = json_lines("info", || {
            let span = tracing::info_span!("shard", table = "orders");
            let _entered = span.enter();
            tracing::info!("reading");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["fields"]["message"], "reading");
        assert_eq!(lines[0]["span"]["name"], "shard");
        assert_eq!(lines[0]["span"]["table"], "orders");
        assert!(lines[0].get("spans").is_none());
    }

    #[test]
    fn the_filter_applies_per_target() {
        let lines = json_lines(&format!("warn,{}=debug", module_path!()), || {
            tracing::debug!("kept");
            tracing::debug!(target: "elsewhere", "dropped");
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["fields"]["message"], "kept");
    }
}
