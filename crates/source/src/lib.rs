//! Readers of DynamoDB Streams records.
//!
//! - [`record`]: one stream record (GetRecords or Lambda JSON) to a typed
//!   [`Change`](dynamo_cdc_core::Change), with errors that name the field.
//! - `page`: a page of records to changes and dead letters, for both sources.
//! - [`streams`]: the live source, reading DynamoDB Streams with the AWS SDK.
//! - [`replay`]: the replay source, reading captured records from files.
//! - [`snapshot`]: the initial snapshot of a table, stitched to its stream.
//! - [`events`]: the source's log lines and metrics.
//! - [`config`]: the `[source]` configuration, its checks and defaults.

mod canonical;
pub mod config;
pub mod events;
mod fast;
mod lines;
mod page;
pub mod record;
pub mod replay;
pub mod snapshot;
pub mod streams;

pub use config::{SourceConfig, SourceKind};
pub use record::{ImageReading, ModifyOldImages, NestedValues};
pub use replay::{ReplayConfig, ReplayError, ReplayProgress, ReplaySource, ReplayStats};
pub use streams::{
    OnGap, ShardBoard, StartAt, StreamsConfig, StreamsError, StreamsSource, TableHealth,
};

/// Whether this process may run on one CPU only (its affinity or its
/// cgroup's quota), as `taskset -c 0` or a container of one CPU allows.
/// Threads that would hand work to each other then only take turns, so
/// readers do their work where they are instead.
pub fn one_cpu() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() == 1)
}
