//! `vmt-train`: turn recorded traces into a profile bundle, show it, and evaluate it.
//!
//! Glue over `vmt_model::{profile, evaluate, synth}`: this file parses flags, reads files with a
//! progress bar, prints tables, and maps errors to a one-line message and exit code 1.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use vmt_formats::image::BlockGeometry;
use vmt_formats::trace::{Trace, TRACE_EXTENSION};
use vmt_formats::units::{self, Rate, Size};
use vmt_model::cluster::ClusterParams;
use vmt_model::curve::{evaluate_trace_curve, size_curve, Curve, CurveParams, CURVE_STRATEGIES};
use vmt_model::evaluate::{
    evaluate_trace, leave_one_out, summarize, EvalError, EvalParams, Ratio, Summary, TraceResult,
};
use vmt_model::granularity::{human_bytes, Granularity};
use vmt_model::markov::BeliefParams;
use vmt_model::profile::{Bundle, BundleParams, BUNDLE_EXTENSION};
use vmt_model::scheduler::Strategy;
use vmt_model::simulate::LinkParams;
use vmt_model::synth::{SynthImage, SynthParams};

/// Train schedule profiles from traces, inspect them, and evaluate them in a simulator.
#[derive(Parser)]
#[command(name = "vmt-train", version, about, after_help = units::HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cluster traces into profiles, learn the Markov model, and write a bundle (.vmtp).
    ///
    /// Each task trace, and each task segment of a session trace, is a run; runs are clustered
    /// by the blocks they read (Jaccard), each cluster becomes a profile (blocks above the
    /// support cutoff, in expected first-access order), and transitions between profiles are
    /// learned from sessions and from task runs recorded back to back.
    #[command(after_help = units::HELP)]
    Fit {
        /// Trace files (.vmtrace or .csv) or directories holding them; all of one image.
        #[arg(long, num_args = 1.., required = true, value_name = "DIR_OR_FILE")]
        traces: Vec<PathBuf>,
        /// Where to write the bundle.
        #[arg(long, value_name = "BUNDLE.vmtp")]
        out: PathBuf,
        /// Block size profiles are kept in (a power of two, at least 512 bytes), e.g. 4KiB.
        #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = units::parse_size_u32)]
        block_size: u32,
        /// Number of profiles: `auto` chooses from the data (silhouette; never merges clearly
        /// different block sets), or a number for k-means with that many.
        #[arg(long, default_value = "auto", value_parser = parse_profiles)]
        profiles: ProfilesArg,
        /// A block is in a profile when at least this share of the profile's runs read it
        /// (VMTorrent used 0.25).
        #[arg(long, default_value_t = 0.25)]
        support: f64,
    },
    /// Print a bundle: profiles, their sizes and members, common blocks, transitions.
    Show {
        /// The bundle file.
        bundle: PathBuf,
    },
    /// Simulate strategies on traces over a link and report completion and stall times.
    ///
    /// One client fetches over a link of the given bandwidth while each trace's reads arrive
    /// after their recorded gaps (compute time), at the granularity of the mount being
    /// predicted: whole pieces for a stock torrent, or blocks verified on their own with a
    /// block-hash table (--block-table). A read that misses waits one round trip (--rtt) and
    /// then for its missing units (demand preempts prefetch). Strategies: full (whole image
    /// first), demand (no prefetch), stream (demand + background fill), profile (demand + the
    /// single profile closest to the trace, fixed), markov (demand + belief-weighted profiles,
    /// switching on task boundaries), oracle (prefetch in the trace's own first-access order:
    /// the lower bound). stream, profile and markov then complete the pieces they started and
    /// fill the rest; demand and oracle fetch nothing more. Tables show completion/stall seconds
    /// per trace, then means, bytes fetched per byte read, markov's ratios to the other
    /// strategies (each with the difference in seconds; a ratio to a strategy that stalled under
    /// 10 ms, as the oracle often does with --think, is printed n/a), and how often the
    /// belief's top profile was the trace's task.
    ///
    /// With --curve: the piece-size curve instead (see --curve).
    #[command(after_help = units::HELP)]
    Eval {
        /// The bundle to evaluate. With --cv it only supplies the fit settings (default: the
        /// fit defaults) and is never used for figures.
        #[arg(long, value_name = "BUNDLE.vmtp", required_unless_present = "cv")]
        bundle: Option<PathBuf>,
        /// Trace files or directories to replay.
        #[arg(long, num_args = 1.., required = true, value_name = "DIR_OR_FILE")]
        traces: Vec<PathBuf>,
        /// Link bandwidth in bits (100Mbit, 1Gbit) or bytes (12.5MB/s, 10MiB/s) per second.
        #[arg(long, value_name = "RATE", default_value = "100Mbit")]
        bandwidth: Rate,
        /// Piece size of the torrent, e.g. 256KiB (= 262144 bytes; 256KB is 256000).
        #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = units::parse_size_u32)]
        piece_size: u32,
        /// The torrent has a block-hash table: the mount verifies blocks of this size on their
        /// own, so a read that misses waits only for the blocks it covers [default when given
        /// without a value: 16KiB, BitTorrent's request unit]. Without it the mount fetches
        /// whole pieces (a stock torrent).
        #[arg(
            long,
            value_name = "BLOCK",
            num_args = 0..=1,
            default_missing_value = "16KiB",
            value_parser = units::parse_size_u32
        )]
        block_table: Option<u32>,
        /// Round trip of each demanded fetch before its bytes arrive (e.g. 500us, 20ms). The
        /// default is what a miss cost beyond its bytes on the benchmark's mounts; give the
        /// path's round trip for a WAN.
        #[arg(long, default_value = "500us", value_parser = units::parse_duration_us)]
        rtt: u64,
        /// Idle time inserted at each task boundary of a session trace (e.g. 5s, 500ms).
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = units::parse_duration_us)]
        think: u64,
        /// Leave-one-run-out: refit without each trace before replaying it, so no figure
        /// comes from training data.
        #[arg(long)]
        cv: bool,
        /// Strategies to run, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "full,demand,stream,profile,markov,oracle"
        )]
        strategies: Vec<Strategy>,
        /// Measure inference accuracy after this many reads of each task, comma-separated
        /// (reads of blocks common to most tasks, such as boot, are not counted).
        #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
        accuracy_after: Vec<usize>,
        /// Idle gap between reads taken as a task boundary by the online belief (e.g. 1s,
        /// 500ms).
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = units::parse_duration_us)]
        boundary_gap: u64,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Recommend a piece size: replay demand, markov and oracle at every piece size from
        /// 16KiB to 4MiB (powers of two), each as a stock torrent and with a block table (of
        /// --block-table's size, default 16KiB), and print mean stall and bytes fetched / bytes
        /// read per strategy, the share of markov's bytes in complete pieces (what a client
        /// can share with peers), and each configuration's costs (pieces, hash bytes in the
        /// .torrent and block table, bitfield and HAVE bytes per peer). The recommendation is
        /// the configuration with the fewest pieces where markov stalls within 5% (or 10 ms)
        /// of the best and holds at least half of what it fetched in complete pieces.
        /// --piece-size and --strategies are not used.
        #[arg(long)]
        curve: bool,
    },
    /// Write synthetic traces (task runs and sessions of a generated image) to a directory.
    #[command(after_help = units::HELP)]
    Synth {
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// Image size, e.g. 64MiB or 1GB.
        #[arg(long, value_name = "SIZE", default_value = "64MiB")]
        image_size: Size,
        /// Number of distinct tasks.
        #[arg(long, default_value_t = 4)]
        tasks: usize,
        /// Runs of each task.
        #[arg(long, default_value_t = 4)]
        runs: u32,
        /// Multi-task sessions.
        #[arg(long, default_value_t = 4)]
        sessions: u32,
        /// Tasks per session.
        #[arg(long, default_value_t = 4)]
        session_len: usize,
        /// Compute pause between a task's files (e.g. 20ms, 1s).
        #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = units::parse_duration_us)]
        compute: u64,
        /// Layout seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write CSV instead of .vmtrace.
        #[arg(long)]
        csv: bool,
    },
    /// Benchmark: fit synthetic traces in memory, print fit time and peak memory (VmHWM).
    #[command(hide = true, after_help = units::HELP)]
    BenchFit {
        /// Number of traces.
        #[arg(long, default_value_t = 1000)]
        traces: usize,
        /// Image size, e.g. 1GiB.
        #[arg(long, value_name = "SIZE", default_value = "1GiB")]
        image_size: Size,
        /// Distinct tasks.
        #[arg(long, default_value_t = 16)]
        tasks: usize,
    },
}

#[derive(Clone, Copy, Debug)]
enum ProfilesArg {
    Auto,
    Fixed(usize),
}

fn parse_profiles(s: &str) -> Result<ProfilesArg, String> {
    if s == "auto" {
        return Ok(ProfilesArg::Auto);
    }
    match s.parse::<usize>() {
        Ok(0) => Err("the number of profiles must be at least 1".into()),
        Ok(k) => Ok(ProfilesArg::Fixed(k)),
        Err(_) => Err(format!("{s:?} is neither `auto` nor a number")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmt-train: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text an outer message already
/// includes (file errors print their OS error and also return it as their source).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fit {
            traces,
            out,
            block_size,
            profiles,
            support,
        } => fit(&traces, &out, block_size, profiles, support),
        Command::Show { bundle } => show(&bundle),
        Command::Eval {
            bundle,
            traces,
            bandwidth,
            piece_size,
            block_table,
            rtt,
            think,
            cv,
            strategies,
            accuracy_after,
            boundary_gap,
            json,
            curve,
        } => {
            // The curve sets its own piece sizes and checks its block size per point.
            let granularity = Granularity::new(piece_size, if curve { None } else { block_table })?;
            let link = LinkParams {
                bits_per_s: bandwidth.bits_per_s() as f64,
                think_us: think,
                rtt_us: rtt,
            };
            let mut params = EvalParams::new(link, granularity);
            params.scheduler.belief = BeliefParams {
                gap_us: boundary_gap,
                ..BeliefParams::default()
            };
            params.strategies = strategies;
            params.probe_reads = accuracy_after;
            if curve {
                let mut c = CurveParams::new(params);
                c.block_size = block_table.unwrap_or(c.block_size);
                eval_curve(bundle.as_deref(), &traces, cv, &c, json)
            } else {
                eval(bundle.as_deref(), &traces, cv, &params, json)
            }
        }
        Command::Synth {
            out,
            image_size,
            tasks,
            runs,
            sessions,
            session_len,
            compute,
            seed,
            csv,
        } => synth(
            &out,
            SynthParams::new(image_size.bytes(), tasks)
                .seed(seed)
                .compute_us(compute),
            runs,
            sessions,
            session_len,
            csv,
        ),
        Command::BenchFit {
            traces,
            image_size,
            tasks,
        } => bench_fit(traces, image_size.bytes(), tasks),
    }
}

/// Expands directories into their trace files (sorted), keeping files as given.
fn trace_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("{}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == TRACE_EXTENSION || e == "csv")
                })
                .collect();
            found.sort();
            if found.is_empty() {
                bail!(
                    "{}: no .{TRACE_EXTENSION} or .csv trace files in this directory",
                    input.display()
                );
            }
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:12} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Reads every trace, naming the file in any error.
fn load_traces(inputs: &[PathBuf]) -> Result<Vec<(String, Trace)>> {
    let files = trace_files(inputs)?;
    let bar = bar(files.len() as u64, "reading");
    let mut out = Vec::with_capacity(files.len());
    for f in &files {
        let trace = if f.extension().is_some_and(|e| e == "csv") {
            let text =
                vmt_formats::text::read_text(f, "csv trace", vmt_formats::text::MAX_TEXT_LEN)?;
            Trace::from_csv(f, &text, None)?
        } else {
            Trace::load(f)?
        };
        out.push((f.display().to_string(), trace));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn fit(
    inputs: &[PathBuf],
    out: &Path,
    block_size: u32,
    profiles: ProfilesArg,
    support: f64,
) -> Result<()> {
    let traces = load_traces(inputs)?;
    let profiles = match profiles {
        ProfilesArg::Auto => None,
        ProfilesArg::Fixed(k) => Some(k),
    };
    let params = BundleParams::new(block_size)
        .support(support)
        .cluster(ClusterParams::new().profiles(profiles))
        .check()?;
    let spinner = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let start = Instant::now();
    let bundle = params.fit(&traces, |stage| spinner.set_message(stage.to_string()))?;
    spinner.finish_and_clear();
    bundle.save(out)?;
    println!(
        "fitted {} runs from {} traces in {:.1}s: {} profiles, silhouette {:.2}, purity {:.2}, max within-profile distance {:.2}",
        bundle.meta.runs,
        traces.len(),
        start.elapsed().as_secs_f64(),
        bundle.profiles.len(),
        bundle.meta.silhouette,
        bundle.meta.purity,
        bundle.meta.max_within,
    );
    print_profiles(&bundle);
    println!("wrote {}", out.display());
    Ok(())
}

fn print_profiles(b: &Bundle) {
    let bytes = |blocks: usize| blocks as f64 * b.block_size as f64;
    println!(
        "{:>3}  {:<20} {:>5} {:>8} {:>9} {:>6}  labels",
        "#", "profile", "runs", "blocks", "MiB", "image"
    );
    for (i, p) in b.profiles.iter().enumerate() {
        let labels: Vec<String> = p.labels.iter().map(|(l, n)| format!("{l}×{n}")).collect();
        println!(
            "{:>3}  {:<20} {:>5} {:>8} {:>9.2} {:>5.1}%  {}",
            i,
            p.name,
            p.members.len(),
            p.blocks.len(),
            bytes(p.blocks.len()) / 1048576.0,
            100.0 * bytes(p.blocks.len()) / b.image.size as f64,
            labels.join(" ")
        );
    }
    println!(
        "common blocks (read by most tasks): {} ({:.2} MiB)",
        b.common.len(),
        bytes(b.common.len()) / 1048576.0
    );
}

fn show(path: &Path) -> Result<()> {
    let b = Bundle::load(path)?;
    println!("bundle {}", path.display());
    println!("image: {}", b.image);
    println!(
        "block size: {} bytes; trained on {} runs from {} traces; silhouette {:.2}; purity {:.2}",
        b.block_size,
        b.meta.runs,
        b.meta.traces.len(),
        b.meta.silhouette,
        b.meta.purity
    );
    print_profiles(&b);
    for (i, p) in b.profiles.iter().enumerate() {
        let members: Vec<String> = p
            .members
            .iter()
            .map(|m| {
                let name = Path::new(&m.trace)
                    .file_name()
                    .map_or(m.trace.clone(), |n| n.to_string_lossy().into_owned());
                if m.segment > 0 {
                    format!("{name}#{}", m.segment)
                } else {
                    name
                }
            })
            .collect();
        println!("members of {i} ({}): {}", p.name, members.join(", "));
    }
    let k = b.profiles.len();
    println!("transitions P(next | current), rows = current:");
    print!("{:>10}", "");
    for j in 0..k {
        print!(" {:>7}", j);
    }
    println!();
    print!("{:>10}", "start");
    for j in 0..k {
        print!(" {:>7.3}", b.markov.start[j]);
    }
    println!();
    for i in 0..k {
        print!("{:>10}", i);
        for j in 0..k {
            print!(" {:>7.3}", b.markov.transition(i, j));
        }
        println!();
    }
    Ok(())
}

/// The traces to replay and the bundle they are checked against.
struct Inputs {
    bundle: Option<Bundle>,
    traces: Vec<(String, Trace)>,
}

/// Loads the bundle (if any) and the traces, and checks they are all of one image.
fn load_inputs(bundle_path: Option<&Path>, inputs: &[PathBuf]) -> Result<Inputs> {
    let bundle = bundle_path.map(Bundle::load).transpose()?;
    let traces = load_traces(inputs)?;
    let first_image = traces[0].1.image;
    for (name, t) in &traces {
        match &bundle {
            Some(b) => b.check_trace(Path::new(name), t)?,
            None if t.image != first_image => bail!(
                "{name}: trace of another image ({}) than {} ({first_image})",
                t.image,
                traces[0].0
            ),
            None => {}
        }
    }
    Ok(Inputs { bundle, traces })
}

/// The fit settings for --cv: the bundle's, or the defaults.
fn cv_fit_params(bundle: Option<&Bundle>) -> Result<vmt_model::profile::ValidBundleParams> {
    Ok(match bundle {
        Some(b) => BundleParams::from_settings(&b.meta.settings),
        None => BundleParams::new(BlockGeometry::DEFAULT_BLOCK_SIZE),
    }
    .check()?)
}

/// Warns when some of `traces` trained `b`. A training file is known by the path given to
/// `fit`: where that path still resolves from here, the same file is the test, so that
/// `traces/test/x` is not taken for `traces/train/x`; where it does not, by file name.
/// (A content digest in the bundle would be exact: issue 13.)
fn warn_if_trained_on(b: &Bundle, traces: &[(String, Trace)]) {
    let canonical = |p: &Path| std::fs::canonicalize(p).ok();
    let trained: Vec<(Option<PathBuf>, Option<&std::ffi::OsStr>)> = b
        .meta
        .traces
        .iter()
        .map(|t| (canonical(Path::new(t)), Path::new(t).file_name()))
        .collect();
    let seen = traces
        .iter()
        .filter(|(name, _)| {
            let here = canonical(Path::new(name));
            let file = Path::new(name).file_name();
            trained
                .iter()
                .any(|(path, train_file)| match (path, &here) {
                    (Some(p), Some(h)) => p == h,
                    _ => file.is_some() && file == *train_file,
                })
        })
        .count();
    if seen > 0 {
        eprintln!(
            "vmt-train: warning: {seen} of {} traces were used to train the bundle; use --cv for held-out figures",
            traces.len()
        );
    }
}

/// `each(bundle, name, trace)` for every trace: with `cv`, against a bundle refitted without
/// the trace (the given bundle only lends its fit settings); otherwise against the given
/// bundle, with a warning if it was trained on some of the traces.
fn held_out<R>(
    bundle: Option<&Bundle>,
    traces: &[(String, Trace)],
    cv: bool,
    mut each: impl FnMut(&Bundle, &str, &Trace) -> Result<R, EvalError>,
) -> Result<Vec<R>> {
    let bar = bar(traces.len() as u64, if cv { "cv" } else { "simulating" });
    let out = if cv {
        leave_one_out(traces, &cv_fit_params(bundle)?, |_| bar.inc(1), each)?
    } else {
        let b = bundle.expect("clap requires --bundle without --cv");
        let out = traces
            .iter()
            .map(|(name, t)| {
                let r = each(b, name, t);
                bar.inc(1);
                r
            })
            .collect::<Result<Vec<R>, EvalError>>()?;
        warn_if_trained_on(b, traces);
        out
    };
    bar.finish_and_clear();
    Ok(out)
}

fn eval(
    bundle_path: Option<&Path>,
    inputs: &[PathBuf],
    cv: bool,
    params: &EvalParams,
    json: bool,
) -> Result<()> {
    let Inputs { bundle, traces } = load_inputs(bundle_path, inputs)?;
    if params.strategies.is_empty() {
        bail!("--strategies is empty");
    }
    let results = held_out(bundle.as_ref(), &traces, cv, |b, name, t| {
        evaluate_trace(b, name, t, params)
    })?;
    let summary = summarize(&results);
    if json {
        let doc = serde_json::json!({
            "bandwidth_bits_per_s": params.link.bits_per_s,
            "piece_size": params.granularity.piece_size(),
            "block_size": params.granularity.block_size(),
            "rtt_us": params.link.rtt_us,
            "think_us": params.link.think_us,
            "cross_validated": cv,
            "traces": results,
            "summary": summary,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_results(&results, &summary, params, cv);
    }
    Ok(())
}

fn eval_curve(
    bundle_path: Option<&Path>,
    inputs: &[PathBuf],
    cv: bool,
    params: &CurveParams,
    json: bool,
) -> Result<()> {
    let Inputs { bundle, traces } = load_inputs(bundle_path, inputs)?;
    let configs = params.configurations()?;
    let per_trace = held_out(bundle.as_ref(), &traces, cv, |b, name, t| {
        evaluate_trace_curve(b, name, t, params, &configs)
    })?;
    let curve = size_curve(traces[0].1.image.size, params, &configs, &per_trace);
    if json {
        let doc = serde_json::json!({
            "bandwidth_bits_per_s": params.base.link.bits_per_s,
            "rtt_us": params.base.link.rtt_us,
            "think_us": params.base.link.think_us,
            "cross_validated": cv,
            "curve": curve,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_curve(&curve, params, cv);
    }
    Ok(())
}

fn secs(us: f64) -> String {
    format!("{:.2}", us / 1e6)
}

/// A trace's file name, for tables.
fn short_name(trace: &str) -> String {
    Path::new(trace)
        .file_name()
        .map_or(trace.to_string(), |n| n.to_string_lossy().into_owned())
}

fn describe_link(link: &LinkParams) -> String {
    format!(
        "{:.0} Mbit/s, round trip {:.2} ms, think {}s",
        link.bits_per_s / 1e6,
        link.rtt_us as f64 / 1e3,
        secs(link.think_us as f64)
    )
}

fn print_results(results: &[TraceResult], summary: &Summary, params: &EvalParams, cv: bool) {
    println!(
        "{} traces, {}, {}{}; completion / stall in seconds",
        results.len(),
        describe_link(&params.link),
        params.granularity,
        if cv { ", leave-one-run-out" } else { "" }
    );
    print!("{:<28} {:>8}", "trace", "local");
    for s in &params.strategies {
        print!(" {:>15}", s.name());
    }
    println!();
    for r in results {
        print!(
            "{:<28} {:>8}",
            short_name(&r.trace),
            secs(r.local_us as f64)
        );
        for (_, o) in &r.outcomes {
            print!(
                " {:>15}",
                format!(
                    "{}/{}",
                    secs(o.completion_us as f64),
                    secs(o.stall_us as f64)
                )
            );
        }
        println!();
    }
    print!("{:<28} {:>8}", "mean", "");
    for s in &summary.strategies {
        print!(
            " {:>15}",
            format!("{}/{}", secs(s.mean_completion_us), secs(s.mean_stall_us))
        );
    }
    println!();
    println!("bytes fetched by the end of each trace / bytes it read");
    print!("{:<28} {:>8}", "trace", "MB read");
    for s in &params.strategies {
        print!(" {:>15}", s.name());
    }
    println!();
    let ratio = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
    for r in results {
        let read = r.outcomes.first().map_or(0, |(_, o)| o.bytes_read);
        print!("{:<28} {:>8.1}", short_name(&r.trace), read as f64 / 1e6);
        for (_, o) in &r.outcomes {
            print!(" {:>15}", ratio(o.fetched_per_read()));
        }
        println!();
    }
    print!("{:<28} {:>8}", "mean", "");
    for s in &summary.strategies {
        print!(" {:>15}", ratio(s.mean_fetched_per_read));
    }
    println!();
    if !summary.markov_completion_ratio.is_empty() {
        // A ratio to a strategy that (as good as) never stalled is undefined: print the
        // difference in seconds beside every ratio, and only the difference there.
        let fmt = |v: &[(Strategy, Ratio)]| {
            v.iter()
                .map(|(s, r)| match r.ratio {
                    Some(x) => format!("/{s} {x:.3} ({:+.2}s)", r.excess_us / 1e6),
                    None => format!(
                        "/{s} n/a ({:+.2}s; {s} < {:.2}s)",
                        r.excess_us / 1e6,
                        Ratio::FLOOR_US / 1e6
                    ),
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        println!(
            "markov completion ratio: {}",
            fmt(&summary.markov_completion_ratio)
        );
        let over = if results.iter().any(|r| r.session) {
            "sessions"
        } else {
            "all traces"
        };
        println!(
            "markov stall ratio ({over}): {}",
            fmt(&summary.markov_stall_ratio)
        );
    }
    for a in &summary.accuracy {
        if a.segments > 0 {
            println!(
                "inference accuracy after {} reads: {:.1}% of {} task segments",
                a.after_reads,
                100.0 * a.hits as f64 / a.segments as f64,
                a.segments
            );
        }
    }
}

fn print_curve(curve: &Curve, params: &CurveParams, cv: bool) {
    println!(
        "size curve: {} traces, {}, image {}{}",
        curve.traces,
        describe_link(&params.base.link),
        human_bytes(curve.image_bytes),
        if cv { ", leave-one-run-out" } else { "" }
    );
    println!(
        "per strategy: mean stall in seconds and bytes fetched / bytes read; seedable: share of markov's bytes fetched in complete pieces by the end of a trace (peers trade only those); costs: pieces, hash bytes (SHA-1 per piece + SHA-256 per block), bitfield and HAVE bytes per peer"
    );
    print!(
        "{:>8} {:>7} {:>8} {:>10} {:>9} {:>10}",
        "piece", "blocks", "pieces", "hashes", "bitfield", "HAVEs"
    );
    for s in CURVE_STRATEGIES {
        print!(" {:>13}", s.name());
    }
    println!(" {:>9}", "seedable");
    for p in &curve.points {
        let g = p.granularity;
        print!(
            "{:>8} {:>7} {:>8} {:>10} {:>9} {:>10}",
            human_bytes(g.piece_size() as u64).replace(' ', ""),
            g.block_size()
                .map_or("none".to_string(), |b| human_bytes(b as u64)
                    .replace(' ', "")),
            p.costs.pieces,
            human_bytes(p.costs.torrent_bytes),
            human_bytes(p.costs.bitfield_bytes),
            human_bytes(p.costs.have_bytes_per_peer),
        );
        for s in CURVE_STRATEGIES {
            match p.strategy(s) {
                Some(x) => print!(
                    " {:>13}",
                    format!(
                        "{} {}",
                        secs(x.mean_stall_us),
                        x.mean_fetched_per_read
                            .map_or("-".to_string(), |r| format!("{r:.2}x"))
                    )
                ),
                None => print!(" {:>13}", "-"),
            }
        }
        let seedable = p
            .strategy(Strategy::Markov)
            .and_then(|m| m.mean_seedable_share);
        println!(
            " {:>9}",
            seedable.map_or("-".to_string(), |x| format!("{:.0}%", x * 100.0))
        );
    }
    match &curve.recommendation {
        Some(r) => {
            println!("recommended: {}", r.reason);
            match &r.stock {
                Some(s) if s.granularity != r.choice.granularity => println!(
                    "without a block table (a stock torrent): {}, markov stall {:.3} s, {:.0}% seedable, {} pieces, {} of hashes",
                    s.granularity,
                    s.markov_stall_us / 1e6,
                    s.markov_seedable_share * 100.0,
                    s.costs.pieces,
                    human_bytes(s.costs.torrent_bytes)
                ),
                Some(_) => {}
                None => println!(
                    "without a block table (a stock torrent) no piece size comes within {:.0}% of the best stall with {:.0}% seedable",
                    curve.tolerance * 100.0,
                    curve.min_seedable_share * 100.0
                ),
            }
        }
        None => println!("no recommendation: markov did not run"),
    }
}

fn synth(
    out: &Path,
    params: SynthParams,
    runs: u32,
    sessions: u32,
    session_len: usize,
    csv: bool,
) -> Result<()> {
    if params.tasks == 0 {
        bail!("--tasks must be at least 1");
    }
    if params.image_bytes < 4 << 20 {
        bail!("--image-size must be at least 4MiB");
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
    let img = SynthImage::new(params);
    let traces = img.corpus(runs, sessions, session_len.max(1));
    for t in &traces {
        let stem = format!("{}-{}", t.label, t.run);
        if csv {
            let p = out.join(format!("{stem}.csv"));
            std::fs::write(&p, t.to_csv()).with_context(|| format!("{}", p.display()))?;
        } else {
            let p = out.join(format!("{stem}.{TRACE_EXTENSION}"));
            t.save(&p)?;
        }
    }
    println!(
        "wrote {} traces of image {} to {}",
        traces.len(),
        img.image,
        out.display()
    );
    Ok(())
}

/// Peak resident set size of this process, from /proc/self/status.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn bench_fit(n: usize, image_size: u64, tasks: usize) -> Result<()> {
    if tasks == 0 || n == 0 {
        bail!("--traces and --tasks must be at least 1");
    }
    if image_size < 4 << 20 {
        bail!("--image-size must be at least 4MiB");
    }
    let gen = Instant::now();
    let img = SynthImage::new(SynthParams::new(image_size, tasks));
    let traces: Vec<(String, Trace)> = (0..n)
        .map(|i| {
            let t = img.task_run(i % tasks, (i / tasks) as u32 + 1, i as u64);
            (format!("synth-{i}.{TRACE_EXTENSION}"), t)
        })
        .collect();
    let records: usize = traces.iter().map(|(_, t)| t.records.len()).sum();
    let gen_s = gen.elapsed().as_secs_f64();
    let hwm_before = vm_hwm_kib().unwrap_or(0);
    let start = Instant::now();
    let bundle = BundleParams::new(BlockGeometry::DEFAULT_BLOCK_SIZE)
        .check()?
        .fit(&traces, |_| {})?;
    let fit_s = start.elapsed().as_secs_f64();
    let hwm = vm_hwm_kib().unwrap_or(0);
    let tmp = std::env::temp_dir().join(format!(
        "vmt-bench-{}.{BUNDLE_EXTENSION}",
        std::process::id()
    ));
    bundle.save(&tmp)?;
    let size = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&tmp);
    println!(
        "bench-fit: {n} traces ({records} records) of a {} MiB image, {tasks} tasks",
        image_size >> 20
    );
    println!(
        "generate: {gen_s:.2}s; VmHWM after generating: {} MiB",
        hwm_before / 1024
    );
    println!(
        "fit: {fit_s:.2}s; {} profiles, purity {:.3}, silhouette {:.2}; peak memory (VmHWM) {} MiB; bundle {} KiB",
        bundle.profiles.len(),
        bundle.meta.purity,
        bundle.meta.silhouette,
        hwm / 1024,
        size / 1024
    );
    Ok(())
}
