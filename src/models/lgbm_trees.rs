//! A LightGBM model read from its text format and predicted here, tree by tree over a block of
//! rows: LightGBM's own predictor walks all of a row's trees before the next row, which for
//! the wine's 1,200 trees reads every tree from memory again for each row (a permutation
//! importance predicts each fold a dozen times). The arithmetic is LightGBM's, in its order, so
//! the probabilities are the same bit for bit (a test compares them with LightGBM's own).
//!
//! Only what runner trains is read: numerical splits, no linear trees, and the objectives
//! `regression`, `binary` and `multiclass`. Any other model gives `None` and is predicted by
//! LightGBM.

/// LightGBM's `kZeroThreshold`: smaller values are zero to its predictor.
const ZERO: f64 = 1e-35_f32 as f64;

/// One tree: split `i` sends a row to `left[i]` or `right[i]`; a negative child `c` is leaf `!c`.
struct Tree {
    feature: Vec<usize>,
    threshold: Vec<f64>,
    /// LightGBM's decision type: bit 1 missing values go left, bits 2-3 the missing type.
    decision: Vec<u8>,
    left: Vec<i32>,
    right: Vec<i32>,
    leaf: Vec<f64>,
}

impl Tree {
    fn value(&self, row: &[f64]) -> f64 {
        if self.feature.is_empty() {
            return self.leaf[0];
        }
        let mut node = 0i32;
        while node >= 0 {
            let i = node as usize;
            node = self.next(i, row[self.feature[i]]);
        }
        self.leaf[!node as usize]
    }

    /// LightGBM's `NumericalDecision`.
    fn next(&self, i: usize, value: f64) -> i32 {
        let missing = (self.decision[i] >> 2) & 3;
        let value = if value.is_nan() && missing != 2 {
            0.0
        } else {
            value
        };
        let is_missing = match missing {
            1 => (-ZERO..=ZERO).contains(&value),
            2 => value.is_nan(),
            _ => false,
        };
        let go_left = if is_missing {
            self.decision[i] & 2 != 0
        } else {
            value <= self.threshold[i]
        };
        if go_left {
            self.left[i]
        } else {
            self.right[i]
        }
    }
}

enum Output {
    Identity,
    Sigmoid(f64),
    Softmax,
}

pub(crate) struct Trees {
    trees: Vec<Tree>,
    per_iteration: usize,
    features: usize,
    output: Output,
}

fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .take_while(|l| !l.starts_with("Tree="))
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn list<T: std::str::FromStr>(fields: &[(&str, &str)], key: &str) -> Option<Vec<T>> {
    let (_, values) = fields.iter().find(|(k, _)| *k == key)?;
    values.split(' ').map(|v| v.parse().ok()).collect()
}

fn tree(block: &str, features: usize) -> Option<Tree> {
    let fields: Vec<(&str, &str)> = block.lines().filter_map(|l| l.split_once('=')).collect();
    let one = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let leaves: usize = one("num_leaves")?.parse().ok()?;
    if one("num_cat") != Some("0") || one("is_linear").is_some_and(|v| v != "0") {
        return None;
    }
    let leaf: Vec<f64> = list(&fields, "leaf_value")?;
    if leaves <= 1 {
        return (leaf.len() == 1).then(|| Tree {
            feature: Vec::new(),
            threshold: Vec::new(),
            decision: Vec::new(),
            left: Vec::new(),
            right: Vec::new(),
            leaf,
        });
    }
    let tree = Tree {
        feature: list(&fields, "split_feature")?,
        threshold: list(&fields, "threshold")?,
        decision: list(&fields, "decision_type")?,
        left: list(&fields, "left_child")?,
        right: list(&fields, "right_child")?,
        leaf,
    };
    let splits = leaves - 1;
    let child_ok =
        |c: &i32| (*c >= 0 && (*c as usize) < splits) || (*c < 0 && (!*c as usize) < leaves);
    let sound = tree.leaf.len() == leaves
        && [
            tree.threshold.len(),
            tree.decision.len(),
            tree.left.len(),
            tree.right.len(),
        ]
        .iter()
        .all(|n| *n == splits)
        && tree.feature.iter().all(|f| *f < features)
        && tree.decision.iter().all(|d| d & 1 == 0)
        && tree.left.iter().chain(&tree.right).all(child_ok);
    sound.then_some(tree)
}

impl Trees {
    /// The model in `text`, or `None` where it uses what this reader does not know.
    pub(crate) fn parse(text: &str) -> Option<Trees> {
        let per_iteration: usize = header(text, "num_tree_per_iteration")?.parse().ok()?;
        let features = header(text, "max_feature_idx")?.parse::<usize>().ok()? + 1;
        if header(text, "average_output").is_some() {
            return None;
        }
        let objective = header(text, "objective")?;
        let output = match objective.split(' ').collect::<Vec<_>>().as_slice() {
            ["regression"] => Output::Identity,
            ["binary", sigmoid] => Output::Sigmoid(sigmoid.strip_prefix("sigmoid:")?.parse().ok()?),
            ["multiclass", classes]
                if classes.strip_prefix("num_class:")? == per_iteration.to_string() =>
            {
                Output::Softmax
            }
            _ => return None,
        };
        let body = text.split("end of trees").next()?;
        let trees = body
            .split("\nTree=")
            .skip(1)
            .map(|block| tree(block, features))
            .collect::<Option<Vec<_>>>()?;
        (per_iteration > 0 && !trees.is_empty() && trees.len() % per_iteration == 0).then_some(
            Trees {
                trees,
                per_iteration,
                features,
                output,
            },
        )
    }

    pub(crate) fn features(&self) -> usize {
        self.features
    }

    /// What LightGBM's `LGBM_BoosterPredictForMat` gives for row-major `rows` of `features()`
    /// values: per row, one value, or one probability per class for more than two.
    pub(crate) fn predict(&self, rows: &[f64]) -> Vec<f64> {
        let k = self.per_iteration;
        let width = self.features;
        // As LightGBM reads a dense row: values within its zero threshold are zero.
        let cleaned: Vec<f64> = (rows.iter())
            .map(|v| {
                if v.abs() > ZERO || v.is_nan() {
                    *v
                } else {
                    0.0
                }
            })
            .collect();
        let mut out = vec![0.0f64; cleaned.len() / width.max(1) * k];
        const BLOCK: usize = 256;
        for (block, sums) in cleaned.chunks(BLOCK * width).zip(out.chunks_mut(BLOCK * k)) {
            for (t, tree) in self.trees.iter().enumerate() {
                let class = t % k;
                for (row, sum) in block.chunks(width).zip(sums.chunks_mut(k)) {
                    sum[class] += tree.value(row);
                }
            }
        }
        for sum in out.chunks_mut(k) {
            self.convert(sum);
        }
        out
    }

    /// LightGBM's `ConvertOutput` of one row's raw scores.
    fn convert(&self, raw: &mut [f64]) {
        match self.output {
            Output::Identity => {}
            Output::Sigmoid(s) => {
                for v in raw.iter_mut() {
                    *v = 1.0 / (1.0 + (-s * *v).exp());
                }
            }
            Output::Softmax => {
                let max = raw.iter().skip(1).fold(raw[0], |m, v| v.max(m));
                let mut total = 0.0;
                for v in raw.iter_mut() {
                    *v = (*v - max).exp();
                    total += *v;
                }
                for v in raw.iter_mut() {
                    *v /= total;
                }
            }
        }
    }
}
