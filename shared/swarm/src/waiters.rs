//! Callbacks waiting for a piece to be verified, usable from threads without a runtime.
//!
//! The FUSE layer parks a reply on a missing piece by registering a callback; the engine calls it
//! once the piece is verified and written. Race-free against completion: the engine sets the
//! piece's bitmap bit *before* draining, and registration checks the bit *under* the lock, so a
//! callback is either called by the drain or handed back to the caller to run at once.

use std::collections::HashMap;
use std::sync::Mutex;

use super::bitmap::AtomicBitmap;

/// A callback run once when its piece is verified; receives the piece index. It runs on an
/// engine task, so it must be quick (answer a reply, send on a channel), never block.
pub type PieceCallback = Box<dyn FnOnce(u32) + Send + 'static>;

/// Waiting callbacks per piece.
#[derive(Default)]
pub(crate) struct Waiters {
    by_piece: Mutex<HashMap<u32, Vec<PieceCallback>>>,
}

impl Waiters {
    /// Registers `cb` for `piece`, or hands it back if the piece is already verified.
    pub fn register(
        &self,
        have: &AtomicBitmap,
        piece: u32,
        cb: PieceCallback,
    ) -> Option<PieceCallback> {
        let mut map = self.by_piece.lock().unwrap_or_else(|e| e.into_inner());
        if have.get(piece) {
            return Some(cb);
        }
        map.entry(piece).or_default().push(cb);
        None
    }

    /// Runs every callback of `piece` (call after its bit is set), outside the lock.
    pub fn fire(&self, piece: u32) {
        let cbs = self
            .by_piece
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&piece);
        for cb in cbs.into_iter().flatten() {
            cb(piece);
        }
    }

    /// Drops every waiting callback uncalled (engine shutdown).
    pub fn clear(&self) {
        let all = std::mem::take(&mut *self.by_piece.lock().unwrap_or_else(|e| e.into_inner()));
        drop(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn fires_once_or_hands_back() {
        let have = AtomicBitmap::new(4);
        let w = Waiters::default();
        let hits = Arc::new(AtomicU32::new(0));
        let cb = |h: &Arc<AtomicU32>| {
            let h = h.clone();
            Box::new(move |_| {
                h.fetch_add(1, Ordering::SeqCst);
            }) as PieceCallback
        };
        assert!(w.register(&have, 1, cb(&hits)).is_none());
        assert!(w.register(&have, 1, cb(&hits)).is_none());
        assert!(w.register(&have, 2, cb(&hits)).is_none());
        have.set(1);
        w.fire(1);
        w.fire(1);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "both waiters of piece 1, once each"
        );
        // Already verified: the callback comes back to run on the caller's thread.
        assert!(w.register(&have, 1, cb(&hits)).is_some());
        w.clear();
        have.set(2);
        w.fire(2);
        assert_eq!(hits.load(Ordering::SeqCst), 2, "cleared waiters never run");
    }
}
