//! What `vmt-train`'s subcommands do, one function each: [`fit`], [`show`], [`eval`],
//! [`eval_curve`], [`ValidCorpusParams::write`] (synth) and [`bench_fit`].
//!
//! Each takes checked parameters, reads and writes files, reports progress through a
//! [`Progress`] the caller implements (bars, or nothing), and returns a report whose
//! `Display` is the text the tool prints ([`crate::render`]). Nothing here prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::corpus::{self, CorpusError};
use crate::curve::{evaluate_trace_curve, size_curve, Curve, CurveParams};
use crate::evaluate::{
    evaluate_trace, leave_one_out, summarize, EvalError, EvalParams, Summary, TraceResult,
};
use crate::granularity::{Granularity, GranularityError};
use crate::profile::{Bundle, BundleError, BundleParams, ValidBundleParams, BUNDLE_EXTENSION};
use crate::synth::{SynthImage, SynthParams};
use vmt_formats::image::{BlockGeometry, ImageId};
use vmt_formats::trace::{Trace, TraceError, TRACE_EXTENSION};

/// The smallest synthetic image: room for the boot data and every task's files to lie apart.
pub const MIN_SYNTH_IMAGE_BYTES: u64 = 4 << 20;

/// Where a long command reports how far it is.
pub trait Progress {
    /// A phase of `len` steps named `what` starts; `len` 0 is a phase of unknown length.
    fn start(&mut self, what: &str, len: u64);
    /// One step of the phase is done.
    fn step(&mut self);
    /// The phase's current stage, such as fitting's "clustering".
    fn stage(&mut self, stage: &str);
    /// The phase is over.
    fn finish(&mut self);
    /// Something the user should know that does not stop the work.
    fn warn(&mut self, message: &str);
}

/// No progress shown, warnings dropped.
impl Progress for () {
    fn start(&mut self, _: &str, _: u64) {}
    fn step(&mut self) {}
    fn stage(&mut self, _: &str) {}
    fn finish(&mut self) {}
    fn warn(&mut self, _: &str) {}
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The traces cannot be used (boxed: it is large and this path is cold).
    #[error(transparent)]
    Corpus(Box<CorpusError>),
    /// The bundle cannot be fitted, read, written or used.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Evaluation failed.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// A piece or block size the mount cannot use.
    #[error(transparent)]
    Granularity(#[from] GranularityError),
    /// A trace could not be written.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A file or directory could not be written.
    #[error("{}: {error}", path.display())]
    Output {
        /// The path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The crowd cannot be simulated.
    #[error(transparent)]
    SwarmSim(#[from] crate::swarm_sim::SwarmSimError),
    /// A planner cannot be built.
    #[error(transparent)]
    Scheduler(#[from] crate::scheduler::SchedulerError),
    /// A crowd with no traces to replay.
    #[error("no traces to replay")]
    NoTraces,
    /// Evaluation with no strategy to run.
    #[error("--strategies is empty")]
    NoStrategies,
    /// Evaluation without cross-validation needs a bundle to evaluate.
    #[error("a bundle to evaluate is needed without cross-validation")]
    NoBundle,
    /// A synthetic corpus without tasks.
    #[error("--tasks must be at least 1")]
    NoTasks,
    /// A fit benchmark without traces or tasks.
    #[error("--traces and --tasks must be at least 1")]
    NoBenchTraces,
    /// A synthetic image too small to lay out.
    #[error("--image-size must be at least 4MiB")]
    SynthImageTooSmall,
}

impl From<CorpusError> for TrainError {
    fn from(e: CorpusError) -> TrainError {
        TrainError::Corpus(Box::new(e))
    }
}

/// Reads the traces named by `inputs` (files, or directories of them), warning about traces
/// of failed tasks left out, and checks they are of `bundle`'s image (or of one image).
fn load_inputs(
    bundle: Option<&Bundle>,
    inputs: &[PathBuf],
    progress: &mut impl Progress,
) -> Result<Vec<(String, Trace)>, TrainError> {
    let found = corpus::trace_files(inputs)?;
    for path in &found.set_aside {
        progress.warn(&format!(
            "skipping {}: the trace of a failed task",
            path.display()
        ));
    }
    progress.start("reading", found.files.len() as u64);
    let traces = corpus::load_traces(&found.files, || progress.step());
    progress.finish();
    let traces = traces?;
    corpus::check_images(bundle, &traces)?;
    Ok(traces)
}

/// A fitted and written bundle.
#[derive(Debug)]
pub struct FitReport {
    /// The bundle.
    pub bundle: Bundle,
    /// Traces it was fitted from.
    pub traces: usize,
    /// Seconds the fit took (without reading the traces).
    pub seconds: f64,
    /// Where it was written.
    pub out: PathBuf,
}

/// Fits a bundle from the traces named by `inputs` and writes it to `out`.
pub fn fit(
    inputs: &[PathBuf],
    out: &Path,
    params: &ValidBundleParams,
    progress: &mut impl Progress,
) -> Result<FitReport, TrainError> {
    let traces = load_inputs(None, inputs, progress)?;
    progress.start("fitting", 0);
    let start = Instant::now();
    let bundle = params.fit(&traces, |stage| progress.stage(stage));
    progress.finish();
    let bundle = bundle?;
    let seconds = start.elapsed().as_secs_f64();
    bundle.save(out)?;
    Ok(FitReport {
        bundle,
        traces: traces.len(),
        seconds,
        out: out.to_owned(),
    })
}

/// A bundle to print.
#[derive(Debug)]
pub struct BundleReport {
    /// Its file.
    pub path: PathBuf,
    /// The bundle.
    pub bundle: Bundle,
}

/// Reads the bundle at `path` for printing.
pub fn show(path: &Path) -> Result<BundleReport, TrainError> {
    Ok(BundleReport {
        path: path.to_owned(),
        bundle: Bundle::load(path)?,
    })
}

/// Strategies replayed on traces.
#[derive(Debug)]
pub struct EvalReport {
    /// Per trace, in input order.
    pub results: Vec<TraceResult>,
    /// Means and ratios.
    pub summary: Summary,
    /// What was evaluated.
    pub params: EvalParams,
    /// Whether each trace was held out of its bundle.
    pub cross_validated: bool,
}

/// Replays the traces named by `inputs` with every strategy of `params`: with `cv`, against a
/// bundle refitted without each trace (the bundle at `bundle`, if any, only lends its fit
/// settings); otherwise against the bundle at `bundle`, warning if it was trained on some of
/// the traces.
pub fn eval(
    bundle: Option<&Path>,
    inputs: &[PathBuf],
    cv: bool,
    params: &EvalParams,
    progress: &mut impl Progress,
) -> Result<EvalReport, TrainError> {
    if params.strategies.is_empty() {
        return Err(TrainError::NoStrategies);
    }
    let bundle = bundle.map(Bundle::load).transpose()?;
    let traces = load_inputs(bundle.as_ref(), inputs, progress)?;
    let results = held_out(bundle.as_ref(), &traces, cv, progress, |b, name, t| {
        evaluate_trace(b, name, t, params)
    })?;
    Ok(EvalReport {
        summary: summarize(&results),
        results,
        params: params.clone(),
        cross_validated: cv,
    })
}

/// The piece-size curve of some traces.
#[derive(Debug)]
pub struct CurveReport {
    /// The curve and its recommendation.
    pub curve: Curve,
    /// What was swept.
    pub params: CurveParams,
    /// Whether each trace was held out of its bundle.
    pub cross_validated: bool,
}

/// The piece-size curve (see [`crate::curve`]) of the traces named by `inputs`, held out as
/// [`eval`] does.
pub fn eval_curve(
    bundle: Option<&Path>,
    inputs: &[PathBuf],
    cv: bool,
    params: &CurveParams,
    progress: &mut impl Progress,
) -> Result<CurveReport, TrainError> {
    let configs = params.configurations()?;
    let bundle = bundle.map(Bundle::load).transpose()?;
    let traces = load_inputs(bundle.as_ref(), inputs, progress)?;
    let per_trace = held_out(bundle.as_ref(), &traces, cv, progress, |b, name, t| {
        evaluate_trace_curve(b, name, t, params, &configs)
    })?;
    Ok(CurveReport {
        curve: size_curve(traces[0].1.image.size, params, &configs, &per_trace),
        params: params.clone(),
        cross_validated: cv,
    })
}

/// `each(bundle, name, trace)` for every trace: with `cv`, against a bundle refitted without
/// the trace (the given bundle only lends its fit settings); otherwise against the given
/// bundle, with a warning if it was trained on some of the traces.
fn held_out<R>(
    bundle: Option<&Bundle>,
    traces: &[(String, Trace)],
    cv: bool,
    progress: &mut impl Progress,
    mut each: impl FnMut(&Bundle, &str, &Trace) -> Result<R, EvalError>,
) -> Result<Vec<R>, TrainError> {
    if cv {
        let fit = match bundle {
            Some(b) => BundleParams::from_settings(&b.meta.settings),
            None => BundleParams::new(BlockGeometry::DEFAULT_BLOCK_SIZE),
        }
        .check()?;
        progress.start("cv", traces.len() as u64);
        let out = leave_one_out(traces, &fit, |_| progress.step(), each);
        progress.finish();
        return Ok(out?);
    }
    let b = bundle.ok_or(TrainError::NoBundle)?;
    progress.start("simulating", traces.len() as u64);
    let out = traces
        .iter()
        .map(|(name, t)| {
            let r = each(b, name, t);
            progress.step();
            r
        })
        .collect::<Result<Vec<R>, EvalError>>();
    progress.finish();
    let out = out?;
    let seen = corpus::trained_on(b, traces);
    if seen > 0 {
        progress.warn(&format!(
            "{seen} of {} traces were used to train the bundle; use --cv for held-out figures",
            traces.len()
        ));
    }
    Ok(out)
}

/// A synthetic corpus to write; see [`CorpusParams::check`].
#[derive(Clone, Debug)]
pub struct CorpusParams {
    /// The image and its tasks.
    pub image: SynthParams,
    /// Runs of each task.
    pub runs: u32,
    /// Multi-task sessions.
    pub sessions: u32,
    /// Tasks per session (0 is taken as 1).
    pub session_len: usize,
    /// Write CSV instead of `.vmtrace`.
    pub csv: bool,
}

/// [`CorpusParams`] with tasks and room for them.
#[derive(Clone, Debug)]
pub struct ValidCorpusParams(CorpusParams);

/// Checks the number of tasks and the image size of synthetic traces.
fn check_synth(tasks: usize, image_bytes: u64) -> Result<(), TrainError> {
    if tasks == 0 {
        return Err(TrainError::NoTasks);
    }
    if image_bytes < MIN_SYNTH_IMAGE_BYTES {
        return Err(TrainError::SynthImageTooSmall);
    }
    Ok(())
}

impl CorpusParams {
    /// Checks there is at least one task and an image of at least [`MIN_SYNTH_IMAGE_BYTES`].
    pub fn check(self) -> Result<ValidCorpusParams, TrainError> {
        check_synth(self.image.tasks, self.image.image_bytes)?;
        Ok(ValidCorpusParams(self))
    }
}

/// A written synthetic corpus.
#[derive(Debug)]
pub struct SynthReport {
    /// Traces written.
    pub traces: usize,
    /// Their image.
    pub image: ImageId,
    /// The directory.
    pub out: PathBuf,
}

impl ValidCorpusParams {
    /// Writes the corpus's task runs and sessions to `out` (created), as `LABEL-RUN.vmtrace`
    /// or `.csv`.
    pub fn write(&self, out: &Path) -> Result<SynthReport, TrainError> {
        let p = &self.0;
        let output = |path: &Path| {
            let path = path.to_owned();
            move |error| TrainError::Output { path, error }
        };
        std::fs::create_dir_all(out).map_err(output(out))?;
        let img = SynthImage::new(p.image.clone());
        let traces = img.corpus(p.runs, p.sessions, p.session_len.max(1));
        for t in &traces {
            let stem = format!("{}-{}", t.label, t.run);
            if p.csv {
                let path = out.join(format!("{stem}.csv"));
                std::fs::write(&path, t.to_csv()).map_err(output(&path))?;
            } else {
                t.save(&out.join(format!("{stem}.{TRACE_EXTENSION}")))?;
            }
        }
        Ok(SynthReport {
            traces: traces.len(),
            image: img.image,
            out: out.to_owned(),
        })
    }
}

/// Fit time and memory on a synthetic corpus.
#[derive(Debug)]
pub struct BenchFitReport {
    /// Traces fitted.
    pub traces: usize,
    /// Their records.
    pub records: usize,
    /// Image size.
    pub image_bytes: u64,
    /// Distinct tasks.
    pub tasks: usize,
    /// Seconds to generate the traces.
    pub generate_s: f64,
    /// Peak resident memory after generating (KiB; 0 if unknown).
    pub generated_hwm_kib: u64,
    /// Seconds to fit.
    pub fit_s: f64,
    /// Peak resident memory after fitting (KiB; 0 if unknown).
    pub hwm_kib: u64,
    /// Size of the bundle file.
    pub bundle_bytes: u64,
    /// The bundle.
    pub bundle: Bundle,
}

/// Fits `traces` synthetic task runs of `tasks` tasks on an `image_bytes` image in memory,
/// measuring time and peak memory (VmHWM).
pub fn bench_fit(
    traces: usize,
    image_bytes: u64,
    tasks: usize,
) -> Result<BenchFitReport, TrainError> {
    if traces == 0 || tasks == 0 {
        return Err(TrainError::NoBenchTraces);
    }
    check_synth(tasks, image_bytes)?;
    let gen = Instant::now();
    let img = SynthImage::new(SynthParams::new(image_bytes, tasks));
    let corpus: Vec<(String, Trace)> = (0..traces)
        .map(|i| {
            let t = img.task_run(i % tasks, (i / tasks) as u32 + 1, i as u64);
            (format!("synth-{i}.{TRACE_EXTENSION}"), t)
        })
        .collect();
    let records = corpus.iter().map(|(_, t)| t.records.len()).sum();
    let generate_s = gen.elapsed().as_secs_f64();
    let generated_hwm_kib = vm_hwm_kib().unwrap_or(0);
    let start = Instant::now();
    let bundle = BundleParams::new(BlockGeometry::DEFAULT_BLOCK_SIZE)
        .check()?
        .fit(&corpus, |_| {})?;
    let fit_s = start.elapsed().as_secs_f64();
    let hwm_kib = vm_hwm_kib().unwrap_or(0);
    let tmp = std::env::temp_dir().join(format!(
        "vmt-bench-{}.{BUNDLE_EXTENSION}",
        std::process::id()
    ));
    bundle.save(&tmp)?;
    let bundle_bytes = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&tmp);
    Ok(BenchFitReport {
        traces,
        records,
        image_bytes,
        tasks,
        generate_s,
        generated_hwm_kib,
        fit_s,
        hwm_kib,
        bundle_bytes,
        bundle,
    })
}

/// Peak resident set size of this process, from /proc/self/status.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A simulated crowd ([`crate::swarm_sim`]): `clients` clients, client i replaying the i-th
/// trace (round robin, in file-name order, as `bench.sh` hands out sessions) with `strategy`;
/// `bundle` is needed for profile and markov. `progress` counts finished clients.
pub fn swarm_sim(
    bundle: Option<&Path>,
    inputs: &[PathBuf],
    strategy: crate::scheduler::Strategy,
    clients: usize,
    granularity: &Granularity,
    params: &crate::swarm_sim::SwarmParams,
    progress: &mut impl Progress,
) -> Result<crate::swarm_sim::SwarmOutcome, TrainError> {
    use crate::scheduler::{first_access_units, Scheduler, SchedulerParams, Strategy};
    use crate::swarm_sim::ClientSpec;
    let bundle = bundle.map(Bundle::load).transpose()?;
    let mut named = load_inputs(bundle.as_ref(), inputs, progress)?;
    if named.is_empty() {
        return Err(TrainError::NoTraces);
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let traces: Vec<Trace> = named.into_iter().map(|(_, t)| t).collect();
    let sp = SchedulerParams::new(granularity.unit());
    // One planner per trace, cloned per client: the bundle's tables are built once.
    let mut protos = Vec::with_capacity(traces.len());
    for t in &traces {
        protos.push(match (strategy, bundle.as_ref()) {
            (Strategy::Oracle, _) => {
                Scheduler::oracle(t.image.size, &first_access_units(t, sp.unit), sp)?
            }
            (s, Some(b)) if s.needs_bundle() => Scheduler::new(b, s, sp)?,
            (s, _) => Scheduler::without_bundle(t.image.size, s, sp)?,
        });
    }
    let specs = (0..clients)
        .map(|i| ClientSpec {
            trace: i % traces.len(),
            sched: protos[i % traces.len()].clone(),
        })
        .collect();
    progress.start("clients", clients as u64);
    let mut last = 0;
    let out = crate::swarm_sim::run(&traces, specs, granularity, params, |done| {
        while last < done {
            progress.step();
            last += 1;
        }
    });
    progress.finish();
    Ok(out?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::granularity::Granularity;
    use crate::simulate::LinkParams;

    /// Records what a command reported.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Progress for Log {
        fn start(&mut self, what: &str, len: u64) {
            self.0.push(format!("start {what} {len}"));
        }
        fn step(&mut self) {}
        fn stage(&mut self, _: &str) {}
        fn finish(&mut self) {}
        fn warn(&mut self, message: &str) {
            self.0.push(format!("warn {message}"));
        }
    }

    fn corpus(dir: &Path) -> PathBuf {
        let traces = dir.join("traces");
        let params = CorpusParams {
            image: SynthParams::new(16 << 20, 2),
            runs: 2,
            sessions: 1,
            session_len: 2,
            csv: false,
        };
        let report = params.check().unwrap().write(&traces).unwrap();
        assert_eq!(report.traces, 5);
        traces
    }

    #[test]
    fn fit_then_eval_on_the_training_traces_warns() {
        let dir = tempfile::tempdir().unwrap();
        let traces = corpus(dir.path());
        let inputs = std::slice::from_ref(&traces);
        let out = dir.path().join("b.vmtp");
        let params = BundleParams::new(4096).check().unwrap();
        let fitted = fit(inputs, &out, &params, &mut ()).unwrap();
        assert_eq!(fitted.traces, 5);
        assert_eq!(
            show(&out).unwrap().bundle.profiles.len(),
            fitted.bundle.profiles.len()
        );

        let link = LinkParams {
            bits_per_s: 1e8,
            think_us: 0,
            rtt_us: 500,
        };
        let eval_params = EvalParams::new(link, Granularity::pieces(1 << 18).unwrap());
        let mut log = Log::default();
        let report = eval(Some(&out), inputs, false, &eval_params, &mut log).unwrap();
        assert_eq!(report.results.len(), 5);
        assert!(
            log.0.iter().any(|l| l.starts_with("warn 5 of 5 traces")),
            "{:?}",
            log.0
        );
        // Without a bundle and without cross-validation there is nothing to evaluate.
        let e = eval(None, inputs, false, &eval_params, &mut ()).unwrap_err();
        assert!(matches!(e, TrainError::NoBundle), "{e}");
    }

    /// Each cause's text, outermost first, as anyhow's `{:#}` prints them.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(e), |e| e.source())
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn errors_print_each_cause_once() {
        use crate::cluster::ClusterParams;
        let img = SynthImage::new(SynthParams::new(8 << 20, 2));
        let traces = img.named_corpus(1, 0, 0);
        let fit = |params: BundleParams| params.check().unwrap().fit(&traces, |_| {});
        let geometry = fit(BundleParams::new(1000)).unwrap_err();
        let cluster = || {
            fit(BundleParams::new(4096).cluster(ClusterParams::new().profiles(Some(500))))
                .unwrap_err()
        };
        let refit = EvalError::Fit {
            trace: "t".into(),
            source: Box::new(cluster()),
        };
        let train = TrainError::from(EvalError::Fit {
            trace: "t".into(),
            source: Box::new(cluster()),
        });
        let clustering = cluster();
        let errors: [&(dyn std::error::Error + 'static); 4] =
            [&geometry, &clustering, &refit, &train];
        for e in errors {
            let texts = chain(e);
            assert!(
                texts.last().unwrap().contains("block size 1000")
                    || texts.last().unwrap().contains("500 profiles asked for"),
                "{texts:?}"
            );
            for pair in texts.windows(2) {
                assert!(!pair[0].contains(&pair[1]), "printed twice: {texts:?}");
            }
        }
    }

    #[test]
    fn synthetic_corpora_need_tasks_and_room() {
        let params = |tasks, bytes| CorpusParams {
            image: SynthParams::new(bytes, tasks),
            runs: 1,
            sessions: 0,
            session_len: 0,
            csv: true,
        };
        assert!(matches!(
            params(0, 64 << 20).check(),
            Err(TrainError::NoTasks)
        ));
        assert!(matches!(
            params(2, 1 << 20).check(),
            Err(TrainError::SynthImageTooSmall)
        ));
    }
}
