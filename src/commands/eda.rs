//! `runner eda <config>`: the data report, logged as a run on every tracker and printed.

use crate::eda::{analyse, markdown, plots, EdaReport};
use crate::prepare::Prepared;

/// The EDA run as trackers first see it: named `eda-v<N>`, tagged with its report.
fn eda_run(prep: &Prepared, path: &std::path::Path, v: i64, md: &str) -> crate::track::TrackedRun {
    use crate::track::user;
    use crate::types::GIT_COMMIT;
    let name = format!("eda-v{v}");
    let spec = crate::track::RunSpec {
        run_uuid: uuid::Uuid::new_v4().simple().to_string(),
        name: name.clone(),
        experiment: prep.loaded.config.experiment.clone(),
        user: user(),
        start_ms: crate::track::now_ms(),
        git_commit: GIT_COMMIT.to_string(),
        params: vec![
            ("etl_version".into(), format!("v{v}")),
            ("data.target".into(), prep.table.target_name.clone()),
            ("task".into(), prep.task.to_string()),
            ("seed".into(), prep.loaded.config.seed.to_string()),
        ],
        tags: vec![
            ("mlflow.runName".into(), name),
            ("mlflow.user".into(), user()),
            (
                "mlflow.source.name".into(),
                format!("runner eda {}", path.display()),
            ),
            ("mlflow.source.type".into(), "LOCAL".into()),
            ("mlflow.source.git.commit".into(), GIT_COMMIT.to_string()),
            ("mlflow.note.content".into(), md.to_string()),
            ("runner.kind".into(), "eda".into()),
            ("runner.etl_version".into(), format!("v{v}")),
        ],
        dataset: Some(crate::prepare::dataset_input(prep, v)),
    };
    crate::track::TrackedRun {
        spec,
        version: None,
        kind: "eda".into(),
        record: serde_json::json!({"etl_version": format!("v{v}"), "config": prep.loaded.config}),
        curve_axis: "step",
        group: None,
    }
}

/// The report's figures as metrics: imbalance, per-feature skewness, target correlation and
/// missing share, and per-k cluster agreement.
fn eda_metrics(report: &EdaReport) -> Vec<crate::track::Metric> {
    let ts = crate::track::now_ms();
    let mut metrics = Vec::new();
    let mut push = |key: String, value: f64| {
        metrics.push(crate::track::Metric {
            key,
            value,
            step: 0,
            timestamp_ms: ts,
        })
    };
    if let Some(ir) = report.imbalance_ratio {
        push("imbalance_ratio".into(), ir);
    }
    for f in &report.features {
        let name = crate::track::sanitize(&f.name);
        push(format!("skewness/{name}"), f.skewness);
        push(format!("corr_target/{name}"), f.corr_with_target);
        push(format!("missing_share/{name}"), f.missing_share);
    }
    for c in &report.clusters {
        push(format!("kmeans_k{}/purity", c.k), c.purity);
        push(format!("kmeans_k{}/ari", c.k), c.adjusted_rand_index);
        push(
            format!("kmeans_k{}/nmi", c.k),
            c.normalized_mutual_information,
        );
    }
    metrics
}

/// Writes the report to `out` and its pictures beside it, so the links resolve.
fn write_report_files(
    out: &std::path::Path,
    md: &str,
    pictures: &[(String, String)],
) -> anyhow::Result<()> {
    std::fs::write(out, md).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    for (name, svg) in pictures {
        let p = dir.join(name);
        std::fs::write(&p, svg)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    Ok(())
}

/// An EDA run: its id, the report (as `eda.json`), the Markdown and the plots (name, SVG).
pub struct Eda {
    pub run_uuid: String,
    pub etl_version: i64,
    pub report: EdaReport,
    pub markdown: String,
    pub pictures: Vec<(String, String)>,
    pub store_path: std::path::PathBuf,
}

/// `runner eda <config>`: computes the report, logs it as a run tagged EDA and linked to the
/// ETL version on every tracker, and prints it (Markdown, or JSON with `--json`).
pub fn eda_command(
    path: &std::path::Path,
    sets: &[String],
    tracking_uri: Option<&str>,
    json_out: bool,
    out: Option<&std::path::Path>,
) -> anyhow::Result<std::process::ExitCode> {
    let loaded = crate::config::load_config(path, sets)?;
    let eda = run_eda(loaded, tracking_uri)?;
    if let Some(out) = out {
        write_report_files(out, &eda.markdown, &eda.pictures)?;
    }
    if json_out {
        let doc = serde_json::json!({"schema": crate::JSON_SCHEMA, "run_uuid": eda.run_uuid, "report": eda.report});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{}", eda.markdown);
        println!(
            "Logged as MLflow run eda-v{} ({}) in {}",
            eda.etl_version,
            eda.run_uuid,
            crate::track::store_label(&eda.store_path)
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Computes a loaded config's data report and logs it as a run on every tracker.
pub fn run_eda(
    loaded: crate::config::LoadedConfig,
    tracking_uri: Option<&str>,
) -> anyhow::Result<Eda> {
    use crate::track::{now_ms, RunStatus, Tracker, Trackers};
    let path = loaded.path.clone();
    let prep = crate::prepare::prepare(loaded)?;
    let c = &prep.loaded.config;
    // W&B settings are checked before anything is written (a missing key is a config error).
    let wandb_settings = crate::track::wandb::resolve(
        c.tracking.wandb.as_ref(),
        &c.experiment,
        &prep.loaded.path.display().to_string(),
    )?;
    let store_path = crate::track::tracking_path(tracking_uri, Some(&prep.loaded))?;
    let others = crate::track::open_others(&c.tracking, wandb_settings, &store_path)?;
    let store = crate::track::mlflow::MlflowStore::open(&store_path)?;
    let (v, _) = store.etl_version(&prep.etl_key, &prep.etl_record)?;
    let trackers = Trackers::new(&store, others.iter().map(|t| t.as_ref()).collect());
    let report = analyse(&prep, &format!("v{v}"));
    let pictures = plots(&prep, &report);
    let mut md = markdown(&report);
    md.push_str("\n## Plots\n\n");
    for (name, _) in &pictures {
        md.push_str(&format!("![{name}]({name})\n"));
    }
    let run = eda_run(&prep, &path, v, &md);
    let run_uuid = run.spec.run_uuid.clone();
    trackers.create_run(&run)?;
    trackers.start_run(&run_uuid)?;
    trackers.log_metrics(&run_uuid, &eda_metrics(&report))?;
    trackers.log_artifact(&run_uuid, "eda_report.md", md.as_bytes())?;
    trackers.log_artifact(&run_uuid, "eda.json", &serde_json::to_vec_pretty(&report)?)?;
    for (name, svg) in &pictures {
        trackers.log_artifact(&run_uuid, name, svg.as_bytes())?;
    }
    trackers.finish_run(&run_uuid, RunStatus::Finished, now_ms())?;
    for note in trackers.close() {
        eprintln!("{note}");
    }
    Ok(Eda {
        run_uuid,
        etl_version: v,
        report,
        markdown: md,
        pictures,
        store_path,
    })
}
