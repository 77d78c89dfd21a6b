//! The hedged plan: fetch units in order of expected benefit under the belief.
//!
//! While the belief is unsure (after a mount, the prior over the first task; after a boundary,
//! the predicted next task), a belief-weighted merge of the profiles' orders spreads the link
//! over every candidate and fetches a unit that all of them need as late as the least likely
//! candidate would. Instead, each unit `u` any profile reads gets a value:
//!
//! - `q(u) = Σ_p w_p π_p(u) / W`: the probability that the current task reads `u`, where `w` is
//!   the belief (profiles under `min_weight` left out, `W = Σ w`) and `π_p(u)` the share of
//!   profile `p`'s runs that read it;
//! - `U(u) = Σ_p w_p π_p(u) / (t_p(u) + L) / W`: its expected urgency, `t_p(u)` being its mean
//!   first-access time in task `p` and `L` the lead (`SchedulerParams::lead_us`): a unit
//!   needed at once is worth a unit of the stall it would cause, one needed later proportionally
//!   less, as the link has until then to bring it (the merge planner's `(t + L) / w` key is the
//!   same urgency for one profile at a time);
//! - `D(u) = Σ_p w_p (π_p(u) - q(u))² / W`: how much the likely profiles disagree on reading
//!   `u` (0 when all or none of them read it, at most 1/4 for two even candidates of which one
//!   reads it). Reading such a unit is what moves the belief, so having it early makes the read
//!   come early and the belief settle sooner;
//! - the benefit `B(u) = U(u) · (1 + 4β · D(u))`, `β` = `SchedulerParams::bonus`.
//!
//! **Objective.** Units cost the same link time, and the plan is recomputed after every read
//! and every unit (the belief may change at any of them), so what matters is every prefix of
//! the plan: the order by decreasing `B` maximizes, for every prefix length `n` at once, the
//! total benefit of the first `n` units fetched, i.e. the expected urgency served (plus the
//! discrimination bonus) by whatever part of the plan the link gets through before the next
//! replan. A unit shared by the top candidates sums their urgency, so it comes before a unit
//! only one of them reads at the same time; before the first read the plan is what every start
//! reads first (common blocks, weighted by the prior), then the first units of each likely
//! task.
//!
//! When every unit of the current task's candidates is present or planned, units of the tasks
//! predicted to come next (the belief shifted through the transition matrix) follow, ranked by
//! their urgency under that prediction: the pause between tasks fetches the likely next one.
//!
//! **Cost.** A ranking is one pass over the units the profiles read (stored per unit, with each
//! profile's share and time, at construction) and a sort of the missing ones, into buffers sized
//! at construction: no allocation. It is redone only when the belief has moved by more than
//! `SchedulerParams::rerank` (L1) since the last one; between rankings a plan walks the ranked
//! list from a cursor that only moves past present units, O(window) amortised.

use std::ops::Range;
use std::sync::Arc;

use crate::markov::{Belief, OnlineModel};
use crate::profile::Bundle;

/// The scheduler's settings the ranking uses (see `SchedulerParams`, which fills them).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    pub(crate) min_weight: f64,
    pub(crate) lead_us: u64,
    pub(crate) bonus: f64,
    pub(crate) rerank: f64,
}

/// What one profile contributes to one unit.
#[derive(Clone, Copy, Debug)]
struct Contribution {
    profile: u32,
    /// Share of the profile's runs that read the unit (its most read block).
    share: f32,
    /// Mean first-access time of the unit in the task (its earliest block), µs.
    t_us: f32,
}

/// A ranked unit: tier 0 is the current task, tier 1 the predicted next one.
#[derive(Clone, Copy, Debug)]
struct Ranked {
    tier: u8,
    score: f64,
    unit: u32,
}

/// The per-unit table of a bundle's profiles: immutable, shared by clones of a ranking.
#[derive(Debug)]
struct Table {
    /// Units any profile reads, ascending, and where each one's contributions start.
    units: Vec<u32>,
    starts: Vec<u32>,
    contributions: Vec<Contribution>,
}

/// The benefit ranking of a scheduler (see the module doc).
#[derive(Clone, Debug)]
pub(crate) struct Ranking {
    table: Arc<Table>,
    ranked: Vec<Ranked>,
    cursor: usize,
    /// The weights of the last ranking (`None` before the first).
    ranked_for: Vec<f64>,
    ranked_once: bool,
    weights: Vec<f64>,
    next: Vec<f64>,
}

impl Ranking {
    /// The per-unit table of `bundle`'s profiles; `units_of(block)` are the fetch units a
    /// block lies in.
    pub(crate) fn new(bundle: &Bundle, units_of: impl Fn(u32) -> Range<u32>) -> Ranking {
        let k = bundle.profiles.len();
        let mut all: Vec<(u32, u32, f32, f32)> = Vec::new();
        for (p, profile) in bundle.profiles.iter().enumerate() {
            for b in &profile.blocks {
                for u in units_of(b.block) {
                    all.push((u, p as u32, b.prob, b.mean_us as f32));
                }
            }
        }
        all.sort_unstable_by_key(|a| (a.0, a.1));
        let mut units = Vec::new();
        let mut starts = Vec::new();
        let mut contributions: Vec<Contribution> = Vec::new();
        let mut last: Option<(u32, u32)> = None;
        for (u, p, share, t) in all {
            if last.is_some_and(|(lu, _)| lu == u) {
                if last == Some((u, p)) {
                    // Another block of the same profile in this unit.
                    let c = contributions.last_mut().expect("pushed with `last`");
                    c.share = c.share.max(share);
                    c.t_us = c.t_us.min(t);
                    continue;
                }
            } else {
                units.push(u);
                starts.push(contributions.len() as u32);
            }
            contributions.push(Contribution {
                profile: p,
                share,
                t_us: t,
            });
            last = Some((u, p));
        }
        starts.push(contributions.len() as u32);
        Ranking {
            ranked: Vec::with_capacity(units.len()),
            table: Arc::new(Table {
                units,
                starts,
                contributions,
            }),
            cursor: 0,
            ranked_for: vec![0.0; k],
            ranked_once: false,
            weights: vec![0.0; k],
            next: vec![0.0; k],
        }
    }

    /// Writes up to `window` missing units, best first, into `out` (see the module doc).
    pub(crate) fn plan(
        &mut self,
        belief: &Belief,
        model: &OnlineModel,
        params: &Tuning,
        have: &impl Fn(u32) -> bool,
        window: usize,
        out: &mut Vec<u32>,
    ) {
        let min = params.min_weight;
        for (w, p) in self.weights.iter_mut().zip(belief.probs()) {
            *w = if *p >= min { *p } else { 0.0 };
        }
        let moved: f64 = self
            .weights
            .iter()
            .zip(&self.ranked_for)
            .map(|(a, b)| (a - b).abs())
            .sum();
        if !self.ranked_once || moved > params.rerank {
            belief.predict_next(model, &mut self.next);
            for n in self.next.iter_mut() {
                if *n < min {
                    *n = 0.0;
                }
            }
            self.rank(params, have);
        }
        while self.cursor < self.ranked.len() && have(self.ranked[self.cursor].unit) {
            self.cursor += 1;
        }
        for r in &self.ranked[self.cursor..] {
            if out.len() >= window {
                break;
            }
            if !have(r.unit) {
                out.push(r.unit);
            }
        }
    }

    /// Scores every missing unit under the current weights and sorts them.
    fn rank(&mut self, params: &Tuning, have: &impl Fn(u32) -> bool) {
        self.ranked_for.copy_from_slice(&self.weights);
        self.ranked_once = true;
        self.ranked.clear();
        self.cursor = 0;
        let lead = params.lead_us as f64;
        let total: f64 = self.weights.iter().sum();
        let total_next: f64 = self.next.iter().sum();
        let bonus = 4.0 * params.bonus.max(0.0);
        let table = &*self.table;
        for (i, &unit) in table.units.iter().enumerate() {
            if have(unit) {
                continue;
            }
            let cs = &table.contributions[table.starts[i] as usize..table.starts[i + 1] as usize];
            let (mut q, mut q2, mut urgency, mut next) = (0.0, 0.0, 0.0, 0.0);
            for c in cs {
                let w = self.weights[c.profile as usize];
                let share = c.share as f64;
                let discount = 1.0 / (c.t_us as f64 + lead);
                q += w * share;
                q2 += w * share * share;
                urgency += w * share * discount;
                next += self.next[c.profile as usize] * share * discount;
            }
            if urgency > 0.0 && total > 0.0 {
                let (q, q2) = (q / total, q2 / total);
                let disagreement = (q2 - q * q).max(0.0);
                self.ranked.push(Ranked {
                    tier: 0,
                    score: urgency / total * (1.0 + bonus * disagreement),
                    unit,
                });
            } else if next > 0.0 && total_next > 0.0 {
                self.ranked.push(Ranked {
                    tier: 1,
                    score: next / total_next,
                    unit,
                });
            }
        }
        self.ranked.sort_unstable_by(|a, b| {
            a.tier
                .cmp(&b.tier)
                .then(b.score.total_cmp(&a.score))
                .then(a.unit.cmp(&b.unit))
        });
    }
}
