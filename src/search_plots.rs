//! Charts of a sweep's searches, logged with its parent run: per searched entry, the score of
//! each trial and the best so far against the trial number (`search_<entry>_history.svg` and
//! `.csv`), and the score against each searched hyperparameter (`search_<entry>_<key>.svg`;
//! choices that are not numbers are placed by their rank).

use crate::sweep::{sanitize, RunResult};
use std::collections::BTreeMap;

/// One finished or pruned trial: its number, its searched values, its score.
struct Trial {
    number: f64,
    values: Shown,
    score: f64,
}

/// A trial's searched values by parameter, as its name shows them.
type Shown = Vec<(String, String)>;

/// `entry#7[a=1,b=rbf]` -> ("entry", 7, [(a, 1), (b, rbf)]).
fn parse_name(name: &str) -> Option<(String, f64, Shown)> {
    let (entry, rest) = name.split_once('#')?;
    let (number, values) = rest.split_once('[')?;
    let values = values
        .trim_end_matches(']')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some((entry.to_string(), number.parse().ok()?, values))
}

fn trials_by_entry(runs: &[RunResult], metric: &str) -> BTreeMap<String, Vec<Trial>> {
    let mut out: BTreeMap<String, Vec<Trial>> = BTreeMap::new();
    for r in runs {
        let (Some((entry, number, values)), Some((score, _))) =
            (parse_name(&r.name), r.metrics.get(metric))
        else {
            continue;
        };
        out.entry(entry).or_default().push(Trial {
            number,
            values,
            score: *score,
        });
    }
    for trials in out.values_mut() {
        trials.sort_by(|a, b| a.number.total_cmp(&b.number));
    }
    out
}

/// The charts and tables (artifact name, bytes) of every searched entry among `runs`.
pub fn search_plots(runs: &[RunResult], metric: &str, higher: bool) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (entry, trials) in trials_by_entry(runs, metric) {
        let stem = format!("search_{}", sanitize(&entry));
        let mut best = if higher {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        let mut csv = format!("trial,{metric},best\n");
        let mut best_line = Vec::new();
        for t in &trials {
            best = if higher {
                best.max(t.score)
            } else {
                best.min(t.score)
            };
            csv.push_str(&format!("{},{},{}\n", t.number, t.score, best));
            best_line.push((t.number, best));
        }
        let scores: Vec<(f64, f64)> = trials.iter().map(|t| (t.number, t.score)).collect();
        let title = format!("{entry}: {metric} by trial");
        let series = [
            ("trial".to_string(), scores),
            ("best so far".to_string(), best_line),
        ];
        let chart = crate::plot::line_chart(&title, "trial", metric, &series);
        out.push((format!("{stem}_history.svg"), chart.into_bytes()));
        out.push((format!("{stem}_history.csv"), csv.into_bytes()));
        let keys: Vec<String> = trials[0].values.iter().map(|(k, _)| k.clone()).collect();
        for (i, key) in keys.iter().enumerate() {
            let points = slice_points(&trials, i);
            let title = format!("{entry}: {metric} by {key}");
            let chart = crate::plot::scatter(&title, key, metric, &points, false);
            out.push((format!("{stem}_{}.svg", sanitize(key)), chart.into_bytes()));
        }
    }
    out
}

/// (value, score) of the `i`-th searched value of each trial; text values by their rank.
fn slice_points(trials: &[Trial], i: usize) -> Vec<(f64, f64)> {
    let texts: Vec<&str> = trials
        .iter()
        .filter_map(|t| t.values.get(i).map(|(_, v)| v.as_str()))
        .collect();
    let mut distinct: Vec<&str> = texts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    (trials.iter().zip(texts))
        .map(|(t, v)| {
            let x = v
                .parse::<f64>()
                .unwrap_or_else(|_| distinct.iter().position(|d| *d == v).unwrap_or(0) as f64);
            (x, t.score)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_names_parse() {
        let (entry, n, values) = parse_name("forest#12[max_depth=7,kernel=rbf]").unwrap();
        assert_eq!((entry.as_str(), n), ("forest", 12.0));
        assert_eq!(values[1], ("kernel".to_string(), "rbf".to_string()));
        assert!(parse_name("forest[n_trees=10]").is_none());
    }
}
