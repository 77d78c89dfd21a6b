//! Issue 15's prediction table (`datasets/scale-table.py` writes `prediction.csv`): one row
//! per simulated crowd (`vmt-train swarm-sim`), read back for the scale plot.

use anyhow::{bail, Context, Result};

/// The columns `scale-table.py` writes, in order.
pub const SCALE_HEADER: &str = "strategy,mode,n,mean_completion_s,p95_completion_s,mean_stall_s,seeder_bytes,seeder_per_image,finished,wall_s";

/// One simulated crowd.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleRow {
    /// Strategy of every client (markov, demand).
    pub strategy: String,
    /// swarm or cs (client-server).
    pub mode: String,
    /// Clients.
    pub n: u32,
    /// Mean completion over clients, s.
    pub mean_s: f64,
    /// 95th percentile completion, s.
    pub p95_s: f64,
    /// Bytes the seeder sent over the image size.
    pub seeder_per_image: f64,
}

/// Parses `prediction.csv`; its header must be [`SCALE_HEADER`].
pub fn parse_scale_csv(text: &str) -> Result<Vec<ScaleRow>> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(SCALE_HEADER) {
        bail!("not a prediction table: the header is not {SCALE_HEADER:?}");
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f: Vec<&str> = l.trim().split(',').collect();
            if f.len() != 10 {
                bail!("line {}: {} fields, want 10", i + 2, f.len());
            }
            let num = |k: usize| -> Result<f64> {
                f[k].parse()
                    .with_context(|| format!("line {}: field {} is {:?}", i + 2, k + 1, f[k]))
            };
            Ok(ScaleRow {
                strategy: f[0].to_string(),
                mode: f[1].to_string(),
                n: f[2]
                    .parse()
                    .with_context(|| format!("line {}: n is {:?}", i + 2, f[2]))?,
                mean_s: num(3)?,
                p95_s: num(4)?,
                seeder_per_image: num(7)?,
            })
        })
        .collect()
}

/// The (strategy, mode) series in order of first appearance.
pub fn scale_series(rows: &[ScaleRow]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in rows {
        let key = (r.strategy.clone(), r.mode.clone());
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_committed_prediction_table() {
        let rows =
            parse_scale_csv(include_str!("../../datasets/results/scale/prediction.csv")).unwrap();
        assert!(rows
            .iter()
            .any(|r| r.strategy == "markov" && r.mode == "swarm" && r.n == 100));
        assert_eq!(
            scale_series(&rows),
            [("markov", "swarm"), ("markov", "cs"), ("demand", "cs")]
                .map(|(s, m)| (s.to_string(), m.to_string()))
        );
        assert!(parse_scale_csv("a,b\n").is_err());
        let bad = format!("{SCALE_HEADER}\nmarkov,swarm,x,1,2,3,4,5,6,7\n");
        assert!(parse_scale_csv(&bad).is_err());
    }
}
