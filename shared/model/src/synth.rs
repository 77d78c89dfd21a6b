//! Synthetic but realistic traces: an appliance image with known tasks, for tests and benches.
//!
//! Real traces come from `vmt-record`; these imitate their shape so the trainer, the belief and
//! the scheduler can be tested against a known ground truth. The image has common boot blocks
//! (kernel, init, shared libraries: read by every run) and per-task file sets laid out as
//! contiguous extents plus scattered metadata blocks (inodes, directories). Each run of a task
//! varies as real runs do: it skips some files, reads some only partly, swaps neighbours in
//! its order, jitters its timing, pauses for compute between files and makes a few stray reads
//! elsewhere. Sessions chain tasks following a known transition structure
//! ([`SynthImage::transition`]), so the Markov model has something definite to learn.
//!
//! With [`SynthParams::mount`], runs start as they do on a real appliance: a cold task run
//! first mounts the filesystem (superblock, group descriptors, journal, inode tables: the
//! [`SynthImage::mount`] extents), then loads the shared start-up files (the common extents),
//! then reads its own files; a session starts with a `boot` segment that only mounts, its first
//! task loads the start-up files, and later tasks read only their own files, as the page cache
//! keeps the rest. That is the shape that made inference accuracy collapse on real traces: no
//! block is in every profile, yet every cold run begins with a hundred reads all tasks share.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use vmt_formats::image::ImageId;
use vmt_formats::trace::{Op, Record, Trace, TraceKind};

/// Names given to synthetic tasks, in order (cycled with a number past the end).
const TASK_NAMES: &[&str] = &[
    "compile", "browse", "office", "backup", "mail", "game", "photo", "audio", "shell", "db",
    "video", "print", "scan", "chat", "vpn", "wiki",
];

/// Parameters of a synthetic image and its tasks.
#[derive(Clone, Debug)]
pub struct SynthParams {
    /// Image size in bytes. Default 64 MiB.
    pub image_bytes: u64,
    /// Number of distinct tasks. Default 4.
    pub tasks: usize,
    /// Bytes of file data each task reads (its whole file set). Default
    /// `image_bytes / (8 · max(tasks, 4))`, so all tasks together fill at most an eighth.
    pub task_bytes: u64,
    /// Bytes of boot data every run reads first. Default `image_bytes / 64`.
    pub common_bytes: u64,
    /// Median compute pause between files of a task, in microseconds. Default 20 ms.
    pub compute_us: u64,
    /// Probability that a run skips a file of its task (never the first two). Default 0.1.
    pub skip_file: f64,
    /// Bytes of filesystem metadata a cold start reads to mount the image (see the module
    /// doc). Default 0: no mount phase, sessions start with their first task.
    pub mount_bytes: u64,
    /// Files that tasks `2j` and `2j + 1` share, at the same places in both (every other file
    /// from the first, as two tools load the same interpreter and libraries between their own
    /// files): their first reads cannot tell the pair apart. Default 0.
    pub shared_files: usize,
    /// Seed of the image layout.
    pub seed: u64,
}

impl SynthParams {
    /// Defaults (see each field) for `tasks` tasks on a `image_bytes` image.
    pub fn new(image_bytes: u64, tasks: usize) -> SynthParams {
        SynthParams {
            image_bytes,
            tasks,
            task_bytes: image_bytes / (8 * tasks.max(4) as u64),
            common_bytes: image_bytes / 64,
            compute_us: 20_000,
            skip_file: 0.1,
            mount_bytes: 0,
            shared_files: 0,
            seed: 1,
        }
    }

    /// Sets the layout seed.
    pub fn seed(mut self, seed: u64) -> SynthParams {
        self.seed = seed;
        self
    }

    /// Cold starts mount the filesystem first, reading `bytes` of metadata, and sessions start
    /// with a `boot` segment (see the module doc).
    pub fn mount(mut self, bytes: u64) -> SynthParams {
        self.mount_bytes = bytes;
        self
    }

    /// Tasks `2j` and `2j + 1` share their first `files` files.
    pub fn shared_files(mut self, files: usize) -> SynthParams {
        self.shared_files = files;
        self
    }

    /// Sets the compute pause between files.
    pub fn compute_us(mut self, us: u64) -> SynthParams {
        self.compute_us = us;
        self
    }
}

/// A contiguous byte range of the image (a file, or part of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// One synthetic task: its files and metadata blocks.
#[derive(Clone, Debug)]
pub struct SynthTask {
    /// The task label.
    pub name: String,
    /// Files in the order the task opens them.
    pub files: Vec<Extent>,
    /// Single 4 KiB metadata reads made before each file.
    pub metadata: Vec<u64>,
}

/// A generated image layout; produces task runs and sessions.
#[derive(Clone, Debug)]
pub struct SynthImage {
    /// The image identity the traces carry (size + a hash of the seed).
    pub image: ImageId,
    /// Boot extents read by every run, in order.
    pub common: Vec<Extent>,
    /// Filesystem metadata a cold start reads before anything else (empty unless
    /// [`SynthParams::mount`] is set).
    pub mount: Vec<Extent>,
    /// The tasks.
    pub tasks: Vec<SynthTask>,
    params: SynthParams,
}

const PAGE: u64 = 4096;

/// Label of a session's mount segment (as `datasets/record.sh` names it).
pub const BOOT_TASK: &str = "boot";

impl SynthImage {
    /// Lays out an image. Extents are placed in disjoint random free regions so tasks are
    /// clearly different, as distinct applications on an ext4 image are (on an image too small
    /// for that, extents may overlap).
    pub fn new(params: SynthParams) -> SynthImage {
        let mut rng = StdRng::seed_from_u64(params.seed);
        let pages = params.image_bytes / PAGE;
        // Page ownership map so extents never overlap: a task's files are its own.
        let mut used = vec![false; pages as usize];
        let mut place = |rng: &mut StdRng, len_pages: u64| -> Extent {
            let len_pages = len_pages.clamp(1, pages / 4);
            let mut start = 0;
            for _ in 0..1_000 {
                start = rng.gen_range(0..pages - len_pages);
                let range = start as usize..(start + len_pages) as usize;
                if used[range.clone()].iter().all(|u| !u) {
                    used[range].iter_mut().for_each(|u| *u = true);
                    break;
                }
                // A crowded image: the last try is kept even if it overlaps another extent.
            }
            Extent {
                offset: start * PAGE,
                len: len_pages * PAGE,
            }
        };
        let split = |rng: &mut StdRng, total: u64, parts: usize| -> Vec<u64> {
            let weights: Vec<f64> = (0..parts).map(|_| rng.gen_range(0.3..1.7)).collect();
            let sum: f64 = weights.iter().sum();
            weights
                .iter()
                .map(|w| ((total as f64 * w / sum) as u64 / PAGE).max(1))
                .collect()
        };
        let common_parts = 24;
        let common = split(&mut rng, params.common_bytes, common_parts)
            .into_iter()
            .map(|p| place(&mut rng, p))
            .collect();
        let mut tasks = Vec::with_capacity(params.tasks);
        for t in 0..params.tasks {
            let nfiles = rng.gen_range(8..16);
            let files: Vec<Extent> = split(&mut rng, params.task_bytes, nfiles)
                .into_iter()
                .map(|p| place(&mut rng, p))
                .collect();
            let metadata = (0..nfiles).map(|_| place(&mut rng, 1).offset).collect();
            let name = match TASK_NAMES.get(t) {
                Some(n) => n.to_string(),
                None => format!("{}{}", TASK_NAMES[t % TASK_NAMES.len()], t),
            };
            tasks.push(SynthTask {
                name,
                files,
                metadata,
            });
        }
        for j in (1..tasks.len()).step_by(2) {
            let m = params.shared_files;
            let files = tasks[j].files.len().min(tasks[j - 1].files.len());
            for f in (0..(2 * m).min(files)).step_by(2) {
                tasks[j].files[f] = tasks[j - 1].files[f];
                tasks[j].metadata[f] = tasks[j - 1].metadata[f];
            }
        }
        // Placed last so that images without a mount phase keep their layout.
        let mount = if params.mount_bytes > 0 {
            split(&mut rng, params.mount_bytes, 8)
                .into_iter()
                .map(|p| place(&mut rng, p))
                .collect()
        } else {
            Vec::new()
        };
        let digest = Sha256::digest(format!("vmt synth {:?}", params).as_bytes());
        SynthImage {
            image: ImageId {
                size: params.image_bytes,
                sha256: digest.into(),
            },
            common,
            mount,
            tasks,
            params,
        }
    }

    /// The known transition structure of sessions: after task `i` comes `i+1` (mod n) with
    /// probability 0.7, `i+2` with 0.2, and any task uniformly with the remaining 0.1.
    pub fn transition(&self, from: usize) -> Vec<f64> {
        let n = self.tasks.len();
        let mut p = vec![0.1 / n as f64; n];
        p[(from + 1) % n] += 0.7;
        p[(from + 2) % n] += 0.2;
        p
    }

    /// Appends the reads of one run of `task` to `out`, from time `t0`, as task index `label`.
    /// Returns the time after the last read.
    fn emit_run(
        &self,
        task: usize,
        (mount, boot): (bool, bool),
        label: u16,
        t0: u64,
        rng: &mut StdRng,
        out: &mut Vec<Record>,
    ) -> u64 {
        let mut t = t0;
        let read = |t: &mut u64, offset: u64, len: u64, rng: &mut StdRng, out: &mut Vec<Record>| {
            // Local disk service time plus syscall overhead: tens to hundreds of microseconds.
            *t += rng.gen_range(20..200);
            let len = len.min(self.params.image_bytes - offset);
            out.push(Record {
                t_us: *t,
                op: Op::Read,
                offset,
                len: len as u32,
                task: label,
            });
        };
        let read_extent =
            |t: &mut u64, e: Extent, frac: f64, rng: &mut StdRng, out: &mut Vec<Record>| {
                let end = e.offset + ((e.len as f64 * frac) as u64).max(PAGE);
                let mut off = e.offset;
                while off < end {
                    // Kernel readahead sizes: 4 KiB to 128 KiB.
                    let chunk = PAGE << rng.gen_range(0..6);
                    let chunk = chunk.min(end - off);
                    read(t, off, chunk, rng, out);
                    off += chunk;
                }
            };
        if mount {
            for e in &self.mount {
                read_extent(&mut t, *e, 1.0, rng, out);
            }
        }
        if boot {
            for e in &self.common {
                read_extent(&mut t, *e, 1.0, rng, out);
            }
        }
        let spec = &self.tasks[task];
        let mut order: Vec<usize> = (0..spec.files.len()).collect();
        for i in 1..order.len() {
            if rng.gen_bool(0.2) {
                order.swap(i - 1, i);
            }
        }
        for (k, &f) in order.iter().enumerate() {
            if f >= 2 && rng.gen_bool(self.params.skip_file) {
                continue;
            }
            read(&mut t, spec.metadata[f], PAGE, rng, out);
            let frac = if rng.gen_bool(0.7) {
                1.0
            } else {
                rng.gen_range(0.5..1.0)
            };
            read_extent(&mut t, spec.files[f], frac, rng, out);
            if rng.gen_bool(0.05) {
                // A stray read anywhere (logs, caches): noise the profiles must tolerate.
                let page = rng.gen_range(0..self.params.image_bytes / PAGE);
                read(&mut t, page * PAGE, PAGE, rng, out);
            }
            if k + 1 < order.len() {
                let c = self.params.compute_us;
                t += rng.gen_range(c / 2..=c + c / 2 + 1);
            }
        }
        t
    }

    /// One run of task `task` (a [`TraceKind::Task`] trace that boots first).
    pub fn task_run(&self, task: usize, run: u32, seed: u64) -> Trace {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_0000 ^ ((task as u64) << 32));
        let mut records = Vec::new();
        self.emit_run(task, (true, true), 0, 0, &mut rng, &mut records);
        let name = self.tasks[task].name.clone();
        Trace {
            image: self.image,
            kind: TraceKind::Task,
            label: name.clone(),
            run,
            // Hours apart: separate sittings, so no transition is read into their order.
            start_unix_us: 1_700_000_000_000_000 + (run as u64 * 64 + task as u64) * 3_600_000_000,
            recorder: "vmt synth".into(),
            tasks: vec![name],
            records,
        }
    }

    /// A session: boot, then the tasks in `sequence`, with `pause_us` between tasks. With a
    /// mount phase, the session's first segment is a `boot` task that only mounts.
    pub fn session(&self, sequence: &[usize], run: u32, pause_us: u64, seed: u64) -> Trace {
        self.session_with_pauses(sequence, run, (pause_us, pause_us), seed)
    }

    /// [`SynthImage::session`] with each pause (think time) drawn uniformly from
    /// `pauses = (least, most)` µs.
    pub fn session_with_pauses(
        &self,
        sequence: &[usize],
        run: u32,
        pauses: (u64, u64),
        seed: u64,
    ) -> Trace {
        let mut think_rng = StdRng::seed_from_u64(seed ^ 0x7417_c000);
        let mut think = move || think_rng.gen_range(pauses.0..=pauses.1.max(pauses.0));
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5e55_1011);
        let mut records = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut t = 0;
        if !self.mount.is_empty() {
            names.push(BOOT_TASK.to_string());
            for e in &self.mount {
                let mut off = e.offset;
                while off < e.offset + e.len {
                    t += rng.gen_range(20..200);
                    let len = (e.offset + e.len - off).min(PAGE << rng.gen_range(0..6));
                    records.push(Record {
                        t_us: t,
                        op: Op::Read,
                        offset: off,
                        len: len as u32,
                        task: 0,
                    });
                    off += len;
                }
            }
            t += think();
        }
        for (i, &task) in sequence.iter().enumerate() {
            let name = &self.tasks[task].name;
            let label = match names.iter().position(|n| n == name) {
                Some(p) => p,
                None => {
                    names.push(name.clone());
                    names.len() - 1
                }
            };
            if i > 0 {
                t += think();
            }
            t = self.emit_run(
                task,
                (false, i == 0),
                label as u16,
                t,
                &mut rng,
                &mut records,
            );
        }
        Trace {
            image: self.image,
            kind: TraceKind::Session,
            label: format!("session{run}"),
            run,
            start_unix_us: 1_800_000_000_000_000 + run as u64 * 3_600_000_000,
            recorder: "vmt synth".into(),
            tasks: names,
            records,
        }
    }

    /// A task sequence of length `len` drawn from [`SynthImage::transition`], starting anywhere.
    pub fn sample_sequence(&self, len: usize, seed: u64) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5e9_0e9c);
        let n = self.tasks.len();
        let mut seq = vec![rng.gen_range(0..n)];
        self.continue_sequence(&mut seq, len, &mut rng);
        seq
    }

    /// A task sequence of length `len` whose first task is drawn from `first` (a weight per
    /// task, normalised here; missing tasks weigh 0), then following
    /// [`SynthImage::transition`]: sessions of users who open the appliance for different
    /// reasons.
    pub fn sample_sequence_from(&self, first: &[f64], len: usize, seed: u64) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xf125_7a5c);
        let n = self.tasks.len();
        let weights: Vec<f64> = (0..n)
            .map(|t| first.get(t).copied().unwrap_or(0.0).max(0.0))
            .collect();
        let mut seq = vec![draw(&weights, &mut rng)];
        self.continue_sequence(&mut seq, len, &mut rng);
        seq
    }

    fn continue_sequence(&self, seq: &mut Vec<usize>, len: usize, rng: &mut StdRng) {
        while seq.len() < len {
            let p = self.transition(*seq.last().unwrap());
            seq.push(draw(&p, rng));
        }
    }

    /// `count` sessions of `len` tasks whose first task is drawn from `first` (see
    /// [`SynthImage::sample_sequence_from`]), with think times drawn from `pauses` µs, named
    /// by index; session `s` uses seed `seed + s`.
    pub fn random_start_sessions(
        &self,
        first: &[f64],
        count: u32,
        len: usize,
        pauses: (u64, u64),
        seed: u64,
    ) -> Vec<(String, Trace)> {
        (1..=count)
            .map(|s| {
                let seq = self.sample_sequence_from(first, len, seed + s as u64);
                let t = self.session_with_pauses(&seq, s, pauses, (seed + s as u64) * 7919);
                (format!("rs{seed}-{s}.vmtrace"), t)
            })
            .collect()
    }

    /// [`SynthImage::corpus`] with each trace named by its index, as
    /// [`ValidBundleParams::fit`](crate::profile::ValidBundleParams::fit) takes it.
    pub fn named_corpus(
        &self,
        runs: u32,
        sessions: u32,
        session_len: usize,
    ) -> Vec<(String, Trace)> {
        self.corpus(runs, sessions, session_len)
            .into_iter()
            .enumerate()
            .map(|(i, t)| (i.to_string(), t))
            .collect()
    }

    /// A training corpus: `runs` task runs of every task plus `sessions` sessions of
    /// `session_len` tasks each.
    pub fn corpus(&self, runs: u32, sessions: u32, session_len: usize) -> Vec<Trace> {
        let mut out = Vec::new();
        for run in 1..=runs {
            for task in 0..self.tasks.len() {
                out.push(self.task_run(task, run, run as u64 * 1000 + task as u64));
            }
        }
        for s in 1..=sessions {
            let seq = self.sample_sequence(session_len, s as u64);
            out.push(self.session(&seq, s, 200_000, s as u64 * 7919));
        }
        out
    }
}

/// An index drawn with probability proportional to `weights` (uniform if they sum to 0).
fn draw(weights: &[f64], rng: &mut StdRng) -> usize {
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 || sum.is_nan() {
        return rng.gen_range(0..weights.len());
    }
    let mut x = rng.gen::<f64>() * sum;
    for (j, w) in weights.iter().enumerate() {
        if x < *w {
            return j;
        }
        x -= w;
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_valid_and_vary() {
        let img = SynthImage::new(SynthParams::new(16 << 20, 4));
        let a = img.task_run(0, 1, 1);
        let b = img.task_run(0, 2, 2);
        a.validate().unwrap();
        b.validate().unwrap();
        assert_ne!(a.records, b.records);
        let s = img.session(&img.sample_sequence(5, 3), 1, 1000, 3);
        s.validate().unwrap();
        assert!(s.segments().count() >= 2);
    }
}
