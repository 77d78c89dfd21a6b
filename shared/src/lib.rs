//! vmt: start virtual appliances on demand from a BitTorrent swarm.
//!
//! This crate holds everything the three binaries (`vmt-record`, `vmt-train`, `vmt-run`) share;
//! they only parse flags and call in here.
//!
//! # Layout
//! - [`image`]: the appliance image's identity (size + SHA-256) and block geometry.
//! - [`envelope`]: the header every vmt file shares (magic, version, image identity, checksum).
//! - [`trace`]: recorded block accesses, their file format and CSV / blkparse interchange.
//! - [`cluster`]: task runs grouped by the blocks they read (linfa; Jaccard; automatic count).
//! - [`profile`]: profiles trained from traces, and the bundle file (`.vmtp`) that carries them.
//! - [`markov`]: transitions between profiles and the online belief updated on every read.
//! - [`scheduler`]: the piece planner shared by the simulator and `vmt-run`.
//! - [`simulate`]: an event-driven replay of a trace over a link of given bandwidth.
//! - [`evaluate`]: strategies side by side on held-out traces; leave-one-run-out.
//! - [`synth`]: synthetic but realistic images, task runs and sessions for tests and benches.
#![deny(missing_docs)]

pub mod cluster;
pub mod envelope;
pub mod evaluate;
pub mod image;
pub mod markov;
pub mod profile;
pub mod scheduler;
pub mod simulate;
pub mod synth;
pub mod trace;
