//! Fixtures, generators and property-test strategies for dynamo-cdc.
//!
//! - [`generator`]: seeded, deterministic DynamoDB Streams traffic written as
//!   JSON Lines of GetRecords responses, the same shape the AWS API and CLI
//!   print. The quickstart preset ([`generator::quickstart`]) feeds the demo
//!   and the end-to-end tests; the bench preset
//!   ([`generator::write_bench_capture`]) streams fixtures of any size in
//!   constant memory.
//! - [`strategies`]: proptest strategies for numbers, attribute values and
//!   items across DynamoDB's whole value space, and a renderer for single
//!   stream records.
//! - [`free_port`] and [`refused_port`]: loopback ports to start a server
//!   on, and one that refuses connections, which no test running alongside
//!   can take meanwhile.
//! - [`registry`]: a Schema Registry double (Confluent's REST subset).
//! - [`metrics`]: a recorder keeping counters, for tests of what is counted.
//! - [`load`]: realistic writes to a live DynamoDB table at a steady rate
//!   (`dynamo-cdc-gen load`).
//! - [`streams_sim`]: a DynamoDB Streams simulator on a loopback port, with
//!   scripted shard rotation, splits, incomplete lineage, iterator expiry,
//!   trimming, throttling and server errors; also tables whose writes feed
//!   their streams, with Scan and exports in DynamoDB's S3 layout, and
//!   plain tables with linearizable conditional writes (a lease table).
//!
//! The `dynamo-cdc-gen` binary wraps both presets, the load generator and
//! the registry double for use from a shell.

pub mod generator;
pub mod load;
pub mod metrics;
mod ports;
mod record;
pub mod registry;
pub mod strategies;
pub mod streams_sim;

pub use ports::{RefusedPort, free_port, refused_port};
