//! What answers a waiter of the parked table: a read's reply ([`ReadReply`]), or the wake-up
//! of a write blocked on its FUSE worker.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::error::FsError;

/// Answers one read, now or later, exactly once; it may be moved to another thread.
pub trait ReadReply: Send + 'static {
    /// Answers with the bytes read.
    fn data(self, bytes: &[u8]);
    /// Answers with an error.
    fn error(self, error: FsError);
    /// The process (thread id) waiting for the answer, if known: a parked read whose
    /// process was killed is answered at once, so that the process can die.
    fn requester(&self) -> Option<u32> {
        None
    }
}

/// What waits in the parked table.
pub(crate) enum Waiter<R> {
    /// A FUSE read: its clipped range and its reply.
    Read { offset: u64, len: u32, reply: R },
    /// A partial-block write blocked on its FUSE worker until its pristine units arrive.
    Wake(Arc<Wake>),
}

/// A one-shot wake-up for a thread blocked on missing units.
#[derive(Default)]
pub(crate) struct Wake {
    woken: Mutex<bool>,
    cond: Condvar,
}

impl Wake {
    pub(crate) fn wake(&self) {
        *self.woken.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cond.notify_all();
    }

    /// Whether it was woken within `timeout`.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let woken = self.woken.lock().unwrap_or_else(|e| e.into_inner());
        let (woken, _) = self
            .cond
            .wait_timeout_while(woken, timeout, |w| !*w)
            .unwrap_or_else(|e| e.into_inner());
        *woken
    }
}
