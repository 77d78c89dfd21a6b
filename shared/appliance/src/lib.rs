//! vmt's workbench: real appliances and the workloads run against them.
//!
//! # Layout
//! - [`content`]: deterministic incompressible bytes for demo files and test and bench images.
//! - [`ext4`]: real ext4 demo appliances (`mkfs.ext4 -d`) and loop mounts of them.
//! - [`replay`]: replaying a trace's reads against a file to time a runtime.
//! - [`throughput`]: read-throughput passes for the benchmarks.
#![deny(missing_docs)]

pub mod content;
pub mod ext4;
pub mod recorder;
pub mod replay;
pub mod throughput;
