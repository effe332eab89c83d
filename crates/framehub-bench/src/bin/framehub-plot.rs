//! Draws the scaling plots of `bench/scaling.sh` (BENCHMARKS.md): frames/s against connections
//! and payload MB/s against frame size, one line per target, from the JSON lines the script
//! collected.
//!
//! `framehub-plot RESULTS.jsonl OUTDIR [FONT.ttf]` writes `OUTDIR/scaling-conns.png` and
//! `OUTDIR/scaling-size.png`. Each line of RESULTS is `{"target", "axis": "conns"|"size",
//! "conns", "size", "delivered_fps", "drops", ...}`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// One measured point.
#[derive(serde::Deserialize)]
struct Point {
    target: String,
    axis: String,
    conns: u64,
    size: u64,
    delivered_fps: f64,
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// A log-log chart of `series` (x, y per target) into `path`.
fn chart(
    path: &std::path::Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &BTreeMap<String, Vec<(f64, f64)>>,
) -> anyhow::Result<()> {
    let points = series.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    anyhow::ensure!(x0 < f64::MAX, "no points for {title}");
    let root = BitMapBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x0 * 0.8..x1 * 1.25).log_scale(),
            (y0.max(1.0) * 0.5..y1 * 2.0).log_scale(),
        )?;
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|x| human(*x))
        .y_label_formatter(&|y| human(*y))
        .draw()?;
    for (k, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        c.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// 1500 -> "1.5k", 2_000_000 -> "2M".
fn human(v: f64) -> String {
    let (v, unit) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    let s = format!("{v:.1}");
    format!("{}{unit}", s.trim_end_matches(".0"))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (results, outdir) = match &args[..] {
        [_, r, o, ..] => (r, std::path::Path::new(o)),
        _ => anyhow::bail!("usage: framehub-plot RESULTS.jsonl OUTDIR [FONT.ttf]"),
    };
    let font_path = args
        .get(3)
        .map(String::as_str)
        .unwrap_or("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
    let font = std::fs::read(font_path).with_context(|| format!("font {font_path}"))?;
    // plotters keeps the font for the process's lifetime.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{font_path} is not a TrueType font"))?;

    let text = std::fs::read_to_string(results).with_context(|| results.clone())?;
    let mut by_conns: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut by_size: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let p: Point = serde_json::from_str(line).with_context(|| line.to_owned())?;
        if p.delivered_fps <= 0.0 {
            continue;
        }
        match p.axis.as_str() {
            "conns" => by_conns
                .entry(p.target)
                .or_default()
                .push((p.conns as f64, p.delivered_fps)),
            _ => by_size
                .entry(p.target)
                .or_default()
                .push((p.size as f64, p.delivered_fps * p.size as f64 / 1e6)),
        }
    }
    for pts in by_conns.values_mut().chain(by_size.values_mut()) {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    chart(
        &outdir.join("scaling-conns.png"),
        "frames/s delivered against connections (200-byte frames)",
        "connections",
        "frames/s",
        &by_conns,
    )?;
    chart(
        &outdir.join("scaling-size.png"),
        "payload MB/s delivered against frame size (64 connections)",
        "frame size, bytes",
        "MB/s",
        &by_size,
    )?;
    Ok(())
}
