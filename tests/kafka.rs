//! Reading a topic back in tests: every message of every partition, from
//! the beginning to the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};

/// One message as read back.
pub struct TopicMessage {
    /// Its partition.
    pub partition: i32,
    /// Its key (empty when none).
    pub key: Vec<u8>,
    /// Its value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Its headers, as text.
    pub headers: BTreeMap<String, String>,
}

impl TopicMessage {
    /// The `dynamodb.sequence_number` header.
    ///
    /// # Panics
    /// When the message has none.
    pub fn seq(&self) -> u128 {
        self.headers["dynamodb.sequence_number"]
            .parse()
            .expect("a sequence number header")
    }
}

/// Every message of `topic`, per partition in offset order.
///
/// # Panics
/// When the topic cannot be read to its end within a minute.
pub fn read_topic(brokers: &str, topic: &str, partitions: i32) -> Vec<TopicMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("a consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("a partition");
    }
    consumer.assign(&list).expect("assign");
    let (mut open, mut out) = (partitions, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while open > 0 {
        assert!(Instant::now() < deadline, "topic {topic} never ended");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(TopicMessage {
                partition: m.partition(),
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let value = h.value.unwrap_or_default();
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(value).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            _ => {}
        }
    }
    out
}
