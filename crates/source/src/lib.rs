//! Readers of DynamoDB Streams records.
//!
//! - [`record`]: one stream record (GetRecords or Lambda JSON) to a typed
//!   [`Change`](dynamo_cdc_core::Change), with errors that name the field.
//! - [`streams`]: the live source, reading DynamoDB Streams with the AWS SDK.
//! - [`replay`]: the replay source, reading captured records from files.

mod fast;
pub mod record;
pub mod replay;
pub mod streams;

pub use replay::{ReplayConfig, ReplayError, ReplaySource, ReplayStats};
pub use streams::{OnGap, StartAt, StreamsConfig, StreamsError, StreamsSource};
