//! Readers of DynamoDB Streams records.
//!
//! - [`record`]: one stream record (GetRecords or Lambda JSON) to a typed
//!   [`Change`](dynamo_cdc_core::Change), with errors that name the field.
//! - [`replay`]: the replay source, reading captured records from files.

mod fast;
pub mod record;
pub mod replay;

pub use replay::{ReplayConfig, ReplayError, ReplaySource, ReplayStats};
