//! The networks' optimisers from algorithm 2: Adam, AdamW and SGD with PyTorch's formulas and
//! defaults (as `torch.optim` writes them for one tensor), applied to every trainable weight at
//! once.
//! The weights and their gradients live in two flat tensors, each variable and its gradient a
//! view of its slice, so a step is about ten tensor ops whatever the number of layers, where
//! libtorch's optimiser issues about eight per weight tensor. On the wine networks (batches of
//! 64, layers of 64) a step's cost is libtorch's dispatch per op, not arithmetic.
//!
//! The results agree with libtorch's optimiser (algorithm 1) to float rounding, not bit for bit
//! (scalars folded in a different order; vectorised loops over one long vector round other
//! elements than loops over each tensor), so runs recorded with algorithm 1 replay with it.

use anyhow::{bail, Result};
use tch::{nn, Tensor};

/// The update rule, with libtorch's defaults for what runner does not expose.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule {
    /// Adam (L2 weight decay added to the gradient) or, `decoupled`, AdamW (weights shrunk by
    /// `lr * weight_decay` before the update). Betas 0.9 / 0.999, eps 1e-8, no AMSGrad.
    Adam {
        lr: f64,
        weight_decay: f64,
        decoupled: bool,
    },
    /// SGD with momentum (no dampening, no Nesterov) and L2 weight decay.
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    },
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

pub(crate) struct FlatOptimizer {
    rule: Rule,
    /// Every trainable weight, end to end; the variables are views of it.
    weights: Tensor,
    /// Their gradients, in the same layout once the first backward pass has made them.
    grads: Tensor,
    variables: Vec<Tensor>,
    grads_bound: bool,
    steps: i32,
    /// Adam's moving averages of the gradient and its square; SGD's momentum buffer is the first.
    first_moment: Option<Tensor>,
    second_moment: Tensor,
}

/// The slices of a flat tensor that hold each of `shapes`, viewed in those shapes.
fn views_of(flat: &Tensor, shapes: &[Vec<i64>]) -> Vec<Tensor> {
    let mut offset = 0;
    shapes
        .iter()
        .map(|shape| {
            let n: i64 = shape.iter().product();
            let view = flat.narrow(0, offset, n).view(shape.as_slice());
            offset += n;
            view
        })
        .collect()
}

fn shapes(tensors: &[Tensor]) -> Vec<Vec<i64>> {
    tensors.iter().map(|t| t.size()).collect()
}

impl FlatOptimizer {
    /// Moves the trainable variables of `vs` into one flat tensor (their values unchanged).
    pub(crate) fn new(vs: &nn::VarStore, rule: Rule) -> Result<FlatOptimizer> {
        let variables = vs.trainable_variables();
        if variables.is_empty() {
            bail!("a network without trainable weights");
        }
        let total: i64 = variables.iter().map(|v| v.numel() as i64).sum();
        let options = (variables[0].kind(), variables[0].device());
        let weights = Tensor::zeros([total], options);
        tch::no_grad(|| {
            for (variable, view) in variables
                .iter()
                .zip(views_of(&weights, &shapes(&variables)))
            {
                let mut view = view;
                view.copy_(variable);
                let mut variable = variable.shallow_clone();
                variable.set_data(&view);
            }
        });
        Ok(FlatOptimizer {
            rule,
            grads: Tensor::zeros([total], options),
            second_moment: Tensor::zeros([total], options),
            first_moment: None,
            weights,
            variables,
            grads_bound: false,
            steps: 0,
        })
    }

    /// Zeroes the gradients, runs the backward pass of `loss` and updates the weights.
    pub(crate) fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        if self.grads_bound {
            let _ = self.grads.zero_();
        }
        loss.f_backward()?;
        if !self.grads_bound {
            self.bind_grads()?;
        }
        tch::no_grad(|| self.step());
        Ok(())
    }

    /// After the first backward pass: copies each variable's gradient into the flat gradient
    /// and makes it a view of its slice, so later passes accumulate there.
    fn bind_grads(&mut self) -> Result<()> {
        let views = views_of(&self.grads, &shapes(&self.variables));
        tch::no_grad(|| -> Result<()> {
            for (variable, view) in self.variables.iter().zip(views) {
                let mut grad = variable.grad();
                if !grad.defined() {
                    bail!("a weight of shape {:?} got no gradient", variable.size());
                }
                let mut view = view;
                view.copy_(&grad);
                grad.set_data(&view);
            }
            Ok(())
        })?;
        self.grads_bound = true;
        Ok(())
    }

    fn step(&mut self) {
        self.steps += 1;
        match self.rule {
            Rule::Adam {
                lr,
                weight_decay,
                decoupled,
            } => self.adam(lr, weight_decay, decoupled),
            Rule::Sgd {
                lr,
                momentum,
                weight_decay,
            } => self.sgd(lr, momentum, weight_decay),
        }
    }

    /// The gradient with L2 weight decay added (`weight_decay` times the weights), as libtorch's
    /// Adam and SGD add it.
    fn grad_with_l2(&self, weight_decay: f64) -> Tensor {
        if weight_decay != 0.0 {
            &self.grads + &self.weights * weight_decay
        } else {
            self.grads.shallow_clone()
        }
    }

    fn adam(&mut self, lr: f64, weight_decay: f64, decoupled: bool) {
        let step = self.steps;
        let correction1 = 1.0 - BETA1.powi(step);
        let correction2 = 1.0 - BETA2.powi(step);
        let grad = self.grad_with_l2(if decoupled { 0.0 } else { weight_decay });
        if weight_decay != 0.0 && decoupled {
            let _ = self.weights.g_mul_scalar_(1.0 - lr * weight_decay);
        }
        let exp_avg = self
            .first_moment
            .get_or_insert_with(|| self.weights.zeros_like());
        let _ = exp_avg.lerp_(&grad, 1.0 - BETA1);
        let _ = self
            .second_moment
            .g_mul_scalar_(BETA2)
            .addcmul_(&(&grad * (1.0 - BETA2)), &grad);
        let denom = (self.second_moment.sqrt() / correction2.sqrt()) + EPS;
        let _ = self
            .weights
            .addcdiv_(&(&*exp_avg * (-lr / correction1)), &denom);
    }

    fn sgd(&mut self, lr: f64, momentum: f64, weight_decay: f64) {
        let grad = self.grad_with_l2(weight_decay);
        let grad = if momentum != 0.0 {
            match &mut self.first_moment {
                Some(buffer) => {
                    let _ = buffer.g_mul_scalar_(momentum).g_add_(&grad);
                    buffer.shallow_clone()
                }
                None => {
                    let buffer = grad.copy();
                    self.first_moment = Some(buffer.shallow_clone());
                    buffer
                }
            }
        } else {
            grad
        };
        let _ = self.weights.g_add_(&(grad * -lr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{Module, OptimizerConfig};
    use tch::{Device, Kind};

    /// A two-layer network trained `steps` steps on fixed data; its weights afterwards.
    fn train(flat: Option<Rule>, torch: Option<nn::Optimizer>, vs: &nn::VarStore) -> Vec<f32> {
        let root = vs.root();
        let net = nn::seq()
            .add(nn::linear(&root / "a", 5, 8, Default::default()))
            .add_fn(|x| x.tanh())
            .add(nn::linear(&root / "b", 8, 3, Default::default()));
        tch::manual_seed(7);
        let x = Tensor::randn([32, 5], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([32, 3], (Kind::Float, Device::Cpu));
        let mut flat = flat.map(|rule| FlatOptimizer::new(vs, rule).unwrap());
        let mut torch = torch;
        for _ in 0..30 {
            let loss = net.forward(&x).mse_loss(&y, tch::Reduction::Mean);
            match (&mut flat, &mut torch) {
                (Some(opt), _) => opt.backward_step(&loss).unwrap(),
                (_, Some(opt)) => opt.backward_step(&loss),
                _ => unreachable!(),
            }
        }
        let weights: Vec<Tensor> = vs.trainable_variables();
        let all = Tensor::cat(
            &weights.iter().map(|w| w.flatten(0, -1)).collect::<Vec<_>>(),
            0,
        );
        Vec::<f32>::try_from(all).unwrap()
    }

    fn same_start() -> nn::VarStore {
        tch::manual_seed(3);
        nn::VarStore::new(Device::Cpu)
    }

    /// Weights after 30 steps of the flat rule and of libtorch's optimiser: the largest
    /// difference, and the largest change from the start (which must be far larger).
    fn compare(rule: Rule, torch: impl OptimizerConfig) -> (f32, f32) {
        let _turn = crate::generator_turn();
        let (flat_vs, torch_vs, start_vs) = (same_start(), same_start(), same_start());
        let start = train(
            None,
            Some(nn::Sgd::default().build(&start_vs, 0.0).unwrap()),
            &start_vs,
        );
        let lr = match rule {
            Rule::Adam { lr, .. } | Rule::Sgd { lr, .. } => lr,
        };
        let flat = train(Some(rule), None, &flat_vs);
        let torch = train(None, Some(torch.build(&torch_vs, lr).unwrap()), &torch_vs);
        let largest = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        };
        (largest(&flat, &torch), largest(&flat, &start))
    }

    fn assert_libtorchs_rule(rule: Rule, torch: impl OptimizerConfig) {
        let (difference, moved) = compare(rule, torch);
        assert!(moved > 0.01, "the weights moved only {moved}");
        assert!(difference < 1e-5, "{rule:?}: {difference} from libtorch's");
    }

    #[test]
    fn adam_with_weight_decay_is_libtorchs() {
        let rule = Rule::Adam {
            lr: 0.01,
            weight_decay: 0.05,
            decoupled: false,
        };
        let torch = nn::Adam {
            wd: 0.05,
            ..Default::default()
        };
        assert_libtorchs_rule(rule, torch);
    }

    #[test]
    fn adamw_is_libtorchs() {
        let rule = Rule::Adam {
            lr: 0.01,
            weight_decay: 0.1,
            decoupled: true,
        };
        let torch = nn::AdamW {
            wd: 0.1,
            ..Default::default()
        };
        assert_libtorchs_rule(rule, torch);
    }

    #[test]
    fn sgd_with_momentum_and_weight_decay_is_libtorchs() {
        let rule = Rule::Sgd {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.01,
        };
        let torch = nn::Sgd {
            momentum: 0.9,
            wd: 0.01,
            ..Default::default()
        };
        assert_libtorchs_rule(rule, torch);
    }
}
