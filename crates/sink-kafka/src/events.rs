//! What the sink reports: each event writes its log line and moves its
//! metrics, so the two never disagree.

use std::collections::BTreeMap;

/// Messages acknowledged by the brokers (tombstones included).
pub const MESSAGES_ACKED: &str = "dynamo_cdc_kafka_messages_acked_total";
/// Changes made durable, per sink and table (shared with every sink).
pub(crate) const CHANGES_DELIVERED: &str = "dynamo_cdc_changes_delivered_total";

/// Messages stored in the dead-letter topic, per table.
pub(crate) const DEAD_LETTER_MESSAGES: &str = "dynamo_cdc_kafka_dead_letter_messages_total";

/// Registers the help text of this crate's metrics.
pub fn describe() {
    metrics::describe_counter!(
        MESSAGES_ACKED,
        "Kafka messages acknowledged by the brokers (tombstones included)."
    );
    metrics::describe_counter!(
        DEAD_LETTER_MESSAGES,
        "Messages stored in the Kafka dead-letter topic (too large, or refused by a broker)."
    );
}

/// A message was stored in the dead-letter topic.
pub(crate) struct DeadLetterSent<'a> {
    pub table: &'a str,
}

impl DeadLetterSent<'_> {
    pub(crate) fn emit(self) {
        metrics::counter!(DEAD_LETTER_MESSAGES, "table" => self.table.to_owned()).increment(1);
    }
}

/// A group of messages was acknowledged: its changes are durable.
#[derive(Default)]
pub(crate) struct MessagesAcked {
    pub messages: u64,
    changes: BTreeMap<String, u64>,
}

impl MessagesAcked {
    pub(crate) fn count_change(&mut self, table: &str) {
        match self.changes.get_mut(table) {
            Some(n) => *n += 1,
            None => {
                self.changes.insert(table.to_owned(), 1);
            }
        }
    }

    /// One change counted did not reach its topic (dead-lettered).
    pub(crate) fn uncount_change(&mut self, table: &str) {
        if let Some(n) = self.changes.get_mut(table) {
            *n = n.saturating_sub(1);
        }
    }

    pub(crate) fn emit(self) {
        if self.messages == 0 && self.changes.is_empty() {
            return;
        }
        tracing::debug!(messages = self.messages, "acknowledged");
        metrics::counter!(MESSAGES_ACKED).increment(self.messages);
        for (table, n) in self.changes {
            metrics::counter!(CHANGES_DELIVERED, "sink" => "kafka", "table" => table).increment(n);
        }
    }
}
