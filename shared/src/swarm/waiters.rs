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
}
