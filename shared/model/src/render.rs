//! The reports of [`crate::train`] as `vmt-train` prints them: each report's `Display` is its
//! text (tables end in a newline), and [`EvalReport::to_json`] / [`CurveReport::to_json`] are
//! the `--json` documents.

use std::fmt::{self, Display, Formatter};
use std::path::Path;

use crate::curve::CURVE_STRATEGIES;
use crate::evaluate::Ratio;
use crate::granularity::human_bytes;
use crate::profile::Bundle;
use crate::scheduler::Strategy;
use crate::simulate::LinkParams;
use crate::train::{BenchFitReport, BundleReport, CurveReport, EvalReport, FitReport, SynthReport};

/// Microseconds as seconds with two decimals.
fn secs(us: f64) -> String {
    format!("{:.2}", us / 1e6)
}

/// A trace's file name, for tables.
fn short_name(trace: &str) -> String {
    Path::new(trace)
        .file_name()
        .map_or(trace.to_string(), |n| n.to_string_lossy().into_owned())
}

fn describe_link(link: &LinkParams) -> String {
    format!(
        "{:.0} Mbit/s, round trip {:.2} ms, think {}s",
        link.bits_per_s / 1e6,
        link.rtt_us as f64 / 1e3,
        secs(link.think_us as f64)
    )
}

/// The profiles of a bundle, one line each, and its common blocks.
///
/// Clustering is blind to labels, so one task may have several profiles (variants: `shell`'s
/// command sets, a warm session segment that read a fraction of a cold run): each says which
/// variant of its task it is, and a line lists them, so they read as one task.
struct ProfilesTable<'a>(&'a Bundle);

impl Display for ProfilesTable<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let bytes = |blocks: usize| blocks as f64 * b.block_size as f64;
        // Profiles by their majority label, in order of first appearance.
        let mut tasks: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, p) in b.profiles.iter().enumerate() {
            let label = p.majority_label();
            match tasks.iter_mut().find(|(l, _)| *l == label) {
                Some((_, v)) => v.push(i),
                None => tasks.push((label, vec![i])),
            }
        }
        let variant = |i: usize| -> String {
            let label = b.profiles[i].majority_label();
            match tasks.iter().find(|(l, _)| *l == label) {
                Some((_, v)) if v.len() > 1 => {
                    let j = v.iter().position(|&x| x == i).unwrap_or(0);
                    format!("{}/{}", j + 1, v.len())
                }
                _ => String::new(),
            }
        };
        writeln!(
            f,
            "{:>3}  {:<20} {:>7} {:>5} {:>8} {:>9} {:>6}  labels",
            "#", "profile", "variant", "runs", "blocks", "MiB", "image"
        )?;
        for (i, p) in b.profiles.iter().enumerate() {
            let labels: Vec<String> = p.labels.iter().map(|(l, n)| format!("{l}×{n}")).collect();
            writeln!(
                f,
                "{:>3}  {:<20} {:>7} {:>5} {:>8} {:>9.2} {:>5.1}%  {}",
                i,
                p.name,
                variant(i),
                p.members.len(),
                p.blocks.len(),
                bytes(p.blocks.len()) / 1048576.0,
                100.0 * bytes(p.blocks.len()) / b.image.size as f64,
                labels.join(" ")
            )?;
        }
        let variants: Vec<String> = tasks
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(l, v)| {
                let ids: Vec<String> = v.iter().map(|i| i.to_string()).collect();
                format!("{l} ({})", ids.join(" "))
            })
            .collect();
        if !variants.is_empty() {
            writeln!(
                f,
                "variants of one task (runs of it that read different files; the belief counts any of them as the task): {}",
                variants.join(", ")
            )?;
        }
        writeln!(
            f,
            "common blocks (read by most tasks): {} ({:.2} MiB)",
            b.common.len(),
            bytes(b.common.len()) / 1048576.0
        )
    }
}

/// Distinct majority labels of a bundle's profiles: the tasks it knows.
fn task_count(b: &Bundle) -> usize {
    let mut labels: Vec<&str> = b.profiles.iter().map(|p| p.majority_label()).collect();
    labels.sort_unstable();
    labels.dedup();
    labels.len()
}

impl Display for FitReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let b = &self.bundle;
        writeln!(
            f,
            "fitted {} runs from {} traces in {:.1}s: {} profiles of {} tasks, silhouette {:.2}, purity {:.2}, max within-profile distance {:.2}",
            b.meta.runs,
            self.traces,
            self.seconds,
            b.profiles.len(),
            task_count(b),
            b.meta.silhouette,
            b.meta.purity,
            b.meta.max_within,
        )?;
        write!(f, "{}", ProfilesTable(b))?;
        writeln!(f, "wrote {}", self.out.display())
    }
}

impl Display for BundleReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let b = &self.bundle;
        writeln!(f, "bundle {}", self.path.display())?;
        writeln!(f, "image: {}", b.image)?;
        writeln!(
            f,
            "block size: {} bytes; trained on {} runs from {} traces; silhouette {:.2}; purity {:.2}",
            b.block_size,
            b.meta.runs,
            b.meta.traces.len(),
            b.meta.silhouette,
            b.meta.purity
        )?;
        write!(f, "{}", ProfilesTable(b))?;
        for (i, p) in b.profiles.iter().enumerate() {
            let members: Vec<String> = p
                .members
                .iter()
                .map(|m| {
                    let name = short_name(&m.trace);
                    if m.segment > 0 {
                        format!("{name}#{}", m.segment)
                    } else {
                        name
                    }
                })
                .collect();
            writeln!(f, "members of {i} ({}): {}", p.name, members.join(", "))?;
        }
        let k = b.profiles.len();
        writeln!(f, "transitions P(next | current), rows = current:")?;
        write!(f, "{:>10}", "")?;
        for j in 0..k {
            write!(f, " {:>7}", j)?;
        }
        writeln!(f)?;
        write!(f, "{:>10}", "start")?;
        for j in 0..k {
            write!(f, " {:>7.3}", b.markov.start[j])?;
        }
        writeln!(f)?;
        for i in 0..k {
            write!(f, "{:>10}", i)?;
            for j in 0..k {
                write!(f, " {:>7.3}", b.markov.transition(i, j))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl EvalReport {
    /// The `--json` document: the settings, every trace's results and the summary.
    pub fn to_json(&self) -> serde_json::Value {
        let p = &self.params;
        serde_json::json!({
            "bandwidth_bits_per_s": p.link.bits_per_s,
            "piece_size": p.granularity.piece_size(),
            "block_size": p.granularity.block_size(),
            "rtt_us": p.link.rtt_us,
            "think_us": p.link.think_us,
            "cross_validated": self.cross_validated,
            "traces": self.results,
            "summary": self.summary,
        })
    }
}

impl Display for EvalReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (results, summary, params) = (&self.results, &self.summary, &self.params);
        writeln!(
            f,
            "{} traces, {}, {}{}; completion / stall in seconds",
            results.len(),
            describe_link(&params.link),
            params.granularity,
            if self.cross_validated {
                ", leave-one-run-out"
            } else {
                ""
            }
        )?;
        write!(f, "{:<28} {:>8}", "trace", "local")?;
        for s in &params.strategies {
            write!(f, " {:>15}", s.name())?;
        }
        writeln!(f)?;
        for r in results {
            write!(
                f,
                "{:<28} {:>8}",
                short_name(&r.trace),
                secs(r.local_us as f64)
            )?;
            for (_, o) in &r.outcomes {
                write!(
                    f,
                    " {:>15}",
                    format!(
                        "{}/{}",
                        secs(o.completion_us as f64),
                        secs(o.stall_us as f64)
                    )
                )?;
            }
            writeln!(f)?;
        }
        write!(f, "{:<28} {:>8}", "mean", "")?;
        for s in &summary.strategies {
            write!(
                f,
                " {:>15}",
                format!("{}/{}", secs(s.mean_completion_us), secs(s.mean_stall_us))
            )?;
        }
        writeln!(f)?;
        writeln!(f, "bytes fetched by the end of each trace / bytes it read")?;
        write!(f, "{:<28} {:>8}", "trace", "MB read")?;
        for s in &params.strategies {
            write!(f, " {:>15}", s.name())?;
        }
        writeln!(f)?;
        let ratio = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
        for r in results {
            let read = r.outcomes.first().map_or(0, |(_, o)| o.bytes_read);
            write!(f, "{:<28} {:>8.1}", short_name(&r.trace), read as f64 / 1e6)?;
            for (_, o) in &r.outcomes {
                write!(f, " {:>15}", ratio(o.fetched_per_read()))?;
            }
            writeln!(f)?;
        }
        write!(f, "{:<28} {:>8}", "mean", "")?;
        for s in &summary.strategies {
            write!(f, " {:>15}", ratio(s.mean_fetched_per_read))?;
        }
        writeln!(f)?;
        write!(f, "{}", FirstTaskTable(self))?;
        if !summary.markov_completion_ratio.is_empty() {
            // A ratio to a strategy that (as good as) never stalled is undefined: print the
            // difference in seconds beside every ratio, and only the difference there.
            let fmt = |v: &[(Strategy, Ratio)]| {
                v.iter()
                    .map(|(s, r)| match r.ratio {
                        Some(x) => format!("/{s} {x:.3} ({:+.2}s)", r.excess_us / 1e6),
                        None => format!(
                            "/{s} n/a ({:+.2}s; {s} < {:.2}s)",
                            r.excess_us / 1e6,
                            Ratio::FLOOR_US / 1e6
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            writeln!(
                f,
                "markov completion ratio: {}",
                fmt(&summary.markov_completion_ratio)
            )?;
            let over = if results.iter().any(|r| r.session) {
                "sessions"
            } else {
                "all traces"
            };
            writeln!(
                f,
                "markov stall ratio ({over}): {}",
                fmt(&summary.markov_stall_ratio)
            )?;
            writeln!(
                f,
                "markov first-task stall ratio ({over}): {}",
                fmt(&summary.markov_first_task_stall_ratio)
            )?;
        }
        for a in &summary.accuracy {
            if a.segments > 0 {
                writeln!(
                    f,
                    "inference accuracy after {} reads: {:.1}% of {} task segments",
                    a.after_reads,
                    100.0 * a.hits as f64 / a.segments as f64,
                    a.segments
                )?;
            }
        }
        Ok(())
    }
}

/// Per trace: its first task, each strategy's stall in it, and how often `markov`'s belief
/// named the task after each probe's number of reads.
struct FirstTaskTable<'a>(&'a EvalReport);

impl Display for FirstTaskTable<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (results, summary, params) = (&self.0.results, &self.0.summary, &self.0.params);
        writeln!(
            f,
            "stall in the first task (seconds; after a session's mount phase), and markov's accuracy (right/counted task segments) after N reads"
        )?;
        write!(f, "{:<28} {:>8}", "trace", "task")?;
        for s in &params.strategies {
            write!(f, " {:>9}", s.name())?;
        }
        for n in &params.probe_reads {
            write!(f, " {:>7}", format!("acc@{n}"))?;
        }
        writeln!(f)?;
        for r in results {
            write!(f, "{:<28} {:>8}", short_name(&r.trace), r.first_task.task)?;
            for (_, stall) in &r.first_task.stall_us {
                write!(f, " {:>9}", secs(*stall as f64))?;
            }
            for a in &r.accuracy {
                write!(f, " {:>7}", format!("{}/{}", a.hits, a.segments))?;
            }
            writeln!(f)?;
        }
        let over = if results.iter().any(|r| r.session) {
            "mean (sessions)"
        } else {
            "mean"
        };
        write!(f, "{:<28} {:>8}", over, "")?;
        for s in &summary.strategies {
            write!(f, " {:>9}", secs(s.first_task_mean_stall_us))?;
        }
        for a in &summary.accuracy {
            write!(f, " {:>7}", format!("{}/{}", a.hits, a.segments))?;
        }
        writeln!(f)
    }
}

impl CurveReport {
    /// The `--json` document: the link and the curve.
    pub fn to_json(&self) -> serde_json::Value {
        let link = &self.params.base.link;
        serde_json::json!({
            "bandwidth_bits_per_s": link.bits_per_s,
            "rtt_us": link.rtt_us,
            "think_us": link.think_us,
            "cross_validated": self.cross_validated,
            "curve": self.curve,
        })
    }
}

impl Display for CurveReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let curve = &self.curve;
        writeln!(
            f,
            "size curve: {} traces, {}, image {}{}",
            curve.traces,
            describe_link(&self.params.base.link),
            human_bytes(curve.image_bytes),
            if self.cross_validated {
                ", leave-one-run-out"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "per strategy: mean stall in seconds and bytes fetched / bytes read; seedable: share of markov's bytes fetched in complete pieces by the end of a trace (peers trade only those); costs: pieces, hash bytes (SHA-1 per piece + SHA-256 per block), bitfield and HAVE bytes per peer"
        )?;
        write!(
            f,
            "{:>8} {:>7} {:>8} {:>10} {:>9} {:>10}",
            "piece", "blocks", "pieces", "hashes", "bitfield", "HAVEs"
        )?;
        for s in CURVE_STRATEGIES {
            write!(f, " {:>13}", s.name())?;
        }
        writeln!(f, " {:>9}", "seedable")?;
        for p in &curve.points {
            let g = p.granularity;
            write!(
                f,
                "{:>8} {:>7} {:>8} {:>10} {:>9} {:>10}",
                human_bytes(g.piece_size() as u64).replace(' ', ""),
                g.block_size()
                    .map_or("none".to_string(), |b| human_bytes(b as u64)
                        .replace(' ', "")),
                p.costs.pieces,
                human_bytes(p.costs.torrent_bytes),
                human_bytes(p.costs.bitfield_bytes),
                human_bytes(p.costs.have_bytes_per_peer),
            )?;
            for s in CURVE_STRATEGIES {
                match p.strategy(s) {
                    Some(x) => write!(
                        f,
                        " {:>13}",
                        format!(
                            "{} {}",
                            secs(x.mean_stall_us),
                            x.mean_fetched_per_read
                                .map_or("-".to_string(), |r| format!("{r:.2}x"))
                        )
                    )?,
                    None => write!(f, " {:>13}", "-")?,
                }
            }
            let seedable = p
                .strategy(Strategy::Markov)
                .and_then(|m| m.mean_seedable_share);
            writeln!(
                f,
                " {:>9}",
                seedable.map_or("-".to_string(), |x| format!("{:.0}%", x * 100.0))
            )?;
        }
        match &curve.recommendation {
            Some(r) => {
                writeln!(f, "recommended: {}", r.reason)?;
                match &r.stock {
                    Some(s) if s.granularity != r.choice.granularity => writeln!(
                        f,
                        "without a block table (a stock torrent): {}, markov stall {:.3} s, {:.0}% seedable, {} pieces, {} of hashes",
                        s.granularity,
                        s.markov_stall_us / 1e6,
                        s.markov_seedable_share * 100.0,
                        s.costs.pieces,
                        human_bytes(s.costs.torrent_bytes)
                    ),
                    Some(_) => Ok(()),
                    None => writeln!(
                        f,
                        "without a block table (a stock torrent) no piece size comes within {:.0}% of the best stall with {:.0}% seedable",
                        curve.tolerance * 100.0,
                        curve.min_seedable_share * 100.0
                    ),
                }
            }
            None => writeln!(f, "no recommendation: markov did not run"),
        }
    }
}

impl Display for SynthReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} traces of image {} to {}",
            self.traces,
            self.image,
            self.out.display()
        )
    }
}

impl Display for BenchFitReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bench-fit: {} traces ({} records) of a {} MiB image, {} tasks",
            self.traces,
            self.records,
            self.image_bytes >> 20,
            self.tasks
        )?;
        writeln!(
            f,
            "generate: {:.2}s; VmHWM after generating: {} MiB",
            self.generate_s,
            self.generated_hwm_kib / 1024
        )?;
        writeln!(
            f,
            "fit: {:.2}s; {} profiles, purity {:.3}, silhouette {:.2}; peak memory (VmHWM) {} MiB; bundle {} KiB",
            self.fit_s,
            self.bundle.profiles.len(),
            self.bundle.meta.purity,
            self.bundle.meta.silhouette,
            self.hwm_kib / 1024,
            self.bundle_bytes / 1024
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::{summarize, Accuracy, EvalParams, FirstTask, TraceResult};
    use crate::granularity::Granularity;
    use crate::simulate::Outcome;

    /// Issue 13: an oracle that stalled 0.2 ms printed "/oracle 2348.7". Every ratio to it
    /// (whole trace and first task) is n/a with the difference, the first-task stalls and the
    /// accuracy after 10 reads are printed per trace, and nothing prints a huge ratio.
    #[test]
    fn r13_eval_prints_no_ratio_to_an_oracle_that_never_stalled() {
        let stall = |us| Outcome {
            completion_us: 1_000_000 + us,
            stall_us: us,
            ..Outcome::default()
        };
        let strategies = [Strategy::Demand, Strategy::Markov, Strategy::Oracle];
        let results = vec![TraceResult {
            trace: "traces/test/walk-13.vmtrace".into(),
            session: true,
            local_us: 1_000_000,
            outcomes: strategies
                .iter()
                .zip([900_000, 469_800, 200])
                .map(|(&s, us)| (s, stall(us)))
                .collect(),
            accuracy: vec![Accuracy {
                after_reads: 10,
                hits: 3,
                segments: 4,
            }],
            boundaries: 3,
            first_task: FirstTask {
                task: "search".into(),
                records: 40,
                stall_us: strategies
                    .iter()
                    .zip([600_000, 400_000, 200])
                    .map(|(&s, us)| (s, us))
                    .collect(),
            },
        }];
        let mut params = EvalParams::new(
            LinkParams::new(100e6),
            Granularity::pieces(256 << 10).unwrap(),
        );
        params.strategies = strategies.to_vec();
        params.probe_reads = vec![10];
        let report = EvalReport {
            summary: summarize(&results),
            results,
            params,
            cross_validated: true,
        };
        let text = report.to_string();
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no line {start:?} in:\n{text}"))
                .to_string()
        };
        assert!(
            line("markov stall ratio (sessions)").contains("/oracle n/a (+0.47s"),
            "{text}"
        );
        let first = line("markov first-task stall ratio (sessions)");
        assert!(first.contains("/oracle n/a (+0.40s"), "{first}");
        assert!(first.contains("/demand 0.667"), "{first}");
        // The first-task table: the task, each strategy's stall in it, acc@10 right/counted.
        assert!(
            line("trace").contains("acc@10") || text.contains(" acc@10"),
            "{text}"
        );
        let first_row = text
            .lines()
            .filter(|l| l.starts_with("walk-13.vmtrace"))
            .find(|l| l.contains("search"))
            .unwrap_or_else(|| panic!("no first-task row in:\n{text}"));
        let cells: Vec<&str> = first_row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["walk-13.vmtrace", "search", "0.60", "0.40", "0.00", "3/4"]
        );
        assert!(
            line("inference accuracy after 10 reads").contains("75.0% of 4"),
            "{text}"
        );
        assert!(!text.contains("2348"), "{text}");
    }
}
