//! `combiner`: verify, draw and run the factorization plans of Combiner
//! attention (Ren et al., NeurIPS 2021) on any compiled-in burn backend.
// A build without any backend still parses commands and explains which
// feature is missing, but never reaches the generic tensor code.
#![cfg_attr(
    not(any(
        feature = "ndarray",
        feature = "wgpu",
        feature = "cuda",
        feature = "tch"
    )),
    allow(dead_code)
)]

/// `print!` that ends the process quietly when stdout is a closed pipe
/// (`combiner plan verify --all | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(&format!($($arg)*))
    };
}

/// `println!` counterpart of [`out!`].
macro_rules! outln {
    () => {
        $crate::write_stdout("\n")
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod backend;
mod bench;
mod data;
mod kernel_check;
#[cfg(feature = "tch")]
mod kernels;
mod plan;
mod table;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::backend::BackendKind;

const ABOUT: &str =
    "Combiner attention (NeurIPS 2021) on burn: verify, draw and run factorization plans";

const EXAMPLES: &str = "\
Examples:
  combiner plan verify --all
  combiner plan show --plan axial-vertical --len 64 --out pictures
  combiner --backend cuda --device 1 plan apply --plan fixed --mode lm --input qkv.safetensors --output out.safetensors";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "combiner",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("COMBINER_BUILD_COMMIT"), ")"),
    about = ABOUT,
    after_help = EXAMPLES
)]
struct Cli {
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = BackendKind::Ndarray,
        help_heading = "Backend",
        help = backend::backend_help()
    )]
    backend: BackendKind,
    /// Device index on the chosen backend (GPU ordinal; ndarray has only device 0).
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 0,
        help_heading = "Backend"
    )]
    device: usize,
    /// Run generic tensor operations even where the backend has fused
    /// kernels (tch: the joint softmax of Combiner attention through
    /// PyTorch's memory-efficient attention and FlashAttention-2 on CUDA
    /// in bf16/f16, linear layers as one addmm, layer norm as one kernel,
    /// the mixed-precision residual add in one pass, AdamW as PyTorch's
    /// fused kernel); for comparing.
    #[arg(long, global = true, help_heading = "Backend")]
    no_fused: bool,
    /// Keep the fused joint softmax but run linear layers, layer norms,
    /// residual adds and the optimizer step with generic operations (to
    /// measure what each kernel adds).
    #[arg(long, global = true, help_heading = "Backend")]
    no_fused_layers: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify, draw and run factorization plans.
    #[command(
        subcommand,
        after_help = "Examples:\n  combiner plan verify --all\n  combiner plan show --plan logsparse --len 32\n  \
                      combiner plan apply --plan fixed --mode lm --input qkv.safetensors --output out.safetensors"
    )]
    Plan(plan::PlanCommand),
    /// Prepare, verify and inspect datasets; generate ListOps and Pathfinder.
    #[command(
        after_help = "Examples:\n  combiner data prepare wikitext-2\n  combiner data --data-dir /scratch/data verify\n  \
                      combiner data show cifar10 --png grid.png\n  combiner data generate pathfinder --count 64 --png pf.png"
    )]
    Data(data::DataArgs),
    /// Train a model from a TOML run config (a real run: checkpoints, metrics, resume).
    #[command(
        after_help = "Examples:\n  combiner train --config experiments/lra/listops.toml --preset smoke\n  \
                      combiner train --config experiments/text/lm.toml --preset smoke --data-dir data\n  \
                      combiner train --config experiments/image/cifar10.toml --preset small --run-dir runs/cifar-axial\n  \
                      combiner train --config experiments/image/cifar10.toml --preset small --run-dir runs/cifar-axial --resume\n  \
                      combiner --backend tch train --config experiments/image/cifar10.toml --preset small"
    )]
    Train(train::TrainArgs),
    /// Evaluate the last checkpoint of a run: the task metric (accuracy, bits/dim,
    /// perplexity) on its validation data and the task's extra evaluation sets.
    #[command(after_help = "Example:\n  combiner eval --run-dir runs/listops-smoke")]
    Eval(train::RunDirArgs),
    /// Sample from a trained run: images as a PNG grid, text continuations (LM),
    /// filled-in masks (MLM), predicted against true labels (classifiers).
    #[command(
        after_help = "Examples:\n  combiner sample --run-dir runs/cifar10-smoke --count 4 --out samples.png\n  \
                      combiner sample --run-dir runs/lm-smoke --count 2 --tokens 100 --temperature 0.8"
    )]
    Sample(train::RunDirArgs),
    /// Run one of the paper's tables (each row in each column is a resumable run) and
    /// write our numbers beside the paper's: results.md, results.csv, curves.png.
    #[command(
        after_help = "Examples:\n  combiner table table1 --preset smoke --rows transformer,combiner-axial\n  \
                      combiner table table5 --list\n  \
                      combiner --backend tch table table1 --preset small --columns cifar10 --parallel 2\n  \
                      combiner table table1 --preset small --report-only"
    )]
    Table(table::TableArgs),
    /// Benchmarks: one attention layer's time and memory against length (Figure 3).
    #[command(
        subcommand,
        after_help = "Examples:\n  combiner bench attention --lengths 256,512 --heads 2 --head-dim 16 --repeats 2\n  \
                      combiner --backend tch bench attention --dtype bf16 --lengths 1024,16384,65536 --out bench/h200"
    )]
    Bench(bench::BenchCommand),
}

/// Writes to stdout; a closed pipe ends the process with the shell's SIGPIPE
/// status (128 + 13), as a C tool killed by SIGPIPE would.
fn write_stdout(s: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(s.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "tch")]
    kernels::register_tch();
    combiner::kernel::set_enabled(!cli.no_fused);
    combiner::kernel::set_layers_enabled(!cli.no_fused_layers);
    let result = match cli.command {
        Command::Plan(cmd) => plan::run(cmd, cli.backend, cli.device),
        Command::Data(args) => data::run(args),
        Command::Train(args) => train::train(args, cli.backend, cli.device),
        Command::Eval(args) => train::eval(args, cli.backend, cli.device),
        Command::Sample(args) => train::sample(args, cli.backend, cli.device),
        Command::Table(args) => table::table(args, cli.backend, cli.device),
        Command::Bench(cmd) => bench::run(cmd, cli.backend, cli.device),
    };
    // Print the cause chain ourselves: anyhow's `main` report adds a stack
    // backtrace whenever RUST_BACKTRACE is set, which buries the message.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
