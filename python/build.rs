//! The native module finds XGBoost's shared library where the CLI does, by an rpath to
//! XGBOOST_LIB_DIR, as the root build script sets for the `runner` binary (a dependency's link
//! arguments do not reach this crate). It does not link libtorch: its networks train in the
//! helper program `runner-torch`, which the wheel carries; it only records which libtorch.
fn main() {
    println!("cargo:rerun-if-env-changed=XGBOOST_LIB_DIR");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rerun-if-changed={dir}/version.py");
    }
    let rpath = |dir: String| println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    if std::env::var_os("CARGO_FEATURE_XGBOOST").is_some() {
        if let Ok(dir) = std::env::var("XGBOOST_LIB_DIR") {
            rpath(dir);
        }
    }
    let mut libtorch_version = String::new();
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
        if let Ok(dir) = std::env::var("LIBTORCH") {
            libtorch_version = torch_version(&dir);
        }
    }
    // The torch wheel's version, that of the network helper's libtorch (`libtorch_version`).
    println!("cargo:rustc-env=RUNNER_LIBTORCH_VERSION={libtorch_version}");
}

/// `__version__` of the torch package whose libtorch this links (`2.13.0+cu130`).
fn torch_version(dir: &str) -> String {
    let text = std::fs::read_to_string(format!("{dir}/version.py")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .unwrap_or_default()
}
