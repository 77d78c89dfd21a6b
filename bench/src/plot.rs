//! The figures, as SVG (plotters' SVG backend; text is left to the viewer's fonts).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::scale::{scale_series, ScaleRow};
use crate::summary::{crowd_series, mean, strategies, trace_kinds};
use crate::Row;

const COLORS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// Mean completion per strategy (N=1), one bar per kind of trace, log scale.
pub fn strategies_svg(rows: &[Row], path: &Path) -> Result<()> {
    let names = strategies(rows, "strategies");
    if names.is_empty() {
        return Ok(());
    }
    // Only the kinds of trace this run replayed: a quick run has no plain sessions, and an
    // empty slot per strategy read as a missing result.
    let kinds: Vec<_> = trace_kinds()
        .into_iter()
        .filter(|(_, keep)| rows.iter().any(|r| r.phase == "strategies" && keep(r)))
        .collect();
    let bars: Vec<(usize, usize, f64)> = names
        .iter()
        .enumerate()
        .flat_map(|(i, st)| {
            kinds.iter().enumerate().filter_map(move |(k, (_, keep))| {
                mean(
                    rows,
                    |r| r.phase == "strategies" && &r.strategy == st && keep(r),
                    |r| r.completion_s,
                )
                .map(|(m, _)| (i, k, m))
            })
        })
        .collect();
    let ymax = bars.iter().map(|b| b.2).fold(1.0, f64::max) * 2.0;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let n = names.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Completion time per strategy (one client, held-out traces)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n - 0.5, (0.05f64..ymax).log_scale())
        .map_err(err)?;
    let labels = names.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len() * 2 + 1)
        .x_label_formatter(&move |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("mean completion, s (log)")
        .draw()
        .map_err(err)?;
    let w = 0.8 / kinds.len() as f64;
    for (k, (label, _)) in kinds.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(bars.iter().filter(|b| b.1 == k).map(|&(i, _, m)| {
                let x0 = i as f64 - 0.4 + k as f64 * w;
                Rectangle::new([(x0, 0.05), (x0 + w * 0.9, m)], color.filled())
            }))
            .map_err(err)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The y range of a log axis over `values` (seconds): a little beyond the smallest positive and
/// the largest. On a linear axis, one slow baseline (aria2's 77 s) squashed vmt's 10-12 s lines
/// and every stall line against the bottom; a log axis gives each decade the same height.
fn log_axis(values: impl Iterator<Item = f64>) -> (f64, f64) {
    // Below a millisecond a stall is noise; it also bounds the axis when every value is 0.
    const FLOOR_S: f64 = 1e-3;
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, 0f64), |(lo, hi), v| {
            (if v > 0.0 { lo.min(v) } else { lo }, hi.max(v))
        });
    let lo = if lo.is_finite() {
        lo.max(FLOOR_S)
    } else {
        FLOOR_S
    };
    (lo / 1.5, hi.max(lo) * 1.5)
}

/// Mean completion and mean stall versus N, one line per (strategy, mode), side by side.
pub fn crowd_svg(rows: &[Row], path: &Path) -> Result<()> {
    if crowd_series(rows).is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(600);
    crowd_panel(rows, &left, "completion", |r| r.completion_s)?;
    crowd_panel(rows, &right, "stall", |r| r.stall_s)?;
    root.present().map_err(err)?;
    Ok(())
}

fn crowd_panel(
    rows: &[Row],
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    what: &str,
    f: fn(&Row) -> f64,
) -> Result<()> {
    let series = crowd_series(rows);
    let ns: BTreeSet<u32> = rows
        .iter()
        .filter(|r| r.phase == "crowd")
        .map(|r| r.n)
        .collect();
    let nmax = *ns.iter().max().unwrap_or(&1) as f64;
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(st, mode)| {
            ns.iter()
                .filter_map(|&n| {
                    mean(
                        rows,
                        |r| r.phase == "crowd" && &r.strategy == st && &r.mode == mode && r.n == n,
                        f,
                    )
                    .map(|(m, _)| (n as f64, m))
                })
                .collect()
        })
        .collect();
    let (ylo, yhi) = log_axis(points.iter().flatten().map(|p| p.1));
    // Zero (no stall) has no place on a log axis: drawn on its floor.
    let points: Vec<Vec<(f64, f64)>> = points
        .into_iter()
        .map(|pts| pts.into_iter().map(|(n, v)| (n, v.max(ylo))).collect())
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Flash crowd: {what} vs clients"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..nmax + 1.0, (ylo..yhi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("clients N (each replays a held-out session with think time)")
        .y_desc(format!("mean {what}, s (log; 0 on the floor)"))
        .draw()
        .map_err(err)?;
    for (i, ((st, mode), pts)) in series.iter().zip(&points).enumerate() {
        line_with_dots(
            &mut chart,
            pts,
            COLORS[i % COLORS.len()],
            format!("{st} ({mode})"),
        )?;
    }
    legend(&mut chart)
}

/// A labelled line through `pts` with a dot on each point.
fn line_with_dots<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    pts: &[(f64, f64)],
    color: RGBColor,
    label: String,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(LineSeries::new(pts.to_vec(), color.stroke_width(2)))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    chart
        .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
        .map_err(err)?;
    Ok(())
}

/// The legend of a line chart, upper left.
fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Issue 15's prediction: mean and p95 completion vs N (left) and seeder bytes / image vs N
/// (right), one colour per (strategy, mode), both axes log: N spans 1 to 1,000 and
/// client-server completion grows with N while the swarm's stays flat.
pub fn scale_svg(rows: &[ScaleRow], path: &Path) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(600);
    scale_panel(
        rows,
        &left,
        "Simulated flash crowd: completion vs clients",
        "completion, s (log; line mean, dots p95)",
        &[|r| r.mean_s, |r| r.p95_s],
    )?;
    scale_panel(
        rows,
        &right,
        "Simulated flash crowd: seeder bytes vs clients",
        "seeder bytes / image size (log)",
        &[|r| r.seeder_per_image],
    )?;
    root.present().map_err(err)?;
    Ok(())
}

/// One panel of [`scale_svg`]: the first of `fs` drawn as a line with dots, any further one
/// as hollow dots of the same colour.
fn scale_panel(
    rows: &[ScaleRow],
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    fs: &[fn(&ScaleRow) -> f64],
) -> Result<()> {
    let nmax = rows.iter().map(|r| r.n).max().unwrap_or(1).max(1) as f64;
    let (ylo, yhi) = log_axis(rows.iter().flat_map(|r| fs.iter().map(move |f| f(r))));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0.7f64..nmax * 1.5).log_scale(), (ylo..yhi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("clients N (log)")
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    for (i, (st, mode)) in scale_series(rows).iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut series: Vec<&ScaleRow> = rows
            .iter()
            .filter(|r| &r.strategy == st && &r.mode == mode)
            .collect();
        series.sort_by_key(|r| r.n);
        for (k, f) in fs.iter().enumerate() {
            let pts: Vec<(f64, f64)> = series.iter().map(|r| (r.n as f64, f(r).max(ylo))).collect();
            if k == 0 {
                line_with_dots(&mut chart, &pts, color, format!("{st} ({mode})"))?;
            } else {
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&p| Circle::new(p, 5, color.stroke_width(2))),
                    )
                    .map_err(err)?;
            }
        }
    }
    legend(&mut chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where `v` sits on the axis from `lo` to `hi`, 0 (bottom) to 1 (top).
    fn on_log_axis(v: f64, (lo, hi): (f64, f64)) -> f64 {
        (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
    }

    /// Issue 16: the committed full run's crowd figure, where aria2's 77 s point set a linear
    /// axis and vmt's 10-12 s lines sat in its bottom seventh.
    #[test]
    fn r16_3_7_crowd_axis_is_log_so_a_slow_baseline_squashes_nothing() {
        let (lo, hi) = log_axis([77.0, 12.0, 10.0, 0.4, 0.0].into_iter());
        assert!(lo > 0.0 && lo < 0.4 && hi > 77.0, "{lo} {hi}");
        // Linear (the old axis, 0 to 1.1 x max): 10 s sat at 0.12 of the height, a 0.4 s
        // stall at 0.005.
        assert!(
            on_log_axis(10.0, (lo, hi)) > 0.5,
            "vmt's lines in the upper half"
        );
        assert!(
            on_log_axis(0.4, (lo, hi)) > 0.05,
            "a stall line off the floor"
        );
        let zeros = log_axis([0.0, 0.0].into_iter());
        assert!(zeros.0 > 0.0 && zeros.1 > zeros.0, "{zeros:?}");
    }

    /// Issue 15: the prediction table's plot has one legend entry per series and every N.
    #[test]
    fn scale_plot_draws_every_series() {
        let rows = crate::scale::parse_scale_csv(include_str!(
            "../../datasets/results/scale/prediction.csv"
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("scale.svg");
        scale_svg(&rows, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        for label in ["markov (swarm)", "markov (cs)", "demand (cs)"] {
            assert!(text.lines().any(|l| l.trim() == label), "{label}");
        }
        assert!(text.contains("seeder bytes / image size (log)"));
    }

    /// Issue 16: a quick run (no plain sessions) showed an empty "sessions" slot per strategy.
    #[test]
    fn r16_3_7_strategies_omit_kinds_of_trace_not_replayed() {
        let csv = include_str!("../../datasets/results/full/results.csv");
        let rows: Vec<Row> = crate::parse_csv(csv)
            .unwrap()
            .into_iter()
            .filter(|r| !(r.is_session() && r.think_s == 0.0))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("strategies.svg");
        strategies_svg(&rows, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        let legend = |label: &str| text.lines().any(|l| l.trim() == label);
        assert!(legend("sessions+think"), "the kinds it has are drawn");
        assert!(!legend("sessions"), "no slot for a kind it lacks");
        let crowd = dir.path().join("crowd.svg");
        crowd_svg(&rows, &crowd).unwrap();
        assert!(std::fs::read_to_string(&crowd)
            .unwrap()
            .contains("(log; 0 on the floor)"));
    }
}
