//! `vmt-record`: record per-task block-access traces of an appliance image through FUSE.
//!
//! Glue over `vmt_fs` (capture, import) and `vmt_formats` (traces, summaries): parse flags,
//! call one library function per subcommand, draw the hashing bar, print summaries and map
//! the outcome to an exit code (a recorded task's own). Signals (Ctrl-C, SIGTERM) set the flag
//! the capture polls: the task and the session stop cleanly, the mount is taken down and the
//! trace saved.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vmt_formats::stdout;
use vmt_formats::summary::one_line;
use vmt_formats::trace::Trace;
use vmt_formats::units::{self, Size};
use vmt_fs::{
    CaptureEvent, CaptureKind, CaptureParams, ImportFormat, ImportImage, ImportParams, TaskEnd,
};

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
    /// Let other users read the served image (a VM running as another user); they can never
    /// write it nor the control file. Without it only you (and root) can use the mount.
    #[arg(long)]
    allow_other: bool,
}

impl ImageArgs {
    fn access(&self) -> vmt_fs::Access {
        if self.allow_other {
            vmt_fs::Access::Everyone
        } else {
            vmt_fs::Access::Owner
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Record one run of a task: mount, run CMD, unmount, write DIR/TASK-<run>.vmtrace.
    ///
    /// CMD runs with VMT_IMAGE set to the served image file (e.g. loop-mount it, or boot a VM
    /// from it) and VMT_MOUNTPOINT to the mount. Its exit status is passed through. A task that
    /// fails (non-zero exit) has its trace set aside as DIR/TASK-<run>.vmtrace.failed, which
    /// vmt-train does not read.
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
        #[arg(long, default_value_t = vmt_fs::DEFAULT_RECORD_THREADS)]
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
        #[arg(long, default_value_t = vmt_fs::DEFAULT_RECORD_THREADS)]
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
    /// '# image_bytes=' / '# image_sha256=' lines. Input without accesses, or an image too large
    /// to count in 4 KiB blocks (16 TiB), is refused: no other command could use the trace.
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
            // VMT_LOG in every vmt tool; RUST_LOG as well, as Rust programs usually read it.
            tracing_subscriber::EnvFilter::try_from_env("VMT_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a log file or a pipe they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmt-record: error: {e:#}");
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
        } => capture(
            image,
            out,
            mountpoint,
            threads,
            CaptureKind::Task { task, cmd },
        ),
        Cmd::Session {
            image,
            out,
            mountpoint,
            name,
            first_task,
            threads,
        } => capture(
            image,
            out,
            mountpoint,
            threads,
            CaptureKind::Session { name, first_task },
        ),
        Cmd::Mark { mountpoint, task } => {
            vmt_fs::mark_task(&mountpoint, &task)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stop { mountpoint } => {
            vmt_fs::stop_session(&mountpoint)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { traces, block_size } => show(&traces, block_size),
        Cmd::Tasks { traces, block_size } => tasks_table(&traces, block_size),
        Cmd::Export { trace, out } => {
            let t = Trace::load(&trace)?;
            match out {
                Some(p) => std::fs::write(&p, t.to_csv())
                    .with_context(|| format!("writing {}", p.display()))?,
                None => stdout::print(&t.to_csv())?,
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
        } => {
            let image = match (image, image_bytes) {
                (Some(path), _) => ImportImage::File {
                    path,
                    sha256: image_sha256,
                },
                (None, Some(n)) => ImportImage::Bytes(n.bytes()),
                (None, None) => ImportImage::FromInput,
            };
            let params = ImportParams {
                input,
                out,
                image,
                format: match format {
                    Format::Auto => ImportFormat::Auto,
                    Format::Csv => ImportFormat::Csv,
                    Format::Blkparse => ImportFormat::Blkparse,
                },
                task,
            }
            .check()?;
            let bar = hashing_bar();
            let done = params.run(|done, total| bar.update(done, total))?;
            drop(bar);
            if done.trace.image.is_size_only() {
                eprintln!(
                    "note: recorded image identity is size only ({} bytes); such a trace matches only other size-only traces of that size",
                    done.trace.image.size
                );
            }
            eprintln!(
                "{}",
                one_line(&done.trace, &done.path.display().to_string())
            );
            Ok(ExitCode::SUCCESS)
        }
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
                vmt_appliance::replay::ReplayParams {
                    think,
                    cold,
                    ..Default::default()
                },
            )
            .with_context(|| format!("replaying {} against {}", trace.display(), file.display()))?;
            if json {
                stdout::print(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                stdout::print(&report.to_string())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo => demo(),
    }
}

/// The bar shown while an image is hashed: drawn from the first update (none when the
/// identity is known), cleared on drop.
struct HashingBar {
    bar: ProgressBar,
    shown: std::cell::Cell<bool>,
}

fn hashing_bar() -> HashingBar {
    let bar = ProgressBar::hidden().with_style(
        ProgressStyle::with_template(
            "hashing image {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    HashingBar {
        bar,
        shown: std::cell::Cell::new(false),
    }
}

impl HashingBar {
    fn update(&self, done: u64, total: u64) {
        if !self.shown.replace(true) {
            self.bar.set_length(total);
            self.bar
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        self.bar.set_position(done);
    }
}

impl Drop for HashingBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// SIGINT/SIGTERM set a flag the capture polls; a second signal is not needed.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handlers")?;
    }
    Ok(flag)
}

/// `run` and `session`: record, tell the user what happened, pass the task's exit code on.
fn capture(
    image: ImageArgs,
    out_dir: PathBuf,
    mountpoint: Option<PathBuf>,
    threads: usize,
    kind: CaptureKind,
) -> Result<ExitCode> {
    let session = matches!(kind, CaptureKind::Session { .. });
    let params = CaptureParams {
        access: image.access(),
        image: image.image,
        image_sha256: image.image_sha256,
        out_dir,
        mountpoint,
        threads,
        kind,
    }
    .check()?;
    let stop = stop_flag()?;
    let bar = hashing_bar();
    let done = params.run(
        &stop,
        |done, total| bar.update(done, total),
        |event| match event {
            CaptureEvent::Started {
                trace,
                served,
                mountpoint,
            } => {
                bar.bar.finish_and_clear();
                if session {
                    eprintln!(
                        "recording session into {}\nimage served at {}\nmark tasks with: vmt-record mark --mountpoint {} TASK\nstop with: vmt-record stop --mountpoint {} (or Ctrl-C)",
                        trace.display(),
                        served.display(),
                        mountpoint.display(),
                        mountpoint.display(),
                    );
                }
            }
            CaptureEvent::Stopping => {
                eprintln!("vmt-record: stopping the task (saving the trace)")
            }
        },
    )?;
    let name = format!("{}-{}", done.trace.label, done.trace.run);
    eprintln!("{}", one_line(&done.trace, &name));
    let Some(end) = done.task else {
        return Ok(ExitCode::SUCCESS);
    };
    if let TaskEnd::Failed { code } = end {
        eprintln!(
            "vmt-record: warning: the task failed (exit status {code}); its trace is set aside as {}, which vmt-train fit does not read",
            done.path.display()
        );
    }
    Ok(ExitCode::from(end.code()))
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
    stdout::print(&vmt_formats::summary::traces_table(&traces, block_size)?)?;
    Ok(ExitCode::SUCCESS)
}

/// Markdown tables: per task, and task-to-task similarity.
fn tasks_table(traces: &[PathBuf], block_size: u32) -> Result<ExitCode> {
    let traces = load_all(traces, |p| p.display().to_string())?;
    let table = vmt_formats::summary::TaskTable::new(&traces, block_size)?;
    stdout::print(&table.to_string())?;
    Ok(ExitCode::SUCCESS)
}

fn bench(
    image: Option<PathBuf>,
    size: Size,
    repeat: usize,
    against: Option<PathBuf>,
) -> Result<ExitCode> {
    let tmp = tempfile::Builder::new().prefix("vmt-bench-").tempdir()?;
    let params = vmt_appliance::recorder::BenchParams {
        image,
        size: size.bytes(),
        repeat,
        against,
        scratch: tmp.path().to_owned(),
    };
    let run = vmt_appliance::recorder::bench(
        &params,
        |note| eprintln!("{note}"),
        |what| {
            println!(
                "{:<20} {:<5} {:>12} {:>12} {:>8}",
                "pattern",
                "cache",
                "raw MiB/s",
                format!("{what} MiB/s"),
                format!("{what}/raw")
            )
        },
        |row| {
            println!(
                "{:<20} {:<5} {:>12.1} {:>12.1} {:>8.3}",
                row.pattern,
                if row.cold { "cold" } else { "warm" },
                row.raw_mib_s,
                row.other_mib_s,
                row.ratio()
            )
        },
    )?;
    if let Some(accesses) = run.accesses {
        println!("({accesses} accesses recorded through the mount)");
    }
    Ok(ExitCode::SUCCESS)
}

fn demo() -> Result<ExitCode> {
    vmt_appliance::ext4::check_demo_prerequisites()?;
    let tmp = tempfile::Builder::new().prefix("vmt-demo-").tempdir()?;
    eprintln!(
        "building a demo appliance with mkfs.ext4 -d in {}",
        tmp.path().display()
    );
    let bar = hashing_bar();
    let runs = vmt_appliance::recorder::record_demo(
        tmp.path(),
        |done, total| bar.update(done, total),
        |run| {
            bar.bar.finish_and_clear();
            eprintln!(
                "task {:<9} read {} files ({:.1} MiB) through a loop mount of the served image",
                run.name,
                run.files,
                run.bytes as f64 / (1 << 20) as f64
            )
        },
    )?;
    let paths: Vec<PathBuf> = runs.into_iter().map(|r| r.trace).collect();
    show(&paths, 4096)
}
