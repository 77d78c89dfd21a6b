//! Means per group and the ratios issue 6 asks for, as text.
//!
//! Every ratio compares rows of one CSV, i.e. runs measured side by side on the same links.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::Row;

/// Strategies in the order tables and plots show them.
pub const ORDER: &[&str] = &[
    "local", "full", "aria2", "sshfs", "demand", "stream", "profile", "markov", "oracle",
];

/// Sort key of a strategy name: [`ORDER`] first, others after, alphabetically.
pub fn rank(strategy: &str) -> (usize, String) {
    let i = ORDER
        .iter()
        .position(|s| *s == strategy)
        .unwrap_or(ORDER.len());
    (i, strategy.to_string())
}

/// Mean and count of `f` over rows matching `keep`; `None` when none match.
pub fn mean(
    rows: &[Row],
    keep: impl Fn(&Row) -> bool,
    f: impl Fn(&Row) -> f64,
) -> Option<(f64, usize)> {
    let v: Vec<f64> = rows.iter().filter(|r| keep(r)).map(f).collect();
    (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64, v.len()))
}

/// A kind of trace: its label and which rows are of it.
pub type TraceKind = (&'static str, fn(&Row) -> bool);

/// The kinds of trace the strategies phase replays.
pub fn trace_kinds() -> [TraceKind; 3] {
    [
        ("tasks", |r| !r.is_session()),
        ("sessions", |r| r.is_session() && r.think_s == 0.0),
        ("sessions+think", |r| r.is_session() && r.think_s > 0.0),
    ]
}

/// Strategies present in `rows` for `phase`, in [`ORDER`].
pub fn strategies(rows: &[Row], phase: &str) -> Vec<String> {
    let mut s: Vec<String> = rows
        .iter()
        .filter(|r| r.phase == phase)
        .map(|r| r.strategy.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    s.sort_by_key(|x| rank(x));
    s
}

/// Crowd series present: (strategy, mode), in [`ORDER`].
pub fn crowd_series(rows: &[Row]) -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.phase == "crowd")
        .map(|r| (r.strategy.clone(), r.mode.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    s.sort_by_key(|(st, m)| (rank(st), m.clone()));
    s
}

/// A ratio `a / b` with its goal (if any), for the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    /// What is divided by what.
    pub what: String,
    /// The ratio, `None` when either side has no rows (or the divisor is 0).
    pub value: Option<f64>,
    /// Goal: the ratio should be at most this.
    pub goal_max: Option<f64>,
}

impl Ratio {
    fn verdict(&self) -> String {
        match (self.value, self.goal_max) {
            (None, _) => "n/a (not measured in this run)".into(),
            (Some(v), None) => format!("{v:.2}"),
            (Some(v), Some(g)) if v <= g => format!("{v:.2}  (goal <= {g}: met)"),
            (Some(v), Some(g)) => format!(
                "{v:.2}  (goal <= {g}: missed by {:.0}%)",
                (v / g - 1.0) * 100.0
            ),
        }
    }
}

fn ratio(a: Option<(f64, usize)>, b: Option<(f64, usize)>) -> Option<f64> {
    match (a, b) {
        (Some((a, _)), Some((b, _))) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The headline ratios: flash crowd at the largest N measured, and scaling from N=1.
pub fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let crowd = |st: &'static str, mode: Option<&'static str>, n: u32| {
        move |r: &Row| {
            r.phase == "crowd" && r.strategy == st && mode.is_none_or(|m| r.mode == m) && r.n == n
        }
    };
    let comp = |r: &Row| r.completion_s;
    let stall = |r: &Row| r.stall_s;
    let Some(nmax) = rows
        .iter()
        .filter(|r| r.phase == "crowd")
        .map(|r| r.n)
        .max()
    else {
        return Vec::new();
    };
    let markov = mean(rows, crowd("markov", Some("swarm"), nmax), comp);
    let mut out = vec![
        Ratio {
            what: format!("N={nmax} swarm: markov mean stall / oracle mean stall"),
            value: ratio(
                mean(rows, crowd("markov", Some("swarm"), nmax), stall),
                mean(rows, crowd("oracle", Some("swarm"), nmax), stall),
            ),
            goal_max: Some(1.5),
        },
        Ratio {
            what: format!("N={nmax}: network storage (sshfs) mean completion / markov swarm"),
            value: ratio(mean(rows, crowd("sshfs", None, nmax), comp), markov),
            goal_max: None,
        },
        Ratio {
            what: format!("N={nmax}: full download (aria2c) + run mean completion / markov swarm"),
            value: ratio(mean(rows, crowd("aria2", None, nmax), comp), markov),
            goal_max: None,
        },
    ];
    for (mode, goal) in [("swarm", Some(1.2)), ("cs", None)] {
        let m = if mode == "swarm" { "swarm" } else { "cs" };
        out.push(Ratio {
            what: format!("markov {mode}: mean completion N={nmax} / N=1"),
            value: ratio(
                mean(rows, crowd("markov", Some(m), nmax), comp),
                mean(rows, crowd("markov", Some(m), 1), comp),
            ),
            goal_max: goal,
        });
    }
    out
}

/// The whole summary: strategies table, crowd table, ratios.
pub fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    let strat = strategies(rows, "strategies");
    if !strat.is_empty() {
        let _ = writeln!(
            s,
            "One client (N=1), held-out traces: mean completion / mean stall, seconds\n"
        );
        let _ = write!(s, "{:<10}", "strategy");
        for (k, _) in trace_kinds() {
            let _ = write!(s, " {:>24}", k);
        }
        let _ = writeln!(s);
        for st in &strat {
            let _ = write!(s, "{st:<10}");
            for (_, keep) in trace_kinds() {
                let k = |r: &Row| r.phase == "strategies" && &r.strategy == st && keep(r);
                match (
                    mean(rows, k, |r| r.completion_s),
                    mean(rows, k, |r| r.stall_s),
                ) {
                    (Some((c, n)), Some((st, _))) => {
                        let _ = write!(s, " {:>24}", format!("{c:.2} / {st:.2} ({n})"));
                    }
                    _ => {
                        let _ = write!(s, " {:>24}", "-");
                    }
                }
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "\n(n) = replays averaged. completion includes setup: the whole-image download for
full/aria2, mounting until the image appears for the others.\n"
        );
    }
    let series = crowd_series(rows);
    if !series.is_empty() {
        let ns: BTreeSet<u32> = rows
            .iter()
            .filter(|r| r.phase == "crowd")
            .map(|r| r.n)
            .collect();
        let _ = writeln!(
            s,
            "Flash crowd: N clients start together, each replays a held-out session"
        );
        let _ = writeln!(
            s,
            "with think time; mean completion / mean stall, seconds\n"
        );
        let _ = write!(s, "{:<16}", "strategy mode");
        for n in &ns {
            let _ = write!(s, " {:>16}", format!("N={n}"));
        }
        let _ = writeln!(s);
        for (st, mode) in &series {
            let _ = write!(s, "{:<16}", format!("{st} {mode}"));
            for n in &ns {
                let k = |r: &Row| {
                    r.phase == "crowd" && &r.strategy == st && &r.mode == mode && r.n == *n
                };
                match (
                    mean(rows, k, |r| r.completion_s),
                    mean(rows, k, |r| r.stall_s),
                ) {
                    (Some((c, _)), Some((st, _))) => {
                        let _ = write!(s, " {:>16}", format!("{c:.2} / {st:.2}"));
                    }
                    _ => {
                        let _ = write!(s, " {:>16}", "-");
                    }
                }
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s);
    }
    let r = ratios(rows);
    if !r.is_empty() {
        let _ = writeln!(s, "Ratios (same run, same links)\n");
        for x in r {
            let _ = writeln!(s, "  {:<66} {}", x.what, x.verdict());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::row;

    #[test]
    fn ratios_at_largest_n() {
        let rows = vec![
            row("crowd", "markov", "swarm", 1, "session-1", 20.0, 1.0),
            row("crowd", "markov", "swarm", 4, "session-1", 22.0, 3.0),
            row("crowd", "markov", "swarm", 4, "session-2", 26.0, 1.0),
            row("crowd", "oracle", "swarm", 4, "session-1", 21.0, 1.0),
            row("crowd", "sshfs", "server", 4, "session-1", 48.0, 10.0),
            row("crowd", "markov", "cs", 1, "session-1", 20.0, 1.0),
            row("crowd", "markov", "cs", 4, "session-1", 40.0, 1.0),
        ];
        let r = ratios(&rows);
        assert_eq!(r[0].value, Some(2.0)); // mean stall 2 / 1
        assert!(r[0].verdict().contains("missed by 33%"));
        assert_eq!(r[1].value, Some(2.0)); // 48 / 24
        assert_eq!(r[2].value, None); // no aria2 rows
        assert_eq!(r[3].value, Some(1.2));
        assert!(r[3].verdict().contains("met"));
        assert_eq!(r[4].value, Some(2.0));
        assert!(ratios(&[]).is_empty());
    }

    #[test]
    fn tables_list_strategies_in_order() {
        let rows = vec![
            row("strategies", "markov", "swarm", 1, "git-1", 2.0, 1.0),
            row("strategies", "local", "local", 1, "git-1", 1.0, 0.0),
        ];
        assert_eq!(strategies(&rows, "strategies"), vec!["local", "markov"]);
        let text = render(&rows);
        assert!(text.find("local").unwrap() < text.find("markov").unwrap());
        assert!(text.contains("2.00 / 1.00 (1)"));
    }
}
