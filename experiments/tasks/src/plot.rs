//! Line charts as PNG with `plotters`: one or more panels side by side, one
//! line per series, linear or log axes. Used for a table's validation
//! curves and the attention benchmark's time and memory against length.
//!
//! Text is drawn with the bundled DejaVu Sans (`assets/fonts`), so plots
//! look the same on a machine without system fonts.

use std::path::Path;
use std::sync::Once;

use anyhow::{bail, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // the bundled font is a valid TTF; a failure would only lose text
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points in x order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Title above the chart.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

/// Width of one legend entry below the panels, in pixels.
const LEGEND_ENTRY: u32 = 240;
/// Height of one legend row.
const LEGEND_ROW: u32 = 22;

/// Every series name of `panels` once, in order of first appearance: the
/// legend below the panels, and each line's color (a series keeps its
/// color in every panel).
fn legend_names(panels: &[Panel]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for s in panels.iter().flat_map(|p| &p.series) {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    names
}

/// Writes `panels` side by side into one PNG at `path` (each panel 640 x
/// 480), with one legend for all of them below, so that no legend covers
/// a line.
pub fn write_png(path: &Path, panels: &[Panel]) -> Result<()> {
    if panels.is_empty() {
        bail!("nothing to plot into {}", path.display());
    }
    register_font();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let names = legend_names(panels);
    let w = 640 * panels.len() as u32;
    let per_row = (w / LEGEND_ENTRY).max(1) as usize;
    let rows = names.len().div_ceil(per_row) as u32;
    let h = 480 + if rows > 0 { rows * LEGEND_ROW + 12 } else { 0 };
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{e}");
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (charts, legend) = root.split_vertically(480);
        for (area, panel) in charts.split_evenly((1, panels.len())).iter().zip(panels) {
            draw_panel(area, panel, &names)
                .with_context(|| format!("cannot draw `{}`", panel.title))?;
        }
        for (k, name) in names.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            let x = 24 + (k % per_row) as i32 * LEGEND_ENTRY as i32;
            let y = 6 + (k / per_row) as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
            legend
                .draw(&PathElement::new(
                    vec![(x, y), (x + 24, y)],
                    color.stroke_width(3),
                ))
                .map_err(err)?;
            legend
                .draw(&Text::new(
                    name.to_string(),
                    (x + 32, y - 7),
                    ("sans-serif", 14).into_font(),
                ))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    // the workspace's one PNG writer (plotters' own encoder would pull in a
    // second `image`)
    Ok(combiner_data::picture::write_rgb_png(path, w, h, &rgb)?)
}

/// The range of finite values, widened so that a flat line is visible and,
/// for a log axis, restricted to positive values.
fn range(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    Some(if log {
        (lo / 1.25, hi * 1.25)
    } else {
        let pad = ((hi - lo) * 0.05).max(hi.abs().max(1e-9) * 0.01);
        (lo - pad, hi + pad)
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_panel(area: &Area<'_>, panel: &Panel, names: &[&str]) -> Result<()> {
    let points = || panel.series.iter().flat_map(|s| s.points.iter().copied());
    let (Some(xr), Some(yr)) = (
        range(points().map(|p| p.0), panel.log_x),
        range(points().map(|p| p.1), panel.log_y),
    ) else {
        // nothing finite to draw: a titled empty panel says so
        area.titled(&format!("{} (no data)", panel.title), ("sans-serif", 20))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(());
    };
    match (panel.log_x, panel.log_y) {
        (false, false) => draw(area, panel, names, xr.0..xr.1, yr.0..yr.1),
        (true, false) => draw(area, panel, names, (xr.0..xr.1).log_scale(), yr.0..yr.1),
        (false, true) => draw(area, panel, names, xr.0..xr.1, (yr.0..yr.1).log_scale()),
        (true, true) => draw(
            area,
            panel,
            names,
            (xr.0..xr.1).log_scale(),
            (yr.0..yr.1).log_scale(),
        ),
    }
}

/// An axis label: at most three significant digits, thousands as `k` and
/// millions as `M`, no trailing `.0` (`16384` -> `16.4k`, `4096` -> `4.1k`,
/// `0.25` -> `0.25`, `3` -> `3`).
fn compact(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let (scaled, unit) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = if scaled == 0.0 {
        0
    } else {
        (2 - scaled.abs().log10().floor() as i32).clamp(0, 6) as usize
    };
    let text = format!("{scaled:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{unit}")
}

fn draw<X, Y>(area: &Area<'_>, panel: &Panel, names: &[&str], x: X, y: Y) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{e}");
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| compact(*v))
        .y_label_formatter(&|v| compact(*v))
        .label_style(("sans-serif", 13))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for s in &panel.series {
        let k = names.iter().position(|n| *n == s.name).unwrap_or(0);
        let color = Palette99::pick(k).to_rgba();
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| {
                x.is_finite()
                    && y.is_finite()
                    && (!panel.log_x || x > 0.0)
                    && (!panel.log_y || y > 0.0)
            })
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_compact() {
        for (v, want) in [
            (16384.0, "16.4k"),
            (4096.0, "4.1k"),
            (65536.0, "65.5k"),
            (1000.0, "1k"),
            (2.5e6, "2.5M"),
            (0.25, "0.25"),
            (3.0, "3"),
            (0.0, "0"),
            (123.456, "123"),
            (-1500.0, "-1.5k"),
        ] {
            assert_eq!(compact(v), want, "{v}");
        }
    }

    #[test]
    fn ranges_skip_non_finite_and_non_positive_on_log_axes() {
        let r = range([1.0, f64::NAN, 4.0, -2.0].into_iter(), true).unwrap();
        assert!((r.0 - 0.8).abs() < 1e-12 && (r.1 - 5.0).abs() < 1e-12);
        let r = range([3.0, 3.0].into_iter(), false).unwrap();
        assert!(r.0 < 3.0 && r.1 > 3.0, "a flat line gets a visible range");
        assert!(range([f64::NAN].into_iter(), false).is_none());
    }

    #[test]
    fn one_legend_names_every_series_once_in_order_of_appearance() {
        let panel = |names: &[&str]| Panel {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: false,
            log_y: false,
            series: names
                .iter()
                .map(|n| Series {
                    name: n.to_string(),
                    points: vec![],
                })
                .collect(),
        };
        let panels = [panel(&["a", "b"]), panel(&["b", "c", "a"])];
        assert_eq!(legend_names(&panels), vec!["a", "b", "c"]);
    }

    #[test]
    fn writes_a_png_of_the_requested_size_even_with_an_empty_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/plot.png");
        let panel = |log| Panel {
            title: "t".into(),
            x_label: "L".into(),
            y_label: "ms".into(),
            log_x: log,
            log_y: log,
            series: vec![
                Series {
                    name: "a".into(),
                    points: vec![(1024.0, 1.0), (2048.0, 2.5), (4096.0, f64::NAN)],
                },
                Series {
                    name: "empty".into(),
                    points: vec![],
                },
            ],
        };
        write_png(&path, &[panel(true), panel(false)]).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let info = decoder.read_info().unwrap();
        // two series: one legend row below the 480-pixel panels
        assert_eq!(
            (info.info().width, info.info().height),
            (1280, 480 + LEGEND_ROW + 12)
        );
    }
}
