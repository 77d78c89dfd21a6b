//! The state of one torrent that every connection shares: what is present, what is wanted, and
//! the two transitions that make data readable (a block verified alone, a piece verified).
//!
//! See `STATE.md` beside this crate's sources for the block and piece lifecycle and the lock
//! order. In short: the picker lock is a leaf (held for bookkeeping only, never across I/O or a
//! call out of this crate), and data is always written before its bit is set, so a reader that
//! sees a bit may read the bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use librqbit_core::lengths::ValidPieceIndex;
use tokio::sync::{broadcast, watch};

use crate::block_hashes::BlockHashes;
use crate::error::SwarmError;
use crate::events::{Runs, SwarmEvents};
use crate::layout::Layout;
use crate::picker::PiecePicker;
use crate::sources::Sources;
use crate::stats::Counters;
use crate::storage::Storage;
use crate::torrent::Torrent;

/// Locks `m`, ignoring poisoning: a panic elsewhere must not take the serving threads down
/// with it, and every update under these locks is a few field writes that leave valid
/// bookkeeping.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// See the module doc.
pub(crate) struct TorrentState {
    torrent: Torrent,
    storage: Storage,
    picker: Mutex<PiecePicker>,
    counters: Counters,
    events: Option<Arc<dyn SwarmEvents>>,
    /// Every verified piece, for [`crate::Engine::subscribe`].
    pieces: broadcast::Sender<u32>,
    have_count: watch::Sender<u32>,
    /// Set once local storage failed: nothing more is fetched.
    failed: AtomicBool,
    failure: OnceLock<Arc<SwarmError>>,
    /// Tells [`crate::Engine::failed`] waiters.
    failed_tx: watch::Sender<bool>,
    /// Where each piece's data came from (the live map).
    sources: Sources,
}

impl TorrentState {
    pub fn new(
        torrent: Torrent,
        storage: Storage,
        picker: PiecePicker,
        events: Option<Arc<dyn SwarmEvents>>,
    ) -> TorrentState {
        let have = storage.bitmap().count();
        let sources = Sources::new(storage.layout().pieces());
        TorrentState {
            sources,
            torrent,
            storage,
            picker: Mutex::new(picker),
            counters: Counters::default(),
            events,
            pieces: broadcast::channel(4096).0,
            have_count: watch::channel(have).0,
            failed: AtomicBool::new(false),
            failure: OnceLock::new(),
            failed_tx: watch::channel(false).0,
        }
    }

    /// Records that local storage failed: the first failure is kept, logged (the one message
    /// about it) and announced; every connection then stops fetching.
    pub fn fail(&self, error: SwarmError) {
        if self.failure.set(Arc::new(error)).is_err() {
            return;
        }
        self.failed.store(true, Ordering::Release);
        if let Some(e) = self.failure.get() {
            tracing::error!(
                "{}; reads of data not fetched yet will fail",
                crate::error::chain(&**e)
            );
        }
        self.failed_tx.send_replace(true);
    }

    /// Whether local storage failed; lock-free.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Why local storage failed, if it did.
    pub fn failure(&self) -> Option<Arc<SwarmError>> {
        self.failure.get().cloned()
    }

    /// Turns true when local storage fails.
    pub fn failed_watch(&self) -> watch::Receiver<bool> {
        self.failed_tx.subscribe()
    }

    pub fn torrent(&self) -> &Torrent {
        &self.torrent
    }

    pub fn layout(&self) -> &Layout {
        self.storage.layout()
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The block-hash table, if blocks can be verified alone.
    pub fn block_hashes(&self) -> Option<&BlockHashes> {
        self.torrent.block_hashes()
    }

    pub fn picker(&self) -> MutexGuard<'_, PiecePicker> {
        lock(&self.picker)
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn subscribe(&self) -> broadcast::Receiver<u32> {
        self.pieces.subscribe()
    }

    pub fn have_count(&self) -> watch::Receiver<u32> {
        self.have_count.subscribe()
    }

    /// A block verified alone was written: it becomes readable, the picker stops wanting it,
    /// and whoever waits for it hears so. Returns false if it was present already.
    pub fn block_stored(&self, block: u32) -> bool {
        if !self.storage.mark_block(block) {
            return false;
        }
        self.picker().block_present(block);
        if let Some(e) = &self.events {
            e.blocks_ready(block, 1);
        }
        true
    }

    /// A piece passed its SHA-1 check and its bytes are written: it becomes verified (to be
    /// announced and seeded), its new blocks readable. `assigned`: the caller held the
    /// picker's assignment of it, which this returns. Returns whether the piece was not
    /// verified before (only then must the caller announce it), and the bytes of the blocks
    /// it made present.
    pub fn piece_stored(&self, piece: ValidPieceIndex, assigned: bool) -> (bool, u64) {
        let mut runs = Runs::new(self.events.as_deref());
        let layout = *self.layout();
        let mut new_bytes = 0;
        let first = self.storage.mark_verified(piece, |b| {
            new_bytes += layout.block_size(b) as u64;
            runs.push(b)
        });
        {
            let mut picker = self.picker();
            if assigned {
                picker.complete(piece.get());
            } else {
                picker.mark_have(piece.get());
            }
        }
        runs.flush();
        if first {
            let _ = self.pieces.send(piece.get());
            self.have_count.send_modify(|c| *c += 1);
        }
        (first, new_bytes)
    }
}
