//! vmt's file formats: what every other vmt crate reads and writes.
//!
//! # Layout
//! - [`image`]: an appliance image's identity (size + SHA-256 of its content) and its block
//!   geometry; the identity is cached per inode so a multi-GB image is hashed once.
//! - [`identify`]: the identity of an image named on the command line (given, cached or
//!   hashed), with the checks every tool makes first.
//! - [`envelope`]: the header every vmt file shares (magic, version, image identity,
//!   checksum), and atomic writes. Loading a file of another image, a newer version, or a
//!   truncated or corrupt file is an error that names the file.
//! - [`trace`]: recorded block accesses (`.vmtrace`), and their CSV / blkparse interchange.
//! - [`piece_size`]: the piece sizes vmt makes torrents with, one rule for the seeder and for
//!   the evaluation that predicts its mounts.
//! - [`summary`]: traces summarised for people: a line, a table, tasks compared.
//! - [`stdout`]: what the tools print, where a closed pipe (`| head`) is no error.
//! - [`text`]: text inputs (CSV, blkparse) read with a bound, refused at the first binary byte.
//! - `fuzz` (feature `fuzz`): seeded mutation of valid files and a counting allocator, with
//!   which every reader's tests check it never panics and takes bounded memory.
//! - [`units`]: sizes (`KiB` = 1024, `KB` = 1000), rates (bits or bytes per second) and
//!   durations as every vmt tool's flags take them.
//!
//! # Example
//!
//! A trace as `vmt-record` writes it, saved, loaded back and summarised per 4 KiB block:
//!
//! ```
//! use vmt_formats::image::{BlockGeometry, ImageId};
//! use vmt_formats::trace::{Op, Record, Trace, TraceKind};
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

/// Counts allocations so the fuzz tests can bound what each reader takes.
#[cfg(test)]
#[global_allocator]
static ALLOC: fuzz::PeakAlloc = fuzz::PeakAlloc;

pub mod envelope;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
#[cfg(test)]
mod fuzz_readers;
pub mod identify;
pub mod image;
pub mod piece_size;
pub mod stdout;
pub mod summary;
pub mod text;
pub mod trace;
pub mod units;
