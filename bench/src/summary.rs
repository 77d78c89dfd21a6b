//! The summary: means per group and the ratios issues 6 and 11 ask for, as text.
//!
//! Every ratio compares rows of one CSV, i.e. runs measured side by side on the same links.
//! This file has the completion tables and the crowd's ratios; `bytes`, `cold` and `latency`
//! add their sections.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::ratio::quotient;
use crate::{bytes, cold, latency, Link, Ratio, Row};

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

/// The kinds of trace the strategies phase replays. The boot is apart from the tasks: it
/// lasts minutes of recorded compute that a mean over seconds-long tasks would be made of.
pub fn trace_kinds() -> [TraceKind; 4] {
    [
        ("tasks", Row::is_cold_task),
        ("boot", Row::is_boot),
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

/// Mean of `f` over rows matching `keep`, without the count.
fn mean_of(rows: &[Row], keep: impl Fn(&Row) -> bool, f: impl Fn(&Row) -> f64) -> Option<f64> {
    mean(rows, keep, f).map(|(m, _)| m)
}

/// The crowd's ratios: flash crowd at the largest N measured, and scaling from N=1.
pub fn crowd_ratios(rows: &[Row]) -> Vec<Ratio> {
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
    let markov = mean_of(rows, crowd("markov", Some("swarm"), nmax), comp);
    let mut out = vec![
        Ratio::at_most(
            format!("N={nmax} swarm: markov mean stall / oracle mean stall"),
            quotient(
                mean_of(rows, crowd("markov", Some("swarm"), nmax), stall),
                mean_of(rows, crowd("oracle", Some("swarm"), nmax), stall),
            ),
            1.5,
        ),
        Ratio::at_least(
            format!("N={nmax}: network storage (sshfs) mean completion / markov swarm"),
            quotient(mean_of(rows, crowd("sshfs", None, nmax), comp), markov),
            3.0,
        ),
        Ratio::info(
            format!("N={nmax}: full download (aria2c) + run mean completion / markov swarm"),
            quotient(mean_of(rows, crowd("aria2", None, nmax), comp), markov),
        ),
    ];
    for (mode, goal) in [("swarm", Some(1.2)), ("cs", None)] {
        let what = format!("markov {mode}: mean completion N={nmax} / N=1");
        let value = quotient(
            mean_of(rows, crowd("markov", Some(mode), nmax), comp),
            mean_of(rows, crowd("markov", Some(mode), 1), comp),
        );
        out.push(match goal {
            Some(g) => Ratio::at_most(what, value, g),
            None => Ratio::info(what, value),
        });
    }
    out
}

/// The whole summary: completion per strategy, bytes fetched, the one-client figures, miss
/// latency, the crowd, then every ratio with its goal. `link` (rate and RTT) is needed by
/// the figures measured against the link; without it they say n/a.
pub fn render(rows: &[Row], link: Option<&Link>) -> String {
    let mut s = strategies_table(rows);
    s += &bytes::table(rows);
    let (text, mut one) = cold::section(rows, link);
    s += &text;
    s += &latency::section(rows, link);
    s += &crowd_table(rows);
    one.retain(|r| r.value.is_some() || r.goal.is_some());
    let groups = [
        ("One client (N=1), held-out traces (issue 11)", one),
        ("Flash crowd (issues 6 and 11)", crowd_ratios(rows)),
    ];
    if groups.iter().any(|(_, r)| !r.is_empty()) {
        let _ = writeln!(s, "Ratios (same run, same links)");
        for (title, rs) in groups.iter().filter(|(_, r)| !r.is_empty()) {
            let _ = writeln!(s, "\n {title}");
            for x in rs {
                let _ = writeln!(s, "  {:<70} {}", x.what, x.verdict());
            }
        }
    }
    s
}

/// A table of one cell per strategy (rows) and kind of trace (columns), one client, under
/// `title`; `cell` gets the filter of its rows. Empty when the phase was not run.
pub fn by_strategy_and_kind(
    rows: &[Row],
    title: &str,
    cell: impl Fn(&dyn Fn(&Row) -> bool) -> String,
) -> String {
    let mut s = String::new();
    let strat = strategies(rows, "strategies");
    if strat.is_empty() {
        return s;
    }
    let _ = writeln!(s, "{title}\n");
    let _ = write!(s, "{:<10}", "strategy");
    for (k, _) in trace_kinds() {
        let _ = write!(s, " {:>24}", k);
    }
    let _ = writeln!(s);
    for st in &strat {
        let _ = write!(s, "{st:<10}");
        for (_, keep) in trace_kinds() {
            let c = cell(&|r: &Row| r.phase == "strategies" && &r.strategy == st && keep(r));
            let _ = write!(s, " {c:>24}");
        }
        let _ = writeln!(s);
    }
    s
}

/// "completion / stall" means of the rows `keep` keeps, with their count if `count`.
fn completion_stall(rows: &[Row], keep: impl Fn(&Row) -> bool, count: bool) -> String {
    match (
        mean(rows, &keep, |r| r.completion_s),
        mean(rows, &keep, |r| r.stall_s),
    ) {
        (Some((c, n)), Some((st, _))) if count => format!("{c:.2} / {st:.2} ({n})"),
        (Some((c, _)), Some((st, _))) => format!("{c:.2} / {st:.2}"),
        _ => "-".into(),
    }
}

/// Mean completion / mean stall per strategy and kind of trace, one client.
fn strategies_table(rows: &[Row]) -> String {
    let mut s = by_strategy_and_kind(
        rows,
        "One client (N=1), held-out traces: mean completion / mean stall, seconds",
        |keep| completion_stall(rows, keep, true),
    );
    if !s.is_empty() {
        s += "\n(n) = replays averaged. completion includes setup: the whole-image download for
full/aria2, mounting until the image appears for the others. tasks: every held-out task
but the boot (vmboot-*, its reads at their recorded times).\n\n";
    }
    s
}

/// Mean completion / mean stall per crowd series and N.
fn crowd_table(rows: &[Row]) -> String {
    let mut s = String::new();
    let series = crowd_series(rows);
    if series.is_empty() {
        return s;
    }
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
            let k =
                |r: &Row| r.phase == "crowd" && &r.strategy == st && &r.mode == mode && r.n == *n;
            let cell = completion_stall(rows, k, false);
            let _ = write!(s, " {cell:>16}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::tests::row;

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
        let r = crowd_ratios(&rows);
        assert_eq!(r[0].value, Some(2.0)); // mean stall 2 / 1
        assert!(r[0].verdict().contains("missed by 33%"));
        assert_eq!(r[1].value, Some(2.0)); // 48 / 24
        assert!(r[1].verdict().contains("(goal >= 3: missed by 33%)"));
        assert_eq!(r[2].value, None); // no aria2 rows
        assert_eq!(r[3].value, Some(1.2));
        assert!(r[3].verdict().contains("met"));
        assert_eq!(r[4].value, Some(2.0));
        assert!(crowd_ratios(&[]).is_empty());
    }

    #[test]
    fn tables_list_strategies_in_order() {
        let rows = vec![
            row("strategies", "markov", "swarm", 1, "git-1", 2.0, 1.0),
            row("strategies", "local", "local", 1, "git-1", 1.0, 0.0),
        ];
        assert_eq!(strategies(&rows, "strategies"), vec!["local", "markov"]);
        let text = render(&rows, None);
        assert!(text.find("local").unwrap() < text.find("markov").unwrap());
        assert!(text.contains("2.00 / 1.00 (1)"));
    }
}
