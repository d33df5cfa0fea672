//! The files of an MLflow model as MLflow 3.17.2 writes them (`MLmodel` and the flavour's
//! files), for the store's logged models and for a server's.

use super::ModelPackage;
use serde_json::{json, Value};

/// The name of a run's logged model (`runs:/<run id>/model`).
pub const MODEL_NAME: &str = "model";

/// The files of an MLflow model's folder: the package's files, then `MLmodel` last (a folder
/// with an `MLmodel` is complete), for the logged model `model_id` of run `run_id`.
pub fn model_files(
    model_id: &str,
    run_id: &str,
    now: i64,
    pkg: &ModelPackage,
) -> Vec<(String, Vec<u8>)> {
    let size: usize = pkg.files.iter().map(|(_, b)| b.len()).sum();
    let colspec = |cols: &[(String, String)]| {
        let v: Vec<Value> = cols
            .iter()
            .map(|(n, t)| json!({"type": t, "name": n, "required": true}))
            .collect();
        Value::Array(v).to_string()
    };
    let mut mlmodel = json!({
        "artifact_path": MODEL_NAME,
        "flavors": pkg.flavors,
        "mlflow_version": crate::types::MLFLOW_VERSION,
        "model_id": model_id,
        "model_size_bytes": size,
        "model_uuid": model_id,
        "run_id": run_id,
        "signature": {
            "inputs": colspec(&pkg.inputs),
            "outputs": colspec(&pkg.outputs),
            "params": null,
        },
        "utc_time_created": utc_time(now),
    });
    if pkg.files.iter().any(|(n, _)| n == "input_example.json") {
        mlmodel["saved_input_example_info"] = json!({
            "artifact_path": "input_example.json",
            "pandas_orient": "split",
            "serving_input_path": "serving_input_example.json",
            "type": "dataframe",
        });
    }
    let mut files = pkg.files.clone();
    files.push(("MLmodel".into(), yaml(&mlmodel, 0).into_bytes()));
    files
}

/// `2026-12-01 20:15:03.123000`, as MLflow writes `utc_time_created`.
fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// Block-style YAML of a JSON value (strings double-quoted, which YAML reads as JSON strings).
fn yaml(v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(m) if !m.is_empty() => format!("{pad}{k}:\n{}", yaml(v, indent + 2)),
                Value::Array(a) if !a.is_empty() => format!("{pad}{k}:\n{}", yaml(v, indent + 2)),
                _ => format!("{pad}{k}: {}\n", yaml(v, 0).trim_end()),
            })
            .collect(),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| format!("{pad}- {}\n", yaml(item, indent + 2).trim()))
            .collect(),
        Value::Object(_) => "{}\n".to_string(),
        Value::Array(_) => "[]\n".to_string(),
        scalar => format!("{scalar}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlflow_time_format() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00.000000");
        // 2026-12-01 20:15:03.123 UTC
        assert_eq!(utc_time(1_796_156_103_123), "2026-12-01 20:15:03.123000");
    }

    #[test]
    fn yaml_nests_maps_and_quotes_strings() {
        let v = json!({"a": {"b": "x: y", "c": null, "d": [1, 2]}, "e": 3});
        assert_eq!(
            yaml(&v, 0),
            "a:\n  b: \"x: y\"\n  c: null\n  d:\n    - 1\n    - 2\ne: 3\n"
        );
    }
}
