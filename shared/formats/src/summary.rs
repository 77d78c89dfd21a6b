//! Traces summarised for people, as `vmt-record` prints them: one line per recorded trace
//! ([`one_line`]), a table of traces ([`traces_table`]), and the per-task comparison
//! ([`TaskTable`]: runs, distinct blocks, and mean Jaccard similarity between and within
//! tasks). Text only; nothing here reads files, so the binary decides what to load.

use std::collections::BTreeMap;
use std::fmt;

use crate::image::{BlockGeometry, GeometryError};
use crate::trace::{jaccard, Trace, TraceKind};

/// Why traces cannot be summarised together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SummaryError {
    /// The block size does not fit an image.
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    /// Traces of two images cannot be compared.
    #[error("{name} belongs to another image ({found}) than {first} ({expected})")]
    OtherImage {
        /// The odd trace.
        name: String,
        /// Its image (as displayed: an identity is 40 bytes, too large for an error).
        found: String,
        /// The first trace.
        first: String,
        /// The first trace's image.
        expected: String,
    },
    /// No trace was given.
    #[error("no traces")]
    Empty,
}

/// `NAME: R reads, W writes, B distinct 4 KiB blocks (P% of the image), M MiB read, S s`.
pub fn one_line(trace: &Trace, name: &str) -> String {
    match BlockGeometry::new(trace.image.size, 4096) {
        Ok(g) => {
            let s = trace.summary(&g);
            format!(
                "{name}: {} reads, {} writes, {} distinct 4 KiB blocks ({:.2}% of the image), {:.1} MiB read, {:.3} s",
                s.reads,
                s.writes,
                s.distinct_blocks,
                100.0 * s.distinct_blocks as f64 / s.image_blocks as f64,
                s.read_bytes as f64 / (1 << 20) as f64,
                s.duration_us as f64 / 1e6
            )
        }
        Err(e) => format!("{name}: {e}"),
    }
}

/// A table of `(name, trace)`: kind, reads, writes, distinct blocks of `block_size`, bytes,
/// share of the image, duration and task labels.
pub fn traces_table(traces: &[(String, Trace)], block_size: u32) -> Result<String, SummaryError> {
    let mut out = format!(
        "{:<28} {:<8} {:>8} {:>8} {:>10} {:>12} {:>8} {:>10}  {}\n",
        "trace", "kind", "reads", "writes", "blocks", "bytes", "image%", "seconds", "tasks"
    );
    for (name, t) in traces {
        let s = t.summary(&BlockGeometry::new(t.image.size, block_size)?);
        out.push_str(&format!(
            "{:<28} {:<8} {:>8} {:>8} {:>10} {:>12} {:>7.2}% {:>10.3}  {}\n",
            name,
            match t.kind {
                TraceKind::Task => "task",
                TraceKind::Session => "session",
            },
            s.reads,
            s.writes,
            s.distinct_blocks,
            s.read_bytes + s.written_bytes,
            100.0 * s.distinct_blocks as f64 / s.image_blocks as f64,
            s.duration_us as f64 / 1e6,
            t.tasks.join(",")
        ));
    }
    Ok(out)
}

/// Tasks compared across traces of one image: each task label's runs (task traces, and
/// session segments) as block sets. Its `Display` is two Markdown tables: per task, and the
/// mean Jaccard similarity between tasks (diagonal: between runs of the same task).
#[derive(Clone, Debug)]
pub struct TaskTable {
    /// Block sets of each run, by task label.
    pub runs: BTreeMap<String, Vec<Vec<u32>>>,
    /// Blocks in the image.
    pub image_blocks: u32,
}

impl TaskTable {
    /// Groups the runs of `traces` by task, counting blocks of `block_size`.
    pub fn new(traces: &[(String, Trace)], block_size: u32) -> Result<TaskTable, SummaryError> {
        let (first_name, first) = traces.first().ok_or(SummaryError::Empty)?;
        let mut runs: BTreeMap<String, Vec<Vec<u32>>> = BTreeMap::new();
        for (name, t) in traces {
            if t.image != first.image {
                return Err(SummaryError::OtherImage {
                    name: name.clone(),
                    found: t.image.to_string(),
                    first: first_name.clone(),
                    expected: first.image.to_string(),
                });
            }
            let g = BlockGeometry::new(t.image.size, block_size)?;
            for (task, blocks) in t.blocks_by_task(&g) {
                runs.entry(task.to_string()).or_default().push(blocks);
            }
        }
        Ok(TaskTable {
            runs,
            image_blocks: BlockGeometry::new(first.image.size, block_size)?.block_count(),
        })
    }

    /// Mean Jaccard similarity between the runs of `a` and `b` (distinct runs when `a == b`);
    /// NaN when there is no pair.
    pub fn similarity(&self, a: &str, b: &str) -> f64 {
        let (Some(xs), Some(ys)) = (self.runs.get(a), self.runs.get(b)) else {
            return f64::NAN;
        };
        let mut sims = Vec::new();
        for (i, x) in xs.iter().enumerate() {
            for (j, y) in ys.iter().enumerate() {
                if a != b || i < j {
                    sims.push(jaccard(x, y));
                }
            }
        }
        mean(&sims)
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

impl fmt::Display for TaskTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = f64::from(self.image_blocks);
        writeln!(f, "| task | runs | mean distinct blocks | mean share of image | blocks in any run |\n|---|---:|---:|---:|---:|")?;
        for (task, sets) in &self.runs {
            let sizes: Vec<f64> = sets.iter().map(|s| s.len() as f64).collect();
            let mut union: Vec<u32> = sets.concat();
            union.sort_unstable();
            union.dedup();
            writeln!(
                f,
                "| {task} | {} | {:.0} | {:.2}% | {} |",
                sets.len(),
                mean(&sizes),
                100.0 * mean(&sizes) / total,
                union.len()
            )?;
        }
        write!(f, "\nMean Jaccard similarity of block sets between runs (diagonal: between runs of the same task)\n\n|   |")?;
        for n in self.runs.keys() {
            write!(f, " {n} |")?;
        }
        writeln!(f, "\n|---|{}", "---:|".repeat(self.runs.len()))?;
        for a in self.runs.keys() {
            write!(f, "| {a} |")?;
            for b in self.runs.keys() {
                write!(f, " {:.2} |", self.similarity(a, b))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageId;
    use crate::trace::{Op, Record};

    fn task(label: &str, image: ImageId, blocks: &[u64]) -> (String, Trace) {
        let trace = Trace {
            image,
            kind: TraceKind::Task,
            label: label.into(),
            run: 1,
            start_unix_us: 0,
            recorder: "test".into(),
            tasks: vec![label.into()],
            records: blocks
                .iter()
                .enumerate()
                .map(|(i, b)| Record {
                    t_us: i as u64,
                    op: Op::Read,
                    offset: b * 4096,
                    len: 4096,
                    task: 0,
                })
                .collect(),
        };
        (format!("{label}.vmtrace"), trace)
    }

    #[test]
    fn task_table_compares_runs() {
        let image = ImageId::size_only(100 * 4096);
        let traces = [
            task("a", image, &[0, 1, 2, 3]),
            task("a", image, &[0, 1, 2, 4]),
            task("b", image, &[50, 51]),
        ];
        let table = TaskTable::new(&traces, 4096).unwrap();
        assert_eq!(table.runs["a"].len(), 2);
        assert!((table.similarity("a", "a") - 3.0 / 5.0).abs() < 1e-9);
        assert_eq!(table.similarity("a", "b"), 0.0);
        assert!(table.similarity("b", "b").is_nan(), "one run has no pair");
        let text = table.to_string();
        assert!(text.contains("| a | 2 | 4 | 4.00% | 5 |"), "{text}");
        assert!(text.contains("| a | 0.60 | 0.00 |"), "{text}");
        let rows = traces_table(&traces, 4096).unwrap();
        assert_eq!(rows.lines().count(), 4);
        assert!(one_line(&traces[2].1, "b").starts_with("b: 2 reads, 0 writes, 2 distinct"));
    }

    #[test]
    fn traces_of_two_images_are_refused() {
        let other = task("b", ImageId::size_only(8192), &[1]);
        let traces = [task("a", ImageId::size_only(4096 * 4), &[0]), other];
        let e = TaskTable::new(&traces, 4096).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("b.vmtrace belongs to another image"),
            "{e}"
        );
        assert!(matches!(
            TaskTable::new(&[], 4096),
            Err(SummaryError::Empty)
        ));
    }
}
