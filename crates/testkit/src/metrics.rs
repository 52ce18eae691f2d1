//! A metrics recorder that keeps counters in a map, for tests that check
//! what was counted (with `metrics::with_local_recorder`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Counters by name and sorted labels (`name{a=x,b=y}`).
#[derive(Default)]
pub struct Counters {
    values: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    help: Mutex<BTreeMap<String, String>>,
}

struct Cell(Arc<AtomicU64>);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl Counters {
    /// The counter `name{label=value,...}` (labels sorted by name).
    pub fn get(&self, name: &str) -> u64 {
        let values = self.values.lock().unwrap();
        values.get(name).map_or(0, |v| v.load(Ordering::Relaxed))
    }

    /// The help text registered for `name`.
    pub fn help(&self, name: &str) -> Option<String> {
        self.help.lock().unwrap().get(name).cloned()
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, help: SharedString) {
        let mut all = self.help.lock().unwrap();
        all.insert(key.as_str().to_owned(), help.to_string());
    }
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut values = self.values.lock().unwrap();
        Counter::from_arc(Arc::new(Cell(values.entry(name).or_default().clone())))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
