//! Line charts rendered by plotters' SVG backend into strings, for inlining into the HTML report.
//!
//! Callers describe a chart ([`ChartSpec`]: axes, series, optional per-point tooltips); this module
//! draws it. Plotters escapes the text it writes; the only SVG added here (an accessible title and
//! the invisible hover targets that carry `<title>` tooltips, of points and of bands) is escaped
//! by [`xml_escape`].
//! Legends are returned as data so the HTML can lay them out next to the chart.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

/// Colour-blind-safe series colours (Okabe–Ito).
pub const PALETTE: [(u8, u8, u8); 7] = [
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (120, 120, 120),
];

/// Index of grey in [`PALETTE`], used for baselines.
pub const GREY: usize = 6;

/// Linear or base-10 logarithmic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

/// How tick values are labelled.
#[derive(Debug, Clone, PartialEq)]
pub enum Ticks {
    /// The number, three significant digits.
    Number,
    /// `x = 1 / (1 − q)` labelled as the percentile `q` (HdrHistogram's percentile plots).
    Percentile,
    /// `x` is an index into these labels (e.g. short revisions); other ticks stay blank, and so
    /// does every label but each `step`-th (counted from the last) when they would not fit.
    Labels { labels: Vec<String>, step: usize },
}

/// One axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub desc: String,
    pub min: f64,
    pub max: f64,
    pub scale: Scale,
    pub ticks: Ticks,
}

impl Axis {
    /// An axis spanning `values`, from zero (linear) or a little below the smallest positive
    /// value (log), with some headroom.
    pub fn fit(desc: &str, values: impl IntoIterator<Item = f64>, scale: Scale) -> Axis {
        let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        let max = values.iter().copied().fold(f64::NAN, f64::max);
        let (min, max) = match scale {
            Scale::Linear => (
                0.0,
                if max.is_finite() && max > 0.0 {
                    max * 1.1
                } else {
                    1.0
                },
            ),
            Scale::Log => {
                let min_pos = values
                    .iter()
                    .copied()
                    .filter(|v| *v > 0.0)
                    .fold(f64::NAN, f64::min);
                if min_pos.is_finite() && max.is_finite() {
                    (min_pos / 1.5, (max * 1.5).max(min_pos * 10.0))
                } else {
                    (0.1, 10.0)
                }
            }
        };
        Axis {
            desc: desc.to_owned(),
            min,
            max,
            scale,
            ticks: Ticks::Number,
        }
    }
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stroke {
    Solid,
    Dashed,
}

/// One line.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// Index into [`PALETTE`].
    pub color: usize,
    pub stroke: Stroke,
    pub width: u32,
    /// Draw a dot at every point (for sparse data such as one point per run).
    pub dots: bool,
    pub points: Vec<(f64, f64)>,
    /// Tooltip per point (same length as `points`), or empty for none.
    pub tips: Vec<String>,
}

impl Series {
    pub fn line(label: &str, color: usize, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.to_owned(),
            color,
            stroke: Stroke::Solid,
            width: 2,
            dots: false,
            points,
            tips: Vec::new(),
        }
    }
}

/// A shaded vertical band over a span of the x axis, e.g. a fault injected into the measured phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub from: f64,
    /// `None`: to the right edge of the chart.
    pub to: Option<f64>,
    /// Drawn at the top of the band (short: "kill n2").
    pub label: String,
    /// Tooltip of the whole band.
    pub tip: String,
}

/// Fill of a band: neutral grey, mostly transparent, so the lines (whose colours come from
/// [`PALETTE`]) stay readable and no band is mistaken for a series.
const BAND_FILL: RGBAColor = RGBAColor(110, 110, 110, 0.14);
/// Its left edge (where the fault began) and its label.
const BAND_EDGE: RGBAColor = RGBAColor(70, 70, 70, 0.8);
const BAND_TEXT: RGBColor = RGBColor(50, 50, 50);

/// A chart to draw.
#[derive(Debug, Clone)]
pub struct ChartSpec {
    /// Accessible name (the SVG's `<title>`).
    pub title: String,
    pub width: u32,
    pub height: u32,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    /// Shaded spans drawn under the series (empty for none).
    pub bands: Vec<Band>,
}

/// One legend entry, for the HTML.
#[derive(Debug, Clone, Serialize)]
pub struct LegendEntry {
    pub label: String,
    /// CSS colour, `#rrggbb`.
    pub color: String,
    pub stroke: Stroke,
}

/// A drawn chart.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub title: String,
    pub svg: String,
    pub legend: Vec<LegendEntry>,
}

/// `#rrggbb` of a palette entry.
pub fn css_color(index: usize) -> String {
    let (r, g, b) = PALETTE[index % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn color(index: usize) -> RGBColor {
    let (r, g, b) = PALETTE[index % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Escape text for XML element content and attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A tick value with at most three significant digits and no trailing zeros.
pub fn tick_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 9) as usize;
    let text = format!("{v:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Label of `x = 1 / (1 − q)` as a percentile: 1 → "0%", 10 → "90%", 1000 → "99.9%".
pub fn percentile_label(x: f64) -> String {
    if x < 1.0 + 1e-9 {
        return "0%".into();
    }
    let pct = 100.0 * (1.0 - 1.0 / x);
    // 99.9 needs one decimal, 99.99 two: as many as the distance to 100 has leading zeros.
    let decimals = (-(100.0 - pct).log10() - 1e-6).ceil().clamp(0.0, 9.0) as usize;
    let text = format!("{pct:.decimals$}");
    format!("{text}%")
}

fn tick_label(ticks: &Ticks, v: f64) -> String {
    match ticks {
        Ticks::Number => tick_number(v),
        Ticks::Percentile => percentile_label(v),
        Ticks::Labels { labels, step } => {
            let rounded = v.round();
            if (v - rounded).abs() > 1e-6 || rounded < 0.0 {
                return String::new();
            }
            let index = rounded as usize;
            let from_last = labels.len().saturating_sub(1).saturating_sub(index);
            if from_last % (*step).max(1) != 0 {
                return String::new();
            }
            labels.get(index).cloned().unwrap_or_default()
        }
    }
}

/// Draw `spec` as an SVG string.
pub fn render(spec: &ChartSpec) -> anyhow::Result<Chart> {
    let (x, y) = (&spec.x, &spec.y);
    anyhow::ensure!(
        x.min < x.max && y.min < y.max,
        "chart {:?} has an empty axis range",
        spec.title
    );
    let svg = match (x.scale, y.scale) {
        (Scale::Linear, Scale::Linear) => draw(spec, x.min..x.max, y.min..y.max)?,
        (Scale::Log, Scale::Linear) => draw(spec, (x.min..x.max).log_scale(), y.min..y.max)?,
        (Scale::Linear, Scale::Log) => draw(spec, x.min..x.max, (y.min..y.max).log_scale())?,
        (Scale::Log, Scale::Log) => {
            draw(spec, (x.min..x.max).log_scale(), (y.min..y.max).log_scale())?
        }
    };
    let legend = spec
        .series
        .iter()
        .filter(|s| !s.label.is_empty())
        .map(|s| LegendEntry {
            label: s.label.clone(),
            color: css_color(s.color),
            stroke: s.stroke,
        })
        .collect();
    Ok(Chart {
        title: spec.title.clone(),
        svg,
        legend,
    })
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("draw chart: {e}")
}

fn draw<X, Y>(spec: &ChartSpec, x_range: X, y_range: Y) -> anyhow::Result<String>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut buf = String::new();
    let mut tips: Vec<(i32, i32, String, usize)> = Vec::new();
    let mut band_tips: Vec<BandTip> = Vec::new();
    {
        let root = SVGBackend::with_string(&mut buf, (spec.width, spec.height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin_top(10)
            .margin_right(18)
            .margin_left(6)
            .x_label_area_size(40)
            .y_label_area_size(62)
            .build_cartesian_2d(x_range, y_range)
            .map_err(plot_err)?;
        let x_fmt = |v: &f64| tick_label(&spec.x.ticks, *v);
        let y_fmt = |v: &f64| tick_label(&spec.y.ticks, *v);
        let x_labels = match &spec.x.ticks {
            Ticks::Labels { labels, .. } => labels.len().max(1),
            _ => 8,
        };
        let label_font = ("sans-serif", 12).into_font().color(&RGBColor(70, 70, 70));
        chart
            .configure_mesh()
            .x_desc(spec.x.desc.as_str())
            .y_desc(spec.y.desc.as_str())
            .x_labels(x_labels)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(label_font)
            .axis_desc_style(("sans-serif", 13).into_font().color(&RGBColor(40, 40, 40)))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(RGBColor(245, 245, 245))
            .max_light_lines(4)
            .axis_style(RGBColor(150, 150, 150))
            .draw()
            .map_err(plot_err)?;
        // Bands under the lines, clamped to the x axis; one that falls outside it is not drawn.
        for (i, band) in spec.bands.iter().enumerate() {
            let Some((from, to)) = band_span(band, &spec.x) else {
                continue;
            };
            let (top, bottom) = (spec.y.max, spec.y.min);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(from, top), (to, bottom)],
                    BAND_FILL.filled(),
                )))
                .map_err(plot_err)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(from, top), (from, bottom)],
                    BAND_EDGE.stroke_width(1),
                )))
                .map_err(plot_err)?;
            let (x0, y0) = chart.backend_coord(&(from, top));
            let (x1, y1) = chart.backend_coord(&(to, bottom));
            // Labels of bands close together are staggered so they do not overlap.
            let stagger = (i % 3) as i32 * 13;
            let font = ("sans-serif", 12).into_font().color(&BAND_TEXT);
            // Near the right edge the label ends there instead of running off the chart.
            let right = chart.backend_coord(&(spec.x.max, top)).0;
            let approx_width = 7 * band.label.chars().count() as i32;
            let (label_x, font) = if x0 + 4 + approx_width > right {
                (right - 4, font.pos(Pos::new(HPos::Right, VPos::Top)))
            } else {
                (x0 + 4, font)
            };
            root.draw(&Text::new(
                band.label.clone(),
                (label_x, y0 + 3 + stagger),
                font,
            ))
            .map_err(plot_err)?;
            band_tips.push(BandTip {
                x: x0,
                y: y0,
                width: (x1 - x0).max(1),
                height: (y1 - y0).max(1),
                tip: band.tip.clone(),
            });
        }
        for series in &spec.series {
            let style = ShapeStyle::from(color(series.color)).stroke_width(series.width);
            let points = series
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite());
            match series.stroke {
                Stroke::Solid => {
                    chart
                        .draw_series(LineSeries::new(points.clone(), style))
                        .map_err(plot_err)?;
                }
                Stroke::Dashed => {
                    chart
                        .draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))
                        .map_err(plot_err)?;
                }
            }
            if series.dots {
                chart
                    .draw_series(
                        points.map(|p| {
                            Circle::new(p, 3, ShapeStyle::from(color(series.color)).filled())
                        }),
                    )
                    .map_err(plot_err)?;
            }
            for (point, tip) in series.points.iter().zip(&series.tips) {
                let (px, py) = chart.backend_coord(point);
                tips.push((px, py, tip.clone(), series.color));
            }
        }
        root.present().map_err(plot_err)?;
    }
    Ok(decorate(buf, &spec.title, &band_tips, &tips))
}

/// The x span of `band` inside the axis, or `None` when nothing of it is inside.
fn band_span(band: &Band, x: &Axis) -> Option<(f64, f64)> {
    if band.from.is_nan() || band.to.is_some_and(f64::is_nan) {
        return None;
    }
    let from = band.from.max(x.min);
    let to = band.to.unwrap_or(x.max).min(x.max);
    (from < to).then_some((from, to))
}

/// Where a band was drawn, in pixels, and its tooltip.
struct BandTip {
    x: i32,
    y: i32,
    width: i32,
    height: i32,
    tip: String,
}

/// Add the accessible title and the tooltip targets (bands, then points) to plotters' SVG.
fn decorate(
    mut svg: String,
    title: &str,
    bands: &[BandTip],
    tips: &[(i32, i32, String, usize)],
) -> String {
    if let Some(open_end) = svg
        .find("<svg")
        .and_then(|start| svg[start..].find('>').map(|end| start + end + 1))
    {
        svg.insert_str(open_end, &format!("\n<title>{}</title>", xml_escape(title)));
    }
    if !bands.is_empty() {
        let mut overlay = String::from("<g class=\"bands\">\n");
        for b in bands {
            overlay.push_str(&format!(
                "<rect class=\"band\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill-opacity=\"0\"><title>{}</title></rect>\n",
                b.x,
                b.y,
                b.width,
                b.height,
                xml_escape(&b.tip)
            ));
        }
        overlay.push_str("</g>\n");
        if let Some(end) = svg.rfind("</svg>") {
            svg.insert_str(end, &overlay);
        }
    }
    if !tips.is_empty() {
        let mut overlay = String::from("<g class=\"tips\">\n");
        for (x, y, tip, c) in tips {
            overlay.push_str(&format!(
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"7\" fill=\"{}\" fill-opacity=\"0\"><title>{}</title></circle>\n",
                css_color(*c),
                xml_escape(tip)
            ));
        }
        overlay.push_str("</g>\n");
        if let Some(end) = svg.rfind("</svg>") {
            svg.insert_str(end, &overlay);
        }
    }
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(100_000.0), "99.999%");
        assert_eq!(tick_number(0.5), "0.5");
        assert_eq!(tick_number(12.0), "12");
        assert_eq!(tick_number(0.125), "0.125");
        assert_eq!(tick_number(1500.0), "1500");
        let labels = Ticks::Labels {
            labels: vec!["a".into(), "b".into(), "c".into()],
            step: 2,
        };
        assert_eq!(tick_label(&labels, 2.0), "c");
        assert_eq!(tick_label(&labels, 1.0), "");
        assert_eq!(tick_label(&labels, 0.0), "a");
        assert_eq!(tick_label(&labels, 0.5), "");
    }

    #[test]
    fn escapes_text_and_tooltips() {
        let evil = "<script>alert(1)</script>";
        let chart = render(&ChartSpec {
            title: evil.into(),
            width: 300,
            height: 200,
            x: Axis {
                ticks: Ticks::Labels {
                    labels: vec![evil.into()],
                    step: 1,
                },
                ..Axis::fit(evil, [0.0, 1.0], Scale::Linear)
            },
            y: Axis::fit(evil, [1.0, 2.0], Scale::Log),
            series: vec![Series {
                tips: vec![evil.into(), evil.into()],
                dots: true,
                ..Series::line(evil, 0, vec![(0.0, 1.0), (1.0, 2.0)])
            }],
            bands: vec![Band {
                from: 0.25,
                to: None,
                label: evil.into(),
                tip: evil.into(),
            }],
        })
        .unwrap();
        assert!(!chart.svg.contains("<script"), "{}", chart.svg);
        assert!(chart.svg.contains("&lt;script&gt;"), "{}", chart.svg);
        assert_eq!(chart.svg.matches("<title>").count(), 4);
        assert_eq!(chart.svg.matches("class=\"band\"").count(), 1);
    }

    fn band_chart(bands: Vec<Band>) -> String {
        render(&ChartSpec {
            title: "t".into(),
            width: 400,
            height: 200,
            x: Axis::fit("x", [0.0, 10.0], Scale::Linear),
            y: Axis::fit("y", [1.0, 2.0], Scale::Linear),
            series: vec![Series::line("s", 0, vec![(0.0, 1.0), (10.0, 2.0)])],
            bands,
        })
        .unwrap()
        .svg
    }

    #[test]
    fn bands_are_shaded_labelled_and_clamped() {
        let band = |from: f64, to: Option<f64>| Band {
            from,
            to,
            label: "kill n2".into(),
            tip: "kill nats node n2".into(),
        };
        let plain = band_chart(Vec::new());
        assert!(!plain.contains("class=\"band\""));
        let svg = band_chart(vec![band(3.0, Some(5.0))]);
        assert!(svg.contains(">\nkill n2\n</text>"), "{svg}");
        assert!(svg.contains("<title>kill nats node n2</title>"), "{svg}");
        assert!(svg.contains("opacity=\"0.14\""), "{svg}");
        // Not lifted: to the right edge, the same as a band that ends there.
        let x_max = Axis::fit("x", [0.0, 10.0], Scale::Linear).max;
        assert_eq!(
            band_chart(vec![band(3.0, None)]),
            band_chart(vec![band(3.0, Some(x_max))])
        );
        // Past the right edge: clamped; wholly outside the axis: not drawn.
        assert_eq!(
            band_chart(vec![band(3.0, Some(x_max * 3.0))]),
            band_chart(vec![band(3.0, None)])
        );
        assert_eq!(band_chart(vec![band(x_max + 1.0, None)]), plain);
        assert_eq!(band_chart(vec![band(5.0, Some(3.0))]), plain);
        assert_eq!(band_chart(vec![band(f64::NAN, None)]), plain);
    }
}
