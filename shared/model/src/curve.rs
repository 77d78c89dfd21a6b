//! The size curve: stall, bytes fetched and costs by piece size, with and without verified
//! blocks, and the piece size an appliance should be seeded with (issue 11).
//!
//! For each piece size of [`CurveParams::piece_sizes`] (16 KiB to 4 MiB by default), once as a
//! stock torrent (whole pieces) and once with a block-hash table ([`CurveParams::block_size`]),
//! `demand`, `markov` and `oracle` replay the held-out traces ([`crate::evaluate`]); each point
//! carries their mean stall, bytes fetched per byte read and the share of those bytes in
//! complete pieces, and the configuration's costs ([`Costs`]: pieces, hash bytes, bitfield and
//! HAVE traffic per peer).
//!
//! **The recommendation** is the configuration with the fewest pieces among those where
//! `markov`
//! - stalls within [`CurveParams::tolerance`] (or [`CurveParams::slack_us`]) of the best
//!   point's mean stall, and
//! - has at least [`CurveParams::min_seedable_share`] of what it fetched in complete pieces by
//!   the end of a trace.
//!
//! Fewest pieces, because per-peer bitfields and HAVE traffic, the engine's bookkeeping and
//! stock clients' limits all grow with the piece count, while the hashes a client needs shrink
//! with it (bar the block table, the same for every piece size). The seedable share, because
//! the simulator models one client, and with verified blocks a miss waits for blocks whatever
//! the piece size, so stall alone would always pick the largest piece; but peers trade only
//! verified whole pieces, and a client whose fetched blocks lie in pieces it has not finished
//! leaves a flash crowd to the seeder. Without a table stall grows with the piece size; the
//! best stock torrent by the same rule is reported beside the recommendation.

use serde::Serialize;

use crate::evaluate::{
    evaluate_trace, summarize, EvalError, EvalParams, StrategySummary, TraceResult,
};
use crate::granularity::{human_bytes, Costs, Granularity, GranularityError, BLOCK_BYTES};
use crate::profile::Bundle;
use crate::scheduler::Strategy;
use vmt_formats::trace::Trace;

/// The strategies of the curve: no prefetch, the model, and the lower bound.
pub const CURVE_STRATEGIES: [Strategy; 3] = [Strategy::Demand, Strategy::Markov, Strategy::Oracle];

/// What to sweep.
#[derive(Clone, Debug)]
pub struct CurveParams {
    /// Link, think time and scheduler tuning; its granularity and strategies are replaced per
    /// point (strategies by [`CURVE_STRATEGIES`]).
    pub base: EvalParams,
    /// Piece sizes, each a power of two from 16 KiB to 16 MiB. Default 16 KiB to 4 MiB.
    pub piece_sizes: Vec<u32>,
    /// Verified block size of the points with a block table. Default [`BLOCK_BYTES`].
    pub block_size: u32,
    /// A point is as good as the best when its `markov` mean stall is within this fraction of
    /// the best's. Default 0.05: closer than that is within the noise of a real mount.
    pub tolerance: f64,
    /// ... or within this many µs. Default 10 ms, so that a best stall near 0 does not make
    /// every other point look infinitely worse.
    pub slack_us: f64,
    /// The recommended point's `markov` client must hold at least this share of what it
    /// fetched in complete pieces by the end of a trace. Default 0.5: at least half of what a
    /// client fetched can serve its peers. 0 judges by stall and costs alone.
    pub min_seedable_share: f64,
}

impl CurveParams {
    /// Defaults (see each field) around `base`.
    pub fn new(base: EvalParams) -> CurveParams {
        CurveParams {
            base,
            piece_sizes: (14..=22).map(|s| 1u32 << s).collect(),
            block_size: BLOCK_BYTES,
            tolerance: 0.05,
            slack_us: 10_000.0,
            min_seedable_share: 0.5,
        }
    }

    /// The configurations, in curve order: by piece size, stock before block table. A piece no
    /// larger than a block gets no block-table point: its own hash already verifies it alone.
    pub fn configurations(&self) -> Result<Vec<Granularity>, GranularityError> {
        let mut out = Vec::with_capacity(2 * self.piece_sizes.len());
        for &p in &self.piece_sizes {
            out.push(Granularity::pieces(p)?);
            if p > self.block_size {
                out.push(Granularity::new(p, Some(self.block_size))?);
            }
        }
        Ok(out)
    }

    /// Evaluation parameters of one point.
    fn point_params(&self, g: Granularity) -> EvalParams {
        let mut p = self.base.at(g);
        p.strategies = CURVE_STRATEGIES.to_vec();
        p
    }
}

/// One trace at every configuration: its results in [`CurveParams::configurations`] order.
pub fn evaluate_trace_curve(
    bundle: &Bundle,
    name: &str,
    trace: &Trace,
    params: &CurveParams,
    configurations: &[Granularity],
) -> Result<Vec<TraceResult>, EvalError> {
    configurations
        .iter()
        .map(|g| evaluate_trace(bundle, name, trace, &params.point_params(*g)))
        .collect()
}

/// One configuration of the curve.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    /// Piece size and verified block size.
    pub granularity: Granularity,
    /// What it costs besides stall.
    pub costs: Costs,
    /// Means per strategy over the traces.
    pub strategies: Vec<StrategySummary>,
}

impl CurvePoint {
    /// The summary of `s`, if it ran.
    pub fn strategy(&self, s: Strategy) -> Option<&StrategySummary> {
        self.strategies.iter().find(|x| x.strategy == s)
    }

    fn markov_stall_us(&self) -> f64 {
        self.strategy(Strategy::Markov)
            .map_or(f64::INFINITY, |m| m.mean_stall_us)
    }

    fn markov_seedable_share(&self) -> f64 {
        self.strategy(Strategy::Markov)
            .and_then(|m| m.mean_seedable_share)
            .unwrap_or(0.0)
    }
}

/// A configuration picked from the curve.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Choice {
    /// Piece size and verified block size.
    pub granularity: Granularity,
    /// `markov`'s mean stall there (µs).
    pub markov_stall_us: f64,
    /// `markov`'s mean share of bytes fetched in complete pieces there.
    pub markov_seedable_share: f64,
    /// Its costs.
    pub costs: Costs,
}

/// The piece size to seed with, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Recommendation {
    /// The configuration recommended.
    pub choice: Choice,
    /// The best `markov` mean stall on the curve, and where.
    pub best: Choice,
    /// The same rule among stock torrents (no block table), if any qualifies.
    pub stock: Option<Choice>,
    /// The reason, in a sentence.
    pub reason: String,
}

/// The whole curve.
#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    /// Traces averaged over.
    pub traces: usize,
    /// Image size in bytes.
    pub image_bytes: u64,
    /// [`CurveParams::tolerance`].
    pub tolerance: f64,
    /// [`CurveParams::slack_us`].
    pub slack_us: f64,
    /// [`CurveParams::min_seedable_share`].
    pub min_seedable_share: f64,
    /// One per configuration.
    pub points: Vec<CurvePoint>,
    /// `None` when `markov` never ran (no traces).
    pub recommendation: Option<Recommendation>,
}

/// Builds the curve from per-trace results (each in `configurations` order, as
/// [`evaluate_trace_curve`] returns them) for an image of `image_bytes`.
pub fn size_curve(
    image_bytes: u64,
    params: &CurveParams,
    configurations: &[Granularity],
    per_trace: &[Vec<TraceResult>],
) -> Curve {
    let points: Vec<CurvePoint> = configurations
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let results: Vec<TraceResult> =
                per_trace.iter().filter_map(|r| r.get(i).cloned()).collect();
            CurvePoint {
                granularity: *g,
                costs: g.costs(image_bytes),
                strategies: summarize(&results).strategies,
            }
        })
        .collect();
    let recommendation = recommend(&points, params);
    Curve {
        traces: per_trace.len(),
        image_bytes,
        tolerance: params.tolerance,
        slack_us: params.slack_us,
        min_seedable_share: params.min_seedable_share,
        points,
        recommendation,
    }
}

fn choice(p: &CurvePoint) -> Choice {
    Choice {
        granularity: p.granularity,
        markov_stall_us: p.markov_stall_us(),
        markov_seedable_share: p.markov_seedable_share(),
        costs: p.costs,
    }
}

/// The rule of the module doc.
fn recommend(points: &[CurvePoint], params: &CurveParams) -> Option<Recommendation> {
    let best = points
        .iter()
        .filter(|p| p.markov_stall_us().is_finite())
        .min_by(|a, b| a.markov_stall_us().total_cmp(&b.markov_stall_us()))?;
    let limit = (best.markov_stall_us() * (1.0 + params.tolerance))
        .max(best.markov_stall_us() + params.slack_us);
    let pick = |stock_only: bool, seedable: f64| {
        points
            .iter()
            .filter(|p| p.markov_stall_us() <= limit)
            .filter(|p| p.markov_seedable_share() >= seedable)
            .filter(|p| !stock_only || p.granularity.block_size().is_none())
            .min_by_key(|p| (p.costs.pieces, p.costs.torrent_bytes))
            .map(choice)
    };
    let min_share = params.min_seedable_share;
    let (chosen, shared) = match pick(false, min_share) {
        Some(c) => (c, true),
        None => (pick(false, 0.0)?, false),
    };
    let stock = pick(true, min_share);
    let reason = format!(
        "{}: markov stalls {:.3} s on average, within {:.0}% (or {:.0} ms) of the best ({:.3} s, {}), \
         and {:.0}% of what it fetched is in complete pieces{}; it has the fewest such pieces ({}): \
         {} of hashes, a {}-byte bitfield and {} of HAVE messages per peer",
        chosen.granularity,
        chosen.markov_stall_us / 1e6,
        params.tolerance * 100.0,
        params.slack_us / 1e3,
        best.markov_stall_us() / 1e6,
        best.granularity,
        chosen.markov_seedable_share * 100.0,
        if shared {
            format!(" (at least {:.0}%, so it can serve its peers)", min_share * 100.0)
        } else {
            format!(
                " (no configuration this good keeps {:.0}%: judged by stall alone)",
                min_share * 100.0
            )
        },
        chosen.costs.pieces,
        human_bytes(chosen.costs.torrent_bytes),
        chosen.costs.bitfield_bytes,
        human_bytes(chosen.costs.have_bytes_per_peer),
    );
    Some(Recommendation {
        choice: chosen,
        best: choice(best),
        stock,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::BundleParams;
    use crate::simulate::LinkParams;
    use crate::synth::{SynthImage, SynthParams};

    /// The curve on a synthetic appliance: stock torrents stall more as pieces grow and fetch
    /// more than they read, verified blocks keep both at the 16 KiB figure but leave less in
    /// complete pieces as pieces grow, and the recommendation follows the rule.
    #[test]
    fn size_curve_on_a_synthetic_corpus() {
        let img = SynthImage::new(SynthParams::new(64 << 20, 4).compute_us(20_000));
        let train: Vec<(String, Trace)> = img.named_corpus(3, 0, 0);
        let bundle = BundleParams::new(4096)
            .check()
            .unwrap()
            .fit(&train, |_| {})
            .unwrap();
        let held: Vec<(String, Trace)> = (0..4)
            .map(|task| {
                (
                    format!("run{task}"),
                    img.task_run(task, 50, 300 + task as u64),
                )
            })
            .collect();
        let base = EvalParams::new(
            LinkParams::new(100e6),
            Granularity::pieces(256 << 10).unwrap(),
        );
        let mut params = CurveParams::new(base);
        params.piece_sizes = vec![16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];
        let configs = params.configurations().unwrap();
        assert_eq!(configs.len(), 9);
        let per_trace: Vec<Vec<TraceResult>> = held
            .iter()
            .map(|(n, t)| evaluate_trace_curve(&bundle, n, t, &params, &configs).unwrap())
            .collect();
        let curve = size_curve(img.image.size, &params, &configs, &per_trace);
        assert_eq!(curve.points.len(), 9);
        let stall = |p: &CurvePoint, s| p.strategy(s).unwrap().mean_stall_us;
        let amp = |p: &CurvePoint, s| p.strategy(s).unwrap().mean_fetched_per_read.unwrap();
        let stock: Vec<&CurvePoint> = curve
            .points
            .iter()
            .filter(|p| p.granularity.block_size().is_none())
            .collect();
        let table: Vec<&CurvePoint> = curve
            .points
            .iter()
            .filter(|p| p.granularity.block_size().is_some())
            .collect();
        for w in stock.windows(2) {
            // Bigger whole pieces: more bytes per miss, so demand stalls longer and fetches
            // more (monotonic up to noise from the read pattern: 2%).
            assert!(stall(w[1], Strategy::Demand) >= 0.98 * stall(w[0], Strategy::Demand));
            assert!(amp(w[1], Strategy::Demand) >= amp(w[0], Strategy::Demand));
            assert!(w[1].costs.pieces < w[0].costs.pieces);
        }
        let (small, large) = (stock[0], stock[stock.len() - 1]);
        assert!(stall(large, Strategy::Demand) > 1.5 * stall(small, Strategy::Demand));
        for p in &curve.points {
            assert!(stall(p, Strategy::Oracle) <= stall(p, Strategy::Markov) + 1.0);
            assert!(stall(p, Strategy::Markov) <= stall(p, Strategy::Demand));
            // Demand fetches at least what it reads, in whole units.
            assert!(amp(p, Strategy::Demand) >= 1.0);
        }
        // With a table, demand fetches the same 16 KiB blocks whatever the piece size, and
        // little more than it reads (the synthetic reads are 4 KiB metadata and whole files).
        assert!(amp(table[0], Strategy::Demand) < 1.3);
        for p in &table {
            assert_eq!(
                p.strategy(Strategy::Demand).unwrap().mean_bytes_fetched,
                table[0]
                    .strategy(Strategy::Demand)
                    .unwrap()
                    .mean_bytes_fetched
            );
            assert_eq!(
                stall(p, Strategy::Demand),
                stall(table[0], Strategy::Demand)
            );
            // ... and as close to the stall of 16 KiB pieces as makes no difference.
            assert!(stall(p, Strategy::Markov) <= 1.05 * stall(stock[0], Strategy::Markov));
            // The table costs hashes: more than the stock torrent of the same piece size.
            let same = stock
                .iter()
                .find(|s| s.granularity.piece_size() == p.granularity.piece_size())
                .unwrap();
            assert!(p.costs.torrent_bytes > same.costs.torrent_bytes);
            assert_eq!(p.costs.pieces, same.costs.pieces);
        }
        // Verified blocks in bigger pieces leave more of what a client fetched in pieces it
        // has not finished, so it can share less.
        let share = |p: &CurvePoint| p.strategy(Strategy::Markov).unwrap().mean_seedable_share;
        for w in table.windows(2) {
            assert!(share(w[1]) <= share(w[0]));
        }
        assert!(share(stock[0]).unwrap() > 0.95);
        // The rule, checked against every point.
        let r = curve.recommendation.as_ref().unwrap();
        let best = curve
            .points
            .iter()
            .map(|p| stall(p, Strategy::Markov))
            .fold(f64::INFINITY, f64::min);
        let good = |p: &CurvePoint| {
            stall(p, Strategy::Markov) <= (1.05 * best).max(best + 10_000.0)
                && share(p).unwrap() >= 0.5
        };
        let chosen = curve
            .points
            .iter()
            .find(|p| p.granularity == r.choice.granularity)
            .unwrap();
        assert!(good(chosen), "{}", r.reason);
        assert!(curve
            .points
            .iter()
            .filter(|p| good(p))
            .all(|p| p.costs.pieces >= chosen.costs.pieces));
        // Here that is a table in pieces larger than 16 KiB; a stock torrent needs the
        // smallest pieces for the same stall.
        assert_eq!(r.choice.granularity.block_size(), Some(BLOCK_BYTES));
        assert!(r.choice.granularity.piece_size() > 16 << 10, "{}", r.reason);
        assert_eq!(
            r.stock.unwrap().granularity,
            Granularity::pieces(16 << 10).unwrap()
        );
        assert!(r.reason.contains("verified blocks"), "{}", r.reason);
        // Judged by stall alone, the largest piece with a table wins.
        let mut by_stall = params.clone();
        by_stall.min_seedable_share = 0.0;
        let r = size_curve(img.image.size, &by_stall, &configs, &per_trace)
            .recommendation
            .unwrap();
        assert_eq!(r.choice.granularity, Granularity::blocks(4 << 20).unwrap());
        let json = serde_json::to_string(&curve).unwrap();
        assert!(!json.contains("NaN"), "{json}");
    }
}
