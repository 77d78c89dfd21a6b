//! vmt: start virtual appliances on demand from a BitTorrent swarm.
//!
//! This crate holds everything the three binaries (`vmt-record`, `vmt-train`, `vmt-run`) share;
//! they only parse flags and call in here.
//!
//! # Layout
//! - [`image`]: the appliance image's identity (size + SHA-256) and block geometry.
//! - [`envelope`]: the header every vmt file shares (magic, version, image identity, checksum).
//! - [`trace`]: recorded block accesses, their file format and CSV / blkparse interchange.
//! - [`overlay`]: the copy-on-write overlay that takes the VM's writes.
//! - [`fusefs`]: the FUSE filesystem serving the image file over a pristine source + overlay.
//! - [`parked`]: FUSE reads parked on missing pieces, released when the pieces land.
//! - [`record`]: recording a task or session through [`fusefs`] into a [`trace::Trace`].
//! - [`appliance`]: real ext4 demo appliances (`mkfs.ext4 -d`) and loop mounts of them.
//! - [`replay`]: replaying a trace's reads against a file to time a runtime.
//! - [`throughput`]: read-throughput passes for the benchmarks.
//! - [`cluster`]: task runs grouped by the blocks they read (linfa; Jaccard; automatic count).
//! - [`profile`]: profiles trained from traces, and the bundle file (`.vmtp`) that carries them.
//! - [`markov`]: transitions between profiles and the online belief updated on every read.
//! - [`scheduler`]: the piece planner shared by the simulator and `vmt-run`.
//! - [`simulate`]: an event-driven replay of a trace over a link of given bandwidth.
//! - [`evaluate`]: strategies side by side on held-out traces; leave-one-run-out.
//! - [`synth`]: synthetic but realistic images, task runs and sessions for tests and benches.
//! - [`runtime`]: vmt-run's mount: the image served by FUSE while it streams from the swarm.
//! - [`demo`]: the embedded demo that `vmt-run demo` runs, end to end in one process.
//! - [`swarm`]: the BitTorrent engine: pieces fetched in the order the application asks
//!   (demand, plan, rarest first), verified, stored, and seeded to other peers.
//!
//! # Example
//!
//! A trace as `vmt-record` writes it, saved, loaded back and summarised per 4 KiB block:
//!
//! ```
//! use vmt::image::{BlockGeometry, ImageId};
//! use vmt::trace::{Op, Record, Trace, TraceKind};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let image = ImageId::size_only(1 << 20);
//! let trace = Trace {
//!     image,
//!     kind: TraceKind::Task,
//!     label: "boot".into(),
//!     run: 1,
//!     start_unix_us: 0,
//!     recorder: "example".into(),
//!     tasks: vec!["boot".into()],
//!     records: vec![
//!         Record { t_us: 0, op: Op::Read, offset: 0, len: 8192, task: 0 },
//!         Record { t_us: 900, op: Op::Read, offset: 4096, len: 4096, task: 0 },
//!     ],
//! };
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("boot-1.vmtrace");
//! trace.save(&path)?;
//! let loaded = Trace::load_for(&path, &image)?;
//! let summary = loaded.summary(&BlockGeometry::new(image.size, 4096)?);
//! assert_eq!((summary.reads, summary.distinct_blocks), (2, 2));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod appliance;
pub mod cluster;
pub mod demo;
pub mod envelope;
pub mod evaluate;
pub mod fusefs;
pub mod image;
pub mod markov;
pub mod overlay;
pub mod parked;
pub mod profile;
pub mod record;
pub mod replay;
pub mod runtime;
pub mod scheduler;
pub mod simulate;
pub mod swarm;
pub mod synth;
pub mod throughput;
pub mod trace;
