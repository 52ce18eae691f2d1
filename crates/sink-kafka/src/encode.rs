//! A change as Kafka messages: topic, key, value, headers, and the tombstone
//! after a delete.

use std::collections::HashMap;
use std::sync::Arc;

use dynamo_cdc_core::{AttributeValue, Change, Item, Op};
use dynamo_cdc_transform::avro::{self, Shape};
use dynamo_cdc_transform::{DeclaredSchema, NumbersMode, TableSchema};

use crate::producer::{HeaderValue, Outgoing};
use crate::registry::{Registry, RegistryConfig, header, write_header};
use crate::{Envelope, Format, KafkaSinkError};

/// Header naming the change's table.
pub const HEADER_TABLE: &str = "dynamodb.table";
/// Header naming the change's shard.
pub const HEADER_SHARD: &str = "dynamodb.shard_id";
/// Header with the change's sequence number: with the shard, the change's
/// identity (the sink reads it back to skip what a topic already holds).
pub const HEADER_SEQUENCE: &str = "dynamodb.sequence_number";
/// Header with the stream record's event id.
pub const HEADER_EVENT: &str = "dynamodb.event_id";
/// Header with the snapshot's id, on snapshot rows.
pub const HEADER_SNAPSHOT_ID: &str = "dynamodb.snapshot_id";
/// Header with a snapshot row's place (`first`, `true`, `last`).
pub const HEADER_SNAPSHOT: &str = "dynamodb.snapshot";
/// Header with the lease epoch (the fencing token) of the table's owner,
/// when the tables are shared between processes.
pub const HEADER_LEASE_EPOCH: &str = "dynamo-cdc.lease_epoch";
/// Header on dead-letter messages: why the message was not delivered.
pub const HEADER_ERROR: &str = "dynamo-cdc.error";

/// A message's key and value bytes.
type KeyValue = (Vec<u8>, Vec<u8>);

/// Why one change could not be encoded: it is dead-lettered, the rest goes on.
pub(crate) struct Unencodable {
    /// What does not fit, naming the attribute.
    pub reason: String,
    /// A delete's tombstone, sent all the same: the key does not depend on
    /// the value's schema, and without it a compacted topic would keep the
    /// deleted item for good.
    pub tombstone: Option<Outgoing>,
}

impl Unencodable {
    fn new(reason: String) -> Self {
        Unencodable {
            reason,
            tombstone: None,
        }
    }
}

pub(crate) struct Encoder {
    topic_template: String,
    format: Format,
    shape: Shape,
    tombstones: bool,
    registry: Option<Registry>,
    mode: NumbersMode,
    declared: HashMap<String, DeclaredSchema>,
    tables: HashMap<Arc<str>, TableState>,
    /// Table -> its topic, made once (not per message).
    topics: HashMap<Arc<str>, Arc<str>>,
    /// Table -> lease epoch, when the tables are shared.
    pub(crate) lease_epochs: std::collections::BTreeMap<String, u64>,
    scratch: ValueScratch,
}

/// Where a value is written before it is copied out at its exact size.
///
/// A message's bytes stay in memory until its group lands, so they should
/// take no more room than the message. Written straight into its own
/// buffer, a value would start small and double as it grew: one near 400 KB
/// was moved about ten times, to fresh pages each time (a fifth of the page
/// faults of items near 400 KB into Kafka), and one of 1.3 KB twice. Here it
/// is written into a buffer that has long since grown, then copied once.
#[derive(Default)]
struct ValueScratch {
    json: String,
    avro: Vec<u8>,
}

struct TableState {
    schema: TableSchema,
    /// The version of `schema` whose value schema is registered, and its id.
    value: Option<(u64, u32)>,
    /// Key layouts met so far and their registry ids. A table's keys have
    /// one layout, so this is one entry; looking it up must not build or
    /// print a schema per message (that was most of the Avro path's time).
    keys: Vec<(KeyLayout, u32)>,
}

/// The names of a change's key attributes and whether each is `N`, `B` or
/// anything else: all that its key schema depends on.
type KeyLayout = Vec<(String, u8)>;

fn key_class(v: &AttributeValue) -> u8 {
    match v {
        AttributeValue::N(_) => b'N',
        AttributeValue::B(_) => b'B',
        _ => b'S',
    }
}

fn same_layout(layout: &KeyLayout, keys: &Item) -> bool {
    layout.len() == keys.len()
        && layout
            .iter()
            .zip(keys.iter())
            .all(|((name, class), (k, v))| name == k.as_str() && *class == key_class(v))
}

impl Encoder {
    pub(crate) fn new(
        topic_template: &str,
        format: Format,
        envelope: Envelope,
        tombstones: bool,
        registry: Option<&RegistryConfig>,
        mode: NumbersMode,
        declared: HashMap<String, DeclaredSchema>,
    ) -> Self {
        Encoder {
            topic_template: topic_template.to_owned(),
            format,
            shape: match envelope {
                Envelope::Debezium => Shape::Envelope,
                Envelope::Flat => Shape::Flat,
            },
            tombstones,
            registry: registry.map(Registry::new),
            mode,
            declared,
            tables: HashMap::new(),
            topics: HashMap::new(),
            lease_epochs: std::collections::BTreeMap::new(),
            scratch: ValueScratch::default(),
        }
    }

    /// Whether encoding looks inside maps and lists: a JSON message shows
    /// them as plain JSON, and a declared record or array encodes their
    /// parts; an inferred Avro field holds their DynamoDB JSON.
    pub(crate) fn reads_nested_trees(&self) -> bool {
        self.format == Format::Json
            || self
                .declared
                .values()
                .any(DeclaredSchema::reads_nested_trees)
    }

    /// The topic of a table.
    pub(crate) fn topic(&self, table: &str) -> String {
        self.topic_template.replace("{table}", table)
    }

    /// The topic of a table, shared by its messages.
    fn message_topic(&mut self, table: &str) -> Arc<str> {
        if let Some(topic) = self.topics.get(table) {
            return topic.clone();
        }
        let topic: Arc<str> = self.topic(table).into();
        self.topics.insert(table.into(), topic.clone());
        topic
    }

    /// The messages of one change (the change, then its tombstone).
    ///
    /// # Errors
    /// `Ok(Err(..))` when this change cannot be encoded (dead-letter it);
    /// `Err` when the registry refuses a schema (stop).
    pub(crate) fn encode(
        &mut self,
        change: &Change,
    ) -> Result<Result<Vec<Outgoing>, Unencodable>, KafkaSinkError> {
        let topic = self.message_topic(&change.source.table);
        let (key, value) = match self.format {
            Format::Json => {
                let text = &mut self.scratch.json;
                text.clear();
                match self.shape {
                    Shape::Flat => crate::json::flat(text, change),
                    Shape::Envelope => crate::json::envelope(text, change),
                }
                (crate::json::key(change), text.as_bytes().to_vec())
            }
            Format::Avro => match self.avro(&topic, change)? {
                Ok(kv) => kv,
                Err(mut e) => {
                    if self.tombstones && change.op == Op::Remove {
                        e.tombstone = match self.avro_key(&topic, change)? {
                            Ok(key) => Some(Outgoing {
                                topic,
                                key,
                                value: None,
                                headers: self.headers(change),
                            }),
                            Err(_) => None,
                        };
                    }
                    return Ok(Err(e));
                }
            },
        };
        let headers = self.headers(change);
        let tombstone = (self.tombstones && change.op == Op::Remove).then(|| Outgoing {
            topic: topic.clone(),
            key: key.clone(),
            value: None,
            headers: headers.clone(),
        });
        let mut out = vec![Outgoing {
            topic,
            key,
            value: Some(value),
            headers,
        }];
        out.extend(tombstone);
        Ok(Ok(out))
    }

    /// The headers of a change's messages: where it comes from.
    fn headers(&self, change: &Change) -> Vec<(&'static str, HeaderValue)> {
        let s = &change.source;
        let mut headers = vec![
            (HEADER_TABLE, HeaderValue::Shared(s.table.clone())),
            (HEADER_SHARD, HeaderValue::Shared(s.shard_id.clone())),
            (
                HEADER_SEQUENCE,
                HeaderValue::Sequence(s.sequence_number.clone()),
            ),
            (HEADER_EVENT, s.event_id.as_bytes().to_vec().into()),
        ];
        if let Some(epoch) = self.lease_epochs.get(&*s.table) {
            headers.push((HEADER_LEASE_EPOCH, epoch.to_string().into_bytes().into()));
        }
        if let Some(snapshot) = &s.snapshot {
            headers.push((HEADER_SNAPSHOT_ID, HeaderValue::Shared(snapshot.id.clone())));
            headers.push((
                HEADER_SNAPSHOT,
                snapshot.marker.code().as_bytes().to_vec().into(),
            ));
        }
        headers
    }

    fn avro(
        &mut self,
        topic: &str,
        change: &Change,
    ) -> Result<Result<KeyValue, Unencodable>, KafkaSinkError> {
        let table = change.source.table.clone();
        if !self.tables.contains_key(&table) {
            let schema = self.starting_schema(&table, topic)?;
            let state = TableState {
                schema,
                value: None,
                keys: Vec::new(),
            };
            self.tables.insert(table.clone(), state);
        }
        let Some(state) = self.tables.get_mut(&table) else {
            unreachable!("inserted above")
        };
        // What the value carries must fit its record: both images in the
        // envelope; in the flat shape the row's image only, as in Parquet
        // (a modify's old image, never written there, must neither widen
        // the schema nor have the change dead-lettered).
        // Admitted together: one that does not fit leaves the schema as it
        // was, not widened by the images checked before it.
        let keys = &change.keys;
        let images: &[&Item] = match (self.shape, &change.old_image, &change.new_image) {
            (Shape::Flat, _, _) => &[change.row_image(), keys],
            (Shape::Envelope, Some(old), Some(new)) => &[old, new, keys],
            (Shape::Envelope, Some(image), None) | (Shape::Envelope, None, Some(image)) => {
                &[image, keys]
            }
            (Shape::Envelope, None, None) => &[keys],
        };
        if let Err(e) = state.schema.admit_all(images) {
            return Ok(Err(Unencodable::new(e)));
        }
        let registry = self.registry.as_mut().ok_or_else(|| {
            KafkaSinkError::Avro("format = \"avro\" needs schema_registry_url".into())
        })?;
        let version = state.schema.version();
        let value_id = match state.value {
            Some((v, id)) if v == version => id,
            _ => {
                let schema = avro::value_schema(&state.schema, self.shape)
                    .map_err(|e| KafkaSinkError::Avro(e.to_string()))?;
                let id = registry.id(&format!("{topic}-value"), &schema.json.to_string())?;
                state.value = Some((version, id));
                id
            }
        };
        let key = match self.avro_key(topic, change)? {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        let Some(state) = self.tables.get_mut(&table) else {
            unreachable!("inserted above")
        };
        // Each datum is written after its header, in one buffer.
        let mut written = std::mem::take(&mut self.scratch.avro);
        written.clear();
        write_header(&mut written, value_id);
        let value = match avro::encode_value_after(written, &state.schema, self.shape, change) {
            Ok(written) => {
                let value = written.as_slice().to_vec();
                self.scratch.avro = written;
                value
            }
            Err(e) => return Ok(Err(Unencodable::new(error_chain(&e)))),
        };
        Ok(Ok((key, value)))
    }

    /// A change's Avro key, after its header (the key schema registered
    /// once per key layout). The table's state exists (see `avro`).
    fn avro_key(
        &mut self,
        topic: &str,
        change: &Change,
    ) -> Result<Result<Vec<u8>, Unencodable>, KafkaSinkError> {
        let table = &change.source.table;
        let registry = self.registry.as_mut().ok_or_else(|| {
            KafkaSinkError::Avro("format = \"avro\" needs schema_registry_url".into())
        })?;
        let Some(state) = self.tables.get_mut(table) else {
            unreachable!("made by `avro` first")
        };
        let key_id = match state
            .keys
            .iter()
            .find(|(l, _)| same_layout(l, &change.keys))
        {
            Some((_, id)) => *id,
            None => {
                let key_schema = avro::key_schema(table, &change.keys)
                    .map_err(|e| KafkaSinkError::Avro(e.to_string()))?;
                let id = registry.id(&format!("{topic}-key"), &key_schema.json.to_string())?;
                let layout = change
                    .keys
                    .iter()
                    .map(|(k, v)| (k.to_string(), key_class(v)))
                    .collect();
                state.keys.push((layout, id));
                id
            }
        };
        Ok(avro::encode_key_after(header(key_id, 64), change)
            .map_err(|e| Unencodable::new(error_chain(&e))))
    }

    /// A table's schema at its first change in this run: continued from the
    /// value schema registered last for its topic when that is one made
    /// here in this shape, else new. A new one would be narrower than what
    /// the last run widened it to (an attribute seen as `NULL` first), and a
    /// registry checking compatibility refuses that: the run would stop.
    fn starting_schema(&self, table: &str, topic: &str) -> Result<TableSchema, KafkaSinkError> {
        let declared = self.declared.get(table);
        let subject = format!("{topic}-value");
        let registered = match self.registry.as_ref().map(|r| r.latest(&subject)) {
            None => None,
            Some(Ok(registered)) => registered,
            // Refused, not unreachable: a principal may register schemas
            // without reading them back. Start anew, as before registries
            // were read.
            Some(Err(KafkaSinkError::Registry {
                transient: false,
                message,
                ..
            })) => {
                tracing::warn!(
                    subject,
                    error = %message,
                    "cannot read the value schema registered last; the table's schema starts anew"
                );
                None
            }
            Some(Err(e)) => return Err(e),
        };
        let columns = registered
            .as_deref()
            .and_then(|text| avro::registered_columns(text, table, self.shape));
        Ok(match columns {
            Some(columns) => {
                tracing::info!(
                    subject,
                    columns = columns.len(),
                    "continuing the value schema registered last"
                );
                TableSchema::resume_columns(table, declared, self.mode, &columns)
            }
            None => TableSchema::new(table, declared, self.mode),
        }
        .for_avro_unions())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
