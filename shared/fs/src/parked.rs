//! Reads parked on missing pieces, answered the moment their last piece lands.
//!
//! A FUSE read of a range whose pieces are not all local must not hold a worker thread: its
//! reply is parked here with the number of pieces it still waits for, the pieces are demanded
//! from the swarm, and the FUSE loop goes on. When the engine reports a piece verified,
//! [`ParkedReads::piece_ready`] hands back every read that now has all its pieces. Several
//! reads of one missing piece share that one fetch.
//!
//! Invariant: a parked entry waits exactly for the pieces that were missing when it was parked,
//! counted once each. The race between "piece lands" and "read parks" is closed by checking
//! presence under the table's lock, given that the engine marks a piece present *before* it
//! calls [`ParkedReads::piece_ready`]: either the park sees the piece present, or the ready call
//! sees the parked entry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

struct Entry<R> {
    missing: u32,
    parked_at: Instant,
    item: R,
}

struct Inner<R> {
    slab: Vec<Option<Entry<R>>>,
    free: Vec<usize>,
    waiting: HashMap<u32, Vec<usize>>,
    parked: usize,
}

/// See the module doc. `R` is whatever answers the read (a FUSE reply and its range).
pub struct ParkedReads<R> {
    inner: Mutex<Inner<R>>,
}

impl<R> Default for ParkedReads<R> {
    fn default() -> Self {
        ParkedReads {
            inner: Mutex::new(Inner {
                slab: Vec::new(),
                free: Vec::new(),
                waiting: HashMap::new(),
                parked: 0,
            }),
        }
    }
}

/// A read handed back by [`ParkedReads::piece_ready`] or [`ParkedReads::drain`].
pub struct Released<R> {
    /// The parked item.
    pub item: R,
    /// When it was parked, to measure the stall.
    pub parked_at: Instant,
}

impl<R> ParkedReads<R> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<R>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks `item` until every piece of `pieces` that `is_present` denies has landed. Returns
    /// the item back if, checked under the lock, nothing is missing any more.
    pub fn park(
        &self,
        pieces: impl Iterator<Item = u32>,
        is_present: impl Fn(u32) -> bool,
        item: R,
    ) -> Option<R> {
        let mut inner = self.lock();
        let index = match inner.free.pop() {
            Some(i) => i,
            None => {
                inner.slab.push(None);
                inner.slab.len() - 1
            }
        };
        let mut missing = 0;
        for piece in pieces {
            if !is_present(piece) {
                inner.waiting.entry(piece).or_default().push(index);
                missing += 1;
            }
        }
        if missing == 0 {
            inner.free.push(index);
            return Some(item);
        }
        inner.slab[index] = Some(Entry {
            missing,
            parked_at: Instant::now(),
            item,
        });
        inner.parked += 1;
        None
    }

    /// Piece `piece` is verified and readable: moves every read that waited only for it to `out`.
    pub fn piece_ready(&self, piece: u32, out: &mut Vec<Released<R>>) {
        let mut inner = self.lock();
        let Some(indices) = inner.waiting.remove(&piece) else {
            return;
        };
        for index in indices {
            let done = match inner.slab[index].as_mut() {
                Some(entry) => {
                    entry.missing -= 1;
                    entry.missing == 0
                }
                None => false,
            };
            if done {
                let entry = inner.slab[index].take().expect("checked above");
                inner.free.push(index);
                inner.parked -= 1;
                out.push(Released {
                    item: entry.item,
                    parked_at: entry.parked_at,
                });
            }
        }
    }

    /// Removes every parked read (shutdown: each must still be answered).
    pub fn drain(&self, out: &mut Vec<Released<R>>) {
        let mut inner = self.lock();
        inner.waiting.clear();
        inner.free.clear();
        inner.parked = 0;
        for entry in inner.slab.drain(..).flatten() {
            out.push(Released {
                item: entry.item,
                parked_at: entry.parked_at,
            });
        }
    }

    /// Reads parked now.
    pub fn len(&self) -> usize {
        self.lock().parked
    }

    /// Whether no read is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pieces some parked read waits for (for re-demanding after a peer loss).
    pub fn wanted_pieces(&self, out: &mut Vec<u32>) {
        out.extend(self.lock().waiting.keys().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn reads_wait_for_all_their_pieces_and_share_fetches() {
        let present: HashSet<u32> = [2].into();
        let parked = ParkedReads::new();
        assert!(parked.park(1..4, |p| present.contains(&p), "a").is_none());
        assert!(parked.park(3..4, |p| present.contains(&p), "b").is_none());
        assert_eq!(parked.park(2..3, |p| present.contains(&p), "c"), Some("c"));
        assert_eq!(parked.len(), 2);
        let mut out = Vec::new();
        parked.piece_ready(3, &mut out);
        assert_eq!(out.iter().map(|r| r.item).collect::<Vec<_>>(), vec!["b"]);
        out.clear();
        parked.piece_ready(3, &mut out);
        assert!(out.is_empty(), "a piece counts once");
        parked.piece_ready(1, &mut out);
        assert_eq!(out.iter().map(|r| r.item).collect::<Vec<_>>(), vec!["a"]);
        assert!(parked.is_empty());
    }

    #[test]
    fn drain_returns_everything() {
        let parked = ParkedReads::new();
        for i in 0..5u32 {
            assert!(parked.park(i..i + 2, |_| false, i).is_none());
        }
        let mut out = Vec::new();
        parked.drain(&mut out);
        assert_eq!(out.len(), 5);
        assert!(parked.is_empty());
        out.clear();
        parked.piece_ready(1, &mut out);
        assert!(out.is_empty());
    }

    /// A piece landing concurrently with a park is never lost: every read comes back once.
    #[test]
    fn no_lost_wakeups_under_races() {
        for _ in 0..200 {
            let parked = Arc::new(ParkedReads::new());
            let have = Arc::new(AtomicBool::new(false));
            let (p2, h2) = (parked.clone(), have.clone());
            let lander = std::thread::spawn(move || {
                h2.store(true, Ordering::SeqCst);
                let mut out = Vec::new();
                p2.piece_ready(7, &mut out);
                out.len()
            });
            let back = parked.park(7..8, |_| have.load(Ordering::SeqCst), ());
            let released = lander.join().unwrap();
            assert_eq!(back.is_some() as usize + released, 1);
        }
    }
}
