//! Bar charts drawn on the server as SVG with plotters: no JavaScript, no image files, and
//! nothing the Content-Security-Policy has to allow beyond the page itself (the SVG carries
//! presentation attributes only, never a `style` attribute or a script).
//!
//! A bar says what kind of figure it is, as the tables do: an exact count is a plain bar; a
//! lower bound (some city hid its part, so the true value is at least this) is a bar whose top
//! fades out with an arrow upwards, an open end; a lower bound of 0 (every part hidden: unknown,
//! but small) has no bar at all, only an arrow up from the baseline and the words for it, so it
//! cannot be read as a real value; a noisy count carries an error bar of about
//! 95 % (± 1.96 standard deviations); a hidden count has no bar, only the word for hidden. The
//! SVG has a title and a description for screen readers; the table beside it stays the
//! accessible alternative with every figure.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::format;

/// What kind of figure a bar shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mark {
    /// An exact count.
    Exact,
    /// Hidden: no value published.
    Hidden,
    /// Noise added; the standard deviation of the noise.
    Noisy { sd: f64 },
    /// At least this much.
    LowerBound,
    /// At least this much, and noisy.
    LowerBoundNoisy { sd: f64 },
}

impl Mark {
    /// The mark of a published status (`exact`, `suppressed`, `noisy`, `lower_bound`,
    /// `lower_bound_noisy`) with the noise's standard deviation.
    pub fn of(status: &str, sd: f64) -> Mark {
        match status {
            "suppressed" => Mark::Hidden,
            "noisy" => Mark::Noisy { sd },
            "lower_bound" => Mark::LowerBound,
            "lower_bound_noisy" => Mark::LowerBoundNoisy { sd },
            _ => Mark::Exact,
        }
    }

    fn sd(self) -> Option<f64> {
        match self {
            Mark::Noisy { sd } | Mark::LowerBoundNoisy { sd } => Some(sd),
            _ => None,
        }
    }

    fn open(self) -> bool {
        matches!(self, Mark::LowerBound | Mark::LowerBoundNoisy { .. })
    }
}

impl Bar {
    /// A lower bound of at most 0: nothing is known but that the count is small. Drawn as an
    /// arrow up from the baseline, never as a bar.
    fn unknown_small(&self) -> bool {
        self.mark.open() && self.value.is_some_and(|v| v <= 0)
    }
}

/// One bar.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Under the bar (a quarter, a category).
    pub label: String,
    /// The value; none when hidden.
    pub value: Option<i64>,
    pub mark: Mark,
}

/// The words a chart needs, from the translation files.
pub struct Words<'a> {
    /// The chart's title (also the SVG's `<title>`).
    pub title: &'a str,
    /// A sentence for screen readers (the SVG's `<desc>`).
    pub description: &'a str,
    /// What the vertical axis counts.
    pub y_axis: &'a str,
    /// Written where a bar is hidden.
    pub hidden: &'a str,
    /// Written above the arrow of a lower bound of 0 ("unknown, but small").
    pub unknown_small: &'a str,
}

const WIDTH: u32 = 720;
const HEIGHT: u32 = 320;
/// The bars' colour: dark blue, 9:1 against white.
const BAR: RGBColor = RGBColor(0x1f, 0x4e, 0x79);
/// Text and error bars: near black.
const INK: RGBColor = RGBColor(0x1a, 0x1a, 0x1a);
/// Grid lines.
const GRID: RGBColor = RGBColor(0xd0, 0xd0, 0xd0);

/// 95 % of normal noise lies within this many standard deviations.
const Z95: f64 = 1.96;

/// The text drawn above a bar: `12`, `≥ 12`, `≈ 12`, `≥ ≈ 12`.
fn value_text(bar: &Bar) -> Option<String> {
    let n = format::number(bar.value?);
    Some(match bar.mark {
        Mark::Exact => n,
        Mark::Hidden => return None,
        Mark::Noisy { .. } => format!("≈ {n}"),
        Mark::LowerBound => format!("≥ {n}"),
        Mark::LowerBoundNoisy { .. } => format!("≥ ≈ {n}"),
    })
}

/// Escapes text for XML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar chart as an inline `<svg>` element with the id `id` (unique on the page), a title and
/// a description; `None` if there is nothing to draw or drawing failed.
pub fn bars(id: &str, words: &Words, bars: &[Bar]) -> Option<String> {
    if bars.is_empty() {
        return None;
    }
    let mut svg = String::new();
    draw(&mut svg, words, bars)
        .map_err(|err| tracing::warn!(error = %err, "drawing a chart failed"))
        .ok()?;
    let (open, rest) = svg.split_once('>')?;
    let open = open.replacen(
        "<svg ",
        &format!("<svg class=\"chart\" role=\"img\" aria-labelledby=\"{id}-title {id}-desc\" "),
        1,
    );
    Some(format!(
        "{open}>\n<title id=\"{id}-title\">{}</title>\n<desc id=\"{id}-desc\">{}</desc>{rest}",
        escape(words.title),
        escape(words.description)
    ))
}

fn draw(svg: &mut String, words: &Words, bars: &[Bar]) -> Result<(), Box<dyn std::error::Error>> {
    let top = bars
        .iter()
        .filter_map(|b| {
            let v = b.value? as f64;
            Some(v + b.mark.sd().map_or(0.0, |sd| Z95 * sd))
        })
        .fold(0.0_f64, f64::max);
    // Room above the tallest bar for its text and an open end.
    let y_max = (top * 1.25).max(4.0);
    let open_end = y_max * 0.12;
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    // One unit of x per bar: bar i spans i..i+1, its centre at i + 0.5.
    let n = bars.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..n, 0.0..y_max)?;
    let y_label = |v: &f64| format::number(v.round() as i64);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(INK)
        .x_labels(0)
        .y_labels(5)
        .y_label_formatter(&y_label)
        .y_desc(words.y_axis)
        .label_style(("sans-serif", 16).into_font().color(&INK))
        .axis_desc_style(("sans-serif", 16).into_font().color(&INK))
        .draw()?;
    let at = |i: usize| i as f64 + 0.5;
    let left = |i: usize| i as f64;
    let right = |i: usize| i as f64 + 1.0;
    // Bars at most about 90 px wide, whatever their number.
    let segment = (WIDTH - 64 - 24) / bars.len().max(1) as u32;
    let bar_margin = segment.saturating_sub(90).max(12) / 2;
    // The bars.
    chart.draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
        if b.unknown_small() {
            return None;
        }
        let v = b.value? as f64;
        let mut rect = Rectangle::new([(left(i), 0.0), (right(i), v)], BAR.filled());
        rect.set_margin(0, 0, bar_margin, bar_margin);
        Some(rect)
    }))?;
    // Open ends: the bar goes on above its value, fading out, with an arrow upwards.
    for (i, b) in bars.iter().enumerate() {
        let (Some(v), true) = (b.value, b.mark.open()) else {
            continue;
        };
        if b.unknown_small() {
            // No bar: a thin shaft up from the baseline and an arrowhead, open-ended.
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(at(i), 0.0), (at(i), open_end * 1.05)],
                BAR.stroke_width(3),
            )))?;
            chart.draw_series(std::iter::once(TriangleMarker::new(
                (at(i), open_end * 1.15),
                7,
                BAR.filled(),
            )))?;
            continue;
        }
        let v = v as f64;
        for step in 0..4 {
            let from = v + open_end * f64::from(step) / 4.0;
            let to = v + open_end * f64::from(step + 1) / 4.0;
            let mut rect = Rectangle::new(
                [(left(i), from), (right(i), to)],
                BAR.mix(0.55 - 0.13 * f64::from(step)).filled(),
            );
            rect.set_margin(0, 0, bar_margin, bar_margin);
            chart.draw_series(std::iter::once(rect))?;
        }
        chart.draw_series(std::iter::once(TriangleMarker::new(
            (at(i), v + open_end * 1.15),
            6,
            BAR.filled(),
        )))?;
    }
    // Error bars on noisy counts.
    chart.draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
        if b.unknown_small() {
            return None;
        }
        let v = b.value? as f64;
        let sd = b.mark.sd()?;
        Some(ErrorBar::new_vertical(
            at(i),
            (v - Z95 * sd).max(0.0),
            v,
            v + Z95 * sd,
            INK.stroke_width(2),
            12,
        ))
    }))?;
    // The value above each bar, or the word for hidden at its foot.
    let text = ("sans-serif", 16)
        .into_font()
        .color(&INK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let (words, y) = match (value_text(b), b.value) {
            _ if b.unknown_small() => (
                words.unknown_small.to_string(),
                open_end * 1.6 + y_max * 0.02,
            ),
            (Some(words), Some(v)) => {
                let v = v as f64;
                let above = if b.mark.open() {
                    open_end * 1.6
                } else {
                    b.mark.sd().map_or(0.0, |sd| Z95 * sd)
                };
                (words, v + above + y_max * 0.02)
            }
            _ => (words.hidden.to_string(), y_max * 0.02),
        };
        Text::new(words, (at(i), y), text.clone())
    }))?;
    // The category under each bar, just below the axis.
    let under = ("sans-serif", 16)
        .into_font()
        .color(&INK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        EmptyElement::at((at(i), 0.0)) + Text::new(b.label.clone(), (0, 8), under.clone())
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words() -> Words<'static> {
        Words {
            title: "Stödda <per> kvartal",
            description: "Ett stapeldiagram.",
            y_axis: "Personer",
            hidden: "dold",
            unknown_small: "okänt, men litet",
        }
    }

    #[test]
    fn a_chart_is_an_accessible_svg_without_style_or_script() {
        let bars = [
            Bar {
                label: "2026-Q1".into(),
                value: Some(1200),
                mark: Mark::Exact,
            },
            Bar {
                label: "2026-Q2".into(),
                value: Some(40),
                mark: Mark::LowerBound,
            },
            Bar {
                label: "2026-Q3".into(),
                value: Some(17),
                mark: Mark::Noisy { sd: 3.0 },
            },
            Bar {
                label: "2026-Q4".into(),
                value: None,
                mark: Mark::Hidden,
            },
        ];
        let svg = super::bars("c1", &words(), &bars).unwrap();
        assert!(svg
            .starts_with("<svg class=\"chart\" role=\"img\" aria-labelledby=\"c1-title c1-desc\""));
        assert!(svg.contains("<title id=\"c1-title\">Stödda &lt;per&gt; kvartal</title>"));
        assert!(svg.contains("<desc id=\"c1-desc\">Ett stapeldiagram.</desc>"));
        for label in [
            "2026-Q1",
            "2026-Q4",
            "1\u{a0}200",
            "≥ 40",
            "≈ 17",
            "dold",
            "Personer",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        // The Content-Security-Policy allows no inline style and no script.
        assert!(!svg.contains("style="), "{svg}");
        assert!(!svg.contains("<script"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn the_last_bar_is_drawn_too() {
        let one = [Bar {
            label: "2026-Q4".into(),
            value: Some(30),
            mark: Mark::Exact,
        }];
        let svg = super::bars("c2", &words(), &one).unwrap();
        // The background and the bar.
        assert!(svg.matches("<rect").count() >= 2, "{svg}");
    }

    #[test]
    fn nothing_to_draw_is_no_chart() {
        assert_eq!(bars("c", &words(), &[]), None);
    }

    /// The bars' rectangles (their colour), and of them the faded ones (opacity below 1).
    fn bar_rects(svg: &str) -> (usize, usize) {
        let rects: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<rect") && l.contains("fill=\"#1F4E79\""))
            .collect();
        let faded = rects
            .iter()
            .filter(|l| !l.contains("opacity=\"1\""))
            .count();
        (rects.len(), faded)
    }

    #[test]
    fn a_lower_bound_of_zero_is_an_arrow_from_the_baseline_never_a_bar() {
        let unknown = [
            Bar {
                label: "2026-Q1".into(),
                value: Some(10),
                mark: Mark::Exact,
            },
            Bar {
                label: "2026-Q2".into(),
                value: Some(0),
                mark: Mark::LowerBound,
            },
            Bar {
                label: "2026-Q3".into(),
                value: Some(0),
                mark: Mark::LowerBoundNoisy { sd: 2.0 },
            },
        ];
        let svg = super::bars("c3", &words(), &unknown).unwrap();
        // Only the exact count is a bar; nothing faded stands for the two lower bounds of 0.
        assert_eq!(bar_rects(&svg), (1, 0), "{svg}");
        assert!(!svg.contains("≥ 0") && !svg.contains("≥ ≈ 0"), "{svg}");
        assert_eq!(svg.matches("okänt, men litet").count(), 2, "{svg}");
        // Each is a shaft that starts at the baseline, with an arrowhead above it.
        let baseline = svg
            .lines()
            .find(|l| l.starts_with("<polyline") && l.contains("stroke=\"#1A1A1A\""))
            .and_then(|axis| axis.split("points=\"").nth(1))
            .and_then(|points| points.split(' ').nth(1))
            .and_then(|bottom| bottom.split(',').nth(1))
            .unwrap()
            .to_string();
        let shafts: Vec<&str> = svg
            .lines()
            .filter(|l| {
                l.starts_with("<polyline")
                    && l.contains("stroke=\"#1F4E79\"")
                    && l.contains("stroke-width=\"3\"")
            })
            .collect();
        assert_eq!(shafts.len(), 2, "{svg}");
        for shaft in shafts {
            assert!(
                shaft.contains(&format!(",{baseline} ")),
                "{shaft} from {baseline}"
            );
        }
        assert_eq!(
            svg.lines()
                .filter(|l| l.starts_with("<polygon") && l.contains("#1F4E79"))
                .count(),
            2,
            "{svg}"
        );
        // No error bar on a count nobody knows.
        assert!(
            !svg.contains("stroke=\"#1A1A1A\" stroke-width=\"2\""),
            "{svg}"
        );
    }

    #[test]
    fn a_lower_bound_above_zero_keeps_its_open_ended_bar() {
        let at_least = [Bar {
            label: "2026-Q2".into(),
            value: Some(40),
            mark: Mark::LowerBound,
        }];
        let svg = super::bars("c4", &words(), &at_least).unwrap();
        let (bars, faded) = bar_rects(&svg);
        assert_eq!(
            (bars, faded),
            (5, 4),
            "the bar and its four faded steps: {svg}"
        );
        assert!(svg.contains("≥ 40"));
        assert!(!svg.contains("okänt"));
    }
}
