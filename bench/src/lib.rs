//! `vmt-bench`: the numbers side of `datasets/bench.sh`.
//!
//! The script runs peers in network namespaces and replays traces with `vmt-record replay`;
//! this crate turns each replay report, with the mount's report beside it, into one CSV row
//! ([`Row`], [`Row::from_replay`], [`MountReport`]), and the finished CSV into a summary of
//! means and ratios ([`summary`]) and SVG plots ([`plot`]).
//!
//! Layout: `row` one replay as a CSV line; `mount_report` what a `vmt-run mount --report`
//! says; `link` the link's rate and round trip; `ratio` a figure with its goal; `summary` the
//! tables, with `bytes` (fetched against read), `cold` (one cold client against sshfs and the
//! link), `latency` (miss latency) beside it; `plot` the figures; `scale` issue 15's simulated
//! prediction table, read back for its plot.

#![deny(missing_docs)]

mod bytes;
mod cold;
mod latency;
mod link;
mod mount_report;
pub mod plot;
mod ratio;
mod row;
pub mod scale;
pub mod summary;

pub use link::{parse_tc_rate, Link, BLOCK_BYTES, DEFAULT_RTT_S};
pub use mount_report::MountReport;
pub use ratio::{Goal, Ratio};
pub use row::{parse_csv, Row, RunKey, HEADER, HEADER_V1};
pub use vmt_appliance::replay::ReplayReport;
