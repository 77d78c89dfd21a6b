//! Where pristine image bytes come from: the trait the filesystem core reads through.
//!
//! A source splits the image into *units* of presence, [`PristineSource::unit_size`] bytes
//! each (the swarm's 16 KiB blocks; the whole image for a local file). A read whose units are
//! all present is served at once; otherwise the core parks it on the missing units and asks
//! the source for them with [`PristineSource::demand`]. The source later reports units that
//! became present through the reply pool's channel ([`UnitsReadySender`]), which answers the
//! parked reads.
//!
//! The contract that makes this race-free (see [`ParkedReads`]): a unit is marked present
//! (so [`PristineSource::is_present`] says yes) *before* it is reported ready, and presence
//! never goes away.
//!
//! [`UnitsReadySender`]: crate::UnitsReadySender
//! [`ParkedReads`]: crate::ParkedReads

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Pristine image bytes, by unit of presence. See the module doc.
pub trait PristineSource: Send + Sync + 'static {
    /// Bytes per unit of presence: a missed read waits for whole units (16 KiB for the swarm).
    /// Read once, when the filesystem is built; never 0.
    fn unit_size(&self) -> u32;

    /// Whether unit `unit` is present and readable; lock-free, called on every read.
    fn is_present(&self, unit: u32) -> bool;

    /// Fills `buf` with the bytes at `offset`. Callers only read ranges whose units are
    /// present, or that the overlay wholly hides (then the bytes read do not matter).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Asks for units `first..=last`, some of them missing; must never block (the swarm
    /// queues the demand). Called once per parked read or write, after it is parked.
    fn demand(&self, first: u32, last: u32);
}

impl<S: PristineSource> PristineSource for Arc<S> {
    fn unit_size(&self) -> u32 {
        (**self).unit_size()
    }
    fn is_present(&self, unit: u32) -> bool {
        (**self).is_present(unit)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn demand(&self, first: u32, last: u32) {
        (**self).demand(first, last)
    }
}

/// A local file is present everywhere; any unit size does, and a large one keeps the per-read
/// unit loop to one step.
const FILE_UNIT: u32 = 1 << 30;

/// The recorder's source: the raw image file, every byte present.
pub struct FileSource {
    file: File,
}

impl FileSource {
    /// Opens `path` read-only: the image itself is never written.
    pub fn open(path: &Path) -> io::Result<FileSource> {
        Ok(FileSource {
            file: File::open(path)?,
        })
    }
}

impl PristineSource for FileSource {
    fn unit_size(&self) -> u32 {
        FILE_UNIT
    }

    fn is_present(&self, _unit: u32) -> bool {
        true
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn demand(&self, _first: u32, _last: u32) {}
}
