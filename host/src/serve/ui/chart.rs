//! A chart of the last hour as inline SVG, drawn by the server: no script,
//! no library, nothing fetched, so a page works offline. Time runs left to
//! right over a fixed hour (the newest sample at the right edge); the
//! scale runs from 0 to a round number over the highest sample; a gap in
//! the line is a time nothing was known (a stopped pipeline's lag).

use std::collections::VecDeque;
use std::fmt::Write as _;

use super::html::esc;
use super::samples::POINTS;

const WIDTH: f32 = 420.0;
const HEIGHT: f32 = 110.0;
const LEFT: f32 = 46.0;
const RIGHT: f32 = 8.0;
const TOP: f32 = 8.0;
const BOTTOM: f32 = 20.0;

/// 1, 2 or 5 times a power of ten, at least `max`.
fn round_up(max: f32) -> f32 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let power = 10f32.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * power)
}

fn label(v: f32) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

/// A `<figure>`: `caption` (escaped), and the samples' line.
pub fn figure(caption: &str, samples: Option<&VecDeque<f32>>, color: &str) -> String {
    let empty = VecDeque::new();
    let samples = samples.unwrap_or(&empty);
    let max = round_up(samples.iter().copied().filter(|v| v.is_finite()).fold(0.0, f32::max));
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |i: usize| LEFT + w * (POINTS - samples.len() + i) as f32 / (POINTS - 1) as f32;
    let y = |v: f32| TOP + h * (1.0 - v / max);
    let mut lines = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, lines: &mut String| {
        if !run.is_empty() {
            let _ = write!(
                lines,
                "<polyline fill=none stroke=\"{color}\" stroke-width=1.5 points=\"{run}\"/>"
            );
            run.clear();
        }
    };
    for (i, v) in samples.iter().enumerate() {
        if v.is_finite() {
            let _ = write!(run, "{:.1},{:.1} ", x(i), y(*v));
        } else {
            flush(&mut run, &mut lines);
        }
    }
    flush(&mut run, &mut lines);
    let now = match samples.back() {
        Some(v) if v.is_finite() => format!(" now {}", label((v * 10.0).round() / 10.0)),
        _ => String::new(),
    };
    let bottom = TOP + h;
    format!(
        "<figure><figcaption>{}{now}</figcaption>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=img aria-label=\"{}\" font-size=\"10\" fill=\"#555\">\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{w}\" height=\"{h}\" fill=\"#fff\" stroke=\"#ccc\"/>\
         <line x1=\"{LEFT}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#eee\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=end>{}</text>\
         <text x=\"{}\" y=\"{bottom}\" text-anchor=end>0</text>\
         <text x=\"{LEFT}\" y=\"{}\">-60 min</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=middle>-30 min</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=end>now</text>{lines}</svg></figure>",
        esc(caption),
        esc(caption),
        LEFT + w,
        TOP + h / 2.0,
        TOP + h / 2.0,
        LEFT - 4.0,
        TOP + 8.0,
        label(max),
        LEFT - 4.0,
        HEIGHT - 4.0,
        LEFT + w / 2.0,
        HEIGHT - 4.0,
        LEFT + w,
        HEIGHT - 4.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_round() {
        assert_eq!(round_up(0.0), 1.0);
        assert_eq!(round_up(0.3), 0.5);
        assert_eq!(round_up(7.0), 10.0);
        assert_eq!(round_up(101.0), 200.0);
        assert_eq!(round_up(4_000.0), 5_000.0);
        assert_eq!(label(5_000.0), "5k");
        assert_eq!(label(2_000_000.0), "2M");
    }

    #[test]
    fn the_newest_sample_is_at_the_right_edge_and_a_gap_splits_the_line() {
        let samples: VecDeque<f32> = [10.0, f32::NAN, 20.0, 40.0].into_iter().collect();
        let svg = figure("records/s <x>", Some(&samples), "#06c");
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        // 40 of a scale of 50 at the right edge: x 412, y 8 + 82 * (1 - 0.8).
        assert!(svg.contains("412.0,24.4 \"/>"), "{svg}");
        assert!(svg.contains("records/s &lt;x&gt; now 40"), "{svg}");
        assert!(svg.contains(">50</text>"), "the scale tops at 50: {svg}");
        let empty = figure("lag", None, "#c60");
        assert!(!empty.contains("<polyline") && empty.contains("<svg"), "{empty}");
    }
}
