//! `vmt-bench`: the numbers side of `datasets/bench.sh`.
//!
//! The script runs peers in network namespaces and replays traces with `vmt-record replay`;
//! this crate turns each replay report into one CSV row ([`Row`], [`Row::from_replay`]), and the
//! finished CSV into a summary of means and ratios ([`summary`]) and SVG plots ([`plot`]).
//!
//! Layout: `lib.rs` rows and CSV; `summary` groups and ratios; `plot` the two figures.

pub mod plot;
pub mod summary;

use anyhow::{bail, Context, Result};
pub use vmt_appliance::replay::ReplayReport;

/// CSV header, in [`Row`]'s field order.
pub const HEADER: &str =
    "phase,strategy,mode,n,client,trace,think_s,trace_s,setup_s,completion_s,stall_s,reads,bytes";

/// One replay of one trace by one client.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `strategies` (one client, every held-out trace) or `crowd` (N clients together).
    pub phase: String,
    /// `local`, `full`, `aria2`, `sshfs`, `demand`, `stream`, `profile`, `markov`, `oracle`.
    pub strategy: String,
    /// `swarm` (clients upload to each other), `cs` (client-server: they don't), `local`.
    pub mode: String,
    /// Clients started together.
    pub n: u32,
    /// This client's index, 0-based.
    pub client: u32,
    /// Trace name, e.g. `session-1`.
    pub trace: String,
    /// Think time inserted at each task boundary, seconds.
    pub think_s: f64,
    /// The trace's own duration (last read), seconds.
    pub trace_s: f64,
    /// Time before the replay could start: the whole-image download for full-download
    /// strategies, mounting (until the image appears) for on-demand ones, seconds.
    pub setup_s: f64,
    /// Setup plus replay, seconds.
    pub completion_s: f64,
    /// Completion minus trace duration minus think time, seconds.
    pub stall_s: f64,
    /// Reads replayed.
    pub reads: u64,
    /// Bytes read.
    pub bytes: u64,
}

/// Where a row comes from, apart from its replay report.
#[derive(Debug, Clone)]
pub struct RunKey {
    /// See [`Row::phase`].
    pub phase: String,
    /// See [`Row::strategy`].
    pub strategy: String,
    /// See [`Row::mode`].
    pub mode: String,
    /// See [`Row::n`].
    pub n: u32,
    /// See [`Row::client`].
    pub client: u32,
}

impl Row {
    /// A row from a replay report, with `setup_s` spent before it (download or mount). Stall is
    /// recomputed from the unclamped figures, so it includes the setup.
    pub fn from_replay(key: &RunKey, r: &ReplayReport, setup_s: f64) -> Row {
        let completion_s = setup_s + r.completion_s;
        Row {
            phase: key.phase.clone(),
            strategy: key.strategy.clone(),
            mode: key.mode.clone(),
            n: key.n,
            client: key.client,
            trace: r.trace.clone(),
            think_s: r.think_s,
            trace_s: r.trace_s,
            setup_s,
            completion_s,
            stall_s: (completion_s - r.trace_s - r.think_s).max(0.0),
            reads: r.reads,
            bytes: r.bytes,
        }
    }

    /// Whether the trace is a multi-task session (by its name).
    pub fn is_session(&self) -> bool {
        self.trace.starts_with("session")
    }

    /// The row as one CSV line (no newline). Text fields never hold commas (checked on parse).
    pub fn to_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{},{}",
            self.phase,
            self.strategy,
            self.mode,
            self.n,
            self.client,
            self.trace,
            self.think_s,
            self.trace_s,
            self.setup_s,
            self.completion_s,
            self.stall_s,
            self.reads,
            self.bytes
        )
    }

    /// Parses one CSV line written by [`Row::to_csv`].
    pub fn from_csv(line: &str) -> Result<Row> {
        let f: Vec<&str> = line.trim_end().split(',').collect();
        if f.len() != 13 {
            bail!("expected 13 fields, got {}: {line:?}", f.len());
        }
        let num = |i: usize| -> Result<f64> {
            f[i].parse()
                .with_context(|| format!("field {} ({:?}) of {line:?}", i + 1, f[i]))
        };
        Ok(Row {
            phase: f[0].into(),
            strategy: f[1].into(),
            mode: f[2].into(),
            n: num(3)? as u32,
            client: num(4)? as u32,
            trace: f[5].into(),
            think_s: num(6)?,
            trace_s: num(7)?,
            setup_s: num(8)?,
            completion_s: num(9)?,
            stall_s: num(10)?,
            reads: num(11)? as u64,
            bytes: num(12)? as u64,
        })
    }
}

/// Parses a whole CSV (with [`HEADER`]).
pub fn parse_csv(text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h.trim_end() == HEADER => {}
        other => bail!("not a vmt-bench CSV: header {other:?}"),
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| Row::from_csv(l).with_context(|| format!("line {}", i + 2)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(
        phase: &str,
        strategy: &str,
        mode: &str,
        n: u32,
        trace: &str,
        c: f64,
        s: f64,
    ) -> Row {
        Row {
            phase: phase.into(),
            strategy: strategy.into(),
            mode: mode.into(),
            n,
            client: 0,
            trace: trace.into(),
            think_s: 5.0,
            trace_s: 1.0,
            setup_s: 0.0,
            completion_s: c,
            stall_s: s,
            reads: 10,
            bytes: 4096,
        }
    }

    #[test]
    fn csv_round_trip() {
        let r = row("crowd", "markov", "swarm", 16, "session-1", 21.5, 0.25);
        let text = format!("{HEADER}\n{}\n", r.to_csv());
        assert_eq!(parse_csv(&text).unwrap(), vec![r]);
        assert!(parse_csv("a,b\n").is_err());
        assert!(parse_csv(&format!("{HEADER}\nx,y\n")).is_err());
    }

    #[test]
    fn download_counts_as_completion_and_stall() {
        let rep = ReplayReport {
            trace: "git-1".into(),
            reads: 3,
            bytes: 12288,
            trace_s: 0.4,
            think_s: 0.0,
            completion_s: 0.5,
            stall_s: 0.1,
            read_p50_s: 0.001,
            read_p99_s: 0.01,
            read_max_s: 0.02,
            segments: Vec::new(),
        };
        let key = RunKey {
            phase: "strategies".into(),
            strategy: "full".into(),
            mode: "swarm".into(),
            n: 1,
            client: 0,
        };
        let r = Row::from_replay(&key, &rep, 80.0);
        assert!((r.completion_s - 80.5).abs() < 1e-9);
        assert!((r.stall_s - 80.1).abs() < 1e-9);
        assert!(!r.is_session());
    }
}
