//! "Did you mean": the closest valid name to a mistyped one, for error messages that also list
//! every valid choice.

/// The candidate closest to `given`, when it is close enough to be a likely typo: a normalised
/// Damerau-Levenshtein similarity of at least 0.6, or a case-insensitive exact match.
pub fn closest<'a, S: AsRef<str>>(given: &str, candidates: &'a [S]) -> Option<&'a str> {
    let lower = given.to_lowercase();
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        let c = c.as_ref();
        if c == given {
            return None;
        }
        let score = if c.to_lowercase() == lower {
            1.0
        } else {
            strsim::normalized_damerau_levenshtein(&lower, &c.to_lowercase())
        };
        if score >= 0.6 && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// `"; did you mean \"x\"?"` when a candidate is close to `given`, else an empty string: meant to
/// be appended to a message that already names the mistake.
pub fn hint<S: AsRef<str>>(given: &str, candidates: &[S]) -> String {
    closest(given, candidates)
        .map(|c| format!("; did you mean \"{c}\"?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name_and_strangers_find_none() {
        let kinds = ["random_forest", "decision_tree", "xgboost", "lightgbm"];
        assert_eq!(closest("random_forrest", &kinds), Some("random_forest"));
        assert_eq!(closest("xgbost", &kinds), Some("xgboost"));
        assert_eq!(closest("LightGBM", &kinds), Some("lightgbm"));
        assert_eq!(closest("transformer", &kinds), None);
        assert_eq!(hint("transformer", &kinds), "");
        assert_eq!(
            hint("decison_tree", &kinds),
            "; did you mean \"decision_tree\"?"
        );
    }
}
