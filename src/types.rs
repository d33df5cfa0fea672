//! The bottom layer's types: the task, run and ETL version ids as users write them (`t3`,
//! training run 3; `v2`, ETL version 2), and the errors with the exit code each means.

use serde::{Deserialize, Serialize};
use std::fmt;

/// This build: its version, its git commit, and the versions of the libraries it trains with.
pub const RUNNER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The MLflow release whose store, model and registry formats runner writes.
pub const MLFLOW_VERSION: &str = "3.17.2";
pub const GIT_COMMIT: &str = env!("RUNNER_GIT_COMMIT");
pub const LIB_VERSIONS: &str = env!("RUNNER_LIB_VERSIONS");

/// What a model learns to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classification,
    Regression,
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::Classification => write!(f, "classification"),
            Task::Regression => write!(f, "regression"),
        }
    }
}

/// `t3` -> 3 (training versions), for clap.
pub fn check_version_arg(v: &str) -> std::result::Result<i64, String> {
    parse_version(v, 't')
}

/// `t3` -> 3 or `v2` -> 2: a version number written with its prefix.
pub fn parse_version(v: &str, prefix: char) -> std::result::Result<i64, String> {
    let what = if prefix == 't' { "training" } else { "ETL" };
    v.strip_prefix(prefix)
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            let hint = v
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .map(|n| format!("; did you mean \"{prefix}{n}\"?"))
                .unwrap_or_default();
            format!("\"{v}\" is not a {what} version; write it as {prefix}1, {prefix}2, ...{hint}")
        })
}

/// A mistake in what the user wrote: exit code 2, nothing trained, nothing written.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.col {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(k) = &self.key {
            write!(f, "key `{k}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            line: None,
            col: None,
            key: None,
            message: message.into(),
        }
    }

    /// At line and column `pos`, where known.
    pub fn at(mut self, pos: Option<(usize, usize)>) -> Self {
        if let Some((l, c)) = pos {
            self.line = Some(l);
            self.col = Some(c);
        }
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// Every error a command ends with, by what it means for the user; [`Error::exit_code`] is
/// the one place errors become exit codes (0 is success). Each keeps the whole chain of what
/// the layers above added, printed as `outer: inner`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mistake in what the user wrote or gave (config, sweep file, data, arguments): exit 2,
    /// before anything is written. It carries a [`ConfigError`].
    #[error("{0:#}")]
    Input(anyhow::Error),
    /// Output into a pipe that closed (`runner runs | head`): not a failure, exit 0.
    #[error("the output pipe closed")]
    ClosedPipe,
    /// Anything else (a run that failed, a store that cannot be written): exit 1.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Error {
    /// Classifies an error by what it carries, through any context added on the way up.
    fn from(e: anyhow::Error) -> Error {
        let closed = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        if closed {
            Error::ClosedPipe
        } else if e.downcast_ref::<ConfigError>().is_some() {
            Error::Input(e)
        } else {
            Error::Failed(e)
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Input(e.into())
    }
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::ClosedPipe => 0,
            Error::Failed(_) => 1,
            Error::Input(_) => 2,
        }
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn an_input_mistake_is_exit_2_through_any_context_and_keeps_the_chain() {
        let inner: anyhow::Result<()> =
            Err(ConfigError::new("c.toml", "bad").key("cv.folds").into());
        let e = Error::from(inner.context("loading the config").unwrap_err());
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            "loading the config: c.toml: key `cv.folds`: bad"
        );
        let failed = Error::from(anyhow::anyhow!("the store is locked"));
        assert_eq!(failed.exit_code(), 1);
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(Error::from(anyhow::Error::from(pipe)).exit_code(), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_their_prefix_and_hint_without_it() {
        assert_eq!(parse_version("t3", 't'), Ok(3));
        assert_eq!(parse_version("v12", 'v'), Ok(12));
        assert!(parse_version("t0", 't').is_err());
        assert!(parse_version("3", 't')
            .unwrap_err()
            .contains("did you mean \"t3\"?"));
        assert!(parse_version("v3", 't')
            .unwrap_err()
            .contains("did you mean \"t3\"?"));
    }
}
