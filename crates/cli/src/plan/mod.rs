//! `combiner plan ...`: verify, draw and run factorization plans.

mod apply;
mod partitions;
mod render;
mod show;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use combiner::plan::NAMED_PLANS;
use combiner::{AbstractionKind, Grid, Mode, Plan};

use crate::backend::{run_on, BackendKind};

/// Help of `--plan`: every name of `combiner::NAMED_PLANS`.
fn plan_help() -> String {
    let names: Vec<String> = NAMED_PLANS
        .iter()
        .map(|p| match p.about {
            "" => p.name.to_string(),
            about => format!("{} ({about})", p.name),
        })
        .collect();
    format!("Plan by name: {}", names.join(", "))
}

/// The `plan` subcommands.
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Check full support, disjoint parts, causality (LM) and sub-quadratic cost of plans.
    ///
    /// For every plan and mode the verifier compiles the plan at each length of
    /// `--lengths` and `--growth`, checks that every query's direct part and
    /// spans cover exactly its support (LM: j <= i; MLM: all j) without
    /// overlap, empty spans or padding, and fits the growth exponent in L of
    /// the three counts of paper section 3.1 over `--growth`. Runs on the
    /// host; `--backend` is not used. Exits non-zero when any plan fails.
    #[command(after_help = "Examples:\n  \
        combiner plan verify --all\n  \
        combiner plan verify --plan logsparse --mode lm --lengths 1,2,3,65 --growth 256,1024\n  \
        combiner plan verify --config my-plan.toml     # my-plan.toml: kind = \"fixed\"  block = 8")]
    Verify(verify::VerifyArgs),
    /// Draw a plan: one query's support as text, the support matrix and the
    /// effective attention of a random input as PNG.
    ///
    /// The text picture marks the query `@`, its direct part `#`, the members
    /// of each span with a letter per span (`a`, `b`, ...) and positions
    /// outside the support `.`; axial plans are laid out on their grid, as in
    /// the paper's Figures 1 and 2. The PNGs show every query (rows) against
    /// every key (columns): blue = direct, yellow shades = spans, white =
    /// outside; and the heat map of q(j|i) (eq. 8, log scale) for random q, k.
    /// Mixtures draw each component.
    #[command(after_help = "Examples:\n  \
        combiner plan show --plan fixed --len 16\n  \
        combiner plan show --plan axial-vertical --len 64 --query 27 --mode mlm --out pictures --seed 3")]
    Show(show::ShowArgs),
    /// Run a plan's Combiner attention on q, k, v read from a safetensors file.
    ///
    /// Reads tensors `q`, `k`, `v` (f32, shape [batch, heads, seq, d_head])
    /// from `--input`, runs the efficient Combiner attention of the plan and
    /// writes tensor `out` (f32, same shape) to `--output`; with `--oracle`
    /// also `oracle`, the dense O(L^2) reference of eq. (8), so results can be
    /// compared with another implementation on identical inputs.
    ///
    /// The learned row-major summary (`axial-rowmajor-learned`) also reads the
    /// layer input `x` [batch, seq, d_model] and its weights `w0` [heads,
    /// d_head, d_model], `ln_scale`, `ln_bias` [d_model] and `w1` [d_model,
    /// heads, d_head]; span key = w1 . LayerNorm(x + w0 . vbar) (eps 1e-6).
    #[command(after_help = "Examples:\n  \
        combiner plan apply --plan fixed --mode lm --input qkv.safetensors --output out.safetensors --oracle\n  \
        combiner plan apply --plan axial-rowmajor-learned --grid 4x8 --mode lm --input qkvxw.safetensors --output out.safetensors --oracle")]
    Apply(apply::ApplyArgs),
}

/// Runs a `plan` subcommand.
pub fn run(cmd: PlanCommand, backend: BackendKind, device: usize) -> Result<()> {
    match cmd {
        PlanCommand::Verify(args) => verify::run(&args),
        PlanCommand::Show(args) => run_on(backend, device, args),
        PlanCommand::Apply(args) => run_on(backend, device, args),
    }
}

/// One plan chosen by name or read from a TOML file.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PlanSource {
    #[arg(long, value_name = "NAME", help = plan_help())]
    plan: Option<String>,
    /// TOML file holding one plan table, e.g. `kind = "fixed"` and `block = 8`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl PlanSource {
    /// The chosen plan.
    pub fn load(&self) -> Result<Plan> {
        match (&self.plan, &self.config) {
            (Some(name), _) => plan_by_name(name),
            (None, Some(path)) => plan_from_file(path),
            (None, None) => anyhow::bail!("give --plan NAME or --config FILE"),
        }
    }
}

/// A plan of the paper by name, with default parameters.
pub fn plan_by_name(name: &str) -> Result<Plan> {
    Plan::from_name(name).map_err(|e| anyhow::anyhow!("--plan: {e}"))
}

/// A plan from a TOML file whose top level is the plan table.
pub fn plan_from_file(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading plan config {}", path.display()))?;
    toml::from_str(&text).with_context(|| {
        format!(
            "plan config {} is not a valid plan table (expected e.g. `kind = \"fixed\"` \
             and `block = 8`)",
            path.display()
        )
    })
}

/// `--grid` and `--block-size`: a plan's size without a config file.
#[derive(Debug, Args)]
pub struct PlanSize {
    /// Grid of the axial plans (axial-*, mixture-joint, and mixture components), e.g. `4x8`.
    #[arg(long, value_name = "ROWSxCOLS", value_parser = parse_grid)]
    grid: Option<Grid>,
    /// Block size of the fixed plan (also inside mixtures).
    #[arg(long, value_name = "S")]
    block_size: Option<usize>,
}

impl PlanSize {
    /// `plan` with the given sizes set on every component they apply to; a
    /// size that applies to no component is an error.
    pub fn apply(&self, plan: Plan) -> Result<Plan> {
        if let Some(s) = self.block_size {
            anyhow::ensure!(s >= 1, "--block-size must be at least 1");
        }
        let (mut grid_used, mut block_used) = (false, false);
        let plan = self.resize(plan, &mut grid_used, &mut block_used);
        anyhow::ensure!(
            self.grid.is_none() || grid_used,
            "--grid applies to axial plans ({}), not to `{}`",
            gridded_plans(),
            plan.name()
        );
        anyhow::ensure!(
            self.block_size.is_none() || block_used,
            "--block-size applies to the fixed plan, not to `{}`",
            plan.name()
        );
        Ok(plan)
    }

    fn resize(&self, plan: Plan, grid_used: &mut bool, block_used: &mut bool) -> Plan {
        let g = |old: Option<Grid>, used: &mut bool| match self.grid {
            Some(new) => {
                *used = true;
                Some(new)
            }
            None => old,
        };
        match plan {
            Plan::Fixed { block } => Plan::Fixed {
                block: match self.block_size {
                    Some(s) => {
                        *block_used = true;
                        Some(s)
                    }
                    None => block,
                },
            },
            Plan::AxialVertical { grid } => Plan::AxialVertical {
                grid: g(grid, grid_used),
            },
            Plan::AxialHorizontal { grid } => Plan::AxialHorizontal {
                grid: g(grid, grid_used),
            },
            Plan::AxialRowmajor { grid, summary } => Plan::AxialRowmajor {
                grid: g(grid, grid_used),
                summary,
            },
            Plan::MixtureJoint { grid } => Plan::MixtureJoint {
                grid: g(grid, grid_used),
            },
            Plan::Mixture { plans } => Plan::Mixture {
                plans: plans
                    .into_iter()
                    .map(|p| self.resize(p, grid_used, block_used))
                    .collect(),
            },
            // plans with neither a grid nor a block size
            p => p,
        }
    }
}

/// The named plans that take a grid, comma-separated.
fn gridded_plans() -> String {
    NAMED_PLANS
        .iter()
        .filter(|p| p.plan().takes_grid())
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `ROWSxCOLS`, e.g. `4x8`.
fn parse_grid(s: &str) -> Result<Grid, String> {
    let bad = || format!("`{s}` is not a grid: expected ROWSxCOLS with both at least 1, e.g. 4x8");
    let (r, c) = s
        .to_ascii_lowercase()
        .split_once('x')
        .map(|(r, c)| (r.trim().to_string(), c.trim().to_string()))
        .ok_or_else(bad)?;
    let rows: usize = r.parse().map_err(|_| bad())?;
    let cols: usize = c.parse().map_err(|_| bad())?;
    if rows == 0 || cols == 0 {
        return Err(bad());
    }
    Ok(Grid { rows, cols })
}

/// `--mode` for commands that run one mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Autoregressive: query i sees j <= i.
    Lm,
    /// Bidirectional (masked LM): query i sees every j.
    Mlm,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Lm => Mode::Lm,
            ModeArg::Mlm => Mode::Mlm,
        }
    }
}

/// `--abstraction`: the parameter-free span summaries. DeepSets has learned
/// weights, which a plan alone does not fix, so the commands leave it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AbstractionArg {
    /// Max pooling of the span's keys and queries (the paper's default).
    Max,
    /// Mean pooling.
    Mean,
}

impl From<AbstractionArg> for AbstractionKind {
    fn from(a: AbstractionArg) -> AbstractionKind {
        match a {
            AbstractionArg::Max => AbstractionKind::Max,
            AbstractionArg::Mean => AbstractionKind::Mean,
        }
    }
}
