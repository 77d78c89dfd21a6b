//! One replay as one CSV line, and the CSV read back.
//!
//! The CSV grew columns once: [`HEADER_V1`] files (results committed before block-granular
//! fetching) still parse, their new fields empty.

use std::str::FromStr;

use anyhow::{bail, Context, Result};
use vmt_appliance::replay::ReplayReport;

use crate::MountReport;

/// CSV header of the first format: no mount figures.
pub const HEADER_V1: &str =
    "phase,strategy,mode,n,client,trace,think_s,trace_s,setup_s,completion_s,stall_s,reads,bytes";

/// CSV header, in [`Row`]'s field order.
pub const HEADER: &str = "phase,strategy,mode,n,client,trace,think_s,trace_s,setup_s,\
completion_s,stall_s,reads,bytes,fetched,wasted,misses,miss_total_s,miss_p50_s,miss_p99_s,\
blocks_alone";

/// Fields of a [`HEADER_V1`] line and of a [`HEADER`] line.
const FIELDS_V1: usize = 13;
const FIELDS: usize = 20;

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
    /// Payload bytes this client fetched for the replay: a vmt-run mount's `downloaded` at
    /// unmount (right after the replay; wasted bytes included), or the whole download of
    /// `full` and `aria2`. `None` when not measured: local, sshfs, older CSVs.
    pub fetched: Option<u64>,
    /// Of [`Row::fetched`], bytes received and thrown away (duplicates, corrupt blocks).
    pub wasted: Option<u64>,
    /// Reads the mount parked on missing data (the population of the two percentiles below).
    pub misses: Option<u64>,
    /// The misses' total latency, FUSE arrival to reply, seconds (so means pool exactly).
    pub miss_total_s: Option<f64>,
    /// The mount's median miss latency, seconds.
    pub miss_p50_s: Option<f64>,
    /// The mount's 99th-percentile miss latency, seconds.
    pub miss_p99_s: Option<f64>,
    /// Whether the mount verified blocks alone (its torrent had a block-hash table), so a miss
    /// waited for its blocks rather than whole pieces.
    pub blocks_alone: Option<bool>,
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
    /// recomputed from the unclamped figures, so it includes the setup. No mount figures yet:
    /// see [`Row::with_mount`] and [`Row::with_fetched`].
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
            fetched: None,
            wasted: None,
            misses: None,
            miss_total_s: None,
            miss_p50_s: None,
            miss_p99_s: None,
            blocks_alone: None,
        }
    }

    /// The row with the figures of the mount that served the replay (those it has).
    pub fn with_mount(mut self, m: &MountReport) -> Row {
        self.fetched = m.downloaded;
        self.wasted = m.wasted;
        self.misses = m.misses();
        self.miss_total_s = m.stalls.as_ref().and_then(|s| s.total_s);
        self.miss_p50_s = m.stalls.as_ref().and_then(|s| s.p50_s);
        self.miss_p99_s = m.stalls.as_ref().and_then(|s| s.p99_s);
        self.blocks_alone = m.blocks_verified_alone;
        self
    }

    /// The row with `bytes` fetched outside a mount (a whole-image download).
    pub fn with_fetched(mut self, bytes: u64) -> Row {
        self.fetched = Some(bytes);
        self
    }

    /// Whether the trace is a multi-task session (by its name).
    pub fn is_session(&self) -> bool {
        self.trace.starts_with("session")
    }

    /// Whether the trace is a VM boot (by its name): its reads keep the recorded gaps of the
    /// emulated kernel's compute, so its completion is mostly that compute, and issue 11 has a
    /// figure of its own for it (`datasets/boot-figure.sh`).
    pub fn is_boot(&self) -> bool {
        self.trace.starts_with("vmboot")
    }

    /// Whether the trace is one task that is not a boot: the "cold tasks" of issue 11.
    pub fn is_cold_task(&self) -> bool {
        !self.is_session() && !self.is_boot()
    }

    /// The row as one CSV line in the [`HEADER`] format (no newline). Text fields never hold
    /// commas (checked on parse); unmeasured fields are empty.
    pub fn to_csv(&self) -> String {
        fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
            v.map(|v| v.to_string()).unwrap_or_default()
        }
        let secs = |v: Option<f64>| opt(v.map(|v| format!("{v:.6}")));
        format!(
            "{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{},{},{},{},{},{},{},{},{}",
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
            self.bytes,
            opt(self.fetched),
            opt(self.wasted),
            opt(self.misses),
            secs(self.miss_total_s),
            secs(self.miss_p50_s),
            secs(self.miss_p99_s),
            opt(self.blocks_alone.map(u8::from)),
        )
    }

    /// Parses one CSV line in either format ([`HEADER`] or [`HEADER_V1`]).
    pub fn from_csv(line: &str) -> Result<Row> {
        let f: Vec<&str> = line.trim_end().split(',').collect();
        if f.len() != FIELDS && f.len() != FIELDS_V1 {
            bail!(
                "expected {FIELDS} (or {FIELDS_V1}) fields, got {}: {line:?}",
                f.len()
            );
        }
        let f = Fields { f, line };
        let blocks_alone = match f.f.get(19) {
            None | Some(&"") => None,
            Some(&"1") => Some(true),
            Some(&"0") => Some(false),
            Some(_) => bail!("{}: expected 1, 0 or nothing", f.ctx(19)),
        };
        Ok(Row {
            phase: f.f[0].into(),
            strategy: f.f[1].into(),
            mode: f.f[2].into(),
            n: f.get(3)?,
            client: f.get(4)?,
            trace: f.f[5].into(),
            think_s: f.get(6)?,
            trace_s: f.get(7)?,
            setup_s: f.get(8)?,
            completion_s: f.get(9)?,
            stall_s: f.get(10)?,
            reads: f.get(11)?,
            bytes: f.get(12)?,
            fetched: f.opt(13)?,
            wasted: f.opt(14)?,
            misses: f.opt(15)?,
            miss_total_s: f.opt(16)?,
            miss_p50_s: f.opt(17)?,
            miss_p99_s: f.opt(18)?,
            blocks_alone,
        })
    }
}

/// The fields of one CSV line, parsed with errors that name the field and the line.
struct Fields<'a> {
    f: Vec<&'a str>,
    line: &'a str,
}

impl Fields<'_> {
    fn ctx(&self, i: usize) -> String {
        format!("field {} ({:?}) of {:?}", i + 1, self.f[i], self.line)
    }

    fn get<T: FromStr>(&self, i: usize) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.f[i].parse().with_context(|| self.ctx(i))
    }

    /// An optional field: absent in the old format, empty when not measured.
    fn opt<T: FromStr>(&self, i: usize) -> Result<Option<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        match self.f.get(i) {
            None | Some(&"") => Ok(None),
            Some(_) => self.get(i).map(Some),
        }
    }
}

/// Parses a whole CSV, in the [`HEADER`] or the [`HEADER_V1`] format.
pub fn parse_csv(text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines();
    let fields = match lines.next().map(str::trim_end) {
        Some(HEADER) => FIELDS,
        Some(HEADER_V1) => FIELDS_V1,
        other => bail!("not a vmt-bench CSV: header {other:?}"),
    };
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let got = l.trim_end().split(',').count();
            if got != fields {
                bail!("line {}: {got} fields under a header of {fields}", i + 2);
            }
            Row::from_csv(l).with_context(|| format!("line {}", i + 2))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A replay report of `trace` with 10 reads of 4096 bytes, 1 s long plus 5 s think.
    fn report(trace: &str, completion_s: f64) -> ReplayReport {
        ReplayReport {
            trace: trace.into(),
            reads: 10,
            bytes: 4096,
            trace_s: 1.0,
            think_s: 5.0,
            completion_s,
            stall_s: 0.0,
            read_p50_s: 0.001,
            read_p99_s: 0.01,
            read_max_s: 0.02,
            segments: Vec::new(),
        }
    }

    /// A row of that report with completion `c` and stall `s`, nothing fetched.
    pub(crate) fn row(
        phase: &str,
        strategy: &str,
        mode: &str,
        n: u32,
        trace: &str,
        c: f64,
        s: f64,
    ) -> Row {
        let key = RunKey {
            phase: phase.into(),
            strategy: strategy.into(),
            mode: mode.into(),
            n,
            client: 0,
        };
        Row {
            stall_s: s,
            ..Row::from_replay(&key, &report(trace, c), 0.0)
        }
    }

    #[test]
    fn csv_round_trip() {
        let r = row("crowd", "markov", "swarm", 16, "session-1", 21.5, 0.25);
        let text = format!("{HEADER}\n{}\n", r.to_csv());
        assert_eq!(parse_csv(&text).unwrap(), vec![r.clone()]);
        let full = Row {
            fetched: Some(31309824),
            wasted: Some(16384),
            misses: Some(97),
            miss_total_s: Some(2.362755),
            miss_p50_s: Some(0.021607),
            miss_p99_s: Some(0.04497),
            blocks_alone: Some(true),
            ..r
        };
        let text = format!("{HEADER}\n{}\n", full.to_csv());
        assert_eq!(parse_csv(&text).unwrap(), vec![full]);
        assert!(parse_csv("a,b\n").is_err());
        assert!(parse_csv(&format!("{HEADER}\nx,y\n")).is_err());
    }

    #[test]
    fn old_csv_without_mount_columns_parses() {
        // Two lines of the committed datasets/results/full/results.csv (the first format).
        let text = format!(
            "{HEADER_V1}\n\
             strategies,local,local,1,0,compile-1,0,0.319365,0.000000,0.442063,0.122698,761,39183360\n\
             strategies,markov,swarm,1,1,session-1,15,1.132951,0.059000,17.112935,0.979984,1670,30495744\n"
        );
        let rows = parse_csv(&text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].strategy, "markov");
        assert_eq!(rows[1].bytes, 30495744);
        assert_eq!(rows[1].think_s, 15.0);
        assert_eq!(rows[1].fetched, None);
        assert_eq!(rows[1].miss_p99_s, None);
        assert_eq!(rows[1].blocks_alone, None);
        // A new-format line under the old header (or the reverse) is a mistake, not data.
        let mixed = format!("{HEADER_V1}\n{}\n", rows[0].to_csv());
        assert!(parse_csv(&mixed)
            .unwrap_err()
            .to_string()
            .contains("line 2"));
        let mixed = format!("{HEADER}\nstrategies,local,local,1,0,git-1,0,0.2,0,0.3,0.1,3,12288\n");
        assert!(parse_csv(&mixed).is_err());
    }

    #[test]
    fn bad_optional_fields_are_errors_not_guesses() {
        let r = row("strategies", "demand", "swarm", 1, "git-1", 2.0, 1.0);
        let line = r.to_csv();
        let bad = line.replacen(",,,,,,,", ",x,,,,,,", 1);
        assert!(Row::from_csv(&bad).is_err());
        let bad = format!("{}2", line);
        assert!(Row::from_csv(&bad).is_err());
    }

    #[test]
    fn download_counts_as_completion_and_stall() {
        let rep = ReplayReport {
            trace_s: 0.4,
            think_s: 0.0,
            completion_s: 0.5,
            ..report("git-1", 0.5)
        };
        let key = RunKey {
            phase: "strategies".into(),
            strategy: "full".into(),
            mode: "swarm".into(),
            n: 1,
            client: 0,
        };
        let r = Row::from_replay(&key, &rep, 80.0).with_fetched(1 << 30);
        assert!((r.completion_s - 80.5).abs() < 1e-9);
        assert!((r.stall_s - 80.1).abs() < 1e-9);
        assert_eq!(r.fetched, Some(1 << 30));
        assert!(!r.is_session() && r.is_cold_task());
    }
}
