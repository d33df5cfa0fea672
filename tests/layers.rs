//! The modules form layers that only look down: a module imports (`crate::...`) only from its
//! own layer or the layers below it, and the imports have no cycle. Test modules are left out.
mod common;
use common::repo;
use std::collections::{BTreeMap, BTreeSet};

/// Bottom to top. `config` sits above `models` because it checks every hyperparameter against
/// the kinds' declared ranges before anything trains.
const LAYERS: &[&[&str]] = &[
    &[
        "types",
        "rng",
        "source",
        "suggest",
        "plot",
        "interrupt",
        "memory",
        "frames",
    ],
    &["eval", "resample", "calibrate", "tpe"],
    &[
        "models",
        "models::classical",
        "models::ensemble",
        "models::gbm",
        "models::lgbm_trees",
        "models::logistic",
        "models::neighbours",
        "models::nn",
        "models::nn::remote",
        "models::nn::wire",
        "models::params",
        "models::post",
        "models::svm",
        "models::svm::smo",
        "models::svm::smo::shrink",
        "models::tree",
        "models::tree::hist",
        "models::tree::packed",
        "models::tree::shuffles",
    ],
    &["config", "config::space", "config::sweeps"],
    &["data"],
    &[
        "etl",
        "etl::transform",
        "onnx",
        "onnx::columns",
        "onnx::decision",
        "onnx::ensemble",
        "onnx::linear",
        "onnx::neighbours",
        "onnx::nn",
        "onnx::proto",
        "onnx::svm",
        "onnx::trees",
    ],
    &[
        "track",
        "track::owner",
        "track::jsonl",
        "track::mlflow",
        "track::mlflow::models",
        "track::mlflow_rest",
        "track::mlmodel",
        "track::mlflow::sweeps",
        "track::mlflow::replica",
        "track::server_registry",
        "track::wandb",
    ],
    &["prepare", "progress", "folds_file", "shard"],
    &[
        "sweep",
        "sweep::importance",
        "sweep::mlflow_model",
        "sweep::plots",
        "sweep::prune",
        "sweep::record",
        "sweep::run",
        "sweep::train",
        "report",
        "sweep_parent",
        "search",
        "search_plots",
        "search_store",
        "schedule",
    ],
    &["eda", "predict", "replay"],
    &[
        "commands",
        "commands::diff",
        "commands::eda",
        "commands::export",
        "commands::models",
        "commands::predict",
        "commands::register",
        "commands::reload_etl",
        "commands::replay",
        "commands::runs",
        "commands::show",
        "commands::sweep",
        "commands::sweep_status",
        "commands::validate",
        "commands::wandb_sync",
    ],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

/// `src/track/mlflow.rs` -> `track::mlflow`; `src/models/mod.rs` -> `models`.
fn module_name(path: &std::path::Path) -> String {
    let rel = path.strip_prefix(repo().join("src")).unwrap();
    let name = rel.with_extension("").display().to_string();
    name.trim_end_matches("/mod").replace('/', "::")
}

/// The modules a file imports, outside its `#[cfg(test)] mod tests`.
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let path: String = code[i + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut parts = path.split("::");
        let first = parts.next().unwrap_or("").to_string();
        let nested = parts.next().map(|second| format!("{first}::{second}"));
        match nested {
            Some(n) if modules.contains(&n) => found.insert(n),
            _ if modules.contains(&first) => found.insert(first),
            _ => false,
        };
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<_> = files_of(&repo().join("src"));
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_name(f))
        // main.rs and src/bin/ are programs on the library, crates of their own.
        .filter(|m| m != "main" && m != "lib" && !m.starts_with("bin::"))
        .collect();
    files
        .iter()
        .filter(|f| modules.contains(&module_name(f)))
        .map(|f| {
            let m = module_name(f);
            let mut deps = imports(&std::fs::read_to_string(f).unwrap(), &modules);
            deps.remove(&m);
            (m, deps)
        })
        .collect()
}

fn files_of(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    common::files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect()
}

#[test]
fn modules_import_only_from_their_layer_or_below() {
    let g = graph();
    let mut upward = Vec::new();
    for (m, deps) in &g {
        for d in deps {
            if layer_of(d) > layer_of(m) {
                upward.push(format!(
                    "{m} (layer {}) imports {d} (layer {})",
                    layer_of(m),
                    layer_of(d)
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that look up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn module_imports_have_no_cycle() {
    let g = graph();
    // Kahn's algorithm: whatever cannot be ordered lies on a cycle.
    let mut remaining = g.clone();
    loop {
        let free: Vec<String> = remaining
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !remaining.contains_key(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if free.is_empty() {
            break;
        }
        for m in free {
            remaining.remove(&m);
        }
    }
    assert!(
        remaining.is_empty(),
        "modules on an import cycle: {remaining:?}"
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    // The scanner itself: a bottom-layer file naming the pipeline is caught.
    let modules: BTreeSet<String> = ["sweep", "track", "track::mlflow"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let found = imports(
        "use crate::sweep::Prepared;\nfn f() { crate::track::mlflow::x(); }\n#[cfg(test)]\nmod tests { use crate::track; }\n",
        &modules,
    );
    assert_eq!(
        found,
        ["sweep", "track::mlflow"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
