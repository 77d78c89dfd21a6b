//! Writes: the VM's writes go to the copy-on-write overlay, commands to the control file.
//!
//! A partial-block write to a block the overlay does not hold must keep the rest of the block's
//! pristine bytes. If their units are missing, the write demands them and waits for them
//! through the parked table (a [`Waiter::Wake`] entry), blocking its FUSE worker up to
//! [`ImageFsOptions::pristine_wait`](crate::ImageFsOptions::pristine_wait): writes are rare and
//! usually follow a read of the same block. The wait happens before the overlay's write lock is
//! taken, so other writes go on. A wait that times out leaves its entry behind; it is released
//! harmlessly when the units arrive, or at close.

use std::sync::Arc;

use vmt_formats::trace::Op;

use crate::error::FsError;
use crate::image_fs::{AccessObserver, ImageFs};
use crate::inode::Node;
use crate::overlay::OVERLAY_BLOCK;
use crate::parked::Park;
use crate::reply::{ReadReply, Waiter, Wake};
use crate::source::PristineSource;

impl<S: PristineSource, O: AccessObserver, R: ReadReply> ImageFs<S, O, R> {
    /// Writes `data` at `offset` of inode `ino`: into the overlay for the image (clipped to its
    /// size), as commands for the control file. Returns the bytes taken. May first wait for
    /// pristine bytes on this thread (see the module doc).
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        match self.node(ino)? {
            Node::Image => {}
            Node::Control => {
                self.control_write(data)?;
                return Ok(data.len() as u32);
            }
            Node::Root => return Err(FsError::IsDirectory),
        }
        let size = self.options.size;
        if offset >= size {
            return Err(FsError::PastEnd { offset, size });
        }
        let len = (data.len() as u64).min(size - offset) as u32;
        self.observer.observe(Op::Write, offset, len);
        self.fetch_partial_blocks(offset, len)?;
        let write_err = |error| FsError::Write { offset, len, error };
        let n = self
            .overlay
            .write(offset, data, |at, buf| {
                // Fetched above; a unit still missing here would mean the source broke its
                // contract, so refuse rather than keep garbage.
                if self.first_missing(at, buf.len() as u64).is_some() {
                    return Err(std::io::Error::other(format!(
                        "pristine bytes at {at} are not present"
                    )));
                }
                self.source.read_at(at, buf)
            })
            .map_err(write_err)?;
        Ok(n as u32)
    }

    /// The first unit of the range that is not present, if any.
    fn first_missing(&self, offset: u64, len: u64) -> Option<u32> {
        if len == 0 {
            return None;
        }
        let (first, last) = self.unit_span(offset, len);
        (first..=last)
            .map(|u| u as u32)
            .find(|&u| !self.source.is_present(u))
    }

    /// Waits until the pristine bytes that a write of `len` bytes at `offset` must keep (the
    /// rest of a partly written block the overlay does not hold) are present.
    fn fetch_partial_blocks(&self, offset: u64, len: u32) -> Result<(), FsError> {
        if len == 0 {
            return Ok(());
        }
        let size = self.options.size;
        let end = offset + u64::from(len);
        let (head, tail) = (offset / OVERLAY_BLOCK, (end - 1) / OVERLAY_BLOCK);
        // Rare (a write, to a block never read): a small allocation is fine here.
        let mut units = Vec::new();
        for block in [head, tail] {
            let start = block * OVERLAY_BLOCK;
            let stop = (start + OVERLAY_BLOCK).min(size);
            let partial = offset > start || end < stop;
            if !partial || self.overlay.has_block(block) {
                continue;
            }
            let (first, last) = self.unit_span(start, stop - start);
            units.extend(
                (first..=last)
                    .map(|u| u as u32)
                    .filter(|&u| !self.source.is_present(u)),
            );
        }
        units.sort_unstable();
        units.dedup();
        let (Some(&first), Some(&last)) = (units.first(), units.last()) else {
            return Ok(());
        };
        let wake = Arc::new(Wake::default());
        match self.parked.park(
            &units,
            |u| self.source.is_present(u),
            Waiter::Wake(wake.clone()),
        ) {
            Park::Parked => {}
            Park::Ready(_) => return Ok(()),
            Park::Closed(_) => return Err(self.unavailable()),
        }
        self.source.demand(first, last);
        let waited = self.options.pristine_wait;
        if !wake.wait(waited) {
            return Err(FsError::PristineTimeout {
                first,
                last,
                waited,
            });
        }
        // Woken by a release (all present) or by close (not all present).
        if units.iter().all(|&u| self.source.is_present(u)) {
            Ok(())
        } else {
            Err(self.unavailable())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pristine, read, test_fs, IMAGE, U};
    use std::time::Duration;

    /// A partial-block write to a unit never fetched demands it, waits for it through the
    /// parked table, and keeps the block's pristine bytes.
    #[test]
    fn a_partial_write_waits_for_its_pristine_unit() {
        let (fs, source) = test_fs(4);
        let fs2 = fs.clone();
        let writer = std::thread::spawn(move || fs2.write(IMAGE, U + 100, b"hello"));
        // It parks, then demands.
        while source.demands().is_empty() {
            std::thread::yield_now();
        }
        assert_eq!(fs.parked(), 1);
        assert_eq!(source.demands(), vec![(1, 1)]);
        assert!(!writer.is_finished());
        source.arrive(1);
        fs.release(1, 1);
        assert_eq!(writer.join().unwrap().unwrap(), 5);
        let mut want = pristine(U, 4096);
        want[100..105].copy_from_slice(b"hello");
        assert_eq!(read(&fs, U, 4096).answer(), Some(Ok(want)));
        assert_eq!(fs.stats().stalls.count, 0, "a write is not a read stall");
        // A whole block, or a block the overlay holds, waits for nothing.
        fs.write(IMAGE, 2 * U, &[1; 4096]).unwrap();
        fs.write(IMAGE, 2 * U + 10, b"x").unwrap();
        assert_eq!(
            fs.write(IMAGE, 0, b"").unwrap(),
            0,
            "an empty write waits for nothing"
        );
        assert_eq!(source.demands().len(), 1);
    }

    #[test]
    fn a_partial_write_times_out_with_an_io_error() {
        let (fs, source) = test_fs(4);
        let mut fs = Arc::into_inner(fs).unwrap();
        fs.options.pristine_wait = Duration::from_millis(50);
        let err = fs
            .write(IMAGE, 3 * U + 4000, b"spans two blocks")
            .unwrap_err();
        assert!(
            matches!(
                err,
                FsError::PristineTimeout {
                    first: 3,
                    last: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.errno(), libc::EIO);
        assert_eq!(fs.overlay().blocks(), 0, "nothing half-written");
        // The stale wake-up entry is released harmlessly later.
        source.arrive(3);
        fs.release(3, 1);
        assert_eq!(fs.parked(), 0);
    }

    #[test]
    fn close_fails_a_waiting_write() {
        let (fs, _source) = test_fs(4);
        let fs2 = fs.clone();
        let writer = std::thread::spawn(move || fs2.write(IMAGE, 10, b"x"));
        while fs.parked() == 0 {
            std::thread::yield_now();
        }
        fs.close();
        let err = writer.join().unwrap().unwrap_err();
        assert!(matches!(err, FsError::ShuttingDown), "{err}");
        assert!(matches!(
            fs.write(IMAGE, 20, b"x"),
            Err(FsError::ShuttingDown)
        ));
    }
}
