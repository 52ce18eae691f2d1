//! The configured sinks, driven together: one position per sink, the source
//! resuming at the lowest, each sink dropping what it already holds.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::Context as _;
use dynamo_cdc_core::{Change, Gap, Positions, Rejected, Sink};
use dynamo_cdc_sink_kafka::{Envelope, Format, KafkaConfig, KafkaSink, RegistryConfig};
use dynamo_cdc_sink_parquet::{DEAD_LETTER_DIR, ParquetConfig, ParquetSink};
use dynamo_cdc_transform::DeclaredSchema;

use crate::checkpoint::{CheckpointStore, KafkaOffsets, Recorded};
use crate::config::{Config, KafkaEnvelope, KafkaFormat};
use crate::summary::RunSummary;

pub(crate) struct Sinks {
    parquet: Option<ParquetSink>,
    kafka: Option<KafkaSink>,
}

impl Sinks {
    /// Opens every configured sink.
    pub(crate) fn open(
        config: &Config,
        declared: &HashMap<String, DeclaredSchema>,
    ) -> anyhow::Result<Sinks> {
        let mode = config.transform.numbers.into();
        let parquet = match &config.sinks.parquet {
            Some(pq) => Some(
                ParquetSink::open(
                    ParquetConfig {
                        root: pq.path.clone(),
                        max_rows_per_file: pq.max_rows_per_file,
                        max_file_bytes: pq.max_file_bytes,
                        max_file_age_ms: pq.max_file_age_ms,
                        row_group_rows: pq.row_group_rows,
                        zstd_level: pq.zstd_level,
                    },
                    mode,
                    declared.clone(),
                )
                .with_context(|| {
                    format!("cannot open the Parquet sink at {}", pq.path.display())
                })?,
            ),
            None => None,
        };
        let kafka = match &config.sinks.kafka {
            Some(k) => Some(
                KafkaSink::open(
                    KafkaConfig {
                        brokers: k.brokers.clone(),
                        topic: k.topic.clone(),
                        format: match k.format {
                            KafkaFormat::Avro => Format::Avro,
                            KafkaFormat::Json => Format::Json,
                        },
                        envelope: match k.envelope {
                            KafkaEnvelope::Debezium => Envelope::Debezium,
                            KafkaEnvelope::Flat => Envelope::Flat,
                        },
                        tombstones: k.tombstones,
                        registry: k.schema_registry_url.as_ref().map(|url| RegistryConfig {
                            url: url.clone(),
                            username: k.schema_registry_username.clone(),
                            password: k.schema_registry_password.clone(),
                        }),
                        dead_letter_topic: k.dead_letter_topic.clone(),
                        properties: k.property_pairs(),
                        send_batch_messages: dynamo_cdc_sink_kafka::SEND_BATCH_MESSAGES,
                    },
                    mode,
                    declared.clone(),
                )
                .context("cannot start the Kafka sink")?,
            ),
            None => None,
        };
        Ok(Sinks { parquet, kafka })
    }

    /// Where dead letters go: beside the Parquet data, else beside the
    /// checkpoint file.
    pub(crate) fn dead_letter_root(config: &Config) -> PathBuf {
        match &config.sinks.parquet {
            Some(pq) => pq.path.clone(),
            None => config
                .checkpoint
                .path
                .parent()
                .map_or_else(|| PathBuf::from("."), PathBuf::from),
        }
    }

    /// Takes what the checkpoint recorded.
    pub(crate) fn adopt(&mut self, recorded: Recorded) {
        if let (Some(p), Some(pos)) = (&mut self.parquet, recorded.positions.get("parquet")) {
            p.adopt_positions(pos);
        }
        if let Some(k) = &mut self.kafka {
            let pos = recorded.positions.get("kafka").cloned().unwrap_or_default();
            k.adopt_checkpoint(&pos, recorded.kafka_offsets);
        }
    }

    fn positions(&self) -> Vec<(&str, &Positions)> {
        let mut out = Vec::new();
        if let Some(p) = &self.parquet {
            out.push((p.name(), p.durable_positions()));
        }
        if let Some(k) = &self.kafka {
            out.push((k.name(), k.durable_positions()));
        }
        out
    }

    /// Where the source resumes: per shard, the lowest position over the
    /// sinks.
    pub(crate) fn resume_point(&self) -> Positions {
        let all: Vec<&Positions> = self.positions().into_iter().map(|(_, p)| p).collect();
        Positions::resume_point(&all)
    }

    /// Records a gap in every sink.
    pub(crate) fn record_gap(&mut self, gap: &Gap) -> anyhow::Result<()> {
        if let Some(p) = &mut self.parquet {
            p.record_gap(gap)?;
        }
        if let Some(k) = &mut self.kafka {
            k.record_gap(gap)?;
        }
        Ok(())
    }

    /// Writes to every sink; a change any sink rejects is returned once,
    /// with each sink's reason.
    pub(crate) fn write(&mut self, changes: &[Change]) -> anyhow::Result<Vec<Rejected>> {
        let mut by_index: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let both = self.parquet.is_some() && self.kafka.is_some();
        if let Some(p) = &mut self.parquet {
            for r in p.write(changes)? {
                let reason = if both {
                    format!("parquet: {}", r.error)
                } else {
                    r.error
                };
                by_index.entry(r.index).or_default().push(reason);
            }
        }
        if let Some(k) = &mut self.kafka {
            for r in k.write(changes)? {
                let reason = if both {
                    format!("kafka: {}", r.error)
                } else {
                    r.error
                };
                by_index.entry(r.index).or_default().push(reason);
            }
        }
        Ok(by_index
            .into_iter()
            .map(|(index, errors)| Rejected {
                index,
                error: errors.join("; "),
            })
            .collect())
    }

    /// Commits (Parquet) and sends (Kafka) what is due.
    pub(crate) fn poll(&mut self) -> anyhow::Result<()> {
        if let Some(p) = &mut self.parquet {
            p.poll()?;
        }
        if let Some(k) = &mut self.kafka {
            k.poll()?;
        }
        Ok(())
    }

    /// Commits and sends everything.
    pub(crate) fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(p) = &mut self.parquet {
            p.flush()?;
        }
        if let Some(k) = &mut self.kafka {
            k.flush()?;
        }
        Ok(())
    }

    /// Records every sink's positions (and the Kafka offsets with them).
    pub(crate) fn store(&self, checkpoint: &mut CheckpointStore) -> anyhow::Result<()> {
        let offsets: KafkaOffsets = self
            .kafka
            .as_ref()
            .map(KafkaSink::offsets)
            .unwrap_or_default();
        checkpoint.store(&self.positions(), &offsets)
    }

    /// Leftover temp files swept at start.
    pub(crate) fn swept(&self) -> u64 {
        self.parquet.as_ref().map_or(0, |p| p.stats().swept)
    }

    /// Copies the sinks' counts into the summary.
    pub(crate) fn summarize(&self, summary: &mut RunSummary) -> u64 {
        let mut already_held = 0;
        if let Some(p) = &self.parquet {
            let s = p.stats();
            summary.rows_written += s.rows;
            summary.files_written += s.files;
            summary.bytes_written += s.bytes;
            already_held = s.already_held;
        }
        if let Some(k) = &self.kafka {
            let s = k.stats();
            let k = summary.kafka.get_or_insert_default();
            k.messages += s.messages;
            k.tombstones += s.tombstones;
            k.dead_lettered += s.dead_lettered;
            k.already_held += s.already_held;
            already_held = already_held.max(s.already_held);
        }
        already_held
    }

    /// The dead-letter directory name, for messages.
    pub(crate) fn dead_letter_dir(config: &Config) -> PathBuf {
        Self::dead_letter_root(config).join(DEAD_LETTER_DIR)
    }
}
