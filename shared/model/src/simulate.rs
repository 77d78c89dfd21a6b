//! An event-driven simulation of one client replaying a trace while it streams the image.
//!
//! The model (DESIGN §5): one link of fixed bandwidth fetches one piece at a time. The trace's
//! reads are issued in order, each after its recorded gap since the previous one (compute and
//! local I/O time; [`LinkParams::think_us`] more at each task boundary of a session). A read
//! whose pieces are all present completes at once; otherwise it stalls while its missing pieces
//! are fetched. A demanded piece preempts a prefetch in progress, whose partial progress is
//! kept, as a swarm engine interleaves 16 KiB requests; so prefetching can never delay a
//! demand by more than nothing, and a plan can only help. While no read waits, the link follows
//! the [`Scheduler`]'s plan, then (for strategies that fill the background) the remaining pieces
//! in index order: with a single client, rarest first has no rarity to go by.
//!
//! `full` is computed, not simulated: the whole image's transfer time, then the trace.
//!
//! Time is kept in f64 microseconds; the scheduler sees simulated time, as `vmt-run` would see
//! real time.

use serde::Serialize;

use crate::scheduler::{Scheduler, Strategy};
use vmt_formats::trace::{Op, Trace};

/// The link and replay settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// Link bandwidth in bits per second.
    pub bits_per_s: f64,
    /// Idle time inserted at each task boundary of a session trace (µs).
    pub think_us: u64,
}

/// How one replay went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Time from start to the last access completing (µs).
    pub completion_us: u64,
    /// Completion minus the trace's own duration (with think time): time spent waiting.
    pub stall_us: u64,
    /// Reads that had to wait.
    pub stalls: u64,
    /// Pieces fetched before the end.
    pub pieces_fetched: u64,
}

/// Whether record `i` starts a new task segment (think time goes before it).
fn boundary(trace: &Trace, i: usize) -> bool {
    i > 0 && trace.records[i].task != trace.records[i - 1].task
}

/// The trace's own duration with `think_us` at each task boundary.
pub fn local_duration_us(trace: &Trace, think_us: u64) -> u64 {
    let boundaries = (1..trace.records.len())
        .filter(|&i| boundary(trace, i))
        .count() as u64;
    trace.duration_us() + boundaries * think_us
}

struct Link<'a> {
    sched: &'a mut Scheduler,
    /// Bytes per µs.
    rate: f64,
    /// Time up to which the link has been simulated.
    t: f64,
    have: Vec<bool>,
    current: Option<(u32, f64)>,
    background: u32,
    fetched: u64,
    plan: Vec<u32>,
}

impl Link<'_> {
    /// Finishes piece `p` from `remaining` bytes at the current time.
    fn transfer(&mut self, p: u32, remaining: f64) {
        self.t += remaining / self.rate;
        self.have[p as usize] = true;
        self.fetched += 1;
    }

    /// The next piece to prefetch, if any.
    fn next_prefetch(&mut self) -> Option<u32> {
        let have = &self.have;
        self.sched
            .plan(&|p: u32| have[p as usize], 1, &mut self.plan);
        if let Some(&p) = self.plan.first() {
            return Some(p);
        }
        if self.sched.strategy().fills_background() {
            while (self.background as usize) < self.have.len() {
                let p = self.background;
                if !self.have[p as usize] {
                    return Some(p);
                }
                self.background += 1;
            }
        }
        None
    }

    /// Prefetches until `target`.
    fn advance(&mut self, target: f64) {
        while self.t < target {
            let (p, remaining) = match self.current {
                Some(c) => c,
                None => match self.next_prefetch() {
                    Some(p) => (p, self.sched.piece_bytes(p) as f64),
                    None => {
                        self.t = target;
                        return;
                    }
                },
            };
            let need = remaining / self.rate;
            if self.t + need <= target {
                self.current = None;
                self.transfer(p, remaining);
            } else {
                self.current = Some((p, remaining - (target - self.t) * self.rate));
                self.t = target;
            }
        }
    }

    /// Fetches the missing pieces of a read now, before anything else.
    fn demand(&mut self, offset: u64, len: u64) -> bool {
        let mut stalled = false;
        for p in self.sched.pieces_of(offset, len) {
            if self.have[p as usize] {
                continue;
            }
            stalled = true;
            match self.current {
                Some((c, remaining)) if c == p => {
                    self.current = None;
                    self.transfer(p, remaining);
                }
                _ => {
                    let bytes = self.sched.piece_bytes(p) as f64;
                    self.transfer(p, bytes);
                }
            }
        }
        stalled
    }
}

/// Replays `trace` against `sched` over `link`. `probe(i, sched)` is called after the
/// scheduler has seen read record `i` (to sample the belief).
pub fn simulate(
    trace: &Trace,
    sched: &mut Scheduler,
    link: &LinkParams,
    mut probe: impl FnMut(usize, &Scheduler),
) -> Outcome {
    let rate = link.bits_per_s / 8.0 / 1e6;
    let local = local_duration_us(trace, link.think_us);
    if sched.strategy() == Strategy::Full {
        let image = trace.image.size as f64 / rate;
        return Outcome {
            completion_us: (image + local as f64).round() as u64,
            stall_us: image.round() as u64,
            stalls: trace.records.iter().any(|r| r.op == Op::Read) as u64,
            pieces_fetched: sched.pieces() as u64,
        };
    }
    let pieces = sched.pieces() as usize;
    let mut link_state = Link {
        sched,
        rate,
        t: 0.0,
        have: vec![false; pieces],
        current: None,
        background: 0,
        fetched: 0,
        plan: Vec::with_capacity(1),
    };
    let mut now = 0f64;
    let mut prev_t = 0u64;
    let mut stalls = 0;
    for (i, r) in trace.records.iter().enumerate() {
        let mut gap = r.t_us.saturating_sub(prev_t) as f64;
        if boundary(trace, i) {
            gap += link.think_us as f64;
        }
        prev_t = r.t_us;
        now += gap;
        link_state.advance(now);
        if r.op != Op::Read {
            continue; // writes land in the local overlay
        }
        link_state.sched.on_read(r.offset, r.len as u64, now as u64);
        probe(i, link_state.sched);
        if link_state.demand(r.offset, r.len as u64) {
            stalls += 1;
            now = link_state.t;
        }
    }
    let completion = now.round() as u64;
    Outcome {
        completion_us: completion,
        stall_us: completion.saturating_sub(local),
        stalls,
        pieces_fetched: link_state.fetched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{first_access_pieces, SchedulerParams};
    use vmt_formats::image::ImageId;
    use vmt_formats::trace::{Record, TraceKind};

    fn trace(records: Vec<(u64, u64)>) -> Trace {
        Trace {
            image: ImageId::size_only(1 << 20),
            kind: TraceKind::Task,
            label: "t".into(),
            run: 1,
            start_unix_us: 0,
            recorder: "test".into(),
            tasks: vec!["t".into()],
            records: records
                .into_iter()
                .map(|(t_us, offset)| Record {
                    t_us,
                    op: Op::Read,
                    offset,
                    len: 4096,
                    task: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn demand_stalls_and_oracle_prefetches_in_the_gaps() {
        // 8 Mbit/s = 1 byte/µs; 64 KiB pieces take 65.536 ms each.
        let link = LinkParams {
            bits_per_s: 8e6,
            think_us: 0,
        };
        let t = trace(vec![(0, 0), (100_000, 65_536), (200_000, 131_072)]);
        let p = SchedulerParams::new(65_536);
        let mut demand = Scheduler::without_bundle(1 << 20, Strategy::Demand, p).unwrap();
        let d = simulate(&t, &mut demand, &link, |_, _| {});
        // Each read waits one piece: 3 × 65.536 ms of stall.
        assert_eq!(d.stalls, 3);
        assert_eq!(d.stall_us, 3 * 65_536);
        let order = first_access_pieces(&t, 65_536);
        let mut oracle = Scheduler::oracle(1 << 20, &order, p).unwrap();
        let o = simulate(&t, &mut oracle, &link, |_, _| {});
        // The first read still waits; the others were fetched during the gaps.
        assert_eq!(o.stalls, 1);
        assert_eq!(o.stall_us, 65_536);
        let mut full = Scheduler::without_bundle(1 << 20, Strategy::Full, p).unwrap();
        let f = simulate(&t, &mut full, &link, |_, _| {});
        assert_eq!(f.stall_us, 1 << 20);
    }

    #[test]
    fn demand_preempts_a_prefetch_in_progress() {
        let link = LinkParams {
            bits_per_s: 8e6,
            think_us: 0,
        };
        // The oracle order is wrong on purpose: piece 15 first, the read wants piece 0.
        let t = trace(vec![(10_000, 0)]);
        let p = SchedulerParams::new(65_536);
        let mut s = Scheduler::oracle(1 << 20, &[15, 0], p).unwrap();
        let o = simulate(&t, &mut s, &link, |_, _| {});
        assert_eq!(o.completion_us, 10_000 + 65_536);
    }
}
