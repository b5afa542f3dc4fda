//! Run directories and the three entry points the binary dispatches to:
//! [`train`], [`eval`] and [`sample`], each generic over the backend.
//!
//! A run directory holds the resolved `config.toml`, `run.txt` (command
//! line, commit, backend, device), `metrics.jsonl`, burn's logs,
//! `checkpoints/`, a trained tokenizer where the task has one, and
//! `report.json` with the task metric at every validation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::prelude::Backend;
use combiner_train::FitOptions;

use crate::config::{load_config, run_config, RunConfig};
use crate::family::{self, Evaluation, FitPlan, SampleRequest};
use crate::tasks::Ctx;

/// A run directory made ready for training.
#[derive(Clone, Debug)]
pub struct RunDir {
    /// The directory.
    pub path: PathBuf,
    /// The resolved config.
    pub cfg: RunConfig,
    /// Continue from the last checkpoint.
    pub resume: bool,
}

/// Where `train` was started from, written to `run.txt` (or `resume.txt`).
#[derive(Clone, Debug)]
pub struct Provenance {
    /// The command line.
    pub command: String,
    /// The commit the binary was built from.
    pub commit: String,
    /// The backend's cargo feature.
    pub backend: String,
    /// The device(s).
    pub device: String,
}

/// Resolves `config` + `preset`, checks it, and prepares `run_dir` (default
/// `runs/<config stem>-<preset>`): a new run is refused where one exists; a
/// resumed one must have the same resolved config.
pub fn open_run(
    config: &Path,
    preset: Option<&str>,
    run_dir: Option<PathBuf>,
    resume: bool,
    provenance: &Provenance,
) -> Result<RunDir> {
    let cfg = load_config(config, preset)?;
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "run".into());
    let path = run_dir.unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("{stem}-{}", preset.unwrap_or("base")))
    });
    open_run_dir(cfg, path, resume, provenance)
}

/// Prepares `path` for a run of the resolved `cfg` (see [`open_run`]).
pub fn open_run_dir(
    cfg: RunConfig,
    path: PathBuf,
    resume: bool,
    provenance: &Provenance,
) -> Result<RunDir> {
    let resolved = toml::to_string_pretty(&cfg).context("cannot serialize the resolved config")?;
    let cfg_path = path.join("config.toml");
    if resume {
        let saved = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!(
                "--resume: {} has no config.toml (not a run directory?)",
                path.display()
            )
        })?;
        if saved != resolved {
            bail!(
                "--resume: the config differs from the one {} was started with ({}); resume with the same config and preset",
                path.display(),
                cfg_path.display()
            );
        }
    } else if path.join("metrics.jsonl").exists() || path.join("checkpoints").exists() {
        // a directory holding only the config of a start that failed before
        // its first step has nothing to lose; anything trained is kept
        bail!(
            "run directory {} already exists; pass --resume to continue it, or choose another --run-dir",
            path.display()
        );
    }
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    if !resume {
        std::fs::write(&cfg_path, &resolved)
            .with_context(|| format!("cannot write {}", cfg_path.display()))?;
    }
    let info = format!(
        "command: {}\ncommit: {}\nbackend: {}\ndevice: {}\ntask: {}\nattention: {}\nstarted: {:?}\n",
        provenance.command,
        provenance.commit,
        provenance.backend,
        provenance.device,
        cfg.task.name(),
        cfg.trunk.attention.name(),
        std::time::SystemTime::now()
    );
    let info_path = path.join(if resume { "resume.txt" } else { "run.txt" });
    std::fs::write(&info_path, info)
        .with_context(|| format!("cannot write {}", info_path.display()))?;
    Ok(RunDir { path, cfg, resume })
}

/// How `train` runs besides the config.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Prepared datasets.
    pub data_dir: PathBuf,
    /// Stop after this many steps of this invocation (the run can be resumed).
    pub stop_after: Option<usize>,
    /// burn's TUI dashboard (in a terminal); else plain lines.
    pub dashboard: bool,
}

/// Trains the run on `devices` of backend `B` (data parallel when several)
/// and writes `report.json`.
pub fn train<B: Backend>(run: RunDir, devices: Vec<B::Device>, opts: TrainOptions) -> Result<()> {
    let cfg = &run.cfg;
    let s = &cfg.train;
    let device = devices.first().cloned().context("no device given")?;
    Autodiff::<B>::seed(&device, s.seed);
    let started = std::time::Instant::now();
    let prepared = cfg.task.spec().prepare(&Ctx {
        data_dir: &opts.data_dir,
        run_dir: &run.path,
        trunk: &cfg.trunk,
        seed: s.seed,
        need_train: true,
    })?;
    let (n_train, n_valid) = prepared.sizes();
    eprintln!(
        "task {}: {n_train} training and {n_valid} validation items ready in {:.1} s",
        cfg.task.name(),
        started.elapsed().as_secs_f64()
    );
    let objective = prepared.objective();
    let plan = FitPlan {
        settings: s.clone(),
        devices,
        opts: FitOptions {
            run_dir: run.path.clone(),
            steps: s.steps,
            checkpoint_every: s.checkpoint_every,
            keep_checkpoints: s.keep_checkpoints,
            grad_accumulation: s.grad_accumulation,
            batch_size: s.batch_size,
            resume: run.resume,
            stop_after: opts.stop_after,
            objective,
            dashboard: opts.dashboard,
            compute_dtype: s.precision.compute_dtype(),
        },
    };
    let report = family::train::<Autodiff<B>>(prepared, plan)?;
    // the validation history of every segment, from metrics.jsonl (which
    // holds each step once after a resume)
    let history = std::fs::read_to_string(run.path.join("metrics.jsonl")).unwrap_or_default();
    let valid: Vec<serde_json::Value> = history
        .lines()
        .filter_map(|l| serde_json::from_str::<combiner_train::StepLog>(l).ok())
        .filter_map(|l| {
            let loss = l.valid_loss?;
            let (metric, value) = objective.metric(loss, l.valid_accuracy);
            Some(serde_json::json!({ "step": l.step, "loss": loss, metric: value }))
        })
        .collect();
    let path = run.path.join("report.json");
    // every invocation of `train` on this run directory is one segment
    let mut segments: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("segments").and_then(|s| s.as_array().cloned()))
        .filter(|_| run.resume)
        .unwrap_or_default();
    segments.push(serde_json::json!({
        "start_step": report.start_step,
        "end_step": report.end_step,
        "resumed": run.resume,
        "wall_seconds": started.elapsed().as_secs_f64(),
    }));
    let summary = serde_json::json!({
        "task": cfg.task.name(),
        "attention": cfg.trunk.attention.name(),
        "start_step": report.start_step,
        "end_step": report.end_step,
        "steps": s.steps,
        "final_train_loss": report.losses.last().map(|l| l.1),
        "wall_seconds": started.elapsed().as_secs_f64(),
        "valid": valid,
        "segments": segments,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let last = report.valid.last().map(|&(step, loss)| {
        let acc = report.valid_accuracy.last().map(|a| a.1);
        format!(
            "step {step}: validation loss {loss:.4} ({})",
            objective.describe(loss, acc)
        )
    });
    eprintln!(
        "finished at step {} of {}; {}; report {}",
        report.end_step,
        s.steps,
        last.unwrap_or_else(|| "no validation yet".into()),
        path.display()
    );
    Ok(())
}

fn prepare_for_reading(run_dir: &Path, data_dir: &Path) -> Result<(RunConfig, crate::Prepared)> {
    let cfg = run_config(run_dir)?;
    let prepared = cfg.task.spec().prepare(&Ctx {
        data_dir,
        run_dir,
        trunk: &cfg.trunk,
        seed: cfg.train.seed,
        need_train: false,
    })?;
    Ok((cfg, prepared))
}

/// Evaluates a run's last checkpoint on its validation set and the task's
/// extra evaluation sets; returns the step and one line per set.
pub fn eval<B: Backend>(
    run_dir: &Path,
    data_dir: &Path,
    device: B::Device,
) -> Result<(usize, Vec<Evaluation>)> {
    let (cfg, prepared) = prepare_for_reading(run_dir, data_dir)?;
    family::evaluate::<B>(
        prepared,
        run_dir,
        cfg.train.batch_size,
        cfg.train.seed,
        &device,
    )
}

/// Samples from a run's last checkpoint (see [`family::sample`]).
pub fn sample<B: Backend>(
    run_dir: &Path,
    data_dir: &Path,
    req: &SampleRequest,
    device: B::Device,
) -> Result<String> {
    let (_, prepared) = prepare_for_reading(run_dir, data_dir)?;
    family::sample::<B>(prepared, run_dir, req, &device)
}
