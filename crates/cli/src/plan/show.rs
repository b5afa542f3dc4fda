//! `combiner plan show`: pictures of a plan.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::prelude::*;
use clap::{Args, ValueEnum};
use combiner::oracle::effective_attention;
use combiner::{AbstractionKind, Mode, Plan};

use super::partitions::components;
use super::render::{heat_cells, heat_text, scale_for, support_cells, support_text, write_png};
use super::{AbstractionArg, ModeArg, PlanSize, PlanSource};
use crate::backend::BackendJob;

/// Longest sequence whose attention matrix is also printed as text.
const TEXT_HEAT_MAX: usize = 64;

/// Arguments of `plan show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    source: PlanSource,
    #[command(flatten)]
    size: PlanSize,
    /// Sequence length L.
    #[arg(long, value_name = "L")]
    len: usize,
    /// Query position to draw [default: the last position (lm) or the middle (mlm)].
    #[arg(long, value_name = "I")]
    query: Option<usize>,
    /// LM (causal) or MLM (bidirectional).
    #[arg(long, value_enum, default_value_t = ModeArg::Lm)]
    mode: ModeArg,
    /// Folder for the PNG files (created if missing).
    #[arg(long, value_name = "DIR", default_value = "plan-show")]
    out: PathBuf,
    /// Seed of the random q and k behind the effective attention.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Head width of the random q and k.
    #[arg(long, value_name = "D", default_value_t = 16)]
    d_head: usize,
    /// Span abstraction for k_Omega and q_Omega.
    #[arg(long, value_enum, default_value_t = AbstractionArg::Max)]
    abstraction: AbstractionArg,
    /// ANSI colours in the text pictures.
    #[arg(long, value_enum, default_value_t = ColorArg::Auto)]
    color: ColorArg,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ColorArg {
    /// When stdout is a terminal and NO_COLOR is unset.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl BackendJob for ShowArgs {
    type Output = ();
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        run::<B>(&device, &self)
    }
}

/// Draws the plan; prints the text pictures and the paths of the PNGs.
pub fn run<B: Backend>(device: &B::Device, args: &ShowArgs) -> Result<()> {
    let plan = args.size.apply(args.source.load()?)?;
    let mode: Mode = args.mode.into();
    let len = args.len;
    anyhow::ensure!(len >= 1, "--len must be at least 1");
    anyhow::ensure!(args.d_head >= 1, "--d-head must be at least 1");
    let query = args.query.unwrap_or(match mode {
        Mode::Lm => len - 1,
        Mode::Mlm => len / 2,
    });
    anyhow::ensure!(query < len, "--query {query} is outside 0..{len}");
    let color = match args.color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };

    let shape = [1, 1, len, args.d_head];
    let q = normal_tensor::<B>(shape, args.seed, device);
    let k = normal_tensor::<B>(shape, args.seed.wrapping_add(1), device);
    let comps = components(&plan, mode, &k)?;
    let abs = AbstractionKind::from(args.abstraction).init::<B>(args.d_head, device);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating output folder {}", args.out.display()))?;
    let base = format!("{}-{mode}-L{len}", slug(&plan));
    let scale = scale_for(len);

    if comps.iter().any(|c| c.name == "learnable") {
        outln!(
            "learnable: regions = nearest of the default centroids to the random keys (seed {})",
            args.seed
        );
    }
    if comps.iter().any(|c| c.learned) {
        outln!(
            "{}: the heat map uses pooled span keys (the learned summary's weights are not \
             given here; `plan apply` takes them); the support is the same",
            plan.name()
        );
    }
    if plan.overlaps_by_design() {
        outln!(
            "{}: positions above and off the query's column are reached through two spans; \
             the text picture shows the last one",
            plan.name()
        );
    }
    let multi = comps.len() > 1;
    let mut written = Vec::new();
    let mut mean = vec![0.0f32; len * len];
    for (ci, comp) in comps.iter().enumerate() {
        let (title, stem) = if multi {
            (
                format!(
                    "{} component {}/{}: {}",
                    plan.name(),
                    ci + 1,
                    comps.len(),
                    comp.name
                ),
                format!(
                    "{base}-c{}-{}",
                    ci + 1,
                    combiner_tasks::table::slug(&comp.name)
                ),
            )
        } else {
            (plan.name(), base.clone())
        };
        let p = comp.slice(0);
        outln!("{title} [{mode}], L = {len}: support of query {query}");
        out!("{}", support_text(p, query, comp.grid, color));

        let path = args.out.join(format!("{stem}-support.png"));
        write_png(&path, &support_cells(p), len, scale)?;
        written.push(path);

        let att = effective_attention(q.clone(), k.clone(), p, &abs)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading the attention matrix back: {e:?}"))?;
        for (m, a) in mean.iter_mut().zip(&att) {
            *m += a / comps.len() as f32;
        }
        let path = args.out.join(format!("{stem}-attention.png"));
        write_png(&path, &heat_cells(&att), len, scale)?;
        written.push(path);
        if len <= TEXT_HEAT_MAX {
            outln!(
                "{title} [{mode}]: effective attention q(j|i) of random q, k (seed {})",
                args.seed
            );
            out!("{}", heat_text(&att, len));
        }
        outln!();
    }
    if multi {
        let path = args.out.join(format!("{base}-attention.png"));
        write_png(&path, &heat_cells(&mean), len, scale)?;
        written.push(path);
        if len <= TEXT_HEAT_MAX {
            outln!(
                "{} [{mode}]: effective attention, mean of the components (paper 3.3)",
                plan.name()
            );
            out!("{}", heat_text(&mean, len));
            outln!();
        }
    }
    let worst = (0..len)
        .map(|i| (mean[i * len..(i + 1) * len].iter().sum::<f32>() - 1.0).abs())
        .fold(0.0f32, f32::max);
    outln!("rows of q(j|i) sum to 1 within {worst:.1e}");
    for path in written {
        outln!("wrote {}", path.display());
    }
    Ok(())
}

/// A file-name friendly plan name: `mixture` for mixtures, else the name.
fn slug(plan: &Plan) -> String {
    match plan {
        Plan::Mixture { .. } => "mixture".into(),
        p => combiner_tasks::table::slug(&p.name()),
    }
}

/// Standard normal entries from a seeded splitmix64 stream (Box-Muller), so a
/// picture is the same on every backend and machine.
fn normal_tensor<B: Backend>(shape: [usize; 4], seed: u64, device: &B::Device) -> Tensor<B, 4> {
    let mut rng = combiner::SplitMix::new(seed);
    // in (0, 1]: ln never sees 0
    let mut uniform = move || ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let n: usize = shape.iter().product();
    let vals: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2) = (uniform(), uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(vals, shape), device)
}
