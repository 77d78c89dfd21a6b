//! Turns reads into the engine's prefetch plan.
//!
//! Every FUSE read is fed to the shared [`Scheduler`] (the online belief) on the FUSE thread —
//! O(profiles), no allocation — and the plan is recomputed there and handed to the engine's
//! `set_plan`. A verified piece also advances the plan (the window slides), which an async task
//! does on the engine's piece events. Switches of the most believed profile are logged with
//! their time for the report.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use vmt_formats::trace::Op;
use vmt_fs::fusefs::AccessObserver;
use vmt_model::scheduler::Scheduler;
use vmt_swarm::Engine;

use super::report::{ProfileSwitch, RuntimeStats};

struct State {
    sched: Scheduler,
    plan: Vec<u32>,
    blocks: Vec<u32>,
    top: Option<usize>,
    switches: Vec<ProfileSwitch>,
}

/// See the module doc.
pub(crate) struct Planner {
    state: Mutex<State>,
    engine: Engine,
    stats: Arc<RuntimeStats>,
    names: Vec<String>,
    window: usize,
    start: Instant,
}

impl Planner {
    pub(crate) fn new(
        sched: Scheduler,
        names: Vec<String>,
        window: usize,
        engine: Engine,
        stats: Arc<RuntimeStats>,
    ) -> Planner {
        let planner = Planner {
            state: Mutex::new(State {
                sched,
                plan: Vec::with_capacity(window),
                blocks: Vec::new(),
                top: None,
                switches: Vec::new(),
            }),
            engine,
            stats,
            names,
            window,
            start: Instant::now(),
        };
        planner.replan();
        planner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn plan_into(&self, s: &mut State) {
        let engine = &self.engine;
        let torrent = engine.torrent();
        let State {
            sched,
            plan,
            blocks,
            ..
        } = s;
        sched.plan(
            &|p| torrent.piece(p).is_some_and(|v| engine.has_piece(v)),
            self.window,
            plan,
        );
        blocks.clear();
        for &p in plan.iter() {
            blocks.extend(engine.layout().piece_blocks(p));
        }
        engine.set_plan(blocks);
    }

    /// Recomputes the plan (after a piece landed).
    pub(crate) fn replan(&self) {
        let mut s = self.lock();
        self.plan_into(&mut s);
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

    fn on_read(&self, offset: u64, len: u32) {
        let t_us = self.start.elapsed().as_micros() as u64;
        let mut s = self.lock();
        s.sched.on_read(offset, len as u64, t_us);
        if let Some((top, belief)) = s.sched.belief().map(|b| b.top()) {
            if s.top != Some(top) {
                let from = s.top.and_then(|p| self.names.get(p).cloned());
                s.top = Some(top);
                s.switches.push(ProfileSwitch {
                    t_s: t_us as f64 / 1e6,
                    from,
                    to: self.names.get(top).cloned().unwrap_or_default(),
                    belief,
                });
            }
        }
        self.plan_into(&mut s);
    }
}

/// The planner as the filesystem's observer.
pub(crate) struct PlannerObserver(pub(crate) Arc<Planner>);

impl AccessObserver for PlannerObserver {
    fn observe(&self, op: Op, offset: u64, len: u32) {
        match op {
            Op::Read => self.0.on_read(offset, len),
            Op::Write => self.0.stats.record_write(),
        }
    }
}
