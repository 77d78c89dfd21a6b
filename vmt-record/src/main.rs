//! `vmt-record`: record per-task block-access traces of an appliance image through FUSE.
//!
//! Glue over `vmt_fs::Recording` and `vmt_formats::trace`: parse flags, identify the image, start a recording,
//! run the task or wait for the session's end, print summaries. Signals (Ctrl-C, SIGTERM) stop
//! the task and the session cleanly: the mount is taken down and the trace saved.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vmt_formats::image::{BlockGeometry, IdCache, ImageId};
use vmt_formats::trace::{Trace, TraceKind};
use vmt_fs::{Recording, RecordingParams};

#[derive(Parser)]
#[command(
    name = "vmt-record",
    version,
    about = "Record which blocks of an appliance image each task reads and writes",
    long_about = "Record which blocks of an appliance image each task reads and writes.\n\n\
        The image is served through a FUSE mount as one file; every read and write the kernel \
        sends is logged with its time, offset and length. Writes go to a throwaway \
        copy-on-write overlay: the image itself is never modified. Traces feed vmt-train."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args)]
struct ImageArgs {
    /// The raw appliance image (never modified).
    #[arg(long)]
    image: PathBuf,
    /// SHA-256 of the image, if known, to skip hashing it.
    #[arg(long, value_name = "HEX")]
    image_sha256: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Record one run of a task: mount, run CMD, unmount, write DIR/TASK-<run>.vmtrace.
    ///
    /// CMD runs with VMT_IMAGE set to the served image file (e.g. loop-mount it, or boot a VM
    /// from it) and VMT_MOUNTPOINT to the mount. Its exit status is passed through.
    Run {
        #[command(flatten)]
        image: ImageArgs,
        /// Task label (also the trace file name); letters, digits, '-', '_', '.'.
        #[arg(long)]
        task: String,
        /// Directory for trace files (created if missing). Run numbers count up; nothing is
        /// overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Mount here instead of a temporary directory (must be an empty directory).
        #[arg(long)]
        mountpoint: Option<PathBuf>,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// The task's command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// Record a session of several tasks on one mount, until `vmt-record stop` or Ctrl-C.
    ///
    /// Start each task with `vmt-record mark --mountpoint DIR TASK` (equivalently
    /// `echo "mark TASK" > DIR/.vmt-control`); accesses carry the label of the latest mark.
    /// Writes DIR/NAME-<run>.vmtrace.
    Session {
        #[command(flatten)]
        image: ImageArgs,
        /// Directory for trace files (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Where to mount (an empty directory). Printed at start if omitted.
        #[arg(long)]
        mountpoint: Option<PathBuf>,
        /// Session name (the trace file name).
        #[arg(long, default_value = "session")]
        name: String,
        /// Label of accesses before the first mark.
        #[arg(long, default_value = "unmarked")]
        first_task: String,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Start the next task of the session mounted at DIR.
    Mark {
        /// The session's mountpoint.
        #[arg(long)]
        mountpoint: PathBuf,
        /// The task now starting.
        task: String,
    },
    /// End the session mounted at DIR (it unmounts and writes its trace).
    Stop {
        /// The session's mountpoint.
        #[arg(long)]
        mountpoint: PathBuf,
    },
    /// Summarize traces: reads, writes, distinct blocks, bytes, share of the image, duration.
    Show {
        /// Trace files.
        #[arg(required = true)]
        traces: Vec<PathBuf>,
        /// Block size for counting distinct blocks.
        #[arg(long, default_value_t = 4096)]
        block_size: u32,
    },
    /// Compare tasks across traces: per task label its runs, distinct blocks and share of the
    /// image, and the mean Jaccard similarity of block sets between (and within) tasks.
    Tasks {
        /// Trace files (task runs and sessions; session segments count as runs of their task).
        #[arg(required = true)]
        traces: Vec<PathBuf>,
        /// Block size.
        #[arg(long, default_value_t = 4096)]
        block_size: u32,
    },
    /// Print a trace as CSV (t_us,op,offset,len[,task] with '#' header lines).
    Export {
        /// The trace file.
        trace: PathBuf,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Convert CSV (see export) or blkparse text output into a trace file.
    ///
    /// The image identity comes from --image (hashed), else --image-bytes (recorded as "size
    /// only": such a trace only matches other size-only traces of that size), else the CSV's own
    /// '# image_bytes=' / '# image_sha256=' lines.
    Import {
        /// CSV or blkparse text file.
        input: PathBuf,
        /// Output trace file.
        #[arg(long)]
        out: PathBuf,
        /// The image the accesses were made on.
        #[arg(long, conflicts_with = "image_bytes")]
        image: Option<PathBuf>,
        /// SHA-256 of --image, if known, to skip hashing it.
        #[arg(long, value_name = "HEX", requires = "image")]
        image_sha256: Option<String>,
        /// Image size in bytes, when the image is not at hand.
        #[arg(long)]
        image_bytes: Option<u64>,
        /// Input format.
        #[arg(long, value_enum, default_value = "auto")]
        format: Format,
        /// Task label for blkparse input (default: the input's file stem).
        #[arg(long)]
        task: Option<String>,
    },
    /// Benchmark the recorder's overhead: read throughput through the recording mount versus
    /// the raw image file, sequential (128 KiB) and random (4 KiB), warm and cold cache.
    Bench {
        /// Image to read (default: a generated file of --size MiB of random bytes).
        #[arg(long)]
        image: Option<PathBuf>,
        /// Size of the generated image in MiB.
        #[arg(long, default_value_t = 512)]
        size: u64,
        /// Repetitions of each pass (the best is kept).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Compare this file (e.g. the image served by a vmt-run mount) with --image instead
        /// of mounting a recorder; "warm" then means both files' pages are cached.
        #[arg(long, value_name = "FILE", requires = "image")]
        against: Option<PathBuf>,
    },
    /// Replay a trace's reads against a file and report completion and stall time.
    ///
    /// Reads are issued in recorded order, one at a time, keeping the recorded compute gaps; a
    /// slow read delays everything after it. Stall time is completion minus the trace's own
    /// duration minus inserted think time. Writes are not replayed. Use it on a vmt-run mount,
    /// the raw image, or a network mount to compare runtimes on the same trace.
    Replay {
        /// The trace to replay.
        #[arg(long)]
        trace: PathBuf,
        /// The file to read (at least as large as the trace's image).
        #[arg(long)]
        file: PathBuf,
        /// Idle time inserted at each task boundary of a session trace (e.g. 5s, 500ms).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        think: Duration,
        /// Evict FILE from the page cache first (a cold local disk).
        #[arg(long)]
        cold: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a small demo appliance, record a task on it, and print the trace summary.
    Demo,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// Decide from the content.
    Auto,
    /// vmt's CSV interchange format.
    Csv,
    /// blkparse default text output (512-byte sectors).
    Blkparse,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMT_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmt-record: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Run {
            image,
            task,
            out,
            mountpoint,
            threads,
            cmd,
        } => record_task(&image, task, out, mountpoint, threads, &cmd),
        Cmd::Session {
            image,
            out,
            mountpoint,
            name,
            first_task,
            threads,
        } => record_session(&image, name, first_task, out, mountpoint, threads),
        Cmd::Mark { mountpoint, task } => {
            vmt_fs::validate_task_name(&task)?;
            control(&mountpoint, &format!("mark {task}\n"))
        }
        Cmd::Stop { mountpoint } => control(&mountpoint, "stop\n"),
        Cmd::Show { traces, block_size } => show(&traces, block_size),
        Cmd::Tasks { traces, block_size } => tasks_table(&traces, block_size),
        Cmd::Export { trace, out } => {
            let t = Trace::load(&trace)?;
            match out {
                Some(p) => std::fs::write(&p, t.to_csv())
                    .with_context(|| format!("writing {}", p.display()))?,
                None => print_stdout(&t.to_csv())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Import {
            input,
            out,
            image,
            image_sha256,
            image_bytes,
            format,
            task,
        } => import(&input, &out, image, image_sha256, image_bytes, format, task),
        Cmd::Bench {
            image,
            size,
            repeat,
            against,
        } => bench(image, size, repeat, against),
        Cmd::Replay {
            trace,
            file,
            think,
            cold,
            json,
        } => {
            let t = Trace::load(&trace)?;
            let report = vmt_appliance::replay::replay(
                &t,
                &file,
                vmt_appliance::replay::ReplayParams { think, cold },
            )
            .with_context(|| format!("replaying {} against {}", trace.display(), file.display()))?;
            if json {
                print_stdout(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                let mut out = format!(
                    "{}: {} reads, {:.1} MiB; completion {:.3} s = trace {:.3} s + think {:.3} s + stall {:.3} s; read latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
                    report.trace,
                    report.reads,
                    report.bytes as f64 / (1 << 20) as f64,
                    report.completion_s,
                    report.trace_s,
                    report.think_s,
                    report.stall_s,
                    report.read_p50_s * 1e3,
                    report.read_p99_s * 1e3,
                    report.read_max_s * 1e3
                );
                for s in &report.segments {
                    out.push_str(&format!(
                        "  {:<12} {:>6} reads  recorded {:>8.3} s  replayed {:>8.3} s  stall {:>8.3} s\n",
                        s.task, s.reads, s.recorded_s, s.replayed_s, s.stall_s
                    ));
                }
                print_stdout(&out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo => demo(),
    }
}

/// Parses "5s", "500ms", "2m", "1.5" (seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s or 500ms"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "s" => v,
        "m" | "min" => v * 60.0,
        "us" => v / 1e6,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (use us, ms, s, m)")),
    };
    if !(0.0..=1e7).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// The image's identity: from --image-sha256, else the per-user cache, else hashed with a bar.
fn identify(image: &Path, sha: Option<&str>) -> Result<ImageId> {
    let meta = std::fs::metadata(image).with_context(|| format!("image {}", image.display()))?;
    if !meta.is_file() {
        bail!("image {} is not a regular file", image.display());
    }
    if meta.len() == 0 {
        bail!("image {} is empty", image.display());
    }
    if let Some(hex) = sha {
        return ImageId::from_hex(meta.len(), hex)
            .with_context(|| format!("--image-sha256 {hex:?} is not 64 hex digits"));
    }
    let bar = ProgressBar::new(meta.len()).with_style(
        ProgressStyle::with_template(
            "hashing image {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let id = IdCache::user()
        .identify(image, |done| bar.set_position(done))
        .with_context(|| format!("hashing {}", image.display()))?;
    bar.finish_and_clear();
    Ok(id)
}

/// SIGINT/SIGTERM set a flag the waiting loops poll; a second signal is not needed.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handlers")?;
    }
    Ok(flag)
}

fn record_task(
    image: &ImageArgs,
    task: String,
    out: PathBuf,
    mountpoint: Option<PathBuf>,
    threads: usize,
    cmd: &[OsString],
) -> Result<ExitCode> {
    vmt_fs::validate_task_name(&task)?;
    let stop = stop_flag()?;
    let image_id = identify(&image.image, image.image_sha256.as_deref())?;
    let recording = Recording::start(RecordingParams {
        image: image.image.clone(),
        image_id,
        out_dir: out,
        label: task.clone(),
        kind: TraceKind::Task,
        first_task: task,
        mountpoint,
        threads,
    })?;
    let spawned = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("VMT_IMAGE", recording.served_path())
        .env("VMT_MOUNTPOINT", recording.mountpoint())
        .spawn();
    let code = match spawned {
        Err(e) => {
            let path = recording.trace_path().to_owned();
            drop(recording);
            let _ = std::fs::remove_file(&path);
            bail!("running {:?}: {e}", cmd[0]);
        }
        Ok(mut child) => wait_child(&mut child, &stop)?,
    };
    let trace = recording.finish()?;
    eprintln!("{}", summary_line(&trace, trace_path_hint(&trace)));
    Ok(code)
}

fn trace_path_hint(trace: &Trace) -> String {
    format!("{}-{}", trace.label, trace.run)
}

/// Waits for the task; on a signal, asks it to stop (SIGTERM), then kills it after 10 s.
fn wait_child(child: &mut std::process::Child, stop: &AtomicBool) -> Result<ExitCode> {
    let mut deadline: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            use std::os::unix::process::ExitStatusExt;
            let code = match (status.code(), status.signal()) {
                (Some(c), _) => c,
                (None, Some(sig)) => 128 + sig,
                _ => 1,
            };
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        if stop.load(Ordering::SeqCst) {
            match deadline {
                None => {
                    eprintln!("vmt-record: stopping the task (saving the trace)");
                    // SAFETY: kill with a valid pid and signal has no memory effects.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    deadline = Some(Instant::now() + Duration::from_secs(10));
                }
                Some(d) if Instant::now() > d => {
                    let _ = child.kill();
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn record_session(
    image: &ImageArgs,
    name: String,
    first_task: String,
    out: PathBuf,
    mountpoint: Option<PathBuf>,
    threads: usize,
) -> Result<ExitCode> {
    vmt_fs::validate_task_name(&name)?;
    vmt_fs::validate_task_name(&first_task)?;
    let stop = stop_flag()?;
    let image_id = identify(&image.image, image.image_sha256.as_deref())?;
    let recording = Recording::start(RecordingParams {
        image: image.image.clone(),
        image_id,
        out_dir: out,
        label: name,
        kind: TraceKind::Session,
        first_task,
        mountpoint,
        threads,
    })?;
    eprintln!(
        "recording session into {}\nimage served at {}\nmark tasks with: vmt-record mark --mountpoint {} TASK\nstop with: vmt-record stop --mountpoint {} (or Ctrl-C)",
        recording.trace_path().display(),
        recording.served_path().display(),
        recording.mountpoint().display(),
        recording.mountpoint().display(),
    );
    while !stop.load(Ordering::SeqCst) && !recording.stop_requested() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let trace = recording.finish()?;
    eprintln!("{}", summary_line(&trace, trace_path_hint(&trace)));
    Ok(ExitCode::SUCCESS)
}

fn control(mountpoint: &Path, line: &str) -> Result<ExitCode> {
    let path = mountpoint.join(vmt_fs::CONTROL_FILE);
    if !path.exists() {
        bail!(
            "no vmt-record session is mounted at {}",
            mountpoint.display()
        );
    }
    std::fs::write(&path, line).with_context(|| format!("writing {}", path.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn summary_line(trace: &Trace, name: String) -> String {
    match BlockGeometry::new(trace.image.size, 4096) {
        Ok(g) => {
            let s = trace.summary(&g);
            format!(
                "{name}: {} reads, {} writes, {} distinct 4 KiB blocks ({:.2}% of the image), {:.1} MiB read, {:.3} s",
                s.reads,
                s.writes,
                s.distinct_blocks,
                100.0 * s.distinct_blocks as f64 / s.image_blocks as f64,
                s.read_bytes as f64 / (1 << 20) as f64,
                s.duration_us as f64 / 1e6
            )
        }
        Err(e) => format!("{name}: {e}"),
    }
}

fn show(traces: &[PathBuf], block_size: u32) -> Result<ExitCode> {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<28} {:<8} {:>8} {:>8} {:>10} {:>12} {:>8} {:>10}  {}\n",
        "trace", "kind", "reads", "writes", "blocks", "bytes", "image%", "seconds", "tasks"
    ));
    for path in traces {
        let t = Trace::load(path)?;
        let g = BlockGeometry::new(t.image.size, block_size)?;
        let s = t.summary(&g);
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        out.push_str(&format!(
            "{:<28} {:<8} {:>8} {:>8} {:>10} {:>12} {:>7.2}% {:>10.3}  {}\n",
            name,
            match t.kind {
                TraceKind::Task => "task",
                TraceKind::Session => "session",
            },
            s.reads,
            s.writes,
            s.distinct_blocks,
            s.read_bytes + s.written_bytes,
            100.0 * s.distinct_blocks as f64 / s.image_blocks as f64,
            s.duration_us as f64 / 1e6,
            t.tasks.join(",")
        ));
    }
    print_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Markdown tables: per task, and task-to-task similarity.
fn tasks_table(traces: &[PathBuf], block_size: u32) -> Result<ExitCode> {
    use std::collections::BTreeMap;
    let mut runs: BTreeMap<String, Vec<Vec<u32>>> = BTreeMap::new();
    let mut image: Option<(ImageId, PathBuf)> = None;
    for path in traces {
        let t = Trace::load(path)?;
        match &image {
            None => image = Some((t.image, path.clone())),
            Some((id, first)) if *id != t.image => bail!(
                "{} belongs to another image ({}) than {} ({})",
                path.display(),
                t.image,
                first.display(),
                id
            ),
            Some(_) => {}
        }
        let g = BlockGeometry::new(t.image.size, block_size)?;
        for (task, blocks) in t.blocks_by_task(&g) {
            runs.entry(task.to_string()).or_default().push(blocks);
        }
    }
    let Some((id, _)) = image else {
        bail!("no traces")
    };
    let total = BlockGeometry::new(id.size, block_size)?.block_count() as f64;
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mut out = String::from(
        "| task | runs | mean distinct blocks | mean share of image | blocks in any run |\n|---|---:|---:|---:|---:|\n",
    );
    for (task, sets) in &runs {
        let sizes: Vec<f64> = sets.iter().map(|s| s.len() as f64).collect();
        let mut union: Vec<u32> = sets.concat();
        union.sort_unstable();
        union.dedup();
        out.push_str(&format!(
            "| {task} | {} | {:.0} | {:.2}% | {} |\n",
            sets.len(),
            mean(&sizes),
            100.0 * mean(&sizes) / total,
            union.len()
        ));
    }
    let names: Vec<&String> = runs.keys().collect();
    out.push_str("\nMean Jaccard similarity of block sets between runs (diagonal: between runs of the same task)\n\n|   |");
    for n in &names {
        out.push_str(&format!(" {n} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(names.len()));
    out.push('\n');
    for a in &names {
        out.push_str(&format!("| {a} |"));
        for b in &names {
            let mut sims = Vec::new();
            for (i, x) in runs[*a].iter().enumerate() {
                for (j, y) in runs[*b].iter().enumerate() {
                    if a != b || i < j {
                        sims.push(vmt_formats::trace::jaccard(x, y));
                    }
                }
            }
            out.push_str(&format!(" {:.2} |", mean(&sims)));
        }
        out.push('\n');
    }
    print_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn import(
    input: &Path,
    out: &Path,
    image: Option<PathBuf>,
    image_sha256: Option<String>,
    image_bytes: Option<u64>,
    format: Format,
    task: Option<String>,
) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let id = match (&image, image_bytes) {
        (Some(img), _) => Some(identify(img, image_sha256.as_deref())?),
        (None, Some(0)) => bail!("--image-bytes must be positive"),
        (None, Some(n)) => Some(ImageId::size_only(n)),
        (None, None) => None,
    };
    let blkparse = match format {
        Format::Csv => false,
        Format::Blkparse => true,
        // blkparse lines start with "maj,min" and carry an action letter; CSV never has spaces
        // between its first fields.
        Format::Auto => text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.split_whitespace().count() >= 7),
    };
    let trace = if blkparse {
        let id = id.context("blkparse input needs --image or --image-bytes")?;
        let label = match task {
            Some(t) => t,
            None => input
                .file_stem()
                .map_or_else(|| "imported".into(), |s| s.to_string_lossy().into_owned()),
        };
        vmt_fs::validate_task_name(&label)?;
        Trace::from_blkparse(input, &text, id, &label)?
    } else {
        Trace::from_csv(input, &text, id)?
    };
    trace.save(out)?;
    if trace.image.is_size_only() {
        eprintln!(
            "note: recorded image identity is size only ({} bytes); such a trace matches only other size-only traces of that size",
            trace.image.size
        );
    }
    eprintln!("{}", summary_line(&trace, out.display().to_string()));
    Ok(ExitCode::SUCCESS)
}

fn bench(
    image: Option<PathBuf>,
    size_mib: u64,
    repeat: usize,
    against: Option<PathBuf>,
) -> Result<ExitCode> {
    use vmt_appliance::throughput::{drop_cache, measure, Pattern};
    let tmp = tempfile::Builder::new().prefix("vmt-bench-").tempdir()?;
    let image = match image {
        Some(p) => p,
        None => {
            let p = tmp.path().join("bench.img");
            eprintln!("generating a {size_mib} MiB image of random bytes");
            let mut f = std::fs::File::create(&p)?;
            let mut state = 0x1234_5678_9abc_def1u64;
            let mut chunk = vec![0u8; 1 << 20];
            for _ in 0..size_mib {
                for w in chunk.chunks_exact_mut(8) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    w.copy_from_slice(&state.to_le_bytes());
                }
                std::io::Write::write_all(&mut f, &chunk)?;
            }
            f.sync_all()?;
            p
        }
    };
    let image_id = ImageId::size_only(std::fs::metadata(&image)?.len());
    let recording = match &against {
        Some(_) => None,
        None => Some(Recording::start(RecordingParams {
            image: image.clone(),
            image_id,
            out_dir: tmp.path().join("traces"),
            label: "bench".into(),
            kind: TraceKind::Task,
            first_task: "bench".into(),
            mountpoint: None,
            threads: 4,
        })?),
    };
    let served = match (&against, &recording) {
        (Some(path), _) => path.clone(),
        (None, Some(r)) => r.served_path().to_owned(),
        (None, None) => unreachable!("a recording exists without --against"),
    };
    let passes = [
        (
            "sequential 128 KiB",
            Pattern::Sequential { chunk: 128 << 10 },
        ),
        (
            "random 4 KiB",
            Pattern::Random {
                chunk: 4096,
                count: 20_000,
                seed: 7,
            },
        ),
    ];
    println!(
        "{:<20} {:<5} {:>12} {:>12} {:>8}",
        "pattern",
        "cache",
        "raw MiB/s",
        if against.is_some() {
            "file MiB/s"
        } else {
            "fuse MiB/s"
        },
        if against.is_some() {
            "file/raw"
        } else {
            "fuse/raw"
        }
    );
    for (name, pattern) in passes {
        for cold in [false, true] {
            let mut best = [0f64; 2];
            for _ in 0..repeat.max(1) {
                for (i, path) in [&image, &served].into_iter().enumerate() {
                    if cold {
                        drop_cache(&image)?;
                        if against.is_some() {
                            drop_cache(&served)?;
                        }
                    } else {
                        measure(path, Pattern::Sequential { chunk: 1 << 20 })?;
                    }
                    let pass = measure(path, pattern)?;
                    best[i] = best[i].max(pass.mib_per_s());
                }
            }
            println!(
                "{:<20} {:<5} {:>12.1} {:>12.1} {:>8.3}",
                name,
                if cold { "cold" } else { "warm" },
                best[0],
                best[1],
                best[1] / best[0]
            );
        }
    }
    if let Some(recording) = recording {
        let accesses = recording.accesses();
        recording.finish()?;
        println!("({accesses} accesses recorded through the mount)");
    }
    Ok(ExitCode::SUCCESS)
}

fn demo() -> Result<ExitCode> {
    use vmt_appliance::ext4::{build_demo, LoopMount};
    let tmp = tempfile::Builder::new().prefix("vmt-demo-").tempdir()?;
    eprintln!(
        "building a demo appliance with mkfs.ext4 -d in {}",
        tmp.path().display()
    );
    let app = build_demo(tmp.path())?;
    let image_id = identify(&app.image, None)?;
    let out = tmp.path().join("traces");
    let mut paths = Vec::new();
    for task in &app.tasks {
        let recording = Recording::start(RecordingParams {
            image: app.image.clone(),
            image_id,
            out_dir: out.clone(),
            label: task.name.to_string(),
            kind: TraceKind::Task,
            first_task: task.name.to_string(),
            mountpoint: None,
            threads: 4,
        })?;
        let mnt = tmp.path().join(format!("mnt-{}", task.name));
        let lm = LoopMount::new(recording.served_path(), &mnt)?;
        let bytes = lm.read_files(&task.files)?;
        lm.unmount()?;
        let trace = recording.finish()?;
        eprintln!(
            "task {:<9} read {} files ({:.1} MiB) through a loop mount of the served image",
            task.name,
            task.files.len(),
            bytes as f64 / (1 << 20) as f64
        );
        paths.push(out.join(format!("{}-{}.vmtrace", trace.label, trace.run)));
    }
    show(&paths, 4096)
}
