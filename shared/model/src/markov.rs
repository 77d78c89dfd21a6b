//! The Markov model over profiles and the online belief of which profile a user is following.
//!
//! [`MarkovModel`] is what training learns and the bundle stores: the start distribution (the
//! prior over the first task after the mount) and transition matrix between profiles, and per
//! profile how often each block was read by its member runs. The start distribution counts the
//! profile of each session's first segment when there are sessions (what users open the
//! appliance for), else every trained run as one start; both Laplace-smoothed, so no task is
//! ruled out before the first read.
//!
//! Online, [`MarkovModel::compile`] turns it into an [`OnlineModel`]: a per-block table of
//! likelihoods (one row per block any profile saw, one shared background row for the rest),
//! built once so that [`Belief::observe`] costs O(profiles) per read and never allocates. The
//! likelihood of a read of block `b` under profile `p` is `(1 - ε) · f(p, b) + ε / blocks`, where
//! `f(p, b)` is the Laplace-smoothed share of `p`'s runs that read `b`: how likely the task is to
//! read that block at all. A read off every profile (noise, a new task) is unlikely but never
//! impossible, so the belief can always recover.
//!
//! The share is deliberately not normalised into a distribution over the profile's blocks
//! (`f / Σ_b f`, as before): that made every block two profiles share strong evidence for the
//! smaller one (the block is a larger part of it), so the mount, shared libraries and an
//! interpreter two tasks both load pushed the belief towards small profiles and set off false
//! boundaries. With shares, a block read by every likely profile moves the belief little, and
//! the blocks that tell profiles apart decide (with `off_reads`-style checks below). Blocks most
//! tasks read (the bundle's common blocks) share one *neutral* row: equal likelihood under every
//! profile, so their reads leave the belief exactly as it was, however their shares differ.
//!
//! Task boundaries shift the belief through the transition matrix (the HMM prediction step),
//! applied only where one is suspected, so the per-read cost stays O(profiles):
//! - an idle gap of at least [`BeliefParams::gap_us`] between reads: the user may have finished
//!   a task, or may only be waiting (an emulated boot idles for seconds; a stalled read looks
//!   the same). With probability [`BeliefParams::gap_switch`] the task changed: the belief
//!   becomes that mixture of itself and its shifted self, and the next reads decide;
//! - [`BeliefParams::off_reads`] consecutive discriminating reads the top profile never saw: the
//!   shift is applied retroactively before the first of them (the belief from then is shifted,
//!   and those reads are applied again as evidence), so evidence already gathered is not
//!   discarded.
//!
//! Neither is *counted* as a boundary. A boundary ([`Belief::boundaries`]) is counted only on
//! evidence that the task changed: once a profile is established (on top through `off_reads`
//! discriminating reads it saw), another profile must become top and see `off_reads`
//! discriminating reads the established one never saw. A pause, a stall or a few stray reads
//! inside one task therefore count nothing.
//!
//! A floor on each probability keeps a profile that fell out of favour able to come back
//! within a few reads.

use serde::{Deserialize, Serialize};

/// How often each block was read by a profile's member runs (sparse, sorted by block).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observations {
    /// `(block, runs that read it)`, sorted by block.
    pub blocks: Vec<(u32, u32)>,
    /// Member runs.
    pub runs: u32,
}

/// Hyperparameters of [`ValidMarkovParams::fit`].
#[derive(Clone, Debug, PartialEq)]
pub struct MarkovParams {
    pub(crate) laplace: f64,
    pub(crate) epsilon: f64,
}

/// Checked [`MarkovParams`].
#[derive(Clone, Debug, PartialEq)]
pub struct ValidMarkovParams(MarkovParams);

/// A Markov hyperparameter out of range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum MarkovError {
    /// Negative or non-finite Laplace pseudo-count.
    #[error("laplace pseudo-count {0} must be finite and >= 0")]
    BadLaplace(f64),
    /// Uniform mixing weight outside (0, 1).
    #[error("epsilon {0} must be in (0, 1)")]
    BadEpsilon(f64),
    /// A model without profiles.
    #[error("a Markov model needs at least one profile")]
    NoProfiles,
}

impl MarkovParams {
    /// Defaults: `laplace = 1` (add-one smoothing of transitions and block shares),
    /// `epsilon = 0.01` (weight of the uniform background in `P(block | profile)`).
    pub fn new() -> MarkovParams {
        MarkovParams {
            laplace: 1.0,
            epsilon: 0.01,
        }
    }

    /// Pseudo-count added to every transition and block count.
    pub fn laplace(mut self, laplace: f64) -> MarkovParams {
        self.laplace = laplace;
        self
    }

    /// Weight of the uniform background in the observation likelihood.
    pub fn epsilon(mut self, epsilon: f64) -> MarkovParams {
        self.epsilon = epsilon;
        self
    }

    /// Validates every field.
    pub fn check(self) -> Result<ValidMarkovParams, MarkovError> {
        if !(self.laplace.is_finite() && self.laplace >= 0.0) {
            return Err(MarkovError::BadLaplace(self.laplace));
        }
        if !(self.epsilon > 0.0 && self.epsilon < 1.0) {
            return Err(MarkovError::BadEpsilon(self.epsilon));
        }
        Ok(ValidMarkovParams(self))
    }
}

impl Default for MarkovParams {
    fn default() -> Self {
        MarkovParams::new()
    }
}

/// The learned model (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarkovModel {
    /// `P(first profile)`.
    pub start: Vec<f64>,
    /// Row-major `k × k`: `transitions[i * k + j] = P(next = j | current = i)`.
    pub transitions: Vec<f64>,
    /// Per-profile block counts.
    pub observations: Vec<Observations>,
    /// Laplace pseudo-count used for block shares.
    pub laplace: f64,
    /// Uniform background weight.
    pub epsilon: f64,
}

impl ValidMarkovParams {
    /// Learns the model from `sequences` of profile indices (each a session, or runs in
    /// order), whose consecutive pairs are the transitions, `starts` (the profile of each
    /// observed start: a session's first segment, or each run when there are no sessions; see
    /// the module doc) and per-profile `observations`. Starts out of range are ignored.
    pub fn fit(
        &self,
        sequences: &[Vec<usize>],
        starts: &[usize],
        observations: Vec<Observations>,
    ) -> Result<MarkovModel, MarkovError> {
        let k = observations.len();
        if k == 0 {
            return Err(MarkovError::NoProfiles);
        }
        let a = self.0.laplace;
        let mut start = vec![a; k];
        let mut trans = vec![a; k * k];
        for &first in starts.iter().filter(|p| **p < k) {
            start[first] += 1.0;
        }
        for seq in sequences {
            for w in seq.windows(2) {
                trans[w[0] * k + w[1]] += 1.0;
            }
        }
        normalize(&mut start);
        for row in trans.chunks_mut(k) {
            normalize(row);
        }
        Ok(MarkovModel {
            start,
            transitions: trans,
            observations,
            laplace: a,
            epsilon: self.0.epsilon,
        })
    }
}

/// Scales `v` to sum 1 (uniform if it sums to 0).
fn normalize(v: &mut [f64]) {
    let s: f64 = v.iter().sum();
    if s > 0.0 {
        v.iter_mut().for_each(|x| *x /= s);
    } else {
        let u = 1.0 / v.len() as f64;
        v.iter_mut().for_each(|x| *x = u);
    }
}

impl MarkovModel {
    /// Number of profiles.
    pub fn profiles(&self) -> usize {
        self.observations.len()
    }

    /// `P(next = j | current = i)`.
    pub fn transition(&self, i: usize, j: usize) -> f64 {
        self.transitions[i * self.profiles() + j]
    }

    /// Precomputes the per-block likelihood table for an image of `block_count` blocks;
    /// `common` (sorted or not) are the blocks most tasks read, which get the neutral row.
    pub fn compile(&self, block_count: u32, common: &[u32]) -> OnlineModel {
        let k = self.profiles();
        let blocks = block_count.max(1) as f64;
        let bg: Vec<f64> = (0..k).map(|_| self.epsilon / blocks).collect();
        let share_bg = 1.0 / blocks;
        let mut row_of_block = vec![BACKGROUND_ROW; block_count as usize];
        // Row 0 is the background row, shared by every block no profile saw; row 1 the neutral
        // row of common blocks (every profile saw them, equally likely under each).
        let mut rows = bg.clone();
        rows.extend(std::iter::repeat_n(1.0, k));
        let mut on = vec![false; k];
        let mut on_rows = on.clone();
        on_rows.extend(std::iter::repeat_n(true, k));
        let mut cursors = vec![0usize; k];
        let mut all: Vec<u32> = self
            .observations
            .iter()
            .flat_map(|o| o.blocks.iter().map(|(b, _)| *b))
            .filter(|b| *b < block_count)
            .collect();
        all.sort_unstable();
        all.dedup();
        for b in all {
            let row = (rows.len() / k) as u32;
            for p in 0..k {
                let o = &self.observations[p];
                let c = &mut cursors[p];
                while *c < o.blocks.len() && o.blocks[*c].0 < b {
                    *c += 1;
                }
                let share = if *c < o.blocks.len() && o.blocks[*c].0 == b {
                    on[p] = true;
                    let runs = o.runs as f64 + 2.0 * self.laplace;
                    (o.blocks[*c].1 as f64 + self.laplace) / runs
                } else {
                    on[p] = false;
                    0.0
                };
                rows.push((1.0 - self.epsilon) * share + self.epsilon * share_bg);
            }
            on_rows.extend_from_slice(&on);
            row_of_block[b as usize] = row;
        }
        for &b in common.iter().filter(|b| **b < block_count) {
            row_of_block[b as usize] = NEUTRAL_ROW;
        }
        OnlineModel {
            k,
            task_of: (0..k as u32).collect(),
            row_of_block,
            rows,
            on: on_rows,
            start: self.start.clone(),
            transitions: self.transitions.clone(),
        }
    }
}

/// The row of blocks no profile saw.
const BACKGROUND_ROW: u32 = 0;
/// The row of common blocks: no evidence.
const NEUTRAL_ROW: u32 = 1;

/// The model compiled for fast online use (see the module doc).
#[derive(Clone, Debug)]
pub struct OnlineModel {
    k: usize,
    /// The task of each profile: variants of one task share it (see [`OnlineModel::tasks`]).
    task_of: Vec<u32>,
    row_of_block: Vec<u32>,
    rows: Vec<f64>,
    on: Vec<bool>,
    start: Vec<f64>,
    transitions: Vec<f64>,
}

impl OnlineModel {
    /// Number of profiles.
    pub fn profiles(&self) -> usize {
        self.k
    }

    /// Number of blocks covered by the table.
    pub fn blocks(&self) -> u32 {
        self.row_of_block.len() as u32
    }

    /// `P(block | profile p)` for every `p`.
    pub fn likelihoods(&self, block: u32) -> &[f64] {
        let row = self.row_of(block);
        &self.rows[row * self.k..(row + 1) * self.k]
    }

    /// Names the task of each profile (e.g. by majority label), so that moving between two
    /// variants of one task counts no boundary. Ignored unless one entry per profile.
    pub fn tasks(mut self, task_of: &[u32]) -> OnlineModel {
        if task_of.len() == self.k {
            self.task_of.copy_from_slice(task_of);
        }
        self
    }

    /// Whether `block` is common (its reads are no evidence).
    pub fn is_neutral(&self, block: u32) -> bool {
        self.row_of(block) == NEUTRAL_ROW as usize
    }

    /// The start distribution: the prior over the first task.
    pub fn start(&self) -> &[f64] {
        &self.start
    }

    fn row_of(&self, block: u32) -> usize {
        self.row_of_block
            .get(block as usize)
            .copied()
            .unwrap_or(BACKGROUND_ROW) as usize
    }
}

/// Tuning of the online belief.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeliefParams {
    /// An idle gap this long (µs) between read arrivals may be a task boundary. Default 1 s:
    /// longer than the pauses inside most tasks we have seen, shorter than a user's pause
    /// between tasks. A read stalled longer than this looks the same, hence `gap_switch`.
    pub gap_us: u64,
    /// The probability that the task changed at such a gap (0..=1): the share of the belief
    /// shifted through the transition matrix. Default 0.5: an emulated boot idles for seconds
    /// inside one task, so a gap alone is an even bet.
    pub gap_switch: f64,
    /// Discriminating reads that decide (1..=16): this many consecutive reads the top profile
    /// never saw shift the belief retroactively, and this many reads of a new top profile that
    /// the established one never saw count a boundary. Default 8. 0 disables both.
    pub off_reads: u32,
    /// Least probability of any profile. Default 1e-3.
    pub floor: f64,
}

impl Default for BeliefParams {
    fn default() -> Self {
        BeliefParams {
            gap_us: 1_000_000,
            gap_switch: 0.5,
            off_reads: 8,
            floor: 1e-3,
        }
    }
}

/// A top profile less likely than this gathers no evidence of being the task: reads shared by
/// two candidates (python and a VM boot start the same interpreter) establish neither.
const SETTLED: f64 = 0.9;

/// Most reads remembered for a retroactive boundary.
const MAX_OFF_READS: usize = 16;

/// What an observed read did to the belief.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Evidence applied within the current task (or no evidence: a common block).
    Evidence,
    /// The read completed the evidence of a task boundary (see the module doc).
    Boundary,
}

/// The online belief over profiles: a probability per profile, updated per read.
#[derive(Clone, Debug)]
pub struct Belief {
    params: BeliefParams,
    probs: Vec<f64>,
    scratch: Vec<f64>,
    /// Belief just before the current run of off-profile reads.
    before_off: Vec<f64>,
    off_rows: [u32; MAX_OFF_READS],
    off_len: usize,
    last_t: Option<u64>,
    reads: u64,
    boundaries: u32,
    /// The profile the evidence has established for the current task.
    established: Option<usize>,
    /// The candidate (top profile) gathering evidence, and its discriminating reads so far.
    candidate: usize,
    candidate_reads: u32,
}

impl Belief {
    /// A belief at the start distribution (the prior) of `model`.
    pub fn new(model: &OnlineModel, mut params: BeliefParams) -> Belief {
        params.off_reads = params.off_reads.min(MAX_OFF_READS as u32);
        params.gap_switch = params.gap_switch.clamp(0.0, 1.0);
        Belief {
            params,
            probs: model.start.clone(),
            scratch: vec![0.0; model.k],
            before_off: vec![0.0; model.k],
            off_rows: [0; MAX_OFF_READS],
            off_len: 0,
            last_t: None,
            reads: 0,
            boundaries: 0,
            established: None,
            candidate: usize::MAX,
            candidate_reads: 0,
        }
    }

    /// Back to the start distribution, as for a new session.
    pub fn reset(&mut self, model: &OnlineModel) {
        self.probs.copy_from_slice(&model.start);
        self.off_len = 0;
        self.last_t = None;
        self.reads = 0;
        self.boundaries = 0;
        self.established = None;
        self.candidate = usize::MAX;
        self.candidate_reads = 0;
    }

    /// Probability of each profile.
    pub fn probs(&self) -> &[f64] {
        &self.probs
    }

    /// The most likely profile and its probability.
    pub fn top(&self) -> (usize, f64) {
        let mut best = (0, f64::MIN);
        for (p, &x) in self.probs.iter().enumerate() {
            if x > best.1 {
                best = (p, x);
            }
        }
        best
    }

    /// Reads observed so far.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Task boundaries the evidence has shown so far (see the module doc).
    pub fn boundaries(&self) -> u32 {
        self.boundaries
    }

    /// The profile established for the current task, once the reads have shown one.
    pub fn established(&self) -> Option<usize> {
        self.established
    }

    /// Updates the belief with a read starting in `block` at time `t_us`. O(profiles), no
    /// allocation (a suspected boundary costs O(profiles²) once).
    pub fn observe(&mut self, model: &OnlineModel, block: u32, t_us: u64) -> Observed {
        self.reads += 1;
        if let Some(last) = self.last_t {
            if t_us.saturating_sub(last) >= self.params.gap_us {
                self.before_off.copy_from_slice(&self.probs);
                shift(model, &mut self.probs, &mut self.scratch, self.params.floor);
                let h = self.params.gap_switch;
                for (p, b) in self.probs.iter_mut().zip(&self.before_off) {
                    *p = h * *p + (1.0 - h) * b;
                }
                self.off_len = 0;
            }
        }
        self.last_t = Some(t_us);
        let row = model.row_of(block);
        if row == NEUTRAL_ROW as usize {
            return Observed::Evidence;
        }
        if self.params.off_reads == 0 {
            apply(model, &mut self.probs, row, self.params.floor);
            return Observed::Evidence;
        }
        let top = self.top().0;
        if model.on[row * model.k + top] {
            self.off_len = 0;
            apply(model, &mut self.probs, row, self.params.floor);
        } else {
            if self.off_len == 0 {
                self.before_off.copy_from_slice(&self.probs);
            }
            self.off_rows[self.off_len] = row as u32;
            self.off_len += 1;
            if self.off_len >= self.params.off_reads as usize {
                // The reads left the top profile: shift the belief from before they began,
                // then replay their evidence (the current read included).
                self.probs.copy_from_slice(&self.before_off);
                shift(model, &mut self.probs, &mut self.scratch, self.params.floor);
                for i in 0..self.off_len {
                    apply(
                        model,
                        &mut self.probs,
                        self.off_rows[i] as usize,
                        self.params.floor,
                    );
                }
                self.off_len = 0;
            } else {
                apply(model, &mut self.probs, row, self.params.floor);
            }
        }
        self.count(model, row)
    }

    /// Counts a discriminating read towards establishing the top profile; a boundary when a
    /// new profile is established over another.
    fn count(&mut self, model: &OnlineModel, row: usize) -> Observed {
        let on = &model.on[row * model.k..(row + 1) * model.k];
        let top = self.top().0;
        if let Some(e) = self.established {
            if on[e] {
                // Still the established task's reads.
                self.candidate_reads = 0;
                return Observed::Evidence;
            }
            if model.task_of[e] == model.task_of[top] {
                // Another variant of the same task.
                self.established = Some(top);
                self.candidate_reads = 0;
                return Observed::Evidence;
            }
        }
        if Some(top) == self.established || !on[top] || self.probs[top] < SETTLED {
            return Observed::Evidence;
        }
        if self.candidate != top {
            self.candidate = top;
            self.candidate_reads = 0;
        }
        self.candidate_reads += 1;
        if self.candidate_reads < self.params.off_reads {
            return Observed::Evidence;
        }
        self.candidate_reads = 0;
        match self.established.replace(top) {
            Some(_) => {
                self.boundaries += 1;
                Observed::Boundary
            }
            None => Observed::Evidence,
        }
    }

    /// The belief over the task after the current one: `probs · transitions`, into `out`.
    pub fn predict_next(&self, model: &OnlineModel, out: &mut [f64]) {
        let k = model.k;
        out.iter_mut().for_each(|x| *x = 0.0);
        for (i, &pi) in self.probs.iter().enumerate() {
            for (j, o) in out.iter_mut().enumerate() {
                *o += pi * model.transitions[i * k + j];
            }
        }
    }
}

/// Multiplies in a row of likelihoods, renormalises and applies the floor.
#[inline]
fn apply(model: &OnlineModel, probs: &mut [f64], row: usize, floor: f64) {
    let lik = &model.rows[row * model.k..(row + 1) * model.k];
    let mut sum = 0.0;
    for (p, l) in probs.iter_mut().zip(lik) {
        *p *= l;
        sum += *p;
    }
    finish(probs, sum, floor);
}

#[inline]
fn finish(probs: &mut [f64], sum: f64, floor: f64) {
    if !(sum > 0.0 && sum.is_finite()) {
        let u = 1.0 / probs.len() as f64;
        probs.iter_mut().for_each(|p| *p = u);
        return;
    }
    let mut sum2 = 0.0;
    for p in probs.iter_mut() {
        *p = (*p / sum).max(floor);
        sum2 += *p;
    }
    for p in probs.iter_mut() {
        *p /= sum2;
    }
}

/// The HMM prediction step: `probs ← probs · transitions`.
fn shift(model: &OnlineModel, probs: &mut [f64], scratch: &mut [f64], floor: f64) {
    let k = model.k;
    scratch.iter_mut().for_each(|x| *x = 0.0);
    for (pi, row) in probs.iter().zip(model.transitions.chunks_exact(k)) {
        for (s, t) in scratch.iter_mut().zip(row) {
            *s += pi * t;
        }
    }
    probs.copy_from_slice(scratch);
    let sum = probs.iter().sum();
    finish(probs, sum, floor);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> MarkovModel {
        let obs = vec![
            Observations {
                blocks: (0..10).map(|b| (b, 4)).collect(),
                runs: 4,
            },
            Observations {
                blocks: (100..110).map(|b| (b, 4)).collect(),
                runs: 4,
            },
        ];
        // 0 → 1 always, 1 → 0 always.
        let seqs = vec![vec![0, 1, 0, 1, 0, 1]; 5];
        MarkovParams::new()
            .check()
            .unwrap()
            .fit(&seqs, &[0; 5], obs)
            .unwrap()
    }

    #[test]
    fn transitions_are_laplace_smoothed() {
        let m = model();
        // 15 transitions 0→1 plus one pseudo-count each: 16/17.
        assert!((m.transition(0, 1) - 16.0 / 17.0).abs() < 1e-12);
        assert!((m.start[0] - 6.0 / 7.0).abs() < 1e-12);
        assert_eq!(
            MarkovParams::new().epsilon(0.0).check(),
            Err(MarkovError::BadEpsilon(0.0))
        );
    }

    #[test]
    fn reads_off_every_profile_shift_the_belief_but_count_no_boundary() {
        let m = model();
        let online = m.compile(1000, &[]);
        let mut b = Belief::new(&online, BeliefParams::default());
        for (i, blk) in (0..9).enumerate() {
            b.observe(&online, blk, i as u64);
        }
        assert_eq!(b.top().0, 0);
        assert_eq!(b.established(), Some(0));
        // Blocks no profile saw: after 8 of them the user has probably moved on, and profile
        // 0 is followed by profile 1, so the belief moves there; but no read has shown profile
        // 1 yet, so no boundary is counted.
        for i in 0..8u64 {
            assert_eq!(
                b.observe(&online, 500 + i as u32, 10 + i),
                Observed::Evidence
            );
        }
        assert_eq!(b.top().0, 1);
        assert_eq!(b.boundaries(), 0);
        // Profile 1's own reads are the evidence.
        let outcomes: Vec<Observed> = (0..8u64)
            .map(|i| b.observe(&online, 100 + i as u32, 20 + i))
            .collect();
        assert_eq!(outcomes[..7], [Observed::Evidence; 7]);
        assert_eq!(outcomes[7], Observed::Boundary);
        assert_eq!(b.boundaries(), 1);
    }

    /// A model whose profiles all read blocks 0..10 (common) and each its own blocks, of very
    /// different sizes: the normalised likelihood of a common block favours the small profile.
    fn model_with_common() -> (MarkovModel, Vec<u32>) {
        // The common blocks are read by 4, 2 and 1 of each profile's 4 runs.
        let obs = (0..3u32)
            .map(|p| Observations {
                blocks: (0..10)
                    .map(|b| (b, 4 >> p))
                    .chain((0..10 * 10u32.pow(p)).map(|b| (1000 * (p + 1) + b, 4)))
                    .collect(),
                runs: 4,
            })
            .collect();
        let m = MarkovParams::new()
            .check()
            .unwrap()
            .fit(&[vec![0, 1, 2]], &[0, 1, 2], obs)
            .unwrap();
        (m, (0..10).collect())
    }

    #[test]
    fn reads_of_common_blocks_leave_the_belief_unchanged() {
        let (m, common) = model_with_common();
        let online = m.compile(10_000, &common);
        let mut b = Belief::new(&online, BeliefParams::default());
        let prior = b.probs().to_vec();
        for i in 0..200u64 {
            assert_eq!(
                b.observe(&online, (i % 10) as u32, i * 10),
                Observed::Evidence
            );
        }
        assert_eq!(b.probs(), &prior[..], "common reads moved the belief");
        assert!(online.is_neutral(3) && !online.is_neutral(1000));
        // After evidence, common reads still change nothing.
        b.observe(&online, 3005, 3_000);
        let after = b.probs().to_vec();
        for i in 0..50u64 {
            b.observe(&online, (i % 10) as u32, 3_010 + i);
        }
        for (x, y) in b.probs().iter().zip(&after) {
            assert!((x - y).abs() <= 1e-9, "{:?} vs {after:?}", b.probs());
        }
        // Without the neutral row they would move it (towards the profile that reads them most
        // often): the failure this guards against.
        let plain = m.compile(10_000, &[]);
        let mut b = Belief::new(&plain, BeliefParams::default());
        for i in 0..20u64 {
            b.observe(&plain, (i % 10) as u32, i * 10);
        }
        assert_eq!(b.top().0, 0);
        assert!(b.top().1 > 0.9);
    }

    #[test]
    fn a_pause_inside_one_task_is_no_boundary() {
        let (m, common) = model_with_common();
        let online = m.compile(10_000, &common);
        let mut b = Belief::new(&online, BeliefParams::default());
        // Profile 2's reads with pauses of 3 s every 20 reads (an emulated boot idling), and
        // common reads between.
        let mut t = 0;
        for i in 0..400u32 {
            t += if i % 20 == 19 { 3_000_000 } else { 100 };
            let blk = if i % 5 == 0 {
                i % 10
            } else {
                3000 + (i * 7) % 1000
            };
            assert_eq!(b.observe(&online, blk, t), Observed::Evidence, "read {i}");
        }
        assert_eq!(b.boundaries(), 0);
        assert_eq!(b.top().0, 2);
        // Then profile 0's reads after a pause: one boundary.
        for i in 0..20u32 {
            b.observe(&online, 1000 + i % 10, t + 5_000_000 + i as u64);
        }
        assert_eq!(b.boundaries(), 1);
        assert_eq!(b.top().0, 0);
    }

    #[test]
    fn belief_follows_reads_and_switches() {
        let m = model();
        let online = m.compile(1000, &[]);
        // A gap is surely a boundary here, to see the prediction step alone.
        let params = BeliefParams {
            gap_switch: 1.0,
            ..BeliefParams::default()
        };
        let mut b = Belief::new(&online, params);
        for (i, blk) in (100..104).enumerate() {
            b.observe(&online, blk, i as u64 * 10);
        }
        assert_eq!(b.top().0, 1);
        assert!(b.top().1 > 0.99);
        // Reads move to profile 0's blocks without a pause: evidence alone switches.
        for (i, blk) in (0..3).enumerate() {
            b.observe(&online, blk, 100 + i as u64 * 10);
        }
        assert_eq!(b.top().0, 0);
        // A long pause: the belief moves to the successor before any read of it.
        let mut next = vec![0.0; 2];
        b.predict_next(&online, &mut next);
        assert!(next[1] > 0.9);
        // Moved, but no boundary counted before a read shows the new task.
        assert_eq!(b.observe(&online, 500, 10_000_000), Observed::Evidence);
        assert_eq!(b.top().0, 1);
    }
}
