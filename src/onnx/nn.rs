//! The networks from their safetensors weights, in float like libtorch: standardisation, then
//! MLP Gemm layers, CNN convolutions or the ONNX LSTM, a dense head and the output.

use super::proto::*;
use crate::models::{ModelConfig, Task};
use anyhow::{anyhow, bail, Context, Result};

/// Float tensors by name: (shape, values).
pub(super) type Tensors = std::collections::BTreeMap<String, (Vec<i64>, Vec<f32>)>;

/// Tensors of a safetensors file (float32 only), by name; read with the `safetensors` crate
/// (the format libtorch's `VarStore::save` writes).
pub(super) fn safetensors(bytes: &[u8]) -> Result<Tensors> {
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
pub(super) struct Weights<'a> {
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
pub(super) fn network(
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
