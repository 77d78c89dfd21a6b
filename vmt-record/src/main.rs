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
use vmt_formats::image::{IdCache, ImageId};
use vmt_formats::trace::{Trace, TraceKind};
use vmt_formats::units::{self, Size};
use vmt_fs::{Recording, RecordingParams};

#[derive(Parser)]
#[command(
    name = "vmt-record",
    version,
    about = "Record which blocks of an appliance image each task reads and writes",
    long_about = "Record which blocks of an appliance image each task reads and writes.\n\n\
        The image is served through a FUSE mount as one file; every read and write the kernel \
        sends is logged with its time, offset and length. Writes go to a throwaway \
        copy-on-write overlay: the image itself is never modified. Traces feed vmt-train.",
    after_help = units::HELP
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
        /// Block size for counting distinct blocks, e.g. 4096 or 4KiB.
        #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = units::parse_size_u32)]
        block_size: u32,
    },
    /// Compare tasks across traces: per task label its runs, distinct blocks and share of the
    /// image, and the mean Jaccard similarity of block sets between (and within) tasks.
    Tasks {
        /// Trace files (task runs and sessions; session segments count as runs of their task).
        #[arg(required = true)]
        traces: Vec<PathBuf>,
        /// Block size, e.g. 4096 or 4KiB.
        #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = units::parse_size_u32)]
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
        /// Image size, when the image is not at hand: bytes, or with a unit (2GiB, 2GB).
        #[arg(long, value_name = "SIZE")]
        image_bytes: Option<Size>,
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
        /// Image to read (default: a generated file of --size random bytes).
        #[arg(long)]
        image: Option<PathBuf>,
        /// Size of the generated image, e.g. 512MiB or 1GB (at least 1MiB).
        #[arg(long, value_name = "SIZE", default_value = "512MiB")]
        size: Size,
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
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = units::parse_duration)]
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
        // Colour codes only for a terminal: in a log file or a pipe they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
        } => import(
            &input,
            &out,
            image,
            image_sha256,
            image_bytes.map(Size::bytes),
            format,
            task,
        ),
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
                print_stdout(&report.to_string())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo => demo(),
    }
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
    vmt_formats::summary::one_line(trace, &name)
}

/// Loads every trace, named by `name` (the file name, or the whole path).
fn load_all(paths: &[PathBuf], name: impl Fn(&Path) -> String) -> Result<Vec<(String, Trace)>> {
    paths
        .iter()
        .map(|p| Ok((name(p), Trace::load(p)?)))
        .collect()
}

fn show(traces: &[PathBuf], block_size: u32) -> Result<ExitCode> {
    let file_name = |p: &Path| {
        p.file_name()
            .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
    };
    let traces = load_all(traces, file_name)?;
    print_stdout(&vmt_formats::summary::traces_table(&traces, block_size)?)?;
    Ok(ExitCode::SUCCESS)
}

/// Markdown tables: per task, and task-to-task similarity.
fn tasks_table(traces: &[PathBuf], block_size: u32) -> Result<ExitCode> {
    let traces = load_all(traces, |p| p.display().to_string())?;
    let table = vmt_formats::summary::TaskTable::new(&traces, block_size)?;
    print_stdout(&table.to_string())?;
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
    let text = vmt_formats::text::read_text(input, "trace text", vmt_formats::text::MAX_TEXT_LEN)?;
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
    size: Size,
    repeat: usize,
    against: Option<PathBuf>,
) -> Result<ExitCode> {
    use vmt_appliance::throughput::{bench_image, compare};
    let tmp = tempfile::Builder::new().prefix("vmt-bench-").tempdir()?;
    let image = match image {
        Some(p) => p,
        None => {
            eprintln!("generating a {size} image of random bytes");
            bench_image(tmp.path(), size.bytes())?
        }
    };
    let recording = match &against {
        Some(_) => None,
        None => Some(Recording::start(RecordingParams {
            image: image.clone(),
            image_id: ImageId::size_only(std::fs::metadata(&image)?.len()),
            out_dir: tmp.path().join("traces"),
            label: "bench".into(),
            kind: TraceKind::Task,
            first_task: "bench".into(),
            mountpoint: None,
            threads: 4,
        })?),
    };
    let (served, what) = match (&against, &recording) {
        (Some(path), _) => (path.clone(), "file"),
        (None, Some(r)) => (r.served_path().to_owned(), "fuse"),
        (None, None) => unreachable!("a recording exists without --against"),
    };
    println!(
        "{:<20} {:<5} {:>12} {:>12} {:>8}",
        "pattern",
        "cache",
        "raw MiB/s",
        format!("{what} MiB/s"),
        format!("{what}/raw")
    );
    compare(&image, &served, against.is_some(), repeat, |row| {
        println!(
            "{:<20} {:<5} {:>12.1} {:>12.1} {:>8.3}",
            row.pattern,
            if row.cold { "cold" } else { "warm" },
            row.raw_mib_s,
            row.other_mib_s,
            row.ratio()
        )
    })?;
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
