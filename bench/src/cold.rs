//! One cold client (N=1) against network storage and against the link: the figures of
//! issue 11, per task and as means.
//!
//! A mean ratio is a ratio of means (as in the issue's own table), taken over the traces both
//! sides measured. The boot is listed but kept out of the means: its completion is mostly
//! the recorded compute of an emulated kernel, and it has a figure of its own
//! (`datasets/boot-figure.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::ratio::quotient;
use crate::{bytes, Link, Ratio, Row};

/// A figure per trace name.
type PerTrace = BTreeMap<String, f64>;

/// Mean of `f` per trace over the N=1 rows of strategy `st` that `kind` keeps.
fn per_trace(
    rows: &[Row],
    st: &str,
    kind: fn(&Row) -> bool,
    f: impl Fn(&Row) -> Option<f64>,
) -> PerTrace {
    let mut acc: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.phase == "strategies" && r.strategy == st && kind(r))
    {
        if let Some(v) = f(r) {
            let e = acc.entry(r.trace.clone()).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    acc.into_iter()
        .map(|(t, (sum, n))| (t, sum / n as f64))
        .collect()
}

/// Means of `a` and of `b` over the traces both have.
fn paired_means(a: &PerTrace, b: &PerTrace) -> Option<(f64, f64)> {
    let both: Vec<(f64, f64)> = a
        .iter()
        .filter_map(|(t, x)| b.get(t).map(|y| (*x, *y)))
        .collect();
    let n = both.len() as f64;
    (!both.is_empty()).then(|| {
        (
            both.iter().map(|p| p.0).sum::<f64>() / n,
            both.iter().map(|p| p.1).sum::<f64>() / n,
        )
    })
}

/// Mean of `a` over the traces both have, divided by that of `b`.
fn ratio_of_means(a: &PerTrace, b: &PerTrace) -> Option<f64> {
    paired_means(a, b).and_then(|(x, y)| quotient(Some(x), Some(y)))
}

/// Mean of all values.
fn mean(m: &PerTrace) -> Option<f64> {
    (!m.is_empty()).then(|| m.values().sum::<f64>() / m.len() as f64)
}

/// The task figures of one kind of trace (cold tasks, or the boot).
struct Tasks {
    local: PerTrace,
    sshfs: PerTrace,
    markov: PerTrace,
    /// Bytes read ÷ link rate + local completion.
    limit: PerTrace,
    /// Demand's bytes fetched / bytes read.
    demand_fetch: PerTrace,
    /// The same over every trace: total fetched / total read.
    demand_fetch_all: Option<f64>,
}

impl Tasks {
    fn new(rows: &[Row], kind: fn(&Row) -> bool, link: Option<&Link>) -> Tasks {
        let comp = |r: &Row| Some(r.completion_s);
        let limit = per_trace(rows, "local", kind, |r| {
            link.map(|l| l.transfer_s(r.bytes as f64) + r.completion_s)
        });
        let demand = |r: &Row| r.phase == "strategies" && r.strategy == "demand" && kind(r);
        let demand_traces: BTreeSet<&str> = rows
            .iter()
            .filter(|r| demand(r))
            .map(|r| r.trace.as_str())
            .collect();
        let demand_fetch = demand_traces
            .into_iter()
            .filter_map(|t| {
                let b = bytes::of(rows, |r| demand(r) && r.trace == t)?;
                Some((t.to_string(), b.ratio?))
            })
            .collect();
        Tasks {
            demand_fetch_all: bytes::of(rows, demand).and_then(|b| b.ratio),
            local: per_trace(rows, "local", kind, comp),
            sshfs: per_trace(rows, "sshfs", kind, comp),
            markov: per_trace(rows, "markov", kind, comp),
            limit,
            demand_fetch,
        }
    }

    /// Every trace any column has.
    fn traces(&self) -> Vec<String> {
        let mut t: Vec<String> = [
            &self.local,
            &self.sshfs,
            &self.markov,
            &self.limit,
            &self.demand_fetch,
        ]
        .iter()
        .flat_map(|m| m.keys().cloned())
        .collect();
        t.sort();
        t.dedup();
        t
    }

    /// One table line: the values, then the ratios.
    fn line(label: &str, values: [Option<f64>; 4], ratios: [Option<f64>; 3], note: &str) -> String {
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let mut s = format!("{label:<12}");
        for v in values {
            let _ = write!(s, " {:>7}", cell(v));
        }
        for (v, w) in ratios.into_iter().zip([13, 13, 20]) {
            let _ = write!(s, " {:>w$}", cell(v));
        }
        s += note;
        s.trim_end().to_string() + "\n"
    }

    /// Lines per trace, and a mean line when `mean_label` is given.
    fn lines(&self, mean_label: Option<&str>, note: &str) -> String {
        let mut s = String::new();
        for t in self.traces() {
            let get = |m: &PerTrace| m.get(&t).copied();
            s += &Tasks::line(
                &t,
                [
                    get(&self.local),
                    get(&self.sshfs),
                    get(&self.markov),
                    get(&self.limit),
                ],
                [
                    quotient(get(&self.markov), get(&self.sshfs)),
                    quotient(get(&self.markov), get(&self.limit)),
                    get(&self.demand_fetch),
                ],
                note,
            );
        }
        if let Some(label) = mean_label {
            s += &Tasks::line(
                label,
                [
                    mean(&self.local),
                    mean(&self.sshfs),
                    mean(&self.markov),
                    mean(&self.limit),
                ],
                [
                    ratio_of_means(&self.markov, &self.sshfs),
                    ratio_of_means(&self.markov, &self.limit),
                    self.demand_fetch_all,
                ],
                "",
            );
        }
        s
    }
}

/// The section's text and its ratios.
pub fn section(rows: &[Row], link: Option<&Link>) -> (String, Vec<Ratio>) {
    let mut s = String::new();
    let cold = Tasks::new(rows, Row::is_cold_task, link);
    let boot = Tasks::new(rows, Row::is_boot, link);
    let think = |r: &Row| r.is_session() && r.think_s > 0.0;
    let stall = |r: &Row| Some(r.stall_s);
    let sshfs_stall = per_trace(rows, "sshfs", think, stall);
    let markov_stall = per_trace(rows, "markov", think, stall);
    let think_s = per_trace(rows, "markov", think, |r| Some(r.think_s));

    let n_cold = cold.traces().len();
    if n_cold + boot.traces().len() > 0 {
        let _ = writeln!(
            s,
            "One cold client (N=1) against network storage and the link (issue 11): mean\n\
             completion, seconds, per task"
        );
        match link {
            Some(l) => {
                let _ = writeln!(s, "{}\n", l.describe());
            }
            None => {
                let _ = writeln!(
                    s,
                    "link rate not given (vmt-bench report --link-rate): no limit\n"
                );
            }
        }
        let _ = writeln!(
            s,
            "{:<12} {:>7} {:>7} {:>7} {:>7} {:>13} {:>13} {:>20}",
            "task",
            "local",
            "sshfs",
            "markov",
            "limit",
            "markov/sshfs",
            "markov/limit",
            "demand fetched/read"
        );
        s += &cold.lines(Some(&format!("mean ({n_cold})")), "");
        s += &boot.lines(None, "  (boot: not in the means)");
        let _ = writeln!(
            s,
            "\nlimit = bytes read ÷ link rate + the local image's completion: a client that\n\
             fetches exactly what it reads at the full rate. Mean ratios are ratios of means over\n\
             the tasks both sides measured (fetched/read: total over total).\n"
        );
    }
    if !(sshfs_stall.is_empty() && markov_stall.is_empty()) {
        let _ = writeln!(
            s,
            "Sessions with think time, one client: mean stall, seconds\n"
        );
        let _ = writeln!(
            s,
            "{:<12} {:>7} {:>7} {:>7} {:>13}",
            "session", "think", "sshfs", "markov", "markov/sshfs"
        );
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let mut names: Vec<&String> = sshfs_stall.keys().chain(markov_stall.keys()).collect();
        names.sort();
        names.dedup();
        for t in names {
            let (a, b) = (sshfs_stall.get(t).copied(), markov_stall.get(t).copied());
            let _ = writeln!(
                s,
                "{t:<12} {:>7} {:>7} {:>7} {:>13}",
                think_s
                    .get(t)
                    .map_or("-".to_string(), |v| format!("{v:.0}")),
                cell(a),
                cell(b),
                cell(quotient(b, a))
            );
        }
        let _ = writeln!(
            s,
            "{:<12} {:>7} {:>7} {:>7} {:>13}\n",
            "mean",
            "",
            cell(mean(&sshfs_stall)),
            cell(mean(&markov_stall)),
            cell(ratio_of_means(&markov_stall, &sshfs_stall))
        );
    }

    let worst = cold
        .markov
        .iter()
        .filter_map(|(t, m)| Some((t, m / cold.sshfs.get(t).filter(|v| **v > 0.0)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let ratios = vec![
        Ratio::at_most(
            "cold tasks: markov / sshfs, mean completion",
            ratio_of_means(&cold.markov, &cold.sshfs),
            0.9,
        ),
        Ratio::at_most(
            format!(
                "cold tasks: markov / sshfs, worst task{}",
                worst.map_or(String::new(), |w| format!(" ({})", w.0))
            ),
            worst.map(|w| w.1),
            1.0,
        ),
        Ratio::at_most(
            "cold tasks: markov / (bytes read ÷ link + local), mean completion",
            ratio_of_means(&cold.markov, &cold.limit),
            1.2,
        ),
        Ratio::info(
            "cold tasks: sshfs / (bytes read ÷ link + local), mean completion",
            ratio_of_means(&cold.sshfs, &cold.limit),
        ),
        Ratio::at_most(
            "sessions with think time: markov / sshfs, mean stall",
            ratio_of_means(&markov_stall, &sshfs_stall),
            0.2,
        ),
        Ratio::at_most(
            "cold tasks: demand bytes fetched / bytes read",
            cold.demand_fetch_all,
            1.3,
        ),
    ];
    (s, ratios)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::tests::row;

    fn task(st: &str, trace: &str, completion: f64, bytes: u64, fetched: Option<u64>) -> Row {
        let mut r = row("strategies", st, "swarm", 1, trace, completion, 0.0);
        r.think_s = 0.0;
        r.bytes = bytes;
        r.fetched = fetched;
        r
    }

    fn session(st: &str, trace: &str, stall: f64) -> Row {
        let mut r = row("strategies", st, "swarm", 1, trace, 20.0, stall);
        r.think_s = 15.0;
        r
    }

    /// The issue's reference: at 100 Mbit/s, 12.5 MB read in 0.3 s locally has a limit of
    /// 1 + 0.3 s.
    fn link() -> Link {
        Link {
            bits_per_s: 100e6,
            rtt_s: 0.0,
            rtt_measured: false,
        }
    }

    #[test]
    fn ratios_of_issue_11() {
        let rows = vec![
            task("local", "git-1", 0.3, 12_500_000, None),
            task("local", "man-1", 0.7, 25_000_000, None),
            task("sshfs", "git-1", 2.0, 12_500_000, None),
            task("sshfs", "man-1", 3.0, 25_000_000, None),
            task("markov", "git-1", 1.3, 12_500_000, Some(20_000_000)),
            task("markov", "man-1", 3.3, 25_000_000, Some(30_000_000)),
            task("demand", "git-1", 1.5, 12_500_000, Some(15_000_000)),
            task("demand", "man-1", 3.5, 25_000_000, None), // no report: out of the ratio
            // The boot: listed, never in the means.
            task("local", "vmboot-1", 23.0, 50_000_000, None),
            task("sshfs", "vmboot-1", 26.0, 50_000_000, None),
            task("markov", "vmboot-1", 100.0, 50_000_000, None),
            session("sshfs", "session-1", 2.0),
            session("markov", "session-1", 0.5),
            // Sessions without think time are not in the stall ratio.
            {
                let mut r = session("markov", "session-1", 9.0);
                r.think_s = 0.0;
                r
            },
        ];
        let l = link();
        let (text, r) = section(&rows, Some(&l));
        let v = |i: usize| r[i].value.unwrap();
        assert!((v(0) - 4.6 / 5.0).abs() < 1e-9, "{}", v(0)); // markov/sshfs: 2.3 / 2.5
        assert!(r[0].verdict().contains("missed by 2%"));
        assert!(r[1].what.ends_with("(man-1)"));
        assert!((v(1) - 1.1).abs() < 1e-9); // 3.3 / 3.0
                                            // limits: git 1.0 + 0.3 = 1.3, man 2.0 + 0.7 = 2.7; markov 2.3 / 2.0
        assert!((v(2) - 1.15).abs() < 1e-9, "{}", v(2));
        assert_eq!(r[2].met(), Some(true));
        assert!((v(3) - 1.25).abs() < 1e-9); // sshfs 2.5 / 2.0
        assert!((v(4) - 0.25).abs() < 1e-9); // stall 0.5 / 2.0
        assert!((v(5) - 1.2).abs() < 1e-9); // demand git-1 only: 15 / 12.5
        let mean = text.lines().find(|l| l.starts_with("mean (2)")).unwrap();
        assert!(mean.ends_with("1.20"), "{mean}"); // demand, total over total
        assert!(text.contains("(boot: not in the means)"), "{text}");
        let boot = text.lines().find(|l| l.starts_with("vmboot-1")).unwrap();
        assert!(boot.contains("100.00"), "{boot}");
    }

    #[test]
    fn without_link_or_rows() {
        let rows = vec![
            task("local", "git-1", 0.3, 12_500_000, None),
            task("markov", "git-1", 1.3, 12_500_000, None),
        ];
        let (text, r) = section(&rows, None);
        assert!(text.contains("link rate not given"));
        assert_eq!(r[0].value, None); // no sshfs
        assert_eq!(r[2].value, None); // no link: no limit
        assert!(r[2].verdict().starts_with("n/a"));
        let (text, r) = section(&[], None);
        assert!(text.is_empty());
        assert!(r.iter().all(|x| x.value.is_none()));
    }
}
