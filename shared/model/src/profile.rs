//! Profiles, training them from traces, and the bundle file that carries them to `vmt-run`.
//!
//! A [`Profile`] is what a group of similar task runs reads: the blocks at least
//! [`BundleParams::support`] of its runs read (VMTorrent's released code used 0.25), each with
//! its access probability and mean / median first-access time since the task started, ordered by
//! expected first access. [`ValidBundleParams::fit`] turns traces into a [`Bundle`]:
//!
//! 1. every task trace, and every task segment of a session trace, becomes a [`Run`] (the
//!    distinct blocks it read, with first-access times; writes are ignored, they never need
//!    fetching);
//! 2. runs are clustered ([`crate::cluster`]); each cluster becomes a profile named after its
//!    majority task label;
//! 3. blocks most tasks read are marked common (boot, shared libraries);
//! 4. the Markov model ([`crate::markov`]) learns transitions from the profile sequence of each
//!    session and from task runs recorded back to back.
//!
//! The bundle file (`.vmtp`) is an [`vmt_formats::envelope`] (`VMTPROF\0`, version 1, image
//! identity) around the bincode body, so corruption, another format version or another image's
//! bundle is refused with its own error.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cluster::{purity, ClusterError, ClusterParams, Clustering};
use crate::markov::{MarkovError, MarkovModel, MarkovParams, Observations};
use vmt_formats::envelope::{self, FileError, FileKind};
use vmt_formats::image::{BlockGeometry, GeometryError, ImageId};
use vmt_formats::trace::{Op, Trace, TraceKind};

/// The bundle file kind.
pub const BUNDLE_FILE: FileKind = FileKind {
    magic: *b"VMTPROF\0",
    name: "profile bundle",
    // 2: the training metadata holds each trace's content digest (issue 13).
    version: 2,
};

/// File name extension of bundles.
pub const BUNDLE_EXTENSION: &str = "vmtp";

/// Task runs recorded less than this apart (end of one to start of the next, µs) are taken as
/// one user's consecutive tasks and teach the Markov model a transition, unless session traces
/// are given (see [`sequences`]).
const BACK_TO_BACK_US: u64 = 5 * 60 * 1_000_000;

/// One task run: a task trace, or one task segment of a session.
#[derive(Clone, Debug)]
pub struct Run {
    /// Index of the trace among those given to `fit`.
    pub trace: usize,
    /// Index of the segment in that trace (0 for a task trace).
    pub segment: usize,
    /// The task label.
    pub label: String,
    /// Distinct blocks read, sorted.
    pub blocks: Vec<u32>,
    /// First-access time of each block (µs since the run's first access), aligned with `blocks`.
    pub first_us: Vec<u64>,
}

impl Run {
    /// The runs of `trace` (one per task segment) over `geometry`'s blocks. Segments without a
    /// read are skipped.
    pub fn of_trace(trace: &Trace, index: usize, geometry: &BlockGeometry) -> Vec<Run> {
        let mut runs = Vec::new();
        for (segment, seg) in trace.segments().enumerate() {
            let t0 = seg.records.first().map_or(0, |r| r.t_us);
            let mut first: HashMap<u32, u64> = HashMap::new();
            for r in seg.records.iter().filter(|r| r.op == Op::Read) {
                for b in geometry.blocks_of(r.offset, r.len as u64) {
                    first.entry(b.get() as u32).or_insert(r.t_us - t0);
                }
            }
            if first.is_empty() {
                continue;
            }
            let mut pairs: Vec<(u32, u64)> = first.into_iter().collect();
            pairs.sort_unstable();
            runs.push(Run {
                trace: index,
                segment,
                label: seg.task.to_string(),
                blocks: pairs.iter().map(|p| p.0).collect(),
                first_us: pairs.iter().map(|p| p.1).collect(),
            });
        }
        runs
    }
}

/// A block of a profile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileBlock {
    /// The block.
    pub block: u32,
    /// Share of member runs that read it.
    pub prob: f32,
    /// Mean first-access time over the runs that read it (µs since the task started).
    pub mean_us: u64,
    /// Median of the same.
    pub median_us: u64,
}

/// A member run of a profile, for `show` and for leaving a run out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The trace file's name.
    pub trace: String,
    /// Segment index in that trace.
    pub segment: u32,
    /// Task label.
    pub label: String,
}

/// The blocks a group of similar runs reads, in expected first-access order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Majority task label of the members (with `+N` when others are mixed in).
    pub name: String,
    /// Member runs.
    pub members: Vec<Member>,
    /// `(label, member count)`, most frequent first.
    pub labels: Vec<(String, u32)>,
    /// Blocks above the support cutoff, by mean first-access time.
    pub blocks: Vec<ProfileBlock>,
}

impl Profile {
    /// The label most members carry.
    pub fn majority_label(&self) -> &str {
        self.labels.first().map_or("", |l| l.0.as_str())
    }
}

/// Settings the bundle was fitted with, kept so `eval --cv` refits the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitSettings {
    /// Block size in bytes.
    pub block_size: u32,
    /// Fixed number of profiles, or `None` for auto.
    pub profiles: Option<usize>,
    /// Support cutoff.
    pub support: f64,
    /// Feature bins for clustering.
    pub max_features: usize,
    /// Split distance for auto clustering.
    pub split_distance: f64,
    /// Laplace pseudo-count.
    pub laplace: f64,
    /// Uniform background weight of the likelihood.
    pub epsilon: f64,
}

/// How training went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingMeta {
    /// Trace file names.
    pub traces: Vec<String>,
    /// Each trace's [`Trace::content_digest`], in the order of `traces`: how `eval` tells a
    /// training trace from a test trace that has its name but not its content.
    pub digests: Vec<[u8; 32]>,
    /// Runs clustered.
    pub runs: usize,
    /// Silhouette of the clustering (Jaccard).
    pub silhouette: f64,
    /// Largest Jaccard distance within a profile.
    pub max_within: f64,
    /// Purity against task labels.
    pub purity: f64,
    /// Settings used.
    pub settings: FitSettings,
}

/// Profiles, the Markov model and training metadata for one image: the `.vmtp` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    /// The image the profiles belong to.
    pub image: ImageId,
    /// Block size of every block index in here.
    pub block_size: u32,
    /// The profiles.
    pub profiles: Vec<Profile>,
    /// Blocks more than half of the task labels read (boot, shared libraries; empty with a
    /// single label), sorted: reads of them say little about the task.
    pub common: Vec<u32>,
    /// Transitions and observation likelihoods.
    pub markov: MarkovModel,
    /// Training report.
    pub meta: TrainingMeta,
}

#[derive(Serialize, Deserialize)]
struct BundleBody {
    block_size: u32,
    profiles: Vec<Profile>,
    common: Vec<u32>,
    markov: MarkovModel,
    meta: TrainingMeta,
}

/// Why a bundle cannot be fitted, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The file could not be read or written, or is not a valid bundle.
    #[error(transparent)]
    File(#[from] FileError),
    /// A bundle whose content contradicts itself.
    #[error("{path}: invalid profile bundle: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Traces of different images given together.
    #[error("{file}: trace of another image ({found}); the first trace's image is {expected}")]
    MixedImages {
        /// The offending trace file.
        file: String,
        /// Its image.
        found: ImageId,
        /// The first trace's image.
        expected: ImageId,
    },
    /// A trace evaluated against a bundle of another image.
    #[error("{trace}: trace of another image ({found}) than the bundle's ({expected})")]
    TraceOfAnotherImage {
        /// The trace file.
        trace: String,
        /// Its image.
        found: ImageId,
        /// The bundle's image.
        expected: ImageId,
    },
    /// No reads in any trace.
    #[error("no reads in the given traces")]
    NoRuns,
    /// Bad block size for this image.
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    /// Support outside (0, 1].
    #[error("support cutoff {0} is not in (0, 1]")]
    BadSupport(f64),
    /// Clustering failed.
    #[error("clustering")]
    Cluster(#[from] ClusterError),
    /// Markov parameters out of range.
    #[error("markov model")]
    Markov(#[from] MarkovError),
}

/// Hyperparameters of [`ValidBundleParams::fit`].
#[derive(Clone, Debug, PartialEq)]
pub struct BundleParams {
    block_size: u32,
    support: f64,
    cluster: ClusterParams,
    markov: MarkovParams,
}

/// Checked [`BundleParams`].
#[derive(Clone, Debug)]
pub struct ValidBundleParams {
    settings: FitSettings,
    cluster: crate::cluster::ValidClusterParams,
    markov: crate::markov::ValidMarkovParams,
}

impl BundleParams {
    /// Defaults: `support = 0.25` (VMTorrent's cutoff), [`ClusterParams::new`] (auto profiles),
    /// [`MarkovParams::new`].
    pub fn new(block_size: u32) -> BundleParams {
        BundleParams {
            block_size,
            support: 0.25,
            cluster: ClusterParams::new(),
            markov: MarkovParams::new(),
        }
    }

    /// The settings of an existing bundle, to refit the same way.
    pub fn from_settings(s: &FitSettings) -> BundleParams {
        BundleParams {
            block_size: s.block_size,
            support: s.support,
            cluster: ClusterParams::new()
                .profiles(s.profiles)
                .max_features(s.max_features)
                .split_distance(s.split_distance),
            markov: MarkovParams::new().laplace(s.laplace).epsilon(s.epsilon),
        }
    }

    /// Share of member runs a block needs to be in a profile.
    pub fn support(mut self, support: f64) -> BundleParams {
        self.support = support;
        self
    }

    /// Clustering parameters.
    pub fn cluster(mut self, cluster: ClusterParams) -> BundleParams {
        self.cluster = cluster;
        self
    }

    /// Markov parameters.
    pub fn markov(mut self, markov: MarkovParams) -> BundleParams {
        self.markov = markov;
        self
    }

    /// Validates every field (the block size is checked against the image in `fit`).
    pub fn check(self) -> Result<ValidBundleParams, BundleError> {
        if !(self.support > 0.0 && self.support <= 1.0) {
            return Err(BundleError::BadSupport(self.support));
        }
        let c = self.cluster.clone();
        let m = self.markov.clone();
        let cluster = self.cluster.check()?;
        let markov = self.markov.check()?;
        Ok(ValidBundleParams {
            settings: FitSettings {
                block_size: self.block_size,
                profiles: c.profiles,
                support: self.support,
                max_features: c.max_features,
                split_distance: c.split_distance,
                laplace: m.laplace,
                epsilon: m.epsilon,
            },
            cluster,
            markov,
        })
    }
}

impl ValidBundleParams {
    /// The settings as stored in a bundle.
    pub fn settings(&self) -> &FitSettings {
        &self.settings
    }

    /// Fits a bundle from `traces`, each with the file name used in errors and metadata.
    /// `progress(stage)` is called as stages start ("runs", "clustering", "profiles").
    pub fn fit(
        &self,
        traces: &[(String, Trace)],
        mut progress: impl FnMut(&str),
    ) -> Result<Bundle, BundleError> {
        let Some((_, first)) = traces.first() else {
            return Err(BundleError::NoRuns);
        };
        let image = first.image;
        for (name, t) in traces {
            if t.image != image {
                return Err(BundleError::MixedImages {
                    file: name.clone(),
                    found: t.image,
                    expected: image,
                });
            }
        }
        let geometry = BlockGeometry::new(image.size, self.settings.block_size)?;
        progress("runs");
        let runs: Vec<Run> = traces
            .iter()
            .enumerate()
            .flat_map(|(i, (_, t))| Run::of_trace(t, i, &geometry))
            .collect();
        if runs.is_empty() {
            return Err(BundleError::NoRuns);
        }
        progress("clustering");
        let sets: Vec<&[u32]> = runs.iter().map(|r| r.blocks.as_slice()).collect();
        let clustering = self.cluster.fit(&sets, geometry.block_count())?;
        progress("profiles");
        let truth: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
        let purity = purity(&clustering.labels, &truth);
        let (profiles, observations) = self.profiles(&runs, &clustering, traces);
        let common = common_blocks(&runs, geometry.block_count());
        let (sequences, starts) = sequences(traces, &runs, &clustering.labels);
        let markov = self.markov.fit(&sequences, &starts, observations)?;
        Ok(Bundle {
            image,
            block_size: self.settings.block_size,
            profiles,
            common,
            markov,
            meta: TrainingMeta {
                traces: traces.iter().map(|(n, _)| n.clone()).collect(),
                digests: traces.iter().map(|(_, t)| t.content_digest()).collect(),
                runs: runs.len(),
                silhouette: clustering.silhouette,
                max_within: clustering.max_within,
                purity,
                settings: self.settings.clone(),
            },
        })
    }

    fn profiles(
        &self,
        runs: &[Run],
        clustering: &Clustering,
        traces: &[(String, Trace)],
    ) -> (Vec<Profile>, Vec<Observations>) {
        let mut profiles = Vec::with_capacity(clustering.k);
        let mut observations = Vec::with_capacity(clustering.k);
        for c in 0..clustering.k {
            let members: Vec<&Run> = runs
                .iter()
                .zip(&clustering.labels)
                .filter(|(_, l)| **l == c)
                .map(|(r, _)| r)
                .collect();
            let n = members.len();
            let mut times: HashMap<u32, Vec<u64>> = HashMap::new();
            for r in &members {
                for (b, t) in r.blocks.iter().zip(&r.first_us) {
                    times.entry(*b).or_default().push(*t);
                }
            }
            let mut obs: Vec<(u32, u32)> =
                times.iter().map(|(b, ts)| (*b, ts.len() as u32)).collect();
            obs.sort_unstable();
            let mut blocks: Vec<ProfileBlock> = times
                .into_iter()
                .filter(|(_, ts)| ts.len() as f64 >= self.settings.support * n as f64)
                .map(|(block, mut ts)| {
                    ts.sort_unstable();
                    let mean = ts.iter().sum::<u64>() / ts.len() as u64;
                    ProfileBlock {
                        block,
                        prob: ts.len() as f32 / n as f32,
                        mean_us: mean,
                        median_us: ts[ts.len() / 2],
                    }
                })
                .collect();
            blocks.sort_unstable_by_key(|b| (b.mean_us, b.block));
            let mut label_counts: HashMap<&str, u32> = HashMap::new();
            for r in &members {
                *label_counts.entry(&r.label).or_default() += 1;
            }
            let mut labels: Vec<(String, u32)> = label_counts
                .into_iter()
                .map(|(l, c)| (l.to_string(), c))
                .collect();
            labels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let name = if labels.len() > 1 {
                format!("{}+{}", labels[0].0, labels.len() - 1)
            } else {
                labels[0].0.clone()
            };
            profiles.push(Profile {
                name,
                members: members
                    .iter()
                    .map(|r| Member {
                        trace: traces[r.trace].0.clone(),
                        segment: r.segment as u32,
                        label: r.label.clone(),
                    })
                    .collect(),
                labels,
                blocks,
            });
            observations.push(Observations {
                blocks: obs,
                runs: n as u32,
            });
        }
        (profiles, observations)
    }
}

/// Blocks most tasks read: those that more than half of the task labels read, a label reading
/// a block when at least two of its runs do (or its only run). None with fewer than two labels.
///
/// "In every profile" is too strict on real traces: a session's `boot` segment (the mount)
/// reads no shared library, and a task's segments late in a session read none either (the page
/// cache kept them), so the intersection over profiles is empty, while every cold run of every
/// task still spends its first hundred reads on the mount and the shell's start-up. Counting
/// runs rather than a profile's supported blocks keeps those blocks common however many warm
/// session segments dilute a task's profile; two runs, not one, keep a stray read out.
fn common_blocks(runs: &[Run], block_count: u32) -> Vec<u32> {
    let mut order: Vec<&Run> = runs.iter().collect();
    order.sort_by(|a, b| a.label.cmp(&b.label));
    let mut labels = 0u32;
    // Per block: runs of the current label that read it, and labels that read it.
    let mut runs_of_label = vec![0u32; block_count as usize];
    let mut labels_of_block = vec![0u32; block_count as usize];
    let mut touched: Vec<u32> = Vec::new();
    for group in order.chunk_by(|a, b| a.label == b.label) {
        labels += 1;
        let need = group.len().min(2) as u32;
        for r in group {
            for &b in r.blocks.iter().filter(|b| **b < block_count) {
                let c = &mut runs_of_label[b as usize];
                if *c == 0 {
                    touched.push(b);
                }
                *c += 1;
            }
        }
        for b in touched.drain(..) {
            if runs_of_label[b as usize] >= need {
                labels_of_block[b as usize] += 1;
            }
            runs_of_label[b as usize] = 0;
        }
    }
    if labels < 2 {
        return Vec::new();
    }
    (0..block_count)
        .filter(|&b| 2 * labels_of_block[b as usize] > labels)
        .collect()
}

/// Profile sequences for the Markov model: each session's segments in order, and, when there
/// are no sessions, task runs recorded back to back (see [`BACK_TO_BACK_US`]); every other run
/// is a one-element sequence. Second, the starts the prior over the first task is learned from:
/// each session's first segment when there are sessions (how users open the appliance), else
/// every run (each trained run of a task is one start).
fn sequences(
    traces: &[(String, Trace)],
    runs: &[Run],
    labels: &[usize],
) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut by_trace: Vec<Vec<usize>> = vec![Vec::new(); traces.len()];
    for (r, l) in runs.iter().zip(labels) {
        by_trace[r.trace].push(*l);
    }
    let mut out = Vec::new();
    let mut tasks: Vec<(u64, u64, usize)> = Vec::new();
    for (i, (_, t)) in traces.iter().enumerate() {
        if by_trace[i].is_empty() {
            continue;
        }
        if t.kind == TraceKind::Session || t.start_unix_us == 0 {
            out.push(std::mem::take(&mut by_trace[i]));
        } else {
            tasks.push((t.start_unix_us, t.start_unix_us + t.duration_us(), i));
        }
    }
    tasks.sort_unstable();
    // Sessions, where there are any, are the evidence of how users move between tasks: task
    // runs are separate cold starts, and back to back they are more often a recording script's
    // loop (five runs of one task, then the next task) than a user's flow. Each counts as a
    // start only then.
    let session_count = out.len();
    let sessions = session_count > 0;
    let mut chain: Vec<usize> = Vec::new();
    let mut chain_end = 0u64;
    for (start, end, i) in tasks {
        if !chain.is_empty() && (sessions || start.saturating_sub(chain_end) > BACK_TO_BACK_US) {
            out.push(std::mem::take(&mut chain));
        }
        chain.extend_from_slice(&by_trace[i]);
        chain_end = end;
    }
    if !chain.is_empty() {
        out.push(chain);
    }
    let starts = if sessions {
        out.iter()
            .take(session_count)
            .filter_map(|s| s.first().copied())
            .collect()
    } else {
        out.iter().flatten().copied().collect()
    };
    (out, starts)
}

impl Bundle {
    /// Number of blocks in the image at this bundle's block size.
    pub fn block_count(&self) -> u32 {
        self.image.size.div_ceil(self.block_size as u64) as u32
    }

    /// Writes the bundle atomically.
    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
        let body = BundleBody {
            block_size: self.block_size,
            profiles: self.profiles.clone(),
            common: self.common.clone(),
            markov: self.markov.clone(),
            meta: self.meta.clone(),
        };
        envelope::write(path, &BUNDLE_FILE, &self.image, &body)?;
        Ok(())
    }

    /// Reads a bundle file, checking it is consistent.
    pub fn load(path: &Path) -> Result<Bundle, BundleError> {
        let invalid = |reason: String| BundleError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        // An older body does not decode as this one: say so rather than "corrupt".
        let version = envelope::read_header(path, &BUNDLE_FILE)?.version;
        if version < BUNDLE_FILE.version {
            return Err(invalid(format!(
                "format version {version} is older than this vmt's ({}); refit it with `vmt-train fit`",
                BUNDLE_FILE.version
            )));
        }
        let (header, body): (_, BundleBody) = envelope::read(path, &BUNDLE_FILE)?;
        BlockGeometry::new(header.image.size, body.block_size)
            .map_err(|e| invalid(e.to_string()))?;
        let k = body.profiles.len();
        if k == 0 {
            return Err(invalid("no profiles".into()));
        }
        if body.markov.observations.len() != k
            || body.markov.start.len() != k
            || body.markov.transitions.len() != k * k
        {
            return Err(invalid(
                "the Markov model does not match the profiles".into(),
            ));
        }
        if body.meta.digests.len() != body.meta.traces.len() {
            return Err(invalid(format!(
                "the training metadata names {} traces but holds {} digests",
                body.meta.traces.len(),
                body.meta.digests.len()
            )));
        }
        let blocks = header.image.size.div_ceil(body.block_size as u64);
        let out_of_range = body
            .profiles
            .iter()
            .flat_map(|p| p.blocks.iter().map(|b| b.block))
            .chain(body.common.iter().copied())
            .any(|b| b as u64 >= blocks);
        if out_of_range {
            return Err(invalid("a block lies outside the image".into()));
        }
        Ok(Bundle {
            image: header.image,
            block_size: body.block_size,
            profiles: body.profiles,
            common: body.common,
            markov: body.markov,
            meta: body.meta,
        })
    }

    /// Reads a bundle file and checks it belongs to `image`.
    pub fn load_for(path: &Path, image: &ImageId) -> Result<Bundle, BundleError> {
        let bundle = Bundle::load(path)?;
        envelope::check_image(path, &BUNDLE_FILE, image, &bundle.image)?;
        Ok(bundle)
    }

    /// Checks that `trace`, read from `trace_path`, belongs to this bundle's image.
    pub fn check_trace(&self, trace_path: &Path, trace: &Trace) -> Result<(), BundleError> {
        if trace.image == self.image {
            Ok(())
        } else {
            Err(BundleError::TraceOfAnotherImage {
                trace: trace_path.display().to_string(),
                found: trace.image,
                expected: self.image,
            })
        }
    }

    /// The profile whose majority label is `label`, if any.
    pub fn profile_of_label(&self, label: &str) -> Option<usize> {
        self.profiles
            .iter()
            .position(|p| p.majority_label() == label)
    }

    /// The profile whose block set is closest (Jaccard) to `blocks` (sorted, distinct).
    pub fn best_profile(&self, blocks: &[u32]) -> usize {
        let mut best = (0, -1.0);
        for (i, p) in self.profiles.iter().enumerate() {
            let mut set: Vec<u32> = p.blocks.iter().map(|b| b.block).collect();
            set.sort_unstable();
            let inter = intersection(&set, blocks);
            let union = set.len() + blocks.len() - inter;
            let j = if union == 0 {
                0.0
            } else {
                inter as f64 / union as f64
            };
            if j > best.1 {
                best = (i, j);
            }
        }
        best.0
    }
}

fn intersection(a: &[u32], b: &[u32]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthImage, SynthParams};

    fn named(traces: Vec<Trace>) -> Vec<(String, Trace)> {
        traces
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("t{i}.vmtrace"), t))
            .collect()
    }

    #[test]
    fn auto_recovers_synthetic_tasks_with_purity_one() {
        let img = SynthImage::new(SynthParams::new(32 << 20, 5));
        let traces = named(img.corpus(6, 0, 0));
        let params = BundleParams::new(4096).check().unwrap();
        let b = params.fit(&traces, |_| {}).unwrap();
        assert_eq!(b.profiles.len(), 5, "{:?}", b.meta);
        assert_eq!(b.meta.purity, 1.0);
        for p in &b.profiles {
            assert_eq!(p.members.len(), 6);
            assert_eq!(p.labels.len(), 1);
            assert!(p.blocks.windows(2).all(|w| w[0].mean_us <= w[1].mean_us));
        }
        // Boot blocks are read by every run of every task.
        let boot = img.common[0].offset / 4096;
        assert!(b.common.contains(&(boot as u32)));
        assert!(b.meta.silhouette > 0.5);
    }

    #[test]
    fn markov_learns_the_synthetic_transition_structure() {
        let img = SynthImage::new(SynthParams::new(32 << 20, 4));
        let (sessions, len) = (40u32, 6);
        let traces = named(img.corpus(3, sessions, len));
        let b = BundleParams::new(4096)
            .check()
            .unwrap()
            .fit(&traces, |_| {})
            .unwrap();
        // Cold runs and session segments of a task end up in one profile each.
        assert_eq!(b.profiles.len(), 4);
        assert_eq!(b.meta.purity, 1.0);
        let n = img.tasks.len();
        let profile = |t: usize| b.profile_of_label(&img.tasks[t].name).unwrap();
        let mut counts = vec![0.0; n * n];
        for s in 1..=sessions {
            for w in img.sample_sequence(len, s as u64).windows(2) {
                if w[0] != w[1] {
                    counts[w[0] * n + w[1]] += 1.0;
                }
            }
        }
        for from in 0..n {
            let row: f64 = counts[from * n..(from + 1) * n].iter().sum();
            for to in 0..n {
                // Exactly the Laplace-smoothed counts of the sessions' task changes...
                let want = (counts[from * n + to] + 1.0) / (row + n as f64);
                let learned = b.markov.transition(profile(from), profile(to));
                assert!(
                    (learned - want).abs() < 1e-9,
                    "{from}->{to}: {learned} vs {want}"
                );
            }
            // ...whose most likely successor is the generator's (i + 1).
            let best = (0..n)
                .max_by(|&x, &y| {
                    let t = |to| b.markov.transition(profile(from), profile(to));
                    t(x).total_cmp(&t(y))
                })
                .unwrap();
            assert_eq!(best, (from + 1) % n);
        }
    }

    #[test]
    fn back_to_back_task_runs_teach_transitions_only_without_sessions() {
        let img = SynthImage::new(SynthParams::new(32 << 20, 3));
        // A recording script's loop: two runs of task 0, then two of task 1, a minute apart.
        let mut traces = Vec::new();
        for (i, task) in [0, 0, 1, 1].into_iter().enumerate() {
            let mut t = img.task_run(task, i as u32 + 1, i as u64);
            t.start_unix_us = 1_700_000_000_000_000 + i as u64 * 60_000_000;
            traces.push(t);
        }
        let session = img.session(&[2, 0, 1], 1, 200_000, 5);
        let fit = |traces: Vec<Trace>| {
            BundleParams::new(4096)
                .check()
                .unwrap()
                .fit(&named(traces), |_| {})
                .unwrap()
        };
        let t = |b: &Bundle, from: usize, to: usize| {
            let p = |x: usize| b.profile_of_label(&img.tasks[x].name).unwrap();
            b.markov.transition(p(from), p(to))
        };
        // Runs only: their order is all there is to learn from (0→0 once, 0→1 once).
        let runs = fit(traces.clone());
        assert!((t(&runs, 0, 0) - 2.0 / 4.0).abs() < 1e-9);
        // With a session, the session teaches transitions (0→1 once) and the loop none.
        traces.push(session);
        let both = fit(traces);
        assert_eq!(both.profiles.len(), 3);
        assert!((t(&both, 0, 1) - 2.0 / 4.0).abs() < 1e-9);
        assert!((t(&both, 0, 0) - 1.0 / 4.0).abs() < 1e-9);
    }

    #[test]
    fn mixed_images_name_the_file() {
        let a = SynthImage::new(SynthParams::new(8 << 20, 2));
        let b = SynthImage::new(SynthParams::new(8 << 20, 2).seed(9));
        let traces = vec![
            ("a.vmtrace".to_string(), a.task_run(0, 1, 1)),
            ("b.vmtrace".to_string(), b.task_run(0, 1, 1)),
        ];
        let e = BundleParams::new(4096)
            .check()
            .unwrap()
            .fit(&traces, |_| {})
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("b.vmtrace: trace of another image"),
            "{e}"
        );
    }

    #[test]
    fn bundle_file_round_trip_and_errors() {
        let img = SynthImage::new(SynthParams::new(8 << 20, 3));
        let traces = named(img.corpus(3, 2, 3));
        let b = BundleParams::new(4096)
            .check()
            .unwrap()
            .fit(&traces, |_| {})
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.vmtp");
        b.save(&p).unwrap();
        assert_eq!(Bundle::load(&p).unwrap(), b);
        assert_eq!(Bundle::load_for(&p, &img.image).unwrap(), b);

        let other = ImageId::size_only(8 << 20);
        let e = Bundle::load_for(&p, &other).unwrap_err().to_string();
        assert!(e.contains("belongs to another image"), "{e}");

        let bytes = std::fs::read(&p).unwrap();
        let mut corrupt = bytes.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0x40;
        std::fs::write(&p, &corrupt).unwrap();
        let e = Bundle::load(&p).unwrap_err().to_string();
        assert!(e.contains("corrupt profile bundle"), "{e}");

        let mut magic = bytes.clone();
        magic[..8].copy_from_slice(b"VMTTRACE");
        std::fs::write(&p, &magic).unwrap();
        let e = Bundle::load(&p).unwrap_err().to_string();
        assert!(e.contains("not a vmt profile bundle file"), "{e}");

        let mut newer = bytes.clone();
        let next = BUNDLE_FILE.version + 1;
        newer[8..12].copy_from_slice(&next.to_le_bytes());
        std::fs::write(&p, &newer).unwrap();
        let e = Bundle::load(&p).unwrap_err().to_string();
        assert!(e.contains(&format!("version {next} is newer")), "{e}");

        std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
        let e = Bundle::load(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");

        // A bundle of the previous format (no trace digests) asks to be refitted.
        let mut older = bytes.clone();
        older[8..12].copy_from_slice(&(BUNDLE_FILE.version - 1).to_le_bytes());
        std::fs::write(&p, &older).unwrap();
        let e = Bundle::load(&p).unwrap_err().to_string();
        assert!(e.contains("older") && e.contains("vmt-train fit"), "{e}");
    }
}
