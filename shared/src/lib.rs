//! vmt: start virtual appliances on demand from a BitTorrent swarm.
//!
//! This crate holds everything the three binaries (`vmt-record`, `vmt-train`, `vmt-run`) share;
//! they only parse flags and call in here.
//!
//! # Layout
//! - [`image`]: the appliance image's identity (size + SHA-256) and block geometry.
//! - [`envelope`]: the header every vmt file shares (magic, version, image identity, checksum).
//! - [`trace`]: recorded block accesses, their file format and CSV / blkparse interchange.
//! - [`swarm`]: the BitTorrent engine: pieces fetched in the order the application asks
//!   (demand, plan, rarest first), verified, stored, and seeded to other peers.
#![deny(missing_docs)]

pub mod envelope;
pub mod image;
pub mod swarm;
pub mod trace;
