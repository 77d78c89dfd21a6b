//! An event-driven simulation of one client replaying a trace while it streams the image.
//!
//! The model (DESIGN §5, issue 11) works at the mount's granularity ([`Granularity`]): pieces
//! of P bytes fetched in units of U bytes, where U is the verified block (16 KiB) when the
//! torrent has a block-hash table and U = P when it does not. One link of fixed bandwidth
//! delivers one unit at a time. The trace's reads are issued in order, each after its recorded
//! gap since the previous one (compute and local I/O time; [`LinkParams::think_us`] more at each
//! task boundary of a session). A read whose units are all present completes at once; otherwise
//! it stalls while its missing units are fetched. What the link fetches, most urgent first:
//!
//! 1. **Demand.** The read's missing units, requested together; their bytes start one round
//!    trip ([`LinkParams::rtt_us`]) after the request, while the link keeps delivering what was
//!    requested before. Demanded units then preempt a prefetch in progress, whose partial
//!    progress is kept, as a swarm engine interleaves 16 KiB requests: prefetching never delays
//!    a demand beyond the round trip, and a plan can only help.
//! 2. **Plan.** While no read waits, the [`Scheduler`]'s plan, unit by unit. Prefetch requests
//!    are pipelined ahead of need, so they pay no round trip.
//! 3. **Background**, only for strategies that fill it ([`Strategy::fills_background`]): first
//!    the missing units of started pieces (some units present), oldest first, so they can be
//!    verified and seeded; then the remaining pieces in index order (with a single client,
//!    rarest first has no rarity to go by). `demand` and `oracle` fetch nothing beyond demanded
//!    and planned units.
//!
//! `full` is computed, not simulated: one round trip and the whole image's transfer, then the
//! trace.
//!
//! [`Outcome`] reports the bytes fetched by the end of the trace beside the bytes it read. Time
//! is kept in f64 microseconds; the scheduler sees simulated time, as `vmt-run` would see real
//! time.

use serde::Serialize;

use crate::granularity::Granularity;
use crate::scheduler::{Scheduler, Strategy};
use vmt_formats::trace::{Op, Trace};

/// Default [`LinkParams::rtt_us`]: what a demanded fetch cost beyond its bytes on the
/// benchmark's mounts (one seeder over a `tc tbf` veth link, no added delay): the median miss
/// of `demand` took 21.46 ms for a 256 KiB piece that takes 20.97 ms at 100 Mbit/s
/// (`datasets/results/full`, compile-1), so about 0.5 ms of request round trip, seeder read,
/// verification and FUSE reply. Over a WAN, pass the path's round-trip time instead.
pub const DEFAULT_RTT_US: u64 = 500;

/// The link and replay settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// Link bandwidth in bits per second.
    pub bits_per_s: f64,
    /// Idle time inserted at each task boundary of a session trace (µs).
    pub think_us: u64,
    /// Round trip paid by each demanded fetch (a read that misses) before its bytes arrive
    /// (µs). Default [`DEFAULT_RTT_US`]; 0 models requests as free, as the simulator did before
    /// fetches became blocks.
    pub rtt_us: u64,
}

impl LinkParams {
    /// A link of `bits_per_s` with no think time and the default round trip.
    pub fn new(bits_per_s: f64) -> LinkParams {
        LinkParams {
            bits_per_s,
            think_us: 0,
            rtt_us: DEFAULT_RTT_US,
        }
    }
}

/// How one replay went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Time from start to the last access completing (µs).
    pub completion_us: u64,
    /// Completion minus the trace's own duration (with think time): time spent waiting.
    pub stall_us: u64,
    /// Reads that had to wait: demanded fetches, each of which paid one round trip.
    pub stalls: u64,
    /// Bytes the trace read: its reads' lengths summed, clipped to the image (a re-read counts
    /// again, as the benchmark counts it).
    pub bytes_read: u64,
    /// Bytes the link delivered by the end of the trace: whole units, plus the part of a
    /// prefetch still in progress.
    pub bytes_fetched: u64,
    /// Units wholly fetched by the end of the trace.
    pub units_fetched: u64,
    /// Pieces all of whose units were present by the end of the trace: what the client could
    /// verify as pieces and seed.
    pub pieces_complete: u64,
    /// Bytes in those pieces.
    pub bytes_complete: u64,
}

impl Outcome {
    /// Bytes fetched per byte read; `None` for a trace that read nothing.
    pub fn fetched_per_read(&self) -> Option<f64> {
        (self.bytes_read > 0).then(|| self.bytes_fetched as f64 / self.bytes_read as f64)
    }

    /// The share of the bytes fetched that lie in complete pieces, which the client can verify
    /// and share with its peers (a swarm trades whole pieces); `None` when nothing was fetched.
    pub fn seedable_share(&self) -> Option<f64> {
        (self.bytes_fetched > 0).then(|| self.bytes_complete as f64 / self.bytes_fetched as f64)
    }
}

/// A simulation that cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimulateError {
    /// The scheduler plans in other units than the mount fetches.
    #[error(
        "the scheduler plans in {scheduler}-byte units, but the mount fetches {mount}-byte units"
    )]
    UnitMismatch {
        /// The scheduler's unit.
        scheduler: u32,
        /// The granularity's unit.
        mount: u32,
    },
}

/// Where the replay inserts think time and where it ends, as `vmt-record replay`, the bench's
/// mounts and the headless clients replay (vmt-appliance's `replay_on`): think time goes
/// before the first read of each task segment after the first (a write-only segment adds
/// none), and the replay ends with the last read (writes land in the local overlay and take
/// no time). Computed once per trace.
pub(crate) struct ReplayShape {
    /// Per record: think time goes before it.
    pub think_before: Vec<bool>,
    /// The last read, if any; records after it are not replayed.
    pub last_read: Option<usize>,
}

impl ReplayShape {
    pub fn of(trace: &Trace) -> ReplayShape {
        let mut think_before = vec![false; trace.records.len()];
        let mut due = false;
        let mut last_read = None;
        for (i, r) in trace.records.iter().enumerate() {
            due |= i > 0 && r.task != trace.records[i - 1].task;
            if r.op == Op::Read {
                think_before[i] = std::mem::take(&mut due);
                last_read = Some(i);
            }
        }
        ReplayShape {
            think_before,
            last_read,
        }
    }

    /// Records replayed: up to the last read.
    pub fn replayed(&self) -> usize {
        self.last_read.map_or(0, |i| i + 1)
    }

    /// The recorded time of the last read (µs): where the replay ends, before think time.
    pub fn end_us(&self, trace: &Trace) -> u64 {
        self.last_read.map_or(0, |i| trace.records[i].t_us)
    }

    /// Think time inserted over the whole replay.
    pub fn think_us(&self, think_us: u64) -> u64 {
        self.think_before.iter().filter(|&&b| b).count() as u64 * think_us
    }
}

/// The trace's own duration as replayed (to its last read) with `think_us` before each task
/// segment that reads, after the first ([`ReplayShape`]).
pub fn local_duration_us(trace: &Trace, think_us: u64) -> u64 {
    let shape = ReplayShape::of(trace);
    shape.end_us(trace) + shape.think_us(think_us)
}

/// The bytes `trace` reads, clipped to the image ([`Outcome::bytes_read`]).
pub fn bytes_read(trace: &Trace) -> u64 {
    trace
        .records
        .iter()
        .filter(|r| r.op == Op::Read)
        .map(|r| {
            let end = r.offset.saturating_add(r.len as u64).min(trace.image.size);
            end.saturating_sub(r.offset)
        })
        .sum()
}

struct Link<'a> {
    sched: &'a mut Scheduler,
    /// Bytes per µs.
    rate: f64,
    /// Round trip of a demanded fetch (µs).
    rtt: f64,
    /// Time up to which the link has been simulated.
    t: f64,
    /// Per unit: present.
    have: Vec<bool>,
    units_per_piece: u32,
    /// Per piece: units present.
    piece_have: Vec<u32>,
    /// Pieces in the order their first unit landed, while they may be incomplete.
    started: Vec<u32>,
    /// Pieces of `started` before this index are complete.
    started_next: usize,
    /// A prefetch in progress: unit and bytes still to come.
    current: Option<(u32, f64)>,
    /// Units before this are present (the index-order background's cursor).
    background: u32,
    units_fetched: u64,
    bytes_fetched: u64,
    plan: Vec<u32>,
}

impl Link<'_> {
    /// The units of `piece`.
    fn piece_units(&self, piece: u32) -> std::ops::Range<u32> {
        let first = piece * self.units_per_piece;
        first..(first + self.units_per_piece).min(self.sched.units())
    }

    fn piece_complete(&self, piece: u32) -> bool {
        self.piece_have[piece as usize] as usize >= self.piece_units(piece).len()
    }

    /// Finishes unit `u` from `remaining` bytes at the current time.
    fn transfer(&mut self, u: u32, remaining: f64) {
        self.t += remaining / self.rate;
        self.have[u as usize] = true;
        self.units_fetched += 1;
        self.bytes_fetched += self.sched.unit_bytes(u);
        let piece = u / self.units_per_piece;
        self.piece_have[piece as usize] += 1;
        if self.piece_have[piece as usize] == 1 && !self.piece_complete(piece) {
            self.started.push(piece);
        }
    }

    /// The next unit to prefetch, if any.
    fn next_prefetch(&mut self) -> Option<u32> {
        let have = &self.have;
        self.sched
            .plan(&|u: u32| have[u as usize], 1, &mut self.plan);
        if let Some(&u) = self.plan.first() {
            return Some(u);
        }
        if !self.sched.strategy().fills_background() {
            return None;
        }
        while let Some(&piece) = self.started.get(self.started_next) {
            if let Some(u) = self.piece_units(piece).find(|u| !self.have[*u as usize]) {
                return Some(u);
            }
            self.started_next += 1; // complete
        }
        while (self.background as usize) < self.have.len() {
            let u = self.background;
            if !self.have[u as usize] {
                return Some(u);
            }
            self.background += 1;
        }
        None
    }

    /// Prefetches until `target`.
    fn advance(&mut self, target: f64) {
        while self.t < target {
            let (u, remaining) = match self.current {
                Some(c) => c,
                None => match self.next_prefetch() {
                    Some(u) => (u, self.sched.unit_bytes(u) as f64),
                    None => {
                        self.t = target;
                        return;
                    }
                },
            };
            let need = remaining / self.rate;
            if self.t + need <= target {
                self.current = None;
                self.transfer(u, remaining);
            } else {
                self.current = Some((u, remaining - (target - self.t) * self.rate));
                self.t = target;
            }
        }
    }

    /// Fetches the missing units of a read now, before anything else. Whether it waited. (A
    /// read whose units all arrive by prefetch during the round trip still waits the whole
    /// round trip: a slight overestimate.)
    fn demand(&mut self, offset: u64, len: u64) -> bool {
        let units = self.sched.units_of(offset, len);
        if units.clone().all(|u| self.have[u as usize]) {
            return false;
        }
        // The request's round trip: what was requested before keeps arriving meanwhile.
        self.advance(self.t + self.rtt);
        for u in units {
            if self.have[u as usize] {
                continue;
            }
            match self.current {
                Some((c, remaining)) if c == u => {
                    self.current = None;
                    self.transfer(u, remaining);
                }
                _ => {
                    let bytes = self.sched.unit_bytes(u) as f64;
                    self.transfer(u, bytes);
                }
            }
        }
        true
    }
}

/// Replays `trace` against `sched` over `link`, fetching at `granularity` (the scheduler must
/// plan in its units: `SchedulerParams::new(granularity.unit())`). `probe(i, sched)` is called
/// after the scheduler has seen read record `i` (to sample the belief).
pub fn simulate(
    trace: &Trace,
    sched: &mut Scheduler,
    link: &LinkParams,
    granularity: &Granularity,
    mut probe: impl FnMut(usize, &Scheduler),
) -> Result<Outcome, SimulateError> {
    if sched.unit_size() != granularity.unit() {
        return Err(SimulateError::UnitMismatch {
            scheduler: sched.unit_size(),
            mount: granularity.unit(),
        });
    }
    let rate = link.bits_per_s / 8.0 / 1e6;
    let rtt = link.rtt_us as f64;
    let local = local_duration_us(trace, link.think_us);
    let read = bytes_read(trace);
    let units_per_piece = granularity.units_per_piece();
    let pieces = sched.units().div_ceil(units_per_piece);
    if sched.strategy() == Strategy::Full {
        let image = rtt + trace.image.size as f64 / rate;
        return Ok(Outcome {
            completion_us: (image + local as f64).round() as u64,
            stall_us: image.round() as u64,
            stalls: trace.records.iter().any(|r| r.op == Op::Read) as u64,
            bytes_read: read,
            bytes_fetched: trace.image.size,
            units_fetched: sched.units() as u64,
            pieces_complete: pieces as u64,
            bytes_complete: trace.image.size,
        });
    }
    let units = sched.units() as usize;
    let mut link_state = Link {
        sched,
        rate,
        rtt,
        t: 0.0,
        have: vec![false; units],
        units_per_piece,
        piece_have: vec![0; pieces as usize],
        started: Vec::new(),
        started_next: 0,
        current: None,
        background: 0,
        units_fetched: 0,
        bytes_fetched: 0,
        plan: Vec::with_capacity(1),
    };
    let mut now = 0f64;
    let mut prev_t = 0u64;
    let mut stalls = 0;
    let shape = ReplayShape::of(trace);
    for (i, r) in trace.records[..shape.replayed()].iter().enumerate() {
        let mut gap = r.t_us.saturating_sub(prev_t) as f64;
        if shape.think_before[i] {
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
    let partial = link_state.current.map_or(0, |(u, remaining)| {
        (link_state.sched.unit_bytes(u) as f64 - remaining).max(0.0) as u64
    });
    let (mut pieces_complete, mut bytes_complete) = (0, 0);
    for p in (0..pieces).filter(|p| link_state.piece_complete(*p)) {
        pieces_complete += 1;
        bytes_complete += link_state
            .piece_units(p)
            .map(|u| link_state.sched.unit_bytes(u))
            .sum::<u64>();
    }
    Ok(Outcome {
        completion_us: completion,
        stall_us: completion.saturating_sub(local),
        stalls,
        bytes_read: read,
        bytes_fetched: link_state.bytes_fetched + partial,
        units_fetched: link_state.units_fetched,
        pieces_complete,
        bytes_complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{first_access_units, SchedulerParams};
    use vmt_formats::image::ImageId;
    use vmt_formats::trace::{Record, TraceKind};

    const KIB: u64 = 1024;

    /// A trace of 4 KiB reads `(t_us, offset)` on a 1 MiB image.
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

    /// 8 Mbit/s = 1 byte/µs, so bytes and µs are the same numbers.
    fn link(rtt_us: u64) -> LinkParams {
        LinkParams {
            bits_per_s: 8e6,
            think_us: 0,
            rtt_us,
        }
    }

    fn run(t: &Trace, strategy: Strategy, g: Granularity, rtt_us: u64) -> Outcome {
        let p = SchedulerParams::new(g.unit());
        let mut s = match strategy {
            Strategy::Oracle => {
                Scheduler::oracle(t.image.size, &first_access_units(t, g.unit()), p).unwrap()
            }
            _ => Scheduler::without_bundle(t.image.size, strategy, p).unwrap(),
        };
        simulate(t, &mut s, &link(rtt_us), &g, |_, _| {}).unwrap()
    }

    #[test]
    fn demand_stalls_and_oracle_prefetches_in_the_gaps() {
        // 64 KiB pieces take 65.536 ms each.
        let t = trace(vec![(0, 0), (100_000, 65_536), (200_000, 131_072)]);
        let g = Granularity::pieces(65_536).unwrap();
        let d = run(&t, Strategy::Demand, g, 0);
        // Each read waits one piece: 3 × 65.536 ms of stall.
        assert_eq!(d.stalls, 3);
        assert_eq!(d.stall_us, 3 * 65_536);
        let o = run(&t, Strategy::Oracle, g, 0);
        // The first read still waits; the others were fetched during the gaps.
        assert_eq!(o.stalls, 1);
        assert_eq!(o.stall_us, 65_536);
        let f = run(&t, Strategy::Full, g, 0);
        assert_eq!(f.stall_us, 1 << 20);
        assert_eq!(f.bytes_fetched, 1 << 20);
    }

    #[test]
    fn demand_preempts_a_prefetch_in_progress() {
        // The oracle order is wrong on purpose: piece 15 first, the read wants piece 0.
        let t = trace(vec![(10_000, 0)]);
        let g = Granularity::pieces(65_536).unwrap();
        let mut s = Scheduler::oracle(1 << 20, &[15, 0], SchedulerParams::new(65_536)).unwrap();
        let o = simulate(&t, &mut s, &link(0), &g, |_, _| {}).unwrap();
        assert_eq!(o.completion_us, 10_000 + 65_536);
        // Piece 15 was 10 ms in when the read came, and stays so: 10,000 bytes of it count.
        assert_eq!(o.bytes_fetched, 65_536 + 10_000);
        assert_eq!(o.units_fetched, 1);
    }

    /// Issue 11: with verified blocks a read waits for its 16 KiB block, not its piece.
    #[test]
    fn a_read_with_verified_blocks_fetches_its_block_not_its_piece() {
        let t = trace(vec![(0, 40 * KIB)]);
        let blocks = run(
            &t,
            Strategy::Demand,
            Granularity::blocks(256 << 10).unwrap(),
            0,
        );
        assert_eq!(blocks.bytes_read, 4096);
        assert_eq!(blocks.bytes_fetched, 16 * KIB);
        assert_eq!(blocks.units_fetched, 1);
        assert_eq!(blocks.pieces_complete, 0);
        assert_eq!(blocks.stall_us, 16 * KIB);
        assert_eq!(blocks.fetched_per_read(), Some(4.0));
        let pieces = run(
            &t,
            Strategy::Demand,
            Granularity::pieces(256 << 10).unwrap(),
            0,
        );
        assert_eq!(pieces.bytes_fetched, 256 * KIB);
        assert_eq!(pieces.pieces_complete, 1);
        assert_eq!(pieces.bytes_complete, 256 * KIB);
        assert_eq!(pieces.seedable_share(), Some(1.0));
        assert_eq!(blocks.seedable_share(), Some(0.0));
        assert_eq!(pieces.stall_us, 256 * KIB);
        // A read across a block boundary waits for both blocks.
        let t = trace(vec![(0, 14 * KIB)]);
        let two = run(
            &t,
            Strategy::Demand,
            Granularity::blocks(256 << 10).unwrap(),
            0,
        );
        assert_eq!(two.bytes_fetched, 32 * KIB);
    }

    /// The background finishes a touched piece before it starts untouched ones.
    #[test]
    fn background_completes_started_pieces_first() {
        let g = Granularity::blocks(256 << 10).unwrap();
        // A read in piece 2 (unit 32); later the last block of piece 2 (unit 47) and a block
        // of piece 0 (unit 5).
        let piece2 = 512 * KIB;
        let t = trace(vec![
            (0, piece2),
            (250_000, piece2 + 15 * 16 * KIB),
            (250_001, 5 * 16 * KIB),
        ]);
        let o = run(&t, Strategy::Stream, g, 0);
        // Unit 32 at 16,384 µs; units 33-47 by 262,144 µs, before the second read at 266,384:
        // a hit. Index order then starts at unit 0, and the third read waits for unit 5.
        assert_eq!(o.stalls, 2);
        assert_eq!(o.stall_us, 2 * 16 * KIB);
        assert_eq!(o.completion_us, 16_384 + 250_001 + 16_384);
        assert!(o.pieces_complete >= 1);
        assert_eq!(o.bytes_complete, o.pieces_complete * 256 * KIB);
        // Without a background, the second read misses too.
        let d = run(&t, Strategy::Demand, g, 0);
        assert_eq!(d.stalls, 3);
        assert_eq!(d.bytes_fetched, 3 * 16 * KIB);
        assert_eq!(d.pieces_complete, 0);
    }

    fn synthetic_run() -> Trace {
        use crate::synth::{SynthImage, SynthParams};
        let img = SynthImage::new(SynthParams::new(16 << 20, 3).compute_us(30_000));
        img.task_run(1, 1, 7)
    }

    /// `demand` fetches exactly the units reads touch, `oracle` nothing beyond its plan.
    #[test]
    fn demand_and_oracle_fetch_nothing_beyond_demanded_and_planned_units() {
        let t = synthetic_run();
        for g in [
            Granularity::blocks(256 << 10).unwrap(),
            Granularity::pieces(64 << 10).unwrap(),
        ] {
            let touched = first_access_units(&t, g.unit()).len() as u64;
            let d = run(&t, Strategy::Demand, g, 500);
            assert_eq!(d.units_fetched, touched);
            assert_eq!(d.bytes_fetched, touched * g.unit() as u64);
            let o = run(&t, Strategy::Oracle, g, 500);
            assert!(o.bytes_fetched <= touched * g.unit() as u64, "{o:?}");
            assert!(o.stall_us <= d.stall_us);
            // A strategy that fills the background fetches more in the same time.
            let s = run(&t, Strategy::Stream, g, 500);
            assert!(s.bytes_fetched > d.bytes_fetched);
        }
    }

    /// Each demanded fetch pays one round trip; with no prefetch the link idles meanwhile.
    #[test]
    fn a_round_trip_is_paid_per_demanded_fetch() {
        let t = synthetic_run();
        let g = Granularity::blocks(256 << 10).unwrap();
        let free = run(&t, Strategy::Demand, g, 0);
        let rtt = run(&t, Strategy::Demand, g, 2_000);
        assert!(free.stalls > 10);
        assert_eq!(rtt.stalls, free.stalls);
        assert_eq!(rtt.stall_us, free.stall_us + 2_000 * free.stalls);
        assert_eq!(rtt.bytes_fetched, free.bytes_fetched);
    }

    /// At 1 byte/µs a link that never idles has fetched as many bytes as µs went by, round
    /// trips or not: bytes are counted exactly, partial prefetches included.
    #[test]
    fn bytes_fetched_are_accounted_exactly() {
        let t = synthetic_run();
        for rtt in [0, 700] {
            for g in [
                Granularity::blocks(1 << 20).unwrap(),
                Granularity::pieces(32 << 10).unwrap(),
            ] {
                let o = run(&t, Strategy::Stream, g, rtt);
                assert!(
                    o.bytes_fetched < t.image.size,
                    "the image was never all fetched"
                );
                assert_eq!(o.bytes_fetched, o.completion_us, "{g:?} rtt {rtt}");
            }
        }
    }

    #[test]
    fn a_scheduler_in_other_units_is_refused() {
        let t = trace(vec![(0, 0)]);
        let mut s =
            Scheduler::without_bundle(1 << 20, Strategy::Demand, SchedulerParams::new(65_536))
                .unwrap();
        let g = Granularity::blocks(65_536).unwrap();
        assert_eq!(
            simulate(&t, &mut s, &link(0), &g, |_, _| {}).unwrap_err(),
            SimulateError::UnitMismatch {
                scheduler: 65_536,
                mount: 16_384
            }
        );
    }
}
