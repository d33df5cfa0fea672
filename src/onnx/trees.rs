//! Tree ensembles as `ai.onnx.ml.TreeEnsembleRegressor`: runner's CART trees and forests,
//! XGBoost's JSON model and LightGBM's text model.

use super::proto::*;
use crate::models::{Task, TreeNode};
use anyhow::{bail, Context, Result};
use serde_json::Value;

// ---------------------------------------------------------------- models

/// The nodes of a tree ensemble, gathered for one `ai.onnx.ml.TreeEnsembleRegressor`.
#[derive(Default)]
pub(super) struct TreeNodes {
    tree: Vec<i64>,
    node: Vec<i64>,
    feature: Vec<i64>,
    mode: Vec<String>,
    threshold: Vec<f64>,
    left: Vec<i64>,
    right: Vec<i64>,
    t_tree: Vec<i64>,
    t_node: Vec<i64>,
    t_id: Vec<i64>,
    t_weight: Vec<f64>,
}

impl TreeNodes {
    /// Node `node` of tree `tree`: rows with `x[feature] mode threshold` go to `left`, the
    /// others to `right`.
    fn split(
        &mut self,
        (tree, node): (i64, i64),
        feature: i64,
        mode: &str,
        threshold: f64,
        (left, right): (i64, i64),
    ) {
        self.tree.push(tree);
        self.node.push(node);
        self.feature.push(feature);
        self.mode.push(mode.to_string());
        self.threshold.push(threshold);
        self.left.push(left);
        self.right.push(right);
    }

    /// A leaf adding `values[c]` to target `first + c`.
    fn leaf(&mut self, tree: i64, node: i64, first: i64, values: &[f64]) {
        self.split((tree, node), 0, "LEAF", 0.0, (0, 0));
        for (c, v) in values.iter().enumerate() {
            self.t_tree.push(tree);
            self.t_node.push(node);
            self.t_id.push(first + c as i64);
            self.t_weight.push(*v);
        }
    }

    /// The operator over `x`, thresholds and weights in double (`as_tensor`) unless `float`;
    /// its output (float) aggregated by `aggregate` onto `base`.
    fn build(
        self,
        g: &mut Graph,
        x: &str,
        targets: usize,
        aggregate: &str,
        base: Option<Vec<f32>>,
        float: bool,
    ) -> String {
        let out = g.fresh("trees");
        let mut attrs = vec![
            Attr::Str("aggregate_function", aggregate),
            // onnxruntime leaves a regressor's LOGISTIC post-transform out: callers add nodes.
            Attr::Str("post_transform", "NONE"),
            Attr::Int("n_targets", targets as i64),
            Attr::Ints("nodes_treeids", self.tree),
            Attr::Ints("nodes_nodeids", self.node),
            Attr::Ints("nodes_featureids", self.feature),
            Attr::Strs("nodes_modes", self.mode),
            Attr::Ints("nodes_truenodeids", self.left),
            Attr::Ints("nodes_falsenodeids", self.right),
            Attr::Ints("target_treeids", self.t_tree),
            Attr::Ints("target_nodeids", self.t_node),
            Attr::Ints("target_ids", self.t_id),
        ];
        if float {
            let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
            attrs.push(Attr::Floats("nodes_values", f32s(self.threshold)));
            attrs.push(Attr::Floats("target_weights", f32s(self.t_weight)));
        } else {
            let n = (self.threshold.len() as i64, self.t_weight.len() as i64);
            attrs.push(Attr::Tensor(
                "nodes_values_as_tensor",
                tensor("", &[n.0], Data::F64(&self.threshold)),
            ));
            attrs.push(Attr::Tensor(
                "target_weights_as_tensor",
                tensor("", &[n.1], Data::F64(&self.t_weight)),
            ));
        }
        if let Some(b) = base {
            attrs.push(Attr::Floats("base_values", b));
        }
        g.node_in("ai.onnx.ml", "TreeEnsembleRegressor", &[x], &[&out], attrs);
        out
    }
}

/// Margins of a boosted ensemble to the runner's outputs (double): softmax over classes,
/// sigmoid for two classes (as [1 - p, p]), or the values (regression).
pub(super) fn boosted_output(g: &mut Graph, margins: &str, task: Task, targets: usize) -> String {
    let out = match (task, targets) {
        (Task::Regression, _) => margins.to_string(),
        (_, 1) => {
            let p = g.op("Sigmoid", &[margins], vec![]);
            let one = g.init("one", &[], Data::F32(&[1.0]));
            let q = g.op("Sub", &[&one, &p], vec![]);
            g.op("Concat", &[&q, &p], vec![Attr::Int("axis", 1)])
        }
        _ => g.op("Softmax", &[margins], vec![Attr::Int("axis", -1)]),
    };
    g.op("Cast", &[&out], vec![Attr::Int("to", DOUBLE)])
}

/// runner's CART trees and forests: leaves hold class probabilities (or a value), averaged.
pub(super) fn trees(
    g: &mut Graph,
    fitted: &Value,
    x: &str,
    task: Task,
    k: usize,
) -> Result<String> {
    let targets = if task == Task::Classification { k } else { 1 };
    let mut nodes = TreeNodes::default();
    let saved = crate::models::saved_trees(fitted).context("saved trees")?;
    for (t, tree) in saved.iter().enumerate() {
        let t = t as i64;
        for (n, node) in tree.nodes().iter().enumerate() {
            let n = n as i64;
            match node {
                TreeNode::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => nodes.split(
                    (t, n),
                    *feature as i64,
                    "BRANCH_LEQ",
                    *threshold,
                    (*left as i64, *right as i64),
                ),
                TreeNode::Leaf(values) => {
                    let leaf: Vec<f64> = values.iter().take(targets).copied().collect();
                    nodes.leaf(t, n, 0, &leaf);
                }
            }
        }
    }
    let out = nodes.build(g, x, targets, "AVERAGE", None, false);
    Ok(g.op("Cast", &[&out], vec![Attr::Int("to", DOUBLE)]))
}

/// An XGBoost model from its JSON: its trees in float, as XGBoost compares (`x < threshold`
/// goes left), summed per class onto the base score.
pub(super) fn xgboost(
    g: &mut Graph,
    json_model: &[u8],
    x: &str,
    task: Task,
    k: usize,
) -> Result<String> {
    let doc: Value = serde_json::from_slice(json_model).context("XGBoost JSON model")?;
    let learner = &doc["learner"];
    let model = &learner["gradient_booster"]["model"];
    let objective = learner["objective"]["name"].as_str().unwrap_or_default();
    let base: Vec<f32> = learner["learner_model_param"]["base_score"]
        .as_str()
        .context("base_score")?
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .context("base_score")?;
    let (targets, base) = match objective {
        "multi:softprob" | "multi:softmax" => (k, base),
        // The base score is a probability; the trees add to its logit.
        "binary:logistic" => (1, vec![(base[0] / (1.0 - base[0])).ln()]),
        "reg:squarederror" => (1, base),
        other => bail!("ONNX export of XGBoost objective {other} is not written"),
    };
    let base = if base.len() == targets {
        base
    } else {
        vec![base[0]; targets]
    };
    let info = model["tree_info"].as_array().context("tree_info")?;
    let ints = |v: &Value| -> Vec<i64> {
        v.as_array()
            .map(|a| a.iter().map(|x| x.as_i64().unwrap_or(0)).collect())
            .unwrap_or_default()
    };
    let mut nodes = TreeNodes::default();
    for (t, tree) in model["trees"]
        .as_array()
        .context("trees")?
        .iter()
        .enumerate()
    {
        let (left, right) = (ints(&tree["left_children"]), ints(&tree["right_children"]));
        let feature = ints(&tree["split_indices"]);
        let cond: Vec<f64> = tree["split_conditions"]
            .as_array()
            .context("split_conditions")?
            .iter()
            .map(|x| x.as_f64().unwrap_or(0.0))
            .collect();
        let class = info.get(t).and_then(Value::as_i64).unwrap_or(0);
        for n in 0..left.len() {
            let (t, id) = (t as i64, n as i64);
            if left[n] < 0 {
                nodes.leaf(t, id, class, &[cond[n]]);
            } else {
                nodes.split(
                    (t, id),
                    feature[n],
                    "BRANCH_LT",
                    cond[n],
                    (left[n], right[n]),
                );
            }
        }
    }
    // XGBoost reads its input as float.
    let xf = g.op("Cast", &[x], vec![Attr::Int("to", FLOAT)]);
    let margins = nodes.build(g, &xf, targets, "SUM", Some(base), true);
    Ok(boosted_output(g, &margins, task, targets))
}

/// A LightGBM model from its text form: numerical splits (`x <= threshold` goes left) in
/// double as LightGBM compares, trees of one iteration one per class, summed.
pub(super) fn lightgbm(g: &mut Graph, text: &[u8], x: &str, task: Task) -> Result<String> {
    let text = std::str::from_utf8(text).context("LightGBM model text")?;
    let mut sections = text.split("\nTree=");
    let header = sections.next().unwrap_or_default();
    let field = |block: &str, key: &str| -> Option<String> {
        block
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .map(str::to_string)
    };
    let per_iteration: i64 = field(header, "num_tree_per_iteration")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let objective = field(header, "objective").unwrap_or_default();
    let kind = objective.split_whitespace().next().unwrap_or_default();
    if !["multiclass", "binary", "regression"].contains(&kind) {
        bail!("ONNX export of LightGBM objective {objective} is not written");
    }
    if objective.contains("sigmoid:") && !objective.contains("sigmoid:1") {
        bail!("ONNX export of LightGBM with {objective} is not written (sigmoid other than 1)");
    }
    let targets = per_iteration as usize;
    let mut nodes = TreeNodes::default();
    for (t, block) in sections.enumerate() {
        if block.starts_with("end of trees") {
            break;
        }
        let t = t as i64;
        let class = t % per_iteration;
        let nums = |key: &str| -> Result<Vec<f64>> {
            field(block, key)
                .unwrap_or_default()
                .split_whitespace()
                .map(|v| {
                    v.parse::<f64>()
                        .with_context(|| format!("{key} in tree {t}"))
                })
                .collect()
        };
        let leaves = nums("leaf_value")?;
        let (feature, threshold) = (nums("split_feature")?, nums("threshold")?);
        let (decision, left, right) = (
            nums("decision_type")?,
            nums("left_child")?,
            nums("right_child")?,
        );
        let internal = feature.len() as i64;
        // Internal nodes keep their numbers; leaf i becomes node `internal + i`.
        let id = |c: f64| {
            if c < 0.0 {
                internal + (-c as i64 - 1)
            } else {
                c as i64
            }
        };
        for n in 0..feature.len() {
            if decision[n] as i64 & 1 == 1 {
                bail!("ONNX export of LightGBM categorical splits is not written");
            }
            nodes.split(
                (t, n as i64),
                feature[n] as i64,
                "BRANCH_LEQ",
                threshold[n],
                (id(left[n]), id(right[n])),
            );
        }
        for (i, v) in leaves.iter().enumerate() {
            nodes.leaf(t, internal + i as i64, class, &[*v]);
        }
    }
    let margins = nodes.build(g, x, targets, "SUM", None, false);
    Ok(boosted_output(g, &margins, task, targets))
}
