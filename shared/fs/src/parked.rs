//! The one table of reads (and writes) waiting for missing units, answered the moment their
//! last unit lands.
//!
//! A FUSE read of a range whose units are not all present must not hold a worker thread: its
//! reply is parked here with the number of units it still waits for, the units are demanded
//! from the source, and the FUSE loop goes on. When the source reports units ready,
//! [`ParkedReads::units_ready`] hands back every item that now has all its units. Several reads
//! of one missing unit share that one fetch.
//!
//! Invariant: a parked entry waits exactly for the units that were missing when it was parked,
//! counted once each. The race between "unit lands" and "read parks" is closed by checking
//! presence under the table's lock, given that the source marks a unit present *before* it
//! reports it ready and never unmarks it: either the park sees the unit present, or the ready
//! call (which takes the lock after marking) sees the parked entry. Likewise
//! [`ParkedReads::close`] and [`ParkedReads::park`] meet under the lock, so after a close
//! nothing parks and everything parked before it is handed back.
//!
//! Parking allocates nothing after warm-up: slab slots and the per-unit index lists are
//! reused.
//!
//! Waits are visible and can be cut short: [`ParkedReads::oldest`] and
//! [`ParkedReads::newly_overdue`] tell which units the longest waits are for (an entry's
//! units are found by scanning the per-unit lists: rare calls, off the read path), and
//! [`ParkedReads::expire`] takes out entries that must not wait any longer (a read timeout, a
//! killed reader), unregistering them from every unit they waited for.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct Entry<R> {
    missing: u32,
    parked_at: Instant,
    /// Already handed out by [`ParkedReads::newly_overdue`].
    overdue: bool,
    item: R,
}

/// A parked entry's wait: when it parked and the units it still waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// When it was parked.
    pub parked_at: Instant,
    /// The units it still waits for, ascending.
    pub units: Vec<u32>,
}

struct Inner<R> {
    slab: Vec<Option<Entry<R>>>,
    free: Vec<usize>,
    /// Per missing unit, the slab slots waiting for it.
    waiting: HashMap<u32, Vec<usize>>,
    /// Emptied index lists, reused so parking does not allocate.
    spare: Vec<Vec<usize>>,
    parked: usize,
    closed: bool,
}

/// See the module doc. `R` is whatever answers the waiter (a reply and its range, a wake-up).
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
                spare: Vec::new(),
                parked: 0,
                closed: false,
            }),
        }
    }
}

/// What [`ParkedReads::park`] did with an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Park<R> {
    /// Parked: it comes back from [`ParkedReads::units_ready`] or [`ParkedReads::close`].
    Parked,
    /// Checked under the lock, every unit is present now: serve it.
    Ready(R),
    /// The table is closed: answer it as shutting down.
    Closed(R),
}

/// An item handed back by [`ParkedReads::units_ready`] or [`ParkedReads::close`].
pub struct Released<R> {
    /// The parked item.
    pub item: R,
    /// When it was parked, to measure the stall.
    pub parked_at: Instant,
}

impl<R> ParkedReads<R> {
    /// An empty, open table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner<R>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks `item` until every unit of `units` (distinct) that `is_present` denies, checked
    /// under the lock, has been reported ready.
    pub fn park(&self, units: &[u32], is_present: impl Fn(u32) -> bool, item: R) -> Park<R> {
        let mut inner = self.lock();
        if inner.closed {
            return Park::Closed(item);
        }
        let index = match inner.free.pop() {
            Some(i) => i,
            None => {
                inner.slab.push(None);
                inner.slab.len() - 1
            }
        };
        // One pass: each unit is asked once, so what is counted is what is registered.
        let mut missing = 0;
        for &unit in units {
            if !is_present(unit) {
                let Inner { waiting, spare, .. } = &mut *inner;
                waiting
                    .entry(unit)
                    .or_insert_with(|| spare.pop().unwrap_or_default())
                    .push(index);
                missing += 1;
            }
        }
        if missing == 0 {
            inner.free.push(index);
            return Park::Ready(item);
        }
        inner.slab[index] = Some(Entry {
            missing,
            parked_at: Instant::now(),
            overdue: false,
            item,
        });
        inner.parked += 1;
        Park::Parked
    }

    /// Units `first..first + count` are present: moves every item that waited only for units
    /// reported so far to `out`. Reporting a unit twice is harmless.
    pub fn units_ready(&self, first: u32, count: u32, out: &mut Vec<Released<R>>) {
        let mut inner = self.lock();
        let end = first.saturating_add(count);
        for unit in first..end {
            if inner.parked == 0 {
                // Nothing waits (the common case for background units): no lookups.
                return;
            }
            let Some(mut indices) = inner.waiting.remove(&unit) else {
                continue;
            };
            for &index in &indices {
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
            indices.clear();
            inner.spare.push(indices);
        }
    }

    /// Closes the table for good and moves every parked item to `out` (shutdown: each must
    /// still be answered). Later parks return [`Park::Closed`].
    pub fn close(&self, out: &mut Vec<Released<R>>) {
        let mut inner = self.lock();
        inner.closed = true;
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

    /// Takes out every parked item for which `take(item, parked_at)` says so, to `out`, as if
    /// it had never parked: the units it waited for no longer count it.
    pub fn expire(&self, mut take: impl FnMut(&R, Instant) -> bool, out: &mut Vec<Released<R>>) {
        let mut inner = self.lock();
        if inner.parked == 0 {
            return;
        }
        let mut taken = Vec::new();
        for (index, slot) in inner.slab.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|e| take(&e.item, e.parked_at)) {
                let entry = slot.take().expect("checked above");
                taken.push(index);
                out.push(Released {
                    item: entry.item,
                    parked_at: entry.parked_at,
                });
            }
        }
        if taken.is_empty() {
            return;
        }
        inner.parked -= taken.len();
        let Inner {
            waiting,
            spare,
            free,
            ..
        } = &mut *inner;
        waiting.retain(|_, slots| {
            slots.retain(|i| !taken.contains(i));
            if slots.is_empty() {
                spare.push(std::mem::take(slots));
            }
            !slots.is_empty()
        });
        free.extend(taken);
    }

    /// The units the entry in slot `index` waits for, ascending.
    fn units_of(inner: &Inner<R>, index: usize) -> Vec<u32> {
        let mut units: Vec<u32> = inner
            .waiting
            .iter()
            .filter(|(_, slots)| slots.contains(&index))
            .map(|(&unit, _)| unit)
            .collect();
        units.sort_unstable();
        units
    }

    /// The longest waiting entry.
    pub fn oldest(&self) -> Option<Waiting> {
        let inner = self.lock();
        let (index, parked_at) = inner
            .slab
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e.parked_at)))
            .min_by_key(|&(_, at)| at)?;
        Some(Waiting {
            parked_at,
            units: Self::units_of(&inner, index),
        })
    }

    /// The `max` longest waits going on, oldest first, into `out` (cleared first), under the
    /// table's lock: for a live display, polled a few times a second off the read path.
    pub fn longest(&self, max: usize, out: &mut Vec<Waiting>) {
        out.clear();
        let inner = self.lock();
        let mut entries: Vec<(Instant, usize)> = inner
            .slab
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (e.parked_at, i)))
            .collect();
        entries.sort_unstable();
        for &(parked_at, index) in entries.iter().take(max) {
            out.push(Waiting {
                parked_at,
                units: Self::units_of(&inner, index),
            });
        }
    }

    /// Moves to `out` every entry parked for `age` or longer that no earlier call handed out,
    /// so that each long wait is told once, with what `of` says of its item (say, the byte
    /// range of a read), asked under the table's lock: keep `of` cheap.
    pub fn newly_overdue<T>(
        &self,
        age: Duration,
        now: Instant,
        of: impl Fn(&R) -> T,
        out: &mut Vec<(Waiting, T)>,
    ) {
        let mut inner = self.lock();
        let mut due = Vec::new();
        for (index, slot) in inner.slab.iter_mut().enumerate() {
            if let Some(e) = slot {
                if !e.overdue && now.saturating_duration_since(e.parked_at) >= age {
                    e.overdue = true;
                    due.push((index, e.parked_at, of(&e.item)));
                }
            }
        }
        for (index, parked_at, what) in due {
            let wait = Waiting {
                parked_at,
                units: Self::units_of(&inner, index),
            };
            out.push((wait, what));
        }
    }

    /// Calls `f` on every parked item, under the table's lock: keep `f` cheap (no I/O).
    pub fn each(&self, mut f: impl FnMut(&R)) {
        let inner = self.lock();
        for e in inner.slab.iter().flatten() {
            f(&e.item);
        }
    }

    /// Items parked now.
    pub fn len(&self) -> usize {
        self.lock().parked
    }

    /// Whether nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn items(out: &[Released<&'static str>]) -> Vec<&'static str> {
        out.iter().map(|r| r.item).collect()
    }

    #[test]
    fn reads_wait_for_all_their_units_and_share_fetches() {
        let present: HashSet<u32> = [2].into();
        let parked = ParkedReads::new();
        let is_present = |u| present.contains(&u);
        assert_eq!(parked.park(&[1, 2, 3], is_present, "a"), Park::Parked);
        assert_eq!(parked.park(&[3], is_present, "b"), Park::Parked);
        assert_eq!(parked.park(&[2], is_present, "c"), Park::Ready("c"));
        assert_eq!(parked.len(), 2);
        let mut out = Vec::new();
        parked.units_ready(3, 1, &mut out);
        assert_eq!(items(&out), vec!["b"]);
        out.clear();
        parked.units_ready(3, 1, &mut out);
        assert!(out.is_empty(), "a unit counts once");
        parked.units_ready(0, 2, &mut out);
        assert_eq!(items(&out), vec!["a"]);
        assert!(parked.is_empty());
    }

    #[test]
    fn close_returns_everything_and_refuses_later_parks() {
        let parked = ParkedReads::new();
        for i in 0..5u32 {
            assert_eq!(parked.park(&[i, i + 1], |_| false, i), Park::Parked);
        }
        let mut out = Vec::new();
        parked.close(&mut out);
        assert_eq!(out.len(), 5);
        assert!(parked.is_empty());
        out.clear();
        parked.units_ready(1, 1, &mut out);
        assert!(out.is_empty());
        assert_eq!(parked.park(&[9], |_| false, 9), Park::Closed(9));
    }

    #[test]
    fn slots_are_reused() {
        let parked = ParkedReads::new();
        let mut out = Vec::new();
        for round in 0..100u32 {
            assert_eq!(parked.park(&[round % 3], |_| false, round), Park::Parked);
            parked.units_ready(round % 3, 1, &mut out);
        }
        assert_eq!(out.len(), 100);
        let inner = parked.lock();
        assert_eq!(inner.slab.len(), 1);
        assert!(inner.waiting.is_empty());
        assert_eq!(inner.spare.len(), 1);
    }

    #[test]
    fn expired_items_leave_every_unit_they_waited_for() {
        let parked = ParkedReads::new();
        assert_eq!(parked.park(&[1, 2], |_| false, "a"), Park::Parked);
        assert_eq!(parked.park(&[2, 3], |_| false, "b"), Park::Parked);
        assert_eq!(parked.park(&[3], |_| false, "c"), Park::Parked);
        let mut out = Vec::new();
        parked.expire(|item, _| *item == "b", &mut out);
        assert_eq!(items(&out), vec!["b"]);
        assert_eq!(parked.len(), 2);
        out.clear();
        // The slot of "b" is reused; a stale registration would count "d" down wrongly.
        assert_eq!(parked.park(&[9], |_| false, "d"), Park::Parked);
        parked.units_ready(2, 2, &mut out);
        assert_eq!(items(&out), vec!["c"]);
        out.clear();
        parked.units_ready(1, 1, &mut out);
        assert_eq!(items(&out), vec!["a"]);
        assert_eq!(parked.len(), 1, "d still waits for unit 9");
        let inner = parked.lock();
        assert_eq!(inner.waiting.keys().collect::<Vec<_>>(), vec![&9]);
    }

    #[test]
    fn the_oldest_wait_and_each_overdue_wait_once() {
        let parked = ParkedReads::new();
        assert!(parked.oldest().is_none());
        assert_eq!(parked.park(&[5, 6, 7], |u| u == 6, "old"), Park::Parked);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(parked.park(&[1], |_| false, "new"), Park::Parked);
        let oldest = parked.oldest().unwrap();
        assert_eq!(oldest.units, vec![5, 7]);
        let mut out = Vec::new();
        let now = Instant::now();
        parked.newly_overdue(Duration::from_millis(10), now, |r| *r, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, oldest);
        out.clear();
        parked.newly_overdue(Duration::from_millis(10), now, |r| *r, &mut out);
        assert!(out.is_empty(), "told once");
        parked.newly_overdue(Duration::ZERO, now, |r| *r, &mut out);
        assert_eq!(
            out.iter()
                .map(|(w, r)| (w.units.clone(), *r))
                .collect::<Vec<_>>(),
            vec![(vec![1], "new")]
        );
    }

    #[test]
    fn the_longest_waits_oldest_first_and_bounded() {
        let parked = ParkedReads::new();
        let mut out = Vec::new();
        parked.longest(4, &mut out);
        assert!(out.is_empty());
        assert_eq!(parked.park(&[5, 6], |_| false, "a"), Park::Parked);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(parked.park(&[9], |_| false, "b"), Park::Parked);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(parked.park(&[1], |_| false, "c"), Park::Parked);
        parked.longest(2, &mut out);
        let units: Vec<_> = out.iter().map(|w| w.units.clone()).collect();
        assert_eq!(units, vec![vec![5, 6], vec![9]]);
        let mut released = Vec::new();
        parked.units_ready(9, 1, &mut released);
        parked.longest(4, &mut out);
        let units: Vec<_> = out.iter().map(|w| w.units.clone()).collect();
        assert_eq!(
            units,
            vec![vec![5, 6], vec![1]],
            "an answered read leaves the list"
        );
    }

    /// A unit landing concurrently with a park is never lost: every read comes back once.
    #[test]
    fn no_lost_wakeups_under_races() {
        for _ in 0..200 {
            let parked = Arc::new(ParkedReads::new());
            let have = Arc::new(AtomicBool::new(false));
            let (p2, h2) = (parked.clone(), have.clone());
            let lander = std::thread::spawn(move || {
                h2.store(true, Ordering::SeqCst);
                let mut out = Vec::new();
                p2.units_ready(7, 1, &mut out);
                out.len()
            });
            let back = parked.park(&[7], |_| have.load(Ordering::SeqCst), ());
            let released = lander.join().unwrap();
            assert_eq!(matches!(back, Park::Ready(())) as usize + released, 1);
        }
    }
}
