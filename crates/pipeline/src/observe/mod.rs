//! Observability of a running pipeline: a `metrics` recorder that renders
//! the Prometheus text format ([`recorder`]) and the HTTP server that
//! exposes it with liveness and readiness ([`server`]).
//!
//! The run loop installs the recorder once ([`recorder::install`]), creates
//! a shared [`server::Health`], serves both with [`server::serve`] when
//! `[metrics] listen` (or `--metrics-listen`) is set, and calls
//! [`server::Health::beat`] on every turn.

pub(crate) mod recorder;
pub(crate) mod server;
pub(crate) mod watch;
