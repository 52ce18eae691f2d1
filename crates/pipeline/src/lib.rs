//! dynamo-cdc, the binary's library half: configuration, wiring, checkpoints
//! and the run summary. Formats and protocols live in the other crates; this
//! one only orchestrates them.

pub mod checkpoint;
mod checkpoint_lock;
pub mod config;
mod coordinated;
mod ended;
mod events;
mod feed;
mod interpolate;
mod latest;
pub mod logging;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "not yet called by the run loop")
)]
mod observe;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "not yet called by the run loop")
)]
mod progress;
mod run;
mod shared_journal;
mod sinks;
pub mod summary;
#[cfg(test)]
mod test_support;

pub use config::{Config, ConfigError};
pub use coordinated::leases_report;
pub use run::{RunOptions, check_schemas, run};
pub use summary::RunSummary;
