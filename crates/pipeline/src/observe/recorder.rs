//! A `metrics` recorder that keeps counters and gauges in memory and renders
//! them in the Prometheus text exposition format (version 0.0.4).
//!
//! Libraries record through the `metrics` facade (`counter!`, `gauge!`); the
//! binary installs this recorder once with [`install`] and serves
//! [`Handle::render`] at `/metrics`.
//!
//! Cost: registering a series (the first `counter!("name", "label" =>
//! "value")` for a given name and label set) takes a lock and allocates; it
//! returns a handle backed by one shared `Arc<AtomicU64>`, so keeping that
//! handle and incrementing it later is a single atomic add with no lock.
//! Code on a hot path should therefore register once and keep the handle.
//!
//! What is rendered:
//! - counters as `# TYPE <name> counter`, with `_total` appended to the name
//!   when it does not already end in it;
//! - gauges as `# TYPE <name> gauge`;
//! - `# HELP` from `describe_counter!` / `describe_gauge!`, when given;
//! - histograms are not kept: registering one returns a no-op handle.
//!
//! Families are ordered by name and series by their labels, so two renders of
//! the same state are byte-identical. A name registered both as a counter
//! and as a gauge would be rendered twice, which Prometheus rejects: give
//! them different names.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

/// One time series: a metric name and its labels, sorted by label name so
/// that `{a, b}` and `{b, a}` are the same series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesId {
    name: String,
    labels: Vec<(String, String)>,
}

impl SeriesId {
    fn of(key: &Key) -> SeriesId {
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        SeriesId {
            name: key.name().to_owned(),
            labels,
        }
    }
}

/// Everything recorded so far. Counters hold a `u64`; gauges hold the bits
/// of an `f64` (the representation `metrics` uses for `AtomicU64` gauges).
#[derive(Debug, Default)]
struct Registry {
    counters: RwLock<BTreeMap<SeriesId, Arc<AtomicU64>>>,
    gauges: RwLock<BTreeMap<SeriesId, Arc<AtomicU64>>>,
    /// Descriptions by metric name as registered (before `_total`).
    help: RwLock<HashMap<String, String>>,
}

/// Returns the cell for `key`, creating it on first use. The read lock is
/// tried first so that concurrent lookups of existing series do not queue.
fn cell(map: &RwLock<BTreeMap<SeriesId, Arc<AtomicU64>>>, key: &Key) -> Arc<AtomicU64> {
    let id = SeriesId::of(key);
    // A poisoned lock only means another thread panicked while holding it;
    // the map itself is always left consistent, so keep using it.
    if let Some(cell) = map.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return cell.clone();
    }
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(id)
        .or_default()
        .clone()
}

/// The recorder to install with `metrics::set_global_recorder` (or
/// `metrics::with_local_recorder` in tests). [`install`] does both steps.
#[derive(Debug, Default)]
pub(crate) struct PrometheusRecorder {
    registry: Arc<Registry>,
}

impl PrometheusRecorder {
    /// An empty recorder, not installed anywhere.
    pub(crate) fn new() -> PrometheusRecorder {
        PrometheusRecorder::default()
    }

    /// A handle that renders what this recorder has recorded.
    pub(crate) fn handle(&self) -> Handle {
        Handle {
            registry: self.registry.clone(),
        }
    }

    fn describe(&self, key: KeyName, description: SharedString) {
        self.registry
            .help
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.as_str().to_owned(), description.to_string());
    }
}

impl metrics::Recorder for PrometheusRecorder {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {
        // Histograms are not kept (see the module docs).
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(cell(&self.registry.counters, key))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(cell(&self.registry.gauges, key))
    }

    fn register_histogram(&self, _key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Renders what the recorder it came from has recorded. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    registry: Arc<Registry>,
}

/// The handle of the globally installed recorder, once there is one.
static INSTALLED: OnceLock<Handle> = OnceLock::new();

/// Installs a [`PrometheusRecorder`] as the process's global `metrics`
/// recorder and returns its handle. Only the first call installs; later
/// calls (a second run in the same process, tests) return the same handle.
pub(crate) fn install() -> Handle {
    INSTALLED
        .get_or_init(|| {
            let recorder = PrometheusRecorder::new();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                // Only possible if something else in the process installed
                // a recorder first: metrics then go there, not to /metrics.
                tracing::warn!(
                    "another metrics recorder is already installed; /metrics will stay empty"
                );
            }
            handle
        })
        .clone()
}

/// The samples of one metric family, in label order.
struct Family<'a> {
    kind: &'static str,
    help: Option<&'a str>,
    samples: Vec<(String, String)>,
}

impl Handle {
    /// Drops the gauges named `name` whose `label` is not one `keep` says
    /// to keep: a gauge of something no longer watched (a table whose lease
    /// moved to another process) would otherwise show its last value for
    /// ever.
    pub(crate) fn forget_gauges(&self, name: &str, label: &str, keep: impl Fn(&str) -> bool) {
        self.registry
            .gauges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| {
                id.name != name
                    || id
                        .labels
                        .iter()
                        .any(|(key, value)| key == label && keep(value))
            });
    }

    /// All counters and gauges in the Prometheus text format 0.0.4, ending
    /// with a newline (or empty when nothing was registered).
    pub(crate) fn render(&self) -> String {
        let help = self.registry.help.read().unwrap_or_else(|e| e.into_inner());
        // Keyed by (rendered name, type) so that families come out sorted by
        // their final name, whatever the names were before `_total` and
        // sanitizing.
        let mut families: BTreeMap<(String, &'static str), Family<'_>> = BTreeMap::new();
        let counters = self
            .registry
            .counters
            .read()
            .unwrap_or_else(|e| e.into_inner());
        for (id, cell) in counters.iter() {
            let value = cell.load(Ordering::Relaxed).to_string();
            add(&mut families, &help, id, "counter", value);
        }
        drop(counters);
        let gauges = self
            .registry
            .gauges
            .read()
            .unwrap_or_else(|e| e.into_inner());
        for (id, cell) in gauges.iter() {
            let value = format_float(f64::from_bits(cell.load(Ordering::Relaxed)));
            add(&mut families, &help, id, "gauge", value);
        }
        drop(gauges);

        let mut out = String::new();
        for ((name, _), mut family) in families {
            if let Some(text) = family.help {
                let _ = writeln!(out, "# HELP {name} {}", escape_help(text));
            }
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            family.samples.sort();
            for (labels, value) in family.samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }
}

fn add<'a>(
    families: &mut BTreeMap<(String, &'static str), Family<'a>>,
    help: &'a HashMap<String, String>,
    id: &SeriesId,
    kind: &'static str,
    value: String,
) {
    let mut name = sanitize_name(&id.name, true);
    if kind == "counter" && !name.ends_with("_total") {
        name.push_str("_total");
    }
    families
        .entry((name, kind))
        .or_insert_with(|| Family {
            kind,
            help: help.get(&id.name).map(String::as_str),
            samples: Vec::new(),
        })
        .samples
        .push((render_labels(&id.labels), value));
}

/// `{a="1",b="2"}`, or nothing without labels.
fn render_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&sanitize_name(key, false));
        out.push_str("=\"");
        out.push_str(&escape_label_value(value));
        out.push('"');
    }
    out.push('}');
    out
}

/// Replaces characters Prometheus does not allow in names with `_`. Metric
/// names may contain `:`, label names may not; neither may start with a digit.
fn sanitize_name(name: &str, metric: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic()
            || c == '_'
            || (metric && c == ':')
            || (i > 0 && c.is_ascii_digit());
        if ok {
            out.push(c);
        } else if i == 0 && c.is_ascii_digit() {
            out.push('_');
            out.push(c);
        } else {
            out.push('_');
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Label values escape backslash, double quote and newline.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `# HELP` text escapes backslash and newline (quotes stay as they are).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A gauge value as Prometheus parses it: `NaN`, `+Inf`, `-Inf`, or the
/// shortest decimal that round-trips (`3`, `0.25`; never an exponent).
fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` with a fresh recorder as the thread's recorder and returns
    /// the rendering, so tests do not see each other's metrics. Rendering
    /// twice gives the same text: it neither changes nor reorders anything.
    fn rendered(f: impl FnOnce()) -> String {
        let recorder = PrometheusRecorder::new();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, f);
        let text = handle.render();
        assert_eq!(text, handle.render());
        text
    }

    #[test]
    fn gauges_forgotten_are_no_longer_rendered() {
        let recorder = PrometheusRecorder::new();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("lag", "table" => "a").set(1.0);
            metrics::gauge!("lag", "table" => "b").set(2.0);
            metrics::gauge!("other", "table" => "a").set(3.0);
        });
        handle.forget_gauges("lag", "table", |t| t == "b");
        assert_eq!(
            handle.render(),
            "# TYPE lag gauge\nlag{table=\"b\"} 2\n# TYPE other gauge\nother{table=\"a\"} 3\n"
        );
        // Set again, a forgotten gauge is back.
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("lag", "table" => "a").set(4.0);
        });
        assert!(handle.render().contains("lag{table=\"a\"} 4"));
    }

    #[test]
    fn nothing_registered_renders_nothing() {
        assert_eq!(rendered(|| {}), "");
    }

    #[test]
    fn counters_get_total_help_and_type() {
        let text = rendered(|| {
            metrics::describe_counter!("dynamo_cdc_changes_read", "Changes read from the source.");
            metrics::counter!("dynamo_cdc_changes_read", "table" => "orders").increment(3);
            metrics::counter!("dynamo_cdc_changes_read", "table" => "orders").increment(2);
            metrics::counter!("dynamo_cdc_gaps_total").increment(1);
        });
        assert_eq!(
            text,
            "# HELP dynamo_cdc_changes_read_total Changes read from the source.\n\
             # TYPE dynamo_cdc_changes_read_total counter\n\
             dynamo_cdc_changes_read_total{table=\"orders\"} 5\n\
             # TYPE dynamo_cdc_gaps_total counter\n\
             dynamo_cdc_gaps_total 1\n"
        );
    }

    #[test]
    fn families_sort_by_name_and_series_by_labels() {
        let text = rendered(|| {
            metrics::gauge!("b_gauge", "table" => "z").set(1.0);
            metrics::gauge!("b_gauge", "table" => "a").set(2.0);
            metrics::counter!("a_total", "sink" => "s", "op" => "insert").increment(1);
            metrics::counter!("a_total", "op" => "insert", "sink" => "r").increment(1);
        });
        assert_eq!(
            text,
            "# TYPE a_total counter\n\
             a_total{op=\"insert\",sink=\"r\"} 1\n\
             a_total{op=\"insert\",sink=\"s\"} 1\n\
             # TYPE b_gauge gauge\n\
             b_gauge{table=\"a\"} 2\n\
             b_gauge{table=\"z\"} 1\n"
        );
    }

    #[test]
    fn label_order_at_the_call_site_does_not_make_a_new_series() {
        let text = rendered(|| {
            metrics::counter!("x_total", "a" => "1", "b" => "2").increment(1);
            metrics::counter!("x_total", "b" => "2", "a" => "1").increment(1);
        });
        assert_eq!(text, "# TYPE x_total counter\nx_total{a=\"1\",b=\"2\"} 2\n");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let text = rendered(|| {
            metrics::describe_gauge!("g", "a \\ back\nslash \"quoted\"");
            metrics::gauge!("g", "table" => "a\\b\"c\nd").set(1.0);
        });
        assert_eq!(
            text,
            "# HELP g a \\\\ back\\nslash \"quoted\"\n\
             # TYPE g gauge\n\
             g{table=\"a\\\\b\\\"c\\nd\"} 1\n"
        );
    }

    #[test]
    fn gauge_values_are_numbers_prometheus_parses() {
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(-1.5), "-1.5");
        assert_eq!(format_float(1e21), "1000000000000000000000");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        let text = rendered(|| {
            metrics::gauge!("lag_seconds").set(12.5);
            metrics::gauge!("lag_seconds").increment(0.5);
            metrics::gauge!("unknown").set(f64::NAN);
        });
        assert_eq!(
            text,
            "# TYPE lag_seconds gauge\nlag_seconds 13\n# TYPE unknown gauge\nunknown NaN\n"
        );
    }

    #[test]
    fn names_are_made_valid() {
        assert_eq!(sanitize_name("dynamo.cdc-x", true), "dynamo_cdc_x");
        assert_eq!(sanitize_name("a:b", true), "a:b");
        assert_eq!(sanitize_name("a:b", false), "a_b");
        assert_eq!(sanitize_name("9lives", true), "_9lives");
        assert_eq!(sanitize_name("", true), "_");
    }

    #[test]
    fn histograms_are_ignored() {
        let text = rendered(|| metrics::histogram!("h").record(1.0));
        assert_eq!(text, "");
    }

    #[test]
    fn a_kept_handle_updates_the_same_series() {
        let recorder = PrometheusRecorder::new();
        let handle = recorder.handle();
        let counter = metrics::with_local_recorder(
            &recorder,
            || metrics::counter!("kept_total", "sink" => "parquet"),
        );
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.increment(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            handle.render(),
            "# TYPE kept_total counter\nkept_total{sink=\"parquet\"} 4000\n"
        );
    }

    #[test]
    fn install_twice_returns_the_same_handle() {
        let first = install();
        let second = install();
        assert!(Arc::ptr_eq(&first.registry, &second.registry));
        metrics::counter!("observe_recorder_install_test_total").increment(7);
        assert!(
            second
                .render()
                .contains("observe_recorder_install_test_total 7\n")
        );
    }
}
