//! The native module finds the backends' shared libraries where the CLI does: an rpath to
//! XGBoost's library (XGBOOST_LIB_DIR) and to libtorch (LIBTORCH), as the root build script
//! sets for the `runner` binary (a dependency's link arguments do not reach this crate).
fn main() {
    println!("cargo:rerun-if-env-changed=XGBOOST_LIB_DIR");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let rpath = |dir: String| println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    if std::env::var_os("CARGO_FEATURE_XGBOOST").is_some() {
        if let Ok(dir) = std::env::var("XGBOOST_LIB_DIR") {
            rpath(dir);
        }
    }
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
        if let Ok(dir) = std::env::var("LIBTORCH") {
            rpath(format!("{dir}/lib"));
        }
    }
}
