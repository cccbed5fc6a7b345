//! SVG plots of a simulation run: per-strategy bar charts and per-instance Gantt timelines.
//!
//! This module takes its own plain input types and knows nothing of the simulator's internals, so a
//! caller (the report, a bench, a test) fills a [`PlotInput`] and calls [`render_svg`]. Rendering uses
//! `plotters`' SVG backend without its `ttf` feature: text is written as SVG `<text>` elements (the
//! viewer picks the font) and laid out with plotters' naive width estimate, so no font is needed at
//! render time. Plotters escapes `<`, `>`, `&`, `"` and `'` in text itself; labels are passed as they
//! are (escaping them here too would show `&amp;lt;` in the picture).
//!
//! Degenerate input never panics: a NaN or infinite bar value is drawn as 0 and its label says so;
//! spans with `to_s < from_s` or non-finite ends are skipped and counted in the panel's caption; an
//! empty timeline gets a panel that says it is empty; a zero-length time window is widened to 2 s.

use std::collections::BTreeMap;
use std::fmt;

use plotters::chart::MeshStyle;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One strategy's bars.
#[derive(Clone, Debug, PartialEq)]
pub struct StrategyBars {
    /// The strategy's name, as printed under its bars.
    pub name: String,
    /// Jobs killed by the runner's stop, per 10,000 scale-ins.
    pub jobs_killed_by_stop_per_10k_scale_ins: f64,
    /// Idle seconds spent in Terminating:Wait, per scale-in.
    pub idle_wait_s_per_scale_in: f64,
    /// How many scale-ins the figures are over.
    pub scale_ins: u64,
}

/// One lane of an instance timeline: a state over intervals.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// The lane ("asg", "listener", "worker", ...). Lanes are drawn top to bottom in order of first
    /// appearance, spans before marks.
    pub lane: &'static str,
    /// Start, in simulated seconds.
    pub from_s: f64,
    /// End, in simulated seconds.
    pub to_s: f64,
    /// The state over `[from_s, to_s]`. One colour per state; a trailing number is not part of the
    /// colour ("job 3" and "job 4" share the colour of "job N", and each span is labelled inside its
    /// bar where it fits).
    pub state: String,
}

/// A point event on a lane (an API call, a signal, a hook).
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    /// The lane the mark is drawn on (it may also hold spans).
    pub lane: &'static str,
    /// When, in simulated seconds.
    pub at_s: f64,
    /// A short label; long labels are cut to [`MARK_LABEL_MAX_CHARS`].
    pub label: String,
}

/// One instance's timeline under one strategy.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// The strategy's name.
    pub strategy: String,
    /// The instance's number in the simulated fleet.
    pub instance: u32,
    /// State intervals.
    pub spans: Vec<Span>,
    /// Point events.
    pub marks: Vec<Mark>,
}

/// Everything one SVG document shows.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotInput {
    /// The document's title.
    pub title: String,
    /// One entry per strategy, in the order the bars are drawn.
    pub strategies: Vec<StrategyBars>,
    /// Zero or more timelines, one panel each, in this order.
    pub timelines: Vec<Timeline>,
}

/// Why rendering failed. Degenerate input is not an error; only the drawing backend can fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlotError {
    /// The plotting library reported an error.
    Render(String),
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlotError::Render(msg) => write!(f, "rendering the SVG plot failed: {msg}"),
        }
    }
}

impl std::error::Error for PlotError {}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for PlotError {
    fn from(err: DrawingAreaErrorKind<E>) -> Self {
        PlotError::Render(err.to_string())
    }
}

/// Mark labels longer than this many characters are cut, ending in "…".
pub const MARK_LABEL_MAX_CHARS: usize = 24;

const WIDTH: u32 = 1000;
const TITLE_H: u32 = 44;
const BAR_PANEL_H: u32 = 300;
const LANE_H: u32 = 64;
const PANEL_CAPTION_H: u32 = 34;
const PANEL_XAXIS_H: u32 = 44;
const LEGEND_ROW_H: u32 = 20;
const EMPTY_PANEL_H: u32 = 70;
const Y_LABEL_W: u32 = 90;
const SIDE_MARGIN: u32 = 20;
/// Room under the bars for a name wrapped to three lines and the scale-in count.
const BAR_XAXIS_H: u32 = 68;
/// The strategy names' font size under the bars.
const BAR_LABEL_SIZE: u32 = 12;
const FONT: &str = "sans-serif";
/// Coordinates are kept within ±LIMIT so that a range's width stays finite.
const LIMIT: f64 = f64::MAX / 8.0;

/// Renders `input` as one SVG document: a title, a bar chart of jobs killed by the stop per 10,000
/// scale-ins, a bar chart of idle Terminating:Wait seconds per scale-in, then one Gantt panel per
/// timeline. 1000 px wide; the height grows with the panels. A panel's time window is zoomed to its
/// valid spans and marks (marks count too, so an agent's call just after the last span shows).
pub fn render_svg(input: &PlotInput) -> Result<String, PlotError> {
    let panels: Vec<TimelinePanel<'_>> = input.timelines.iter().map(TimelinePanel::new).collect();
    let height = TITLE_H + 2 * BAR_PANEL_H + panels.iter().map(|p| p.height).sum::<u32>();

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        draw_title(&root, &input.title)?;

        let (_, rest) = root.split_vertically(TITLE_H);
        let (killed_area, rest) = rest.split_vertically(BAR_PANEL_H);
        let (idle_area, mut rest) = rest.split_vertically(BAR_PANEL_H);

        let killed: Vec<Bar<'_>> = input
            .strategies
            .iter()
            .map(|s| Bar::new(s, s.jobs_killed_by_stop_per_10k_scale_ins, ""))
            .collect();
        bar_chart(
            &killed_area,
            "Jobs killed by the stop, per 10,000 scale-ins",
            "jobs killed / 10k scale-ins",
            &killed,
        )?;
        let idle: Vec<Bar<'_>> = input
            .strategies
            .iter()
            .map(|s| Bar::new(s, s.idle_wait_s_per_scale_in, " s"))
            .collect();
        bar_chart(
            &idle_area,
            "Idle seconds in Terminating:Wait, per scale-in",
            "idle seconds / scale-in",
            &idle,
        )?;

        for panel in &panels {
            let (area, below) = rest.split_vertically(panel.height);
            panel.draw(&area)?;
            rest = below;
        }
        root.present()?;
    }
    Ok(svg)
}

/// One bar: a finite value and its label.
struct Bar<'a> {
    name: &'a str,
    scale_ins: u64,
    value: f64,
    label: String,
}

impl<'a> Bar<'a> {
    fn new(s: &'a StrategyBars, raw: f64, unit: &str) -> Self {
        let (value, label) = if raw.is_finite() {
            (raw, format!("{}{unit}", fmt_value(raw)))
        } else {
            (0.0, format!("0 ({raw} shown as 0)"))
        };
        Bar {
            name: &s.name,
            scale_ins: s.scale_ins,
            value,
            label,
        }
    }
}

/// A value with about three significant digits, without trailing noise.
fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

/// An axis tick value: like [`fmt_value`] but without needless zeros ("2", not "2.00").
fn fmt_axis(v: f64) -> String {
    let s = fmt_value(v);
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// [`fmt_axis`] as a y-axis label formatter.
fn axis_label(y: &f64) -> String {
    fmt_axis(*y)
}

/// The mesh of a chart of values (bars, series panels): no vertical grid and no x mesh labels (the
/// x labels are drawn by hand), six y labels by [`fmt_axis`], light grey lines. The caller adds
/// what its chart has besides, then draws.
fn value_mesh<'a, 'b, 's>(
    chart: &'b mut ChartContext<'a, SVGBackend<'s>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    y_desc: &str,
) -> MeshStyle<'a, 'b, RangedCoordf64, RangedCoordf64, SVGBackend<'s>> {
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&axis_label)
        .y_labels(6)
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 13))
        .light_line_style(RGBColor(0xf2, 0xf2, 0xf2));
    mesh
}

/// A stable colour per strategy (or series), by position.
fn palette(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 6] = [
        RGBColor(0x2b, 0x6c, 0xb0),
        RGBColor(0x4a, 0x9d, 0xd9),
        RGBColor(0xdd, 0x84, 0x52),
        RGBColor(0xc4, 0x4e, 0x52),
        RGBColor(0x55, 0xa8, 0x68),
        RGBColor(0x81, 0x72, 0xb3),
    ];
    COLOURS[i % COLOURS.len()]
}

fn bar_chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    y_desc: &str,
    bars: &[Bar<'_>],
) -> Result<(), PlotError> {
    if bars.is_empty() {
        area.draw(&Text::new(
            format!("{caption}: no strategies to show"),
            (SIDE_MARGIN as i32, 30),
            (FONT, 16).into_font().color(&BLACK),
        ))?;
        return Ok(());
    }
    let n = bars.len();
    // Bars start at 0. Headroom above (and below) them for the value labels; the range stays finite
    // and non-empty, and values beyond it (only ever near f64::MAX) are drawn at its edge, because
    // plotters overflows mapping a coordinate far outside its range to pixels.
    let lo = bars.iter().map(|b| b.value).fold(0.0_f64, f64::min).max(-LIMIT);
    let hi = bars.iter().map(|b| b.value).fold(0.0_f64, f64::max).min(LIMIT);
    let (lo, hi) = if hi > lo {
        let pad = (hi - lo) * 0.15;
        (
            if lo < 0.0 { lo - pad } else { 0.0 },
            if hi > 0.0 { hi + pad } else { 0.0 },
        )
    } else {
        (0.0, 1.0)
    };
    let value = |b: &Bar<'_>| b.value.clamp(lo, hi);

    // Category axes have no mesh labels (plotters cannot format custom key points on an f64 axis);
    // the names are drawn under the bars instead.
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 17))
        .margin_left(SIDE_MARGIN)
        .margin_right(SIDE_MARGIN)
        .margin_top(6)
        .margin_bottom(6)
        .x_label_area_size(BAR_XAXIS_H)
        .y_label_area_size(Y_LABEL_W)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, lo..hi)?;

    value_mesh(&mut chart, y_desc).y_max_light_lines(1).draw()?;

    let (ox, oy) = area.get_base_pixel();
    // Each name gets its own slot, wrapped at hyphens to fit it (six strategies' one-line names
    // overprinted one another), with the scale-in count on a line of its own below.
    let slot = {
        let (x0, _) = chart.backend_coord(&(0.0, lo));
        let (x1, _) = chart.backend_coord(&(1.0, lo));
        (x1 - x0).max(1)
    };
    for (i, b) in bars.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64, lo));
        let mut lines = wrap_label(b.name, slot - 6, BAR_LABEL_SIZE);
        lines.push(format!("({} scale-ins)", b.scale_ins));
        for (k, line) in lines.iter().enumerate() {
            area.draw(&Text::new(
                line.clone(),
                (x - ox, y - oy + 8 + k as i32 * (BAR_LABEL_SIZE as i32 + 2)),
                (FONT, BAR_LABEL_SIZE)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
        }
    }

    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let x = i as f64;
        Rectangle::new([(x - 0.3, 0.0), (x + 0.3, value(b))], palette(i).filled())
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let below = b.value < 0.0;
        let vpos = if below { VPos::Top } else { VPos::Bottom };
        Text::new(
            b.label.clone(),
            (i as f64, value(b)),
            (FONT, 14).into_font().color(&BLACK).pos(Pos::new(HPos::Center, vpos)),
        )
    }))?;
    Ok(())
}

/// A timeline prepared for drawing: its lanes, valid spans and marks, window and height.
struct TimelinePanel<'a> {
    timeline: &'a Timeline,
    lanes: Vec<&'static str>,
    spans: Vec<&'a Span>,
    marks: Vec<&'a Mark>,
    skipped_spans: usize,
    skipped_marks: usize,
    window: (f64, f64),
    legend: Vec<(String, RGBColor)>,
    legend_rows: u32,
    height: u32,
}

impl<'a> TimelinePanel<'a> {
    fn new(timeline: &'a Timeline) -> Self {
        let spans: Vec<&Span> = timeline
            .spans
            .iter()
            .filter(|s| s.from_s.is_finite() && s.to_s.is_finite() && s.to_s >= s.from_s)
            .collect();
        let marks: Vec<&Mark> = timeline.marks.iter().filter(|m| m.at_s.is_finite()).collect();
        let mut lanes: Vec<&'static str> = Vec::new();
        for lane in spans.iter().map(|s| s.lane).chain(marks.iter().map(|m| m.lane)) {
            if !lanes.contains(&lane) {
                lanes.push(lane);
            }
        }
        // The window is zoomed to the spans and marks given, with a little room either side.
        let times = spans
            .iter()
            .flat_map(|s| [s.from_s, s.to_s])
            .chain(marks.iter().map(|m| m.at_s));
        let (lo, hi) = times.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| (lo.min(t), hi.max(t)));
        let (lo, hi) = (lo.max(-LIMIT), hi.min(LIMIT));
        let window = if lo > hi {
            (0.0, 1.0)
        } else if hi - lo <= 0.0 {
            // A zero-length window: a second either side (more far from 0, where 1.0 would vanish).
            let d = lo.abs().mul_add(1e-9, 1.0);
            (lo - d, hi + d)
        } else {
            let pad = (hi - lo) * 0.02;
            (lo - pad, hi + pad)
        };

        let mut legend: Vec<(String, RGBColor)> = Vec::new();
        for s in &spans {
            let entry = legend_entry(&s.state);
            if !legend.iter().any(|(k, _)| *k == entry.0) {
                legend.push(entry);
            }
        }
        let legend_rows = legend_layout(&legend).last().map_or(0, |&(_, row)| row + 1);
        let height = if lanes.is_empty() {
            EMPTY_PANEL_H
        } else {
            PANEL_CAPTION_H + LANE_H * lanes.len() as u32 + PANEL_XAXIS_H + LEGEND_ROW_H * legend_rows + 14
        };
        TimelinePanel {
            timeline,
            lanes,
            skipped_spans: timeline.spans.len() - spans.len(),
            skipped_marks: timeline.marks.len() - marks.len(),
            spans,
            marks,
            window,
            legend,
            legend_rows,
            height,
        }
    }

    fn lane_has_spans(&self, lane: &str) -> bool {
        self.spans.iter().any(|s| s.lane == lane)
    }

    /// How far below the lane's centre its name is written: level with the span bars if it has any.
    fn lane_offset(&self, lane: &str) -> f64 {
        if self.lane_has_spans(lane) {
            0.12
        } else {
            0.0
        }
    }

    fn caption(&self) -> String {
        let mut caption = format!("{} — instance {}", self.timeline.strategy, self.timeline.instance);
        if self.skipped_spans > 0 {
            caption += &format!(
                " ({} span(s) with to < from or non-finite ends not drawn)",
                self.skipped_spans
            );
        }
        if self.skipped_marks > 0 {
            caption += &format!(" ({} mark(s) at a non-finite time not drawn)", self.skipped_marks);
        }
        caption
    }

    fn draw(&self, area: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), PlotError> {
        let caption_style = (FONT, 16).into_font().color(&BLACK);
        if self.lanes.is_empty() {
            area.draw(&Text::new(
                format!("{}: no spans or marks to show", self.caption()),
                (SIDE_MARGIN as i32, 28),
                caption_style,
            ))?;
            return Ok(());
        }
        area.draw(&Text::new(self.caption(), (SIDE_MARGIN as i32, 22), caption_style))?;
        let legend_h = LEGEND_ROW_H * self.legend_rows + 14;
        let (body, legend_area) = area.split_vertically(self.height - legend_h);
        let (_, body) = body.split_vertically(PANEL_CAPTION_H);

        let n = self.lanes.len();
        // Lane i (from the top) is centred on y = n - 1 - i.
        let (t0, t1) = self.window;
        let t = |v: f64| v.clamp(t0, t1);
        let lane_y = |lane: &str| -> f64 {
            let i = self.lanes.iter().position(|l| *l == lane).unwrap_or(0);
            (n - 1 - i) as f64
        };
        let mut chart = ChartBuilder::on(&body)
            .margin_left(SIDE_MARGIN)
            .margin_right(SIDE_MARGIN)
            .x_label_area_size(PANEL_XAXIS_H)
            .y_label_area_size(Y_LABEL_W)
            .build_cartesian_2d(t0..t1, -0.5..n as f64 - 0.5)?;
        let span_len = t1 - t0;
        let x_label = |x: &f64| {
            if span_len >= 20.0 {
                format!("{x:.0}")
            } else if span_len >= 2.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.3}")
            }
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(12)
            .y_labels(0)
            .x_label_formatter(&x_label)
            .x_desc("simulated seconds")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 13))
            .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
            .draw()?;

        let (ox, oy) = area.get_base_pixel();
        for lane in &self.lanes {
            let (x, y) = chart.backend_coord(&(t0, lane_y(lane) - self.lane_offset(lane)));
            area.draw(&Text::new(
                lane.to_string(),
                (x - ox - 8, y - oy),
                (FONT, 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
        }

        // Spans: a bar in the lower part of the lane, the state written inside where it fits.
        let span_style = |s: &Span| legend_entry(&s.state).1.filled();
        chart.draw_series(self.spans.iter().map(|s| {
            let y = lane_y(s.lane);
            Rectangle::new([(t(s.from_s), y - 0.32), (t(s.to_s), y + 0.08)], span_style(s))
        }))?;
        chart.draw_series(self.spans.iter().map(|s| {
            let y = lane_y(s.lane);
            Rectangle::new([(t(s.from_s), y - 0.32), (t(s.to_s), y + 0.08)], WHITE.stroke_width(1))
        }))?;
        for s in &self.spans {
            let y = lane_y(s.lane);
            let (x0, _) = chart.backend_coord(&(t(s.from_s), y));
            let (x1, yc) = chart.backend_coord(&(t(s.to_s), y - 0.12));
            if text_width(&s.state, 12) + 6 <= x1 - x0 {
                area.draw(&Text::new(
                    s.state.clone(),
                    ((x0 + x1) / 2 - ox, yc - oy),
                    (FONT, 12)
                        .into_font()
                        .color(&text_colour_on(legend_entry(&s.state).1))
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))?;
            }
        }

        // Marks: a tick across the lane, a dot, and a short label above, staggered so that labels of
        // nearby marks do not overlap (up to three rows; past that they may).
        let mut sorted: Vec<&Mark> = self.marks.clone();
        sorted.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let mut row_ends: BTreeMap<&str, [i32; 3]> = BTreeMap::new();
        let tick = RGBColor(0x22, 0x22, 0x22);
        let (plot_x, _) = chart.plotting_area().get_pixel_range();
        for m in sorted {
            let y = lane_y(m.lane);
            // On a lane with spans the tick crosses the bar and up to two rows of labels go above
            // it; on a lane of marks only the tick is low and three rows fit.
            let (tick_from, tick_to, rows) = if self.lane_has_spans(m.lane) {
                (y - 0.4, y + 0.12, 2)
            } else {
                (y - 0.45, y - 0.2, 3)
            };
            let (x, y_bottom) = chart.backend_coord(&(t(m.at_s), tick_from));
            let (_, y_top) = chart.backend_coord(&(t(m.at_s), tick_to));
            let label = short_label(&m.label);
            let w = text_width(&label, 11);
            // The label is centred on the tick but kept inside the plotting area.
            let label_x = (x - w / 2).min(plot_x.end - w).max(plot_x.start) + w / 2;
            let (left, right) = (label_x - w / 2, label_x + w / 2);
            let ends = row_ends.entry(m.lane).or_insert([i32::MIN; 3]);
            let row = (0..rows)
                .find(|&r| ends[r] + 4 <= left)
                .unwrap_or_else(|| (0..rows).min_by_key(|&r| ends[r]).unwrap_or(0));
            ends[row] = right;
            let (x, y_bottom, y_top) = (x - ox, y_bottom - oy, y_top - oy);
            area.draw(&PathElement::new(vec![(x, y_bottom), (x, y_top)], tick.stroke_width(2)))?;
            area.draw(&Circle::new((x, y_top), 3, tick.filled()))?;
            let label_y = y_top - 4 - 12 * row as i32;
            area.draw(&Text::new(
                label,
                (label_x - ox, label_y),
                (FONT, 11)
                    .into_font()
                    .color(&tick)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            ))?;
        }

        // Legend: one swatch per state colour, wrapped into rows.
        draw_legend(&legend_area, &self.legend)
    }
}

/// The document's title, centred in the top [`TITLE_H`] pixels of `root`.
fn draw_title(root: &DrawingArea<SVGBackend<'_>, Shift>, title: &str) -> Result<(), PlotError> {
    root.draw(&Text::new(
        title.to_string(),
        (WIDTH as i32 / 2, (TITLE_H / 2) as i32),
        (FONT, 22)
            .into_font()
            .style(FontStyle::Bold)
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    Ok(())
}

/// A legend: one swatch and name per entry, wrapped into rows as [`legend_layout`] places them.
fn draw_legend(area: &DrawingArea<SVGBackend<'_>, Shift>, legend: &[(String, RGBColor)]) -> Result<(), PlotError> {
    for ((name, colour), (x, row)) in legend.iter().zip(legend_layout(legend)) {
        let y = (row * LEGEND_ROW_H) as i32 + 4;
        area.draw(&Rectangle::new([(x, y), (x + 14, y + 14)], colour.filled()))?;
        area.draw(&Text::new(
            name.clone(),
            (x + 19, y + 7),
            (FONT, 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// Positions (x in pixels, row) of the legend entries, wrapped at the panel's width.
fn legend_layout(legend: &[(String, RGBColor)]) -> Vec<(i32, u32)> {
    let x_start = (SIDE_MARGIN + Y_LABEL_W) as i32;
    let x_max = (WIDTH - SIDE_MARGIN) as i32;
    let mut out = Vec::with_capacity(legend.len());
    let (mut x, mut row) = (x_start, 0);
    for (name, _) in legend {
        let w = 19 + text_width(name, 13) + 18;
        if x + w > x_max && x > x_start {
            x = x_start;
            row += 1;
        }
        out.push((x, row));
        x += w;
    }
    out
}

/// A text's width in pixels, estimated generously for a proportional sans-serif font (the renderer
/// picks the real font; plotters' own estimate without `ttf` is narrower than most).
fn text_width(text: &str, size: u32) -> i32 {
    (text.chars().count() as f64 * size as f64 * 0.6).ceil() as i32
}

/// `label` broken into lines of at most `width` pixels at `size`, after hyphens (kept at the end of
/// their line), so "runner-lifecycle-persistent" becomes "runner-lifecycle-" / "persistent" when it
/// does not fit. A single part wider than `width` keeps its own line (it is never cut).
pub fn wrap_label(label: &str, width: i32, size: u32) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut part = String::new();
    for c in label.chars() {
        part.push(c);
        if c == '-' {
            parts.push(std::mem::take(&mut part));
        }
    }
    if !part.is_empty() {
        parts.push(part);
    }
    let mut lines: Vec<String> = Vec::new();
    for p in parts {
        match lines.last_mut() {
            Some(last) if text_width(&format!("{last}{p}"), size) <= width => last.push_str(&p),
            _ => lines.push(p),
        }
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

impl Timeline {
    /// The part of this timeline within `half_width_s` of `center_s` (an event: a pick, a stop, a
    /// loss): spans clipped to the window, marks inside it. The panel zooms to what is left, and its
    /// caption still names the strategy and the instance (the host) it shows.
    pub fn zoomed(&self, center_s: f64, half_width_s: f64) -> Timeline {
        let (from, to) = (center_s - half_width_s.abs(), center_s + half_width_s.abs());
        Timeline {
            strategy: format!("{} (zoom {:.0}–{:.0} s)", self.strategy, from.max(0.0), to),
            instance: self.instance,
            spans: self
                .spans
                .iter()
                .filter(|sp| sp.to_s > from && sp.from_s < to)
                .map(|sp| Span {
                    from_s: sp.from_s.max(from),
                    to_s: sp.to_s.min(to),
                    ..sp.clone()
                })
                .collect(),
            marks: self
                .marks
                .iter()
                .filter(|m| m.at_s >= from && m.at_s <= to)
                .cloned()
                .collect(),
        }
    }
}

/// A mark label cut to [`MARK_LABEL_MAX_CHARS`] characters.
fn short_label(label: &str) -> String {
    if label.chars().count() <= MARK_LABEL_MAX_CHARS {
        label.to_string()
    } else {
        let mut s: String = label.chars().take(MARK_LABEL_MAX_CHARS - 1).collect();
        s.push('…');
        s
    }
}

/// The legend entry of a state: a trailing number is dropped ("job 12" is "job N"), and the colour is
/// fixed for the states the simulator knows and derived from the name for others.
fn legend_entry(state: &str) -> (String, RGBColor) {
    let base = state.trim_end_matches(|c: char| c.is_ascii_digit() || c == '#' || c == ' ');
    let (name, base) = if base.len() < state.len() && !base.is_empty() {
        (format!("{base} N"), base)
    } else {
        (state.to_string(), state)
    };
    let colour = match base {
        // The Auto Scaling group's view.
        "Pending" => RGBColor(0xb8, 0xc4, 0xd6),
        "InService" => RGBColor(0x5a, 0xae, 0x61),
        "Terminating:Wait" => RGBColor(0xf1, 0xa3, 0x40),
        "Terminating:Proceed" => RGBColor(0xd6, 0x3c, 0x3c),
        // The listener.
        "Down" => RGBColor(0xbd, 0xbd, 0xbd),
        "Starting" => RGBColor(0x9e, 0xca, 0xe1),
        "Polling" => RGBColor(0x42, 0x92, 0xc6),
        "Busy" => RGBColor(0x80, 0x7d, 0xba),
        "Exiting" => RGBColor(0xe7, 0x8a, 0xc3),
        // The worker.
        "job" => RGBColor(0x35, 0x97, 0x8f),
        other => {
            // FNV-1a over the name: stable across runs and platforms.
            let h = other.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            let hue = (h % 360) as f64 / 360.0;
            let rgb = HSLColor(hue, 0.5, 0.6).to_backend_color().rgb;
            RGBColor(rgb.0, rgb.1, rgb.2)
        }
    };
    (name, colour)
}

/// Black or white, whichever reads better on `bg`.
fn text_colour_on(bg: RGBColor) -> RGBColor {
    let RGBColor(r, g, b) = bg;
    let luma = 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
    if luma > 150.0 {
        BLACK
    } else {
        WHITE
    }
}

/// One named series of `(x, y)` points of a [`SeriesPanel`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend's name (a count in it, "shutdown_signal (12)", helps the reader).
    pub name: String,
    /// `(x, y)`: x in the plot's time unit. For stacked bars, x is the bucket's start.
    pub points: Vec<(f64, f64)>,
}

/// How a [`SeriesPanel`] draws its series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SeriesStyle {
    /// Counts per time bucket: bars `width` wide, the series stacked in order at each x.
    StackedBars {
        /// The bucket's width, in the plot's time unit.
        width: f64,
    },
    /// Lines through the points in x order, a dot on each.
    Lines,
}

/// One panel of a [`SeriesPlot`]: its caption, its y axis, its series.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesPanel {
    /// Written above the panel.
    pub caption: String,
    /// The y axis's description.
    pub y_desc: String,
    /// Bars or lines.
    pub style: SeriesStyle,
    /// One colour each, by position, in the legend in this order.
    pub series: Vec<Series>,
}

/// A picture of quantities over time: a title, then panels sharing one time window.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesPlot {
    /// The document's title.
    pub title: String,
    /// The time window drawn, `[from, to]`; points outside it are left out and counted in the caption.
    pub from: f64,
    /// The window's end.
    pub to: f64,
    /// Times are Unix epoch seconds, labelled as UTC dates (else plain seconds).
    pub utc: bool,
    /// The panels, top to bottom.
    pub panels: Vec<SeriesPanel>,
}

const SERIES_CHART_H: u32 = 280;

/// Renders `input` as one SVG document, 1000 px wide: the title, then each panel with its caption,
/// its chart and its legend. Degenerate input never panics: non-finite points are left out and
/// counted, an inverted or empty window is widened, a panel without points still draws its axes.
pub fn render_series_svg(input: &SeriesPlot) -> Result<String, PlotError> {
    let window = series_window(input.from, input.to);
    let panels: Vec<(&SeriesPanel, u32)> = input
        .panels
        .iter()
        .map(|p| {
            let rows = legend_layout(&series_legend(p)).last().map_or(0, |&(_, row)| row + 1);
            (p, PANEL_CAPTION_H + SERIES_CHART_H + LEGEND_ROW_H * rows + 14)
        })
        .collect();
    let height = TITLE_H + panels.iter().map(|(_, h)| h).sum::<u32>();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        draw_title(&root, &input.title)?;
        let (_, mut rest) = root.split_vertically(TITLE_H);
        for (panel, h) in panels {
            let (area, below) = rest.split_vertically(h);
            draw_series_panel(&area, panel, window, input.utc)?;
            rest = below;
        }
        root.present()?;
    }
    Ok(svg)
}

/// A drawable window: finite, within ±LIMIT, at least 2 wide.
fn series_window(from: f64, to: f64) -> (f64, f64) {
    let (from, to) = (from.clamp(-LIMIT, LIMIT), to.clamp(-LIMIT, LIMIT));
    match (from.is_nan() || to.is_nan(), to - from) {
        (true, _) => (0.0, 1.0),
        (false, w) if w > 0.0 => (from, to),
        _ => {
            let d = from.abs().mul_add(1e-9, 1.0);
            (from - d, from + d)
        }
    }
}

/// A series' colour: the strategies' palette, reordered so neighbours differ in hue (its first two
/// are both blue, for two flavours of one strategy).
fn series_colour(i: usize) -> RGBColor {
    palette([0, 2, 4, 3, 5, 1][i % 6])
}

fn series_legend(panel: &SeriesPanel) -> Vec<(String, RGBColor)> {
    panel
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), series_colour(i)))
        .collect()
}

/// Tick positions at round steps (on UTC days and hours when `utc`), at most about eight.
fn time_ticks((t0, t1): (f64, f64), utc: bool) -> Vec<f64> {
    const STEPS: [f64; 14] = [
        1.0,
        10.0,
        60.0,
        300.0,
        900.0,
        1800.0,
        3600.0,
        10_800.0,
        21_600.0,
        43_200.0,
        86_400.0,
        172_800.0,
        604_800.0,
        2_592_000.0,
    ];
    let span = t1 - t0;
    let step = STEPS.iter().copied().find(|s| span / s <= 8.0).unwrap_or_else(|| {
        if utc {
            2_592_000.0
        } else {
            10f64.powf((span / 8.0).log10().ceil())
        }
    });
    let first = (t0 / step).ceil();
    let n = ((t1 / step).floor() - first).clamp(0.0, 20.0) as usize;
    (0..=n)
        .map(|k| (first + k as f64) * step)
        .filter(|t| (t0..=t1).contains(t))
        .collect()
}

/// A time tick's label: "11-02" on whole UTC days, "11-02 06:00" else; seconds when not `utc`.
fn time_label(t: f64, utc: bool) -> String {
    if !utc {
        return fmt_axis(t);
    }
    match time::OffsetDateTime::from_unix_timestamp(t as i64) {
        Ok(d) if d.hour() == 0 && d.minute() == 0 => format!("{:02}-{:02}", u8::from(d.month()), d.day()),
        Ok(d) => format!(
            "{:02}-{:02} {:02}:{:02}",
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute()
        ),
        Err(_) => fmt_axis(t),
    }
}

fn draw_series_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &SeriesPanel,
    (t0, t1): (f64, f64),
    utc: bool,
) -> Result<(), PlotError> {
    // Keep the finite points inside the window; say how many were left out.
    let (mut odd, mut outside) = (0usize, 0usize);
    let series: Vec<Vec<(f64, f64)>> = panel
        .series
        .iter()
        .map(|s| {
            let mut pts: Vec<(f64, f64)> = Vec::new();
            for &(x, y) in &s.points {
                if !x.is_finite() || !y.is_finite() {
                    odd += 1;
                } else if x < t0 || x > t1 {
                    outside += 1;
                } else {
                    pts.push((x, y.clamp(-LIMIT, LIMIT)));
                }
            }
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            pts
        })
        .collect();
    let mut caption = panel.caption.clone();
    if series.iter().all(Vec::is_empty) {
        caption += " — none in this window";
    }
    if odd > 0 {
        caption += &format!(" ({odd} non-finite point(s) not drawn)");
    }
    if outside > 0 {
        caption += &format!(" ({outside} point(s) outside the window not drawn)");
    }
    area.draw(&Text::new(
        caption,
        (SIDE_MARGIN as i32, 22),
        (FONT, 16).into_font().color(&BLACK),
    ))?;
    let (_, body) = area.split_vertically(PANEL_CAPTION_H);
    let (chart_area, legend_area) = body.split_vertically(SERIES_CHART_H);

    // Stacked bars: the running top of each bucket, so series stack in order.
    let mut stacks: Vec<Vec<(f64, f64, f64)>> = Vec::new();
    let mut y_max = 0.0_f64;
    if let SeriesStyle::StackedBars { .. } = panel.style {
        let mut tops: BTreeMap<u64, f64> = BTreeMap::new();
        for pts in &series {
            let mut bars = Vec::new();
            for &(x, y) in pts {
                let top = tops.entry(x.to_bits()).or_insert(0.0);
                let y = y.max(0.0);
                bars.push((x, *top, (*top + y).min(LIMIT)));
                *top = (*top + y).min(LIMIT);
                y_max = y_max.max(*top);
            }
            stacks.push(bars);
        }
    } else {
        y_max = series.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    }
    let y_min = series.iter().flatten().map(|p| p.1).fold(0.0, f64::min);
    let y_hi = if y_max > y_min {
        y_max + (y_max - y_min) * 0.1
    } else {
        1.0
    };

    let mut chart = ChartBuilder::on(&chart_area)
        .margin_left(SIDE_MARGIN)
        .margin_right(SIDE_MARGIN)
        .x_label_area_size(PANEL_XAXIS_H)
        .y_label_area_size(Y_LABEL_W)
        .build_cartesian_2d(t0..t1, y_min..y_hi)?;
    // The time axis's ticks are drawn by hand at round UTC times (plotters cannot format custom key
    // points on an f64 axis, and its own f64 ticks fall on odd seconds).
    value_mesh(&mut chart, &panel.y_desc)
        .x_desc(if utc { "time (UTC)" } else { "seconds" })
        .draw()?;
    let (ox, oy) = chart_area.get_base_pixel();
    for t in time_ticks((t0, t1), utc) {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(t, y_min), (t, y_hi)],
            RGBColor(0xe4, 0xe4, 0xe4),
        )))?;
        let (x, y) = chart.backend_coord(&(t, y_min));
        chart_area.draw(&PathElement::new(vec![(x - ox, y - oy), (x - ox, y - oy + 5)], BLACK))?;
        chart_area.draw(&Text::new(
            time_label(t, utc),
            (x - ox, y - oy + 8),
            (FONT, 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }

    match panel.style {
        SeriesStyle::StackedBars { width } => {
            let w = if width.is_finite() && width > 0.0 {
                width
            } else {
                (t1 - t0) / 100.0
            };
            for (i, bars) in stacks.iter().enumerate() {
                chart.draw_series(
                    bars.iter().filter(|b| b.2 > b.1).map(|&(x, lo, hi)| {
                        Rectangle::new([(x, lo), ((x + w).min(t1), hi)], series_colour(i).filled())
                    }),
                )?;
            }
        }
        SeriesStyle::Lines => {
            for (i, pts) in series.iter().enumerate() {
                let colour = series_colour(i);
                chart.draw_series(std::iter::once(PathElement::new(pts.clone(), colour.stroke_width(2))))?;
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 2, colour.filled())))?;
            }
        }
    }
    draw_legend(&legend_area, &series_legend(panel))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bars(name: &str, killed: f64, idle: f64, scale_ins: u64) -> StrategyBars {
        StrategyBars {
            name: name.to_string(),
            jobs_killed_by_stop_per_10k_scale_ins: killed,
            idle_wait_s_per_scale_in: idle,
            scale_ins,
        }
    }

    fn span(lane: &'static str, from_s: f64, to_s: f64, state: &str) -> Span {
        Span {
            lane,
            from_s,
            to_s,
            state: state.to_string(),
        }
    }

    fn mark(lane: &'static str, at_s: f64, label: &str) -> Mark {
        Mark {
            lane,
            at_s,
            label: label.to_string(),
        }
    }

    /// A timeline of one scale-in under runner-lifecycle: a job is running when the hook fires, the
    /// agent waits for it, then stops the listener and completes the hook.
    fn realistic_timeline(strategy: &str, instance: u32) -> Timeline {
        Timeline {
            strategy: strategy.to_string(),
            instance,
            spans: vec![
                span("asg", 100.0, 160.0, "Pending"),
                span("asg", 160.0, 1210.0, "InService"),
                span("asg", 1210.0, 1475.0, "Terminating:Wait"),
                span("asg", 1475.0, 1540.0, "Terminating:Proceed"),
                span("listener", 160.0, 172.0, "Down"),
                span("listener", 172.0, 181.0, "Starting"),
                span("listener", 181.0, 240.0, "Polling"),
                span("listener", 240.0, 610.0, "Busy"),
                span("listener", 610.0, 905.0, "Polling"),
                span("listener", 905.0, 1460.0, "Busy"),
                span("listener", 1460.0, 1468.0, "Exiting"),
                span("listener", 1468.0, 1540.0, "Down"),
                span("worker", 240.0, 610.0, "job 1"),
                span("worker", 905.0, 1460.0, "job 2"),
            ],
            marks: vec![
                mark("agent", 172.0, "start listener"),
                mark("agent", 181.0, "SetInstanceProtection(true)"),
                mark("agent", 1210.0, "hook: Terminating:Wait seen"),
                mark("agent", 1215.0, "RecordLifecycleActionHeartbeat"),
                mark("agent", 1460.0, "job done -> SIGINT listener"),
                mark("agent", 1468.0, "CompleteLifecycleAction"),
                mark("asg", 1210.0, "scale-in"),
            ],
        }
    }

    fn realistic_input() -> PlotInput {
        PlotInput {
            title: "Fleet simulation, seed 42: 10,000 scale-ins per strategy".to_string(),
            strategies: vec![
                bars("runner-lifecycle", 0.0, 31.4, 10_000),
                bars("runner-lifecycle-once", 0.0, 28.9, 10_000),
                bars("source-pr", 412.0, 3.2, 10_000),
                bars("naive", 2_387.5, 0.4, 10_000),
            ],
            timelines: vec![
                realistic_timeline("runner-lifecycle", 7),
                realistic_timeline("source-pr", 7),
            ],
        }
    }

    /// Checks that the document is one `<svg>` element and that every `<` opens a tag and every `&`
    /// starts an entity: enough to keep an XML parser happy about text content.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"), "starts with {:?}", &svg[..20]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for (i, _) in svg.match_indices('<') {
            let next = svg[i + 1..].chars().next().unwrap();
            assert!(
                next.is_ascii_alphabetic() || next == '/' || next == '?' || next == '!',
                "raw '<' at byte {i}: {:?}",
                &svg[i..(i + 20).min(svg.len())]
            );
        }
        for (i, _) in svg.match_indices('&') {
            let rest = &svg[i..];
            assert!(
                ["&lt;", "&gt;", "&amp;", "&quot;", "&apos;", "&#"]
                    .iter()
                    .any(|e| rest.starts_with(e)),
                "raw '&' at byte {i}: {:?}",
                &rest[..20.min(rest.len())]
            );
        }
        assert_eq!(
            svg.matches("<svg").count(),
            svg.matches("</svg>").count(),
            "one document"
        );
        assert!(svg.contains("<text"), "text is rendered as SVG <text>");
    }

    #[test]
    fn plot_renders_strategy_names_and_value_labels() {
        let svg = render_svg(&realistic_input()).unwrap();
        assert_well_formed(&svg);
        for name in ["runner-lifecycle", "runner-lifecycle-once", "source-pr", "naive"] {
            assert!(svg.contains(name), "{name} missing");
        }
        // Value labels of both charts.
        assert!(svg.contains(">\n2388\n<") || svg.contains(">2388<"), "{svg}");
        assert!(svg.contains("31.4 s"));
        assert!(svg.contains("0.40 s"));
        // Timeline content: lanes, states in the legend, marks, the panel caption.
        for s in [
            "listener",
            "Terminating:Wait",
            "job N",
            "CompleteLifecycleAction",
            "instance 7",
        ] {
            assert!(svg.contains(s), "{s} missing");
        }
        // Long mark labels are cut.
        assert!(svg.contains("RecordLifecycleActionHe…"));
        assert!(!svg.contains("RecordLifecycleActionHeartbeat"));
    }

    #[test]
    fn plot_is_deterministic() {
        let input = realistic_input();
        assert_eq!(render_svg(&input).unwrap(), render_svg(&input).unwrap());
    }

    #[test]
    fn plot_escapes_markup_in_labels() {
        let mut input = realistic_input();
        input.title = "title <&> \"quoted\"".to_string();
        input.strategies[0].name = "a<&>b".to_string();
        input.timelines[0].strategy = "s<&>t".to_string();
        input.timelines[0].spans[0].state = "st<&>ate".to_string();
        input.timelines[0].marks[0].label = "m<&>".to_string();
        let svg = render_svg(&input).unwrap();
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<&>").count(), 0);
        // Escaped once, not twice.
        assert!(svg.contains("a&lt;&amp;&gt;b"));
        assert!(!svg.contains("&amp;lt;"));
    }

    #[test]
    fn plot_degenerate_inputs_do_not_panic() {
        let t = |spans: Vec<Span>, marks: Vec<Mark>| Timeline {
            strategy: "x".to_string(),
            instance: 0,
            spans,
            marks,
        };
        let cases: Vec<PlotInput> = vec![
            // Nothing at all.
            PlotInput {
                title: String::new(),
                strategies: vec![],
                timelines: vec![],
            },
            // All zeros, and a strategy with no scale-ins.
            PlotInput {
                title: "zeros".to_string(),
                strategies: vec![bars("a", 0.0, 0.0, 0), bars("b", 0.0, 0.0, 0)],
                timelines: vec![t(vec![], vec![])],
            },
            // Non-finite, negative, huge and tiny values.
            PlotInput {
                title: "odd values".to_string(),
                strategies: vec![
                    bars("nan", f64::NAN, f64::INFINITY, 1),
                    bars("neg", -5.0, f64::NEG_INFINITY, 1),
                    bars("huge", f64::MAX, 1e-300, u64::MAX),
                    bars("", f64::MIN, -f64::MAX, 3),
                ],
                timelines: vec![
                    // to < from, non-finite ends, a zero-length window.
                    t(
                        vec![
                            span("asg", 10.0, 5.0, "InService"),
                            span("asg", f64::NAN, 5.0, "InService"),
                            span("asg", 3.0, f64::INFINITY, "InService"),
                            span("asg", 7.0, 7.0, "Pending"),
                        ],
                        vec![mark("agent", 7.0, ""), mark("agent", f64::NAN, "nan")],
                    ),
                    // Only invalid spans: an empty panel that says so.
                    t(vec![span("asg", 1.0, 0.0, "X")], vec![]),
                    // Marks only, all at one instant, many of them.
                    t(
                        vec![],
                        (0..50)
                            .map(|i| mark(if i % 2 == 0 { "a" } else { "b" }, 0.0, "same"))
                            .collect(),
                    ),
                    // A huge window and one far out.
                    t(
                        vec![
                            span("asg", -1e300, 1e300, "InService"),
                            span("w", 0.0, f64::MAX, "job 1"),
                        ],
                        vec![mark("w", -f64::MAX, "far")],
                    ),
                ],
            },
        ];
        for input in &cases {
            let svg = render_svg(input).unwrap();
            assert_well_formed(&svg);
        }
        let svg = render_svg(&cases[2]).unwrap();
        assert!(svg.contains("0 (NaN shown as 0)"), "NaN is labelled");
        assert!(svg.contains("0 (inf shown as 0)"), "inf is labelled");
        assert!(svg.contains("0 (-inf shown as 0)"), "-inf is labelled");
        assert!(svg.contains("3 span(s) with to &lt; from"), "skips are said");
        assert!(svg.contains("no spans or marks"), "the empty panel says so");
        let svg = render_svg(&cases[0]).unwrap();
        assert!(svg.contains("no strategies to show"));
    }

    /// Writes a realistic plot to `target/plot-example.svg`, and one of odd input to
    /// `target/plot-degenerate.svg`, to look at (not checked in).
    #[test]
    fn plot_example_file() {
        let svg = render_svg(&realistic_input()).unwrap();
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plot-example.svg"), svg).unwrap();
        let mut odd = realistic_input();
        odd.title = "degenerate: <&> NaN, inf, bad spans, empty timeline".to_string();
        odd.strategies[0].jobs_killed_by_stop_per_10k_scale_ins = f64::NAN;
        odd.strategies[1].idle_wait_s_per_scale_in = f64::INFINITY;
        odd.strategies[2].jobs_killed_by_stop_per_10k_scale_ins = -50.0;
        odd.timelines[0].spans[1].to_s = 0.0;
        odd.timelines[1].spans.clear();
        odd.timelines.push(Timeline {
            strategy: "naive".to_string(),
            instance: 3,
            spans: vec![span("asg", 5.0, 5.0, "Pending")],
            marks: vec![mark("agent", 5.0, "a <&> b")],
        });
        odd.timelines.push(Timeline {
            strategy: "empty".to_string(),
            instance: 4,
            spans: vec![],
            marks: vec![],
        });
        let svg = render_svg(&odd).unwrap();
        std::fs::write(dir.join("plot-degenerate.svg"), svg).unwrap();
    }

    #[test]
    fn long_names_wrap_at_hyphens_into_their_slot() {
        assert_eq!(
            wrap_label("runner-lifecycle-persistent", 130, 12),
            ["runner-lifecycle-", "persistent"]
        );
        assert_eq!(wrap_label("naive", 100, 12), ["naive"]);
        assert_eq!(wrap_label("", 100, 12), [""]);
        for l in wrap_label("runner-lifecycle-persistent", 60, 12) {
            assert!(text_width(&l, 12) <= 60 || !l[..l.len() - 1].contains('-'), "{l}");
        }
    }

    #[test]
    fn a_zoomed_timeline_keeps_the_window_only() {
        let t = realistic_timeline("runner-lifecycle", 7);
        let z = t.zoomed(100.0, 20.0);
        assert!(z.spans.iter().all(|s| s.from_s >= 80.0 && s.to_s <= 120.0));
        assert!(z.marks.iter().all(|m| (80.0..=120.0).contains(&m.at_s)));
        assert!(z.strategy.contains("zoom 80–120 s"));
        assert_eq!(z.instance, 7);
    }

    /// Six strategies (every label must stay legible), a timeline zoomed around an event, a
    /// replayed trace in the title: written as SVG and, when librsvg's `rsvg-convert` is installed,
    /// as PNG to look at (`target/plot-six.png`).
    #[test]
    fn six_strategies_and_a_zoom_render_to_png() {
        let names = [
            "runner-lifecycle",
            "runner-lifecycle-persistent",
            "runner-lifecycle-once",
            "runner-lifecycle-demand",
            "source-pr",
            "naive",
        ];
        let input = PlotInput {
            title: "runner-lifecycle simulate: seed 42, 100 instances, 7.0 days — replaying trace week.csv".into(),
            strategies: names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    bars(
                        n,
                        [0.0, 0.4, 0.0, 1.2, 412.0, 2387.5][i],
                        [31.4, 2.1, 28.9, 30.2, 3.2, 0.4][i],
                        10_000 + i as u64,
                    )
                })
                .collect(),
            timelines: vec![realistic_timeline("runner-lifecycle", 7).zoomed(1210.0, 300.0)],
        };
        let svg = render_svg(&input).unwrap();
        assert_well_formed(&svg);
        for n in names {
            for part in wrap_label(n, 0, 12) {
                assert!(svg.contains(part.as_str()), "{part}");
            }
        }
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        std::fs::create_dir_all(&dir).unwrap();
        let svg_path = dir.join("plot-six.svg");
        std::fs::write(&svg_path, svg).unwrap();
        let png = dir.join("plot-six.png");
        // librsvg's rsvg-convert when installed (apt: librsvg2-bin); the SVG is checked either way.
        if let Ok(status) = std::process::Command::new("rsvg-convert")
            .arg("-o")
            .arg(&png)
            .arg(&svg_path)
            .status()
        {
            assert!(status.success(), "rsvg-convert failed");
            assert!(std::fs::metadata(&png).unwrap().len() > 1000);
        }
    }

    fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.to_string(),
            points,
        }
    }

    #[test]
    fn series_plots_label_utc_ticks_and_survive_odd_input() {
        // 2026-11-02T00:00:00Z and a day later.
        let (from, to) = (1_793_577_600.0, 1_793_664_000.0);
        let input = SeriesPlot {
            title: "a day".into(),
            from,
            to,
            utc: true,
            panels: vec![
                SeriesPanel {
                    caption: "losses".into(),
                    y_desc: "jobs".into(),
                    style: SeriesStyle::StackedBars { width: 3600.0 },
                    series: vec![
                        series("a (2)", vec![(from, 1.0), (from + 3600.0, 1.0)]),
                        series("b <&> (1)", vec![(from, 1.0), (f64::NAN, 1.0), (to + 10.0, 1.0)]),
                    ],
                },
                SeriesPanel {
                    caption: "waits".into(),
                    y_desc: "s".into(),
                    style: SeriesStyle::Lines,
                    series: vec![series("p50", vec![])],
                },
            ],
        };
        let svg = render_series_svg(&input).unwrap();
        assert!(svg.contains("11-02") && svg.contains("11-02 06:00"), "UTC tick labels");
        assert!(svg.contains("b &lt;&amp;&gt; (1)"));
        assert!(svg.contains("1 non-finite point(s)") && svg.contains("1 point(s) outside the window"));
        assert!(svg.contains("waits — none in this window"));
        for (from, to, utc) in [(5.0, 5.0, false), (f64::NAN, 1.0, true), (f64::MAX, -f64::MAX, true)] {
            let odd = SeriesPlot {
                from,
                to,
                utc,
                ..input.clone()
            };
            assert!(render_series_svg(&odd).unwrap().ends_with("</svg>\n"));
        }
        let empty = SeriesPlot {
            panels: vec![],
            ..input
        };
        render_series_svg(&empty).unwrap();
    }
}
