//! vmt's filesystem: one appliance image served as one file.
//!
//! # Layout
//! - [`fusefs`]: the filesystem over a pristine source and the copy-on-write overlay, and
//!   mounting it.
//! - [`overlay`]: the copy-on-write overlay that takes the VM's writes.
//! - [`parked`]: reads parked on missing data, released when it lands.
//! - [`record`]: recording a task or session through [`fusefs`] into a trace.
#![deny(missing_docs)]

pub mod fusefs;
pub mod overlay;
pub mod parked;
pub mod record;
