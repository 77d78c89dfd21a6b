//! The reply pool: dedicated threads that answer parked reads when their units are ready.
//!
//! The source (the swarm engine) reports "units `first..first + count` are present" through a
//! [`UnitsReadySender`]: a non-blocking send, cheap enough for a network task. The pool's
//! threads receive those events and call [`ImageFs::release`](crate::ImageFs::release), which
//! reads, patches and replies, so a reply (a `pread` and a write to `/dev/fuse`) never runs on
//! a network task. Events are processed in the order sent; [`ReplyPool::stop`] lets the
//! threads finish the events already queued, then joins them.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Units `first..first + count` became present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitsReady {
    /// First unit.
    pub first: u32,
    /// Number of consecutive units.
    pub count: u32,
}

enum Event {
    Ready(UnitsReady),
    Stop,
}

/// The source's end of the channel: reports units ready. Cloneable; never blocks.
#[derive(Clone)]
pub struct UnitsReadySender(Sender<Event>);

impl UnitsReadySender {
    /// Reports units `first..first + count` present. Mark them present first (see
    /// [`PristineSource`](crate::PristineSource)). After the pool stopped, this does nothing.
    pub fn units_ready(&self, first: u32, count: u32) {
        let _ = self.0.send(Event::Ready(UnitsReady { first, count }));
    }
}

/// The pool's end of the channel, handed to [`ReplyPool::start`].
pub struct UnitsReadyReceiver {
    events: Receiver<Event>,
    stop: Sender<Event>,
}

/// A channel of "units ready" events: the sender goes to the source (the engine), the receiver
/// to [`ReplyPool::start`]. Made apart from the pool because the source exists before the
/// filesystem the pool serves.
pub fn units_ready_channel() -> (UnitsReadySender, UnitsReadyReceiver) {
    let (tx, rx) = mpsc::channel();
    (
        UnitsReadySender(tx.clone()),
        UnitsReadyReceiver {
            events: rx,
            stop: tx,
        },
    )
}

/// See the module doc. Dropping it stops it too.
pub struct ReplyPool {
    threads: Vec<JoinHandle<()>>,
    stop: Sender<Event>,
}

impl ReplyPool {
    /// Starts `threads` (at least one) threads that call `release(first, count)` for each
    /// event, usually `move |first, count| fs.release(first, count)`.
    pub fn start(
        events: UnitsReadyReceiver,
        threads: usize,
        release: impl Fn(u32, u32) + Send + Sync + 'static,
    ) -> io::Result<ReplyPool> {
        let UnitsReadyReceiver { events, stop } = events;
        // A std receiver has one consumer: the threads take turns receiving, and release
        // outside the lock.
        let events = Arc::new(Mutex::new(events));
        let release = Arc::new(release);
        let mut pool = ReplyPool {
            threads: Vec::with_capacity(threads.max(1)),
            stop,
        };
        for i in 0..threads.max(1) {
            let (events, release) = (events.clone(), release.clone());
            let handle = std::thread::Builder::new()
                .name(format!("vmt-reply-{i}"))
                .spawn(move || loop {
                    let event = events.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match event {
                        Ok(Event::Ready(r)) => release(r.first, r.count),
                        Ok(Event::Stop) | Err(_) => break,
                    }
                })?;
            pool.threads.push(handle);
        }
        Ok(pool)
    }

    /// Lets the threads answer the events already queued, then stops and joins them.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        for _ in &self.threads {
            let _ = self.stop.send(Event::Stop);
        }
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                tracing::warn!("a reply thread panicked");
            }
        }
    }
}

impl Drop for ReplyPool {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pristine, test_fs, FakeReply, UNIT};
    use std::time::{Duration, Instant};

    /// Reads parked on the FUSE side are answered by the pool's threads when the source
    /// reports their units, not by the reporting thread.
    #[test]
    fn the_pool_answers_released_reads_on_its_own_threads() {
        let (fs, source) = test_fs(8);
        let (tx, rx) = units_ready_channel();
        let replies: Vec<FakeReply> = (0..8).map(|_| FakeReply::default()).collect();
        for (u, reply) in replies.iter().enumerate() {
            fs.read(2, u as u64 * u64::from(UNIT), 100, reply.clone());
        }
        assert_eq!(fs.parked(), 8);
        let fs2 = fs.clone();
        let pool = ReplyPool::start(rx, 2, move |first, count| {
            assert!(std::thread::current()
                .name()
                .unwrap()
                .starts_with("vmt-reply-"));
            fs2.release(first, count);
        })
        .unwrap();
        for u in 0..8 {
            source.arrive(u);
        }
        tx.units_ready(0, 5);
        tx.units_ready(5, 3);
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs.parked() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        pool.stop();
        for (u, reply) in replies.iter().enumerate() {
            let want = pristine(u as u64 * u64::from(UNIT), 100);
            assert_eq!(reply.answer(), Some(Ok(want)), "read {u}");
        }
        assert_eq!(fs.stats().stalls.count, 8);
        // Stopped: a late event is dropped, not a panic or a hang.
        tx.units_ready(0, 1);
    }

    #[test]
    fn stop_answers_queued_events_first() {
        let (tx, rx) = units_ready_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let pool = ReplyPool::start(rx, 1, move |first, count| {
            std::thread::sleep(Duration::from_millis(1));
            log.lock().unwrap().push((first, count));
        })
        .unwrap();
        for i in 0..20 {
            tx.units_ready(i, 1);
        }
        pool.stop();
        assert_eq!(seen.lock().unwrap().len(), 20);
    }
}
