//! librdkafka's own reports, routed so that an unreachable broker is not a
//! flood: the client retries a refused connection every second or so and
//! reports every failure. Its log lines go to `debug`; its error callbacks
//! go to `warn`, at most once per kind of error every 30 s, with how many
//! were held back. The sink and the driver say when Kafka goes down and
//! comes back.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The shortest time between two reports of one kind of client error.
const REPEAT_AFTER: Duration = Duration::from_secs(30);

/// A client context that logs the way this module says.
pub(crate) struct QuietClient;

impl ClientContext for QuietClient {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&error, reason);
    }
}

impl ConsumerContext for QuietClient {}

/// For every context of the crate: librdkafka's log lines, at debug level.
pub(crate) fn client_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    tracing::debug!(?level, facility = fac, "librdkafka: {message}");
}

/// For every context of the crate: librdkafka's error callbacks, rate
/// limited per error code.
pub(crate) fn client_error(error: &KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    // The read-back's end of a partition is how it knows it is done.
    if code == Some(RDKafkaErrorCode::PartitionEOF) {
        return;
    }
    let key = code.map_or_else(|| error.to_string(), |c| format!("{c:?}"));
    static SEEN: OnceLock<Mutex<HashMap<String, (Instant, u64)>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Mutex::default);
    let Ok(mut seen) = seen.lock() else { return };
    let now = Instant::now();
    match seen.get_mut(&key) {
        Some((last, held)) if now.duration_since(*last) < REPEAT_AFTER => *held += 1,
        Some((last, held)) => {
            tracing::warn!(
                repeated = *held,
                "kafka client: {error}: {reason} (and {held} more like it in the last {} s)",
                now.duration_since(*last).as_secs()
            );
            *last = now;
            *held = 0;
        }
        None => {
            tracing::warn!("kafka client: {error}: {reason}");
            seen.insert(key, (now, 0));
        }
    }
}
