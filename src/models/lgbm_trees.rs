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

/// One split: a row goes to `left` or `right`; a negative child `c` is leaf `!c`.
#[derive(Clone, Copy)]
struct Split {
    threshold: f64,
    feature: u32,
    /// LightGBM's missing type: 0 none, 1 zero, 2 NaN.
    missing: u8,
    /// Where a missing value goes.
    default_left: bool,
    left: i32,
    right: i32,
}

impl Split {
    /// LightGBM's `NumericalDecision`.
    fn next(&self, value: f64) -> i32 {
        let value = if value.is_nan() && self.missing != 2 {
            0.0
        } else {
            value
        };
        let is_missing = match self.missing {
            0 => false,
            1 => (-ZERO..=ZERO).contains(&value),
            _ => value.is_nan(),
        };
        let go_left = if is_missing {
            self.default_left
        } else {
            value <= self.threshold
        };
        if go_left {
            self.left
        } else {
            self.right
        }
    }

    /// [`Split::next`] where the split treats no value as missing: one comparison.
    fn plain_next(&self, value: f64) -> i32 {
        match value <= self.threshold {
            true => self.left,
            false => self.right,
        }
    }
}

struct Tree {
    splits: Vec<Split>,
    leaf: Vec<f64>,
}

impl Tree {
    fn value(&self, row: &[f64]) -> f64 {
        self.walk(row, Split::next)
    }

    /// [`Tree::value`] where no split treats a value as missing and the row has no NaN (a
    /// missing value is then 0, as LightGBM reads it): one comparison a split.
    fn plain_value(&self, row: &[f64]) -> f64 {
        self.walk(row, Split::plain_next)
    }

    /// The row's leaf value by the model's rule (`plain`: [`Tree::plain_value`]).
    fn value_by(&self, row: &[f64], plain: bool) -> f64 {
        match plain {
            true => self.plain_value(row),
            false => self.value(row),
        }
    }

    /// The leaf the row reaches, each split sending it on by `next(split, the row's value)`.
    #[inline(always)]
    fn walk(&self, row: &[f64], mut next: impl FnMut(&Split, f64) -> i32) -> f64 {
        if self.splits.is_empty() {
            return self.leaf[0];
        }
        let mut node = 0i32;
        while node >= 0 {
            let split = &self.splits[node as usize];
            node = next(split, row[split.feature as usize]);
        }
        self.leaf[!node as usize]
    }

    /// [`Tree::walk`] by the model's rule (`plain`: [`Tree::plain_value`]), telling `read` each
    /// feature a split on the path reads.
    fn walk_reading(&self, row: &[f64], plain: bool, mut read: impl FnMut(u32)) -> f64 {
        let next = |split: &Split, value: f64| {
            read(split.feature);
            match plain {
                true => split.plain_next(value),
                false => split.next(value),
            }
        };
        self.walk(row, next)
    }

    /// Whether every split compares the value alone (LightGBM's missing type none).
    fn is_plain(&self) -> bool {
        self.splits.iter().all(|s| s.missing == 0)
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
    /// Every tree [`Tree::is_plain`]: rows are read with NaN as 0 and walked by
    /// [`Tree::plain_value`].
    plain: bool,
}

/// The most row-tree pairs [`Trees::walked`] keeps (each a leaf value and a few column
/// entries: about 50 MB at most).
const WALKED_MAX: usize = 1 << 21;

/// Fixed rows walked through every tree, for their predictions with one column changed (the
/// permutation importance): only a path that reads the column can end elsewhere, so only those
/// are walked again; every other tree's value is the one kept. Each row's sum runs over the
/// trees in their order, as [`Trees::predict`] does, so the predictions are the same bit for bit.
pub(crate) struct Walked<'a> {
    trees: &'a Trees,
    /// The leaf value of each row in each tree, `[tree * rows + row]`.
    values: Vec<f64>,
    /// Per column, the `[tree * rows + row]` whose path reads it, ascending.
    readers: Vec<Vec<u32>>,
}

impl Walked<'_> {
    /// [`Trees::predict`] of `rows`: the walked rows with `column` changed. Tree by tree over
    /// the rows, as [`Trees::predict`] walks them.
    pub(crate) fn predict_changed(&self, rows: &[f64], column: usize) -> Vec<f64> {
        let trees = self.trees;
        let (k, width) = (trees.per_iteration, trees.features);
        let cleaned = trees.cleaned(rows);
        let n = cleaned.len() / width.max(1);
        let mut changed = self.readers.get(column).into_iter().flatten().peekable();
        let mut out = vec![0.0f64; n * k];
        for (t, tree) in trees.trees.iter().enumerate() {
            let class = t % k;
            for (r, sum) in out.chunks_mut(k).enumerate() {
                let at = t * n + r;
                sum[class] += if changed.next_if(|c| **c as usize == at).is_some() {
                    tree.value_by(&cleaned[r * width..(r + 1) * width], trees.plain)
                } else {
                    self.values[at]
                };
            }
        }
        for sum in out.chunks_mut(k) {
            trees.convert(sum);
        }
        out
    }
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
        return (leaf.len() == 1).then_some(Tree {
            splits: Vec::new(),
            leaf,
        });
    }
    let feature: Vec<u32> = list(&fields, "split_feature")?;
    let threshold: Vec<f64> = list(&fields, "threshold")?;
    let decision: Vec<u8> = list(&fields, "decision_type")?;
    let left: Vec<i32> = list(&fields, "left_child")?;
    let right: Vec<i32> = list(&fields, "right_child")?;
    let splits = leaves - 1;
    // A child split comes after its parent (so a walk down always ends), a leaf is in range.
    let child_ok = |parent: usize, c: i32| {
        (c >= 0 && (c as usize) > parent && (c as usize) < splits)
            || (c < 0 && (!c as usize) < leaves)
    };
    let sound = leaf.len() == leaves
        && [feature.len(), threshold.len(), decision.len(), left.len(), right.len()]
            .iter()
            .all(|n| *n == splits)
        && feature.iter().all(|f| (*f as usize) < features)
        // Bit 0: a categorical split, which runner does not train.
        && decision.iter().all(|d| d & 1 == 0)
        && (0..splits).all(|i| child_ok(i, left[i]) && child_ok(i, right[i]));
    if !sound {
        return None;
    }
    let splits = (0..splits)
        .map(|i| Split {
            threshold: threshold[i],
            feature: feature[i],
            missing: (decision[i] >> 2) & 3,
            default_left: decision[i] & 2 != 0,
            left: left[i],
            right: right[i],
        })
        .collect();
    Some(Tree { splits, leaf })
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
                plain: trees.iter().all(Tree::is_plain),
                trees,
                per_iteration,
                features,
                output,
            },
        )
    }

    /// Whether no split of the model treats a value as missing (it was trained without any).
    #[cfg(test)]
    pub(crate) fn is_plain(&self) -> bool {
        self.plain
    }

    pub(crate) fn features(&self) -> usize {
        self.features
    }

    /// What LightGBM's `LGBM_BoosterPredictForMat` gives for row-major `rows` of `features()`
    /// values: per row, one value, or one probability per class for more than two. Blocks of
    /// rows are spread over `threads` threads; each row's arithmetic is the same on any number.
    pub(crate) fn predict(&self, rows: &[f64], threads: usize) -> Vec<f64> {
        const BLOCK: usize = 256;
        let (k, width) = (self.per_iteration, self.features);
        let cleaned = self.cleaned(rows);
        let mut out = vec![0.0f64; cleaned.len() / width * k];
        let mut blocks: Vec<(&[f64], &mut [f64])> = (cleaned.chunks(BLOCK * width))
            .zip(out.chunks_mut(BLOCK * k))
            .collect();
        let per_thread = blocks.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            let mut parts = blocks.chunks_mut(per_thread);
            let first = parts.next();
            for part in parts {
                s.spawn(move || self.predict_blocks(part));
            }
            if let Some(part) = first {
                self.predict_blocks(part);
            }
        });
        out
    }

    /// The rows as LightGBM reads a dense row: values within its zero threshold are zero (and a
    /// NaN is zero to a split that has no missing type, which is every split of a plain model).
    fn cleaned(&self, rows: &[f64]) -> Vec<f64> {
        (rows.iter())
            .map(|v| {
                if v.abs() > ZERO || (v.is_nan() && !self.plain) {
                    *v
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// `rows` walked through every tree, remembering each leaf value and which paths read each
    /// column (see [`Walked`]); `None` beyond [`WALKED_MAX`] row-tree pairs.
    pub(crate) fn walked(&self, rows: &[f64]) -> Option<Walked<'_>> {
        let cleaned = self.cleaned(rows);
        let (n, count) = (cleaned.len() / self.features.max(1), self.trees.len());
        if n * count > WALKED_MAX {
            return None;
        }
        let mut values = Vec::with_capacity(n * count);
        let mut readers = vec![Vec::new(); self.features];
        // The last pair that recorded each column: a path reads a column once or more.
        let mut last = vec![u32::MAX; self.features];
        for (t, tree) in self.trees.iter().enumerate() {
            for (r, row) in cleaned.chunks(self.features).enumerate() {
                let at = (t * n + r) as u32;
                values.push(tree.walk_reading(row, self.plain, |f| {
                    if last[f as usize] != at {
                        last[f as usize] = at;
                        readers[f as usize].push(at);
                    }
                }));
            }
        }
        Some(Walked {
            trees: self,
            values,
            readers,
        })
    }

    /// Each block's rows through every tree, a tree at a time, then converted.
    fn predict_blocks(&self, blocks: &mut [(&[f64], &mut [f64])]) {
        let k = self.per_iteration;
        for (block, sums) in blocks.iter_mut() {
            for (t, tree) in self.trees.iter().enumerate() {
                let class = t % k;
                let rows = block.chunks(self.features).zip(sums.chunks_mut(k));
                if self.plain {
                    rows.for_each(|(row, sum)| sum[class] += tree.plain_value(row));
                } else {
                    rows.for_each(|(row, sum)| sum[class] += tree.value(row));
                }
            }
            for sum in sums.chunks_mut(k) {
                self.convert(sum);
            }
        }
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
