//! Turns reads into the engine's prefetch plan, off the FUSE threads.
//!
//! The filesystem's observer ([`ReadLog`]) only stamps each read and sends it down a channel:
//! on the FUSE thread that is a clock read and a queue push, no lock. The planner task
//! ([`run`]) drains the channel, feeds each read to the [`Scheduler`]'s online belief
//! (O(profiles), no allocation), and hands the new plan, in blocks, to the engine; a block
//! arriving also makes it replan, so the window slides. Bursts are coalesced: one replan per
//! wake-up, however many reads or blocks came. Switches of the most believed profile are
//! logged with their time for the report.
//!
//! Lock order: the planner's state, then (inside `Engine::set_plan`) the engine's picker. The
//! status snapshot takes only the planner's state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;
use vmt_formats::trace::Op;
use vmt_fs::AccessObserver;
use vmt_model::scheduler::Scheduler;
use vmt_swarm::Engine;

use crate::report::ProfileSwitch;

/// A read as the filesystem saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Observed {
    t_us: u64,
    offset: u64,
    len: u32,
}

/// The filesystem's observer: see the module doc.
pub(crate) struct ReadLog {
    reads: UnboundedSender<Observed>,
    start: Instant,
    writes: Arc<AtomicU64>,
}

impl ReadLog {
    pub(crate) fn new(reads: UnboundedSender<Observed>, start: Instant) -> ReadLog {
        ReadLog {
            reads,
            start,
            writes: Arc::default(),
        }
    }

    /// The count of writes, shared with the status.
    pub(crate) fn writes(&self) -> Arc<AtomicU64> {
        self.writes.clone()
    }
}

impl AccessObserver for ReadLog {
    fn observe(&self, op: Op, offset: u64, len: u32) {
        match op {
            Op::Read => {
                let t_us = self.start.elapsed().as_micros() as u64;
                // After shutdown nobody listens, and the read needs no plan.
                let _ = self.reads.send(Observed { t_us, offset, len });
            }
            Op::Write => {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct State {
    sched: Scheduler,
    plan: Vec<u32>,
    top: Option<usize>,
    switches: Vec<ProfileSwitch>,
}

/// The belief and the plan; see the module doc.
pub(crate) struct Planner {
    state: Mutex<State>,
    engine: Engine,
    names: Vec<String>,
    /// Blocks in the plan handed to the engine at a time.
    window: usize,
}

impl Planner {
    /// A planner of `window` blocks; `sched` plans in the engine's blocks.
    pub(crate) fn new(
        sched: Scheduler,
        names: Vec<String>,
        window: usize,
        engine: Engine,
    ) -> Planner {
        let planner = Planner {
            state: Mutex::new(State {
                sched,
                plan: Vec::with_capacity(window),
                top: None,
                switches: Vec::new(),
            }),
            engine,
            names,
            window,
        };
        planner.replan(&mut planner.lock());
        planner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn replan(&self, s: &mut State) {
        let engine = &self.engine;
        let State { sched, plan, .. } = s;
        sched.plan(&|b| engine.has_block(b), self.window, plan);
        engine.set_plan(plan);
    }

    fn observe(&self, s: &mut State, r: Observed) {
        s.sched.on_read(r.offset, r.len as u64, r.t_us);
        if let Some((top, belief)) = s.sched.belief().map(|b| b.top()) {
            if s.top != Some(top) {
                let from = s.top.and_then(|p| self.names.get(p).cloned());
                s.top = Some(top);
                s.switches.push(ProfileSwitch {
                    t_s: r.t_us as f64 / 1e6,
                    from,
                    to: self.names.get(top).cloned().unwrap_or_default(),
                    belief,
                });
            }
        }
    }

    /// The most believed profile and its belief.
    pub(crate) fn current(&self) -> Option<(String, f64)> {
        let s = self.lock();
        let (p, b) = s.sched.belief()?.top();
        Some((self.names.get(p).cloned().unwrap_or_default(), b))
    }

    /// Profile switches so far.
    pub(crate) fn switches(&self) -> Vec<ProfileSwitch> {
        self.lock().switches.clone()
    }

    /// The profiles' names, in the belief's order.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The belief over the profiles into `out` (left empty when the strategy has none), for
    /// the live page's history: a copy under the state's lock, no allocation once sized.
    pub(crate) fn belief_into(&self, out: &mut Vec<f64>) {
        out.clear();
        if let Some(b) = self.lock().sched.belief() {
            out.extend_from_slice(b.probs());
        }
    }
}

/// The planner task: see the module doc. Ends when the read log is dropped.
pub(crate) async fn run(
    planner: Arc<Planner>,
    mut reads: UnboundedReceiver<Observed>,
    arrivals: Arc<Notify>,
) {
    loop {
        let first = tokio::select! {
            r = reads.recv() => match r {
                Some(r) => Some(r),
                None => return,
            },
            () = arrivals.notified() => None,
        };
        let mut s = planner.lock();
        if let Some(r) = first {
            planner.observe(&mut s, r);
        }
        while let Ok(r) = reads.try_recv() {
            planner.observe(&mut s, r);
        }
        planner.replan(&mut s);
    }
}
