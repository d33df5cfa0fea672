//! ONNX export of a run's saved model, written as protobuf by hand (the handful of ONNX messages
//! needed here are smaller than a protobuf code generator and its build step).
//!
//! Every exported graph takes the run's input columns as `input` (double, N x F, in the order of
//! the `feature_names` metadata), applies the fitted preprocessing (missing values filled,
//! shift and scale) in double precision, then the model:
//! - decision trees and random forests: `ai.onnx.ml.TreeEnsembleRegressor` with double
//!   thresholds (one target per class for classification, averaged over trees);
//! - logistic regression: MatMul + Add + Softmax; linear (ridge) regression: MatMul + Add;
//! - the networks, in float like libtorch: their standardisation; MLP Gemm layers, batch norm
//!   (inference form) and activation; CNN Conv, pooling and a dense head; LSTM the ONNX LSTM
//!   (gates reordered from libtorch's), stacked and bidirectional as trained, and a dense head;
//!   then Softmax.
//!
//! Classifiers output `probabilities` (double, N x K) and `label` (N; the original class labels,
//! int64 when they are all whole numbers, else strings); regressors output `value` (double, N).

use crate::etl::{LabelMapping, Preprocessor};
use crate::models::{ModelConfig, Task};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Kinds this module can export: those whose spec says `onnx`.
pub fn exportable_kinds() -> Vec<&'static str> {
    crate::models::kind_specs()
        .filter(|k| k.onnx)
        .map(|k| k.kind)
        .collect()
}

// ---------------------------------------------------------------- protobuf

#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u32) {
        self.varint(((field << 3) | wire) as u64);
    }
    fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, 0);
        self.varint(v as u64);
        self
    }
    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    fn msg(&mut self, field: u32, m: &Pb) -> &mut Self {
        self.bytes(field, &m.0)
    }
    fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn packed_ints(&mut self, field: u32, vs: &[i64]) -> &mut Self {
        let mut inner = Pb::default();
        for v in vs {
            inner.varint(*v as u64);
        }
        self.bytes(field, &inner.0)
    }
}

// ---------------------------------------------------------------- ONNX messages

const FLOAT: i64 = 1;
const INT64: i64 = 7;
const STRING: i64 = 8;
const DOUBLE: i64 = 11;

enum Data<'a> {
    F64(&'a [f64]),
    F32(&'a [f32]),
    I64(&'a [i64]),
    Str(&'a [String]),
}

fn tensor(name: &str, dims: &[i64], data: Data) -> Pb {
    let mut t = Pb::default();
    t.packed_ints(1, dims);
    let raw = |t: &mut Pb, elem: i64, bytes: Vec<u8>| {
        t.int(2, elem);
        t.bytes(9, &bytes);
    };
    match data {
        Data::F64(v) => raw(
            &mut t,
            DOUBLE,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::F32(v) => raw(
            &mut t,
            FLOAT,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::I64(v) => raw(
            &mut t,
            INT64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::Str(v) => {
            t.int(2, STRING);
            for s in v {
                t.str(6, s);
            }
        }
    }
    t.str(8, name);
    t
}

enum Attr<'a> {
    Int(&'a str, i64),
    Float(&'a str, f32),
    Str(&'a str, &'a str),
    Ints(&'a str, Vec<i64>),
    Floats(&'a str, Vec<f32>),
    Strs(&'a str, Vec<String>),
    Tensor(&'a str, Pb),
}

fn attribute(a: Attr) -> Pb {
    let mut p = Pb::default();
    match a {
        Attr::Int(n, v) => {
            p.str(1, n).int(3, v).int(20, 2);
        }
        Attr::Float(n, v) => {
            p.str(1, n).float(2, v).int(20, 1);
        }
        Attr::Str(n, v) => {
            p.str(1, n).str(4, v).int(20, 3);
        }
        Attr::Ints(n, v) => {
            p.str(1, n).packed_ints(8, &v).int(20, 7);
        }
        Attr::Floats(n, v) => {
            let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            p.str(1, n).bytes(7, &b).int(20, 6);
        }
        Attr::Strs(n, v) => {
            p.str(1, n);
            for s in &v {
                p.str(9, s);
            }
            p.int(20, 8);
        }
        Attr::Tensor(n, t) => {
            p.str(1, n).msg(5, &t).int(20, 4);
        }
    }
    p
}

/// A value's type: element type and shape ("N" for the batch dimension).
fn value_info(name: &str, elem: i64, dims: &[Option<i64>]) -> Pb {
    let mut shape = Pb::default();
    for d in dims {
        let mut dim = Pb::default();
        match d {
            Some(v) => dim.int(1, *v),
            None => dim.str(2, "N"),
        };
        shape.msg(1, &dim);
    }
    let mut tt = Pb::default();
    tt.int(1, elem).msg(2, &shape);
    let mut ty = Pb::default();
    ty.msg(1, &tt);
    let mut vi = Pb::default();
    vi.str(1, name).msg(2, &ty);
    vi
}

#[derive(Default)]
struct Graph {
    nodes: Vec<Pb>,
    inits: Vec<Pb>,
    n: usize,
}

impl Graph {
    fn fresh(&mut self, stem: &str) -> String {
        self.n += 1;
        format!("{stem}_{}", self.n)
    }
    fn init(&mut self, stem: &str, dims: &[i64], data: Data) -> String {
        let name = self.fresh(stem);
        self.inits.push(tensor(&name, dims, data));
        name
    }
    fn node_in(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<Attr>,
    ) {
        let mut p = Pb::default();
        for i in inputs {
            p.str(1, i);
        }
        for o in outputs {
            p.str(2, o);
        }
        p.str(3, &self.fresh(op)).str(4, op);
        for a in attrs {
            p.msg(5, &attribute(a));
        }
        if !domain.is_empty() {
            p.str(7, domain);
        }
        self.nodes.push(p);
    }
    /// One node with one output; returns the output's name.
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_in("", op, inputs, &[&out], attrs);
        out
    }
}

// ---------------------------------------------------------------- models

fn ndarray_data(v: &Value, what: &str) -> Result<(Vec<usize>, Vec<f64>)> {
    let dim = v["dim"]
        .as_array()
        .with_context(|| format!("{what}: no dim"))?
        .iter()
        .map(|d| d.as_u64().unwrap_or(0) as usize)
        .collect();
    let data = v["data"]
        .as_array()
        .with_context(|| format!("{what}: no data"))?
        .iter()
        .map(|d| d.as_f64().unwrap_or(f64::NAN))
        .collect();
    Ok((dim, data))
}

/// The nodes of a tree ensemble, gathered for one `ai.onnx.ml.TreeEnsembleRegressor`.
#[derive(Default)]
struct TreeNodes {
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
fn boosted_output(g: &mut Graph, margins: &str, task: Task, targets: usize) -> String {
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
fn trees(g: &mut Graph, fitted: &Value, x: &str, task: Task, k: usize) -> Result<String> {
    let targets = if task == Task::Classification { k } else { 1 };
    let mut nodes = TreeNodes::default();
    for (t, tree) in fitted["trees"]
        .as_array()
        .context("saved trees")?
        .iter()
        .enumerate()
    {
        let t = t as i64;
        for (n, node) in tree["nodes"]
            .as_array()
            .context("tree nodes")?
            .iter()
            .enumerate()
        {
            let n = n as i64;
            if let Some(s) = node.get("Split") {
                let int = |k: &str| s[k].as_i64().with_context(|| k.to_string());
                let threshold = s["threshold"].as_f64().context("threshold")?;
                nodes.split(
                    (t, n),
                    int("feature")?,
                    "BRANCH_LEQ",
                    threshold,
                    (int("left")?, int("right")?),
                );
            } else {
                let leaf: Vec<f64> = node["Leaf"]
                    .as_array()
                    .context("leaf")?
                    .iter()
                    .take(targets)
                    .map(|v| v.as_f64().unwrap_or(0.0))
                    .collect();
                nodes.leaf(t, n, 0, &leaf);
            }
        }
    }
    let out = nodes.build(g, x, targets, "AVERAGE", None, false);
    Ok(g.op("Cast", &[&out], vec![Attr::Int("to", DOUBLE)]))
}

/// An XGBoost model from its JSON: its trees in float, as XGBoost compares (`x < threshold`
/// goes left), summed per class onto the base score.
fn xgboost(g: &mut Graph, json_model: &[u8], x: &str, task: Task, k: usize) -> Result<String> {
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
fn lightgbm(g: &mut Graph, text: &[u8], x: &str, task: Task) -> Result<String> {
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

fn logistic(g: &mut Graph, fitted: &Value, x: &str, k: usize) -> Result<String> {
    let m = &fitted["model"];
    let (pdim, params) = ndarray_data(&m["params"], "params")?;
    let (_, intercept) = ndarray_data(&m["intercept"], "intercept")?;
    let classes: Vec<usize> = m["classes"]
        .as_array()
        .context("classes")?
        .iter()
        .map(|c| c.as_u64().unwrap_or(0) as usize)
        .collect();
    let (f, seen) = (pdim[0], pdim[1]);
    // Widened to all K classes; a class absent from training gets logit -inf (probability 0).
    let mut w = vec![0.0; f * k];
    let mut b = vec![f64::NEG_INFINITY; k];
    for (j, c) in classes.iter().enumerate() {
        for i in 0..f {
            w[i * k + c] = params[i * seen + j];
        }
        b[*c] = intercept[j];
    }
    let w = g.init("coef", &[f as i64, k as i64], Data::F64(&w));
    let b = g.init("intercept", &[k as i64], Data::F64(&b));
    let z = g.op("MatMul", &[x, &w], vec![]);
    let z = g.op("Add", &[&z, &b], vec![]);
    Ok(g.op("Softmax", &[&z], vec![Attr::Int("axis", -1)]))
}

fn linear(g: &mut Graph, fitted: &Value, x: &str) -> Result<String> {
    let coef: Vec<f64> = fitted["coef"]
        .as_array()
        .context("coef")?
        .iter()
        .map(|v| v.as_f64().unwrap_or(0.0))
        .collect();
    let intercept = fitted["intercept"].as_f64().context("intercept")?;
    let w = g.init("coef", &[coef.len() as i64, 1], Data::F64(&coef));
    let b = g.init("intercept", &[1], Data::F64(&[intercept]));
    let z = g.op("MatMul", &[x, &w], vec![]);
    Ok(g.op("Add", &[&z, &b], vec![]))
}

/// Float tensors by name: (shape, values).
type Tensors = std::collections::BTreeMap<String, (Vec<i64>, Vec<f32>)>;

/// Tensors of a safetensors file (float32 only), by name; read with the `safetensors` crate
/// (the format libtorch's `VarStore::save` writes).
fn safetensors(bytes: &[u8]) -> Result<Tensors> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("the network's weights are not a safetensors file: {e:?}"))?;
    let mut out = std::collections::BTreeMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!("tensor {name} is {:?}, expected F32", view.dtype());
        }
        let shape = view.shape().iter().map(|d| *d as i64).collect();
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, (shape, values));
    }
    Ok(out)
}

/// A network's weights as graph initialisers, by the names libtorch saved them under.
struct Weights<'a> {
    tensors: Tensors,
    g: &'a mut Graph,
}

impl Weights<'_> {
    fn get(&mut self, name: &str) -> Result<String> {
        let (shape, v) = self
            .tensors
            .get(name)
            .with_context(|| format!("no tensor {name} in the weights"))?;
        Ok(self.g.init(name, shape, Data::F32(v)))
    }
    fn raw(&self, name: &str) -> Result<&(Vec<i64>, Vec<f32>)> {
        self.tensors
            .get(name)
            .with_context(|| format!("no tensor {name} in the weights"))
    }

    /// Batch norm (inference form) of `prefix`, as the network applies it.
    fn batch_norm(&mut self, prefix: &str, h: &str) -> Result<String> {
        let p = [
            self.get(&format!("{prefix}.weight"))?,
            self.get(&format!("{prefix}.bias"))?,
            self.get(&format!("{prefix}.running_mean"))?,
            self.get(&format!("{prefix}.running_var"))?,
        ];
        Ok(self.g.op(
            "BatchNormalization",
            &[h, &p[0], &p[1], &p[2], &p[3]],
            vec![Attr::Float("epsilon", 1e-5)],
        ))
    }

    fn activation(&mut self, name: &str, h: &str) -> String {
        let g = &mut *self.g;
        match name {
            "tanh" => g.op("Tanh", &[h], vec![]),
            "sigmoid" => g.op("Sigmoid", &[h], vec![]),
            "leaky_relu" => g.op("LeakyRelu", &[h], vec![Attr::Float("alpha", 0.01)]),
            "elu" => g.op("Elu", &[h], vec![Attr::Float("alpha", 1.0)]),
            "silu" => {
                let s = g.op("Sigmoid", &[h], vec![]);
                g.op("Mul", &[h, &s], vec![])
            }
            "gelu" => {
                // 0.5 x (1 + erf(x / sqrt 2)), the exact GELU torch uses.
                let r2 = g.init("sqrt2", &[], Data::F32(&[std::f32::consts::SQRT_2]));
                let one = g.init("one", &[], Data::F32(&[1.0]));
                let half = g.init("half", &[], Data::F32(&[0.5]));
                let e = g.op("Div", &[h, &r2], vec![]);
                let e = g.op("Erf", &[&e], vec![]);
                let e = g.op("Add", &[&e, &one], vec![]);
                let e = g.op("Mul", &[h, &e], vec![]);
                g.op("Mul", &[&e, &half], vec![])
            }
            _ => g.op("Relu", &[h], vec![]),
        }
    }

    /// `x W^T + b` with the linear layer `prefix`.
    fn linear(&mut self, prefix: &str, h: &str) -> Result<String> {
        let w = self.get(&format!("{prefix}.weight"))?;
        let b = self.get(&format!("{prefix}.bias"))?;
        Ok(self
            .g
            .op("Gemm", &[h, &w, &b], vec![Attr::Int("transB", 1)]))
    }

    /// Dense layers `dense<i>` under `prefix`: linear, [batch norm], activation (dropout is
    /// off at inference).
    fn dense(&mut self, prefix: &str, cfg: &ModelConfig, mut h: String) -> Result<String> {
        let widths =
            crate::models::parse_widths(cfg.str("hidden")?).map_err(|e| anyhow!("hidden: {e}"))?;
        for i in 0..widths.len() {
            h = self.linear(&format!("{prefix}dense{i}"), &h)?;
            if cfg.bool("batch_norm")? {
                h = self.batch_norm(&format!("{prefix}bn{i}"), &h)?;
            }
            h = self.activation(cfg.str("activation")?, &h);
        }
        Ok(h)
    }

    /// 1-D convolutions over the feature vector, as `nn.rs` builds them: N x F -> N x (C L).
    fn convolutions(&mut self, cfg: &ModelConfig, features: i64, h: &str) -> Result<String> {
        let axis = self.g.init("axis1", &[1], Data::I64(&[1]));
        let mut h = self.g.op("Unsqueeze", &[h, &axis], vec![]);
        let k = cfg.int("kernel_size")?;
        let pool = cfg.str("pool")?;
        let mut len = features;
        for i in 0..cfg.int("conv_layers")? {
            let w = self.get(&format!("conv{i}.weight"))?;
            let b = self.get(&format!("conv{i}.bias"))?;
            h = self.g.op(
                "Conv",
                &[&h, &w, &b],
                vec![
                    Attr::Ints("kernel_shape", vec![k]),
                    Attr::Ints("pads", vec![k / 2, k / 2]),
                ],
            );
            len = len + 2 * (k / 2) - k + 1;
            if cfg.bool("batch_norm")? {
                h = self.batch_norm(&format!("cbn{i}"), &h)?;
            }
            h = self.activation(cfg.str("activation")?, &h);
            if pool != "none" && len >= 2 {
                let op = if pool == "max" {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                h = self.g.op(
                    op,
                    &[&h],
                    vec![
                        Attr::Ints("kernel_shape", vec![2]),
                        Attr::Ints("strides", vec![2]),
                    ],
                );
                len /= 2;
            }
        }
        Ok(self.g.op("Flatten", &[&h], vec![Attr::Int("axis", 1)]))
    }

    /// The stacked LSTM reading the features as a sequence, as `nn.rs` builds it: N x F ->
    /// N x (directions H), the output of the last step.
    fn lstm(&mut self, cfg: &ModelConfig, h: &str) -> Result<String> {
        let hidden = cfg.int("hidden_size")?;
        let dirs: &[&str] = if cfg.bool("bidirectional")? {
            &["", "_reverse"]
        } else {
            &[""]
        };
        // Sequence first: F x N x 1.
        let t = self
            .g
            .op("Transpose", &[h], vec![Attr::Ints("perm", vec![1, 0])]);
        let axis = self.g.init("axis2", &[1], Data::I64(&[2]));
        let mut seq = self.g.op("Unsqueeze", &[&t, &axis], vec![]);
        // libtorch's gates are (input, forget, cell, output); ONNX wants (input, output,
        // forget, cell).
        let reorder = |v: &[f32], rows_per_gate: usize, cols: usize| -> Vec<f32> {
            let block = rows_per_gate * cols;
            [0usize, 3, 1, 2]
                .iter()
                .flat_map(|g| v[g * block..(g + 1) * block].iter().copied())
                .collect()
        };
        for layer in 0..cfg.int("num_layers")? {
            let (mut w, mut r, mut b) = (Vec::new(), Vec::new(), Vec::new());
            let mut input = 0;
            for d in dirs {
                let (ws, wv) = self.raw(&format!("lstm.weight_ih_l{layer}{d}"))?;
                input = ws[1] as usize;
                w.extend(reorder(wv, hidden as usize, input));
                let (_, rv) = self.raw(&format!("lstm.weight_hh_l{layer}{d}"))?;
                r.extend(reorder(rv, hidden as usize, hidden as usize));
                let (_, bi) = self.raw(&format!("lstm.bias_ih_l{layer}{d}"))?;
                let (_, bh) = self.raw(&format!("lstm.bias_hh_l{layer}{d}"))?;
                b.extend(reorder(bi, hidden as usize, 1));
                b.extend(reorder(bh, hidden as usize, 1));
            }
            let nd = dirs.len() as i64;
            let w = self
                .g
                .init("lstm_w", &[nd, 4 * hidden, input as i64], Data::F32(&w));
            let r = self
                .g
                .init("lstm_r", &[nd, 4 * hidden, hidden], Data::F32(&r));
            let b = self.g.init("lstm_b", &[nd, 8 * hidden], Data::F32(&b));
            let y = self.g.fresh("lstm_y");
            let direction = if nd == 2 { "bidirectional" } else { "forward" };
            self.g.node_in(
                "",
                "LSTM",
                &[&seq, &w, &r, &b],
                &[&y],
                vec![
                    Attr::Int("hidden_size", hidden),
                    Attr::Str("direction", direction),
                ],
            );
            // seq x dirs x N x H -> seq x N x (dirs H), the next layer's input.
            let y = self.g.op(
                "Transpose",
                &[&y],
                vec![Attr::Ints("perm", vec![0, 2, 1, 3])],
            );
            let shape = self.g.init("shape", &[3], Data::I64(&[0, 0, -1]));
            seq = self.g.op("Reshape", &[&y, &shape], vec![]);
        }
        let last = self.g.init("last", &[], Data::I64(&[-1]));
        Ok(self
            .g
            .op("Gather", &[&seq, &last], vec![Attr::Int("axis", 0)]))
    }
}

/// A libtorch network (MLP, CNN or LSTM) from its saved weights, computing in float like the
/// network: its standardisation, body, output layer, softmax for classes.
fn network(
    g: &mut Graph,
    cfg: &ModelConfig,
    weights: &[u8],
    x: &str,
    features: i64,
    task: Task,
) -> Result<String> {
    let mut w = Weights {
        tensors: safetensors(weights)?,
        g,
    };
    let (mean, std) = (w.get("norm_mean")?, w.get("norm_std")?);
    let h = w.g.op("Cast", &[x], vec![Attr::Int("to", FLOAT)]);
    let h = w.g.op("Sub", &[&h, &mean], vec![]);
    let h = w.g.op("Div", &[&h, &std], vec![]);
    let h = match cfg.kind.as_str() {
        "cnn" => {
            let z = w.convolutions(cfg, features, &h)?;
            w.dense("head.", cfg, z)?
        }
        "lstm" => {
            let z = w.lstm(cfg, &h)?;
            w.dense("head.", cfg, z)?
        }
        _ => w.dense("", cfg, h)?,
    };
    let h = w.linear("out", &h)?;
    let h = if task == Task::Classification {
        w.g.op("Softmax", &[&h], vec![Attr::Int("axis", -1)])
    } else {
        h
    };
    Ok(w.g.op("Cast", &[&h], vec![Attr::Int("to", DOUBLE)]))
}

/// What the exporter needs of a saved run.
pub struct Source<'a> {
    pub version: &'a str,
    pub config: &'a crate::models::ModelConfig,
    pub task: Task,
    pub labels: Option<&'a LabelMapping>,
    pub preprocessor: &'a Preprocessor,
    pub fitted: &'a Value,
    /// The model's native files by extension: "safetensors" for the networks, "json" for
    /// XGBoost, "txt" for LightGBM.
    pub native: &'a std::collections::BTreeMap<String, Vec<u8>>,
}

/// The model's part of the graph, reading the preprocessed `x`: its output's name.
fn model_graph(g: &mut Graph, src: &Source, x: &str, f: i64) -> Result<String> {
    let kind = src.config.kind.as_str();
    let k = src.labels.map(|l| l.classes.len()).unwrap_or(0);
    Ok(match kind {
        "decision_tree" | "random_forest" => trees(g, src.fitted, x, src.task, k)?,
        "logistic_regression" => logistic(g, src.fitted, x, k)?,
        "linear" => linear(g, src.fitted, x)?,
        "lightgbm" => lightgbm(
            g,
            src.native
                .get("txt")
                .context("the run has no LightGBM model_tN.txt")?,
            x,
            src.task,
        )?,
        "xgboost" => xgboost(
            g,
            src.native
                .get("json")
                .context("the run has no XGBoost model_tN.json")?,
            x,
            src.task,
            k,
        )?,
        "mlp" | "cnn" | "lstm" => network(
            g,
            src.config,
            src.native
                .get("safetensors")
                .context("the run has no model_tN.safetensors")?,
            x,
            f,
            src.task,
        )?,
        other => bail!("{other} is marked exportable but has no ONNX writer"),
    })
}

/// The graph's outputs from the model's `y`: `probabilities` and `label` for a classifier,
/// `value` for a regressor.
fn output_nodes(g: &mut Graph, src: &Source, y: &str) -> Vec<Pb> {
    let k = src.labels.map(|l| l.classes.len()).unwrap_or(0);
    let mut outputs = Vec::new();
    match (src.task, src.labels) {
        (Task::Classification, Some(labels)) => {
            g.node_in("", "Identity", &[y], &["probabilities"], vec![]);
            let idx = g.op(
                "ArgMax",
                &["probabilities"],
                vec![Attr::Int("axis", 1), Attr::Int("keepdims", 0)],
            );
            let ints: Option<Vec<i64>> = labels.classes.iter().map(|c| c.parse().ok()).collect();
            let (table, elem) = match &ints {
                Some(v) => (g.init("classes", &[k as i64], Data::I64(v)), INT64),
                None => (
                    g.init("classes", &[k as i64], Data::Str(&labels.classes)),
                    STRING,
                ),
            };
            g.node_in(
                "",
                "Gather",
                &[&table, &idx],
                &["label"],
                vec![Attr::Int("axis", 0)],
            );
            outputs.push(value_info("label", elem, &[None]));
            outputs.push(value_info("probabilities", DOUBLE, &[None, Some(k as i64)]));
        }
        _ => {
            let shape = g.init("shape", &[1], Data::I64(&[-1]));
            g.node_in("", "Reshape", &[y, &shape], &["value"], vec![]);
            outputs.push(value_info("value", DOUBLE, &[None]));
        }
    }
    outputs
}

/// The ONNX model of a saved run.
pub fn export(src: &Source) -> Result<Vec<u8>> {
    let kind = src.config.kind.as_str();
    let exportable = exportable_kinds();
    if !exportable.contains(&kind) {
        bail!(
            "ONNX export covers {}; {} is a {kind} model: use --format native",
            crate::models::quoted_list(&exportable),
            src.version,
        );
    }
    let steps = src.preprocessor.numeric_steps().ok_or_else(|| {
        anyhow!(
            "{} reads text columns (one-hot or ordinal encoded); ONNX export covers numeric inputs only: use --format native",
            src.version
        )
    })?;
    let f = steps.len() as i64;
    let mut g = Graph::default();
    // Preprocessing, in double like the runner: (value, or its fill if missing, - shift) / scale.
    let fill: Vec<f64> = steps.iter().map(|s| s.1).collect();
    let shift: Vec<f64> = steps.iter().map(|s| s.2).collect();
    let scale: Vec<f64> = steps.iter().map(|s| s.3).collect();
    let fill = g.init("fill", &[f], Data::F64(&fill));
    let shift = g.init("shift", &[f], Data::F64(&shift));
    let scale = g.init("scale", &[f], Data::F64(&scale));
    let nan = g.op("IsNaN", &["input"], vec![]);
    let x = g.op("Where", &[&nan, &fill, "input"], vec![]);
    let x = g.op("Sub", &[&x, &shift], vec![]);
    let x = g.op("Div", &[&x, &scale], vec![]);
    let y = model_graph(&mut g, src, &x, f)?;
    let outputs = output_nodes(&mut g, src, &y);
    let mut graph = Pb::default();
    for n in &g.nodes {
        graph.msg(1, n);
    }
    graph.str(2, &format!("runner_{}", src.version));
    for i in &g.inits {
        graph.msg(5, i);
    }
    graph.msg(11, &value_info("input", DOUBLE, &[None, Some(f)]));
    for o in &outputs {
        graph.msg(12, o);
    }
    let mut model = Pb::default();
    model
        .int(1, 8)
        .str(2, "runner")
        .str(3, env!("CARGO_PKG_VERSION"))
        .msg(7, &graph);
    for (domain, version) in [("", 17), ("ai.onnx.ml", 3)] {
        let mut o = Pb::default();
        o.str(1, domain).int(2, version);
        model.msg(8, &o);
    }
    let names: Vec<String> = steps.iter().map(|s| s.0.clone()).collect();
    for (key, value) in [
        ("runner.run", src.version.to_string()),
        ("runner.model_kind", kind.to_string()),
        ("feature_names", serde_json::to_string(&names)?),
        (
            "labels",
            serde_json::to_string(&src.labels.map(|l| &l.classes))?,
        ),
    ] {
        let mut e = Pb::default();
        e.str(1, key).str(2, &value);
        model.msg(14, &e);
    }
    Ok(model.0)
}
