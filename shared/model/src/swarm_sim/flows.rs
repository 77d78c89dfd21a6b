//! Flows between uplinks and downlinks, sharing them max-min fairly (progressive filling).
//!
//! Every flow crosses two resources: its uploader's uplink and its downloader's downlink. Rates
//! are recomputed for all flows at once by progressive filling: the resource whose remaining
//! capacity per unfrozen flow is smallest is the bottleneck of its flows, which are frozen at
//! that share; the others continue. Flows served first (the units a read waits for, when
//! uploaders send those before their other uploads) are filled first, on full capacities; the
//! others then share what they left. With two resources a flow this is O(F log R) per
//! recomputation, on buffers reused from one recomputation to the next. Between
//! recomputations a flow's bytes go at its rate, so its finish time is known; finishes are kept
//! in a heap (stale entries are skipped by generation).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A time or share as a totally ordered heap key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Key(pub f64);

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Index of a flow slot.
pub(crate) type FlowId = u32;

/// The flows in progress and the capacities they share.
pub(crate) struct Flows {
    /// Capacity per resource in bytes per µs: uplinks first, then downlinks.
    cap: Vec<f64>,
    ups: usize,
    up: Vec<u32>,
    down: Vec<u32>,
    rate: Vec<f64>,
    /// Served before every flow without it, at both ends (see [`Flows::recompute`]).
    first: Vec<bool>,
    /// Bytes still to go at `t0`.
    rem0: Vec<f64>,
    t0: Vec<f64>,
    gen: Vec<u32>,
    /// Position in `active`, or `u32::MAX` for a free slot.
    pos: Vec<u32>,
    active: Vec<FlowId>,
    free: Vec<FlowId>,
    finishes: BinaryHeap<Reverse<(Key, FlowId, u32)>>,
    /// Flows started or ended since the last recomputation.
    pub dirty: bool,
    // Scratch of the recomputation.
    avail: Vec<f64>,
    rem: Vec<f64>,
    cnt: Vec<u32>,
    start: Vec<u32>,
    adj: Vec<FlowId>,
    frozen: Vec<bool>,
    shares: BinaryHeap<Reverse<(Key, u32)>>,
}

impl Flows {
    /// Resources: `up_caps` (uplinks, bytes/µs) then `down_caps` (downlinks).
    pub fn new(up_caps: &[f64], down_caps: &[f64]) -> Flows {
        let cap: Vec<f64> = up_caps.iter().chain(down_caps).copied().collect();
        let r = cap.len();
        Flows {
            ups: up_caps.len(),
            cap,
            up: Vec::new(),
            down: Vec::new(),
            rate: Vec::new(),
            first: Vec::new(),
            rem0: Vec::new(),
            t0: Vec::new(),
            gen: Vec::new(),
            pos: Vec::new(),
            active: Vec::new(),
            free: Vec::new(),
            finishes: BinaryHeap::new(),
            dirty: false,
            avail: vec![0.0; r],
            rem: vec![0.0; r],
            cnt: vec![0; r],
            start: vec![0; r + 1],
            adj: Vec::new(),
            frozen: Vec::new(),
            shares: BinaryHeap::new(),
        }
    }

    /// Flows in progress.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Starts a flow of `bytes` from uplink `up` to downlink `down` at `now`, served `first`
    /// or not. It has no rate until the next [`Flows::recompute`].
    pub fn start(&mut self, up: u32, down: u32, bytes: f64, first: bool, now: f64) -> FlowId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.up.push(0);
                self.down.push(0);
                self.rate.push(0.0);
                self.first.push(false);
                self.rem0.push(0.0);
                self.t0.push(0.0);
                self.gen.push(0);
                self.pos.push(u32::MAX);
                self.frozen.push(false);
                (self.up.len() - 1) as FlowId
            }
        };
        let i = id as usize;
        self.up[i] = up;
        self.down[i] = self.ups as u32 + down;
        self.rate[i] = 0.0;
        self.first[i] = first;
        self.rem0[i] = bytes;
        self.t0[i] = now;
        self.gen[i] = self.gen[i].wrapping_add(1);
        self.pos[i] = self.active.len() as u32;
        self.active.push(id);
        self.dirty = true;
        id
    }

    /// Bytes still to go at `now`.
    fn remaining(&self, id: FlowId, now: f64) -> f64 {
        let i = id as usize;
        (self.rem0[i] - self.rate[i] * (now - self.t0[i])).max(0.0)
    }

    /// Ends flow `id` at `now` (finished or cancelled); returns the bytes it had delivered
    /// of `total`.
    pub fn end(&mut self, id: FlowId, total: f64, now: f64) -> f64 {
        let done = total - self.remaining(id, now);
        let i = id as usize;
        let p = self.pos[i] as usize;
        self.active.swap_remove(p);
        if let Some(&moved) = self.active.get(p) {
            self.pos[moved as usize] = p as u32;
        }
        self.pos[i] = u32::MAX;
        self.gen[i] = self.gen[i].wrapping_add(1);
        self.free.push(id);
        self.dirty = true;
        done.max(0.0)
    }

    /// The next flow to finish and when, if any flow has a rate.
    pub fn next_finish(&mut self) -> Option<(f64, FlowId)> {
        while let Some(&Reverse((Key(t), id, g))) = self.finishes.peek() {
            if self.gen[id as usize] == g {
                return Some((t, id));
            }
            self.finishes.pop();
        }
        None
    }

    /// Max-min fair rates for every flow at `now`, and their finish times: first among the
    /// flows served first, then among the others on what those left.
    pub fn recompute(&mut self, now: f64) {
        self.dirty = false;
        self.finishes.clear();
        for &id in &self.active {
            let i = id as usize;
            // Bytes so far at the old rate.
            self.rem0[i] = self.remaining(id, now);
            self.t0[i] = now;
            self.frozen[i] = false;
            self.rate[i] = 0.0;
        }
        self.avail.copy_from_slice(&self.cap);
        for first in [true, false] {
            self.fill(first);
        }
        for &id in &self.active {
            let i = id as usize;
            if self.rate[i] > 0.0 {
                let t = now + self.rem0[i] / self.rate[i];
                self.finishes.push(Reverse((Key(t), id, self.gen[i])));
            }
        }
    }

    /// Progressive filling of the flows whose `first` is `first` over the capacities
    /// `avail`, which it lowers by the rates it gives.
    fn fill(&mut self, first: bool) {
        let r = self.cap.len();
        self.cnt.iter_mut().for_each(|c| *c = 0);
        let mut flows = 0;
        for &id in &self.active {
            let i = id as usize;
            if self.first[i] == first {
                self.cnt[self.up[i] as usize] += 1;
                self.cnt[self.down[i] as usize] += 1;
                flows += 1;
            }
        }
        if flows == 0 {
            return;
        }
        // Flows by resource (counting sort).
        self.start[0] = 0;
        for k in 0..r {
            self.start[k + 1] = self.start[k] + self.cnt[k];
        }
        self.adj.resize(2 * flows, 0);
        let mut fill: Vec<u32> = std::mem::take(&mut self.start);
        // `fill` walks each resource's range; `start` is rebuilt from it afterwards.
        for &id in &self.active {
            let i = id as usize;
            if self.first[i] != first {
                continue;
            }
            for res in [self.up[i], self.down[i]] {
                self.adj[fill[res as usize] as usize] = id;
                fill[res as usize] += 1;
            }
        }
        // fill[k] is now the end of k's range = start of k+1: shift back.
        for k in (1..=r).rev() {
            fill[k] = fill[k - 1];
        }
        fill[0] = 0;
        self.start = fill;
        self.shares.clear();
        for k in 0..r {
            self.rem[k] = self.avail[k];
            if self.cnt[k] > 0 {
                self.shares
                    .push(Reverse((Key(self.rem[k] / self.cnt[k] as f64), k as u32)));
            }
        }
        while let Some(Reverse((Key(share), k))) = self.shares.pop() {
            let k = k as usize;
            if self.cnt[k] == 0 || self.rem[k] / self.cnt[k] as f64 != share {
                continue; // stale
            }
            for a in self.start[k]..self.start[k + 1] {
                let id = self.adj[a as usize] as usize;
                if self.frozen[id] {
                    continue;
                }
                self.frozen[id] = true;
                self.rate[id] = share;
                let (up, down) = (self.up[id] as usize, self.down[id] as usize);
                self.avail[up] = (self.avail[up] - share).max(0.0);
                self.avail[down] = (self.avail[down] - share).max(0.0);
                let other = if up == k { down } else { up };
                self.rem[other] = (self.rem[other] - share).max(0.0);
                self.cnt[other] -= 1;
                if self.cnt[other] > 0 {
                    self.shares.push(Reverse((
                        Key(self.rem[other] / self.cnt[other] as f64),
                        other as u32,
                    )));
                }
            }
            self.rem[k] = 0.0;
            self.cnt[k] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two flows from one uplink of 10 to downlinks of 2 and 100: the slow one is held at 2,
    /// the other gets the remaining 8 (max-min fair, not an even split).
    #[test]
    fn progressive_filling_gives_spare_capacity_to_the_unconstrained_flow() {
        let mut f = Flows::new(&[10.0], &[2.0, 100.0]);
        let a = f.start(0, 0, 20.0, false, 0.0);
        let b = f.start(0, 1, 80.0, false, 0.0);
        f.recompute(0.0);
        assert_eq!(f.rate[a as usize], 2.0);
        assert_eq!(f.rate[b as usize], 8.0);
        // Both finish at t = 10.
        assert_eq!(f.next_finish(), Some((10.0, a)));
        assert_eq!(f.end(a, 20.0, 10.0), 20.0);
        assert_eq!(f.next_finish(), Some((10.0, b)));
        assert_eq!(f.end(b, 80.0, 10.0), 80.0);
        assert_eq!(f.next_finish(), None);
        assert_eq!(f.len(), 0);
    }

    /// A flow served first takes what its links allow before the others share the rest:
    /// on an uplink of 10, one limited to 4 by its downlink leaves 6 to an ordinary flow; one
    /// limited by nothing takes all 10, and the ordinary flow starts when it ends.
    #[test]
    fn flows_served_first_fill_their_links_before_the_others() {
        let mut f = Flows::new(&[10.0], &[4.0, 100.0, 100.0]);
        let a = f.start(0, 0, 8.0, true, 0.0);
        let b = f.start(0, 1, 60.0, false, 0.0);
        f.recompute(0.0);
        assert_eq!((f.rate[a as usize], f.rate[b as usize]), (4.0, 6.0));
        assert_eq!(f.next_finish(), Some((2.0, a)));
        f.end(a, 8.0, 2.0);
        let c = f.start(0, 2, 30.0, true, 2.0);
        f.recompute(2.0);
        assert_eq!((f.rate[b as usize], f.rate[c as usize]), (0.0, 10.0));
        assert_eq!(f.next_finish(), Some((5.0, c)));
        f.end(c, 30.0, 5.0);
        f.recompute(5.0);
        // 48 of b's 60 bytes left at 10 per µs.
        assert_eq!(f.next_finish(), Some((9.8, b)));
    }

    /// A cancelled flow reports the bytes delivered so far, and the rest speed up.
    #[test]
    fn a_cancelled_flow_returns_its_share() {
        let mut f = Flows::new(&[10.0], &[100.0, 100.0]);
        let a = f.start(0, 0, 100.0, false, 0.0);
        let b = f.start(0, 1, 100.0, false, 0.0);
        f.recompute(0.0);
        assert_eq!(f.end(a, 100.0, 4.0), 20.0);
        f.recompute(4.0);
        assert_eq!(f.rate[b as usize], 10.0);
        // 80 bytes left at 10 per µs.
        assert_eq!(f.next_finish(), Some((12.0, b)));
    }
}
