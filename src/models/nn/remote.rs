//! The networks train and predict in a helper process, `runner-torch` (src/bin/runner-torch.rs),
//! the only program that links libtorch. So runner itself never loads libtorch (about 110 MiB
//! at load, before any data) unless a network trains; two networks train side by side (libtorch's
//! random generator and thread count are per process); and the Python module shares a process
//! with any PyTorch. A network's learning curve still streams as it trains: the helper sends each
//! point and waits for runner's answer, which says whether a pruner or an interrupt stopped it.
//!
//! One helper serves one model: it is started for a fit or a load and ends when the model is
//! dropped.

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
}

impl Helper {
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
        })
    }

    fn send(&mut self, header: Value, payload: &[u8]) -> Result<()> {
        wire::send(&mut self.input, header, payload).map_err(|e| self.gone(e))
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

fn put_matrix(payload: &mut Vec<u8>, x: ArrayView2<f64>) {
    wire::put_floats(payload, x.iter().copied());
}

/// Trains the network in a new helper, passing its learning curve on to `ctx` as it comes.
pub fn fit(
    cfg: &crate::models::ModelConfig,
    data: &TrainSet,
    ctx: &FitContext,
) -> Result<Box<dyn FittedModel>> {
    let mut payload = Vec::new();
    put_matrix(&mut payload, data.x);
    wire::put_floats(&mut payload, data.y.iter().copied());
    if let Some((x, y)) = ctx.eval {
        put_matrix(&mut payload, x);
        wire::put_floats(&mut payload, y.iter().copied());
    }
    let header = json!({
        "op": "fit",
        "config": cfg,
        "task": data.task,
        "n_classes": data.n_classes,
        "labels": data.labels,
        "seed": ctx.seed,
        "threads": ctx.threads,
        "rows": data.x.nrows(),
        "cols": data.x.ncols(),
        "eval_rows": ctx.eval.map(|(x, _)| x.nrows()),
    });
    let mut helper = Helper::start()?;
    helper.send(header, &payload)?;
    drop(payload);
    loop {
        let message = helper.receive()?;
        if message.header["event"] != "record" {
            return RemoteModel::from_answer(helper, message, data.task, data.n_classes);
        }
        let h = &message.header;
        let value = f64::from_bits(h["bits"].as_u64().context("a record without its value")?);
        let metric = h["metric"]
            .as_str()
            .context("a record without its metric")?;
        ctx.record(h["round"].as_i64().unwrap_or(0), metric, value);
        let stop = ctx.stop_requested();
        helper.send(json!({"op": "go_on", "stop": stop}), &[])?;
    }
}

/// A saved network (its TorchScript file), run by a new helper.
pub fn load_torchscript(
    bytes: &[u8],
    task: Task,
    n_classes: usize,
) -> Result<Box<dyn FittedModel>> {
    let mut helper = Helper::start()?;
    let header = json!({"op": "load", "task": task, "n_classes": n_classes});
    helper.send(header, bytes)?;
    let message = helper.receive()?;
    RemoteModel::from_answer(helper, message, task, n_classes)
}

/// A trained or loaded network, held by its helper.
struct RemoteModel {
    task: Task,
    n_classes: usize,
    fitted: Value,
    native: Vec<(&'static str, Vec<u8>)>,
    helper: Mutex<Helper>,
}

impl RemoteModel {
    /// From the helper's `model` message: the model's JSON form and its files.
    fn from_answer(
        helper: Helper,
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
            helper: Mutex::new(helper),
        }))
    }
}

impl FittedModel for RemoteModel {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        let mut payload = Vec::with_capacity(x.len() * 8);
        put_matrix(&mut payload, x);
        let header = json!({"op": "predict", "rows": x.nrows(), "cols": x.ncols()});
        let mut helper = self.helper.lock().unwrap_or_else(|e| e.into_inner());
        helper.send(header, &payload)?;
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
