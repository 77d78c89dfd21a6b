//! The Markov model over profiles and the online belief of which profile a user is following.
//!
//! [`MarkovModel`] is what training learns and the bundle stores: the start distribution and
//! transition matrix between profiles (counts from sessions and from the order of runs,
//! Laplace-smoothed), and per profile how often each block was read by its member runs.
//!
//! Online, [`MarkovModel::compile`] turns it into an [`OnlineModel`]: a per-block table of
//! likelihoods `P(block | profile)` (one row per block any profile saw, one shared background
//! row for the rest), built once so that [`Belief::observe`] costs O(profiles) per read and never
//! allocates. The likelihood of a block under profile `p` is
//! `(1 - ε) · f(p, b) / Σ_b f(p, b) + ε / blocks`, where `f(p, b)` is the Laplace-smoothed share
//! of `p`'s runs that read `b`: a read off every profile (noise, a new task) is unlikely but never
//! impossible, so the belief can always recover.
//!
//! Task boundaries shift the belief through the transition matrix (the HMM prediction step),
//! applied only where a boundary is detected, so the per-read cost stays O(profiles):
//! - an idle gap of at least [`BeliefParams::gap_us`] between reads: the user finished a task;
//! - [`BeliefParams::off_reads`] consecutive reads the top profile never saw: the boundary is
//!   placed retroactively before the first of them (the belief from then is shifted, and those
//!   reads are applied again as evidence), so evidence already gathered is not discarded.
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
    /// order; a one-element sequence only counts as a start) and per-profile `observations`.
    pub fn fit(
        &self,
        sequences: &[Vec<usize>],
        observations: Vec<Observations>,
    ) -> Result<MarkovModel, MarkovError> {
        let k = observations.len();
        if k == 0 {
            return Err(MarkovError::NoProfiles);
        }
        let a = self.0.laplace;
        let mut start = vec![a; k];
        let mut trans = vec![a; k * k];
        for seq in sequences {
            if let Some(&first) = seq.first() {
                start[first] += 1.0;
            }
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

    /// Precomputes the per-block likelihood table for an image of `block_count` blocks.
    pub fn compile(&self, block_count: u32) -> OnlineModel {
        let k = self.profiles();
        let blocks = block_count.max(1) as f64;
        let bg: Vec<f64> = (0..k).map(|_| self.epsilon / blocks).collect();
        let mut row_of_block = vec![0u32; block_count as usize];
        // Row 0 is the background row, shared by every block no profile saw.
        let mut rows = bg.clone();
        let mut on = vec![false; k];
        let mut on_rows = on.clone();
        // Mass of each profile's block shares, to turn them into a distribution over blocks.
        let mass: Vec<f64> = self
            .observations
            .iter()
            .map(|o| {
                let runs = o.runs as f64 + 2.0 * self.laplace;
                o.blocks
                    .iter()
                    .map(|(_, c)| (*c as f64 + self.laplace) / runs)
                    .sum::<f64>()
                    .max(1e-12)
            })
            .collect();
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
                rows.push((1.0 - self.epsilon) * share / mass[p] + bg[p]);
            }
            on_rows.extend_from_slice(&on);
            row_of_block[b as usize] = row;
        }
        OnlineModel {
            k,
            row_of_block,
            rows,
            on: on_rows,
            start: self.start.clone(),
            transitions: self.transitions.clone(),
        }
    }
}

/// The model compiled for fast online use (see the module doc).
#[derive(Clone, Debug)]
pub struct OnlineModel {
    k: usize,
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

    fn row_of(&self, block: u32) -> usize {
        self.row_of_block.get(block as usize).copied().unwrap_or(0) as usize
    }
}

/// Tuning of the online belief.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeliefParams {
    /// An idle gap this long (µs) between read arrivals is a task boundary. Default 1 s:
    /// longer than the pauses inside a task we have seen, shorter than a user's pause between
    /// tasks. A read stalled longer than this also looks like a boundary; the shift it causes
    /// is undone by the next read or two of the same task (see `floor`).
    pub gap_us: u64,
    /// This many consecutive reads the top profile never saw is a task boundary (1..=16).
    /// Default 8. 0 disables this detection.
    pub off_reads: u32,
    /// Least probability of any profile. Default 1e-3.
    pub floor: f64,
}

impl Default for BeliefParams {
    fn default() -> Self {
        BeliefParams {
            gap_us: 1_000_000,
            off_reads: 8,
            floor: 1e-3,
        }
    }
}

/// Most reads remembered for a retroactive boundary.
const MAX_OFF_READS: usize = 16;

/// What an observed read did to the belief.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Evidence applied within the current task.
    Evidence,
    /// A task boundary was detected (and the belief shifted) before applying the evidence.
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
}

impl Belief {
    /// A belief at the start distribution of `model`.
    pub fn new(model: &OnlineModel, mut params: BeliefParams) -> Belief {
        params.off_reads = params.off_reads.min(MAX_OFF_READS as u32);
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
        }
    }

    /// Back to the start distribution, as for a new session.
    pub fn reset(&mut self, model: &OnlineModel) {
        self.probs.copy_from_slice(&model.start);
        self.off_len = 0;
        self.last_t = None;
        self.reads = 0;
        self.boundaries = 0;
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

    /// Task boundaries detected so far.
    pub fn boundaries(&self) -> u32 {
        self.boundaries
    }

    /// Updates the belief with a read starting in `block` at time `t_us`. O(profiles), no
    /// allocation (a detected boundary costs O(profiles²) once).
    pub fn observe(&mut self, model: &OnlineModel, block: u32, t_us: u64) -> Observed {
        let mut outcome = Observed::Evidence;
        self.reads += 1;
        if let Some(last) = self.last_t {
            if t_us.saturating_sub(last) >= self.params.gap_us {
                shift(model, &mut self.probs, &mut self.scratch, self.params.floor);
                self.off_len = 0;
                self.boundaries += 1;
                outcome = Observed::Boundary;
            }
        }
        self.last_t = Some(t_us);
        let row = model.row_of(block);
        if self.params.off_reads > 0 {
            let top = self.top().0;
            if model.on[row * model.k + top] {
                self.off_len = 0;
            } else {
                if self.off_len == 0 {
                    self.before_off.copy_from_slice(&self.probs);
                }
                self.off_rows[self.off_len] = row as u32;
                self.off_len += 1;
                if self.off_len >= self.params.off_reads as usize {
                    // Retroactive boundary: shift the belief from before the off-profile run,
                    // then replay that run's evidence (the current read included).
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
                    self.boundaries += 1;
                    return Observed::Boundary;
                }
            }
        }
        apply(model, &mut self.probs, row, self.params.floor);
        outcome
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
            .fit(&seqs, obs)
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
    fn reads_off_every_profile_are_a_retroactive_boundary() {
        let m = model();
        let online = m.compile(1000);
        let mut b = Belief::new(&online, BeliefParams::default());
        for (i, blk) in (0..5).enumerate() {
            b.observe(&online, blk, i as u64);
        }
        assert_eq!(b.top().0, 0);
        // Blocks no profile saw: no evidence, but after 8 of them the user has moved on, and
        // profile 0 is followed by profile 1.
        let mut outcomes = Vec::new();
        for i in 0..8u64 {
            outcomes.push(b.observe(&online, 500 + i as u32, 10 + i));
        }
        assert_eq!(outcomes[..7], [Observed::Evidence; 7]);
        assert_eq!(outcomes[7], Observed::Boundary);
        assert_eq!(b.top().0, 1);
        assert_eq!(b.boundaries(), 1);
    }

    #[test]
    fn belief_follows_reads_and_switches() {
        let m = model();
        let online = m.compile(1000);
        let mut b = Belief::new(&online, BeliefParams::default());
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
        assert_eq!(b.observe(&online, 500, 10_000_000), Observed::Boundary);
        assert_eq!(b.top().0, 1);
    }
}
