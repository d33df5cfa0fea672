//! The networks train and predict in a helper process, `runner-torch` (src/bin/runner-torch/),
//! the only program that links libtorch. So runner itself never loads libtorch (about 110 MiB
//! at load, before any data) unless a network trains; two networks train side by side (libtorch's
//! random generator and thread count are per process); and the Python module shares a process
//! with any PyTorch. A network's learning curve still streams as it trains: the helper sends each
//! point and waits for runner's answer, which says whether a pruner or an interrupt stopped it.
//!
//! A helper holds the models of one fit (one, or one per fold where a run's folds train stacked)
//! or one loaded model. When they are dropped their helper waits, idle, for the next fit or load
//! of this process (starting one costs about half a second: libtorch loads and
//! initialises), so a sweep starts about as many helpers as it trains networks at once. Each fit
//! seeds libtorch's generator and sets its threads first, so a reused helper gives the numbers
//! of a new one.

use super::wire::{self, Floats, Message};
use crate::models::{FitContext, FittedModel, Prediction, Task, TrainSet};
use anyhow::{anyhow, bail, Context, Result};
use ndarray::{Array2, ArrayView2};
use serde_json::{json, Value};
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

/// Where a build puts the helper: beside the `runner` binary.
const HELPER: &str = "runner-torch";

/// `RUNNER_TORCH_HELPER`, else `runner-torch` beside this program (or one folder up, for
/// cargo's test binaries in `deps/`).
fn helper_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("RUNNER_TORCH_HELPER") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("cannot tell where this program is")?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(HELPER))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            anyhow!(
                "the networks train in the helper program `{HELPER}`, which is not beside {} \
                 (build it with `cargo build --release --features torch`, which builds both), \
                 or name it in RUNNER_TORCH_HELPER",
                exe.display()
            )
        })
}

struct Helper {
    path: PathBuf,
    child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
    /// Every request so far got its whole answer: the helper waits for the next one.
    in_step: bool,
}

/// Helpers whose model was dropped, waiting for the next fit or load.
static IDLE: Mutex<Vec<Helper>> = Mutex::new(Vec::new());

/// At most this many idle helpers are kept (each holds libtorch, about 110 MiB).
const MAX_IDLE: usize = 4;

impl Helper {
    /// An idle helper, else a new one.
    fn take() -> Result<Helper> {
        let idle = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(helper) => Ok(helper),
            None => Helper::start(),
        }
    }

    /// Back to the idle ones, if it is in step and there is room; else it ends.
    fn put_back(self) {
        let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
        if self.in_step && idle.len() < MAX_IDLE {
            idle.push(self);
        }
    }

    fn start() -> Result<Helper> {
        let path = helper_path()?;
        let mut child = Command::new(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start the network helper {}", path.display()))?;
        let input = BufWriter::new(child.stdin.take().context("no pipe to the helper")?);
        let output = BufReader::new(child.stdout.take().context("no pipe from the helper")?);
        Ok(Helper {
            path,
            child,
            input,
            output,
            in_step: true,
        })
    }

    fn send(&mut self, header: Value, payload: &[u8]) -> Result<()> {
        wire::send(&mut self.input, header, payload).map_err(|e| self.gone(e))
    }

    fn send_floats(
        &mut self,
        header: Value,
        count: usize,
        values: impl IntoIterator<Item = f64>,
    ) -> Result<()> {
        wire::send_floats(&mut self.input, header, count, values).map_err(|e| self.gone(e))
    }

    /// The helper's next message; its error message as an error.
    fn receive(&mut self) -> Result<Message> {
        let message = match wire::receive(&mut self.output) {
            Ok(Some(message)) => message,
            Ok(None) => return Err(self.gone(anyhow!("no answer"))),
            Err(e) => return Err(self.gone(e)),
        };
        if message.header["event"] == "error" {
            bail!("{}", message.header["message"].as_str().unwrap_or("?"));
        }
        Ok(message)
    }

    fn gone(&mut self, cause: anyhow::Error) -> anyhow::Error {
        self.in_step = false;
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => "still running".into(),
        };
        anyhow!(
            "the network helper {} stopped answering ({status}): {cause:#}",
            self.path.display()
        )
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Trains the network in a new helper, passing its learning curve on to `ctx` as it comes.
pub fn fit(
    cfg: &crate::models::ModelConfig,
    data: &TrainSet,
    ctx: &FitContext,
) -> Result<Box<dyn FittedModel>> {
    let mut models = fit_members(
        cfg,
        "fit",
        std::slice::from_ref(data),
        std::slice::from_ref(ctx),
    )?;
    models.pop().context("the network helper sent no model")
}

/// Trains the networks of several folds at once in one helper (the MLP's and CNN's stacked
/// training), passing each fold's learning curve on to its context; each fold's model in order.
pub fn fit_stack(
    cfg: &crate::models::ModelConfig,
    sets: &[TrainSet],
    ctxs: &[FitContext],
) -> Result<Vec<Box<dyn FittedModel>>> {
    fit_members(cfg, "fit_stack", sets, ctxs)
}

/// Sends the training sets (and their evaluation rows) as one request `op`; passes the learning
/// curves on as they come (a point of fold `fold` to `ctxs[fold]`); the models, in order.
fn fit_members(
    cfg: &crate::models::ModelConfig,
    op: &str,
    sets: &[TrainSet],
    ctxs: &[FitContext],
) -> Result<Vec<Box<dyn FittedModel>>> {
    let (Some(data), Some(ctx)) = (sets.first(), ctxs.first()) else {
        bail!("a fit of no training set");
    };
    let mut count = 0;
    let members: Vec<Value> = (sets.iter().zip(ctxs))
        .map(|(set, c)| {
            count += set.x.len() + set.y.len() + c.eval.map_or(0, |(x, y)| x.len() + y.len());
            json!({"seed": c.seed, "rows": set.x.nrows(), "eval_rows": c.eval.map(|(x, _)| x.nrows())})
        })
        .collect();
    let values = (sets.iter().zip(ctxs)).flat_map(|(set, c)| {
        let eval = c.eval.into_iter().flat_map(|(x, y)| x.into_iter().chain(y));
        set.x.iter().chain(set.y.iter()).chain(eval).copied()
    });
    let header = json!({
        "op": op,
        "config": cfg,
        "task": data.task,
        "n_classes": data.n_classes,
        "labels": data.labels,
        "threads": ctx.threads,
        "cols": data.x.ncols(),
        "members": members,
    });
    let mut helper = Helper::take()?;
    helper.send_floats(header, count, values)?;
    let mut answers = Vec::new();
    while answers.len() < sets.len() {
        let message = helper.receive()?;
        if message.header["event"] != "record" {
            answers.push(message);
            continue;
        }
        let h = &message.header;
        let value = f64::from_bits(h["bits"].as_u64().context("a record without its value")?);
        let metric = h["metric"]
            .as_str()
            .context("a record without its metric")?;
        let fold = h["fold"].as_u64().unwrap_or(0) as usize;
        let at = ctxs
            .get(fold)
            .context("a record of a fold that was not sent")?;
        at.record(h["round"].as_i64().unwrap_or(0), metric, value);
        let stop = ctxs.iter().any(|c| c.stop_requested());
        helper.send(json!({"op": "go_on", "stop": stop}), &[])?;
    }
    let shared = std::sync::Arc::new(Shared(Mutex::new(Some(helper))));
    (answers.into_iter().enumerate())
        .map(|(index, message)| {
            RemoteModel::from_answer(shared.clone(), index, message, data.task, data.n_classes)
        })
        .collect()
}

/// A saved network (its TorchScript file), run by a new helper.
pub fn load_torchscript(
    bytes: &[u8],
    task: Task,
    n_classes: usize,
) -> Result<Box<dyn FittedModel>> {
    let mut helper = Helper::take()?;
    let header = json!({"op": "load", "task": task, "n_classes": n_classes});
    helper.send(header, bytes)?;
    let message = helper.receive()?;
    let shared = std::sync::Arc::new(Shared(Mutex::new(Some(helper))));
    RemoteModel::from_answer(shared, 0, message, task, n_classes)
}

/// A helper that holds models (of one fit); put back to the idle ones once none is left.
struct Shared(Mutex<Option<Helper>>);

impl Drop for Shared {
    fn drop(&mut self) {
        let held = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(helper) = held.take() {
            helper.put_back();
        }
    }
}

/// A trained or loaded network, held by its helper (model `index` of those it holds).
struct RemoteModel {
    task: Task,
    n_classes: usize,
    fitted: Value,
    native: Vec<(&'static str, Vec<u8>)>,
    helper: std::sync::Arc<Shared>,
    index: usize,
}

impl RemoteModel {
    /// From the helper's `model` message: the model's JSON form and its files.
    fn from_answer(
        helper: std::sync::Arc<Shared>,
        index: usize,
        message: Message,
        task: Task,
        n_classes: usize,
    ) -> Result<Box<dyn FittedModel>> {
        if message.header["event"] != "model" {
            bail!("the network helper answered {}", message.header);
        }
        let mut native = Vec::new();
        let mut rest = &message.payload[..];
        for file in message.header["native"].as_array().into_iter().flatten() {
            let extension = match file[0].as_str() {
                Some("pt") => "pt",
                Some("safetensors") => "safetensors",
                other => bail!("the network helper sent a file of kind {other:?}"),
            };
            let len = file[1].as_u64().unwrap_or(0) as usize;
            if rest.len() < len {
                bail!("the network helper sent a file shorter than it said");
            }
            let (bytes, tail) = rest.split_at(len);
            native.push((extension, bytes.to_vec()));
            rest = tail;
        }
        Ok(Box::new(RemoteModel {
            task,
            n_classes,
            fitted: message.header["json"].clone(),
            native,
            helper,
            index,
        }))
    }
}

impl FittedModel for RemoteModel {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        let header =
            json!({"op": "predict", "model": self.index, "rows": x.nrows(), "cols": x.ncols()});
        let mut held = self.helper.0.lock().unwrap_or_else(|e| e.into_inner());
        let helper = held.as_mut().context("the network's helper is gone")?;
        helper.send_floats(header, x.len(), x.iter().copied())?;
        let message = helper.receive()?;
        let rows = x.nrows();
        let mut floats = Floats::new(&message.payload);
        let values = floats.take(rows)?;
        let proba = match self.task {
            Task::Classification => Some(Array2::from_shape_vec(
                (rows, self.n_classes),
                floats.take(rows * self.n_classes)?,
            )?),
            Task::Regression => None,
        };
        Ok(Prediction { values, proba })
    }
    fn to_json(&self) -> Result<Value> {
        Ok(self.fitted.clone())
    }
    fn native(&self) -> Vec<(&'static str, Vec<u8>)> {
        self.native.clone()
    }
}

/// Ends the idle helpers and waits for them (at the end of a command, so none outlives it).
pub fn end_idle() {
    let idle = std::mem::take(&mut *IDLE.lock().unwrap_or_else(|e| e.into_inner()));
    drop(idle);
}
