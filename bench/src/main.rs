//! `vmt-bench`: glue for `datasets/bench.sh` (see the crate doc of `vmt_bench`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vmt_bench::{parse_csv, plot, summary, ReplayReport, Row, RunKey, HEADER};

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
    /// Append one row to the CSV from a `vmt-record replay --json` report
    Add {
        /// The CSV (created with its header if absent)
        #[arg(long)]
        csv: PathBuf,
        /// The replay report (JSON)
        #[arg(long)]
        replay: PathBuf,
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
    },
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Cmd::Add {
            csv,
            replay,
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
            let row = Row::from_replay(&key, &rep, setup_s);
            let fresh = !csv.exists();
            let mut f = OpenOptions::new().create(true).append(true).open(&csv)?;
            if fresh {
                writeln!(f, "{HEADER}")?;
            }
            writeln!(f, "{}", row.to_csv())?;
        }
        Cmd::Report { csv, out, header } => {
            let rows = parse_csv(
                &std::fs::read_to_string(&csv)
                    .with_context(|| format!("reading {}", csv.display()))?,
            )?;
            std::fs::create_dir_all(&out)?;
            let text = format!("{header}{}", summary::render(&rows));
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
            eprintln!("vmt-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
