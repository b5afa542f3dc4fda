//! A run's configuration: `[task]`, `[trunk]`, `[train]` and named presets,
//! read from TOML with unknown keys rejected, then checked before anything
//! is built.

use std::path::Path;

use anyhow::{bail, Context, Result};
use combiner::Mode;
use combiner_nn::TrunkConfig;
use serde::{Deserialize, Serialize};

pub use crate::settings::TrainSettings;
use crate::tasks::Task;

/// A run's configuration. Unknown keys anywhere are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Data, model family and metric.
    pub task: Task,
    /// The transformer trunk, including the attention.
    pub trunk: TrunkConfig,
    /// Optimization and checkpointing.
    pub train: TrainSettings,
}

/// Deep-merges `over` into `base` (tables merge, other values replace; a
/// table with another `kind` replaces the whole table).
pub(crate) fn merge(base: &mut toml::Value, over: toml::Value) {
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

/// The names of the presets a config file defines.
pub fn presets_of(path: &Path) -> Result<Vec<String>> {
    let value = read_toml(path)?;
    Ok(value
        .get("presets")
        .and_then(|p| p.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default())
}

pub(crate) fn read_toml(path: &Path) -> Result<toml::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))
}

/// Reads a config file, applies the named preset from its `[presets.<name>]`
/// table, and checks every setting ([`RunConfig::validate`]).
pub fn load_config(path: &Path, preset: Option<&str>) -> Result<RunConfig> {
    let value = with_preset(path, preset)?;
    let source = format!(
        "{}{}",
        path.display(),
        preset.map(|p| format!(" (preset {p})")).unwrap_or_default()
    );
    resolve(value, &source)
}

/// A config file as TOML with the named preset merged in (the `presets`
/// table removed); an unknown preset is an error naming the known ones.
pub(crate) fn with_preset(path: &Path, preset: Option<&str>) -> Result<toml::Value> {
    let mut value = read_toml(path)?;
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
    Ok(value)
}

/// Turns merged TOML into a checked [`RunConfig`]; errors name `source`.
pub(crate) fn resolve(value: toml::Value, source: &str) -> Result<RunConfig> {
    let cfg: RunConfig = value
        .try_into()
        .with_context(|| format!("{source} is not a valid run config"))?;
    cfg.validate()
        .with_context(|| format!("{source}: invalid setting"))?;
    Ok(cfg)
}

/// Reads the resolved `config.toml` of a run directory.
pub fn run_config(run_dir: &Path) -> Result<RunConfig> {
    let path = run_dir.join("config.toml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a run directory: cannot read {}",
            run_dir.display(),
            path.display()
        )
    })?;
    let cfg: RunConfig = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid run config", path.display()))?;
    cfg.validate()
        .with_context(|| format!("{}: invalid setting", path.display()))?;
    Ok(cfg)
}

fn positive(key: &str, v: usize) -> Result<()> {
    if v == 0 {
        bail!("{key} = 0: expected a positive integer");
    }
    Ok(())
}

fn finite(key: &str, v: f64, lo: f64, hi: f64, lo_open: bool) -> Result<()> {
    let ok = v.is_finite() && (if lo_open { v > lo } else { v >= lo }) && v <= hi;
    if !ok {
        let open = if lo_open { "(" } else { "[" };
        bail!("{key} = {v}: expected a finite number in {open}{lo}, {hi}]");
    }
    Ok(())
}

impl RunConfig {
    /// Checks every numeric setting and the task/attention pairing, naming
    /// the key and the value of the first that is wrong.
    pub fn validate(&self) -> Result<()> {
        let t = &self.trunk;
        positive("trunk.d_model", t.d_model)?;
        positive("trunk.n_heads", t.n_heads)?;
        positive("trunk.n_layers", t.n_layers)?;
        positive("trunk.d_ff", t.d_ff)?;
        if !t.d_model.is_multiple_of(t.n_heads) {
            bail!(
                "trunk.d_model = {} is not a multiple of trunk.n_heads = {}",
                t.d_model,
                t.n_heads
            );
        }
        if !(t.dropout.is_finite() && (0.0..1.0).contains(&t.dropout)) {
            bail!("trunk.dropout = {}: expected a number in [0, 1)", t.dropout);
        }
        let p = t.attention_dropout;
        if !(p.is_finite() && (0.0..1.0).contains(&p)) {
            bail!("trunk.attention_dropout = {p}: expected a number in [0, 1)");
        }
        let s = &self.train;
        positive("train.steps", s.steps)?;
        positive("train.batch_size", s.batch_size)?;
        positive("train.grad_accumulation", s.grad_accumulation)?;
        positive("train.checkpoint_every", s.checkpoint_every)?;
        positive("train.keep_checkpoints", s.keep_checkpoints)?;
        finite("train.lr", s.lr, 0.0, 10.0, true)?;
        finite(
            "train.final_lr_fraction",
            s.final_lr_fraction,
            0.0,
            1.0,
            false,
        )?;
        finite("train.weight_decay", s.weight_decay, 0.0, 10.0, false)?;
        if let Some(c) = s.grad_clip {
            finite("train.grad_clip", c, 0.0, f64::MAX, true)?;
        }
        if s.warmup > s.steps {
            bail!(
                "train.warmup = {} is longer than the run (train.steps = {})",
                s.warmup,
                s.steps
            );
        }
        self.task.spec().validate()?;
        let (mode, len) = self.task.spec().attention_shape();
        let attn = &t.attention;
        attn.validate(mode).map_err(|e| {
            anyhow::anyhow!(
                "trunk.attention: {e} (task `{}` runs the trunk in {} mode)",
                self.task.name(),
                match mode {
                    Mode::Lm => "LM (causal)",
                    Mode::Mlm => "MLM (bidirectional)",
                }
            )
        })?;
        if let combiner_attention::AttentionConfig::Combiner { plan, .. } = attn {
            plan.component_layouts(len, mode).map_err(|e| {
                anyhow::anyhow!(
                    "trunk.attention.plan: {e} (the task `{}` gives the attention sequences of length {len})",
                    self.task.name()
                )
            })?;
        }
        Ok(())
    }
}
