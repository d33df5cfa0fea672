//! What a person reads: the leaderboard, the per-class breakdown, run and version listings.

use crate::sweep::{RunResult, SweepReport};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};

pub fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    t
}

fn num(v: f64) -> Cell {
    Cell::new(format!("{v:.4}")).set_alignment(CellAlignment::Right)
}

/// Runs that finished, best first by the primary metric.
pub fn ranked(report: &SweepReport) -> Vec<&RunResult> {
    let key = &report.primary_metric;
    let mut ok: Vec<&RunResult> = report
        .runs
        .iter()
        .filter(|r| r.metrics.contains_key(key))
        .collect();
    ok.sort_by(|a, b| {
        let (x, y) = (a.metrics[key].0, b.metrics[key].0);
        let ord = if report.higher_is_better {
            y.total_cmp(&x)
        } else {
            x.total_cmp(&y)
        };
        ord.then_with(|| a.version.cmp(&b.version))
    });
    ok
}

pub fn print_sweep(report: &SweepReport) {
    let key = &report.primary_metric;
    let columns: Vec<&str> = match report.task {
        crate::models::Task::Classification => {
            vec!["accuracy", "balanced_accuracy", "f1_macro", "log_loss"]
        }
        crate::models::Task::Regression => vec!["mae", "rmse", "r2", "acc_within_0.5"],
    };
    let mut header = vec!["#", "run", "model", "kind"];
    header.push(key.as_str());
    for c in &columns {
        if c != key {
            header.push(c);
        }
    }
    header.push("seconds");
    let mut t = new_table(&header);
    for (i, r) in ranked(report).iter().enumerate() {
        let mut row = vec![
            Cell::new(i + 1),
            Cell::new(&r.version),
            Cell::new(&r.name),
            Cell::new(&r.kind),
        ];
        let (m, s) = r.metrics[key];
        row.push(Cell::new(format!("{m:.4} ± {s:.4}")).set_alignment(CellAlignment::Right));
        for c in &columns {
            if c != key {
                row.push(
                    r.metrics
                        .get(*c)
                        .map(|v| num(v.0))
                        .unwrap_or_else(|| Cell::new("-")),
                );
            }
        }
        row.push(num(r.fit_seconds));
        t.add_row(row);
    }
    println!(
        "Experiment \"{}\", ETL {}{}, task {} ({}); ranked by {} ({}), mean ± std over folds",
        report.experiment,
        report.etl_version,
        if report.etl_reused { " (reused)" } else { "" },
        report.task,
        report.task_reason,
        key,
        if report.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        }
    );
    println!("{t}");
    let failed: Vec<&RunResult> = report
        .runs
        .iter()
        .filter(|r| r.status != "FINISHED")
        .collect();
    for f in &failed {
        println!(
            "{} {} FAILED: {}",
            f.version,
            f.name,
            f.error.as_deref().unwrap_or("unknown error")
        );
    }
    if let Some(best) = ranked(report).first() {
        if !best.per_class.is_empty() {
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
        } else {
            println!("\nBest: {} {} ({})", best.version, best.name, best.kind);
        }
    }
    if let Some(c) = &report.comparison_chart {
        println!("Comparison chart: {c}");
    }
    println!(
        "{} runs ({} failed) in {:.1}s, logged to {}; `mlflow ui` in that folder shows them.",
        report.runs.len(),
        failed.len(),
        report.wall_seconds,
        report.store
    );
}
