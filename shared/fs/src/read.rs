//! The way of one read through the core.
//!
//! [`ImageFs::read`] clips the request to the image, shows it to the observer, and computes
//! once which units it needs that are neither present nor wholly hidden by overlay blocks.
//! None: the bytes are read into a per-thread buffer, patched by the overlay and answered on
//! the calling thread (no allocation after warm-up). Some: the reply is parked on exactly those
//! units in the [`ParkedReads`] table, which re-checks presence under its lock, and the source
//! is asked for them once ([`PristineSource::demand`]). When the source reports units ready,
//! [`ImageFs::release`] (on a reply-pool thread, never a network task) moves every read that
//! now has all its units out of the table and answers it the same way. [`ImageFs::close`]
//! answers everything parked with an error and refuses later reads.
//! A write waiting for pristine units (`write.rs`) parks in the same table; a release wakes it.
//!
//! By default a read waits as long as it takes (a hard mount: never wrong data).
//! [`ImageFs::expire_parked`], called now and then, answers the reads that must not wait any
//! longer: past the read timeout if one is set (`EIO`), or whose process was killed. Every
//! parked read is counted as a stall with its wait however it ends (data, timeout, killed
//! reader, shutdown), so a read that waited ten seconds for nothing still shows.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::time::Instant;

use vmt_formats::trace::Op;

use crate::error::FsError;
use crate::image_fs::{AccessObserver, ImageFs};
use crate::inode::Node;
use crate::overlay::OVERLAY_BLOCK;
use crate::parked::{Park, Waiting};
use crate::reply::{ReadReply, Waiter};
use crate::requester;
use crate::source::PristineSource;
use crate::stats::{ReadStatsSnapshot, StallEnd};

thread_local! {
    /// One read buffer per thread (FUSE workers, reply pool), so serving a read allocates
    /// nothing after warm-up.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The missing units of the read being served, per FUSE worker, for the same reason.
    static MISSING: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl<S: PristineSource, O: AccessObserver, R: ReadReply> ImageFs<S, O, R> {
    /// Reads `size` bytes at `offset` of inode `ino` and answers `reply`: at once if every unit
    /// is present, else once its missing units are released. See the module doc.
    pub fn read(&self, ino: u64, offset: u64, size: u32, reply: R) {
        match self.node(ino) {
            Ok(Node::Image) => {}
            Ok(Node::Control) => return reply.error(FsError::WriteOnly),
            Ok(Node::Root) => return reply.error(FsError::IsDirectory),
            Err(e) => return reply.error(e),
        }
        if self.closed.load(Ordering::Acquire) {
            return reply.error(FsError::ShuttingDown);
        }
        let image = self.options.size;
        if offset >= image || size == 0 {
            return reply.data(&[]);
        }
        let len = u64::from(size).min(image - offset) as u32;
        self.observer.observe(Op::Read, offset, len);
        MISSING.with(|cell| {
            let mut missing = cell.borrow_mut();
            missing.clear();
            self.missing_units(offset, len, &mut missing);
            let (Some(&first), Some(&last)) = (missing.first(), missing.last()) else {
                self.stats.hit();
                return self.serve(offset, len, reply);
            };
            let waiter = Waiter::Read { offset, len, reply };
            match self
                .parked
                .park(&missing, |u| self.source.is_present(u), waiter)
            {
                Park::Parked => {
                    self.stats.miss();
                    self.source.demand(first, last);
                }
                // Everything landed between the check and the park.
                Park::Ready(waiter) => {
                    self.stats.hit();
                    self.answer(waiter, None);
                }
                Park::Closed(waiter) => self.answer(waiter, Some(self.unavailable())),
            }
        });
    }

    /// Units `first..first + count` are present: answers every parked read (and wakes every
    /// waiting write) that now has all its units, on the calling thread. The source must mark
    /// units present before reporting them; reporting a unit twice is harmless.
    pub fn release(&self, first: u32, count: u32) {
        let mut released = Vec::new();
        self.parked.units_ready(first, count, &mut released);
        for r in released {
            let is_read = matches!(r.item, Waiter::Read { .. });
            self.answer(r.item, None);
            if is_read {
                self.stats.stall(r.parked_at.elapsed(), StallEnd::Served);
            }
        }
    }

    /// Stops serving: answers every parked read with [`FsError::ShuttingDown`] (rather than
    /// relying on a dropped reply's `EIO`), wakes waiting writes to fail, and fails every later
    /// read. Call before unmounting.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut parked = Vec::new();
        self.parked.close(&mut parked);
        for r in parked {
            if matches!(r.item, Waiter::Read { .. }) {
                self.stats.stall(r.parked_at.elapsed(), StallEnd::Shutdown);
            }
            self.answer(r.item, Some(FsError::ShuttingDown));
        }
    }

    /// Answers the parked reads that must not wait any longer: those parked for the read
    /// timeout or longer ([`FsError::ReadTimeout`], `EIO`), and those whose process was
    /// killed ([`FsError::Interrupted`]). Returns how many. Meant to be called every fraction
    /// of a second, off the read path. The requesters' `/proc` entries are read outside the
    /// table's lock (a read parking meanwhile never waits for that I/O); a requester that
    /// dies between the look and the take is caught on the next call.
    pub fn expire_parked(&self) -> usize {
        let now = Instant::now();
        let timeout = self.options.read_timeout;
        let timed_out = |parked_at: Instant| {
            timeout.is_some_and(|t| now.saturating_duration_since(parked_at) >= t)
        };
        let mut requesters = Vec::new();
        self.parked.each(|waiter| {
            if let Waiter::Read { reply, .. } = waiter {
                requesters.extend(reply.requester());
            }
        });
        requesters.sort_unstable();
        requesters.dedup();
        requesters.retain(|&tid| requester::killed_or_gone(tid));
        if requesters.is_empty() && timeout.is_none() {
            return 0;
        }
        let mut expired = Vec::new();
        self.parked.expire(
            |waiter, parked_at| match waiter {
                Waiter::Read { reply, .. } => {
                    timed_out(parked_at)
                        || reply
                            .requester()
                            .is_some_and(|tid| requesters.binary_search(&tid).is_ok())
                }
                Waiter::Wake(_) => false,
            },
            &mut expired,
        );
        let count = expired.len();
        for r in expired {
            let waited = now.saturating_duration_since(r.parked_at);
            let Waiter::Read { offset, len, reply } = r.item else {
                continue;
            };
            if timed_out(r.parked_at) {
                self.stats.stall(waited, StallEnd::TimedOut);
                reply.error(FsError::ReadTimeout {
                    offset,
                    len,
                    waited,
                });
            } else {
                self.stats.stall(waited, StallEnd::Interrupted);
                reply.error(FsError::Interrupted);
            }
        }
        count
    }

    /// The longest wait in the parked table now (a read's, or a partial write's).
    pub fn oldest_parked(&self) -> Option<Waiting> {
        self.parked.oldest()
    }

    /// The `max` longest waits going on, oldest first, into `out`: reads parked now, with the
    /// blocks they still wait for.
    pub fn longest_parked(&self, max: usize, out: &mut Vec<Waiting>) {
        self.parked.longest(max, out)
    }

    /// The waits of `age` or longer not told before (each long wait is told once), with the
    /// byte range `(offset, len)` of each that is a read (`None` for a partial write).
    pub fn newly_overdue(&self, age: std::time::Duration) -> Vec<(Waiting, Option<(u64, u32)>)> {
        let mut out = Vec::new();
        let range = |w: &Waiter<_>| match w {
            Waiter::Read { offset, len, .. } => Some((*offset, *len)),
            Waiter::Wake(_) => None,
        };
        self.parked
            .newly_overdue(age, Instant::now(), range, &mut out);
        out
    }

    /// The source can never deliver its missing units (its local storage failed): answers
    /// every parked read with [`FsError::SourceFailed`] (`EIO`), wakes waiting writes to fail,
    /// and fails every later read of missing units at once. Present units are still served.
    pub fn fail_missing(&self) {
        let mut parked = Vec::new();
        self.parked.close(&mut parked);
        for r in parked {
            if matches!(r.item, Waiter::Read { .. }) {
                self.stats
                    .stall(r.parked_at.elapsed(), StallEnd::SourceFailed);
            }
            self.answer(r.item, Some(self.unavailable()));
        }
    }

    /// Why missing units will not come: the filesystem is closing, or the source failed.
    pub(crate) fn unavailable(&self) -> FsError {
        if self.closed.load(Ordering::Acquire) {
            FsError::ShuttingDown
        } else {
            FsError::SourceFailed
        }
    }

    /// The read path's counters.
    pub fn stats(&self) -> ReadStatsSnapshot {
        self.stats.snapshot()
    }

    /// Reads (and writes) waiting for units now.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    fn answer(&self, waiter: Waiter<R>, failure: Option<FsError>) {
        match (waiter, failure) {
            (Waiter::Read { offset, len, reply }, None) => self.serve(offset, len, reply),
            (Waiter::Read { reply, .. }, Some(error)) => reply.error(error),
            (Waiter::Wake(wake), _) => wake.wake(),
        }
    }

    /// Reads pristine bytes, patches them with the overlay and replies.
    fn serve(&self, offset: u64, len: u32, reply: R) {
        READ_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < len as usize {
                buf.resize(len as usize, 0);
            }
            let buf = &mut buf[..len as usize];
            match self
                .source
                .read_at(offset, buf)
                .and_then(|()| self.overlay.patch(offset, buf))
            {
                Ok(()) => reply.data(buf),
                Err(error) => reply.error(FsError::Read { offset, len, error }),
            }
        });
    }

    /// The units `[first, last]` covering `len > 0` bytes at `offset`. The image has at most
    /// 2^32 units (64 TiB at 16 KiB), so a unit index fits a `u32`.
    pub(crate) fn unit_span(&self, offset: u64, len: u64) -> (u64, u64) {
        (offset / self.unit_size, (offset + len - 1) / self.unit_size)
    }

    /// Pushes to `out`, ascending, the units of the range that are not present and not wholly
    /// hidden by overlay blocks.
    fn missing_units(&self, offset: u64, len: u32, out: &mut Vec<u32>) {
        let end = offset + u64::from(len);
        let (first, last) = self.unit_span(offset, u64::from(len));
        let check_overlay = self.overlay.intersects(offset, u64::from(len));
        for unit in first..=last {
            if self.source.is_present(unit as u32) {
                continue;
            }
            if check_overlay {
                let lo = (unit * self.unit_size).max(offset) / OVERLAY_BLOCK;
                let hi = ((unit + 1) * self.unit_size).min(end) - 1;
                if (lo..=hi / OVERLAY_BLOCK).all(|b| self.overlay.has_block(b)) {
                    continue;
                }
            }
            out.push(unit as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pristine, read, test_fs, FakeReply, IMAGE, U, UNIT};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_hit_is_served_inline() {
        let (fs, source) = test_fs(4);
        (0..4).for_each(|u| source.arrive(u));
        let reply = read(&fs, U - 10, 30);
        assert_eq!(reply.answer(), Some(Ok(pristine(U - 10, 30))));
        assert!(source.demands().is_empty());
        assert_eq!(fs.parked(), 0);
        let stats = fs.stats();
        assert_eq!((stats.hits, stats.misses, stats.stalls.count), (1, 0, 0));
    }

    #[test]
    fn reads_are_clipped_to_the_image() {
        let (fs, source) = test_fs(2);
        (0..2).for_each(|u| source.arrive(u));
        assert_eq!(
            read(&fs, 2 * U - 5, 100).answer(),
            Some(Ok(pristine(2 * U - 5, 5)))
        );
        assert_eq!(read(&fs, 2 * U, 100).answer(), Some(Ok(Vec::new())));
        assert_eq!(read(&fs, 0, 0).answer(), Some(Ok(Vec::new())));
        let control = FakeReply::default();
        fs.read(3, 0, 10, control.clone());
        assert_eq!(control.answer(), Some(Err(libc::ENOENT)), "no control file");
        let root = FakeReply::default();
        fs.read(1, 0, 10, root.clone());
        assert_eq!(root.answer(), Some(Err(libc::EISDIR)));
    }

    /// A read spanning present and missing units parks on exactly the missing ones, demands
    /// them once, and is answered with the image's bytes when the last one is released.
    #[test]
    fn a_miss_parks_demands_its_missing_units_once_and_release_answers_it() {
        let (fs, source) = test_fs(8);
        for u in [0, 1, 3] {
            source.arrive(u);
        }
        // Units 1..=4: 1 and 3 present, 2 and 4 missing.
        let (offset, size) = (U + 100, 3 * UNIT + 10);
        let reply = read(&fs, offset, size);
        assert_eq!(reply.answer(), None);
        assert_eq!(source.demands(), vec![(2, 4)]);
        assert_eq!(fs.parked(), 1);
        source.arrive(2);
        fs.release(2, 1);
        assert_eq!(reply.answer(), None, "unit 4 is still missing");
        fs.release(2, 1);
        assert_eq!(reply.answer(), None, "a repeated event counts once");
        source.arrive(4);
        fs.release(4, 1);
        assert_eq!(reply.answer(), Some(Ok(pristine(offset, size as usize))));
        assert_eq!(fs.parked(), 0);
        assert_eq!(source.demands().len(), 1, "release demands nothing more");
        let stats = fs.stats();
        assert_eq!((stats.hits, stats.misses, stats.stalls.count), (0, 1, 1));
    }

    #[test]
    fn several_reads_of_one_unit_share_one_wait() {
        let (fs, source) = test_fs(8);
        let replies: Vec<_> = (0..3).map(|i| read(&fs, 5 * U + i * 1000, 500)).collect();
        assert_eq!(fs.parked(), 3);
        assert!(source.demands().iter().all(|&d| d == (5, 5)));
        source.arrive(5);
        fs.release(5, 1);
        for (i, reply) in replies.iter().enumerate() {
            let offset = 5 * U + i as u64 * 1000;
            assert_eq!(reply.answer(), Some(Ok(pristine(offset, 500))));
        }
        assert_eq!(fs.stats().stalls.count, 3);
    }

    /// A unit released while reads park on it: every read is answered exactly once, either at
    /// once (the park saw it present) or by the release.
    #[test]
    fn release_racing_with_park_never_loses_a_wakeup() {
        for _ in 0..200 {
            let (fs, source) = test_fs(2);
            let (fs2, source2) = (fs.clone(), source.clone());
            let lander = std::thread::spawn(move || {
                source2.arrive(1);
                fs2.release(1, 1);
            });
            let replies: Vec<_> = (0..4).map(|i| read(&fs, U + i * 100, 100)).collect();
            lander.join().unwrap();
            for (i, reply) in replies.iter().enumerate() {
                let offset = U + i as u64 * 100;
                assert_eq!(reply.answer(), Some(Ok(pristine(offset, 100))));
            }
            assert_eq!(fs.parked(), 0);
        }
    }

    /// An overlay write that lands on a parked read's range shows in its answer.
    #[test]
    fn an_overlay_write_on_a_parked_range_is_in_the_answer() {
        let (fs, source) = test_fs(4);
        let reply = read(&fs, U, UNIT);
        assert_eq!(fs.parked(), 1);
        // A whole overlay block needs no pristine bytes: it does not wait.
        let block = U + 2 * OVERLAY_BLOCK;
        assert_eq!(fs.write(IMAGE, block, &[7; 4096]).unwrap(), 4096);
        source.arrive(1);
        fs.release(1, 1);
        let mut want = pristine(U, UNIT as usize);
        want[2 * 4096..3 * 4096].fill(7);
        assert_eq!(reply.answer(), Some(Ok(want)));
    }

    /// A range the overlay wholly hides needs nothing from the source.
    #[test]
    fn a_read_hidden_by_the_overlay_is_a_hit() {
        let (fs, source) = test_fs(4);
        fs.write(IMAGE, 2 * U, &vec![9; UNIT as usize]).unwrap();
        let reply = read(&fs, 2 * U + 4096, 8192);
        assert_eq!(reply.answer(), Some(Ok(vec![9; 8192])));
        // Half hidden: waits for the unit, and only it.
        let reply = read(&fs, 2 * U - 4096, 8192);
        assert_eq!(reply.answer(), None);
        assert_eq!(source.demands(), vec![(1, 1)]);
        source.arrive(1);
        fs.release(1, 1);
        let mut want = pristine(2 * U - 4096, 4096);
        want.extend([9; 4096]);
        assert_eq!(reply.answer(), Some(Ok(want)));
    }

    #[test]
    fn close_answers_every_parked_read_and_fails_later_reads() {
        let (fs, source) = test_fs(4);
        source.arrive(0);
        let parked: Vec<_> = (1..4).map(|u| read(&fs, u * U, 10)).collect();
        assert_eq!(fs.parked(), 3);
        fs.close();
        for reply in &parked {
            assert_eq!(reply.answer(), Some(Err(libc::EIO)));
        }
        assert_eq!(fs.parked(), 0);
        assert_eq!(read(&fs, 0, 10).answer(), Some(Err(libc::EIO)), "a hit too");
        assert_eq!(read(&fs, U, 10).answer(), Some(Err(libc::EIO)));
        // A late release finds nothing to answer twice.
        source.arrive(1);
        fs.release(1, 3);
        for reply in &parked {
            assert_eq!(reply.answer(), Some(Err(libc::EIO)));
        }
        // Issue 12: reads failed at shutdown still count as stalls, with their wait.
        let stats = fs.stats();
        assert_eq!((stats.stalls.count, stats.failed_at_shutdown), (3, 3));
    }

    /// Issue 12: a read whose process is gone is answered at once; with a read timeout, a
    /// parked read is answered `EIO` once it has waited that long, no sooner; each counts as
    /// a stall; the others keep waiting and are served when their units land.
    #[test]
    fn expire_answers_timed_out_reads_and_reads_of_killed_processes() {
        let (fs, source) = test_fs(8);
        let mut fs = Arc::into_inner(fs).unwrap();
        let slow = read(&fs, U, 10);
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let orphan = FakeReply::from_thread(child.id());
        fs.read(IMAGE, 2 * U, 10, orphan.clone());
        let alive = FakeReply::from_thread(std::process::id());
        fs.read(IMAGE, 3 * U, 10, alive.clone());
        assert_eq!(fs.parked(), 3);
        assert_eq!(fs.expire_parked(), 0, "no timeout, every reader alive");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(fs.expire_parked(), 1);
        assert_eq!(orphan.answer(), Some(Err(libc::EINTR)));
        assert_eq!(fs.oldest_parked().unwrap().units, vec![1]);
        std::thread::sleep(Duration::from_millis(1100));
        fs.options.read_timeout = Some(Duration::from_secs(1));
        let fresh = read(&fs, 4 * U, 10);
        let long = fs.newly_overdue(Duration::from_secs(1));
        assert_eq!(long.len(), 2);
        assert!(
            long.iter().any(|(_, r)| *r == Some((3 * U, 10))),
            "{long:?}"
        );
        assert_eq!(
            fs.expire_parked(),
            2,
            "the fresh read has not waited long enough"
        );
        assert_eq!(slow.answer(), Some(Err(libc::EIO)));
        assert_eq!(alive.answer(), Some(Err(libc::EIO)));
        let stats = fs.stats();
        assert_eq!(
            (stats.stalls.count, stats.timed_out, stats.interrupted),
            (3, 2, 1)
        );
        assert!(stats.stalls.max >= Duration::from_secs(1));
        assert_eq!(fs.parked(), 1);
        // Late units find nothing to answer twice; the fresh read is served.
        source.arrive(1);
        fs.release(1, 1);
        source.arrive(4);
        fs.release(4, 1);
        assert_eq!(fresh.answer(), Some(Ok(pristine(4 * U, 10))));
        assert_eq!(slow.answer(), Some(Err(libc::EIO)));
    }

    /// Without a read timeout a read waits as long as it takes.
    #[test]
    fn without_a_timeout_reads_wait() {
        let (fs, source) = test_fs(4);
        let reply = read(&fs, U, 10);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(fs.expire_parked(), 0);
        source.arrive(1);
        fs.release(1, 1);
        assert_eq!(reply.answer(), Some(Ok(pristine(U, 10))));
    }

    #[test]
    fn fail_missing_answers_parked_reads_and_still_serves_present_units() {
        let (fs, source) = test_fs(4);
        source.arrive(0);
        let parked: Vec<_> = (1..3).map(|u| read(&fs, u * U, 10)).collect();
        assert_eq!(fs.parked(), 2);
        fs.fail_missing();
        for reply in &parked {
            assert_eq!(reply.answer(), Some(Err(libc::EIO)));
        }
        assert_eq!(fs.parked(), 0);
        assert_eq!(
            fs.stats().stalls.count,
            2,
            "the failed reads waited: stalls"
        );
        assert_eq!(
            read(&fs, 0, 10).answer(),
            Some(Ok(pristine(0, 10))),
            "a present unit is still served"
        );
        assert_eq!(
            read(&fs, 3 * U, 10).answer(),
            Some(Err(libc::EIO)),
            "a later miss fails at once"
        );
        assert_eq!(fs.parked(), 0);
    }
}
