//! The simulator's tables over HTTP: writes and their stream records,
//! DescribeTable, Scan paging and segments, point-in-time recovery and
//! exports.

mod export;
mod http;
mod scan;
mod writes;
