//! How the engine tells the application that data became readable.

/// Receives "blocks are present" once per block, as the engine verifies and writes them (a
/// block verified alone against the block-hash table, or every new block of a verified piece).
///
/// It is called on a network task, so it must be quick and never block: hand the event to
/// another thread (the filesystem's reply pool answers parked reads there).
pub trait SwarmEvents: Send + Sync + 'static {
    /// Blocks `first .. first + count` are present: readable through
    /// [`Engine::read_at`](crate::Engine::read_at).
    fn blocks_ready(&self, first: u32, count: u32);
}

/// Feeds the calls of `f` into runs of consecutive blocks, one `blocks_ready` per run.
pub(crate) struct Runs<'a> {
    events: Option<&'a dyn SwarmEvents>,
    first: u32,
    count: u32,
}

impl<'a> Runs<'a> {
    pub fn new(events: Option<&'a dyn SwarmEvents>) -> Runs<'a> {
        Runs {
            events,
            first: 0,
            count: 0,
        }
    }

    /// Block `b` became present.
    pub fn push(&mut self, b: u32) {
        if self.count > 0 && self.first + self.count == b {
            self.count += 1;
            return;
        }
        self.flush();
        (self.first, self.count) = (b, 1);
    }

    /// Reports the run in progress.
    pub fn flush(&mut self) {
        if self.count > 0 {
            if let Some(e) = self.events {
                e.blocks_ready(self.first, self.count);
            }
            self.count = 0;
        }
    }
}

impl Drop for Runs<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<(u32, u32)>>);
    impl SwarmEvents for Log {
        fn blocks_ready(&self, first: u32, count: u32) {
            self.0.lock().unwrap().push((first, count));
        }
    }

    #[test]
    fn consecutive_blocks_make_one_event() {
        let log = Log::default();
        {
            let mut r = Runs::new(Some(&log));
            for b in [4, 5, 6, 9, 10, 2] {
                r.push(b);
            }
        }
        assert_eq!(*log.0.lock().unwrap(), vec![(4, 3), (9, 2), (2, 1)]);
    }
}
