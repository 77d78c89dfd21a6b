//! `vmt-bench`: glue for `datasets/bench.sh` (see the crate doc of `vmt_bench`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use vmt_bench::{
    parse_csv, parse_tc_rate, plot, summary, Link, MountReport, ReplayReport, Row, RunKey,
    DEFAULT_RTT_S, HEADER,
};

#[derive(Parser)]
#[command(
    name = "vmt-bench",
    version,
    about = "Rows, summary and plots for datasets/bench.sh"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the CSV with its header (or check an existing one has it), so that clients
    /// adding rows at once never race to write the header
    Init {
        #[arg(long)]
        csv: PathBuf,
    },
    /// Append one row to the CSV from a `vmt-record replay --json` report
    Add {
        /// The CSV (created with its header if absent)
        #[arg(long)]
        csv: PathBuf,
        /// The replay report (JSON)
        #[arg(long)]
        replay: PathBuf,
        /// The report of the vmt-run mount that served the replay (`--report`): bytes fetched
        /// and miss latency. One that cannot be read leaves those cells empty, with a warning.
        #[arg(long, value_name = "FILE.json", conflicts_with = "fetched")]
        mount_report: Option<PathBuf>,
        /// Bytes fetched for the replay outside a mount (a whole-image download)
        #[arg(long, value_name = "BYTES")]
        fetched: Option<u64>,
        #[arg(long)]
        phase: String,
        #[arg(long)]
        strategy: String,
        #[arg(long)]
        mode: String,
        #[arg(long, default_value_t = 1)]
        n: u32,
        #[arg(long, default_value_t = 0)]
        client: u32,
        /// Seconds spent before the replay: whole-image download, or mounting
        #[arg(long, default_value_t = 0.0)]
        setup_s: f64,
    },
    /// Write scale.svg (issue 15: simulated completion and seeder bytes vs N) from
    /// datasets/scale-table.py's prediction.csv
    ScalePlot {
        /// prediction.csv
        #[arg(long)]
        csv: PathBuf,
        /// Output directory
        #[arg(long)]
        out: PathBuf,
    },
    /// Write summary.txt, strategies.svg and crowd.svg from the CSV, and print the summary
    Report {
        #[arg(long)]
        csv: PathBuf,
        /// Output directory
        #[arg(long)]
        out: PathBuf,
        /// Text put at the top of summary.txt (the command and date)
        #[arg(long, default_value = "")]
        header: String,
        /// Each client's link rate as given to tc (100mbit): the figures measured against the
        /// link say n/a without it
        #[arg(long, value_name = "RATE")]
        link_rate: Option<String>,
        /// The seeder's uplink rate, if it differs: the path's rate is the lesser of the two
        #[arg(long, value_name = "RATE", requires = "link_rate")]
        seed_rate: Option<String>,
        /// Round trip from a client to the seeder, milliseconds [default: 0.16, measured once
        /// on the bench's idle 100mbit links]
        #[arg(long, value_name = "MS", requires = "link_rate")]
        rtt_ms: Option<f64>,
    },
}

/// The mount report at `path`, or `None` with a warning: a row must not be lost to it.
fn read_mount_report(path: &Path) -> Option<MountReport> {
    let got = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .and_then(|t| MountReport::from_json(&t).with_context(|| path.display().to_string()));
    got.map_err(|e| eprintln!("vmt-bench: warning: {e:#}; its cells stay empty"))
        .ok()
}

/// Whether the CSV at `path` exists (with this format's header); an error if it has another.
fn csv_exists(path: &Path) -> Result<bool> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut first = String::new();
    BufReader::new(f)
        .read_line(&mut first)
        .with_context(|| format!("reading {}", path.display()))?;
    if first.trim_end() != HEADER {
        bail!(
            "{}: not a CSV of this vmt-bench's format (an older one?): new rows would not match \
             its header",
            path.display()
        );
    }
    Ok(true)
}

fn link(rate: Option<&str>, seed: Option<&str>, rtt_ms: Option<f64>) -> Result<Option<Link>> {
    let Some(rate) = rate else { return Ok(None) };
    let mut bits_per_s = parse_tc_rate(rate)?;
    if let Some(seed) = seed {
        bits_per_s = bits_per_s.min(parse_tc_rate(seed)?);
    }
    if let Some(ms) = rtt_ms {
        if !(ms.is_finite() && ms >= 0.0) {
            bail!("--rtt-ms {ms}: must be a time, 0 or more");
        }
    }
    Ok(Some(Link {
        bits_per_s,
        rtt_s: rtt_ms.map_or(DEFAULT_RTT_S, |ms| ms / 1e3),
        rtt_measured: rtt_ms.is_some(),
    }))
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Cmd::Init { csv } => {
            if !csv_exists(&csv)? {
                std::fs::write(&csv, format!("{HEADER}\n"))
                    .with_context(|| format!("writing {}", csv.display()))?;
            }
        }
        Cmd::Add {
            csv,
            replay,
            mount_report,
            fetched,
            phase,
            strategy,
            mode,
            n,
            client,
            setup_s,
        } => {
            let text = std::fs::read_to_string(&replay)
                .with_context(|| format!("reading {}", replay.display()))?;
            let rep: ReplayReport = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", replay.display()))?;
            let key = RunKey {
                phase,
                strategy,
                mode,
                n,
                client,
            };
            let mut row = Row::from_replay(&key, &rep, setup_s);
            if let Some(m) = mount_report.as_deref().and_then(read_mount_report) {
                row = row.with_mount(&m);
            }
            if let Some(b) = fetched {
                row = row.with_fetched(b);
            }
            let fresh = !csv_exists(&csv)?;
            let mut f = OpenOptions::new().create(true).append(true).open(&csv)?;
            // One write per line: the crowd's clients append at the same time, and an O_APPEND
            // write lands whole, where `writeln!` may split a line into several writes.
            let mut line = if fresh {
                format!("{HEADER}\n")
            } else {
                String::new()
            };
            line.push_str(&row.to_csv());
            line.push('\n');
            f.write_all(line.as_bytes())?;
        }
        Cmd::ScalePlot { csv, out } => {
            let rows = vmt_bench::scale::parse_scale_csv(
                &std::fs::read_to_string(&csv)
                    .with_context(|| format!("reading {}", csv.display()))?,
            )
            .with_context(|| format!("parsing {}", csv.display()))?;
            std::fs::create_dir_all(&out)?;
            plot::scale_svg(&rows, &out.join("scale.svg"))?;
        }
        Cmd::Report {
            csv,
            out,
            header,
            link_rate,
            seed_rate,
            rtt_ms,
        } => {
            let link = link(link_rate.as_deref(), seed_rate.as_deref(), rtt_ms)?;
            let rows = parse_csv(
                &std::fs::read_to_string(&csv)
                    .with_context(|| format!("reading {}", csv.display()))?,
            )
            .with_context(|| format!("parsing {}", csv.display()))?;
            std::fs::create_dir_all(&out)?;
            let text = format!("{header}{}", summary::render(&rows, link.as_ref()));
            std::fs::write(out.join("summary.txt"), &text)?;
            plot::strategies_svg(&rows, &out.join("strategies.svg"))?;
            plot::crowd_svg(&rows, &out.join("crowd.svg"))?;
            print!("{text}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmt-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
