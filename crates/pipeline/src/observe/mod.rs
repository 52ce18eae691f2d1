//! Observability of a running pipeline: a `metrics` recorder that renders
//! the Prometheus text format ([`recorder`]).
//!
//! The run loop installs the recorder once ([`recorder::install`]).

pub(crate) mod recorder;
