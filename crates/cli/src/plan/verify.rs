//! `combiner plan verify`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use combiner::verify::{verify_plan, CHECK_LENGTHS, GROWTH_LENGTHS};
use combiner::{Mode, Plan};

use super::{plan_by_name, plan_from_file, plan_help};

/// Arguments of `plan verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    plans: Which,
    /// Mode(s) to verify.
    #[arg(long, value_enum, default_value_t = VerifyMode::Both)]
    mode: VerifyMode,
    /// Lengths at which support, disjointness and causality are checked
    /// [default: 1,2,3,12,16,50,63,64,65,100].
    #[arg(long, value_name = "L,L,...", value_delimiter = ',')]
    lengths: Option<Vec<usize>>,
    /// Lengths at which the cost counts are measured and their growth
    /// exponent fitted (support is checked there too) [default: 256,1024,4096].
    #[arg(long, value_name = "L,L,...", value_delimiter = ',')]
    growth: Option<Vec<usize>>,
}

/// Which plans to verify.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Which {
    #[arg(long, value_name = "NAME", help = plan_help())]
    plan: Option<String>,
    /// Every plan of the paper with default parameters.
    #[arg(long)]
    all: bool,
    /// TOML file holding one plan table, e.g. `kind = "fixed"` and `block = 8`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `--mode` of `plan verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum VerifyMode {
    /// Autoregressive only.
    Lm,
    /// Bidirectional only.
    Mlm,
    /// Both.
    Both,
}

/// Verifies the chosen plans; fails when any of them fails.
pub fn run(args: &VerifyArgs) -> Result<()> {
    let plans: Vec<Plan> = if args.plans.all {
        Plan::all().into_iter().map(|(_, p)| p).collect()
    } else if let Some(name) = &args.plans.plan {
        vec![plan_by_name(name)?]
    } else if let Some(path) = &args.plans.config {
        vec![plan_from_file(path)?]
    } else {
        anyhow::bail!("give --plan NAME, --all or --config FILE");
    };
    let modes: &[Mode] = match args.mode {
        VerifyMode::Lm => &[Mode::Lm],
        VerifyMode::Mlm => &[Mode::Mlm],
        VerifyMode::Both => &[Mode::Lm, Mode::Mlm],
    };
    let lengths = args.lengths.clone().unwrap_or(CHECK_LENGTHS.to_vec());
    let growth = args.growth.clone().unwrap_or(GROWTH_LENGTHS.to_vec());
    if let Some(zero) = lengths.iter().chain(&growth).find(|&&l| l == 0) {
        anyhow::bail!("lengths must be at least 1, got {zero}");
    }

    let mut failed = Vec::new();
    let mut total = 0;
    for plan in &plans {
        for &mode in modes {
            let report = verify_plan(plan, mode, &lengths, &growth);
            out!("{report}");
            total += 1;
            if !report.passed() {
                failed.push(format!("{} [{mode}]", report.plan));
            }
        }
    }
    outln!(
        "{} of {total} plan/mode checks passed (support at L = {}; growth at L = {})",
        total - failed.len(),
        join(&lengths),
        join(&growth)
    );
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {total} plan/mode checks failed: {}",
            failed.len(),
            failed.join(", ")
        )
    }
}

fn join(xs: &[usize]) -> String {
    xs.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
