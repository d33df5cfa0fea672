//! Records the git commit and the versions of the ML backends, so every run can say exactly
//! what produced it.
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    println!(
        "cargo:rustc-env=RUNNER_GIT_COMMIT={commit}{}",
        if dirty { "-dirty" } else { "" }
    );
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut versions = Vec::new();
    let mut name = String::new();
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = n.trim_matches('"').to_string();
        } else if let Some(v) = line.strip_prefix("version = ") {
            if [
                "polars",
                "linfa",
                "linfa-logistic",
                "linfa-svm",
                "linfa-nn",
                "linfa-bayes",
                "rusqlite",
                "ndarray",
            ]
            .contains(&name.as_str())
            {
                versions.push(format!("{name}={}", v.trim_matches('"')));
            }
        }
    }
    println!("cargo:rustc-env=RUNNER_LIB_VERSIONS={}", versions.join(","));
    // libxgboost.so comes from the PyPI wheel: let the binary find it without LD_LIBRARY_PATH.
    println!("cargo:rerun-if-env-changed=XGBOOST_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_XGBOOST").is_some() {
        if let Ok(dir) = std::env::var("XGBOOST_LIB_DIR") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    // libtorch comes from the PyPI torch wheel, which sets no rpath either.
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
        if let Ok(dir) = std::env::var("LIBTORCH") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
            // The network helper opens libtorch's CUDA library from here when asked for CUDA.
            println!("cargo:rustc-env=RUNNER_LIBTORCH_LIB={dir}/lib");
        }
    }
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}
