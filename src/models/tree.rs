//! CART decision trees and random forests, written here rather than taken from linfa-trees:
//! linfa has no regression trees, and it breaks majority-vote ties by HashMap order, which makes
//! results differ from one process to the next. Every choice below (feature order, tie-breaks,
//! bootstrap draws) is a pure function of the seed, so `replay --check` holds bit for bit.

use super::params::{Default_, ParamSpec, ParamType, BOTH};
use super::{argmax, ColumnShuffles, FitContext, FittedModel, KindSpec, ModelConfig};
use super::{Prediction, Task, TrainSet};
use crate::rng::SplitMix64;
use anyhow::{bail, Result};
use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

mod hist;
mod packed;
mod shuffles;

/// The parameters a tree and a forest share to the letter.
const MIN_SAMPLES_SPLIT: ParamSpec = ParamSpec {
    name: "min_samples_split",
    ty: ParamType::Int {
        min: 2,
        max: 1_000_000,
    },
    default: Default_::Int(2),
    help: "rows a node needs before it may split",
};
const MIN_SAMPLES_LEAF: ParamSpec = ParamSpec {
    name: "min_samples_leaf",
    ty: ParamType::Int {
        min: 1,
        max: 1_000_000,
    },
    default: Default_::Int(1),
    help: "rows each child must keep",
};
const SPLIT: ParamSpec = ParamSpec {
    name: "split",
    ty: ParamType::Choice(&["histogram", "exact"]),
    default: Default_::Str("histogram"),
    help: "split finding: histogram (features binned once per fit, splits at the bins' edges; algorithm 3) or exact (every midpoint, the CART of algorithm 2)",
};
const MAX_BINS: ParamSpec = ParamSpec {
    name: "max_bins",
    ty: ParamType::Int { min: 2, max: 255 },
    default: Default_::Int(255),
    help: "bins per feature for histogram splits (features with fewer distinct values keep every split)",
};

pub(crate) static DECISION_TREE: KindSpec = KindSpec {
    kind: "decision_tree",
    tasks: BOTH,
    backend: "runner (CART; linfa-trees has no regression trees and breaks ties by HashMap order)",
    help: "CART decision tree",
    feature: None,
    onnx: true,
    algorithm: 3,
    unscaled_from: Some(2),
    curve_axis: "step",
    params: class_params![
        ParamSpec {
            name: "max_depth",
            ty: ParamType::Int { min: 0, max: 1000 },
            default: Default_::Int(10),
            help: "maximum depth (0 = unlimited)",
        },
        MIN_SAMPLES_SPLIT,
        MIN_SAMPLES_LEAF,
        ParamSpec {
            name: "criterion",
            ty: ParamType::Choice(&["gini", "entropy"]),
            default: Default_::Str("gini"),
            help: "split quality for classification (regression uses squared error)",
        },
        ParamSpec {
            name: "max_features",
            ty: ParamType::Choice(&["all", "sqrt", "log2", "third"]),
            default: Default_::Str("all"),
            help: "features tried at each split",
        },
        SPLIT,
        MAX_BINS,
    ],
};

pub(crate) static RANDOM_FOREST: KindSpec = KindSpec {
    kind: "random_forest",
    tasks: BOTH,
    backend: "runner (bagged CART; linfa-ensemble is classification only and not reproducible)",
    help: "random forest of CART trees with bootstrap samples and per-split feature sampling",
    feature: None,
    onnx: true,
    algorithm: 3,
    unscaled_from: Some(2),
    curve_axis: "step",
    params: class_params![
        ParamSpec {
            name: "n_trees",
            ty: ParamType::Int { min: 1, max: 5000 },
            default: Default_::Int(100),
            help: "number of trees",
        },
        ParamSpec {
            name: "max_depth",
            ty: ParamType::Int { min: 0, max: 1000 },
            default: Default_::Int(0),
            help: "maximum depth (0 = unlimited)",
        },
        MIN_SAMPLES_SPLIT,
        MIN_SAMPLES_LEAF,
        ParamSpec {
            name: "criterion",
            ty: ParamType::Choice(&["gini", "entropy"]),
            default: Default_::Str("gini"),
            help: "split quality for classification",
        },
        ParamSpec {
            name: "max_features",
            ty: ParamType::Choice(&["auto", "all", "sqrt", "log2", "third"]),
            default: Default_::Str("auto"),
            help: "features tried at each split; auto: the square root of their number for classification, all of them for regression (scikit-learn's defaults)",
        },
        ParamSpec {
            name: "bootstrap",
            ty: ParamType::Bool,
            default: Default_::Bool(true),
            help: "draw each tree's rows with replacement",
        },
        SPLIT,
        MAX_BINS,
        ParamSpec {
            name: "threads",
            ty: ParamType::Int { min: 0, max: 256 },
            default: Default_::Int(0),
            help: "threads for tree building (0 = the sweep's per-config share)",
        },
    ],
};

backend!(
    DecisionTreeBackend,
    DECISION_TREE,
    |cfg, data, ctx| fit_tree(cfg, data, ctx),
    |saved| load(saved.fitted)
);

backend!(
    RandomForestBackend,
    RANDOM_FOREST,
    |cfg, data, ctx| fit_forest(cfg, data, ctx),
    |saved| load(saved.fitted)
);

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Criterion {
    Gini,
    Entropy,
    SquaredError,
}

#[derive(Debug, Clone, Copy)]
struct TreeParams {
    max_depth: usize,
    min_samples_split: usize,
    min_samples_leaf: usize,
    criterion: Criterion,
    max_features: usize,
    n_classes: usize,
}

impl TreeParams {
    fn from_config(cfg: &ModelConfig, data: &TrainSet) -> Result<Self> {
        let p = data.x.ncols();
        let max_features = match (cfg.str("max_features")?, data.task) {
            ("auto", Task::Regression) => p,
            ("sqrt" | "auto", _) => (p as f64).sqrt().round() as usize,
            ("log2", _) => (p as f64).log2().round() as usize,
            ("third", _) => p / 3,
            _ => p,
        }
        .clamp(1, p.max(1));
        let criterion = match (data.task, cfg.str("criterion")?) {
            (Task::Regression, _) => Criterion::SquaredError,
            (_, "entropy") => Criterion::Entropy,
            _ => Criterion::Gini,
        };
        let depth = cfg.int("max_depth")? as usize;
        Ok(TreeParams {
            max_depth: if depth == 0 { usize::MAX } else { depth },
            min_samples_split: cfg.int("min_samples_split")? as usize,
            min_samples_leaf: cfg.int("min_samples_leaf")? as usize,
            criterion,
            max_features,
            n_classes: data.n_classes,
        })
    }
}

/// A node of a tree, as the ONNX export reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Node {
    /// Class probabilities (classification) or a single mean (regression).
    Leaf(Vec<f64>),
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
}

/// A fitted tree; saved packed (see `packed`).
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
    /// Total weighted impurity decrease of the splits on each feature.
    importance: Vec<f64>,
}

impl Tree {
    /// The nodes, the root first; a split's children are indexes into them.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    fn leaf(&self, row: ArrayView1<f64>) -> &[f64] {
        self.leaf_from(0, row)
    }

    /// The leaf `row` reaches from node `start`.
    fn leaf_from(&self, start: usize, row: ArrayView1<f64>) -> &[f64] {
        self.values(self.walk_from(start, row, |_, _| {}))
    }

    /// The node of the leaf `row` reaches from node `start`; `on_split(node, feature)` sees each
    /// split on the way.
    fn walk_from(
        &self,
        start: usize,
        row: ArrayView1<f64>,
        mut on_split: impl FnMut(usize, usize),
    ) -> usize {
        let mut i = start;
        while let Node::Split {
            feature,
            threshold,
            left,
            right,
        } = &self.nodes[i]
        {
            on_split(i, *feature);
            i = if row[*feature] <= *threshold {
                *left
            } else {
                *right
            };
        }
        i
    }

    /// The values of leaf node `i` (none for a split).
    fn values(&self, i: usize) -> &[f64] {
        match &self.nodes[i] {
            Node::Leaf(v) => v,
            Node::Split { .. } => &[],
        }
    }
}

/// Impurity of a node times its weight (so children's values add up).
fn weighted_impurity(criterion: Criterion, counts: &[f64], total: f64, sum_sq: f64) -> f64 {
    if total <= 0.0 {
        return 0.0;
    }
    match criterion {
        Criterion::Gini => total - sum_sq / total,
        Criterion::Entropy => {
            let mut h = 0.0;
            for c in counts {
                if *c > 0.0 {
                    let p = c / total;
                    h -= p * p.ln();
                }
            }
            total * h
        }
        Criterion::SquaredError => unreachable!(),
    }
}

struct Builder<'a> {
    x: ArrayView2<'a, f64>,
    y: &'a [f64],
    w: &'a [f64],
    params: TreeParams,
    nodes: Vec<Node>,
    importance: Vec<f64>,
}

impl Builder<'_> {
    fn leaf_value(&self, rows: &[usize]) -> Vec<f64> {
        if self.params.criterion == Criterion::SquaredError {
            let (mut sw, mut swy) = (0.0, 0.0);
            for &r in rows {
                sw += self.w[r];
                swy += self.w[r] * self.y[r];
            }
            vec![if sw > 0.0 { swy / sw } else { 0.0 }]
        } else {
            let mut counts = vec![0.0; self.params.n_classes];
            for &r in rows {
                counts[self.y[r] as usize] += self.w[r];
            }
            let total: f64 = counts.iter().sum();
            if total > 0.0 {
                counts.iter_mut().for_each(|c| *c /= total);
            }
            counts
        }
    }

    /// Best split of `rows` over `features`: (feature, threshold, gain). Strict improvement keeps
    /// the first best found, so ties go to the earlier feature and the lower threshold.
    fn best_split(&self, rows: &[usize], features: &[usize]) -> Option<(usize, f64, f64)> {
        let p = &self.params;
        let n = rows.len();
        let mut order: Vec<usize> = rows.to_vec();
        let mut best: Option<(usize, f64)> = None;
        let mut best_score = f64::INFINITY;
        let k = p.n_classes;
        // Parent statistics.
        let mut parent_counts = vec![0.0; k.max(1)];
        let (mut tw, mut twy, mut twyy) = (0.0, 0.0, 0.0);
        for &r in rows {
            let (w, y) = (self.w[r], self.y[r]);
            tw += w;
            if p.criterion == Criterion::SquaredError {
                twy += w * y;
                twyy += w * y * y;
            } else {
                parent_counts[y as usize] += w;
            }
        }
        let parent_score = if p.criterion == Criterion::SquaredError {
            twyy - twy * twy / tw
        } else {
            let sq: f64 = parent_counts.iter().map(|c| c * c).sum();
            weighted_impurity(p.criterion, &parent_counts, tw, sq)
        };
        let mut left = vec![0.0; k.max(1)];
        for &f in features {
            order.sort_by(|a, b| self.x[[*a, f]].total_cmp(&self.x[[*b, f]]).then(a.cmp(b)));
            left.iter_mut().for_each(|c| *c = 0.0);
            let (mut lw, mut lwy, mut lwyy, mut lsq) = (0.0, 0.0, 0.0, 0.0);
            let mut rsq: f64 = parent_counts.iter().map(|c| c * c).sum();
            for i in 0..n - 1 {
                let r = order[i];
                let (w, y) = (self.w[r], self.y[r]);
                lw += w;
                if p.criterion == Criterion::SquaredError {
                    lwy += w * y;
                    lwyy += w * y * y;
                } else {
                    let c = y as usize;
                    let right_c = parent_counts[c] - left[c];
                    lsq += (left[c] + w).powi(2) - left[c].powi(2);
                    rsq += (right_c - w).powi(2) - right_c.powi(2);
                    left[c] += w;
                }
                let (v, v_next) = (self.x[[r, f]], self.x[[order[i + 1], f]]);
                if v_next <= v || i + 1 < p.min_samples_leaf || n - i - 1 < p.min_samples_leaf {
                    continue;
                }
                let rw = tw - lw;
                let score = match p.criterion {
                    Criterion::SquaredError => {
                        let (rwy, rwyy) = (twy - lwy, twyy - lwyy);
                        (lwyy - lwy * lwy / lw) + (rwyy - rwy * rwy / rw)
                    }
                    Criterion::Gini => (lw - lsq / lw) + (rw - rsq / rw),
                    Criterion::Entropy => {
                        let right: Vec<f64> = parent_counts
                            .iter()
                            .zip(&left)
                            .map(|(t, l)| t - l)
                            .collect();
                        weighted_impurity(p.criterion, &left, lw, lsq)
                            + weighted_impurity(p.criterion, &right, rw, rsq)
                    }
                };
                if score < best_score {
                    best_score = score;
                    let mut threshold = v + (v_next - v) / 2.0;
                    if threshold >= v_next {
                        threshold = v;
                    }
                    best = Some((f, threshold));
                }
            }
        }
        // A split must reduce impurity by more than rounding noise.
        if best_score < parent_score - 1e-12 * parent_score.abs().max(1.0) {
            best.map(|(f, t)| (f, t, parent_score - best_score))
        } else {
            None
        }
    }

    fn build(mut self, rows: Vec<usize>, rng: &mut SplitMix64) -> Tree {
        let p_total = self.x.ncols();
        let mut all_features: Vec<usize> = (0..p_total).collect();
        // (node index, rows, depth); node placeholders are filled in as they are built.
        self.nodes.push(Node::Leaf(Vec::new()));
        let mut stack = vec![(0usize, rows, 0usize)];
        while let Some((id, rows, depth)) = stack.pop() {
            let value = self.leaf_value(&rows);
            let pure = self.params.criterion != Criterion::SquaredError
                && value.iter().filter(|v| **v > 0.0).count() <= 1;
            if depth >= self.params.max_depth
                || rows.len() < self.params.min_samples_split
                || rows.len() < 2 * self.params.min_samples_leaf
                || pure
            {
                self.nodes[id] = Node::Leaf(value);
                continue;
            }
            let features = sample_features(&mut all_features, self.params.max_features, rng);
            match self.best_split(&rows, &features) {
                None => self.nodes[id] = Node::Leaf(value),
                Some((feature, threshold, gain)) => {
                    self.importance[feature] += gain;
                    let (l, r): (Vec<usize>, Vec<usize>) = rows
                        .iter()
                        .partition(|&&row| self.x[[row, feature]] <= threshold);
                    let left = self.nodes.len();
                    self.nodes.push(Node::Leaf(Vec::new()));
                    let right = self.nodes.len();
                    self.nodes.push(Node::Leaf(Vec::new()));
                    self.nodes[id] = Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    };
                    stack.push((right, r, depth + 1));
                    stack.push((left, l, depth + 1));
                }
            }
        }
        Tree {
            nodes: self.nodes,
            importance: self.importance,
        }
    }
}

/// How a config finds its splits. Runs recorded before algorithm version 3 knew only the exact
/// CART, and replay keeps it for them.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Splitter {
    Exact,
    Histogram { max_bins: usize },
}

impl Splitter {
    fn from_config(cfg: &ModelConfig) -> Result<Splitter> {
        if cfg.algorithm() < 3 {
            if cfg.params.contains_key("split") {
                bail!(
                    "{} `{}`: `split` needs the kind's algorithm version 3; this config was recorded with version {}, which splits exactly",
                    cfg.kind,
                    cfg.name,
                    cfg.algorithm()
                );
            }
            return Ok(Splitter::Exact);
        }
        Ok(match cfg.str("split")? {
            "exact" => Splitter::Exact,
            _ => Splitter::Histogram {
                max_bins: cfg.usize("max_bins")?,
            },
        })
    }

    /// The binned table histogram splits search, made once per fit.
    fn binned(self, data: &TrainSet, seed: u64) -> Option<hist::Binned> {
        match self {
            Splitter::Exact => None,
            Splitter::Histogram { max_bins } => Some(hist::Binned::new(data.x, max_bins, seed)),
        }
    }
}

/// A tree's rows as weights: a bootstrap sample's count of each row multiplies its weight (the
/// rows drawn, ascending, and every row's weight), or every row once.
fn weighted_rows<'w>(
    w: &'w [f64],
    bootstrap: bool,
    rng: &mut SplitMix64,
) -> (Vec<u32>, std::borrow::Cow<'w, [f64]>) {
    let n = w.len();
    if !bootstrap {
        return ((0..n as u32).collect(), std::borrow::Cow::Borrowed(w));
    }
    let mut counts = vec![0u32; n];
    for _ in 0..n {
        counts[rng.below(n)] += 1;
    }
    let rows = (0..n as u32).filter(|r| counts[*r as usize] > 0).collect();
    let weights = w.iter().zip(&counts).map(|(w, c)| w * *c as f64).collect();
    (rows, std::borrow::Cow::Owned(weights))
}

/// The features a node may split on: a uniform sample of `k` (a partial Fisher-Yates shuffle
/// of `all`), or every feature.
fn sample_features(all: &mut [usize], k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    if k >= all.len() {
        return all.to_vec();
    }
    for i in 0..k {
        let j = i + rng.below(all.len() - i);
        all.swap(i, j);
    }
    all[..k].to_vec()
}

fn row_weights(cfg: &ModelConfig, data: &TrainSet) -> Result<Vec<f64>> {
    Ok(match data.class_weights(cfg)? {
        Some(w) => data.class_labels().iter().map(|c| w[*c]).collect(),
        None => vec![1.0; data.y.len()],
    })
}

fn grow<'a>(
    x: ArrayView2<'a, f64>,
    y: &'a [f64],
    w: &'a [f64],
    params: TreeParams,
    rows: Vec<usize>,
    rng: &mut SplitMix64,
) -> Tree {
    Builder {
        x,
        y,
        w,
        params,
        nodes: Vec::new(),
        importance: vec![0.0; x.ncols()],
    }
    .build(rows, rng)
}

#[derive(Serialize, Deserialize)]
pub struct TreeEnsemble {
    task: Task,
    n_classes: usize,
    trees: Vec<Tree>,
}

/// Rows a forest predicts tree by tree before the next rows.
const PREDICT_BLOCK: usize = 64;

impl TreeEnsemble {
    /// The prediction of `n` rows whose leaf in tree `t` for row `i` is `leaf(t, i)`: each row
    /// adds its trees' leaves in the trees' order.
    fn predict_by<'t>(&'t self, n: usize, leaf: impl Fn(usize, usize) -> &'t [f64]) -> Prediction {
        let trees = self.trees.len();
        match self.task {
            Task::Regression => {
                let values = (0..n)
                    .map(|i| {
                        let s: f64 = (0..trees).map(|t| leaf(t, i)[0]).sum();
                        s / trees as f64
                    })
                    .collect();
                Prediction {
                    values,
                    proba: None,
                }
            }
            Task::Classification => {
                let mut proba = Array2::zeros((n, self.n_classes));
                // A block of rows through one tree at a time (the tree stays in cache); each
                // row still adds its trees' leaves in the trees' order.
                for start in (0..n).step_by(PREDICT_BLOCK) {
                    let rows = start..(start + PREDICT_BLOCK).min(n);
                    for t in 0..trees {
                        for i in rows.clone() {
                            for (k, v) in leaf(t, i).iter().enumerate() {
                                proba[[i, k]] += v;
                            }
                        }
                    }
                }
                proba.mapv_inplace(|v| v / trees as f64);
                let values = (0..n)
                    .map(|i| argmax(proba.row(i).iter().copied()) as f64)
                    .collect();
                Prediction {
                    values,
                    proba: Some(proba),
                }
            }
        }
    }
}

impl FittedModel for TreeEnsemble {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        Ok(self.predict_by(x.nrows(), |t, i| self.trees[t].leaf(x.row(i))))
    }

    fn column_shuffles<'a>(&'a self, x: ArrayView2<f64>) -> Option<Box<dyn ColumnShuffles + 'a>> {
        let walked = shuffles::Walked::new(self, x)?;
        Some(Box::new(walked))
    }

    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }

    fn feature_importance(&self) -> Vec<(&'static str, Vec<f64>)> {
        // Mean decrease in impurity, normalised to sum to 1 (as scikit-learn reports it).
        let p = self.trees.first().map(|t| t.importance.len()).unwrap_or(0);
        let mut total = vec![0.0; p];
        for t in &self.trees {
            let s: f64 = t.importance.iter().sum();
            if s > 0.0 {
                for (a, b) in total.iter_mut().zip(&t.importance) {
                    *a += b / s;
                }
            }
        }
        let s: f64 = total.iter().sum();
        if s > 0.0 {
            total.iter_mut().for_each(|v| *v /= s);
        }
        vec![("impurity", total)]
    }
}

pub fn load(value: &serde_json::Value) -> Result<Box<dyn FittedModel>> {
    Ok(Box::new(TreeEnsemble::deserialize(value)?))
}

/// The trees of a saved tree or forest (either saved form).
pub fn saved_trees(fitted: &serde_json::Value) -> Result<Vec<Tree>> {
    Ok(Vec::<Tree>::deserialize(&fitted["trees"])?)
}

pub fn fit_tree(
    cfg: &ModelConfig,
    data: &TrainSet,
    ctx: &FitContext,
) -> Result<Box<dyn FittedModel>> {
    let params = TreeParams::from_config(cfg, data)?;
    let y: Vec<f64> = data.y.to_vec();
    let w = row_weights(cfg, data)?;
    let mut rng = SplitMix64::derive(ctx.seed, 0);
    let tree = match Splitter::from_config(cfg)?.binned(data, ctx.seed) {
        None => grow(
            data.x.view(),
            &y,
            &w,
            params,
            (0..y.len()).collect(),
            &mut rng,
        ),
        Some(binned) => {
            let grower = hist::Grower {
                binned: &binned,
                y: &y,
                params,
                threads: ctx.threads.max(1),
            };
            grower.grow((0..y.len() as u32).collect(), &w, &mut rng)
        }
    };
    Ok(Box::new(TreeEnsemble {
        task: data.task,
        n_classes: data.n_classes,
        trees: vec![tree],
    }))
}

pub fn fit_forest(
    cfg: &ModelConfig,
    data: &TrainSet,
    ctx: &FitContext,
) -> Result<Box<dyn FittedModel>> {
    let params = TreeParams::from_config(cfg, data)?;
    let y: Vec<f64> = data.y.to_vec();
    let w = row_weights(cfg, data)?;
    let n_trees = cfg.int("n_trees")? as usize;
    let bootstrap = cfg.bool("bootstrap")?;
    let threads = match cfg.int("threads")? {
        0 => ctx.threads.max(1),
        t => t as usize,
    }
    .min(n_trees);
    let n = y.len();
    let binned = Splitter::from_config(cfg)?.binned(data, ctx.seed);
    // Tree i draws only from its own stream, so the forest is the same at any thread count.
    let build_one = |i: usize| {
        let mut rng = SplitMix64::derive(ctx.seed, i as u64 + 1);
        if let Some(binned) = &binned {
            let (rows, weights) = weighted_rows(&w, bootstrap, &mut rng);
            let grower = hist::Grower {
                binned,
                y: &y,
                params,
                threads: 1,
            };
            return grower.grow(rows, &weights, &mut rng);
        }
        let rows: Vec<usize> = if bootstrap {
            (0..n).map(|_| rng.below(n)).collect()
        } else {
            (0..n).collect()
        };
        grow(data.x.view(), &y, &w, params, rows, &mut rng)
    };
    let mut trees: Vec<Option<Tree>> = (0..n_trees).map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let build_one = &build_one;
                s.spawn(move || {
                    (t..n_trees)
                        .step_by(threads)
                        .map(|i| (i, build_one(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A builder that panicked leaves its trees unbuilt, reported below.
            for (i, tree) in h.join().unwrap_or_default() {
                trees[i] = Some(tree);
            }
        }
    });
    let trees = trees
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow::anyhow!("random forest: a tree-building thread failed"))?;
    Ok(Box::new(TreeEnsemble {
        task: data.task,
        n_classes: data.n_classes,
        trees,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ParamValue;
    use ndarray::{array, Array1};

    fn cfg(kind: &str, overrides: &[(&str, ParamValue)]) -> ModelConfig {
        crate::models::test_config(kind, overrides)
    }

    /// A config as a run of algorithm version 2 recorded it: no `split` or `max_bins`.
    fn recorded_v2(kind: &str, overrides: &[(&str, ParamValue)]) -> ModelConfig {
        let mut c = cfg(kind, overrides);
        c.params.remove("split");
        c.params.remove("max_bins");
        c.algorithm = Some(2);
        c
    }

    fn with(c: &ModelConfig, key: &str, value: ParamValue) -> ModelConfig {
        let mut c = c.clone();
        c.params.insert(key.into(), value);
        c
    }

    /// A noisy regression table with many distinct values per feature, so binning changes splits.
    fn wavy(n: usize) -> (Array2<f64>, Array1<f64>) {
        let x = Array2::from_shape_fn((n, 3), |(i, j)| ((i * (7 + j) * 7919) % 1009) as f64 / 7.0);
        let y = (0..n)
            .map(|i| {
                let noise = ((i * 2_654_435_761) % 1000) as f64 / 500.0 - 1.0;
                (x[[i, 0]] / 20.0).sin() * 10.0 + x[[i, 1]] / 50.0 + noise
            })
            .collect();
        (x, y)
    }

    #[test]
    fn runs_recorded_with_version_2_keep_the_exact_cart() {
        let (x, y) = wavy(600);
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Regression,
            n_classes: 0,
            labels: None,
        };
        let ctx = FitContext::new(5, 1);
        for kind in ["decision_tree", "random_forest"] {
            let small = [("n_trees", ParamValue::Int(4))];
            let overrides: &[(&str, ParamValue)] =
                if kind == "random_forest" { &small } else { &[] };
            let fit = |c: &ModelConfig| {
                let m = if kind == "decision_tree" {
                    fit_tree(c, &data, &ctx)
                } else {
                    fit_forest(c, &data, &ctx)
                };
                m.unwrap().to_json().unwrap()
            };
            let current = cfg(kind, overrides);
            let exact = fit(&with(&current, "split", ParamValue::Str("exact".into())));
            assert_eq!(fit(&recorded_v2(kind, overrides)), exact, "{kind}");
            assert_ne!(
                fit(&current),
                exact,
                "{kind}: histogram splits differ on 1009 values"
            );
            let mut asks_histogram = recorded_v2(kind, overrides);
            asks_histogram
                .params
                .insert("split".into(), ParamValue::Str("histogram".into()));
            let err = fit_tree(&asks_histogram, &data, &ctx)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("algorithm version 3"), "{err}");
        }
    }

    #[test]
    fn a_histogram_tree_is_identical_at_any_thread_count() {
        // 30,000 rows x 8 features: the root's search is large enough to run on threads.
        let n = 30_000;
        let x = Array2::from_shape_fn((n, 8), |(i, j)| ((i * (7 + j) * 7919) % 4001) as f64);
        let y: Array1<f64> = (0..n)
            .map(|i| ((x[[i, 3]] / 300.0).sin() > 0.2) as u8 as f64)
            .collect();
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Classification,
            n_classes: 2,
            labels: None,
        };
        let c = cfg("decision_tree", &[]);
        let one = fit_tree(&c, &data, &FitContext::new(1, 1)).unwrap();
        let three = fit_tree(&c, &data, &FitContext::new(1, 3)).unwrap();
        assert_eq!(one.to_json().unwrap(), three.to_json().unwrap());
    }

    #[test]
    fn histogram_splits_match_exact_ones_when_values_are_few() {
        // 40 distinct values per feature (fewer than the 255 bins): the same candidate splits.
        let n = 400;
        let x = Array2::from_shape_fn((n, 2), |(i, j)| ((i * (3 + j)) % 40) as f64);
        let y: Array1<f64> = (0..n)
            .map(|i| (((i * 3) % 40) as f64 - 20.0).abs())
            .collect();
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Regression,
            n_classes: 0,
            labels: None,
        };
        let ctx = FitContext::new(2, 1);
        let c = cfg("decision_tree", &[("max_depth", ParamValue::Int(4))]);
        let hist = fit_tree(&c, &data, &ctx)
            .unwrap()
            .predict(x.view())
            .unwrap();
        let exact = with(&c, "split", ParamValue::Str("exact".into()));
        let exact = fit_tree(&exact, &data, &ctx)
            .unwrap()
            .predict(x.view())
            .unwrap();
        assert_eq!(hist.values, exact.values);
    }

    #[test]
    fn a_histogram_forest_fits_as_well_as_the_exact_one() {
        let (x, y) = wavy(2000);
        let (train, test) = (
            x.slice(ndarray::s![..1500, ..]),
            x.slice(ndarray::s![1500.., ..]),
        );
        let (y_train, y_test) = (y.slice(ndarray::s![..1500]), y.slice(ndarray::s![1500..]));
        let data = TrainSet {
            x: train,
            y: y_train,
            task: Task::Regression,
            n_classes: 0,
            labels: None,
        };
        let c = cfg("random_forest", &[("n_trees", ParamValue::Int(30))]);
        let mae = |c: &ModelConfig| {
            let p = fit_forest(c, &data, &FitContext::new(3, 2))
                .unwrap()
                .predict(test)
                .unwrap();
            p.values
                .iter()
                .zip(y_test)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / 500.0
        };
        let (hist, exact) = (
            mae(&c),
            mae(&with(&c, "split", ParamValue::Str("exact".into()))),
        );
        assert!(
            hist < exact * 1.05,
            "histogram MAE {hist} against exact {exact}"
        );
    }

    #[test]
    fn tree_separates_a_threshold_exactly() {
        let x = array![[1.0], [2.0], [3.0], [10.0], [11.0], [12.0]];
        let y: Array1<f64> = array![0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Classification,
            n_classes: 2,
            labels: None,
        };
        let m = fit_tree(&cfg("decision_tree", &[]), &data, &FitContext::new(1, 1)).unwrap();
        let p = m
            .predict(array![[0.0], [6.4], [6.6], [20.0]].view())
            .unwrap();
        assert_eq!(p.values, vec![0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn regression_tree_fits_steps() {
        let x = array![[0.0], [1.0], [2.0], [3.0]];
        let y: Array1<f64> = array![5.0, 5.0, 9.0, 9.0];
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Regression,
            n_classes: 0,
            labels: None,
        };
        let m = fit_tree(&cfg("decision_tree", &[]), &data, &FitContext::new(1, 1)).unwrap();
        assert_eq!(
            m.predict(x.view()).unwrap().values,
            vec![5.0, 5.0, 9.0, 9.0]
        );
    }

    #[test]
    fn forest_is_identical_at_any_thread_count() {
        let n = 200;
        let x = Array2::from_shape_fn((n, 4), |(i, j)| ((i * 7 + j * 13) % 17) as f64);
        let y: Array1<f64> = (0..n).map(|i| ((i * 7) % 17 > 8) as u8 as f64).collect();
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Classification,
            n_classes: 2,
            labels: None,
        };
        let c = cfg("random_forest", &[("n_trees", ParamValue::Int(20))]);
        let a = fit_forest(&c, &data, &FitContext::new(9, 1)).unwrap();
        let b = fit_forest(&c, &data, &FitContext::new(9, 3)).unwrap();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
    }

    #[test]
    fn forest_default_features_are_all_for_regression_and_the_root_for_classes() {
        let n = 120;
        let x = Array2::from_shape_fn((n, 9), |(i, j)| ((i * 7 + j * 13) % 19) as f64);
        let y: Array1<f64> = (0..n).map(|i| ((i * 7) % 19) as f64).collect();
        let same = |task: Task, k: usize, explicit: &str| {
            let data = TrainSet {
                x: x.view(),
                y: y.view(),
                task,
                n_classes: k,
                labels: None,
            };
            let trees = [("n_trees", ParamValue::Int(5))];
            let by_default = cfg("random_forest", &trees);
            assert_eq!(by_default.str("max_features").unwrap(), "auto");
            let mut named = by_default.clone();
            named
                .params
                .insert("max_features".into(), ParamValue::Str(explicit.into()));
            let a = fit_forest(&by_default, &data, &FitContext::new(4, 1)).unwrap();
            let b = fit_forest(&named, &data, &FitContext::new(4, 1)).unwrap();
            a.to_json().unwrap() == b.to_json().unwrap()
        };
        assert!(same(Task::Regression, 0, "all"));
        assert!(!same(Task::Regression, 0, "sqrt"));
        assert!(same(Task::Classification, 19, "sqrt"));
    }
}
