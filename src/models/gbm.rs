//! Gradient boosting from the real native libraries: XGBoost (crate `xgb`) and LightGBM (crate
//! `lightgbm3` and its sys crate). Both train round by round here so that every round's train
//! and validation loss goes into the learning curve, and early stopping (on a seeded inner
//! split of the training rows, never on the CV fold being scored) keeps the best round.
//! Classes arrive as 0..K-1, which both libraries require.

#![cfg_attr(
    not(any(feature = "xgboost", feature = "lightgbm")),
    allow(dead_code, unused_imports)
)]

use super::params::{Default_, ParamSpec, ParamType, BOTH};
use super::{
    labels_from_proba, EarlyStopping, FitContext, FittedModel, KindSpec, ModelConfig, Prediction,
    Task, TrainSet,
};
use anyhow::{anyhow, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use serde_json::json;

pub(crate) static XGBOOST: KindSpec = KindSpec {
    kind: "xgboost",
    tasks: BOTH,
    backend: "XGBoost 3.4 (crate xgb, libxgboost from the PyPI wheel); feature `xgboost`",
    help: "gradient-boosted trees (XGBoost)",
    feature: Some("xgboost"),
    onnx: true,
    algorithm: 2,
    unscaled_from: Some(2),
    curve_axis: "round",
    params: class_params![
        ParamSpec { name: "n_rounds", ty: ParamType::Int { min: 1, max: 100_000 }, default: Default_::Int(100), help: "boosting rounds" },
        ParamSpec { name: "learning_rate", ty: ParamType::Float { min: 1e-6, max: 1.0 }, default: Default_::Float(0.3), help: "shrinkage (eta)" },
        ParamSpec { name: "max_depth", ty: ParamType::Int { min: 0, max: 64 }, default: Default_::Int(6), help: "tree depth (0 = unlimited)" },
        ParamSpec { name: "min_child_weight", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(1.0), help: "minimum hessian sum in a child" },
        ParamSpec { name: "subsample", ty: ParamType::Float { min: 0.01, max: 1.0 }, default: Default_::Float(1.0), help: "row share drawn per round" },
        ParamSpec { name: "colsample_bytree", ty: ParamType::Float { min: 0.01, max: 1.0 }, default: Default_::Float(1.0), help: "feature share per tree" },
        ParamSpec { name: "reg_alpha", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(0.0), help: "L1 penalty on leaf weights" },
        ParamSpec { name: "reg_lambda", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(1.0), help: "L2 penalty on leaf weights" },
        ParamSpec { name: "scale_pos_weight", ty: ParamType::Float { min: 1e-6, max: 1e6 }, default: Default_::Float(1.0), help: "weight of the positive class (binary)" },
        ParamSpec { name: "early_stopping_rounds", ty: ParamType::Int { min: 0, max: 100_000 }, default: Default_::Int(0), help: "stop when the inner validation loss has not improved for this many rounds (0 = off)" },
        ParamSpec { name: "validation_fraction", ty: ParamType::Float { min: 0.01, max: 0.5 }, default: Default_::Float(0.1), help: "share of training rows held out for early stopping" },
        ParamSpec { name: "tree_method", ty: ParamType::Choice(&["hist", "exact", "approx"]), default: Default_::Str("hist"), help: "split finding" },
        ParamSpec { name: "threads", ty: ParamType::Int { min: 0, max: 256 }, default: Default_::Int(0), help: "threads (0 = the sweep's per-config share)" },
    ],
};

backend!(
    XgboostBackend,
    XGBOOST,
    feature = "xgboost",
    |cfg, data, ctx| xgboost::fit(cfg, data, ctx),
    |saved| xgboost::load(
        saved.file("json")?,
        saved.task,
        saved.n_classes,
        saved.best_round(),
    )
);

pub(crate) static LIGHTGBM: KindSpec = KindSpec {
    kind: "lightgbm",
    tasks: BOTH,
    backend: "LightGBM 4.7 (crate lightgbm3, built from source); feature `lightgbm`",
    help: "gradient-boosted trees (LightGBM, leaf-wise)",
    feature: Some("lightgbm"),
    onnx: true,
    algorithm: 2,
    unscaled_from: Some(2),
    curve_axis: "round",
    params: class_params![
        ParamSpec { name: "n_rounds", ty: ParamType::Int { min: 1, max: 100_000 }, default: Default_::Int(100), help: "boosting rounds" },
        ParamSpec { name: "learning_rate", ty: ParamType::Float { min: 1e-6, max: 1.0 }, default: Default_::Float(0.1), help: "shrinkage" },
        ParamSpec { name: "num_leaves", ty: ParamType::Int { min: 2, max: 131_072 }, default: Default_::Int(31), help: "leaves per tree" },
        ParamSpec { name: "max_depth", ty: ParamType::Int { min: 0, max: 64 }, default: Default_::Int(0), help: "tree depth (0 = unlimited)" },
        ParamSpec { name: "min_child_weight", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(1e-3), help: "minimum hessian sum in a leaf" },
        ParamSpec { name: "min_data_in_leaf", ty: ParamType::Int { min: 1, max: 1_000_000 }, default: Default_::Int(20), help: "minimum rows in a leaf" },
        ParamSpec { name: "subsample", ty: ParamType::Float { min: 0.01, max: 1.0 }, default: Default_::Float(1.0), help: "row share per round (bagging)" },
        ParamSpec { name: "colsample_bytree", ty: ParamType::Float { min: 0.01, max: 1.0 }, default: Default_::Float(1.0), help: "feature share per tree" },
        ParamSpec { name: "reg_alpha", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(0.0), help: "L1 penalty" },
        ParamSpec { name: "reg_lambda", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(0.0), help: "L2 penalty" },
        ParamSpec { name: "scale_pos_weight", ty: ParamType::Float { min: 1e-6, max: 1e6 }, default: Default_::Float(1.0), help: "weight of the positive class (binary)" },
        ParamSpec { name: "early_stopping_rounds", ty: ParamType::Int { min: 0, max: 100_000 }, default: Default_::Int(0), help: "stop when the inner validation loss has not improved for this many rounds (0 = off)" },
        ParamSpec { name: "validation_fraction", ty: ParamType::Float { min: 0.01, max: 0.5 }, default: Default_::Float(0.1), help: "share of training rows held out for early stopping" },
        ParamSpec { name: "threads", ty: ParamType::Int { min: 0, max: 256 }, default: Default_::Int(0), help: "threads (0 = the sweep's per-config share)" },
    ],
};

backend!(
    LightgbmBackend,
    LIGHTGBM,
    feature = "lightgbm",
    |cfg, data, ctx| lightgbm::fit(cfg, data, ctx),
    |saved| lightgbm::load(
        saved.file("txt")?,
        saved.task,
        saved.n_classes,
        saved.best_round(),
    )
);

fn f32_rows(x: ArrayView2<f64>) -> Vec<f32> {
    x.iter().map(|v| *v as f32).collect()
}

fn threads(cfg: &ModelConfig, ctx: &FitContext) -> Result<usize> {
    Ok(match cfg.usize("threads")? {
        0 => ctx.threads.max(1),
        t => t,
    })
}

/// Rows used to fit and rows held out for early stopping (seeded, stratified for classes).
fn early_stopping_split(
    cfg: &ModelConfig,
    data: &TrainSet,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let n = data.y.len();
    if cfg.int("early_stopping_rounds")? == 0 {
        return Ok(((0..n).collect(), Vec::new()));
    }
    let y: Vec<f64> = data.y.to_vec();
    let share = cfg.float("validation_fraction")?;
    Ok(crate::eval::holdout_split(
        data.task,
        &y,
        share,
        seed ^ 0xE5,
    ))
}

fn take(x: ArrayView2<f64>, y: ArrayView1<f64>, rows: &[usize]) -> (Array2<f64>, Array1<f64>) {
    let xs = Array2::from_shape_fn((rows.len(), x.ncols()), |(i, j)| x[[rows[i], j]]);
    let ys = rows.iter().map(|r| y[*r]).collect();
    (xs, ys)
}

fn row_weights(cfg: &ModelConfig, data: &TrainSet, rows: &[usize]) -> Result<Option<Vec<f32>>> {
    let labels = data.class_labels();
    Ok(data
        .class_weights(cfg)?
        .map(|w| rows.iter().map(|r| w[labels[*r]] as f32).collect()))
}

fn to_prediction(task: Task, n_classes: usize, raw: Vec<f64>, n: usize) -> Result<Prediction> {
    Ok(match task {
        Task::Regression => Prediction {
            values: raw,
            proba: None,
        },
        Task::Classification => {
            let proba = if n_classes == 2 && raw.len() == n {
                Array2::from_shape_fn((n, 2), |(i, j)| if j == 1 { raw[i] } else { 1.0 - raw[i] })
            } else {
                Array2::from_shape_vec((n, n_classes), raw).map_err(|e| {
                    anyhow!("the booster gave the wrong number of probabilities: {e}")
                })?
            };
            Prediction {
                values: labels_from_proba(&proba),
                proba: Some(proba),
            }
        }
    })
}

// ---------------------------------------------------------------- XGBoost

#[cfg(feature = "xgboost")]
mod xgboost {
    use super::*;
    use std::sync::{Mutex, OnceLock};
    use xgb::{Booster, DMatrix};

    fn err(e: xgb::XGBError) -> anyhow::Error {
        anyhow!("XGBoost: {e}")
    }

    pub struct XgbModel {
        task: Task,
        n_classes: usize,
        /// The booster is not Sync; predictions take turns.
        booster: Mutex<Booster>,
        /// The JSON model and the total gain of the splits on each feature, made when first
        /// asked for: only the refitted model's are exported, and writing them took a fifth
        /// of a wine fold's time (the text dump of 1,200 trees most of it).
        json: OnceLock<Vec<u8>>,
        gain: OnceLock<Vec<f64>>,
        /// The columns' names the booster knows, and how many columns it reads.
        names: Option<Vec<String>>,
        features: usize,
        best_round: i64,
    }

    impl XgbModel {
        /// The booster's JSON model; empty (with a warning) if XGBoost fails to write it.
        fn json(&self) -> &[u8] {
            self.json.get_or_init(|| {
                let booster = self.booster.lock().unwrap_or_else(|e| e.into_inner());
                booster.save_buffer(false).unwrap_or_else(|e| {
                    eprintln!("warning: XGBoost could not write its model: {e}");
                    Vec::new()
                })
            })
        }

        fn gain(&self) -> &[f64] {
            self.gain.get_or_init(|| {
                let booster = self.booster.lock().unwrap_or_else(|e| e.into_inner());
                match booster.dump_model(true, None) {
                    Ok(dump) => gain_per_feature(&dump, self.names.as_deref(), self.features),
                    Err(e) => {
                        eprintln!("warning: XGBoost could not dump its trees' gains: {e}");
                        Vec::new()
                    }
                }
            })
        }
    }

    /// Sums `gain=` per feature over a text dump with statistics ("[f3<0.5] ... gain=1.2,...",
    /// or "[alcohol<10.5] ..." when the booster has the columns' names).
    fn gain_per_feature(dump: &str, names: Option<&[String]>, features: usize) -> Vec<f64> {
        let mut gain = vec![0.0; features];
        for line in dump.lines() {
            let (Some(a), Some(g)) = (line.find('['), line.find("gain=")) else {
                continue;
            };
            let split = &line[a + 1..];
            let feature = split
                .find(']')
                .and_then(|end| split[..end].rfind('<'))
                .map(|lt| &split[..lt]);
            let f: Option<usize> = feature.and_then(|name| match names {
                Some(names) => names.iter().position(|n| n == name),
                None => name.strip_prefix('f').and_then(|d| d.parse().ok()),
            });
            let v: Option<f64> = line[g + 5..]
                .split(',')
                .next()
                .and_then(|s| s.trim().parse().ok());
            if let (Some(f), Some(v)) = (f, v) {
                if f < features {
                    gain[f] += v;
                }
            }
        }
        gain
    }

    fn dmatrix(
        x: ArrayView2<f64>,
        y: Option<ArrayView1<f64>>,
        w: Option<&[f32]>,
    ) -> Result<DMatrix> {
        let mut d = DMatrix::from_dense(&f32_rows(x), x.nrows()).map_err(err)?;
        if let Some(y) = y {
            d.set_labels(&y.iter().map(|v| *v as f32).collect::<Vec<_>>())
                .map_err(err)?;
        }
        if let Some(w) = w {
            d.set_weights(w).map_err(err)?;
        }
        Ok(d)
    }

    impl FittedModel for XgbModel {
        fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
            let d = dmatrix(x, None, None)?;
            let raw = self
                .booster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .predict(&d)
                .map_err(err)?;
            to_prediction(
                self.task,
                self.n_classes,
                raw.into_iter().map(f64::from).collect(),
                x.nrows(),
            )
        }
        fn to_json(&self) -> Result<serde_json::Value> {
            Ok(
                json!({"library": "xgboost", "best_round": self.best_round, "model": "see the native model file"}),
            )
        }
        fn native(&self) -> Vec<(&'static str, Vec<u8>)> {
            vec![("json", self.json().to_vec())]
        }
        fn feature_importance(&self) -> Vec<(&'static str, Vec<f64>)> {
            vec![("gain", self.gain().to_vec())]
        }
    }

    pub fn load(
        json_model: &[u8],
        task: Task,
        n_classes: usize,
        best_round: i64,
    ) -> Result<Box<dyn FittedModel>> {
        let booster = Booster::load_buffer(json_model).map_err(err)?;
        Ok(Box::new(XgbModel {
            task,
            n_classes,
            booster: Mutex::new(booster),
            json: OnceLock::from(json_model.to_vec()),
            gain: OnceLock::from(Vec::new()),
            names: None,
            features: 0,
            best_round,
        }))
    }

    /// The training matrix (weighted, with the column names) and the validation one: the
    /// inner split if early stopping is on, else the rows the caller scores (the CV fold), for
    /// the curve only.
    fn matrices(
        cfg: &ModelConfig,
        data: &TrainSet,
        ctx: &FitContext,
    ) -> Result<(DMatrix, Option<DMatrix>)> {
        let (fit_rows, stop_rows) = early_stopping_split(cfg, data, ctx.seed)?;
        let (xf, yf) = take(data.x, data.y, &fit_rows);
        let mut dtrain = dmatrix(
            xf.view(),
            Some(yf.view()),
            row_weights(cfg, data, &fit_rows)?.as_deref(),
        )?;
        if let Some(names) = ctx.feature_names {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            dtrain.set_feature_names(&names).map_err(err)?;
        }
        let valid = if !stop_rows.is_empty() {
            let (xv, yv) = take(data.x, data.y, &stop_rows);
            Some(dmatrix(xv.view(), Some(yv.view()), None)?)
        } else if let Some((x, y)) = ctx.eval {
            Some(dmatrix(x, Some(y), None)?)
        } else {
            None
        };
        Ok((dtrain, valid))
    }

    pub fn fit(
        cfg: &ModelConfig,
        data: &TrainSet,
        ctx: &FitContext,
    ) -> Result<Box<dyn FittedModel>> {
        let (dtrain, valid) = matrices(cfg, data, ctx)?;
        let params = xgb::parameters::BoosterParametersBuilder::default()
            .build()
            .map_err(|e| anyhow!("XGBoost parameters: {e}"))?;
        let mut cached = vec![&dtrain];
        if let Some(v) = &valid {
            cached.push(v);
        }
        let mut booster = Booster::new_with_cached_dmats(&params, &cached).map_err(err)?;
        // The booster keeps the column names in its JSON model, as XGBoost's Python does.
        if let Some(names) = ctx.feature_names {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            booster.set_feature_names(&names).map_err(err)?;
        }
        let (objective, metric) = match (data.task, data.n_classes) {
            (Task::Regression, _) => ("reg:squarederror", "rmse"),
            (_, 2) => ("binary:logistic", "logloss"),
            _ => ("multi:softprob", "mlogloss"),
        };
        let mut set = vec![
            ("verbosity", "0".to_string()),
            ("objective", objective.to_string()),
            ("eval_metric", metric.to_string()),
            ("eta", cfg.float("learning_rate")?.to_string()),
            ("max_depth", cfg.int("max_depth")?.to_string()),
            (
                "min_child_weight",
                cfg.float("min_child_weight")?.to_string(),
            ),
            ("subsample", cfg.float("subsample")?.to_string()),
            (
                "colsample_bytree",
                cfg.float("colsample_bytree")?.to_string(),
            ),
            ("alpha", cfg.float("reg_alpha")?.to_string()),
            ("lambda", cfg.float("reg_lambda")?.to_string()),
            ("tree_method", cfg.str("tree_method")?.to_string()),
            ("seed", (ctx.seed % (i32::MAX as u64)).to_string()),
            ("nthread", threads(cfg, ctx)?.to_string()),
        ];
        if objective == "multi:softprob" {
            set.push(("num_class", data.n_classes.to_string()));
        }
        if objective == "binary:logistic" {
            set.push((
                "scale_pos_weight",
                cfg.float("scale_pos_weight")?.to_string(),
            ));
        }
        for (k, v) in &set {
            booster.set_param(k, v).map_err(err)?;
        }
        let mut stopper = EarlyStopping::new(cfg.int("early_stopping_rounds")?);
        let rounds = cfg.int("n_rounds")?;
        let mut last = rounds - 1;
        for round in 0..rounds {
            booster.update(&dtrain, round as i32).map_err(err)?;
            let tr = booster.evaluate(&dtrain).map_err(err)?;
            if let Some(v) = tr.get(metric) {
                ctx.record(round, &format!("train_{metric}"), *v as f64);
            }
            if let Some(dv) = &valid {
                let ev = booster.evaluate(dv).map_err(err)?;
                let loss = ev.get(metric).map(|v| *v as f64).unwrap_or(f64::NAN);
                ctx.record(round, &format!("valid_{metric}"), loss);
                if stopper.update(round, loss).1 {
                    last = round;
                    break;
                }
            }
            if ctx.stop_requested() {
                last = round;
                break;
            }
        }
        let best_round = stopper.kept(last);
        let booster = if best_round < last {
            booster.slice(0, best_round as i32 + 1).map_err(err)?
        } else {
            booster
        };
        Ok(Box::new(XgbModel {
            task: data.task,
            n_classes: data.n_classes,
            booster: Mutex::new(booster),
            json: OnceLock::new(),
            gain: OnceLock::new(),
            names: ctx.feature_names.map(<[String]>::to_vec),
            features: data.x.ncols(),
            best_round,
        }))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn gain_is_summed_per_feature_by_index_or_by_name() {
            let dump = "0:[f1<0.5] yes=1,no=2,missing=1,gain=2.5,cover=9\n1:leaf=0.1\n\
                        2:[f0<3] yes=3,no=4,missing=3,gain=1,cover=4\n3:[f1<1] gain=0.5,cover=2";
            assert_eq!(super::gain_per_feature(dump, None, 2), vec![1.0, 3.0]);
            let named = "0:[free sulfur dioxide<12] yes=1,gain=4,cover=3\n1:[pH<3.2] gain=1.5";
            let names = ["pH".to_string(), "free sulfur dioxide".to_string()];
            assert_eq!(
                super::gain_per_feature(named, Some(&names), 2),
                vec![1.5, 4.0]
            );
        }
    }
}

// ---------------------------------------------------------------- LightGBM

#[cfg(feature = "lightgbm")]
mod lightgbm {
    use super::*;
    use crate::models::lgbm_trees::{Trees, Walked};
    use crate::models::ColumnShuffles;
    use lightgbm3_sys as sys;
    use std::ffi::{CStr, CString};
    use std::os::raw::{c_char, c_int, c_void};

    fn check(ret: c_int, what: &str) -> Result<()> {
        if ret == 0 {
            return Ok(());
        }
        // SAFETY: LightGBM returns a NUL-terminated, thread-local error message.
        let msg = unsafe { CStr::from_ptr(sys::LGBM_GetLastError()) }
            .to_string_lossy()
            .to_string();
        Err(anyhow!("LightGBM {what}: {msg}"))
    }

    /// Owns a LightGBM dataset handle.
    struct Data(sys::DatasetHandle);
    impl Drop for Data {
        fn drop(&mut self) {
            // SAFETY: the handle came from LGBM_DatasetCreateFromMat and is freed once.
            unsafe { sys::LGBM_DatasetFree(self.0) };
        }
    }

    /// Owns a LightGBM booster handle.
    struct Handle(sys::BoosterHandle);
    // SAFETY: a booster has no thread affinity; a fitted model keeps its loaded booster behind a
    // mutex, so one thread at a time uses it.
    unsafe impl Send for Handle {}
    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: the handle came from LGBM_BoosterCreate / LoadModelFromString, freed once.
            unsafe { sys::LGBM_BoosterFree(self.0) };
        }
    }

    fn dataset(
        x: &Array2<f64>,
        y: &Array1<f64>,
        w: Option<&[f32]>,
        reference: Option<&Data>,
        params: &str,
    ) -> Result<Data> {
        let flat: Vec<f64> = x.iter().copied().collect();
        let p = CString::new(params)?;
        let mut h: sys::DatasetHandle = std::ptr::null_mut();
        // SAFETY: `flat` holds nrow * ncol row-major f64 values and outlives the call.
        check(
            unsafe {
                sys::LGBM_DatasetCreateFromMat(
                    flat.as_ptr() as *const c_void,
                    sys::C_API_DTYPE_FLOAT64 as c_int,
                    x.nrows() as i32,
                    x.ncols() as i32,
                    1,
                    p.as_ptr(),
                    reference.map(|r| r.0).unwrap_or(std::ptr::null_mut()),
                    &mut h,
                )
            },
            "dataset",
        )?;
        let data = Data(h);
        let labels: Vec<f32> = y.iter().map(|v| *v as f32).collect();
        set_field(&data, "label", &labels)?;
        if let Some(w) = w {
            set_field(&data, "weight", w)?;
        }
        Ok(data)
    }

    /// Names the dataset's columns; the saved model keeps them (`feature_names=`). LightGBM
    /// replaces spaces with underscores.
    fn set_feature_names(data: &Data, names: &[String]) -> Result<()> {
        let owned: Vec<CString> = names
            .iter()
            .map(|n| CString::new(n.as_str()))
            .collect::<std::result::Result<_, _>>()?;
        let mut ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        // SAFETY: `ptrs` points at NUL-terminated names in `owned`, both alive during the call.
        check(
            unsafe {
                sys::LGBM_DatasetSetFeatureNames(data.0, ptrs.as_mut_ptr(), ptrs.len() as c_int)
            },
            "feature names",
        )
    }

    /// Sets one f32 value per row of a dataset field ("label", "weight").
    fn set_field(data: &Data, name: &str, values: &[f32]) -> Result<()> {
        let field = CString::new(name)?;
        // SAFETY: `values` holds one f32 per row and outlives the call.
        check(
            unsafe {
                sys::LGBM_DatasetSetField(
                    data.0,
                    field.as_ptr(),
                    values.as_ptr() as *const c_void,
                    values.len() as c_int,
                    sys::C_API_DTYPE_FLOAT32 as c_int,
                )
            },
            name,
        )
    }

    fn eval(h: &Handle, idx: c_int, counts: usize) -> Result<Vec<f64>> {
        let mut out = vec![0.0f64; counts.max(1)];
        let mut len: c_int = 0;
        // SAFETY: `out` has room for every metric LightGBM reports.
        check(
            unsafe { sys::LGBM_BoosterGetEval(h.0, idx, &mut len, out.as_mut_ptr()) },
            "eval",
        )?;
        out.truncate(len as usize);
        Ok(out)
    }

    /// The longest model text written so far in this process: LightGBM writes the whole text
    /// again when the buffer is too small (about 0.03 s for the wine model's 2.8 MB), and the
    /// fits of one config write texts of about the same length.
    static LONGEST_MODEL_TEXT: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(1 << 20);

    fn model_string(h: &Handle, num_iteration: i32) -> Result<String> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut len: i64 = 0;
        let hint = LONGEST_MODEL_TEXT.load(Relaxed);
        let mut buf = vec![0u8; hint + hint / 4];
        loop {
            // SAFETY: `buf` is writable for its length; LightGBM reports the length it needs.
            check(
                unsafe {
                    sys::LGBM_BoosterSaveModelToString(
                        h.0,
                        0,
                        num_iteration,
                        sys::C_API_FEATURE_IMPORTANCE_SPLIT as c_int,
                        buf.len() as i64,
                        &mut len,
                        buf.as_mut_ptr() as *mut c_char,
                    )
                },
                "save",
            )?;
            if (len as usize) <= buf.len() {
                break;
            }
            buf = vec![0u8; len as usize];
        }
        LONGEST_MODEL_TEXT.fetch_max(len as usize, Relaxed);
        buf.truncate((len as usize).saturating_sub(1));
        Ok(String::from_utf8(buf)?)
    }

    pub struct LgbmModel {
        task: Task,
        n_classes: usize,
        /// The model in LightGBM's text format.
        text: String,
        /// The booster parsed from `text` at the first prediction LightGBM makes and kept for
        /// the next ones, one thread at a time.
        loaded: std::sync::Mutex<Option<Handle>>,
        /// The trees read from `text` at the first prediction, predicted here the same as
        /// LightGBM would (`None`: a model this reader does not know, predicted by LightGBM).
        trees: std::sync::OnceLock<Option<Trees>>,
        threads: usize,
        best_round: i64,
        split: Vec<f64>,
        gain: Vec<f64>,
    }

    pub fn load(
        text: &[u8],
        task: Task,
        n_classes: usize,
        best_round: i64,
    ) -> Result<Box<dyn FittedModel>> {
        let text = String::from_utf8(text.to_vec())?;
        Ok(Box::new(LgbmModel::new(task, n_classes, text, best_round)))
    }

    fn importance(h: &Handle, features: usize, iterations: i32, kind: u32) -> Result<Vec<f64>> {
        let mut out = vec![0.0f64; features];
        // SAFETY: `out` holds one value per feature, as LightGBM writes.
        check(
            unsafe {
                sys::LGBM_BoosterFeatureImportance(h.0, iterations, kind as c_int, out.as_mut_ptr())
            },
            "feature importance",
        )?;
        Ok(out)
    }

    impl FittedModel for LgbmModel {
        fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
            let trees = self.trees.get_or_init(|| Trees::parse(&self.text));
            let raw = match trees.as_ref().filter(|t| t.features() == x.ncols()) {
                Some(trees) => trees.predict(&x.iter().copied().collect::<Vec<_>>(), self.threads),
                None => self.predict_in_lightgbm(x)?,
            };
            to_prediction(self.task, self.n_classes, raw, x.nrows())
        }
        fn column_shuffles<'a>(
            &'a self,
            x: ArrayView2<f64>,
        ) -> Option<Box<dyn ColumnShuffles + 'a>> {
            let trees = self
                .trees
                .get_or_init(|| Trees::parse(&self.text))
                .as_ref()?;
            let walked = (trees.features() == x.ncols())
                .then(|| trees.walked(&x.iter().copied().collect::<Vec<_>>()))??;
            Some(Box::new(LgbmShuffles {
                model: self,
                walked,
            }))
        }
        fn to_json(&self) -> Result<serde_json::Value> {
            Ok(
                json!({"library": "lightgbm", "best_round": self.best_round, "model": "see the native model file"}),
            )
        }
        fn native(&self) -> Vec<(&'static str, Vec<u8>)> {
            vec![("txt", self.text.clone().into_bytes())]
        }
        fn feature_importance(&self) -> Vec<(&'static str, Vec<f64>)> {
            vec![("split", self.split.clone()), ("gain", self.gain.clone())]
        }
    }

    /// A LightGBM model's predictions of rows with one column changed, its own trees walked
    /// again only where a path reads that column ([`Walked`]).
    struct LgbmShuffles<'a> {
        model: &'a LgbmModel,
        walked: Walked<'a>,
    }

    impl ColumnShuffles for LgbmShuffles<'_> {
        fn predict(&self, x: ArrayView2<f64>, column: usize) -> Result<Prediction> {
            let rows: Vec<f64> = x.iter().copied().collect();
            let raw = self.walked.predict_changed(&rows, column);
            to_prediction(self.model.task, self.model.n_classes, raw, x.nrows())
        }
    }

    impl LgbmModel {
        fn new(task: Task, n_classes: usize, text: String, best_round: i64) -> LgbmModel {
            LgbmModel {
                task,
                n_classes,
                text,
                loaded: std::sync::Mutex::new(None),
                trees: std::sync::OnceLock::new(),
                threads: 1,
                best_round,
                split: Vec::new(),
                gain: Vec::new(),
            }
        }

        /// LightGBM's own prediction (raw outputs, converted by the objective).
        fn predict_in_lightgbm(&self, x: ArrayView2<f64>) -> Result<Vec<f64>> {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if loaded.is_none() {
                let text = CString::new(self.text.as_str())?;
                let mut h: sys::BoosterHandle = std::ptr::null_mut();
                let mut iters: c_int = 0;
                // SAFETY: `text` is a NUL-terminated model string.
                check(
                    unsafe {
                        sys::LGBM_BoosterLoadModelFromString(text.as_ptr(), &mut iters, &mut h)
                    },
                    "load",
                )?;
                *loaded = Some(Handle(h));
            }
            let Some(h) = loaded.as_ref() else {
                return Err(anyhow!("the LightGBM booster did not load"));
            };
            let flat: Vec<f64> = x.iter().copied().collect();
            let per_row = if self.task == Task::Classification && self.n_classes > 2 {
                self.n_classes
            } else {
                1
            };
            let mut out = vec![0.0f64; x.nrows() * per_row];
            let mut len: i64 = 0;
            let params = CString::new(format!("num_threads={}", self.threads))?;
            // SAFETY: `flat` holds nrow * ncol row-major values; `out` has room for every output.
            check(
                unsafe {
                    sys::LGBM_BoosterPredictForMat(
                        h.0,
                        flat.as_ptr() as *const c_void,
                        sys::C_API_DTYPE_FLOAT64 as c_int,
                        x.nrows() as i32,
                        x.ncols() as i32,
                        1,
                        sys::C_API_PREDICT_NORMAL as c_int,
                        0,
                        -1,
                        params.as_ptr(),
                        &mut len,
                        out.as_mut_ptr(),
                    )
                },
                "predict",
            )?;
            out.truncate(len as usize);
            Ok(out)
        }
    }

    /// LightGBM's parameter string for a config, and the short name of its loss.
    fn booster_params(
        cfg: &ModelConfig,
        data: &TrainSet,
        seed: u64,
        threads: usize,
    ) -> Result<(String, &'static str)> {
        let (objective, metric, name) = match (data.task, data.n_classes) {
            (Task::Regression, _) => ("regression".to_string(), "rmse", "rmse"),
            (_, 2) => ("binary".to_string(), "binary_logloss", "logloss"),
            (_, k) => (
                format!("multiclass num_class={k}"),
                "multi_logloss",
                "mlogloss",
            ),
        };
        let max_depth = match cfg.int("max_depth")? {
            0 => -1,
            d => d,
        };
        let subsample = cfg.float("subsample")?;
        let mut params = format!(
                "objective={objective} metric={metric} is_provide_training_metric=true learning_rate={} num_leaves={} max_depth={max_depth} \
                 min_sum_hessian_in_leaf={} min_data_in_leaf={} feature_fraction={} bagging_fraction={subsample} bagging_freq={} \
                 lambda_l1={} lambda_l2={} seed={seed} num_threads={threads} deterministic=true force_col_wise=true verbosity=-1",
                cfg.float("learning_rate")?,
                cfg.int("num_leaves")?,
                cfg.float("min_child_weight")?,
                cfg.int("min_data_in_leaf")?,
                cfg.float("colsample_bytree")?,
                if subsample < 1.0 { 1 } else { 0 },
                cfg.float("reg_alpha")?,
                cfg.float("reg_lambda")?,
            );
        if data.n_classes == 2 {
            params.push_str(&format!(
                " scale_pos_weight={}",
                cfg.float("scale_pos_weight")?
            ));
        }
        Ok((params, name))
    }

    /// The rows scored each round: the early-stopping split's, else the fold being scored
    /// (for the learning curve), else none.
    fn validation(
        data: &TrainSet,
        ctx: &FitContext,
        stop_rows: &[usize],
        train: &Data,
        ds_params: &str,
    ) -> Result<Option<Data>> {
        if !stop_rows.is_empty() {
            let (xv, yv) = take(data.x, data.y, stop_rows);
            return Ok(Some(dataset(&xv, &yv, None, Some(train), ds_params)?));
        }
        let Some((x, y)) = ctx.eval else {
            return Ok(None);
        };
        let (x, y) = (x.to_owned(), y.to_owned());
        Ok(Some(dataset(&x, &y, None, Some(train), ds_params)?))
    }

    pub fn fit(
        cfg: &ModelConfig,
        data: &TrainSet,
        ctx: &FitContext,
    ) -> Result<Box<dyn FittedModel>> {
        let threads = threads(cfg, ctx)?;
        let seed = ctx.seed % (i32::MAX as u64);
        let (fit_rows, stop_rows) = early_stopping_split(cfg, data, ctx.seed)?;
        let (params, name) = booster_params(cfg, data, seed, threads)?;
        let ds_params = format!("verbosity=-1 seed={seed} num_threads={threads}");
        let (xf, yf) = take(data.x, data.y, &fit_rows);
        let train = dataset(
            &xf,
            &yf,
            row_weights(cfg, data, &fit_rows)?.as_deref(),
            None,
            &ds_params,
        )?;
        if let Some(names) = ctx.feature_names {
            set_feature_names(&train, names)?;
        }
        let valid = validation(data, ctx, &stop_rows, &train, &ds_params)?;
        let p = CString::new(params)?;
        let mut h: sys::BoosterHandle = std::ptr::null_mut();
        // SAFETY: the training dataset outlives the booster (both dropped at the end of fit).
        check(
            unsafe { sys::LGBM_BoosterCreate(train.0, p.as_ptr(), &mut h) },
            "booster",
        )?;
        let booster = Handle(h);
        if let Some(v) = &valid {
            // SAFETY: the validation dataset was built with the training set as reference.
            check(
                unsafe { sys::LGBM_BoosterAddValidData(booster.0, v.0) },
                "validation data",
            )?;
        }
        let mut counts: c_int = 0;
        // SAFETY: plain out-parameter.
        check(
            unsafe { sys::LGBM_BoosterGetEvalCounts(booster.0, &mut counts) },
            "eval counts",
        )?;
        let mut stopper = EarlyStopping::new(cfg.int("early_stopping_rounds")?);
        let rounds = cfg.int("n_rounds")?;
        let mut last = rounds - 1;
        for round in 0..rounds {
            let mut finished: c_int = 0;
            // SAFETY: the booster handle is live.
            check(
                unsafe { sys::LGBM_BoosterUpdateOneIter(booster.0, &mut finished) },
                "update",
            )?;
            if let Some(v) = eval(&booster, 0, counts as usize)?.first() {
                ctx.record(round, &format!("train_{name}"), *v);
            }
            if valid.is_some() {
                let loss = eval(&booster, 1, counts as usize)?
                    .first()
                    .copied()
                    .unwrap_or(f64::NAN);
                ctx.record(round, &format!("valid_{name}"), loss);
                if stopper.update(round, loss).1 {
                    last = round;
                    break;
                }
            }
            if finished != 0 || ctx.stop_requested() {
                last = round;
                break;
            }
        }
        let best_round = stopper.kept(last);
        let text = model_string(&booster, best_round as i32 + 1)?;
        let iterations = best_round as i32 + 1;
        let split = importance(
            &booster,
            data.x.ncols(),
            iterations,
            sys::C_API_FEATURE_IMPORTANCE_SPLIT,
        )?;
        let gain = importance(
            &booster,
            data.x.ncols(),
            iterations,
            sys::C_API_FEATURE_IMPORTANCE_GAIN,
        )?;
        Ok(Box::new(LgbmModel {
            threads,
            split,
            gain,
            ..LgbmModel::new(data.task, data.n_classes, text, best_round)
        }))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::models::test_config;
        use crate::rng::SplitMix64;

        /// Rows with missing values, exact zeros and values within LightGBM's zero threshold.
        fn table(n: usize, rng: &mut SplitMix64) -> Array2<f64> {
            Array2::from_shape_fn((n, 4), |_| match rng.next_f64() {
                u if u < 0.05 => f64::NAN,
                u if u < 0.10 => 0.0,
                u if u < 0.12 => 1e-40,
                u => (u - 0.5) * 4.0,
            })
        }

        fn target(x: &Array2<f64>, task: Task, k: usize, rng: &mut SplitMix64) -> Array1<f64> {
            x.rows()
                .into_iter()
                .map(|r| {
                    let s = r[0].max(-1.0) + r[1].abs() * 0.5 + rng.next_f64();
                    match task {
                        Task::Regression => s,
                        _ => ((s + 2.0) / 5.0 * k as f64)
                            .clamp(0.0, k as f64 - 1.0)
                            .floor(),
                    }
                })
                .collect()
        }

        /// Each task trained on rows with missing values (splits with a missing type) and on
        /// rows without (plain splits, walked on their own path here), then asked about rows
        /// with missing values, zeros and near-zeros.
        #[test]
        fn trees_predicted_here_give_lightgbms_probabilities_bit_for_bit() {
            let mut rng = SplitMix64::new(5);
            let tasks = [
                (Task::Regression, 0),
                (Task::Classification, 2),
                (Task::Classification, 4),
            ];
            for (missing, (task, k)) in [true, false].iter().flat_map(|m| tasks.map(|t| (*m, t))) {
                let mut x = table(600, &mut rng);
                if !missing {
                    x.mapv_inplace(|v| if v.is_nan() { 1.5 } else { v });
                }
                let y = target(&x, task, k, &mut rng);
                let data = TrainSet {
                    x: x.view(),
                    y: y.view(),
                    task,
                    n_classes: k,
                    labels: None,
                };
                let cfg = test_config(
                    "lightgbm",
                    &[("n_rounds", crate::models::ParamValue::Int(30))],
                );
                let fitted = fit(&cfg, &data, &FitContext::new(3, 1)).unwrap();
                let text = String::from_utf8(fitted.native()[0].1.clone()).unwrap();
                let model = LgbmModel::new(task, k, text, 29);
                let trees = Trees::parse(&model.text).expect("a model runner trains is read");
                assert_eq!(trees.is_plain(), !missing, "{task} {k}");
                let queries = table(300, &mut rng);
                let there = model.predict_in_lightgbm(queries.view()).unwrap();
                let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                for threads in [1, 2] {
                    let here = trees.predict(&queries.iter().copied().collect::<Vec<_>>(), threads);
                    assert_eq!(here.len(), there.len(), "{task} {k}");
                    assert_eq!(bits(&here), bits(&there), "{task} {k} {threads}");
                }
                shuffled_columns_predict_as_the_model_does(&model, &queries, &mut rng);
            }
        }

        /// The permutation importance's cheaper predictions ([`Walked`]) of rows with one column
        /// shuffled are the model's own, bit for bit, column by column.
        fn shuffled_columns_predict_as_the_model_does(
            model: &LgbmModel,
            queries: &Array2<f64>,
            rng: &mut SplitMix64,
        ) {
            let shuffles = (model.column_shuffles(queries.view()))
                .expect("a model runner trains predicts shuffled columns here");
            let bits = |p: &Prediction| {
                let proba = p.proba.iter().flatten().map(|f| f.to_bits());
                (p.values.iter().map(|f| f.to_bits()))
                    .chain(proba)
                    .collect::<Vec<_>>()
            };
            let unshuffled = bits(&model.predict(queries.view()).unwrap());
            for j in 0..queries.ncols() {
                let mut order: Vec<usize> = (0..queries.nrows()).collect();
                rng.shuffle(&mut order);
                let mut shuffled = queries.clone();
                for (i, from) in order.iter().enumerate() {
                    shuffled[[i, j]] = queries[[*from, j]];
                }
                let theirs = model.predict(shuffled.view()).unwrap();
                let ours = shuffles.predict(shuffled.view(), j).unwrap();
                assert_ne!(bits(&theirs), unshuffled);
                assert_eq!(bits(&ours), bits(&theirs), "column {j}");
            }
        }
    }
}
