//! `combiner table`: run a paper table (every row in every column as its
//! own resumable run) and write our numbers beside the paper's.

use std::path::PathBuf;

use anyhow::{bail, Result};
use burn::prelude::*;
use clap::Args;
use combiner_tasks::run::{Provenance, TrainOptions};
use combiner_tasks::table::{self, Cell, Table};

use crate::backend::{run_on, BackendJob, BackendKind};

/// Options of `combiner table`.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// The table: a name (`table1`, `table2`, `table3`, `table5`, `table6`: the file
    /// experiments/<name>/table.toml) or a path to a table file.
    pub table: String,
    /// Scale: smoke (seconds per row, CPU), small (a minute or two per row, one GPU), paper.
    #[arg(long, default_value = "smoke")]
    pub preset: String,
    /// Only these rows (names as in the table, case and punctuation ignored: `combiner-axial`).
    #[arg(long, value_delimiter = ',', value_name = "ROW,...")]
    pub rows: Option<Vec<String>>,
    /// Only these columns.
    #[arg(long, value_delimiter = ',', value_name = "COLUMN,...")]
    pub columns: Option<Vec<String>>,
    /// Where the run directories go: <runs-dir>/<table>/<preset>/<column>/<row>.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Where results.md, results.csv and curves.png go
    /// (default experiments/<table>/results/<preset>).
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// Data directory for prepared datasets (default: $COMBINER_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run rows on these devices, one row per device at a time (e.g. `0,1`); replaces `--device`.
    #[arg(long, value_delimiter = ',', value_name = "N,M,...")]
    pub devices: Option<Vec<usize>>,
    /// Rows trained at once (default: one per device). More than the devices shares them.
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Train nothing: list the cells and their state.
    #[arg(long)]
    pub list: bool,
    /// Train nothing: write the results from the run directories as they are.
    #[arg(long)]
    pub report_only: bool,
}

/// `combiner table`.
pub fn table(args: TableArgs, backend: BackendKind, device: usize) -> Result<()> {
    let t = table::load_table(&args.table)?;
    let cells = t.cells(
        &args.preset,
        &args.runs_dir,
        args.rows.as_deref(),
        args.columns.as_deref(),
    )?;
    if cells.is_empty() {
        bail!("{}: no cell selected", t.path.display());
    }
    if args.list {
        for c in &cells {
            outln!(
                "{:<14} {:<24} {:<8?} {}",
                c.column,
                c.row,
                table::state(c),
                c.dir.display()
            );
        }
        return Ok(());
    }
    let out = args.results_dir.clone().unwrap_or_else(|| {
        t.path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("results")
            .join(&args.preset)
    });
    if !args.report_only {
        combiner_train::install_signal_handlers()
            .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))?;
        let devices = args.devices.clone().unwrap_or_else(|| vec![device]);
        let job = TableJob {
            parallel: args.parallel.unwrap_or(devices.len()),
            devices,
            cells: cells.clone(),
            opts: TrainOptions {
                data_dir: combiner_data::data_dir(args.data_dir.as_deref()),
                stop_after: None,
                dashboard: false,
            },
            provenance: Provenance {
                command: std::env::args().collect::<Vec<_>>().join(" "),
                commit: env!("COMBINER_BUILD_COMMIT").to_string(),
                backend: backend.feature().to_string(),
                device: String::new(),
            },
        };
        let result = run_on(backend, device, job);
        if let Err(e) = &result {
            if let Some(combiner_train::TrainError::Interrupted { .. }) =
                e.downcast_ref::<combiner_train::TrainError>()
            {
                write(&t, &args.preset, &cells, &out)?;
                eprintln!(
                    "resume with the same command: finished rows are skipped, stopped ones resume"
                );
            }
        }
        let failed = result?;
        write(&t, &args.preset, &cells, &out)?;
        if failed > 0 {
            bail!(
                "{failed} of {} cells failed (their error is in error.txt of the run directory and in {})",
                cells.len(),
                out.join("results.md").display()
            );
        }
        return Ok(());
    }
    write(&t, &args.preset, &cells, &out)
}

fn write(t: &Table, preset: &str, cells: &[Cell], out: &std::path::Path) -> Result<()> {
    let results = table::results(t, cells);
    table::write_results(t, preset, &results, out)?;
    let done = results.iter().filter(|r| r.value.is_some()).count();
    eprintln!(
        "{} of {} cells have a result; wrote {}",
        done,
        results.len(),
        out.join("results.md").display()
    );
    Ok(())
}

struct TableJob {
    devices: Vec<usize>,
    parallel: usize,
    cells: Vec<Cell>,
    opts: TrainOptions,
    provenance: Provenance,
}

impl TableJob {
    fn go<B: Backend>(self, devices: Vec<B::Device>) -> Result<usize> {
        table::run_cells::<B>(
            &self.cells,
            &devices,
            self.parallel,
            &self.opts,
            &self.provenance,
        )
    }
}

impl BackendJob for TableJob {
    type Output = usize;

    fn run<B: Backend>(self, device: B::Device) -> Result<usize> {
        self.go::<B>(vec![device])
    }

    fn devices(&self) -> Vec<usize> {
        self.devices.clone()
    }

    fn run_many<B: Backend>(self, devices: Vec<B::Device>) -> Result<usize> {
        self.go::<B>(devices)
    }
}
