//! vmt's filesystem: one appliance image served as one file, with a FUSE-free core and a thin
//! fuser adapter, so the whole read path is tested without root.
//!
//! # The way of one read
//!
//! ```text
//! FUSE read ─► fuse adapter ─► ImageFs::read: clip, observe, missing units (computed once)
//!                                │ none: pread + overlay patch + reply, on the FUSE thread
//!                                └ some: park (reply, range) on those units ─► source.demand
//! source (swarm): unit verified, marked present ─► UnitsReadySender::units_ready
//!   ─► ReplyPool thread ─► ImageFs::release: unpark reads with all units ─► pread + patch + reply
//! every 250 ms (runtime): ImageFs::expire_parked answers reads past the read timeout (EIO)
//!   and reads whose process was killed; ImageFs::oldest_parked / newly_overdue show long waits
//! shutdown: ImageFs::close answers every parked read with EIO, then Mounted::unmount: clean,
//!   else a lazy detach (something holds the image), and says which
//! ```
//!
//! A read never holds a FUSE worker while it waits, and a reply is never made on a network
//! task. [`ParkedReads`] is the only wait table: several reads of one unit share its fetch, and
//! a partial-block write that needs pristine bytes waits in the same table.
//!
//! # Example
//!
//! The core over a local image, answered through a [`ReadReply`] of our own (FUSE uses
//! [`FuseReply`]); a write lands in the overlay and the image file stays untouched:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::{Arc, Mutex};
//! use vmt_formats::image::ImageId;
//! use vmt_fs::{FileSource, FsError, ImageFs, ImageFsOptions, Overlay, ReadReply, PRISTINE_WAIT};
//!
//! /// Keeps what a read was answered with.
//! struct Keep(Arc<Mutex<Option<Result<Vec<u8>, i32>>>>);
//! impl ReadReply for Keep {
//!     fn data(self, bytes: &[u8]) {
//!         *self.0.lock().unwrap() = Some(Ok(bytes.to_vec()));
//!     }
//!     fn error(self, error: FsError) {
//!         *self.0.lock().unwrap() = Some(Err(error.errno()));
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("app.img");
//! std::fs::write(&path, b"pristine bytes")?;
//! let options = ImageFsOptions {
//!     file_name: "app.img".into(),
//!     size: 14,
//!     direct_io: false,
//!     pristine_wait: PRISTINE_WAIT,
//!     read_timeout: None,
//! };
//! let overlay = Arc::new(Overlay::temporary(ImageId::size_only(14))?);
//! let fs = ImageFs::new(FileSource::open(&path)?, overlay, (), options);
//!
//! let image = fs.lookup(1, "app.img".as_ref())?.node.ino();
//! fs.write(image, 0, b"PRISTINE")?;
//! let answer = Arc::new(Mutex::new(None));
//! fs.read(image, 0, 4096, Keep(answer.clone())); // every unit present: answered at once
//! assert_eq!(answer.lock().unwrap().take(), Some(Ok(b"PRISTINE bytes".to_vec())));
//! assert_eq!(std::fs::read(&path)?, b"pristine bytes");
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `source`: [`PristineSource`], where pristine bytes come from, by unit of presence
//!   (lock-free presence, non-blocking demand); [`FileSource`], the recorder's local image.
//! - `inode`: the fixed namespace ([`Node`], [`Attr`], [`CONTROL_FILE`]).
//! - `image_fs`: the core [`ImageFs`]: its state, attributes, lookup, open, readdir, fsync;
//!   [`AccessObserver`] sees every access.
//! - `read`: the read path of [`ImageFs`]: serve, park, release, close.
//! - `write`: overlay writes and control commands, and the wait for pristine bytes.
//! - `reply`: what answers a parked waiter: [`ReadReply`], or a blocked write's wake-up.
//! - `parked`: [`ParkedReads`], the race-free wait table keyed by unit; `requester`: whether
//!   the process behind a parked read was killed.
//! - `release`: the [`ReplyPool`] threads and the [`units_ready_channel`] that feeds them.
//! - `stats`, `histogram`: read counters and the stall-time [`LatencyHistogram`].
//! - `overlay`: the copy-on-write [`Overlay`] that takes the VM's writes.
//! - `error`: [`FsError`] and the one table from errors to errnos.
//! - `fuse`: the fuser adapter ([`FuseReply`], [`FuseImageFs`]); `mount`: [`mount`] with
//!   [`MountParams`] and [`Access`], [`Mounted`] and its [`Unmount`], [`check_mountpoint`],
//!   [`is_mounted`].
//! - `record`: recording a task or session through the filesystem into a trace
//!   ([`Recording`]).
//! - `capture`: one recording from start to end, as `vmt-record run` and `session` make it:
//!   identify, record, run the task or wait for `stop`, set a failed task's trace aside
//!   ([`CaptureParams`] → [`ValidCaptureParams::run`]).
//! - `import`: traces recorded elsewhere (CSV, blkparse), checked as the recorder's are
//!   ([`ImportParams`] → [`ValidImportParams::run`]).
#![deny(missing_docs)]

mod capture;
mod error;
mod fuse;
mod histogram;
mod image_fs;
mod import;
mod inode;
mod mount;
mod overlay;
mod parked;
mod read;
mod record;
mod release;
mod reply;
mod requester;
mod source;
mod stats;
#[cfg(test)]
mod testutil;
mod write;

pub use capture::{
    mark_task, stop_session, CaptureError, CaptureEvent, CaptureKind, CaptureParams, Captured,
    TaskEnd, ValidCaptureParams, DEFAULT_RECORD_THREADS, STOP_GRACE,
};
pub use error::FsError;
pub use fuse::{FuseImageFs, FuseReply};
pub use histogram::{LatencyHistogram, LatencySummary, COARSE_BOUNDS_US};
pub use image_fs::{AccessObserver, ControlHandler, ImageFs, ImageFsOptions, PRISTINE_WAIT};
pub use import::{
    ImportError, ImportFormat, ImportImage, ImportParams, Imported, ValidImportParams,
};
pub use inode::{Attr, Node, PageCache, CONTROL_FILE};
pub use mount::{
    check_mountpoint, is_mounted, mount, Access, MountError, MountParams, Mounted, Unmount,
    Unmounted, UNMOUNT_WAIT,
};
pub use overlay::{Overlay, OverlayError, OVERLAY_BLOCK, OVERLAY_MAP_FILE};
pub use parked::{Park, ParkedReads, Released, Waiting};
pub use record::{
    validate_task_name, RecordError, Recorder, Recording, RecordingParams, CHECKPOINT_INTERVAL,
};
pub use release::{
    units_ready_channel, ReplyPool, UnitsReady, UnitsReadyReceiver, UnitsReadySender,
};
pub use reply::ReadReply;
pub use source::{FileSource, PristineSource};
pub use stats::ReadStatsSnapshot;
