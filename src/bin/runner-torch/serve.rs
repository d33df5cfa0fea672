//! The helper's side of the conversation: requests on standard input (fit, load, predict), one
//! answer each on standard output, until runner closes the stream.

use crate::torch;
use anyhow::{bail, Context, Result};
use ndarray::{Array1, Array2};
use runner::models::helper_wire::{self as wire, count, Floats, Message};
use runner::models::{Curve, FitContext, FittedModel, ModelConfig, Task, TrainSet};
use serde_json::{json, Value};
use std::io::{BufReader, BufWriter, Stdin, Stdout};
use std::sync::Mutex;

type Input = BufReader<Stdin>;
type Output = BufWriter<Stdout>;

/// Serves runner until it closes the helper's input. Ctrl-C reaches the helper too (same process
/// group), but runner decides: it answers the next learning-curve point with a stop.
pub fn serve() -> Result<()> {
    // SAFETY: ignoring a signal touches no memory; done before any thread starts.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let mut input = BufReader::new(std::io::stdin());
    let mut output = BufWriter::new(std::io::stdout());
    // The models of the last fit or load (a stacked fit gives one per fold).
    let mut models: Vec<Box<dyn FittedModel>> = Vec::new();
    while let Some(request) = wire::receive(&mut input)? {
        let op = request.header["op"].as_str();
        if matches!(op, Some("fit" | "fit_stack" | "load")) {
            // The last models' helper is reused for new ones: free the old ones first.
            models.clear();
        }
        let answered = match op {
            Some("fit" | "fit_stack") => fit(&request, &mut input, &mut output).map(|m| models = m),
            Some("load") => load(&request, &mut output).map(|m| models = vec![m]),
            Some("predict") => predict(&models, &request, &mut output),
            _ => Err(anyhow::anyhow!("unknown request {}", request.header)),
        };
        if let Err(e) = answered {
            let message = format!("{e:#}");
            wire::send(
                &mut output,
                json!({"event": "error", "message": message}),
                &[],
            )?;
        }
    }
    Ok(())
}

fn matrix(floats: &mut Floats, rows: usize, cols: usize) -> Result<Array2<f64>> {
    Ok(Array2::from_shape_vec(
        (rows, cols),
        floats.take(rows * cols)?,
    )?)
}

/// A member's training rows, targets and evaluation rows, as the request sent them.
type Rows = (Array2<f64>, Array1<f64>, Option<(Array2<f64>, Array1<f64>)>);

/// The members of a fit: one (`fit`) or each fold of a stack, in the order of the payload.
fn members(h: &Value, floats: &mut Floats) -> Result<Vec<(u64, Rows)>> {
    let cols = count(h, "cols")?;
    let listed = h["members"]
        .as_array()
        .context("a fit without its members")?;
    (listed.iter())
        .map(|m| {
            let rows = count(m, "rows")?;
            let x = matrix(floats, rows, cols)?;
            let y = Array1::from(floats.take(rows)?);
            let eval = match m["eval_rows"].as_u64() {
                Some(n) => Some((
                    matrix(floats, n as usize, cols)?,
                    Array1::from(floats.take(n as usize)?),
                )),
                None => None,
            };
            let seed = m["seed"].as_u64().context("a fit without its seed")?;
            Ok((seed, (x, y, eval)))
        })
        .collect()
}

fn fit(
    request: &Message,
    input: &mut Input,
    output: &mut Output,
) -> Result<Vec<Box<dyn FittedModel>>> {
    let h = &request.header;
    let cfg: ModelConfig = serde_json::from_value(h["config"].clone())?;
    let task: Task = serde_json::from_value(h["task"].clone())?;
    let labels: Option<Vec<String>> = serde_json::from_value(h["labels"].clone())?;
    let members = members(h, &mut Floats::new(&request.payload))?;
    let sets: Vec<TrainSet> = (members.iter())
        .map(|(_, (x, y, _))| -> Result<TrainSet> {
            Ok(TrainSet {
                x: x.view(),
                y: y.view(),
                task,
                n_classes: count(h, "n_classes")?,
                labels: labels.as_deref(),
            })
        })
        .collect::<Result<_>>()?;
    let channel = Mutex::new((input, &mut *output));
    let curves: Vec<Curve> = (0..members.len())
        .map(|fold| {
            let channel = &channel;
            Curve::default().judged(Box::new(move |round, metric, value| {
                let mut channel = channel.lock().unwrap_or_else(|e| e.into_inner());
                let (input, output) = &mut *channel;
                match pass_on(input, output, fold, round, metric, value) {
                    Ok(true) => Some("runner stopped the training".into()),
                    Ok(false) => None,
                    Err(e) => Some(format!("runner stopped listening: {e:#}")),
                }
            }))
        })
        .collect();
    let threads = count(h, "threads")?;
    let ctxs: Vec<FitContext> = (members.iter().zip(&curves))
        .map(|((seed, (_, _, eval)), curve)| FitContext {
            seed: *seed,
            threads,
            eval: eval.as_ref().map(|(x, y)| (x.view(), y.view())),
            curve: Some(curve),
            feature_names: None,
        })
        .collect();
    let models = match h["op"].as_str() {
        Some("fit_stack") => {
            if !crate::stack::stacks(&cfg) {
                bail!("only the MLP and CNN from their algorithm 3 train folds stacked");
            }
            let pairs: Vec<_> = sets.iter().zip(&ctxs).collect();
            let fitted = crate::stack::fit_stack(&cfg, &pairs)?;
            fitted
                .into_iter()
                .map(|m| Box::new(m) as Box<dyn FittedModel>)
                .collect()
        }
        _ => vec![torch::fit(&cfg, &sets[0], &ctxs[0])?],
    };
    drop(ctxs);
    drop(curves);
    let output = channel.into_inner().unwrap_or_else(|e| e.into_inner()).1;
    for model in &models {
        send_model(output, &**model)?;
    }
    Ok(models)
}

/// Sends one learning-curve point to runner; whether runner says to stop.
fn pass_on(
    input: &mut Input,
    output: &mut Output,
    fold: usize,
    round: i64,
    metric: &str,
    value: f64,
) -> Result<bool> {
    let point = json!({"event": "record", "fold": fold, "round": round, "metric": metric, "bits": value.to_bits()});
    wire::send(output, point, &[])?;
    match wire::receive(input)? {
        Some(answer) => Ok(answer.header["stop"] == true),
        None => bail!("its stream ended"),
    }
}

fn load(request: &Message, output: &mut Output) -> Result<Box<dyn FittedModel>> {
    let h = &request.header;
    let task: Task = serde_json::from_value(h["task"].clone())?;
    let model = torch::load_torchscript(&request.payload, task, count(h, "n_classes")?)?;
    send_model(output, &*model)?;
    Ok(model)
}

/// The model's JSON form and its files, one after the other.
fn send_model(output: &mut Output, model: &dyn FittedModel) -> Result<()> {
    let files = model.native();
    let header = json!({
        "event": "model",
        "json": model.to_json()?,
        "native": files.iter().map(|(ext, bytes)| json!([ext, bytes.len()])).collect::<Vec<Value>>(),
    });
    let payload: Vec<u8> = files.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    wire::send(output, header, &payload)
}

fn predict(models: &[Box<dyn FittedModel>], request: &Message, output: &mut Output) -> Result<()> {
    let h = &request.header;
    let index = h["model"].as_u64().unwrap_or(0) as usize;
    let Some(model) = models.get(index) else {
        bail!("predict of model {index} before a fit or a load that made it");
    };
    let x = matrix(
        &mut Floats::new(&request.payload),
        count(h, "rows")?,
        count(h, "cols")?,
    )?;
    let prediction = model.predict(x.view())?;
    let proba = prediction.proba.iter().flat_map(|p| p.iter().copied());
    let count = prediction.values.len() + prediction.proba.as_ref().map_or(0, |p| p.len());
    let values = prediction.values.iter().copied().chain(proba);
    wire::send_floats(output, json!({"event": "prediction"}), count, values)
}
