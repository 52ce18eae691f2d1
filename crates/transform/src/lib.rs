//! Changes to typed rows: Arrow record batches and Avro datums.
//!
//! Pure and synchronous: no I/O and no async runtime, so the sinks can call it
//! from wherever suits them.
//!
//! - [`TableSchema`]: a table's flat-row schema, declared (`.avsc`, see
//!   [`DeclaredSchema`]) or inferred and widened without loss as data arrives.
//! - [`flat_batch`]: changes to an Arrow [`RecordBatch`](arrow_array::RecordBatch)
//!   of flat rows; [`decode_items`] reads such rows back.
//! - [`avro`]: Avro schemas and datums, flat or in the Debezium envelope.
//! - [`is_long_text`]: whether a text column's values in a batch are long
//!   (the Parquet writers keep no statistics for such columns).
//!
//! The type mapping, and the `dynamodb.type` field metadata that makes every
//! column decodable, are described in [`column`].

pub mod avro;
mod avro_datum;
mod build;
pub mod column;
mod config;
mod declared;
mod decode;
mod infer;
mod long_text;
mod schema;

pub use build::{flat_batch, snapshot_batch};
pub use column::{ColumnType, NumbersMode};
pub use config::TransformConfig;
pub use declared::DeclaredSchema;
pub use decode::decode_items;
pub use long_text::{LONG_TEXT_BYTES, is_long_text};
pub use schema::{Column, META_COLUMNS, SNAPSHOT_COLUMNS, TableSchema};
