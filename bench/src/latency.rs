//! Miss latency, FUSE arrival to reply, from the mount reports: per strategy at N=1 and per
//! crowd series at the largest N, in milliseconds and in units of one block's transfer plus
//! a round trip (issue 11).
//!
//! A mount reports its misses' count, total, median and 99th percentile, not every miss, so
//! replays pool like this: the mean exactly (total over count); the median as the median of
//! the replays' medians, each weighted by its misses (an estimate: the pooled median lies
//! between the least and the greatest of them); the p99 as the greatest of the replays' p99s
//! (an upper bound: no more than 1% of any replay's misses, so of all of them, lie above it).

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::summary::{crowd_series, strategies};
use crate::{Link, Row};

/// The pooled miss latency of a group of replays, seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pooled {
    /// Replays with at least one miss.
    pub replays: usize,
    /// Their misses.
    pub misses: u64,
    /// Total latency / misses, over the replays that report a total.
    pub mean_s: Option<f64>,
    /// Miss-weighted median of the replays' medians.
    pub median_s: f64,
    /// Greatest of the replays' p99s.
    pub p99_s: f64,
}

/// Pools the replays matching `keep` that had misses; `None` when none did.
pub fn pool(rows: &[Row], keep: impl Fn(&Row) -> bool) -> Option<Pooled> {
    // (misses, p50, p99, total) of each replay that missed.
    let mut v: Vec<(u64, f64, f64, Option<f64>)> = rows
        .iter()
        .filter(|r| keep(r))
        .filter_map(|r| Some((r.misses?, r.miss_p50_s?, r.miss_p99_s?, r.miss_total_s)))
        .filter(|x| x.0 > 0)
        .collect();
    if v.is_empty() {
        return None;
    }
    let misses: u64 = v.iter().map(|x| x.0).sum();
    let with_total: Vec<(u64, f64)> = v.iter().filter_map(|x| Some((x.0, x.3?))).collect();
    let mean_s = (!with_total.is_empty()).then(|| {
        with_total.iter().map(|x| x.1).sum::<f64>()
            / with_total.iter().map(|x| x.0).sum::<u64>() as f64
    });
    v.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut seen = 0;
    let median_s = v
        .iter()
        .find(|x| {
            seen += x.0;
            2 * seen >= misses
        })
        .map_or(0.0, |x| x.1);
    let p99_s = v.iter().map(|x| x.2).fold(0.0, f64::max);
    Some(Pooled {
        replays: v.len(),
        misses,
        mean_s,
        median_s,
        p99_s,
    })
}

/// A latency as "21.6 ms (14.7 u)", seconds when long; the units only with a link.
fn cell(s: f64, link: Option<&Link>) -> String {
    let t = match s {
        s if s < 0.01 => format!("{:.2} ms", s * 1e3),
        s if s < 1.0 => format!("{:.1} ms", s * 1e3),
        s => format!("{s:.2} s"),
    };
    match link.map(|l| s / l.miss_unit_s()) {
        Some(u) if u < 100.0 => format!("{t} ({u:.1} u)"),
        Some(u) => format!("{t} ({u:.0} u)"),
        None => t,
    }
}

/// The table, empty when no row has miss figures.
pub fn section(rows: &[Row], link: Option<&Link>) -> String {
    let mut series: Vec<(String, Pooled)> = Vec::new();
    for st in strategies(rows, "strategies") {
        let p = pool(rows, |r| r.phase == "strategies" && r.strategy == st);
        series.extend(p.map(|p| (format!("{st} N=1"), p)));
    }
    let ns: BTreeSet<u32> = rows
        .iter()
        .filter(|r| r.phase == "crowd")
        .map(|r| r.n)
        .collect();
    if let Some(&nmax) = ns.last() {
        for (st, mode) in crowd_series(rows) {
            let p = pool(rows, |r| {
                r.phase == "crowd" && r.strategy == st && r.mode == mode && r.n == nmax
            });
            series.extend(p.map(|p| (format!("{st} {mode} N={nmax}"), p)));
        }
    }
    let mut s = String::new();
    if series.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "Miss latency, FUSE arrival to reply (vmt mounts' reports), every replay of a series"
    );
    match link {
        Some(l) => {
            let _ = writeln!(s, "u = {}\n", l.describe());
        }
        None => {
            let _ = writeln!(s, "(no link rate given: milliseconds only)\n");
        }
    }
    let _ = writeln!(
        s,
        "{:<18} {:>7} {:>7} {:>17} {:>17} {:>17}",
        "series", "replays", "misses", "mean", "median", "p99"
    );
    for (name, p) in &series {
        let _ = writeln!(
            s,
            "{name:<18} {:>7} {:>7} {:>17} {:>17} {:>17}",
            p.replays,
            p.misses,
            p.mean_s.map_or("-".to_string(), |m| cell(m, link)),
            cell(p.median_s, link),
            cell(p.p99_s, link)
        );
    }
    let mounts: Vec<Option<bool>> = rows
        .iter()
        .filter(|r| r.misses.is_some())
        .map(|r| r.blocks_alone)
        .collect();
    let alone = mounts.iter().filter(|b| **b == Some(true)).count();
    let pieces = mounts.iter().filter(|b| **b == Some(false)).count();
    let granularity = if alone + pieces == 0 {
        "not recorded (reports from before block-granular fetching)".to_string()
    } else {
        format!(
            "blocks verified alone in {alone} of {} mounts, whole pieces in {pieces}",
            mounts.len()
        )
    };
    let _ = writeln!(
        s,
        "\nmean: exact (total / misses). median: the replays' medians, weighted by their misses.
p99: the greatest replay p99, an upper bound on the pooled p99.
granularity: {granularity}.\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::tests::row;

    fn missed(st: &str, misses: u64, p50: f64, p99: f64, total: Option<f64>) -> Row {
        let mut r = row("strategies", st, "swarm", 1, "git-1", 2.0, 1.0);
        r.misses = Some(misses);
        r.miss_p50_s = Some(p50);
        r.miss_p99_s = Some(p99);
        r.miss_total_s = total;
        r
    }

    #[test]
    fn pooling_weights_medians_and_bounds_p99() {
        let rows = vec![
            missed("demand", 10, 0.002, 0.010, Some(0.03)),
            missed("demand", 30, 0.004, 0.008, Some(0.15)),
            missed("demand", 0, 0.0, 0.0, Some(0.0)), // no misses: not a replay to pool
            row("strategies", "demand", "swarm", 1, "git-1", 2.0, 1.0), // no report
        ];
        let p = pool(&rows, |_| true).unwrap();
        assert_eq!(p.replays, 2);
        assert_eq!(p.misses, 40);
        assert!((p.mean_s.unwrap() - 0.18 / 40.0).abs() < 1e-12);
        assert_eq!(p.median_s, 0.004); // 30 of the 40 misses are the second replay's
        assert_eq!(p.p99_s, 0.010);
        assert_eq!(pool(&rows[2..], |_| true), None);
        // Old reports without a total still give median and p99.
        let p = pool(&[missed("markov", 5, 0.02, 0.04, None)], |_| true).unwrap();
        assert_eq!((p.mean_s, p.median_s), (None, 0.02));
    }

    #[test]
    fn table_in_block_units() {
        let l = Link {
            bits_per_s: 100e6,
            rtt_s: 0.000_189_28, // makes one unit 1.5 ms
            rtt_measured: true,
        };
        let mut r = missed("demand", 10, 0.0015, 0.0030, Some(0.02));
        r.blocks_alone = Some(true);
        let t = section(&[r], Some(&l));
        assert!(t.contains("demand N=1"), "{t}");
        assert!(t.contains("1.50 ms (1.0 u)"), "{t}");
        assert!(t.contains("3.00 ms (2.0 u)"), "{t}");
        assert_eq!(cell(0.15, Some(&l)), "150.0 ms (100 u)");
        assert_eq!(cell(36.5, None), "36.50 s");
        assert!(t.contains("blocks verified alone in 1 of 1 mounts"), "{t}");
        assert!(section(
            &[row("strategies", "sshfs", "server", 1, "git-1", 1.0, 0.0)],
            None
        )
        .is_empty());
    }
}
