//! The SVG of a report, hand-written (polylines, axes, a legend): the latency percentile spectrum
//! of every operation of every phase, on a log-scaled percentile axis (0, 90, 99, 99.9, ...,
//! max) and a log-scaled latency axis; and, for a phase with a fault or a step profile, its p99
//! per second with a mark at the fault or at each step's start.

use std::fmt::Write as _;

use crate::report::{BenchReport, PhaseReport, SpectrumPoint};

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 420.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 200.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;
/// Series colours, one per (phase, operation), in order.
const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// The percentile axis ends at 99.999% (x = 5 decades); the max sits a little further right.
const NINES: f64 = 5.0;
const MAX_X: f64 = 5.5;

/// One line of a chart: its label, colour and (x, latency µs) points.
struct Series {
    label: String,
    colour: &'static str,
    points: Vec<(f64, u64)>,
}

/// The report's charts as one SVG document.
pub fn svg(report: &BenchReport) -> String {
    let faulted: Vec<&PhaseReport> = report
        .phases
        .iter()
        .filter(|p| p.fault.is_some() || !p.steps.is_empty())
        .collect();
    let height = PANEL_HEIGHT * (1 + faulted.len()) as f64;
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );

    let mut series = Vec::new();
    for phase in &report.phases {
        for (op, r) in [("read", &phase.read), ("update", &phase.update)] {
            if r.spectrum.is_empty() {
                continue;
            }
            series.push(Series {
                label: format!("{} {op}", phase.name),
                colour: COLOURS[series.len() % COLOURS.len()],
                points: r.spectrum.iter().map(spectrum_x).collect(),
            });
        }
    }
    let title = format!(
        "{}: latency by percentile{}",
        report.target.kind,
        report
            .workload
            .as_deref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default()
    );
    let ticks: Vec<(f64, String)> = [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
        (MAX_X, "max"),
    ]
    .into_iter()
    .map(|(x, l)| (x, l.to_owned()))
    .collect();
    panel(
        &mut out,
        0.0,
        &title,
        "percentile",
        (0.0, MAX_X),
        &ticks,
        &series,
        &[],
    );

    for (i, phase) in faulted.iter().enumerate() {
        let y0 = PANEL_HEIGHT * (i + 1) as f64;
        let mut lines = Vec::new();
        for (op, pick) in [("read", 0usize), ("update", 1)] {
            let points: Vec<(f64, u64)> = phase
                .timeline
                .iter()
                .map(|s| {
                    (
                        f64::from(s.second) + 0.5,
                        if pick == 0 {
                            s.read.p99_us
                        } else {
                            s.update.p99_us
                        },
                    )
                })
                .filter(|(_, us)| *us > 0)
                .collect();
            if !points.is_empty() {
                lines.push(Series {
                    label: format!("{} {op} p99", phase.name),
                    colour: COLOURS[pick],
                    points,
                });
            }
        }
        if !phase.steps.is_empty() {
            let points: Vec<(f64, u64)> = phase
                .timeline
                .iter()
                .map(|s| (f64::from(s.second) + 0.5, s.p99_us))
                .filter(|(_, us)| *us > 0)
                .collect();
            if !points.is_empty() {
                lines.push(Series {
                    label: format!("{} all p99", phase.name),
                    colour: COLOURS[2],
                    points,
                });
            }
        }
        let end = (phase.timeline.len() as f64).max(phase.seconds).max(1.0);
        let step = nice_step(end);
        let ticks: Vec<(f64, String)> = (0..)
            .map(|k| k as f64 * step)
            .take_while(|x| *x <= end)
            .map(|x| (x, format!("{x:.0} s")))
            .collect();
        let mut marks: Vec<(f64, String)> = phase
            .fault
            .iter()
            .flat_map(|f| {
                let heal = f.heal.iter().map(|h| (h.at_s, h.action.clone()));
                std::iter::once((f.at_s, f.action.clone())).chain(heal)
            })
            .collect();
        marks.extend(
            phase
                .steps
                .iter()
                .map(|s| (s.start_s, format!("{} ({:.0}/s)", s.label, s.rate))),
        );
        let title = format!("phase {}: p99 per second", phase.name);
        panel(
            &mut out,
            y0,
            &title,
            "seconds after warm-up",
            (0.0, end),
            &ticks,
            &lines,
            &marks,
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One chart at vertical offset `y0`: axes, grid, ticks, series, legend, an optional mark.
#[allow(clippy::too_many_arguments)]
fn panel(
    out: &mut String,
    y0: f64,
    title: &str,
    x_label: &str,
    (x_min, x_max): (f64, f64),
    x_ticks: &[(f64, String)],
    series: &[Series],
    marks: &[(f64, String)],
) {
    let (left, right) = (MARGIN_LEFT, WIDTH - MARGIN_RIGHT);
    let (top, bottom) = (y0 + MARGIN_TOP, y0 + PANEL_HEIGHT - MARGIN_BOTTOM);
    let all = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let lowest = all.clone().min().unwrap_or(1).max(1);
    let highest = all.max().unwrap_or(10).max(lowest + 1);
    let (d_min, d_max) = (
        (lowest as f64).log10().floor(),
        (highest as f64)
            .log10()
            .ceil()
            .max((lowest as f64).log10().floor() + 1.0),
    );
    let x = |v: f64| left + (v - x_min) / (x_max - x_min).max(1e-9) * (right - left);
    let y =
        |us: u64| bottom - ((us.max(1) as f64).log10() - d_min) / (d_max - d_min) * (bottom - top);

    let _ = writeln!(out, r#"<g>"#);
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        y0 + 24.0,
        escape(title)
    );
    // Latency axis: one gridline per decade, labelled.
    let mut decade = d_min;
    while decade <= d_max {
        let yy = bottom - (decade - d_min) / (d_max - d_min) * (bottom - top);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{right}" y2="{yy:.1}" stroke="#dddddd"/>"##
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            yy + 4.0,
            escape(&micros_label(10f64.powf(decade)))
        );
        decade += 1.0;
    }
    for (v, label) in x_ticks {
        let xx = x(*v);
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{bottom}" stroke="#eeeeee"/>"##
        );
        let _ = writeln!(
            out,
            r#"<text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        out,
        r#"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>"#
    );
    let _ = writeln!(
        out,
        r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        bottom + 36.0,
        escape(x_label)
    );
    let _ = writeln!(
        out,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency</text>"#,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0
    );
    for (at, label) in marks {
        let xx = x(*at);
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{bottom}" stroke="#d62728" stroke-dasharray="6 4"/>"##
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{}" fill="#d62728">{}</text>"##,
            xx + 4.0,
            top + 12.0,
            escape(label)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(px, us)| format!("{:.1},{:.1}", x(*px), y(*us)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
            s.colour,
            points.join(" ")
        );
        let ly = top + 8.0 + 18.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{ly:.1}" x2="{}" y2="{ly:.1}" stroke="{}" stroke-width="3"/>"#,
            right + 16.0,
            right + 40.0,
            s.colour
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}">{}</text>"#,
            right + 46.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    let _ = writeln!(out, "</g>");
}

/// Where a spectrum point sits on the percentile axis: decades of `1 / (1 - q)`; the max at the end.
fn spectrum_x(p: &SpectrumPoint) -> (f64, u64) {
    let x = if p.percentile >= 100.0 {
        MAX_X
    } else {
        (-(1.0 - p.percentile / 100.0).log10()).clamp(0.0, NINES)
    };
    (x, p.us)
}

/// A round tick step giving at most about ten ticks over `0..end`.
fn nice_step(end: f64) -> f64 {
    [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|s| end / s <= 10.0)
        .unwrap_or(1800.0)
}

fn micros_label(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{} ms", us / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
