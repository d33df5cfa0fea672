//! `runner export tN --format native|onnx|torchscript --out DIR`.

use crate::predict::open_saved;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `runner export tN --format native|onnx|torchscript --out DIR`.
pub fn export_command(
    uri: Option<&str>,
    version: &str,
    format: &str,
    out: &Path,
) -> Result<ExitCode> {
    let saved = open_saved(uri, version)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let copy = |from: &Path| -> Result<PathBuf> {
        let to = out.join(from.file_name().unwrap_or_default());
        std::fs::copy(from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        Ok(to)
    };
    let written: Vec<PathBuf> = match format {
        "native" => saved.files.iter().map(|f| copy(f)).collect::<Result<_>>()?,
        "torchscript" => {
            let pt = saved
                .files
                .iter()
                .find(|f| f.extension().is_some_and(|e| e == "pt"))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} is a {} model; TorchScript export covers the networks (mlp, cnn, lstm): use --format native or onnx",
                        saved.version,
                        saved.config.kind
                    )
                })?;
            vec![copy(pt)?, copy(&saved.files[0])?]
        }
        "onnx" => {
            let bytes = crate::onnx::export(
                &crate::onnx::Source {
                    version: &saved.version,
                    config: &saved.config,
                    task: saved.task,
                    labels: saved.labels.as_ref(),
                    preprocessor: &saved.preprocessor,
                    fitted: &saved.document["fitted"],
                    native: &saved.native,
                    column_types: &[],
                },
                crate::onnx::Layout::Matrix,
            )?;
            let to = out.join(format!("model_{}.onnx", saved.version));
            std::fs::write(&to, bytes).with_context(|| format!("cannot write {}", to.display()))?;
            vec![to]
        }
        other => {
            bail!("unknown export format \"{other}\"; valid: \"native\", \"onnx\", \"torchscript\"")
        }
    };
    for w in &written {
        println!("{}", w.display());
    }
    eprintln!(
        "{} ({}, {}) exported as {format}: {} file(s) in {}",
        saved.version,
        saved.config.name,
        saved.config.kind,
        written.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
