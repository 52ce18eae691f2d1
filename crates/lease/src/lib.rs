//! Scale-out: N bridge processes share the source tables through leases in
//! a DynamoDB table, the mechanism the Kinesis Client Library uses.
//!
//! - [`item`]: what the lease table holds (leases, positions, resume
//!   states) and the conditions writes carry;
//! - [`store`]: the [`LeaseStore`] seam and its linearizable in-memory
//!   implementation with injected faults; [`dynamo`]: the real table;
//! - [`clock`]: lease time, which counts while the host is suspended;
//! - [`coordinator`]: the rules (expiry on the observer's own clock,
//!   renewal, self-fence, taking, balancing, claims), pure but for the
//!   store calls, run one tick at a time;
//! - [`worker`]: the coordinator on its own thread, and the [`Fence`] a
//!   pass checks before every write;
//! - [`checkpoints`]: positions and resume states in the lease table, as a
//!   `CheckpointStore`;
//! - [`config`]: the `[coordination]` section.
//!
//! The lease unit is a source table (its stream): parents before children
//! and a snapshot's window stay within one process.

pub mod checkpoints;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod dynamo;
pub mod item;
pub mod store;
pub mod worker;

pub use checkpoints::LeaseCheckpoints;
pub use clock::{Clock, Moment, SystemClock};
pub use config::CoordinationConfig;
pub use coordinator::{Coordinator, Grant, Happened};
pub use dynamo::DynamoLeaseStore;
pub use item::{Condition, EndedItem, Item, Lease, PositionItem, StartItem, StateItem};
pub use store::{Fault, LeaseStore, MemoryLeaseStore, StoreFailure};
pub use worker::{Assignment, Fence, LEASE_EVENTS, LEASES_HELD, Worker, describe};
