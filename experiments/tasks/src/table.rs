//! The paper's tables as experiment definitions.
//!
//! A table file (`experiments/<table>/table.toml`) names its columns (a task
//! config, the config preset each table preset maps to, and a small
//! override) and its rows (the attention, a small override, the row it is
//! the Combiner form of, and the paper's number for every column). Every
//! cell is one ordinary run directory; [`results`] reads their reports back
//! and [`write_results`] puts our numbers beside the paper's.
//!
//! ```toml
//! title = "Table 1: ablation in bits/dim"
//! metric = "bits/dim"
//! [[columns]]
//! name = "cifar10"
//! config = "../image/cifar10.toml"
//! grid = { rows = 32, cols = 96 }
//! [[rows]]
//! name = "Combiner-Fixed"
//! versus = "Fixed"
//! attention = { kind = "combiner", plan = { kind = "fixed" } }
//! paper = { cifar10 = 3.321 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::config::{merge, resolve, with_preset, RunConfig};
use crate::plot::{self, Panel, Series};

/// A table file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    /// Title, as in the paper.
    pub title: String,
    /// The metric every cell reports: `bits/dim`, `perplexity` or `accuracy`.
    pub metric: String,
    /// What differs from the paper at every scale (data stand-ins, model size).
    #[serde(default)]
    pub note: String,
    /// Overrides applied to every cell at a table preset (e.g. fewer steps
    /// for `small`, so that all rows fit one GPU job).
    #[serde(default)]
    pub presets: BTreeMap<String, toml::Table>,
    /// The columns: one task (and length) each.
    pub columns: Vec<Column>,
    /// The rows: one attention each.
    pub rows: Vec<Row>,
}

/// A column: a task config at a preset.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Short name (`--columns`, keys of `paper`).
    pub name: String,
    /// Heading in the results.
    #[serde(default)]
    pub title: Option<String>,
    /// The task config, relative to the table file.
    pub config: PathBuf,
    /// The config preset to use at each table preset (default: the same name).
    #[serde(default)]
    pub preset: BTreeMap<String, String>,
    /// Axial grid given to every row's attention that takes one and sets none.
    #[serde(default)]
    pub grid: Option<toml::Value>,
    /// Override merged into every cell of the column.
    #[serde(default)]
    pub set: toml::Table,
}

/// A row: an attention.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// Name as in the paper.
    pub name: String,
    /// `trunk.attention` of the row.
    pub attention: toml::Value,
    /// The row this one is the Combiner form of (compared in the report).
    #[serde(default)]
    pub versus: Option<String>,
    /// The paper's number per column (absent: the paper has none).
    #[serde(default)]
    pub paper: BTreeMap<String, f64>,
    /// Columns this row runs in (default: all).
    #[serde(default)]
    pub only: Option<Vec<String>>,
    /// Further override of the row (rarely needed).
    #[serde(default)]
    pub set: toml::Table,
}

impl Column {
    /// Heading of the column.
    pub fn heading(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.name)
    }
}

/// A loaded table.
#[derive(Clone, Debug)]
pub struct Table {
    /// Short name (`table1`): the folder of the table file.
    pub name: String,
    /// The table file.
    pub path: PathBuf,
    /// Its contents.
    pub def: TableDef,
}

/// One run of a table: a row in a column.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Column name.
    pub column: String,
    /// Row name.
    pub row: String,
    /// The resolved, checked config.
    pub cfg: RunConfig,
    /// Its run directory.
    pub dir: PathBuf,
}

/// Lower-case name with runs of other characters as `-` (`Linear Trans.` ->
/// `linear-trans`): run directory names and `--rows` matching.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Where table `name` is defined: a path to a `.toml` file, or the name of
/// a folder `experiments/<name>/` holding `table.toml`.
pub fn table_path(name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.extension().is_some_and(|e| e == "toml") {
        p.to_path_buf()
    } else {
        Path::new("experiments").join(name).join("table.toml")
    }
}

/// Reads and checks a table file: unique names, known columns in `paper`,
/// `only` and `versus`.
pub fn load_table(name: &str) -> Result<Table> {
    let path = table_path(name);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read table {} (give a table name such as `table1`, looked up as experiments/<name>/table.toml, or a path to a .toml file)",
            path.display()
        )
    })?;
    let def: TableDef = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid table", path.display()))?;
    let short = path
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "table".into());
    let bad = |what: String| anyhow::anyhow!("{}: {what}", path.display());
    if !["bits/dim", "perplexity", "accuracy"].contains(&def.metric.as_str()) {
        return Err(bad(format!(
            "metric = {:?}: expected \"bits/dim\", \"perplexity\" or \"accuracy\"",
            def.metric
        )));
    }
    let columns: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
    let rows: Vec<&str> = def.rows.iter().map(|r| r.name.as_str()).collect();
    for (kind, names) in [("column", &columns), ("row", &rows)] {
        for (i, n) in names.iter().enumerate() {
            if names[..i].iter().any(|m| slug(m) == slug(n)) {
                return Err(bad(format!("two {kind}s are named `{n}`")));
            }
        }
    }
    for r in &def.rows {
        let known = |c: &String| columns.contains(&c.as_str());
        if let Some(c) = r.paper.keys().find(|c| !known(c)) {
            return Err(bad(format!(
                "row `{}`: paper.{c} is not a column (columns: {})",
                r.name,
                columns.join(", ")
            )));
        }
        if let Some(c) = r.only.iter().flatten().find(|c| !known(c)) {
            return Err(bad(format!(
                "row `{}`: only = [.. {c:?} ..] is not a column (columns: {})",
                r.name,
                columns.join(", ")
            )));
        }
        if let Some(v) = r.versus.as_ref().filter(|v| !rows.contains(&v.as_str())) {
            return Err(bad(format!(
                "row `{}`: versus = {v:?} is not a row",
                r.name
            )));
        }
    }
    Ok(Table {
        name: short,
        path,
        def,
    })
}

/// Picks the entries whose slug is in `wanted` (all when `None`); an unknown
/// name is an error listing the known ones.
fn select<'a, T>(
    items: &'a [T],
    name: impl Fn(&T) -> &str,
    wanted: Option<&[String]>,
    what: &str,
) -> Result<Vec<&'a T>> {
    let Some(wanted) = wanted else {
        return Ok(items.iter().collect());
    };
    for w in wanted {
        if !items.iter().any(|i| slug(name(i)) == slug(w)) {
            let known: Vec<&str> = items.iter().map(&name).collect();
            bail!("no {what} `{w}` (known: {})", known.join(", "));
        }
    }
    Ok(items
        .iter()
        .filter(|i| wanted.iter().any(|w| slug(w) == slug(name(i))))
        .collect())
}

/// Sets `grid` in every attention table (and mixture component) whose kind
/// takes an axial grid and that sets none.
fn give_grid(attention: &mut toml::Value, grid: &toml::Value) {
    let Some(t) = attention.as_table_mut() else {
        return;
    };
    let kind = t.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    // the axial baseline, or a plan that takes a grid (asked of the plan
    // itself, so no list of kinds is kept here)
    let takes_grid = kind == "axial"
        || toml::Value::Table(t.clone())
            .try_into::<combiner::Plan>()
            .is_ok_and(|p| p.takes_grid());
    if takes_grid && !t.contains_key("grid") {
        t.insert("grid".into(), grid.clone());
    }
    if let Some(plan) = t.get_mut("plan") {
        give_grid(plan, grid);
    }
    if let Some(toml::Value::Array(plans)) = t.get_mut("plans") {
        for p in plans {
            give_grid(p, grid);
        }
    }
}

impl Table {
    /// Every cell of `preset` (restricted to `rows` / `columns` where given),
    /// each resolved and checked before anything runs. Run directories lie
    /// under `runs/<table>/<preset>/<column>/<row>`.
    pub fn cells(
        &self,
        preset: &str,
        runs: &Path,
        rows: Option<&[String]>,
        columns: Option<&[String]>,
    ) -> Result<Vec<Cell>> {
        let d = &self.def;
        let base_dir = self.path.parent().unwrap_or(Path::new("."));
        let rows = select(&d.rows, |r| r.name.as_str(), rows, "row")?;
        let columns = select(&d.columns, |c| c.name.as_str(), columns, "column")?;
        let mut cells = Vec::new();
        for col in columns {
            let config = base_dir.join(&col.config);
            let config_preset = col.preset.get(preset).map(String::as_str).unwrap_or(preset);
            let base = with_preset(&config, Some(config_preset))
                .with_context(|| format!("{}: column `{}`", self.path.display(), col.name))?;
            for row in &rows {
                if row.only.as_ref().is_some_and(|o| !o.contains(&col.name)) {
                    continue;
                }
                let mut value = base.clone();
                if let Some(over) = d.presets.get(preset) {
                    merge(&mut value, toml::Value::Table(over.clone()));
                }
                merge(&mut value, toml::Value::Table(col.set.clone()));
                let mut attention = row.attention.clone();
                if let Some(grid) = &col.grid {
                    give_grid(&mut attention, grid);
                }
                let trunk = value
                    .get_mut("trunk")
                    .and_then(|t| t.as_table_mut())
                    .with_context(|| format!("{} has no [trunk]", config.display()))?;
                trunk.insert("attention".into(), attention);
                merge(&mut value, toml::Value::Table(row.set.clone()));
                let source = format!(
                    "{} (preset {preset}), column `{}` ({} preset {config_preset}), row `{}`",
                    self.path.display(),
                    col.name,
                    config.display(),
                    row.name
                );
                let cfg = resolve(value, &source)?;
                cells.push(Cell {
                    column: col.name.clone(),
                    row: row.name.clone(),
                    cfg,
                    dir: runs
                        .join(&self.name)
                        .join(preset)
                        .join(slug(&col.name))
                        .join(slug(&row.name)),
                });
            }
        }
        Ok(cells)
    }
}

/// How far a cell's run has come.
#[derive(Clone, Debug, PartialEq)]
pub enum CellState {
    /// No run directory yet.
    New,
    /// Started, not finished: resume it.
    Partial,
    /// Trained to its last step.
    Done,
}

/// The state of `cell`'s run directory.
pub fn state(cell: &Cell) -> CellState {
    let report = read_json(&cell.dir.join("report.json"));
    let done = report
        .as_ref()
        .and_then(|r| r.get("end_step")?.as_u64())
        .is_some_and(|s| s as usize >= cell.cfg.train.steps);
    if done {
        CellState::Done
    } else if cell.dir.join("checkpoints").exists() || cell.dir.join("metrics.jsonl").exists() {
        CellState::Partial
    } else {
        CellState::New
    }
}

/// The wall time of every segment of a report summed, or the last one's
/// where a segment does not record its own.
fn wall_seconds(report: &serde_json::Value) -> Option<f64> {
    let per_segment: Option<f64> = report
        .get("segments")?
        .as_array()?
        .iter()
        .map(|s| s.get("wall_seconds")?.as_f64())
        .sum();
    per_segment.or_else(|| report.get("wall_seconds")?.as_f64())
}

/// The step the first recorded training invocation started from (above 0
/// when an interrupted invocation left no report).
fn first_start(report: Option<&serde_json::Value>) -> Option<u64> {
    report?
        .get("segments")?
        .as_array()?
        .first()?
        .get("start_step")?
        .as_u64()
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// What a cell's run produced.
#[derive(Clone, Debug)]
pub struct CellResult {
    /// Column name.
    pub column: String,
    /// Row name.
    pub row: String,
    /// The final validation metric (None: not run or not finished).
    pub value: Option<f64>,
    /// Steps trained / steps planned.
    pub steps: (usize, usize),
    /// Wall time of all training invocations (of the last one where older
    /// reports do not record each).
    pub wall_seconds: Option<f64>,
    /// Training invocations (more than one: the run was resumed).
    pub segments: usize,
    /// Validation curve: (step, metric).
    pub curve: Vec<(f64, f64)>,
    /// `commit`, `backend`, `device` from the run's `run.txt`.
    pub provenance: BTreeMap<String, String>,
    /// Why there is no value (not run, unfinished, the error it ended with).
    pub status: String,
    /// The run directory.
    pub dir: PathBuf,
}

/// Reads every cell's report. A cell whose run failed carries the error
/// recorded in its `error.txt`.
pub fn results(table: &Table, cells: &[Cell]) -> Vec<CellResult> {
    let metric = table.def.metric.as_str();
    cells
        .iter()
        .map(|cell| {
            let report = read_json(&cell.dir.join("report.json"));
            let curve: Vec<(f64, f64)> = report
                .as_ref()
                .and_then(|r| r.get("valid")?.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get(metric)?.as_f64()?)))
                .collect();
            // a run stopped before writing its report: its last logged step
            let end = report
                .as_ref()
                .and_then(|r| r.get("end_step")?.as_u64())
                .map(|s| s as usize)
                .or_else(|| last_logged_step(&cell.dir))
                .unwrap_or(0);
            let planned = cell.cfg.train.steps;
            let provenance = std::fs::read_to_string(cell.dir.join("run.txt"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once(": "))
                .filter(|(k, _)| ["commit", "backend", "device"].contains(k))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let error = std::fs::read_to_string(cell.dir.join("error.txt")).ok();
            let finished = end >= planned;
            let status = match (&error, finished, report.is_some()) {
                (Some(e), _, _) => format!("failed: {}", e.lines().next().unwrap_or("").trim()),
                (None, true, _) => match first_start(report.as_ref()) {
                    Some(at) if at > 0 => {
                        format!("ok (resumed at step {at}; wall time from there)")
                    }
                    _ => "ok".to_string(),
                },
                (None, false, _) if end > 0 => format!("stopped at step {end} of {planned}"),
                (None, false, _) => "not run".to_string(),
            };
            CellResult {
                column: cell.column.clone(),
                row: cell.row.clone(),
                value: curve
                    .last()
                    .map(|c| c.1)
                    .filter(|_| finished && error.is_none()),
                steps: (end, planned),
                wall_seconds: report.as_ref().and_then(wall_seconds),
                segments: report
                    .as_ref()
                    .and_then(|r| Some(r.get("segments")?.as_array()?.len()))
                    .unwrap_or(0),
                curve,
                provenance,
                status,
                dir: cell.dir.clone(),
            }
        })
        .collect()
}

/// The last step in a run directory's `metrics.jsonl`.
fn last_logged_step(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).ok()?;
    text.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("step")?
                .as_u64()
        })
        .map(|s| s as usize)
}

fn higher_is_better(metric: &str) -> bool {
    metric == "accuracy"
}

/// Formats a metric value (accuracy as a percentage, like the paper).
fn fmt(metric: &str, v: f64) -> String {
    if higher_is_better(metric) {
        format!("{:.2}", 100.0 * v)
    } else {
        format!("{v:.3}")
    }
}

/// A paper number as the paper prints it: accuracy in percent with two
/// decimals, bits/dim with three, perplexity with two (three below 10).
fn fmt_paper(metric: &str, v: f64) -> String {
    if higher_is_better(metric) || (metric == "perplexity" && v >= 10.0) {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The paper reports accuracy in percent; ours is a fraction.
fn paper_fraction(metric: &str, v: f64) -> f64 {
    if higher_is_better(metric) {
        v / 100.0
    } else {
        v
    }
}

/// Writes `results.md`, `results.csv` and `curves.png` into `out`: our
/// number beside the paper's for every cell, Combiner-X against X row by
/// row, and the validation curves of all rows, one panel per column.
pub fn write_results(
    table: &Table,
    preset: &str,
    results: &[CellResult],
    out: &Path,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let d = &table.def;
    let metric = d.metric.as_str();
    let get = |row: &str, col: &str| results.iter().find(|r| r.row == row && r.column == col);
    let columns: Vec<&Column> = d
        .columns
        .iter()
        .filter(|c| results.iter().any(|r| r.column == c.name))
        .collect();
    let rows: Vec<&Row> = d
        .rows
        .iter()
        .filter(|r| results.iter().any(|x| x.row == r.name))
        .collect();

    // CSV: one line per cell
    let mut csv = String::from(
        "table,preset,column,row,metric,ours,paper,steps,planned_steps,wall_seconds,status,commit,backend,device,run_dir\n",
    );
    for r in results {
        let paper = d
            .rows
            .iter()
            .find(|x| x.name == r.row)
            .and_then(|x| x.paper.get(&r.column));
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        csv += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            table.name,
            preset,
            q(&r.column),
            q(&r.row),
            metric,
            r.value.map(|v| fmt(metric, v)).unwrap_or_default(),
            paper.map(|&p| fmt_paper(metric, p)).unwrap_or_default(),
            r.steps.0,
            r.steps.1,
            r.wall_seconds
                .map(|w| format!("{w:.1}"))
                .unwrap_or_default(),
            q(&r.status),
            q(r.provenance.get("commit").map(String::as_str).unwrap_or("")),
            q(r.provenance
                .get("backend")
                .map(String::as_str)
                .unwrap_or("")),
            q(r.provenance.get("device").map(String::as_str).unwrap_or("")),
            q(&r.dir.display().to_string()),
        );
    }
    let csv_path = out.join("results.csv");
    std::fs::write(&csv_path, csv)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;

    // Markdown
    let unit = if higher_is_better(metric) {
        "accuracy, %, higher is better"
    } else {
        &format!("{metric}, lower is better")
    };
    let mut md = format!("# {} — preset `{preset}`\n\n", d.title);
    md += &format!(
        "Written by `combiner table {} --preset {preset}` from the run directories of its cells. \
         Metric: {unit}; ours is the last validation of each run.\n\n",
        table.name
    );
    if !d.note.trim().is_empty() {
        md += &format!("{}\n\n", d.note.trim());
    }
    md += "| Model |";
    for c in &columns {
        md += &format!(" {} (ours) | {} (paper) |", c.heading(), c.heading());
    }
    md += "\n|---|";
    md += &"---:|---:|".repeat(columns.len());
    md += "\n";
    for row in &rows {
        md += &format!("| {} |", row.name);
        for c in &columns {
            let ours = match get(&row.name, &c.name) {
                Some(r) => r
                    .value
                    .map(|v| fmt(metric, v))
                    .unwrap_or_else(|| r.status.clone()),
                None => "—".into(),
            };
            let paper = row
                .paper
                .get(&c.name)
                .map(|&p| fmt_paper(metric, p))
                .unwrap_or_else(|| "—".into());
            md += &format!(" {ours} | {paper} |");
        }
        md += "\n";
    }

    // Combiner-X against X, row by row
    let pairs: Vec<(&Row, &str)> = rows
        .iter()
        .filter_map(|r| r.versus.as_deref().map(|v| (*r, v)))
        .collect();
    if !pairs.is_empty() {
        md += "\n## Combiner-X against X\n\n";
        md += "Every row had the same budget (steps, model, data, seed) and no row was tuned.\n\n";
        for (row, base) in pairs {
            for c in &columns {
                let (Some(a), Some(b)) = (
                    get(&row.name, &c.name).and_then(|r| r.value),
                    get(base, &c.name).and_then(|r| r.value),
                ) else {
                    continue;
                };
                let gain = if higher_is_better(metric) {
                    a - b
                } else {
                    b - a
                };
                let verdict = if gain > 0.0 { "beat" } else { "did not beat" };
                let ours = format!(
                    "{} {verdict} {base} on {}: {} against {} ({} by {})",
                    row.name,
                    c.heading(),
                    fmt(metric, a),
                    fmt(metric, b),
                    if gain > 0.0 { "better" } else { "worse" },
                    fmt(metric, gain.abs())
                );
                let base_row = d.rows.iter().find(|r| r.name == base);
                let paper = match (
                    row.paper.get(&c.name),
                    base_row.and_then(|r| r.paper.get(&c.name)),
                ) {
                    (Some(&pa), Some(&pb)) => {
                        let (pa, pb) = (paper_fraction(metric, pa), paper_fraction(metric, pb));
                        let pg = if higher_is_better(metric) {
                            pa - pb
                        } else {
                            pb - pa
                        };
                        let agree = if (pg > 0.0) == (gain > 0.0) {
                            "same ordering as the paper"
                        } else {
                            "**ordering differs from the paper**"
                        };
                        format!(
                            "; paper: {} by {} — {agree}",
                            if pg > 0.0 { "better" } else { "worse" },
                            fmt(metric, pg.abs())
                        )
                    }
                    _ => String::new(),
                };
                md += &format!("- {ours}{paper}\n");
            }
        }
    }

    // the runs
    md += "\n## Runs\n\nWall time sums a run's training invocations (runs written before invocations recorded their own time give the last one's).\n\n| Column | Row | Steps | Wall s | Invocations | Status | Commit | Backend | Device |\n|---|---|---:|---:|---:|---|---|---|---|\n";
    for r in results {
        let p = |k: &str| r.provenance.get(k).cloned().unwrap_or_default();
        md += &format!(
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} |\n",
            r.column,
            r.row,
            r.steps.0,
            r.steps.1,
            r.wall_seconds
                .map(|w| format!("{w:.0}"))
                .unwrap_or_default(),
            r.segments,
            r.status,
            p("commit"),
            p("backend"),
            p("device")
        );
    }
    md += "\nValidation curves: `curves.png`.\n";
    let md_path = out.join("results.md");
    std::fs::write(&md_path, md).with_context(|| format!("cannot write {}", md_path.display()))?;

    // curves
    let panels: Vec<Panel> = columns
        .iter()
        .map(|c| Panel {
            title: format!("{} ({preset})", c.heading()),
            x_label: "step".into(),
            y_label: format!("validation {metric}"),
            log_x: false,
            log_y: false,
            series: rows
                .iter()
                .filter_map(|row| get(&row.name, &c.name))
                .map(|r| Series {
                    name: r.row.clone(),
                    points: r.curve.clone(),
                })
                .collect(),
        })
        .collect();
    if !panels.is_empty() {
        plot::write_png(&out.join("curves.png"), &panels)?;
    }
    Ok(())
}

/// Trains every cell not yet done: finished cells are skipped, started ones
/// resumed. `parallel` cells train at once, worker `i` on
/// `devices[i % devices.len()]`. A cell that fails (out of memory, a NaN
/// loss) records its error in `error.txt` and the others go on; Ctrl-C
/// stops every worker after its step in flight (the table resumes where it
/// stopped). Returns the number of cells that failed.
///
/// Initial weights come from the backend's seeded generator; with
/// `parallel > 1` rows that start together share it, so bit-exact
/// reproduction of a table needs `parallel = 1`.
pub fn run_cells<B: burn::prelude::Backend>(
    cells: &[Cell],
    devices: &[B::Device],
    parallel: usize,
    opts: &crate::run::TrainOptions,
    provenance: &crate::run::Provenance,
) -> Result<usize> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    if devices.is_empty() {
        bail!("no device to run the table on");
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let interrupted: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let total = cells.len();
    let work = |device: B::Device| {
        let provenance = crate::run::Provenance {
            device: format!("{device:?}"),
            ..provenance.clone()
        };
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(cell) = cells.get(i) else { break };
            if combiner_train::stop_requested() {
                break;
            }
            let label = format!("[{}/{total}] {} / {}", i + 1, cell.column, cell.row);
            let st = state(cell);
            if st == CellState::Done {
                eprintln!("{label}: done already, skipped ({})", cell.dir.display());
                continue;
            }
            eprintln!(
                "{label}: {} in {}",
                if st == CellState::Partial {
                    "resuming"
                } else {
                    "training"
                },
                cell.dir.display()
            );
            let error_file = cell.dir.join("error.txt");
            let result = crate::run::open_run_dir(
                cell.cfg.clone(),
                cell.dir.clone(),
                st == CellState::Partial,
                &provenance,
            )
            .and_then(|run| {
                let _ = std::fs::remove_file(&error_file);
                crate::run::train::<B>(run, vec![device.clone()], opts.clone())
            });
            match result {
                Ok(()) => eprintln!("{label}: finished"),
                Err(e)
                    if matches!(
                        e.downcast_ref::<combiner_train::TrainError>(),
                        Some(combiner_train::TrainError::Interrupted { .. })
                    ) =>
                {
                    eprintln!("{label}: stopped ({e})");
                    interrupted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace(e);
                    break;
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::SeqCst);
                    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                    eprintln!("{label}: FAILED: {}", chain.join(": "));
                    let _ = std::fs::create_dir_all(&cell.dir);
                    if let Err(w) = std::fs::write(&error_file, chain.join("\n") + "\n") {
                        eprintln!(
                            "{label}: cannot record the error in {}: {w}",
                            error_file.display()
                        );
                    }
                }
            }
        }
    };
    std::thread::scope(|s| {
        for w in 0..parallel.max(1) {
            let device = devices[w % devices.len()].clone();
            let work = &work;
            s.spawn(move || work(device));
        }
    });
    if let Some(e) = interrupted.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(failed.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lower_case_and_dashed() {
        assert_eq!(slug("Linear Trans."), "linear-trans");
        assert_eq!(slug("Combiner-Axial"), "combiner-axial");
        assert_eq!(slug("Transformer-2k"), "transformer-2k");
    }

    #[test]
    fn grids_go_to_axial_attentions_and_mixture_components_only() {
        let grid: toml::Value =
            toml::from_str::<toml::Table>("g = { rows = 2, cols = 3 }").unwrap()["g"].clone();
        let mut a: toml::Value = toml::from_str(
            r#"kind = "combiner"
plan = { kind = "mixture", plans = [{ kind = "axial_vertical" }, { kind = "fixed" }] }"#,
        )
        .unwrap();
        give_grid(&mut a, &grid);
        let plans = a["plan"]["plans"].as_array().unwrap();
        assert_eq!(plans[0]["grid"], grid);
        assert!(plans[1].get("grid").is_none());
        let mut set: toml::Value =
            toml::from_str("kind = \"axial\"\ngrid = { rows = 4, cols = 4 }").unwrap();
        give_grid(&mut set, &grid);
        assert_eq!(
            set["grid"]["rows"].as_integer(),
            Some(4),
            "an explicit grid stays"
        );
    }
}
