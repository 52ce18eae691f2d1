//! The idempotent producer, its acknowledgements, and the groups of
//! messages in flight.
//!
//! Messages are handed over in groups ([`KafkaProducer::submit`]), each
//! with a tag the caller gets back when every message of the group has an
//! answer ([`KafkaProducer::landed`]). Several groups may be in flight, so
//! the sink encodes the next while the brokers acknowledge the last, but
//! groups land strictly in the order they were submitted: a group counts
//! as delivered, and its offsets as read-back starting points, only once
//! it and every group before it are acknowledged. Each message carries a
//! serial number as its delivery opaque to find its group.
//!
//! The producer never gives up on a message by itself
//! (`message.timeout.ms = 0`): while the brokers are down or slow, a wait
//! for room or for everything to land lasts, so the pipeline pauses and the
//! source stops reading instead of anything being dropped or re-sent out of
//! order. Under leases the timeout is finite instead (a table's next owner
//! waits it out), and a guard is asked before every hand-over: a message
//! handed over after the lease ended could land after the next owner read
//! the topic back.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext, PurgeConfig};

use crate::{KafkaSinkError, native};

/// One message to send.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    /// Shared by every message of the topic.
    pub topic: Arc<str>,
    pub key: Vec<u8>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, HeaderValue)>,
}

/// A header's value, shared with the change it comes from where it can be:
/// the table, shard and sequence number headers of every message were an
/// allocation each, and again for a tombstone.
#[derive(Clone, Debug)]
pub(crate) enum HeaderValue {
    Shared(Arc<str>),
    Sequence(dynamo_cdc_core::SequenceNumber),
    Owned(Vec<u8>),
}

impl HeaderValue {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            HeaderValue::Shared(text) => text.as_bytes(),
            HeaderValue::Sequence(n) => n.as_str().as_bytes(),
            HeaderValue::Owned(bytes) => bytes,
        }
    }
}

impl From<Vec<u8>> for HeaderValue {
    fn from(bytes: Vec<u8>) -> Self {
        HeaderValue::Owned(bytes)
    }
}

impl Outgoing {
    /// Its bytes: key, value and headers.
    pub(crate) fn size(&self) -> usize {
        self.key.len()
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_bytes().len())
                .sum::<usize>()
    }
}

/// How one message ended.
#[derive(Debug)]
pub(crate) enum Sent {
    /// Stored at this partition and offset.
    Stored { partition: i32, offset: i64 },
    /// Reported delivered without an offset: acknowledged only because a
    /// later request of its partition succeeded. librdkafka's idempotent
    /// producer does so for a request that failed in a way that may or
    /// may not have stored it (a timeout, a dropped connection), reasoning
    /// that a broker checking the producer's sequence numbers would have
    /// refused the later request otherwise. A broker that does not check
    /// them (librdkafka's own mock cluster, some Kafka-compatible servers)
    /// appends the later request all the same, and the message was never
    /// stored. Not counted as delivered: the pass ends, and the next one's
    /// read-back finds whether it is in the topic.
    Unconfirmed,
    /// Refused for what it is (larger than the broker or client accepts,
    /// failing the broker's record checks): it would be refused again.
    Refused(String),
    /// Not stored only because another record of its batch was refused.
    Collateral,
    /// Any other failure.
    Failed(KafkaError),
}

impl Sent {
    /// A success report for `partition` at `offset`; an offset below zero
    /// (librdkafka's "invalid") means no broker answered for this message
    /// itself.
    fn stored_at(partition: i32, offset: i64) -> Sent {
        if offset < 0 {
            Sent::Unconfirmed
        } else {
            Sent::Stored { partition, offset }
        }
    }
}

/// The answers of messages, by serial, as librdkafka reports them.
#[derive(Default)]
pub(crate) struct Acks {
    results: Mutex<Vec<(usize, Sent)>>,
    /// Answers reported so far, to tell whether a poll served any.
    reported: AtomicUsize,
}

impl ClientContext for Acks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::client_log::client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::client_log::client_error(&error, reason);
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, serial: usize) {
        let sent = match result {
            Ok(m) => Sent::stored_at(m.partition(), m.offset()),
            Err((e, _)) => crate::refused::sent_of(e),
        };
        if let Ok(mut r) = self.results.lock() {
            r.push((serial, sent));
        }
        self.reported.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long acknowledgements may take before the brokers count as down.
const SLOW_ACKS: Duration = Duration::from_secs(10);

/// How long a wait for answers sleeps before it looks for them again.
///
/// librdkafka hands answers over only when polled, and rust-rdkafka's
/// `poll(timeout)` always runs until its timeout, turning whatever is left
/// below a millisecond into non-blocking polls in a loop: every 10 ms wait
/// spun for up to a millisecond (about 2% of the CPU into Kafka on small
/// records, and a tenth of a core for as long as the brokers are down).
/// Sleeping, then serving what came, costs nothing while waiting and sees
/// answers no later: a timed poll returns only at its timeout anyway.
const ANSWER_WAIT: Duration = Duration::from_millis(10);

/// Once a stop is asked for, how long a wait for answers may go on while
/// the oldest group in flight has none: brokers that are up answer within
/// it, and a stop during an outage ends the pass (its messages are sent
/// again by the next run unless its read-back finds them stored), well
/// within the grace period a container gets between SIGTERM and SIGKILL.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

/// How long a producer being dropped waits for the answers to requests a
/// broker already has: librdkafka's default request timeout, after which it
/// gives up on them itself (`request.timeout.ms` in `properties` sets
/// another).
const DROP_DRAIN: Duration = Duration::from_secs(30);

/// At most this many reports are served in one go, so a flood of them
/// cannot hold the sink in [`KafkaProducer::serve_reports`].
const MAX_REPORTS_SERVED: usize = 1024;

/// A group of messages handed over together.
struct Flight<T> {
    /// Serial of its first message; the others follow.
    first: usize,
    messages: Vec<Outgoing>,
    results: Vec<Option<Sent>>,
    answered: usize,
    /// Bytes of its messages (keys, values, headers).
    bytes: usize,
    /// When it was handed over.
    sent_at: Instant,
    tag: T,
}

impl<T> Flight<T> {
    fn complete(&self) -> bool {
        self.answered == self.messages.len()
    }
}

/// A group whose every message has an answer.
pub(crate) struct Landed<T> {
    pub messages: Vec<Outgoing>,
    /// One per message, in message order.
    pub results: Vec<Sent>,
    pub tag: T,
}

/// How long [`KafkaProducer::landed`] waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Until {
    /// Not at all: whatever has landed already.
    Now,
    /// Until a group of this many bytes may be submitted without going
    /// over the limits of what is in flight.
    Room { bytes: usize },
    /// Until nothing is in flight.
    Empty,
}

/// The producer.
///
/// Field order matters when it is dropped: topic handles go back before
/// the client is destroyed, and the messages librdkafka reads in place
/// (`flights`, `abandoned`) are freed after.
pub(crate) struct KafkaProducer<T = ()> {
    topics: native::Topics,
    producer: BaseProducer<Acks>,
    /// Next offset per topic and partition after every landed group.
    pub(crate) next_offsets: BTreeMap<(String, i32), i64>,
    /// Serial of the next message handed over.
    next_serial: usize,
    /// Groups in flight, oldest first.
    flights: VecDeque<Flight<T>>,
    /// Bytes of `flights`.
    in_flight_bytes: usize,
    /// Whether the brokers count as down: the oldest group has waited
    /// [`SLOW_ACKS`] for its answers.
    outage: dynamo_cdc_core::Outage,
    /// How long [`Drop`] waits for answers: the request timeout.
    drain: Duration,
    /// Groups whose hand-over failed part way: librdkafka may still read
    /// the messages handed over, so they are kept until the client is gone.
    abandoned: Vec<Vec<Outgoing>>,
    /// Under leases: whether messages may still be handed over.
    guard: Option<dynamo_cdc_core::WriteGuard>,
    /// Set when the run is asked to stop (see [`STOP_PATIENCE`]).
    stop: Option<Arc<AtomicBool>>,
    /// When the brokers last answered a message.
    last_answer: Instant,
}

/// librdkafka settings this sink relies on; `properties` may not change them.
pub const PROTECTED_PROPERTIES: [&str; 6] = [
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "transactional.id",
    "allow.auto.create.topics",
];

impl<T> KafkaProducer<T> {
    /// The producer's client, for metadata and watermark requests: it is
    /// connected already, where a client made for one request would connect
    /// (and start its threads) first.
    pub(crate) fn client(&self) -> &rdkafka::client::Client<Acks> {
        self.producer.client()
    }

    /// A producer for `brokers`, with `properties` passed through.
    pub(crate) fn new(
        brokers: &str,
        properties: &[(String, String)],
    ) -> Result<Self, KafkaSinkError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "zstd")
            // zstd's fastest level, as for Parquet: librdkafka's default
            // (3) spent a fifth of the Kafka path's CPU for a few percent
            // of size. `properties` may set another.
            .set("compression.level", "1")
            .set("linger.ms", "5")
            // The sink asks this client whether a topic exists (and how far
            // its partitions go) before it writes there: asking must never
            // create the topic with the brokers' defaults. Missing topics
            // are created by the sink (`create_topics`).
            .set("allow.auto.create.topics", "false")
            // Never expire a message: wait out broker trouble instead.
            .set("message.timeout.ms", "0");
        let mut drain = DROP_DRAIN;
        for (k, v) in properties {
            config.set(k, v);
            if k == "request.timeout.ms"
                && let Ok(ms) = v.trim().parse::<u64>()
            {
                drain = Duration::from_millis(ms);
            }
        }
        let producer = config
            .create_with_context(Acks::default())
            .map_err(|source| KafkaSinkError::Client {
                what: "cannot create the Kafka producer",
                source,
            })?;
        Ok(KafkaProducer {
            topics: native::Topics::default(),
            producer,
            next_offsets: BTreeMap::new(),
            next_serial: 0,
            flights: VecDeque::new(),
            in_flight_bytes: 0,
            outage: dynamo_cdc_core::Outage::new(),
            drain,
            abandoned: Vec::new(),
            guard: None,
            stop: None,
            last_answer: Instant::now(),
        })
    }

    /// The error for a message that failed with `source`. When the client
    /// failed for good, the messages fail with a generic code (`_FATAL`,
    /// or purged) whatever the cause: the cause is the client's fatal
    /// error, which decides whether a new producer can do better (a
    /// refused permission cannot).
    pub(crate) fn failure(&self, what: &'static str, source: KafkaError) -> KafkaSinkError {
        match self.producer.client().fatal_error() {
            Some((code, reason)) => {
                tracing::error!(error = %reason, "the Kafka producer failed for good");
                KafkaSinkError::Client {
                    what,
                    source: KafkaError::MessageProduction(code),
                }
            }
            None => KafkaSinkError::Client { what, source },
        }
    }

    /// Asks `guard` before every hand-over from now on.
    pub(crate) fn guard(&mut self, guard: Option<dynamo_cdc_core::WriteGuard>) {
        self.guard = guard;
    }

    /// Watches `stop` from now on: set, a wait on brokers that do not
    /// answer gives up after [`STOP_PATIENCE`].
    pub(crate) fn stop_flag(&mut self, stop: Arc<AtomicBool>) {
        self.stop = Some(stop);
    }

    fn stopping(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// `Err` when a stop was asked for and the brokers have answered
    /// nothing for [`STOP_PATIENCE`] while a group waits (counted from the
    /// later of the last answer and the oldest group's hand-over: brokers
    /// that are up but busy keep answering).
    fn given_up(&self, since: Instant) -> Result<(), KafkaSinkError> {
        if !self.stopping() {
            return Ok(());
        }
        let Some(oldest) = self.flights.front() else {
            return Ok(());
        };
        let quiet = since.max(oldest.sent_at).max(self.last_answer).elapsed();
        if quiet < STOP_PATIENCE {
            return Ok(());
        }
        Err(KafkaSinkError::Stopped {
            waiting: self.waiting(),
            waited_s: quiet.as_secs(),
        })
    }

    /// `Err` once the guard says messages may no longer be handed over.
    fn allowed(&self) -> Result<(), KafkaSinkError> {
        self.guard
            .as_ref()
            .map_or(Ok(()), |may| may().map_err(KafkaSinkError::Fenced))
    }

    /// Hands a group of messages over without waiting for their answers;
    /// `tag` comes back with them from [`KafkaProducer::landed`]. A group
    /// may be empty (it lands at once, after the groups before it).
    pub(crate) fn submit(&mut self, messages: Vec<Outgoing>, tag: T) -> Result<(), KafkaSinkError> {
        // Right before the hand-over: the wait for room before it may have
        // outlasted the lease the run loop checked.
        self.allowed()?;
        let first = self.next_serial;
        self.next_serial += messages.len();
        let mut flight = Flight {
            first,
            results: (0..messages.len()).map(|_| None).collect(),
            answered: 0,
            bytes: messages.iter().map(Outgoing::size).sum(),
            sent_at: Instant::now(),
            messages: Vec::new(),
            tag,
        };
        for (index, m) in messages.iter().enumerate() {
            match self.hand_over(m, first + index) {
                Ok(Some(early)) => {
                    flight.results[index] = Some(early);
                    flight.answered += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    // librdkafka may hold the messages handed over so far.
                    self.abandoned.push(messages);
                    return Err(e);
                }
            }
        }
        flight.messages = messages;
        self.in_flight_bytes += flight.bytes;
        self.flights.push_back(flight);
        Ok(())
    }

    /// Hands one message to librdkafka; `Some` when it is refused at once.
    ///
    /// librdkafka reads the key and value where they are, without a copy:
    /// the message must stay in its group (in `flights`, or `abandoned`)
    /// until its answer is served or the client is gone.
    fn hand_over(&mut self, m: &Outgoing, serial: usize) -> Result<Option<Sent>, KafkaSinkError> {
        let message = native::Message {
            topic: &m.topic,
            key: &m.key,
            value: m.value.as_deref(),
            headers: &m.headers,
            serial,
        };
        loop {
            let client = self.producer.client().native_ptr();
            // SAFETY: `client` lives as long as `self.producer`; the caller
            // keeps `m` in a group of `self.flights` (or `self.abandoned`)
            // until its answer is served, and both are dropped only after
            // `self.producer` (field order), which serves every answer or
            // destroys the client first.
            #[allow(unsafe_code)]
            let handed = unsafe { native::produce(client, &mut self.topics, &message) };
            match handed {
                Ok(()) => return Ok(None),
                Err(RDKafkaErrorCode::QueueFull) => {
                    // The local queue is full: let acknowledgements drain it,
                    // for as long as the lease lasts, or until a stop.
                    self.wait_for_reports();
                    self.allowed()?;
                    self.collect_answers();
                    self.given_up(self.last_answer)?;
                }
                Err(RDKafkaErrorCode::MessageSizeTooLarge) => {
                    return Ok(Some(Sent::Refused(format!(
                        "{} bytes exceed the producer's message.max.bytes",
                        m.key.len() + m.value.as_ref().map_or(0, Vec::len)
                    ))));
                }
                Err(code) => {
                    return Err(self.failure(
                        "cannot hand a message to the producer",
                        KafkaError::MessageProduction(code),
                    ));
                }
            }
        }
    }

    /// Sends one group and waits until it (and every group before it) has
    /// landed; returns them all, oldest first.
    pub(crate) fn send_all(
        &mut self,
        messages: Vec<Outgoing>,
        tag: T,
    ) -> Result<Vec<Landed<T>>, KafkaSinkError> {
        self.submit(messages, tag)?;
        self.landed(Until::Empty)
    }

    /// The groups that have landed, oldest first, after waiting as `until`
    /// says. A group lands only after every group submitted before it.
    ///
    /// The producer never gives up on a message, so while the brokers are
    /// down a wait lasts: the pipeline pauses, until a stop is asked for.
    ///
    /// # Errors
    /// [`KafkaSinkError::Stopped`] when a stop was asked for and the
    /// brokers have not answered for [`STOP_PATIENCE`]; the groups that
    /// landed meanwhile are dropped with the pass, which commits nothing
    /// more.
    pub(crate) fn landed(&mut self, until: Until) -> Result<Vec<Landed<T>>, KafkaSinkError> {
        let mut out = Vec::new();
        let started = Instant::now();
        // Answers already delivered to the context, then a look for more.
        self.serve_reports();
        loop {
            self.collect_answers();
            self.pop_landed(&mut out);
            self.report_slowness();
            if self.satisfied(until) {
                return Ok(out);
            }
            self.given_up(started)?;
            self.wait_for_reports();
            dynamo_cdc_core::alive::still_waiting();
        }
    }

    /// Serves the reports librdkafka has queued (answers go to
    /// [`Acks::delivery`]) without blocking.
    fn serve_reports(&self) {
        // A poll without a timeout serves one report (which may answer many
        // messages): go on while reports keep coming.
        for _ in 0..MAX_REPORTS_SERVED {
            let before = self.producer.context().reported.load(Ordering::Relaxed);
            self.producer.poll(Duration::ZERO);
            if self.producer.context().reported.load(Ordering::Relaxed) == before {
                break;
            }
        }
    }

    /// Waits [`ANSWER_WAIT`], then serves the reports that came meanwhile.
    fn wait_for_reports(&self) {
        std::thread::sleep(ANSWER_WAIT);
        self.serve_reports();
    }

    /// Says when the brokers stop answering, whether or not the sink is
    /// waiting for them (with groups in flight, it may go on encoding for a
    /// while): once the oldest group has waited [`SLOW_ACKS`], every 30 s
    /// while that lasts, and once when answers come again.
    fn report_slowness(&mut self) {
        let now = Instant::now();
        let overdue = self
            .flights
            .front()
            .map(|f| now.duration_since(f.sent_at))
            .filter(|waited| *waited >= SLOW_ACKS);
        let Some(waited) = overdue else {
            if let Some(dynamo_cdc_core::OutageLine::Back(after)) = self.outage.succeeded(now) {
                tracing::warn!(
                    after_s = after.as_secs() + SLOW_ACKS.as_secs(),
                    "Kafka acknowledges messages again; reading goes on"
                );
            }
            return;
        };
        let waiting = self.waiting();
        match self.outage.failed(now) {
            Some(dynamo_cdc_core::OutageLine::Down) => tracing::error!(
                waiting,
                for_s = waited.as_secs(),
                "Kafka does not acknowledge messages (brokers down or unreachable?); \
                 reading pauses once the messages in flight reach their limit, and nothing \
                 is lost: the messages are sent when the brokers answer"
            ),
            Some(dynamo_cdc_core::OutageLine::StillDown(_)) => tracing::warn!(
                waiting,
                for_s = waited.as_secs(),
                "still waiting for Kafka to acknowledge messages"
            ),
            _ => {}
        }
    }

    /// Whether a wait for `until` is over.
    fn satisfied(&self, until: Until) -> bool {
        match until {
            Until::Now => true,
            Until::Empty => self.flights.is_empty(),
            Until::Room { bytes } => {
                self.flights.is_empty()
                    || (self.flights.len() < crate::IN_FLIGHT_GROUPS
                        && self.in_flight_bytes + bytes <= crate::IN_FLIGHT_BYTES)
            }
        }
    }

    /// Messages in flight without an answer.
    fn waiting(&self) -> usize {
        self.flights
            .iter()
            .map(|f| f.messages.len() - f.answered)
            .sum()
    }

    /// Moves the answers librdkafka reported into their groups.
    fn collect_answers(&mut self) {
        let answers = self
            .producer
            .context()
            .results
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        if !answers.is_empty() {
            self.last_answer = Instant::now();
        }
        for (serial, sent) in answers {
            // Groups are in serial order; an empty group holds no serial.
            let at = self
                .flights
                .partition_point(|f| f.first + f.messages.len() <= serial);
            let Some(flight) = self.flights.get_mut(at) else {
                continue;
            };
            let Some(slot) = serial
                .checked_sub(flight.first)
                .and_then(|i| flight.results.get_mut(i))
            else {
                continue;
            };
            if slot.is_none() {
                flight.answered += 1;
            }
            *slot = Some(sent);
        }
    }

    /// Takes the complete groups at the front, in order, and moves the
    /// next offsets past what they stored.
    fn pop_landed(&mut self, out: &mut Vec<Landed<T>>) {
        while self.flights.front().is_some_and(Flight::complete) {
            let Some(flight) = self.flights.pop_front() else {
                break;
            };
            self.in_flight_bytes -= flight.bytes;
            let results: Vec<Sent> = flight
                .results
                .into_iter()
                .map(|s| s.unwrap_or(Sent::Failed(KafkaError::Canceled)))
                .collect();
            // The highest offset per topic and partition first (a group
            // touches a few), then the map: no key made per message.
            let mut highest: Vec<(&str, i32, i64)> = Vec::new();
            for (m, sent) in flight.messages.iter().zip(&results) {
                if let Sent::Stored { partition, offset } = *sent {
                    match highest
                        .iter_mut()
                        .find(|(t, p, _)| *p == partition && *t == &*m.topic)
                    {
                        Some(h) => h.2 = h.2.max(offset),
                        None => highest.push((&*m.topic, partition, offset)),
                    }
                }
            }
            for (topic, partition, offset) in highest {
                let next = self
                    .next_offsets
                    .entry((topic.to_owned(), partition))
                    .or_insert(0);
                *next = (*next).max(offset + 1);
            }
            out.push(Landed {
                messages: flight.messages,
                results,
                tag: flight.tag,
            });
        }
    }

    /// Waits for everything in flight.
    pub(crate) fn flush(&self) -> Result<(), KafkaSinkError> {
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|source| KafkaSinkError::Client {
                what: "cannot flush the producer",
                source,
            })
    }
}

impl<T> Drop for KafkaProducer<T> {
    /// Messages still queued here are purged: no broker has them, except
    /// a retry of a request that failed without an answer (a dropped
    /// connection), which a broker may have appended all the same. Requests
    /// in flight are answered first. librdkafka's own teardown abandons
    /// them, and a broker may still append one after the next sink has read
    /// the topic back to find where to resume (a pass restarted after
    /// another sink's outage, say), which would then send it again.
    fn drop(&mut self) {
        if self.producer.in_flight_count() == 0 {
            return;
        }
        // A stop does not wait the whole request timeout: a pass that
        // ends on a stop commits nothing more, and under leases the next
        // owner waits out the produce timeout before its read-back.
        let drain = if self.stopping() {
            self.drain.min(STOP_PATIENCE)
        } else {
            self.drain
        };
        let deadline = Instant::now() + drain;
        loop {
            // Again each round: a request that failed goes back to the
            // queue for a retry, and no retry is sent now.
            self.producer.purge(PurgeConfig::default().queue());
            self.serve_reports();
            if self.producer.in_flight_count() == 0 {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    waiting = self.producer.in_flight_count(),
                    wait_s = drain.as_secs_f64(),
                    "Kafka did not answer requests in flight as the producer closed; \
                     if the broker stored them late, the next read-back may not see them"
                );
                return;
            }
            std::thread::sleep(ANSWER_WAIT);
            // Waiting on the brokers, as `landed` does: the liveness probe
            // must not count this as a stall.
            dynamo_cdc_core::alive::still_waiting();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::mocking::MockCluster;

    use super::*;

    fn message(topic: &Arc<str>, i: usize) -> Outgoing {
        Outgoing {
            topic: topic.clone(),
            key: i.to_string().into_bytes(),
            value: Some(vec![b'x'; 100]),
            headers: Vec::new(),
        }
    }

    /// What a topic's single partition holds: key, value, headers.
    pub(crate) type Stored = (Vec<u8>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

    pub(crate) fn read_back(brokers: &str, topic: &str) -> Vec<Stored> {
        use rdkafka::message::Headers as _;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "read-back")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&list).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        loop {
            assert!(Instant::now() < deadline, "{topic} never ended");
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().map(<[u8]>::to_vec),
                    m.headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default(),
                )),
                Some(Err(KafkaError::PartitionEOF(_))) => return out,
                _ => {}
            }
        }
    }

    /// Keys, values and headers are read where they are, not copied: what
    /// the brokers store is what the groups held, to the byte, an empty
    /// value stays empty and a tombstone stays null, on every topic.
    #[test]
    fn messages_arrive_byte_for_byte_on_each_topic() {
        let cluster = MockCluster::new(1).unwrap();
        let topics: Vec<Arc<str>> = vec!["a".into(), "b".into()];
        for t in &topics {
            cluster.create_topic(t, 1, 1).unwrap();
        }
        let mut producer = KafkaProducer::<usize>::new(&cluster.bootstrap_servers(), &[]).unwrap();
        let mut sent: Vec<Vec<Outgoing>> = vec![Vec::new(), Vec::new()];
        for group in 0..3 {
            let messages: Vec<Outgoing> = (0..40)
                .map(|i| {
                    let topic = &topics[i % 2];
                    let value = match i % 5 {
                        0 => None,
                        1 => Some(Vec::new()),
                        // Past librdkafka's `message.copy.max.bytes` too.
                        2 => Some((0..70_000).map(|b| (b * 7 + i) as u8).collect()),
                        _ => Some(format!("value {group}-{i}").into_bytes()),
                    };
                    Outgoing {
                        topic: topic.clone(),
                        key: format!("key {group}-{i}").into_bytes(),
                        value,
                        headers: vec![
                            ("table", HeaderValue::Shared("orders".into())),
                            ("event", HeaderValue::Owned(vec![0, 1, 2, 255])),
                        ],
                    }
                })
                .collect();
            for m in &messages {
                sent[topics.iter().position(|t| *t == m.topic).unwrap()].push(m.clone());
            }
            producer.submit(messages, group).unwrap();
        }
        let landed = producer.landed(Until::Empty).unwrap();
        assert_eq!(landed.iter().map(|l| l.tag).collect::<Vec<_>>(), [0, 1, 2]);
        for l in &landed {
            assert!(l.results.iter().all(|r| matches!(r, Sent::Stored { .. })));
        }
        for (topic, sent) in topics.iter().zip(&sent) {
            let want: Vec<Stored> = sent
                .iter()
                .map(|m| {
                    let headers = m
                        .headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                        .collect();
                    (m.key.clone(), m.value.clone(), headers)
                })
                .collect();
            assert_eq!(read_back(&cluster.bootstrap_servers(), topic), want);
        }
    }

    #[test]
    fn a_dropped_producer_waits_for_the_answers_to_what_a_broker_already_has() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let topic: Arc<str> = "t".into();
        let mut producer = KafkaProducer::<()>::new(&cluster.bootstrap_servers(), &[]).unwrap();
        // Connected, the topic known.
        let first = producer.send_all(vec![message(&topic, 0)], ()).unwrap();
        assert!(matches!(first[0].results[0], Sent::Stored { .. }));
        // From now on the broker stores at once and answers 5 s later.
        cluster
            .broker_round_trip_time(1, Duration::from_secs(5))
            .unwrap();
        producer
            .submit((1..=20).map(|i| message(&topic, i)).collect(), ())
            .unwrap();
        // A flush sends at once, past the linger; its answers cannot have
        // come back when it gives up.
        assert!(producer.producer.flush(Duration::from_secs(1)).is_err());
        let acks = producer.producer.context().clone();
        drop(producer);
        cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
        let high = high_watermark(&cluster.bootstrap_servers(), "t");
        assert_eq!(high, 21, "the broker stored every message");
        let results = acks.results.lock().unwrap();
        assert_eq!(results.len(), 20);
        for (serial, sent) in results.iter() {
            assert!(
                matches!(sent, Sent::Stored { .. }),
                "message {serial}, stored, was reported as {sent:?}"
            );
        }
    }

    /// The next offset of partition 0 of `topic`.
    fn high_watermark(brokers: &str, topic: &str) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(30))
            .unwrap();
        high
    }

    /// Produce requests librdkafka's mock cluster `raw` has received since
    /// its request tracking started.
    #[allow(unsafe_code)]
    fn produce_requests(raw: *mut rdkafka::bindings::rd_kafka_mock_cluster_t) -> usize {
        use rdkafka::bindings as rd;
        let mut n = 0usize;
        // SAFETY: `raw` is a live mock cluster (its client outlives the
        // call); the array and its requests are the caller's to destroy.
        unsafe {
            let requests = rd::rd_kafka_mock_get_requests(raw, &mut n);
            let produce = (0..n)
                .filter(|i| rd::rd_kafka_mock_request_api_key(*requests.add(*i)) == 0)
                .count();
            rd::rd_kafka_mock_request_destroy_array(requests, n);
            produce
        }
    }

    /// librdkafka acknowledges the messages of a request that failed (in a
    /// way that may have stored them) once a later request of the partition
    /// succeeds. The mock cluster, which does not check an idempotent
    /// producer's sequence numbers, appends the later request although the
    /// first was never stored: the report says delivered, the topic does
    /// not have it. Such a report carries no offset, and is not taken for
    /// stored.
    #[test]
    #[allow(unsafe_code)]
    fn a_message_acknowledged_only_by_a_later_request_is_not_taken_for_stored() {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        // A client that hosts the cluster, for its handle.
        let host: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .unwrap();
        // SAFETY: `host` is alive for the whole test.
        let raw =
            unsafe { rdkafka::bindings::rd_kafka_handle_mock_cluster(host.client().native_ptr()) };
        let cluster = host.client().mock_cluster().unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let topic: Arc<str> = "t".into();
        let properties = [("linger.ms".to_owned(), "0".to_owned())];
        let mut producer =
            KafkaProducer::<usize>::new(&cluster.bootstrap_servers(), &properties).unwrap();
        // Connected, with its producer id.
        producer.send_all(vec![message(&topic, 0)], 0).unwrap();
        // Answers wait, so that the second request goes out before the
        // first one's error comes back.
        cluster
            .broker_round_trip_time(1, Duration::from_secs(2))
            .unwrap();
        // SAFETY: as above.
        unsafe { rdkafka::bindings::rd_kafka_mock_start_request_tracking(raw) };
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for (group, requests) in [(1, 1), (2, 2)] {
            producer
                .submit(vec![message(&topic, group)], group)
                .unwrap();
            while produce_requests(raw) < requests {
                assert!(Instant::now() < deadline, "request {requests} never came");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
        let landed = producer.landed(Until::Empty).unwrap();
        let results: Vec<(usize, &Sent)> = landed
            .iter()
            .flat_map(|l| l.results.iter().map(move |r| (l.tag, r)))
            .collect();
        assert!(
            matches!(
                results[..],
                [(1, Sent::Unconfirmed), (2, Sent::Stored { offset: 1, .. })]
            ),
            "{results:?}"
        );
        let high = high_watermark(&cluster.bootstrap_servers(), "t");
        assert_eq!(high, 2, "the first message of the two was never stored");
    }
}
