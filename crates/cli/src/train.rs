//! `combiner train | eval | sample`: one run directory per experiment run,
//! TOML configs with presets, every model family on every backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::record::{DefaultRecorder, Recorder};
use burn::train::InferenceStep;
use clap::Args;
use combiner_data::batcher::{
    ClassificationBatch, ClassificationBatcher, LmBatch, LmBatcher, TokenSequence,
};
use combiner_data::listops::{self, ListOps, ListOpsConfig};
use combiner_data::{Cifar10, Split};
use combiner_models::image_ar::{ImageArConfig, START};
use combiner_models::lra::{LraConfig, Pooling};
use combiner_nn::{Objective, StepOutput, TrunkConfig};
use combiner_train::{checkpoint_dir, checkpoints_of, fit, EpochStream, FitOptions, WarmupCosine};
use serde::{Deserialize, Serialize};

use crate::backend::{run_on, BackendJob, BackendKind};

/// A run's configuration. Unknown keys anywhere are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Data and model family.
    pub task: Task,
    /// The transformer trunk, including the attention.
    pub trunk: TrunkConfig,
    /// Optimization and checkpointing.
    pub train: TrainSettings,
}

/// Which data the run trains on (and so which model family).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Task {
    /// LRA ListOps, generated in code (10 classes).
    Listops {
        /// Generator settings (LRA's by default).
        #[serde(default)]
        generator: ListOpsSettings,
        /// Training examples generated.
        train_size: usize,
        /// Validation examples generated (another seed).
        valid_size: usize,
        /// Pooling of the classifier.
        #[serde(default)]
        pooling: Pooling,
    },
    /// CIFAR-10 density estimation (bits/dim) from the prepared data dir.
    Cifar10 {
        /// Use only the first N training images (all when absent).
        #[serde(default)]
        train_limit: Option<usize>,
        /// Use only the first N test images for validation.
        #[serde(default)]
        valid_limit: Option<usize>,
    },
}

/// ListOps generator settings (see `combiner_data::listops`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListOpsSettings {
    /// Deepest nesting.
    pub max_depth: usize,
    /// Most arguments per operator.
    pub max_args: usize,
    /// Shortest sequence (exclusive).
    pub min_length: usize,
    /// Longest sequence (exclusive).
    pub max_length: usize,
    /// Padded model length.
    pub seq_len: usize,
}

impl Default for ListOpsSettings {
    fn default() -> Self {
        let d = ListOpsConfig::default();
        ListOpsSettings {
            max_depth: d.max_depth,
            max_args: d.max_args,
            min_length: d.min_length,
            max_length: d.max_length,
            seq_len: d.seq_len,
        }
    }
}

/// Optimization settings (paper E.3: Adam with clipping, warm-up + cosine).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Optimizer steps.
    pub steps: usize,
    /// Items per batch (global batch = batch_size * grad_accumulation).
    pub batch_size: usize,
    /// Batches per optimizer step.
    #[serde(default = "one")]
    pub grad_accumulation: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    #[serde(default)]
    pub warmup: usize,
    /// Final learning rate as a fraction of the peak.
    #[serde(default = "final_fraction")]
    pub final_lr_fraction: f64,
    /// AdamW weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Gradient norm clipping (none when absent).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Evaluate and checkpoint every N steps.
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    #[serde(default = "two")]
    pub keep_checkpoints: usize,
    /// Seed of initialization, data generation and order.
    #[serde(default)]
    pub seed: u64,
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn final_fraction() -> f64 {
    0.1
}

/// Deep-merges `over` into `base` (tables merge, other values replace; a
/// table with another `kind` replaces the whole table).
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        // a different `kind` is a different enum variant: replace, do not mix keys
        (toml::Value::Table(b), toml::Value::Table(o))
            if o.get("kind").is_some_and(|k| b.get("kind") != Some(k)) =>
        {
            *b = o;
        }
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Reads a config file and applies the named preset from its `[presets.<name>]` table.
pub fn load_config(path: &Path, preset: Option<&str>) -> Result<RunConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let mut value: toml::Value =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let presets = value.as_table_mut().and_then(|t| t.remove("presets"));
    if let Some(name) = preset {
        let table = presets
            .as_ref()
            .and_then(|p| p.get(name))
            .cloned()
            .with_context(|| {
                let known: Vec<String> = presets
                    .as_ref()
                    .and_then(|p| p.as_table())
                    .map(|t| t.keys().cloned().collect())
                    .unwrap_or_default();
                format!(
                    "{} has no preset `{name}` (it has: {})",
                    path.display(),
                    known.join(", ")
                )
            })?;
        merge(&mut value, table);
    }
    let cfg: RunConfig = value.try_into().with_context(|| {
        format!(
            "{}{} is not a valid run config",
            path.display(),
            preset.map(|p| format!(" (preset {p})")).unwrap_or_default()
        )
    })?;
    Ok(cfg)
}

/// Options of `combiner train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Run config (TOML): `[task]`, `[trunk]` (with `attention`), `[train]`, optional `[presets.<name>]`.
    #[arg(long)]
    pub config: PathBuf,
    /// Preset from the config's `[presets]` table, e.g. smoke (seconds, CPU), small (minutes, one GPU), paper.
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
    /// Number of samples (`sample` only).
    #[arg(long, default_value_t = 4)]
    pub count: usize,
    /// Sampling temperature (`sample` only).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Output PNG for image samples (`sample` only; default `<run-dir>/samples.png`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The commit this binary was built from (`+changes`: with uncommitted edits).
fn git_commit() -> String {
    env!("COMBINER_BUILD_COMMIT").to_string()
}

/// `combiner train`.
pub fn train(args: TrainArgs, backend: BackendKind, device: usize) -> Result<()> {
    let cfg = load_config(&args.config, args.preset.as_deref())?;
    let stem = args
        .config
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "run".into());
    let run_dir = args.run_dir.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{stem}-{}",
            args.preset.as_deref().unwrap_or("base")
        ))
    });
    let resolved = toml::to_string_pretty(&cfg).context("cannot serialize the resolved config")?;
    let cfg_path = run_dir.join("config.toml");
    if args.resume {
        let saved = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!(
                "--resume: {} has no config.toml (not a run directory?)",
                run_dir.display()
            )
        })?;
        if saved != resolved {
            bail!(
                "--resume: the config differs from the one {} was started with ({}); resume with the same config and preset",
                run_dir.display(),
                cfg_path.display()
            );
        }
    } else if run_dir.join("metrics.jsonl").exists() || run_dir.join("checkpoints").exists() {
        // a directory holding only the config of a start that failed before
        // its first step has nothing to lose; anything trained is kept
        bail!(
            "run directory {} already exists; pass --resume to continue it, or choose another --run-dir",
            run_dir.display()
        );
    }
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    if !args.resume {
        std::fs::write(&cfg_path, &resolved)
            .with_context(|| format!("cannot write {}", cfg_path.display()))?;
    }
    let line: Vec<String> = std::env::args().collect();
    let info = format!(
        "command: {}\ncommit: {}\nbackend: {}\ndevice: {device}\nstarted: {:?}\n",
        line.join(" "),
        git_commit(),
        backend.feature(),
        std::time::SystemTime::now()
    );
    let info_path = run_dir.join(if args.resume { "resume.txt" } else { "run.txt" });
    std::fs::write(&info_path, info)
        .with_context(|| format!("cannot write {}", info_path.display()))?;
    eprintln!("run directory: {}", run_dir.display());
    let job = TrainJob {
        devices: args.devices.clone().unwrap_or_default(),
        cfg,
        run_dir,
        resume: args.resume,
        stop_after: args.stop_after,
        data_dir: combiner_data::data_dir(args.data_dir.as_deref()),
        dashboard: !args.plain,
    };
    run_on(backend, device, job)
}

struct TrainJob {
    devices: Vec<usize>,
    cfg: RunConfig,
    run_dir: PathBuf,
    resume: bool,
    stop_after: Option<usize>,
    data_dir: PathBuf,
    dashboard: bool,
}

/// CIFAR images as `[START, values...]` sequences for the image model.
struct ImageSeqs(Vec<combiner_data::CifarImage>);

impl Dataset<TokenSequence> for ImageSeqs {
    fn get(&self, index: usize) -> Option<TokenSequence> {
        self.0.get(index).map(|im| TokenSequence {
            tokens: std::iter::once(START)
                .chain(im.pixels.iter().map(|&p| p as u32))
                .collect(),
            label: im.label as u32,
        })
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

fn listops_config(g: &ListOpsSettings) -> ListOpsConfig {
    ListOpsConfig {
        max_depth: g.max_depth,
        max_args: g.max_args,
        min_length: g.min_length,
        max_length: g.max_length,
        seq_len: g.seq_len,
    }
}

fn cifar(data_dir: &Path, split: Split, limit: Option<usize>) -> Result<ImageSeqs> {
    let mut set = Cifar10::load(data_dir, split)
        .with_context(|| format!("loading CIFAR-10 from {}", data_dir.display()))?;
    if let Some(n) = limit {
        set.images.truncate(n);
    }
    Ok(ImageSeqs(set.images))
}

impl BackendJob for TrainJob {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        self.run_many::<B>(vec![device])
    }

    fn devices(&self) -> Vec<usize> {
        self.devices.clone()
    }

    fn run_many<B: Backend>(self, devices: Vec<B::Device>) -> Result<()> {
        type AD<B> = Autodiff<B>;
        let device = devices[0].clone();
        let n_dev = devices.len();
        let s = &self.cfg.train;
        AD::<B>::seed(&device, s.seed);
        let opts = |objective| FitOptions {
            run_dir: self.run_dir.clone(),
            steps: s.steps,
            checkpoint_every: s.checkpoint_every,
            keep_checkpoints: s.keep_checkpoints,
            grad_accumulation: s.grad_accumulation,
            batch_size: s.batch_size,
            resume: self.resume,
            stop_after: self.stop_after,
            objective,
            dashboard: self.dashboard && std::io::IsTerminal::is_terminal(&std::io::stdout()),
        };
        let schedule = WarmupCosine {
            peak: s.lr,
            warmup: s.warmup,
            total: s.steps,
            final_fraction: s.final_lr_fraction,
            step: 0,
        };
        let optim = AdamWConfig::new()
            .with_weight_decay(s.weight_decay as f32)
            .with_grad_clipping(s.grad_clip.map(|c| GradientClippingConfig::Norm(c as f32)));
        anyhow::ensure!(
            s.batch_size.is_multiple_of(n_dev),
            "train.batch_size {} does not split evenly over {n_dev} devices",
            s.batch_size
        );
        let total = s.steps * s.batch_size * s.grad_accumulation;
        let per_device = s.batch_size / n_dev;
        let report = match &self.cfg.task {
            Task::Listops {
                generator,
                train_size,
                valid_size,
                pooling,
            } => {
                let lcfg = listops_config(generator);
                eprintln!("generating ListOps: {train_size} train + {valid_size} valid examples");
                let train =
                    ListOps::generate(&lcfg, s.seed, *train_size).context("generating ListOps")?;
                let valid = ListOps::generate(&lcfg, s.seed.wrapping_add(1_000_003), *valid_size)
                    .context("generating ListOps")?;
                let batcher = ClassificationBatcher {
                    seq_len: generator.seq_len,
                    pad: listops::PAD,
                };
                let train_dl =
                    DataLoaderBuilder::<AD<B>, _, ClassificationBatch<AD<B>>>::new(batcher.clone())
                        .batch_size(s.batch_size)
                        .set_device(device.clone())
                        .build(EpochStream::new(train, total, s.seed));
                let valid_dl = DataLoaderBuilder::<B, _, ClassificationBatch<B>>::new(batcher)
                    .batch_size(s.batch_size)
                    .set_device(device.clone())
                    .build(valid);
                let model = lra_config(&self.cfg.trunk, generator, *pooling).init::<AD<B>>(&device);
                let optim = optim.init();
                fit(
                    model,
                    optim,
                    schedule,
                    train_dl,
                    valid_dl,
                    DefaultRecorder::new(),
                    devices.clone(),
                    opts(Objective::Classification),
                )?
                .1
            }
            Task::Cifar10 {
                train_limit,
                valid_limit,
            } => {
                let train = cifar(&self.data_dir, Split::Train, *train_limit)?;
                let valid = cifar(&self.data_dir, Split::Test, *valid_limit)?;
                let icfg = image_config(&self.cfg.trunk);
                let batcher = LmBatcher {
                    seq_len: icfg.seq_len(),
                    pad: 0,
                };
                let train_dl = DataLoaderBuilder::<AD<B>, _, LmBatch<AD<B>>>::new(batcher.clone())
                    .batch_size(per_device)
                    .set_device(device.clone())
                    .build(EpochStream::new(train, total, s.seed));
                let valid_dl = DataLoaderBuilder::<B, _, LmBatch<B>>::new(batcher)
                    .batch_size(s.batch_size)
                    .set_device(device.clone())
                    .build(valid);
                let model = icfg.init::<AD<B>>(&device);
                fit(
                    model,
                    optim.init(),
                    schedule,
                    train_dl,
                    valid_dl,
                    DefaultRecorder::new(),
                    devices.clone(),
                    opts(Objective::ImageBits),
                )?
                .1
            }
        };
        let last_valid = report.valid.last().map(|v| v.1);
        let summary = serde_json::json!({
            "start_step": report.start_step,
            "end_step": report.end_step,
            "final_train_loss": report.losses.last().map(|l| l.1),
            "valid": report.valid,
        });
        let path = self.run_dir.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "finished at step {} of {}; last validation loss {}; report {}",
            report.end_step,
            s.steps,
            last_valid.map_or("-".into(), |v| format!(
                "{v:.4} ({})",
                describe(objective_of(&self.cfg.task), v)
            )),
            path.display()
        );
        Ok(())
    }
}

fn objective_of(task: &Task) -> Objective {
    match task {
        Task::Listops { .. } => Objective::Classification,
        Task::Cifar10 { .. } => Objective::ImageBits,
    }
}

fn describe(objective: Objective, loss: f64) -> String {
    match objective {
        Objective::ImageBits => format!("{:.4} bits/dim", loss / std::f64::consts::LN_2),
        Objective::Lm | Objective::Mlm => format!("perplexity {:.2}", loss.exp()),
        Objective::Classification => "cross-entropy".into(),
    }
}

fn lra_config(trunk: &TrunkConfig, g: &ListOpsSettings, pooling: Pooling) -> LraConfig {
    LraConfig {
        trunk: trunk.clone(),
        vocab_size: listops::VOCAB,
        max_len: g.seq_len,
        classes: 10,
        pooling,
        pad_token: listops::PAD,
    }
}

fn image_config(trunk: &TrunkConfig) -> ImageArConfig {
    ImageArConfig {
        trunk: trunk.clone(),
        height: 32,
        width: 32,
        channels: 3,
    }
}

fn run_config(run_dir: &Path) -> Result<RunConfig> {
    let path = run_dir.join("config.toml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a run directory: cannot read {}",
            run_dir.display(),
            path.display()
        )
    })?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid run config", path.display()))
}

fn load_model<B: Backend, M: Module<B>>(
    model: M,
    run_dir: &Path,
    device: &B::Device,
) -> Result<(M, usize)> {
    let steps = checkpoints_of::<B, DefaultRecorder>(run_dir);
    let step = *steps.last().with_context(|| {
        format!(
            "{} has no complete checkpoint",
            checkpoint_dir(run_dir).display()
        )
    })?;
    let path = checkpoint_dir(run_dir).join(format!("model-{step}"));
    let record = Recorder::<B>::load(&DefaultRecorder::new(), path.clone(), device)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok((model.load_record(record), step))
}

fn evaluate<B: Backend, M: InferenceStep<Output = StepOutput<B>>>(
    model: &M,
    loader: Arc<dyn DataLoader<B, M::Input>>,
) -> (f64, usize, Option<usize>) {
    let (mut sum, mut n, mut correct) = (0.0, 0usize, None::<usize>);
    for batch in loader.iter() {
        let out = model.step(batch);
        let count = out.count;
        let stats = burn::train::ItemLazy::sync(out);
        sum += stats.loss * count as f64;
        n += count;
        if let Some(c) = stats.correct {
            *correct.get_or_insert(0) += c;
        }
    }
    (sum / n.max(1) as f64, n, correct)
}

struct EvalJob {
    args: RunDirArgs,
    sample: bool,
}

impl BackendJob for EvalJob {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let cfg = run_config(&self.args.run_dir)?;
        let data_dir = combiner_data::data_dir(self.args.data_dir.as_deref());
        let bs = cfg.train.batch_size;
        match &cfg.task {
            Task::Listops {
                generator,
                valid_size,
                pooling,
                ..
            } => {
                if self.sample {
                    bail!("ListOps trains a classifier; `sample` needs a generative model (an image or language model run)");
                }
                let (model, step) = load_model(
                    lra_config(&cfg.trunk, generator, *pooling).init::<B>(&device),
                    &self.args.run_dir,
                    &device,
                )?;
                let valid = ListOps::generate(
                    &listops_config(generator),
                    cfg.train.seed.wrapping_add(1_000_003),
                    *valid_size,
                )?;
                let dl =
                    DataLoaderBuilder::<B, _, ClassificationBatch<B>>::new(ClassificationBatcher {
                        seq_len: generator.seq_len,
                        pad: listops::PAD,
                    })
                    .batch_size(bs)
                    .set_device(device.clone())
                    .build(valid);
                let (loss, n, correct) = evaluate(&model, dl);
                let acc = correct.unwrap_or(0) as f64 / n.max(1) as f64;
                outln!(
                    "{}: step {step}, {n} validation examples: loss {loss:.4}, accuracy {acc:.4}",
                    self.args.run_dir.display()
                );
            }
            Task::Cifar10 { valid_limit, .. } => {
                let icfg = image_config(&cfg.trunk);
                let (model, step) =
                    load_model(icfg.init::<B>(&device), &self.args.run_dir, &device)?;
                if self.sample {
                    let mut state = self.args.seed ^ 0x2545_f491_4f6c_dd1d;
                    let uniform = move || {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 11) as f64 / (1u64 << 53) as f64
                    };
                    let images = model.sample(
                        self.args.count,
                        icfg.seq_len(),
                        self.args.temperature,
                        uniform,
                    );
                    let out = self
                        .args
                        .out
                        .clone()
                        .unwrap_or_else(|| self.args.run_dir.join("samples.png"));
                    write_grid(&out, &images, 32, 32)?;
                    outln!(
                        "{} samples from step {step} written to {}",
                        images.len(),
                        out.display()
                    );
                } else {
                    let valid = cifar(&data_dir, Split::Test, *valid_limit)?;
                    let dl = DataLoaderBuilder::<B, _, LmBatch<B>>::new(LmBatcher {
                        seq_len: icfg.seq_len(),
                        pad: 0,
                    })
                    .batch_size(bs)
                    .set_device(device.clone())
                    .build(valid);
                    let (loss, n, _) = evaluate(&model, dl);
                    outln!(
                        "{}: step {step}, {n} sub-pixels: {:.4} bits/dim",
                        self.args.run_dir.display(),
                        loss / std::f64::consts::LN_2
                    );
                }
            }
        }
        Ok(())
    }
}

/// Writes RGB images (raster order, per pixel R, G, B) side by side as a PNG.
fn write_grid(path: &Path, images: &[Vec<u8>], h: usize, w: usize) -> Result<()> {
    let cols = (images.len() as f64).sqrt().ceil().max(1.0) as usize;
    let rows = images.len().div_ceil(cols).max(1);
    let (gw, gh) = (cols * (w + 2), rows * (h + 2));
    let mut buf = vec![255u8; gw * gh * 3];
    for (k, im) in images.iter().enumerate() {
        let (oy, ox) = ((k / cols) * (h + 2) + 1, (k % cols) * (w + 2) + 1);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    buf[((oy + y) * gw + ox + x) * 3 + c] = im[(y * w + x) * 3 + c];
                }
            }
        }
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), gw as u32, gh as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&buf)?;
    Ok(())
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
