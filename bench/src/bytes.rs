//! Bytes fetched against bytes read, one client: what each strategy moves over the link for
//! what the guest reads (issue 11, item 6).

use std::fmt::Write;

use crate::summary::{by_strategy_and_kind, strategies};
use crate::Row;

/// Bytes of a group of replays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bytes {
    /// Mean bytes read, over every replay of the group.
    pub read: f64,
    /// Mean bytes fetched, over the replays that measured it; `None` when none did.
    pub fetched: Option<f64>,
    /// Total fetched / total read over the replays that measured both, so the two sides
    /// always cover the same replays.
    pub ratio: Option<f64>,
}

/// The bytes of the rows matching `keep`, `None` when none match.
pub fn of(rows: &[Row], keep: impl Fn(&Row) -> bool) -> Option<Bytes> {
    let group: Vec<&Row> = rows.iter().filter(|r| keep(r)).collect();
    if group.is_empty() {
        return None;
    }
    let read = group.iter().map(|r| r.bytes as f64).sum::<f64>() / group.len() as f64;
    let measured: Vec<(f64, f64)> = group
        .iter()
        .filter_map(|r| r.fetched.map(|f| (f as f64, r.bytes as f64)))
        .collect();
    let (fetched, ratio) = if measured.is_empty() {
        (None, None)
    } else {
        let f: f64 = measured.iter().map(|m| m.0).sum();
        let b: f64 = measured.iter().map(|m| m.1).sum();
        (Some(f / measured.len() as f64), (b > 0.0).then(|| f / b))
    };
    Some(Bytes {
        read,
        fetched,
        ratio,
    })
}

/// Mean MB read / mean MB fetched (fetched / read) per strategy and kind of trace, N=1.
pub fn table(rows: &[Row]) -> String {
    let mut s = by_strategy_and_kind(
        rows,
        "One client (N=1): mean MB read / mean MB fetched (fetched / read); MB = 10^6 bytes",
        |keep| match of(rows, keep) {
            None => "-".into(),
            Some(b) => match (b.fetched, b.ratio) {
                (Some(f), Some(x)) => format!("{:.2} / {:.2} ({x:.2})", b.read / 1e6, f / 1e6),
                _ => format!("{:.2} / -", b.read / 1e6),
            },
        },
    );
    if s.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\nfetched: payload bytes the client received for the replay, wasted ones included:
vmt mounts' `downloaded` at unmount (right after the replay, so background fetching during
it counts), the whole image for full (its fetch report) and aria2 (the image size);
- = not measured (local, sshfs, results from before the column)."
    );
    let wasted: Vec<String> = strategies(rows, "strategies")
        .iter()
        .filter_map(|st| {
            let (w, f) = rows
                .iter()
                .filter(|r| r.phase == "strategies" && &r.strategy == st)
                .filter_map(|r| Some((r.wasted? as f64, r.fetched? as f64)))
                .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            (f > 0.0).then(|| format!("{st} {:.2}%", 100.0 * w / f))
        })
        .collect();
    if !wasted.is_empty() {
        let _ = writeln!(s, "wasted (of fetched): {}", wasted.join(", "));
    }
    let _ = writeln!(s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::tests::row;

    #[test]
    fn fetched_and_read_cover_the_same_replays() {
        let mut a = row("strategies", "demand", "swarm", 1, "git-1", 2.0, 1.0);
        a.bytes = 1_000_000;
        a.fetched = Some(1_500_000);
        let mut b = row("strategies", "demand", "swarm", 1, "man-1", 2.0, 1.0);
        b.bytes = 3_000_000; // no fetched: in the read mean, not in the ratio
        let rows = vec![a, b];
        let x = of(&rows, |_| true).unwrap();
        assert_eq!(x.read, 2_000_000.0);
        assert_eq!(x.fetched, Some(1_500_000.0));
        assert_eq!(x.ratio, Some(1.5));
        assert_eq!(of(&rows, |_| false), None);
        let none = of(&rows[1..], |_| true).unwrap();
        assert_eq!((none.fetched, none.ratio), (None, None));
    }

    #[test]
    fn table_shows_unmeasured_as_dash() {
        let mut a = row("strategies", "demand", "swarm", 1, "git-1", 2.0, 1.0);
        a.trace_s = 0.3;
        a.think_s = 0.0;
        a.bytes = 10_000_000;
        a.fetched = Some(12_000_000);
        a.wasted = Some(120_000);
        let mut l = row("strategies", "sshfs", "server", 1, "git-1", 2.0, 1.0);
        l.bytes = 10_000_000;
        let t = table(&[a, l]);
        assert!(t.contains("10.00 / 12.00 (1.20)"), "{t}");
        assert!(t.contains("10.00 / -"), "{t}");
        assert!(t.contains("wasted (of fetched): demand 1.00%"), "{t}");
    }
}
