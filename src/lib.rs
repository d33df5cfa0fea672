//! runner: machine-learning experiments on tabular data, end to end. The binary (`main.rs`) only
//! parses the command line and calls into these modules.

// No unwrap, expect or panic where user input can reach (tests may); each remaining one is
// allowed where it stands, with its reason. Every function fits on a screen (clippy.toml).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::too_many_lines)]

pub mod calibrate;
pub mod commands;
pub mod config;
pub mod data;
pub mod eda;
pub mod etl;
pub mod eval;
pub mod folds_file;
pub mod frames;
pub mod interrupt;
pub mod memory;
pub mod models;
pub mod onnx;
pub mod plot;
pub mod predict;
pub mod prepare;
pub mod progress;
pub mod replay;
pub mod report;
pub mod resample;
pub mod rng;
pub mod schedule;
pub mod search;
pub mod search_plots;
pub mod search_store;
pub mod shard;
pub mod source;
pub mod suggest;
pub mod sweep;
pub mod sweep_parent;
pub mod tpe;
pub mod track;
pub mod types;

/// The version of the shape of every `--json` document (documented in the README): 2 writes
/// metrics as `{"mean": .., "std": ..}` objects.
pub const JSON_SCHEMA: u32 = 2;

/// When the process started, for the `start_to_first_training_ms` figure of a sweep report.
pub static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
