//! `combiner data ...`: prepare, verify and inspect the datasets of
//! `combiner-data` (shipped stand-ins, real formats, LRA generators).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::builder::PossibleValue;
use clap::{Args, Subcommand, ValueEnum};
use combiner_data::prepare::{cache_dir, read_manifest, write_image_grid, Manifest};
use combiner_data::{
    data_dir, prepare, shared_data_dir, show_stats, verify, DatasetName, ListOps, ListOpsConfig,
    Pathfinder, PathfinderConfig, DATA_DIR_ENV, SHARED_DATA_ENV,
};

/// `combiner data` and its options shared by every data subcommand.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Data directory holding the prepared datasets
    /// [default: $COMBINER_DATA, else ./data].
    #[arg(long, global = true, value_name = "PATH")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: DataCommand,
}

/// The `data` subcommands.
#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Check, unpack, validate and cache one dataset under the data directory.
    ///
    /// Reads a shipped archive (default: the one in the shared data folder,
    /// $COMBINER_SHARED_DATA or ../shared/data) or a real-format source given
    /// with --from (CIFAR-10 also: a folder of official binary batches or
    /// `cifar-10-binary.tar.gz`). The archive's SHA-256 is checked first,
    /// against a SHA256SUMS beside it or the built-in hash of the shipped
    /// archive; every record is then decoded and validated, and the cache
    /// folder `<data-dir>/<name>/` (with a manifest.json of file hashes) is
    /// built in a temporary folder and renamed into place, so it is either
    /// complete or absent. A folder already prepared from the same archive is
    /// kept. Progress goes to stderr; what was written to stdout.
    #[command(after_help = "Examples:\n  \
        combiner data prepare wikitext-2\n  \
        combiner data --data-dir /scratch/data prepare cifar10\n  \
        combiner data prepare cifar10 --from ~/Downloads/cifar-10-binary.tar.gz\n  \
        COMBINER_DATA=/scratch/data combiner data prepare imdb --from ../shared/data/imdb.tar.xz")]
    Prepare(PrepareArgs),
    /// Re-hash every prepared dataset in the data directory against its manifest.
    ///
    /// Checks the size and SHA-256 of every file listed in each folder's
    /// manifest.json. Prints one line per prepared dataset; exits non-zero and
    /// names the damaged files when any check fails (prepare the dataset again
    /// to repair it).
    #[command(after_help = "Examples:\n  \
        combiner data verify\n  \
        combiner data verify --data-dir /scratch/data")]
    Verify,
    /// Print statistics of a prepared dataset; draw image datasets as a PNG grid.
    ///
    /// Loads the prepared dataset and prints its record counts, class balance
    /// and sizes (tokens, bytes, median lengths). With --png, image datasets
    /// (cifar10, tiny-imagenet-*) also write their first 64 training images as
    /// an 8x8 grid.
    #[command(after_help = "Examples:\n  \
        combiner data show wikitext-2\n  \
        combiner data show cifar10 --png cifar10-grid.png")]
    Show(ShowArgs),
    /// Generate an LRA ListOps or Pathfinder set from a seed and print its statistics.
    ///
    /// Uses the generators' default (LRA) settings: ListOps expressions of
    /// 500..2000 tokens over MAX, MIN, MED and SUM_MOD; Pathfinder 32x32
    /// images with two dashed paths and distractors. The same --seed gives the
    /// same set. For Pathfinder every label is also checked against a flood
    /// fill of the rendered image, and --png draws the first 64 images.
    #[command(after_help = "Examples:\n  \
        combiner data generate listops --count 1000 --seed 0\n  \
        combiner data generate pathfinder --count 64 --seed 7 --png pathfinder.png")]
    Generate(GenerateArgs),
}

/// A dataset name on the command line: the crate's names, plus the spellings
/// without a dash for WikiText.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DatasetArg(DatasetName);

const DATASETS: [DatasetArg; 7] = [
    DatasetArg(DatasetName::Cifar10),
    DatasetArg(DatasetName::TinyImagenetTrain),
    DatasetArg(DatasetName::TinyImagenetVal),
    DatasetArg(DatasetName::Wikipedia),
    DatasetArg(DatasetName::Imdb),
    DatasetArg(DatasetName::Wikitext2),
    DatasetArg(DatasetName::Wikitext103),
];

impl ValueEnum for DatasetArg {
    fn value_variants<'a>() -> &'a [Self] {
        &DATASETS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let (help, alias) = match self.0 {
            DatasetName::Cifar10 => ("CIFAR-10, 50,000 + 10,000 images 32x32", None),
            DatasetName::TinyImagenetTrain => (
                "Tiny-ImageNet 64x64 train subset (ImageNet-64 stand-in)",
                None,
            ),
            DatasetName::TinyImagenetVal => ("Tiny-ImageNet 64x64 validation split", None),
            DatasetName::Wikipedia => ("English Wikipedia slice (Wiki-40B stand-in)", None),
            DatasetName::Imdb => ("IMDB reviews (LRA Text, small MLM corpus)", None),
            DatasetName::Wikitext2 => ("WikiText-2 valid + test (small, fast)", Some("wikitext2")),
            DatasetName::Wikitext103 => ("WikiText-103 valid + test", Some("wikitext103")),
        };
        let value = PossibleValue::new(self.0.as_str())
            .help(format!("{help} [{}]", self.0.shipped_archive()));
        Some(match alias {
            Some(a) => value.alias(a),
            None => value,
        })
    }
}

/// Arguments of `data prepare`.
#[derive(Debug, Args)]
struct PrepareArgs {
    /// Dataset to prepare.
    #[arg(value_enum, value_name = "NAME")]
    name: DatasetArg,
    /// Archive or folder to read [default: <shared data>/<shipped archive>, the
    /// shared data folder being $COMBINER_SHARED_DATA or ../shared/data].
    #[arg(long, value_name = "PATH")]
    from: Option<PathBuf>,
}

/// Arguments of `data show`.
#[derive(Debug, Args)]
struct ShowArgs {
    /// Prepared dataset to describe.
    #[arg(value_enum, value_name = "NAME")]
    name: DatasetArg,
    /// Write the first 64 training images as a PNG grid (image datasets only).
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
}

/// Which generator `data generate` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Generator {
    /// LRA ListOps: nested MAX/MIN/MED/SUM_MOD expressions, 10 classes.
    Listops,
    /// LRA Pathfinder: 32x32 images, are the two markers on one dashed path?
    Pathfinder,
}

/// Arguments of `data generate`.
#[derive(Debug, Args)]
struct GenerateArgs {
    /// Generator to run.
    #[arg(value_enum, value_name = "TASK")]
    task: Generator,
    /// Number of examples.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    count: usize,
    /// Random seed; the same seed gives the same set.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Write the first 64 images as a PNG grid (pathfinder only).
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
}

/// Runs a `data` subcommand.
pub fn run(args: DataArgs) -> Result<()> {
    let data = data_dir(args.data_dir.as_deref());
    match args.command {
        DataCommand::Prepare(a) => run_prepare(&a, &data),
        DataCommand::Verify => run_verify(&data),
        DataCommand::Show(a) => run_show(&a, &data),
        DataCommand::Generate(a) => run_generate(&a),
    }
}

/// Progress on stderr: one line rewritten with `\r` on a terminal, a line
/// every 10 % (at most every 2 s otherwise) when stderr is a file or pipe.
struct Progress {
    name: DatasetName,
    tty: bool,
    start: Instant,
    last_pct: Option<u64>,
    last_line: Instant,
    calls: usize,
}

impl Progress {
    fn new(name: DatasetName) -> Self {
        let now = Instant::now();
        Self {
            name,
            tty: std::io::stderr().is_terminal(),
            start: now,
            last_pct: None,
            last_line: now,
            calls: 0,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        self.calls += 1;
        let pct = (done.saturating_mul(100) / total.max(1)).min(100);
        if self.last_pct == Some(pct) {
            return;
        }
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let line = format!(
            "{}: {pct:3}% ({:.1} of {:.1} MiB read)",
            self.name,
            mib(done),
            mib(total)
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}");
            let _ = err.flush();
        } else {
            let step = self.last_pct.is_none_or(|last| pct / 10 > last / 10);
            if !(step || pct == 100) && self.last_line.elapsed() < Duration::from_secs(2) {
                return;
            }
            let _ = writeln!(err, "{line}");
            self.last_line = Instant::now();
        }
        self.last_pct = Some(pct);
    }

    /// Ends the `\r` line on a terminal.
    fn finish(&self) {
        if self.tty && self.last_pct.is_some() {
            eprintln!();
        }
    }
}

fn run_prepare(args: &PrepareArgs, data: &Path) -> Result<()> {
    let name = args.name.0;
    let from = match &args.from {
        Some(p) => p.clone(),
        None => {
            let shared = shared_data_dir();
            // `<repo>/datasets/data/../../../shared/data` reads better resolved.
            let shared = std::fs::canonicalize(&shared).unwrap_or(shared);
            let path = shared.join(name.shipped_archive());
            if !path.exists() {
                bail!(
                    "the shipped archive {} is not there: pass the {name} source with --from \
                     PATH, or point ${SHARED_DATA_ENV} at the folder holding {}",
                    path.display(),
                    name.shipped_archive()
                );
            }
            path
        }
    };
    let target = cache_dir(data, name);
    let before = read_manifest(&target).ok();
    eprintln!(
        "{name}: checking {} and preparing into {}",
        from.display(),
        target.display()
    );
    let mut progress = Progress::new(name);
    let result = prepare(name, &from, data, |done, total| {
        progress.update(done, total)
    });
    progress.finish();
    let dir = result.with_context(|| format!("preparing {name} from {}", from.display()))?;
    let manifest = read_manifest(&dir).with_context(|| {
        format!(
            "reading the manifest {name} just wrote in {}",
            dir.display()
        )
    })?;
    let unchanged = progress.calls == 0 && before.as_ref() == Some(&manifest);
    eprintln!(
        "{name}: {} in {:.2} s",
        if unchanged {
            "already prepared from this source, kept"
        } else {
            "prepared"
        },
        progress.start.elapsed().as_secs_f64()
    );
    print_manifest(&dir, &manifest);
    Ok(())
}

fn print_manifest(dir: &Path, m: &Manifest) {
    outln!("{} -> {}", m.name, dir.display());
    match &m.source_sha256 {
        Some(sha) => outln!("  source  {} (sha256 {sha})", m.source),
        None => outln!("  source  {} (folder)", m.source),
    }
    for (key, n) in &m.counts {
        outln!("  {key:<24} {n}");
    }
    let total: u64 = m.files.iter().map(|f| f.bytes).sum();
    outln!(
        "  {} files, {} bytes (+ manifest.json):",
        m.files.len(),
        total
    );
    for f in &m.files {
        outln!("    {:<28} {:>12} bytes  {}", f.name, f.bytes, f.sha256);
    }
}

fn run_verify(data: &Path) -> Result<()> {
    let report = verify(data).with_context(|| format!("verifying {}", data.display()))?;
    if report.entries.is_empty() {
        outln!(
            "no prepared datasets in {} (run `combiner data prepare <name>`; --data-dir or \
             ${DATA_DIR_ENV} choose another folder)",
            data.display()
        );
        return Ok(());
    }
    out!("{report}");
    let failed: Vec<&str> = report
        .entries
        .iter()
        .filter(|e| e.status.is_err())
        .map(|e| e.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} prepared datasets in {} failed verification: {} (run `combiner data \
             prepare <name>` again to rebuild)",
            failed.len(),
            report.entries.len(),
            data.display(),
            failed.join(", ")
        );
    }
    outln!(
        "all {} prepared datasets in {} verified",
        report.entries.len(),
        data.display()
    );
    Ok(())
}

fn is_image(name: DatasetName) -> bool {
    matches!(
        name,
        DatasetName::Cifar10 | DatasetName::TinyImagenetTrain | DatasetName::TinyImagenetVal
    )
}

fn run_show(args: &ShowArgs, data: &Path) -> Result<()> {
    let name = args.name.0;
    if args.png.is_some() && !is_image(name) {
        bail!("--png draws image datasets only (cifar10, tiny-imagenet-train, tiny-imagenet-val); {name} is text");
    }
    let stats = show_stats(name, data, args.png.as_deref()).with_context(|| {
        format!(
            "reading prepared {name} in {} (prepare it with `combiner data prepare {name}`)",
            data.display()
        )
    })?;
    out!("{stats}");
    if let Some(png) = &args.png {
        outln!("wrote {}", png.display());
    }
    Ok(())
}

fn run_generate(args: &GenerateArgs) -> Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let start = Instant::now();
    match args.task {
        Generator::Listops => {
            if args.png.is_some() {
                bail!("--png draws pathfinder images only; listops is text");
            }
            let cfg = ListOpsConfig::default();
            let set =
                ListOps::generate(&cfg, args.seed, args.count).context("generating ListOps")?;
            let lens: Vec<usize> = set.examples.iter().map(|e| e.tokens.len()).collect();
            let mut labels = [0usize; 10];
            for e in &set.examples {
                labels[usize::from(e.label).min(9)] += 1;
            }
            outln!(
                "listops (seed {}, {:.1} s)",
                args.seed,
                start.elapsed().as_secs_f64()
            );
            outln!("  {:<24} {}", "examples", set.examples.len());
            outln!("  {:<24} {:?}", "per_label_0..9", labels);
            print_lengths(&lens, cfg.seq_len);
            if let Some(e) = set.examples.first() {
                let text = e.to_text();
                let shown: String = text.chars().take(100).collect();
                let more = if shown.len() < text.len() { " ..." } else { "" };
                outln!("  {:<24} {shown}{more} = {}", "first", e.label);
            }
        }
        Generator::Pathfinder => {
            let cfg = PathfinderConfig::default();
            let set = Pathfinder::generate(&cfg, args.seed, args.count)
                .context("generating Pathfinder")?;
            let n = set.examples.len();
            let pos = set.examples.iter().filter(|e| e.label == 1).count();
            let area = cfg.side * cfg.side;
            let ink: usize = set
                .examples
                .iter()
                .map(|e| e.pixels.iter().filter(|&&p| p > 0).count())
                .sum();
            let agree = set
                .examples
                .iter()
                .filter(|e| {
                    let joined = combiner_data::pathfinder::connected(
                        &e.pixels,
                        cfg.side,
                        e.endpoints[0],
                        e.endpoints[1],
                        cfg.link_radius(),
                    );
                    joined == (e.label == 1)
                })
                .count();
            outln!(
                "pathfinder (seed {}, {:.1} s)",
                args.seed,
                start.elapsed().as_secs_f64()
            );
            outln!("  {:<24} {n}", "examples");
            outln!(
                "  {:<24} {}x{} ({area} tokens)",
                "image",
                cfg.side,
                cfg.side
            );
            outln!("  {:<24} {pos} connected, {} not", "labels", n - pos);
            outln!(
                "  {:<24} {:.1} %",
                "mean_ink",
                100.0 * ink as f64 / (n * area) as f64
            );
            outln!("  {:<24} {agree} of {n}", "flood_fill_agrees");
            if let Some(png) = &args.png {
                let rgb: Vec<Vec<u8>> = set
                    .examples
                    .iter()
                    .take(64)
                    .map(|e| e.pixels.iter().flat_map(|&p| [p, p, p]).collect())
                    .collect();
                let refs: Vec<&[u8]> = rgb.iter().map(Vec::as_slice).collect();
                write_image_grid(png, &refs, cfg.side, 8)
                    .with_context(|| format!("writing {}", png.display()))?;
                outln!("wrote {}", png.display());
            }
            if agree != n {
                bail!(
                    "{} Pathfinder labels disagree with the flood-fill check",
                    n - agree
                );
            }
        }
    }
    Ok(())
}

fn print_lengths(lens: &[usize], padded: usize) {
    let mut sorted = lens.to_vec();
    sorted.sort_unstable();
    let mean = sorted.iter().sum::<usize>() as f64 / sorted.len().max(1) as f64;
    outln!(
        "  {:<24} min {} / median {} / mean {mean:.0} / max {} (padded to {padded})",
        "tokens",
        sorted.first().copied().unwrap_or(0),
        sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        sorted.last().copied().unwrap_or(0),
    );
}
