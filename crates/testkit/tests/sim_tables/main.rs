//! The simulator's tables over HTTP: writes and their stream records,
//! DescribeTable, Scan paging and segments, point-in-time recovery and
//! exports; and plain tables driven by the AWS SDK.

mod export;
mod http;
mod plain_sdk;
mod scan;
mod writes;
