//! The bottom layer's types: the task, and run and ETL version ids as users write them (`t3`,
//! training run 3; `v2`, ETL version 2).

use serde::{Deserialize, Serialize};
use std::fmt;

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
