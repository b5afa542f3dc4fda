//! `combiner train | eval | sample`: parse, pick the backend, dispatch to the
//! task layer (`combiner-tasks`), which knows every task.

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::*;
use clap::Args;
use combiner_tasks::run::{self, Provenance, RunDir, TrainOptions};
use combiner_tasks::SampleRequest;

use crate::backend::{run_on, BackendJob, BackendKind, Dtype};
use combiner_tasks::Precision;

/// Options of `combiner train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Run config (TOML): `[task]` (kind: listops, cifar10, imagenet64, lm, mlm, lra_text,
    /// lra_retrieval, lra_image, pathfinder), `[trunk]` (with `attention`), `[train]`,
    /// optional `[presets.<name>]`.
    #[arg(long)]
    pub config: PathBuf,
    /// Preset from the config's `[presets]` table: smoke (seconds, CPU), small (minutes, one GPU), paper.
    #[arg(long)]
    pub preset: Option<String>,
    /// Run directory (default `runs/<config name>-<preset>`). An existing run is refused unless `--resume`.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in `--run-dir` from its last complete checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Data directory for prepared datasets (default: $COMBINER_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Stop after N steps of this invocation (the run can be resumed).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// Always print plain progress lines, even in a terminal (no TUI dashboard).
    #[arg(long)]
    pub plain: bool,
    /// Data-parallel training on these device indices (e.g. `0,1`); the global batch
    /// (`train.batch_size`) is split evenly across them. Replaces `--device`.
    #[arg(long, value_delimiter = ',', value_name = "N,M,...")]
    pub devices: Option<Vec<usize>>,
}

/// Options of `combiner eval` and `combiner sample`.
#[derive(Debug, Args)]
pub struct RunDirArgs {
    /// A run directory written by `combiner train`.
    #[arg(long)]
    pub run_dir: PathBuf,
    /// Data directory for prepared datasets (default: $COMBINER_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of samples: images, text continuations, filled-in sequences or classified examples (`sample` only).
    #[arg(long, default_value_t = 4)]
    pub count: usize,
    /// Sampling temperature (`sample` only).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Tokens generated per text sample (`sample` of an LM run only).
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// Output PNG for image samples (`sample` only; default `<run-dir>/samples.png`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `combiner train`.
pub fn train(args: TrainArgs, backend: BackendKind, device: usize) -> Result<()> {
    let provenance = Provenance {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        commit: env!("COMBINER_BUILD_COMMIT").to_string(),
        backend: backend.feature().to_string(),
        device: match &args.devices {
            Some(d) => format!("{d:?}"),
            None => device.to_string(),
        },
    };
    let run = run::open_run(
        &args.config,
        args.preset.as_deref(),
        args.run_dir.clone(),
        args.resume,
        &provenance,
    )?;
    let precision = run.cfg.train.precision;
    crate::backend::check_dtype(backend, Dtype::from(precision)).map_err(|e| {
        anyhow::anyhow!(
            "{}: train.precision = \"{}\": {e}",
            args.config.display(),
            precision.name()
        )
    })?;
    if precision != Precision::F32 {
        eprintln!(
            "mixed precision: {} matmuls and attention (softmax sums in f32), f32 weights, norms and loss",
            precision.name()
        );
    }
    eprintln!("run directory: {}", run.path.display());
    let resume_cmd = {
        let mut args: Vec<String> = std::env::args().collect();
        if !args.iter().any(|a| a == "--run-dir") {
            args.extend(["--run-dir".to_string(), run.path.display().to_string()]);
        }
        if !args.iter().any(|a| a == "--resume") {
            args.push("--resume".into());
        }
        args.join(" ")
    };
    combiner_train::install_signal_handlers()
        .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))?;
    let job = TrainJob {
        devices: args.devices.clone().unwrap_or_default(),
        run,
        opts: TrainOptions {
            data_dir: combiner_data::data_dir(args.data_dir.as_deref()),
            stop_after: args.stop_after,
            dashboard: !args.plain && std::io::IsTerminal::is_terminal(&std::io::stdout()),
        },
    };
    let result = run_on(backend, device, job);
    if let Err(e) = &result {
        if let Some(combiner_train::TrainError::Interrupted { .. }) =
            e.downcast_ref::<combiner_train::TrainError>()
        {
            eprintln!("resume with:\n  {resume_cmd}");
        }
    }
    result
}

struct TrainJob {
    devices: Vec<usize>,
    run: RunDir,
    opts: TrainOptions,
}

impl BackendJob for TrainJob {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        run::train::<B>(self.run, vec![device], self.opts)
    }

    fn devices(&self) -> Vec<usize> {
        self.devices.clone()
    }

    fn run_many<B: Backend>(self, devices: Vec<B::Device>) -> Result<()> {
        run::train::<B>(self.run, devices, self.opts)
    }
}

struct EvalJob {
    args: RunDirArgs,
    sample: bool,
}

impl BackendJob for EvalJob {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let a = &self.args;
        let data_dir = combiner_data::data_dir(a.data_dir.as_deref());
        if self.sample {
            let req = SampleRequest {
                count: a.count,
                temperature: a.temperature,
                tokens: a.tokens,
                png: a
                    .out
                    .clone()
                    .unwrap_or_else(|| a.run_dir.join("samples.png")),
                seed: a.seed,
            };
            out!("{}", run::sample::<B>(&a.run_dir, &data_dir, &req, device)?);
        } else {
            let (step, evals) = run::eval::<B>(&a.run_dir, &data_dir, device)?;
            for e in evals {
                outln!(
                    "{}: step {step}, {} ({} predictions): loss {:.4}, {}",
                    a.run_dir.display(),
                    e.set,
                    e.count,
                    e.loss,
                    e.describe()
                );
            }
        }
        Ok(())
    }
}

/// `combiner eval`.
pub fn eval(args: RunDirArgs, backend: BackendKind, device: usize) -> Result<()> {
    run_on(
        backend,
        device,
        EvalJob {
            args,
            sample: false,
        },
    )
}

/// `combiner sample`.
pub fn sample(args: RunDirArgs, backend: BackendKind, device: usize) -> Result<()> {
    run_on(backend, device, EvalJob { args, sample: true })
}
