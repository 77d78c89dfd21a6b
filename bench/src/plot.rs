//! The two figures, as SVG (plotters' SVG backend; text is left to the viewer's fonts).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

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
    let kinds = trace_kinds();
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
    let ymax = points.iter().flatten().map(|p| p.1).fold(0.1, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Flash crowd: {what} vs clients"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..nmax + 1.0, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("clients N (each replays a held-out session with think time)")
        .y_desc(format!("mean {what}, s"))
        .draw()
        .map_err(err)?;
    for (i, ((st, mode), pts)) in series.iter().zip(&points).enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(format!("{st} ({mode})"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}
