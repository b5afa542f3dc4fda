//! `combiner plan apply`: the plan's attention on tensors from a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::*;
use clap::Args;
use combiner::attention::{plan_attention_with, PlanInputs};
use combiner::{AbstractionKind, LearnedRowSummary, Mode};
use safetensors::{Dtype, SafeTensors};

use super::partitions::{components, oracle};
use super::{AbstractionArg, ModeArg, PlanSize, PlanSource};
use crate::backend::BackendJob;

/// Arguments of `plan apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    source: PlanSource,
    #[command(flatten)]
    size: PlanSize,
    /// LM (causal) or MLM (bidirectional).
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// safetensors file with f32 tensors `q`, `k`, `v` of shape [batch, heads, seq, d_head]
    /// (and, for the learned row summary, `x`, `w0`, `ln_scale`, `ln_bias`, `w1`).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// safetensors file to write: tensor `out` (and `oracle` with --oracle).
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Span abstraction for k_Omega and q_Omega.
    #[arg(long, value_enum, default_value_t = AbstractionArg::Max)]
    abstraction: AbstractionArg,
    /// Also write `oracle`: the dense O(L^2) reference output of eq. (8).
    #[arg(long)]
    oracle: bool,
}

impl BackendJob for ApplyArgs {
    type Output = ();
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        run::<B>(&device, &self)
    }
}

/// Reads q, k, v, runs the plan and writes the outputs.
pub fn run<B: Backend>(device: &B::Device, args: &ApplyArgs) -> Result<()> {
    let plan = args.size.apply(args.source.load()?)?;
    let mode: Mode = args.mode.into();
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let file = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", args.input.display()))?;
    let q = read_qkv(&file, &args.input, "q")?;
    let k = read_qkv(&file, &args.input, "k")?;
    let v = read_qkv(&file, &args.input, "v")?;
    for other in [&k, &v] {
        anyhow::ensure!(
            other.shape == q.shape,
            "{}: tensor `{}` has shape {:?} but `q` has {:?}: q, k and v must share \
             [batch, heads, seq, d_head]",
            args.input.display(),
            other.name,
            other.shape,
            q.shape
        );
    }
    let shape: [usize; 4] = q.shape.clone().try_into().expect("rank 4 checked");
    anyhow::ensure!(
        shape.iter().all(|&n| n > 0),
        "{}: tensor `q` has shape {shape:?}; every dimension must be at least 1",
        args.input.display()
    );

    let learned = if plan.needs_learned_summary() {
        Some(read_summary::<B>(&file, &args.input, shape, device)?)
    } else {
        None
    };
    let learned = learned.as_ref().map(|(s, x)| (s, x));

    let [q, k, v] =
        [q, k, v].map(|t| Tensor::<B, 4>::from_data(TensorData::new(t.values, t.shape), device));
    let kind: AbstractionKind = args.abstraction.into();
    let abs = kind.init::<B>(shape[3], device);
    let inputs = PlanInputs {
        learned: learned.map(|(s, x)| (s, x.clone())),
        ..PlanInputs::default()
    };
    let out = plan_attention_with(q.clone(), k.clone(), v.clone(), &plan, mode, &abs, inputs)
        .with_context(|| format!("running plan `{}` at length {}", plan.name(), shape[2]))?;
    let out = to_vec(out)?;

    let mut tensors = vec![("out".to_string(), out)];
    if args.oracle {
        let comps = components(&plan, mode, &k)?;
        let reference = to_vec(oracle(q, k, v, &comps, &abs, learned)?)?;
        let diff = tensors[0]
            .1
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        outln!("max |out - oracle| = {diff:.3e}");
        tensors.push(("oracle".to_string(), reference));
    }

    let raw: Vec<(String, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, xs)| (name, xs.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = raw
        .iter()
        .map(|(name, data)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.to_vec(), data)
                .map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .context("packing the output tensors")?;
    let metadata = HashMap::from([
        ("plan".to_string(), serde_json::to_string(&plan)?),
        ("mode".to_string(), mode.to_string()),
        (
            "abstraction".to_string(),
            format!("{kind:?}").to_lowercase(),
        ),
    ]);
    safetensors::serialize_to_file(views, Some(metadata), &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    outln!(
        "{} [{mode}, {}] on {shape:?}: wrote {} to {}",
        plan.name(),
        format!("{kind:?}").to_lowercase(),
        raw.iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(" and "),
        args.output.display()
    );
    Ok(())
}

/// An f32 tensor read from a safetensors file.
struct Input {
    name: &'static str,
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// `q`, `k` or `v`: rank 4 `[batch, heads, seq, d_head]`.
fn read_qkv(file: &SafeTensors<'_>, path: &Path, name: &'static str) -> Result<Input> {
    let t = read_f32(
        file,
        path,
        name,
        "f32 tensors q, k, v of shape [batch, heads, seq, d_head]",
    )?;
    anyhow::ensure!(
        t.shape.len() == 4,
        "{}: tensor `{name}` has shape {:?}, expected rank 4 [batch, heads, seq, d_head]",
        path.display(),
        t.shape
    );
    Ok(t)
}

/// The learned row summary's weights and the layer input `x`, checked
/// against `q`'s shape `[batch, heads, seq, d_head]`.
fn read_summary<B: Backend>(
    file: &SafeTensors<'_>,
    path: &Path,
    [b, h, len, d]: [usize; 4],
    device: &B::Device,
) -> Result<(LearnedRowSummary<B>, Tensor<B, 3>)> {
    const WHAT: &str = "for the learned row summary: x [batch, seq, d_model], w0 [heads, d_head, \
                        d_model], ln_scale and ln_bias [d_model], w1 [d_model, heads, d_head]";
    let x = read_f32(file, path, "x", WHAT)?;
    let dm = match x.shape.as_slice() {
        &[xb, xl, dm] if xb == b && xl == len && dm > 0 => dm,
        other => anyhow::bail!(
            "{}: tensor `x` has shape {other:?}, expected [batch, seq, d_model] = [{b}, {len}, \
             d_model] to match `q` [{b}, {h}, {len}, {d}]",
            path.display()
        ),
    };
    let get = |name: &'static str, expected: Vec<usize>, words: &str| -> Result<Input> {
        let t = read_f32(file, path, name, WHAT)?;
        anyhow::ensure!(
            t.shape == expected,
            "{}: tensor `{name}` has shape {:?}, expected {words} = {expected:?} (heads and \
             d_head from `q`, d_model from `x`)",
            path.display(),
            t.shape
        );
        Ok(t)
    };
    let w0 = get("w0", vec![h, d, dm], "[heads, d_head, d_model]")?;
    let scale = get("ln_scale", vec![dm], "[d_model]")?;
    let bias = get("ln_bias", vec![dm], "[d_model]")?;
    let w1 = get("w1", vec![dm, h, d], "[d_model, heads, d_head]")?;
    let t3 = |t: Input| Tensor::<B, 3>::from_data(TensorData::new(t.values, t.shape), device);
    let t1 = |t: Input| Tensor::<B, 1>::from_data(TensorData::new(t.values, t.shape), device);
    let summary = LearnedRowSummary::from_weights(t3(w0), t1(scale), t1(bias), t3(w1))
        .with_context(|| format!("{}: learned row summary weights", path.display()))?;
    Ok((summary, t3(x)))
}

fn read_f32(
    file: &SafeTensors<'_>,
    path: &Path,
    name: &'static str,
    expected: &str,
) -> Result<Input> {
    let view = file.tensor(name).map_err(|_| {
        let mut names = file.names();
        names.sort();
        anyhow::anyhow!(
            "{}: no tensor `{name}` (the file holds: {}); expected {expected}",
            path.display(),
            if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(", ")
            }
        )
    })?;
    anyhow::ensure!(
        view.dtype() == Dtype::F32,
        "{}: tensor `{name}` has dtype {:?}, expected F32",
        path.display(),
        view.dtype()
    );
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Input {
        name,
        shape: view.shape().to_vec(),
        values,
    })
}

fn to_vec<B: Backend>(t: Tensor<B, 4>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a tensor back from the device: {e:?}"))
}
