//! `combiner bench attention`: time and peak device memory of one attention
//! layer (Figure 3 of the paper) for every model at every length, each
//! measured in its own child process so that an out-of-memory failure is a
//! recorded result, not a crash, and memory peaks do not leak between cells.
//! `combiner bench report` merges such files (ours and the PyTorch
//! companion's, `scripts/bench_attention_torch.py`) into a log-log PNG and a
//! Markdown table of ratios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::{Args, Subcommand, ValueEnum};
use combiner::{AbstractionKind, Mode, Plan};
use combiner_attention::*;
use combiner_tasks::plot::{self, Panel, Series};
use serde::{Deserialize, Serialize};

use crate::backend::{run_on_dtype, BackendJob, BackendKind, Dtype};

/// `combiner bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time (forward, forward+backward) and peak memory of one attention layer at many lengths.
    #[command(
        after_help = "Examples:\n  combiner bench attention --lengths 256,512 --heads 2 --head-dim 16 --repeats 2\n  \
                      combiner --backend tch bench attention --dtype bf16 --lengths 1024,4096,16384,65536 --out bench/h200\n  \
                      combiner bench report bench/h200/combiner-tch-bf16-lm.json bench/h200/pytorch-bf16-lm.json --out bench/h200"
    )]
    Attention(AttentionArgs),
    /// Merge benchmark JSON files (ours and PyTorch's) into attention.png and attention.md.
    #[command(
        after_help = "Example:\n  combiner bench report experiments/bench/results/h200-tch-bf16-lm/combiner-tch-bf16-lm.json \\\n    \
                      experiments/bench/results/h200-tch-bf16-lm/pytorch-bf16-lm.json --out /tmp/report"
    )]
    Report(ReportArgs),
    /// Check the backend's fused joint-softmax kernel against the generic operations:
    /// output and q, k, v gradients of every plan against an f32 reference.
    #[command(
        after_help = "Example:\n  combiner --backend tch bench kernel --dtype bf16 --lengths 37,1000,3072"
    )]
    Kernel(crate::kernel_check::KernelArgs),
}

/// A model of Figure 3 (and Combiner-Logsparse).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchModel {
    /// Dense softmax attention.
    Vanilla,
    /// Performer (FAVOR+).
    Performer,
    /// BigBird (bidirectional only).
    Bigbird,
    /// Sparse Transformer, fixed pattern.
    SparseFixed,
    /// Axial attention (own row and column).
    SparseAxial,
    /// Combiner-Fixed.
    CombinerFixed,
    /// Combiner-Axial (row-major).
    CombinerAxial,
    /// Combiner-Mixture (axial vertical + horizontal).
    CombinerMixture,
    /// Combiner-Logsparse.
    CombinerLogsparse,
}

impl BenchModel {
    fn config(self) -> AttentionConfig {
        let combiner = |plan| AttentionConfig::Combiner {
            plan,
            abstraction: AbstractionKind::Max,
        };
        match self {
            BenchModel::Vanilla => AttentionConfig::Vanilla,
            BenchModel::Performer => AttentionConfig::Performer(PerformerConfig::default()),
            BenchModel::Bigbird => AttentionConfig::BigBird(BigBirdConfig::default()),
            BenchModel::SparseFixed => AttentionConfig::SparseFixed(SparseFixedConfig::default()),
            BenchModel::SparseAxial => AttentionConfig::Axial(AxialConfig::default()),
            BenchModel::CombinerFixed => combiner(Plan::Fixed { block: None }),
            BenchModel::CombinerAxial => combiner(Plan::AxialRowmajor {
                grid: None,
                summary: Default::default(),
            }),
            BenchModel::CombinerMixture => combiner(Plan::Mixture {
                plans: vec![
                    Plan::AxialVertical { grid: None },
                    Plan::AxialHorizontal { grid: None },
                ],
            }),
            BenchModel::CombinerLogsparse => combiner(Plan::Logsparse),
        }
    }

    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// Options of `combiner bench attention`.
#[derive(Debug, Clone, Args)]
pub struct AttentionArgs {
    /// Models to measure (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub models: Option<Vec<BenchModel>>,
    /// Sequence lengths.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1024,2048,4096,8192,16384"
    )]
    pub lengths: Vec<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 8)]
    pub heads: usize,
    /// Width of one head (the layer's width is heads x head-dim).
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    /// Element type of every tensor (bf16/f16: tch and cuda only).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// lm: causal; mlm: bidirectional.
    #[arg(long, value_enum, default_value_t = ModeArg::Lm)]
    pub mode: ModeArg,
    /// Untimed calls before timing.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed calls (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Output folder: combiner-<backend>-<dtype>-<mode>.json, attention.png, attention.md.
    #[arg(long, default_value = "bench/attention")]
    pub out: PathBuf,
    /// Reference results (e.g. the PyTorch script's JSON) to plot and compare beside ours.
    #[arg(long, value_delimiter = ',')]
    pub reference: Vec<PathBuf>,
    /// Measure one model at one length in this process and print its JSON (used by the parent run).
    #[arg(long, hide = true, value_enum)]
    pub one: Option<BenchModel>,
}

/// Options of `combiner bench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Benchmark JSON files (`combiner bench attention`, `scripts/bench_attention_torch.py`).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder for attention.png and attention.md.
    #[arg(long, default_value = "bench/attention")]
    pub out: PathBuf,
}

/// `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Causal.
    Lm,
    /// Bidirectional.
    Mlm,
}

impl ModeArg {
    fn mode(self) -> Mode {
        match self {
            ModeArg::Lm => Mode::Lm,
            ModeArg::Mlm => Mode::Mlm,
        }
    }
    fn name(self) -> &'static str {
        match self {
            ModeArg::Lm => "lm",
            ModeArg::Mlm => "mlm",
        }
    }
}

/// One measurement (the schema shared with the PyTorch script).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    /// Model name.
    pub model: String,
    /// Sequence length.
    pub length: usize,
    /// `ok`, `oom`, `unsupported: ...` or `error: ...`.
    pub status: String,
    /// Median forward time (inference, no autodiff).
    pub forward_ms: Option<f64>,
    /// Median forward + backward time.
    pub forward_backward_ms: Option<f64>,
    /// Peak device memory of the calls above the memory held before them.
    pub peak_bytes: Option<u64>,
}

/// A benchmark file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchFile {
    /// `combiner` or `pytorch`.
    pub implementation: String,
    /// Backend (ours).
    #[serde(default)]
    pub backend: Option<String>,
    /// PyTorch version (the PyTorch script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch: Option<String>,
    /// The GPU or CPU.
    #[serde(default)]
    pub device: Option<String>,
    /// Element type.
    pub dtype: String,
    /// lm or mlm.
    pub mode: String,
    /// Batch size.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Head width.
    pub head_dim: usize,
    /// Commit of the binary (ours).
    #[serde(default)]
    pub commit: Option<String>,
    /// The measurements.
    pub results: Vec<Measurement>,
}

/// `combiner bench`.
pub fn run(cmd: BenchCommand, backend: BackendKind, device: usize) -> Result<()> {
    match cmd {
        BenchCommand::Attention(args) => match args.one {
            Some(model) => {
                let m = run_on_dtype(
                    backend,
                    device,
                    args.dtype,
                    OneJob {
                        args: args.clone(),
                        model,
                        device_index: device,
                    },
                )?;
                outln!("{}", serde_json::to_string(&m)?);
                Ok(())
            }
            None => attention(args, backend, device),
        },
        BenchCommand::Kernel(args) => crate::kernel_check::run(args, backend, device),
        BenchCommand::Report(args) => {
            let files = args
                .inputs
                .iter()
                .map(|p| read_bench(p))
                .collect::<Result<Vec<_>>>()?;
            report(&files, &args.out)
        }
    }
}

fn read_bench(path: &Path) -> Result<BenchFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a benchmark file (see `combiner bench attention`)",
            path.display()
        )
    })
}

/// The parent: one child process per (model, length), longer lengths of a
/// model skipped after it runs out of memory.
fn attention(args: AttentionArgs, backend: BackendKind, device: usize) -> Result<()> {
    if args.lengths.is_empty() || args.lengths.contains(&0) {
        bail!(
            "--lengths: expected positive lengths, got {:?}",
            args.lengths
        );
    }
    if args.batch == 0 || args.heads == 0 || args.head_dim == 0 || args.repeats == 0 {
        bail!("--batch, --heads, --head-dim and --repeats must be positive");
    }
    crate::backend::check_dtype(backend, args.dtype)?;
    let models = args
        .models
        .clone()
        .unwrap_or_else(|| BenchModel::value_variants().to_vec());
    let exe = std::env::current_exe().context("cannot find the combiner binary")?;
    let mut results = Vec::new();
    eprintln!(
        "bench attention on {}: batch {}, {} heads x {}, {}, {} mode; median of {} after {} warm-up calls",
        backend.feature(),
        args.batch,
        args.heads,
        args.head_dim,
        args.dtype.name(),
        args.mode.name(),
        args.repeats,
        args.warmup
    );
    for &model in &models {
        let mut oom_at = None;
        for &len in &args.lengths {
            let m = if let Some(l) = oom_at {
                Measurement {
                    model: model.name(),
                    length: len,
                    status: format!("oom (skipped after L={l})"),
                    forward_ms: None,
                    forward_backward_ms: None,
                    peak_bytes: None,
                }
            } else {
                child(&exe, &args, backend, device, model, len)?
            };
            if m.status == "oom" {
                oom_at = Some(len);
            }
            match (m.forward_ms, m.forward_backward_ms) {
                (Some(f), Some(fb)) => eprintln!(
                    "{:<18} L={len:<6} fwd {f:>9.3} ms  fwd+bwd {fb:>9.3} ms  peak {}",
                    m.model,
                    m.peak_bytes
                        .map(|b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64))
                        .unwrap_or_else(|| "-".into())
                ),
                _ => eprintln!("{:<18} L={len:<6} {}", m.model, m.status),
            }
            results.push(m);
        }
    }
    let file = BenchFile {
        implementation: "combiner".into(),
        backend: Some(backend.feature().into()),
        torch: None,
        device: Some(device_name(backend, device)),
        dtype: args.dtype.name().into(),
        mode: args.mode.name().into(),
        batch: args.batch,
        heads: args.heads,
        head_dim: args.head_dim,
        commit: Some(env!("COMBINER_BUILD_COMMIT").into()),
        results,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let path = args.out.join(format!(
        "combiner-{}-{}-{}.json",
        backend.feature(),
        args.dtype.name(),
        args.mode.name()
    ));
    std::fs::write(&path, serde_json::to_string_pretty(&file)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    let mut files = vec![file];
    for r in &args.reference {
        files.push(read_bench(r)?);
    }
    report(&files, &args.out)
}

fn device_name(backend: BackendKind, device: usize) -> String {
    match backend {
        BackendKind::Ndarray => "cpu".into(),
        _ => nvml_name(device).unwrap_or_else(|| format!("{} device {device}", backend.feature())),
    }
}

/// The physical GPU index of CUDA ordinal `device` (CUDA_VISIBLE_DEVICES remaps it).
fn physical_index(device: usize) -> u32 {
    std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .and_then(|v| v.split(',').nth(device).and_then(|s| s.trim().parse().ok()))
        .unwrap_or(device as u32)
}

fn nvml_name(device: usize) -> Option<String> {
    let nvml = nvml_wrapper::Nvml::init().ok()?;
    nvml.device_by_index(physical_index(device))
        .ok()?
        .name()
        .ok()
}

fn child(
    exe: &Path,
    args: &AttentionArgs,
    backend: BackendKind,
    device: usize,
    model: BenchModel,
    len: usize,
) -> Result<Measurement> {
    let out = Command::new(exe)
        .args([
            "--backend",
            backend.feature(),
            "--device",
            &device.to_string(),
        ])
        .args((!combiner::kernel::enabled()).then_some("--no-fused"))
        .args(["bench", "attention", "--one", &model.name()])
        .args(["--lengths", &len.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--heads", &args.heads.to_string()])
        .args(["--head-dim", &args.head_dim.to_string()])
        .args(["--dtype", args.dtype.name()])
        .args(["--mode", args.mode.name()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--repeats", &args.repeats.to_string()])
        .output()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        if let Some(m) = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Measurement>(l).ok())
        {
            return Ok(m);
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lower = stderr.to_ascii_lowercase();
    let status = if lower.contains("out of memory")
        || lower.contains("out_of_memory")
        || lower.contains("outofmemory")
    {
        "oom".to_string()
    } else {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        format!("error: {} ({})", last.trim(), out.status)
    };
    Ok(Measurement {
        model: model.name(),
        length: len,
        status,
        forward_ms: None,
        forward_backward_ms: None,
        peak_bytes: None,
    })
}

/// Samples the GPU's used memory (NVML) in a thread until dropped; the
/// peak above the level when it started.
struct MemorySampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Option<u64>>>,
}

impl MemorySampler {
    fn start(device: usize) -> Option<Self> {
        let nvml = nvml_wrapper::Nvml::init().ok()?;
        let index = physical_index(device);
        let base = nvml.device_by_index(index).ok()?.memory_info().ok()?.used;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let dev = nvml.device_by_index(index).ok()?;
            let mut peak = base;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(m) = dev.memory_info() {
                    peak = peak.max(m.used);
                }
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
            Some(peak - base)
        });
        Some(Self {
            stop,
            handle: Some(handle),
        })
    }

    fn finish(mut self) -> Option<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take()?.join().ok()?
    }
}

struct OneJob {
    args: AttentionArgs,
    model: BenchModel,
    device_index: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

impl BackendJob for OneJob {
    type Output = Measurement;

    fn run<B: Backend>(self, device: B::Device) -> Result<Measurement> {
        let a = &self.args;
        let len = *a.lengths.first().context("--lengths is empty")?;
        let mode = a.mode.mode();
        let cfg = self.model.config();
        let unsupported = |why: String| Measurement {
            model: self.model.name(),
            length: len,
            status: format!("unsupported: {why}"),
            forward_ms: None,
            forward_backward_ms: None,
            peak_bytes: None,
        };
        if let Err(e) = cfg.validate(mode) {
            return Ok(unsupported(e.to_string()));
        }
        if let AttentionConfig::Combiner { plan, .. } = &cfg {
            if let Err(e) = plan.component_layouts(len, mode) {
                return Ok(unsupported(e.to_string()));
            }
        }
        let sync = |what: &str| B::sync(&device).map_err(|e| anyhow::anyhow!("{what}: {e}"));
        Autodiff::<B>::seed(&device, 0);
        let d = a.heads * a.head_dim;
        // the device context exists before the sampler's baseline is read,
        // so the peak is the layer's own memory
        let _ = Tensor::<B, 1>::zeros([1], &device).into_data();
        sync("device start")?;
        let memory = MemorySampler::start(self.device_index);
        let x = Tensor::<B, 3>::random([a.batch, len, d], Distribution::Normal(0.0, 1.0), &device);
        // inference: the plain backend, no autodiff graph
        let layer = cfg.init::<B>(d, a.heads, mode, 0.0, &device);
        let mut fwd = Vec::new();
        for i in 0..a.warmup + a.repeats {
            sync("before forward")?;
            let t = Instant::now();
            let y = layer.forward(x.clone());
            sync("forward")?;
            if i >= a.warmup {
                fwd.push(t.elapsed().as_secs_f64() * 1e3);
            }
            drop(y);
        }
        drop(layer);
        // training: forward and backward through autodiff
        let layer = cfg.init::<Autodiff<B>>(d, a.heads, mode, 0.0, &device);
        let xa = Tensor::<Autodiff<B>, 3>::from_inner(x).require_grad();
        let mut fb = Vec::new();
        for i in 0..a.warmup + a.repeats {
            sync("before forward+backward")?;
            let t = Instant::now();
            let grads = layer.forward(xa.clone()).sum().backward();
            sync("forward+backward")?;
            if i >= a.warmup {
                fb.push(t.elapsed().as_secs_f64() * 1e3);
            }
            drop(grads);
        }
        Ok(Measurement {
            model: self.model.name(),
            length: len,
            status: "ok".into(),
            forward_ms: Some(median(fwd)),
            forward_backward_ms: Some(median(fb)),
            peak_bytes: memory.and_then(MemorySampler::finish),
        })
    }
}

/// Writes attention.png (time and memory against length, log-log, every
/// model of every file) and attention.md (the numbers, and each model's
/// time as a ratio to the fastest SDPA kernel of the reference at that length).
fn report(files: &[BenchFile], out: &Path) -> Result<()> {
    if files.is_empty() {
        bail!("no benchmark files to report");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let label = |f: &BenchFile, m: &str| {
        format!(
            "{m} ({}{})",
            if f.implementation == "combiner" {
                f.backend.clone().unwrap_or_default()
            } else {
                f.implementation.clone()
            },
            if files.iter().any(|g| g.dtype != f.dtype) {
                format!(" {}", f.dtype)
            } else {
                String::new()
            }
        )
    };
    let mut series: Vec<(String, Vec<&Measurement>)> = Vec::new();
    for f in files {
        let mut names: Vec<&str> = Vec::new();
        for m in &f.results {
            if !names.contains(&m.model.as_str()) {
                names.push(&m.model);
            }
        }
        for n in names {
            let mut ms: Vec<&Measurement> = f.results.iter().filter(|m| m.model == n).collect();
            ms.sort_by_key(|m| m.length);
            series.push((label(f, n), ms));
        }
    }
    let panel = |title: &str, y: &str, get: &dyn Fn(&Measurement) -> Option<f64>| Panel {
        title: title.into(),
        x_label: "sequence length".into(),
        y_label: y.into(),
        log_x: true,
        log_y: true,
        series: series
            .iter()
            .map(|(name, ms)| Series {
                name: name.clone(),
                points: ms
                    .iter()
                    .filter_map(|m| Some((m.length as f64, get(m)?)))
                    .collect(),
            })
            .collect(),
    };
    let first = &files[0];
    let shape = format!(
        "batch {}, {} heads x {}, {}, {}",
        first.batch, first.heads, first.head_dim, first.dtype, first.mode
    );
    plot::write_png(
        &out.join("attention.png"),
        &[
            panel(&format!("forward ({shape})"), "ms", &|m| m.forward_ms),
            panel("forward + backward", "ms", &|m| m.forward_backward_ms),
            panel("peak memory", "MiB", &|m| {
                m.peak_bytes.map(|b| b as f64 / (1 << 20) as f64)
            }),
        ],
    )?;
    // the references at each length: PyTorch's whole layer (the unit we
    // time) and its fastest SDPA kernel alone
    let reference = |len: usize, layer: bool| {
        files
            .iter()
            .filter(|f| f.implementation == "pytorch")
            .flat_map(|f| f.results.iter())
            .filter(|m| m.length == len && (m.model == "sdpa-layer") == layer)
            .filter(|m| m.model.starts_with("sdpa"))
            .filter_map(|m| Some((m.forward_backward_ms?, m.model.clone())))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    };
    let mut md = String::from("# One attention layer: time and peak memory\n\n");
    for f in files {
        md += &format!(
            "- {}: {} on {}, {}, batch {}, {} heads x {}, {} mode{}\n",
            f.implementation,
            f.backend
                .clone()
                .or(f.torch.as_ref().map(|t| format!("torch {t}")))
                .unwrap_or_default(),
            f.device.clone().unwrap_or_default(),
            f.dtype,
            f.batch,
            f.heads,
            f.head_dim,
            f.mode,
            f.commit
                .as_ref()
                .map(|c| format!(", commit {c}"))
                .unwrap_or_default()
        );
    }
    md += "\nOurs times a whole attention layer (q, k, v and output projections included), \
           as does PyTorch's `sdpa-layer`; the other PyTorch rows time the attention kernel \
           alone. The speeds are PyTorch's forward+backward time over ours at that length \
           (above 1: ours is faster).\n\n";
    md += "| model | L | fwd ms | fwd+bwd ms | peak MiB | speed vs sdpa-layer | speed vs fastest SDPA kernel | status |\n|---|---:|---:|---:|---:|---:|---|---|\n";
    for (name, ms) in &series {
        for m in ms {
            let ours_side = !name.contains("(pytorch");
            let ratio = |layer: bool| match (m.forward_backward_ms, reference(m.length, layer)) {
                (Some(ours), Some((r, k))) if ours_side => {
                    if layer {
                        format!("{:.2}x", r / ours)
                    } else {
                        format!("{:.2}x ({k})", r / ours)
                    }
                }
                _ => String::new(),
            };
            let (vs_layer, vs_kernel) = (ratio(true), ratio(false));
            let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
            md += &format!(
                "| {name} | {} | {} | {} | {} | {vs_layer} | {vs_kernel} | {} |\n",
                m.length,
                f(m.forward_ms),
                f(m.forward_backward_ms),
                m.peak_bytes
                    .map(|b| format!("{:.1}", b as f64 / (1 << 20) as f64))
                    .unwrap_or_default(),
                m.status
            );
        }
    }
    // fitted exponent of memory against length (log-log least squares)
    md +=
        "\n| model | peak memory exponent (fit over its ok lengths from 4,096 on) |\n|---|---:|\n";
    for (name, ms) in &series {
        let pts: Vec<(f64, f64)> = ms
            .iter()
            .filter(|m| m.length >= 4096)
            .filter_map(|m| Some(((m.length as f64).ln(), (m.peak_bytes? as f64).max(1.0).ln())))
            .collect();
        if pts.len() >= 2 {
            let n = pts.len() as f64;
            let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
            let (mx, my) = (sx / n, sy / n);
            let cov: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
            let var: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
            if var > 0.0 {
                md += &format!("| {name} | {:.2} |\n", cov / var);
            }
        }
    }
    md += "\nPlot: `attention.png`.\n";
    let path = out.join("attention.md");
    std::fs::write(&path, md).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "wrote {} and {}",
        path.display(),
        out.join("attention.png").display()
    );
    Ok(())
}
