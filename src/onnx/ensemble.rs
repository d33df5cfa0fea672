//! Voting and stacking ensembles: each member's own graph on the same model matrix, then the
//! members' mean (soft voting: probabilities; hard: one-hot votes; regression: values), or the
//! meta-learner's graph on the members' probabilities (or values), plus the inputs with
//! `passthrough`, as runner's ensembles combine them.

use super::proto::*;
use super::{model_graph, Source};
use crate::models::Task;
use anyhow::{Context, Result};
use serde_json::Value;

/// One member's (or the meta-learner's) output: probabilities (N x K) for a classifier, values
/// as N x 1 for a regressor.
fn member_graph(g: &mut Graph, src: &Source, member: &Value, x: &str, f: i64) -> Result<String> {
    let (config, native) = crate::models::ensemble::saved_member(member)?;
    let member_src = Source {
        config: &config,
        fitted: &member["fitted"],
        native: &native,
        ..*src
    };
    let y = model_graph(g, &member_src, x, f)
        .with_context(|| format!("ensemble member {} ({})", config.name, config.kind))?;
    Ok(match src.task {
        Task::Classification => y,
        Task::Regression => {
            let shape = g.init("shape", &[2], Data::I64(&[-1, 1]));
            g.op("Reshape", &[&y, &shape], vec![])
        }
    })
}

/// The ensemble's probabilities (N x K) or values (N x 1).
pub(super) fn ensemble(g: &mut Graph, src: &Source, x: &str, f: i64, k: usize) -> Result<String> {
    let fitted = src.fitted;
    let members = fitted["members"]
        .as_array()
        .context("ensemble without members")?;
    let hard = fitted["voting"].as_str() == Some("hard") && src.task == Task::Classification;
    let mut outputs = Vec::new();
    for m in members {
        let y = member_graph(g, src, m, x, f)?;
        outputs.push(if hard { one_hot_vote(g, &y, k) } else { y });
    }
    let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    if !fitted["meta"].is_null() {
        let mut parts = refs.clone();
        if fitted["passthrough"].as_bool().unwrap_or(false) {
            parts.push(x);
        }
        let width = match src.task {
            Task::Classification => k as i64,
            Task::Regression => 1,
        };
        let mut features = width * members.len() as i64;
        if parts.len() > refs.len() {
            features += f;
        }
        let z = g.op("Concat", &parts, vec![Attr::Int("axis", 1)]);
        return member_graph(g, src, &fitted["meta"], &z, features);
    }
    let sum = g.op("Sum", &refs, vec![]);
    let count = g.init("members", &[1], Data::F64(&[members.len() as f64]));
    Ok(g.op("Div", &[&sum, &count], vec![]))
}

/// A member's vote: 1 for its most probable class (the lowest on ties), 0 for the others.
fn one_hot_vote(g: &mut Graph, proba: &str, k: usize) -> String {
    let best = g.op(
        "ArgMax",
        &[proba],
        vec![Attr::Int("axis", 1), Attr::Int("keepdims", 1)],
    );
    let all: Vec<i64> = (0..k as i64).collect();
    let all = g.init("classes", &[k as i64], Data::I64(&all));
    let hot = g.op("Equal", &[&best, &all], vec![]);
    g.op("Cast", &[&hot], vec![Attr::Int("to", DOUBLE)])
}
