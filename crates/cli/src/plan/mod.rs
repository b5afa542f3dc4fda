//! `combiner plan ...`: verify, draw and run factorization plans.

mod apply;
mod partitions;
mod render;
mod show;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use combiner::{AbstractionKind, Mode, Plan};

use crate::backend::{run_on, BackendKind};

/// Plan names accepted by `--plan`, for help texts.
const PLAN_HELP: &str = "Plan by name: fixed, logsparse, axial-vertical, axial-horizontal, \
                         axial-rowmajor, mixture (vertical + horizontal), learnable";

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
    #[command(after_help = "Example:\n  \
        combiner plan apply --plan fixed --mode lm --input qkv.safetensors --output out.safetensors --oracle")]
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
    #[arg(long, value_name = "NAME", help = PLAN_HELP)]
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
