//! Small SVG charts written directly (no font or graphics libraries to build): bar charts,
//! heatmaps, line charts, scatter plots and histograms, sized 640 x 420. The MLflow UI shows
//! SVG artifacts as images.

const W: f64 = 640.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 70.0;
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn open(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
        W / 2.0,
        esc(title)
    )
}

/// An axis: its bounds and the ticks between them.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    /// Decimal places that print every tick exactly.
    decimals: usize,
}

/// An axis over [lo, hi] with 3 to 7 ticks at a round step (1, 2 or 5 times a power of ten;
/// whole numbers when `integer`), its bounds on ticks that enclose the data: data that is never
/// negative gets no negative axis.
fn nice_axis(lo: f64, hi: f64, integer: bool) -> Axis {
    let (lo, hi) = match (lo.is_finite(), hi.is_finite()) {
        (true, true) if hi > lo => (lo, hi),
        (true, true) if lo == 0.0 => (0.0, 1.0),
        (true, true) => (lo - lo.abs() * 0.1, hi + hi.abs() * 0.1),
        _ => (0.0, 1.0),
    };
    let raw = (hi - lo) / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw * 0.999)
        .unwrap_or(10.0 * magnitude);
    if integer {
        step = step.max(1.0).round();
    }
    let first = (lo / step + 1e-9).floor();
    let last = (hi / step - 1e-9).ceil();
    let ticks: Vec<f64> = (0..=((last - first) as i64))
        .map(|i| (first + i as f64) * step)
        .collect();
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    Axis {
        lo: first * step,
        hi: last * step,
        ticks,
        decimals,
    }
}

fn axes(svg: &mut String, y: &Axis, ylabel: &str) {
    let (x0, y0, y1) = (LEFT, H - BOTTOM, TOP);
    svg.push_str(&format!("<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"black\"/>\n<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"black\"/>\n", W - RIGHT));
    for v in &y.ticks {
        let yy = y_of(*v, y.lo, y.hi);
        svg.push_str(&format!("<line x1=\"{}\" y1=\"{yy:.1}\" x2=\"{x0}\" y2=\"{yy:.1}\" stroke=\"black\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.*}</text>\n", x0 - 4.0, x0 - 6.0, yy + 4.0, y.decimals, v));
    }
    svg.push_str(&format!("<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>\n", (y0 + y1) / 2.0, (y0 + y1) / 2.0, esc(ylabel)));
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e6 {
        return format!("{v:.0}");
    }
    if v.abs() >= 1000.0 || (v != 0.0 && v.abs() < 0.01) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

/// Tick labels under a numeric x axis, and its title.
fn x_axis(svg: &mut String, x: &Axis, xlabel: &str) {
    for v in &x.ticks {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.*}</text>\n",
            x_of(*v, x),
            H - BOTTOM + 16.0,
            x.decimals,
            v
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        (LEFT + W - RIGHT) / 2.0,
        H - 30.0,
        esc(xlabel)
    ));
}

fn x_of(v: f64, x: &Axis) -> f64 {
    LEFT + (v - x.lo) / (x.hi - x.lo) * (W - LEFT - RIGHT)
}

fn y_of(v: f64, ymin: f64, ymax: f64) -> f64 {
    let (y0, y1) = (H - BOTTOM, TOP);
    y0 - (v - ymin) / (ymax - ymin) * (y0 - y1)
}

/// Bars with optional error bars (± err).
pub fn bar_chart(
    title: &str,
    ylabel: &str,
    labels: &[String],
    values: &[f64],
    errors: Option<&[f64]>,
) -> String {
    let mut svg = open(title);
    let hi = values
        .iter()
        .zip(errors.unwrap_or(&vec![0.0; values.len()]))
        .map(|(v, e)| v + e)
        .fold(0.0, f64::max);
    let lo = values.iter().copied().fold(0.0, f64::min);
    let y = nice_axis(lo, hi, false);
    let (ymin, ymax) = (y.lo, y.hi);
    axes(&mut svg, &y, ylabel);
    let n = values.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / n;
    for (i, (l, v)) in labels.iter().zip(values).enumerate() {
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let (yv, y0) = (y_of(*v, ymin, ymax), y_of(0.0, ymin, ymax));
        svg.push_str(&format!("<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}</title></rect>\n", yv.min(y0), slot * 0.7, (y0 - yv).abs(), PALETTE[0], esc(l), fmt(*v)));
        if let Some(e) = errors.map(|e| e[i]) {
            let cx = x + slot * 0.35;
            svg.push_str(&format!("<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n", y_of(v + e, ymin, ymax), y_of(v - e, ymin, ymax)));
        }
        let lx = x + slot * 0.35;
        let ly = H - BOTTOM + 12.0;
        svg.push_str(&format!("<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" transform=\"rotate(-35 {lx:.1} {ly:.1})\">{}</text>\n", esc(l)));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Grouped bars: one group per label, one bar per named series, with a legend.
pub fn grouped_bars(
    title: &str,
    ylabel: &str,
    labels: &[String],
    series: &[(String, Vec<f64>)],
) -> String {
    let mut svg = open(title);
    let hi = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0, f64::max);
    let y = nice_axis(0.0, hi, false);
    let ymax = y.hi;
    axes(&mut svg, &y, ylabel);
    let slot = (W - LEFT - RIGHT) / labels.len().max(1) as f64;
    let bw = slot * 0.8 / series.len().max(1) as f64;
    for (i, l) in labels.iter().enumerate() {
        for (k, (name, values)) in series.iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0.0);
            let x = LEFT + slot * i as f64 + slot * 0.1 + bw * k as f64;
            let (yv, y0) = (y_of(v, 0.0, ymax), y_of(0.0, 0.0, ymax));
            svg.push_str(&format!("<rect x=\"{x:.1}\" y=\"{yv:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {}</title></rect>\n", y0 - yv, PALETTE[k % PALETTE.len()], esc(l), esc(name), fmt(v)));
        }
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            LEFT + slot * (i as f64 + 0.5),
            H - BOTTOM + 16.0,
            esc(l)
        ));
    }
    for (k, (name, _)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        svg.push_str(&format!("<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>\n", W - RIGHT - 110.0, TOP + 4.0 + 14.0 * k as f64, W - RIGHT - 96.0, TOP + 13.0 + 14.0 * k as f64, esc(name)));
    }
    svg.push_str("</svg>\n");
    svg
}

/// A heatmap with the count (or value) in every cell.
pub fn heatmap(
    title: &str,
    rows: &[String],
    cols: &[String],
    m: &[Vec<f64>],
    row_axis: &str,
    col_axis: &str,
) -> String {
    let mut svg = open(title);
    let (nr, nc) = (rows.len().max(1) as f64, cols.len().max(1) as f64);
    let (x0, y0) = (LEFT + 40.0, TOP + 10.0);
    let cw = (W - x0 - RIGHT) / nc;
    let ch = (H - y0 - BOTTOM) / nr;
    let (lo, hi) = m
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    for (i, row) in m.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let t = (v - lo) / span;
            let (r, g, b) = (255.0 - t * 200.0, 255.0 - t * 140.0, 255.0 - t * 60.0);
            let (x, y) = (x0 + j as f64 * cw, y0 + i as f64 * ch);
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cw:.1}\" height=\"{ch:.1}\" fill=\"rgb({r:.0},{g:.0},{b:.0})\" stroke=\"white\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{}\">{}</text>\n",
                x + cw / 2.0,
                y + ch / 2.0 + 4.0,
                if t > 0.6 { "white" } else { "black" },
                if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.2}") }
            ));
        }
    }
    for (i, r) in rows.iter().enumerate() {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            x0 - 4.0,
            y0 + (i as f64 + 0.5) * ch + 4.0,
            esc(r)
        ));
    }
    for (j, c) in cols.iter().enumerate() {
        let (lx, ly) = (x0 + (j as f64 + 0.5) * cw, H - BOTTOM + 14.0);
        svg.push_str(&format!("<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" transform=\"rotate(-35 {lx:.1} {ly:.1})\">{}</text>\n", esc(c)));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        (x0 + W - RIGHT) / 2.0,
        H - 8.0,
        esc(col_axis)
    ));
    svg.push_str(&format!("<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{}</text>\n", (y0 + H - BOTTOM) / 2.0, (y0 + H - BOTTOM) / 2.0, esc(row_axis)));
    svg.push_str("</svg>\n");
    svg
}

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stroke {
    Solid,
    /// Thin and translucent: one of many (a fold), behind the solid lines.
    Faint,
    Dashed,
}

/// One line of a line chart: its legend name (`None`: no legend entry), colour index, stroke and
/// (x, y) points.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: Option<String>,
    pub color: usize,
    pub stroke: Stroke,
    pub points: Vec<(f64, f64)>,
}

/// Lines, one per named series of (x, y) points.
pub fn line_chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let lines: Vec<Line> = series
        .iter()
        .enumerate()
        .map(|(k, (name, points))| Line {
            name: Some(name.clone()),
            color: k,
            stroke: Stroke::Solid,
            points: points.clone(),
        })
        .collect();
    lines_chart(title, xlabel, ylabel, &lines, false)
}

fn stroke_style(stroke: Stroke) -> &'static str {
    match stroke {
        Stroke::Solid => "stroke-width=\"2\"",
        Stroke::Faint => "stroke-width=\"1\" stroke-opacity=\"0.3\"",
        Stroke::Dashed => "stroke-width=\"1.5\" stroke-dasharray=\"5 3\"",
    }
}

/// Lines with their own strokes; `integer_x` puts x ticks on whole numbers (rounds, epochs).
pub fn lines_chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    lines: &[Line],
    integer_x: bool,
) -> String {
    let mut svg = open(title);
    let pts = lines
        .iter()
        .flat_map(|l| l.points.iter().filter(|(_, y)| y.is_finite()));
    let (xmin, xmax, ylo, yhi) = pts.fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), (x, y)| (a.min(*x), b.max(*x), c.min(*y), d.max(*y)),
    );
    let y = nice_axis(ylo, yhi, false);
    let x = nice_axis(xmin, xmax, integer_x);
    axes(&mut svg, &y, ylabel);
    // Faint lines first, so the solid ones are drawn over them.
    let mut order: Vec<&Line> = lines.iter().collect();
    order.sort_by_key(|l| l.stroke != Stroke::Faint);
    for line in order {
        let path: Vec<String> = line
            .points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(px, py)| format!("{:.1},{:.1}", x_of(*px, &x), y_of(*py, y.lo, y.hi)))
            .collect();
        let color = PALETTE[line.color % PALETTE.len()];
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" {} points=\"{}\"/>\n",
            stroke_style(line.stroke),
            path.join(" ")
        ));
    }
    let named = lines.iter().filter_map(|l| Some((l.name.as_ref()?, l)));
    for (k, (name, line)) in named.enumerate() {
        // A short sample of the line itself, so faint, solid and dashed read apart.
        let color = PALETTE[line.color % PALETTE.len()];
        let (x, y) = (W - RIGHT - 200.0, TOP + 9.0 + 14.0 * k as f64);
        svg.push_str(&format!(
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{color}\" {}/><text x=\"{}\" y=\"{}\">{}</text>\n",
            x + 18.0,
            stroke_style(line.stroke),
            x + 24.0,
            y + 4.0,
            esc(name)
        ));
    }
    x_axis(&mut svg, &x, xlabel);
    svg.push_str("</svg>\n");
    svg
}

/// Points, with an optional diagonal y = x.
pub fn scatter(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    points: &[(f64, f64)],
    diagonal: bool,
) -> String {
    let mut svg = open(title);
    let (xlo, xhi, ylo, yhi) = points.iter().fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), (x, y)| (a.min(*x), b.max(*x), c.min(*y), d.max(*y)),
    );
    let x = nice_axis(xlo, xhi, false);
    let y = if diagonal {
        nice_axis(ylo.min(xlo), yhi.max(xhi), false)
    } else {
        nice_axis(ylo, yhi, false)
    };
    let (xmin, xmax, ymin, ymax) = (x.lo, x.hi, y.lo, y.hi);
    axes(&mut svg, &y, ylabel);
    let x_of = |v: f64| x_of(v, &x);
    if diagonal {
        let (a, b) = (xmin.max(ymin), xmax.min(ymax));
        svg.push_str(&format!("<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-dasharray=\"4\"/>\n", x_of(a), y_of(a, ymin, ymax), x_of(b), y_of(b, ymin, ymax)));
    }
    for (x, y) in points {
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{}\" fill-opacity=\"0.5\"/>\n",
            x_of(*x),
            y_of(*y, ymin, ymax),
            PALETTE[0]
        ));
    }
    x_axis(&mut svg, &x, xlabel);
    svg.push_str("</svg>\n");
    svg
}

/// A histogram with `bins` equal-width bins.
pub fn histogram(title: &str, values: &[f64], bins: usize) -> String {
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let mut counts = vec![0.0; bins];
    for v in values {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1.0;
    }
    let labels: Vec<String> = (0..bins).map(|i| fmt(lo + width * i as f64)).collect();
    bar_chart(title, "rows", &labels, &counts, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_have_round_ticks_bounded_by_the_data() {
        // 200 boosting rounds: whole-number ticks, no 49.750.
        let x = nice_axis(0.0, 199.0, true);
        assert_eq!(x.ticks, vec![0.0, 50.0, 100.0, 150.0, 200.0]);
        assert_eq!(x.decimals, 0);
        // A loss between 0.05 and 1.3 never gets a negative axis.
        let y = nice_axis(0.05, 1.3, false);
        assert_eq!(y.lo, 0.0);
        assert!(y.hi >= 1.3 && y.hi <= 1.6, "{y:?}");
        assert!(y.ticks.iter().all(|t| (t / 0.5).fract().abs() < 1e-9
            || (t / 0.2).fract().abs() < 1e-9
            || (t / 0.1).fract().abs() < 1e-9));
        // 7 epochs: integer ticks even when the step would be fractional.
        let e = nice_axis(1.0, 7.0, true);
        assert!(e.ticks.iter().all(|t| t.fract() == 0.0), "{e:?}");
        // Accuracy 0.58..0.69: ticks at 0.02 or 0.05 steps, printed with 2 decimals.
        let a = nice_axis(0.58, 0.69, false);
        assert!(a.lo <= 0.58 && a.hi >= 0.69 && a.lo >= 0.5, "{a:?}");
        assert_eq!(a.decimals, 2);
        assert_eq!(format!("{:.*}", a.decimals, a.ticks[1]), "0.60");
    }

    #[test]
    fn charts_are_well_formed_svg_with_their_content() {
        let svg = bar_chart(
            "a <b>",
            "y",
            &["x".into(), "z".into()],
            &[1.0, 2.0],
            Some(&[0.1, 0.2]),
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 2, "one bar per value");
        assert!(svg.contains("a &lt;b&gt;"), "titles are escaped");
        let h = heatmap(
            "m",
            &["r1".into()],
            &["c1".into(), "c2".into()],
            &[vec![3.0, 7.0]],
            "true",
            "predicted",
        );
        assert!(h.contains(">7<") && h.contains(">3<"));
        let l = line_chart(
            "l",
            "round",
            "loss",
            &[("train".into(), vec![(0.0, 1.0), (1.0, 0.5)])],
        );
        assert!(l.contains("<polyline"));
        assert_eq!(
            histogram("h", &[1.0, 2.0, 2.0, 3.0], 3)
                .matches("<title>")
                .count(),
            3
        );
    }
}
