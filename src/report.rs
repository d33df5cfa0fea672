//! What a person reads: the leaderboard, the per-class breakdown, run and version listings.

pub use crate::sweep::ranked;
use crate::sweep::{RunResult, SweepReport};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use std::io::IsTerminal;

/// A table with runner's look; on a terminal, long cells wrap to its width.
pub fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    if let Some(width) = terminal_width() {
        t.set_content_arrangement(ContentArrangement::Dynamic);
        t.set_width(width.min(u16::MAX as usize) as u16);
    }
    t.set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    t
}

/// The terminal's width in columns when stdout is a terminal; `None` when it is a pipe or a file,
/// where tables print every column without wrapping.
pub fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, and fd 1 is open.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        return Some(size.ws_col as usize);
    }
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
    Some(columns.unwrap_or(80))
}

/// A table's text, fitted to `width`: the columns in `drop_order` (least important first) are
/// left out one by one until the table fits, then long cells wrap. `None` prints every column
/// unwrapped (a pipe, a file, or `--wide`). Returns the text and how many columns were left out.
pub fn fit_table(
    header: &[&str],
    rows: &[Vec<Cell>],
    texts: &[Vec<String>],
    drop_order: &[usize],
    width: Option<usize>,
) -> (String, usize) {
    let mut keep: Vec<bool> = vec![true; header.len()];
    let mut dropped = 0;
    if let Some(width) = width {
        let col_width = |i: usize| {
            texts
                .iter()
                .filter_map(|r| r.get(i))
                .chain(std::iter::once(&header[i].to_string()))
                .map(|t| t.lines().map(|l| l.chars().count()).max().unwrap_or(0))
                .max()
                .unwrap_or(0)
                + 3
        };
        let widths: Vec<usize> = (0..header.len()).map(col_width).collect();
        let total = |keep: &[bool]| {
            1 + widths
                .iter()
                .zip(keep)
                .filter(|(_, k)| **k)
                .map(|(w, _)| w)
                .sum::<usize>()
        };
        for &i in drop_order {
            if total(&keep) <= width {
                break;
            }
            keep[i] = false;
            dropped += 1;
        }
    }
    let kept_header: Vec<&str> = header
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(h, _)| *h)
        .collect();
    let mut t = new_table(&kept_header);
    match width {
        Some(w) => {
            t.set_content_arrangement(ContentArrangement::Dynamic);
            t.set_width(w.min(u16::MAX as usize) as u16);
        }
        None => {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    for row in rows {
        t.add_row(
            row.iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c.clone())
                .collect::<Vec<_>>(),
        );
    }
    (t.to_string(), dropped)
}

/// Prints a table built by [`fit_table`], with a note when columns were left out.
pub fn print_fitted(
    header: &[&str],
    rows: &[Vec<Cell>],
    texts: &[Vec<String>],
    drop_order: &[usize],
    wide: bool,
) {
    let width = if wide { None } else { terminal_width() };
    let (text, dropped) = fit_table(header, rows, texts, drop_order, width);
    println!("{text}");
    if dropped > 0 {
        println!("({dropped} columns left out to fit the terminal; --wide shows them)");
    }
}

fn num(v: f64) -> Cell {
    Cell::new(format!("{v:.4}")).set_alignment(CellAlignment::Right)
}

/// The leaderboard's columns after the run's identity: the primary metric, then the task's
/// usual metrics.
fn metric_columns(report: &SweepReport) -> Vec<&str> {
    let key = report.primary_metric.as_str();
    let usual: &[&str] = match report.task {
        crate::models::Task::Classification => {
            &["accuracy", "balanced_accuracy", "f1_macro", "log_loss"]
        }
        crate::models::Task::Regression => &["mae", "rmse", "r2", "acc_within_0.5"],
    };
    std::iter::once(key)
        .chain(usual.iter().copied().filter(|c| *c != key))
        .collect()
}

/// One leaderboard row as text: rank, run, model, kind, the primary metric with its spread,
/// the other metrics and the fit time.
fn leaderboard_row(rank: usize, r: &RunResult, metrics: &[&str]) -> Vec<String> {
    let (m, s) = r.metrics[metrics[0]];
    let mut text = vec![
        rank.to_string(),
        r.version.clone(),
        r.name.clone(),
        r.kind.clone(),
        format!("{m:.4} ± {s:.4}"),
    ];
    for c in &metrics[1..] {
        let v = r.metrics.get(*c).map(|v| format!("{:.4}", v.0));
        text.push(v.unwrap_or_else(|| "-".into()));
    }
    text.push(format!("{:.4}", r.fit_seconds));
    text
}

/// The ranked runs as a table that fits the terminal (`wide`: every column).
fn print_leaderboard(report: &SweepReport, wide: bool) {
    let metrics = metric_columns(report);
    let mut header = vec!["#", "run", "model", "kind"];
    header.extend(metrics.iter().copied());
    header.push("seconds");
    let texts: Vec<Vec<String>> = ranked(report)
        .iter()
        .enumerate()
        .map(|(i, r)| leaderboard_row(i + 1, r, &metrics))
        .collect();
    let rows: Vec<Vec<Cell>> = texts
        .iter()
        .map(|text| {
            let cells = text.iter().enumerate();
            cells
                .map(|(j, t)| match j {
                    0..=3 => Cell::new(t),
                    _ => Cell::new(t).set_alignment(CellAlignment::Right),
                })
                .collect()
        })
        .collect();
    // Least important first: seconds, the secondary metrics from the right, the kind, the rank.
    let n = header.len();
    let mut drop_order: Vec<usize> = vec![n - 1];
    drop_order.extend((5..n - 1).rev());
    drop_order.extend([3, 0]);
    print_fitted(&header, &rows, &texts, &drop_order, wide);
}

/// The best run's per-class figures and confusion matrix (classification).
fn print_best(best: &RunResult) {
    if best.per_class.is_empty() {
        println!("\nBest: {} {} ({})", best.version, best.name, best.kind);
        return;
    }
    println!(
        "\nBest: {} {} ({}); per class, out-of-fold predictions pooled over folds:",
        best.version, best.name, best.kind
    );
    let mut t = new_table(&["class", "precision", "recall", "f1", "support"]);
    for c in &best.per_class {
        t.add_row(vec![
            Cell::new(&c.label),
            num(c.precision),
            num(c.recall),
            num(c.f1),
            Cell::new(c.support).set_alignment(CellAlignment::Right),
        ]);
    }
    println!("{t}");
    println!("Confusion matrix (rows: true, columns: predicted):");
    let labels: Vec<&str> = best.per_class.iter().map(|c| c.label.as_str()).collect();
    let mut header = vec![""];
    header.extend(labels.iter());
    let mut t = new_table(&header);
    for (l, row) in labels.iter().zip(&best.confusion) {
        let mut cells = vec![Cell::new(l)];
        cells.extend(
            row.iter()
                .map(|c| Cell::new(c).set_alignment(CellAlignment::Right)),
        );
        t.add_row(cells);
    }
    println!("{t}");
}

pub fn print_sweep(report: &SweepReport, wide: bool) {
    println!(
        "Experiment \"{}\", ETL {}{}, task {} ({}); ranked by {} ({}), mean ± std over folds",
        report.experiment,
        report.etl_version,
        if report.etl_reused { " (reused)" } else { "" },
        report.task,
        report.task_reason,
        report.primary_metric,
        if report.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        }
    );
    print_leaderboard(report, wide);
    for p in report.runs.iter().filter(|r| r.pruned.is_some()) {
        let why = p.pruned.as_ref().map_or("", |p| p.reason.as_str());
        println!("{} {} pruned {why}", p.version, p.name);
    }
    // A shard's report holds the other shards' runs too, some of them still training.
    let unfinished = |r: &&RunResult| matches!(r.status.as_str(), "RUNNING" | "SCHEDULED");
    let failed: Vec<&RunResult> = (report.runs.iter())
        .filter(|r| r.status != "FINISHED" && r.pruned.is_none() && !unfinished(r))
        .collect();
    for f in &failed {
        println!(
            "{} {} {}: {}",
            f.version,
            f.name,
            f.status,
            f.error.as_deref().unwrap_or("no error recorded")
        );
    }
    let training: Vec<&RunResult> = report.runs.iter().filter(unfinished).collect();
    for t in &training {
        println!(
            "{} {} still training (another shard's or process's)",
            t.version, t.name
        );
    }
    if let Some(best) = ranked(report).first() {
        print_best(best);
    }
    if let Some(c) = &report.comparison_chart {
        println!("Comparison chart: {c}");
    }
    // A continued sweep with nothing left to train shows its stored runs (its time is 0).
    let trained = if report.wall_seconds > 0.0 {
        format!("trained in {:.1}s", report.wall_seconds)
    } else {
        "none trained now (every config already had its run)".to_string()
    };
    let shown = match report.store.starts_with("http") {
        true => "its MLflow UI shows them",
        false => "`mlflow ui` in that folder shows them",
    };
    let still = match training.len() {
        0 => String::new(),
        n => format!(", {n} still training"),
    };
    println!(
        "{} runs ({} failed{still}), {trained}, logged to {}; {shown}.",
        report.runs.len(),
        failed.len(),
        report.store
    );
}
