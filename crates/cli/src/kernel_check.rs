//! `combiner bench kernel`: a backend's fused joint-softmax kernel against
//! the generic operations, on the same inputs.
//!
//! For each plan, length and mode, q, k, v and an output cotangent are drawn
//! in the job's dtype; the Combiner attention output and the q, k, v
//! gradients are computed three times: with the fused kernel, with the
//! generic operations in the same dtype, and with the generic operations in
//! f32 from the same (rounded) inputs, the reference. The kernel passes
//! where its error against the reference is no larger than the generic
//! path's own (times 2, plus 2e-3 for rounding luck on small errors). Shapes
//! the kernel declines (`none`) are listed; the check fails when it ran on
//! none of them.

use anyhow::{bail, Result};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use clap::Args;
use combiner::plan::{Mode, Plan};
use combiner::{combiner_attention_on, AbstractionKind, LayoutTensors};

use crate::backend::{check_dtype, run_on, BackendJob, BackendKind, Dtype};

/// Options of `combiner bench kernel`.
#[derive(Debug, Clone, Args)]
pub struct KernelArgs {
    /// Plans to check.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fixed,axial-rowmajor,axial-vertical,axial-horizontal,logsparse,strided,mixture-joint"
    )]
    pub plans: Vec<String>,
    /// Sequence lengths (awkward ones leave padding slots in the blocks).
    #[arg(long, value_delimiter = ',', default_value = "37,1000,3072")]
    pub lengths: Vec<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 3)]
    pub heads: usize,
    /// Width of one head.
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    /// Element type of the inputs (the fused kernel of tch runs bf16 and f16).
    #[arg(long, value_enum, default_value_t = Dtype::Bf16)]
    pub dtype: Dtype,
}

/// `combiner bench kernel`.
pub fn run(args: KernelArgs, backend: BackendKind, device: usize) -> Result<()> {
    if args.lengths.is_empty() || args.lengths.contains(&0) {
        bail!(
            "--lengths: expected positive lengths, got {:?}",
            args.lengths
        );
    }
    if args.batch == 0 || args.heads == 0 || args.head_dim == 0 {
        bail!("--batch, --heads and --head-dim must be positive");
    }
    for p in &args.plans {
        let plan = Plan::from_name(p)?;
        if plan.layout(64, Mode::Lm).is_err() {
            bail!("--plans: `{p}` has no single layout to check (a mixture of separate plans or a learned one)");
        }
    }
    if !combiner::kernel::enabled() {
        bail!("--no-fused turns the kernel off: nothing to check");
    }
    let dtype = args.dtype;
    check_dtype(backend, dtype)?;
    // the f32 backend with inputs cast to `dtype`, as mixed-precision training runs
    let [failures, unused, checked] = run_on(backend, device, Job(args))?;
    if unused == checked {
        bail!(
            "no fused kernel ran in any of the {checked} check(s): backend `{}` has none for {} \
             here (tch on CUDA has one for bf16 and f16, head dims divisible by 8)",
            backend.feature(),
            dtype.name()
        );
    }
    if failures > 0 {
        bail!("{failures} check(s) failed: the fused kernel is less accurate than the generic operations");
    }
    Ok(())
}

struct Job(KernelArgs);

/// Output and q, k, v gradients of one run, in f32 on the host.
struct Run([Vec<f32>; 4]);

fn rel_err(a: &[f32], reference: &[f32]) -> f64 {
    let scale = reference.iter().fold(0f64, |m, x| m.max(x.abs() as f64));
    let diff = a
        .iter()
        .zip(reference)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
}

impl BackendJob for Job {
    /// Failed checks, checks where no kernel ran, checks.
    type Output = [usize; 3];

    fn run<B: Backend>(self, device: B::Device) -> Result<[usize; 3]> {
        let a = self.0;
        let dtype = match a.dtype {
            Dtype::F32 => DType::F32,
            Dtype::Bf16 => DType::BF16,
            Dtype::F16 => DType::F16,
        };
        let (mut failures, mut unused, mut checked) = (0, 0, 0);
        println!(
            "{:<18} {:>6} {:>4} {:>7}  {:>21}  {:>21}  {:>21}  {:>21}",
            "plan",
            "length",
            "mode",
            "kernel",
            "out fused/generic",
            "dq fused/generic",
            "dk fused/generic",
            "dv fused/generic"
        );
        for name in &a.plans {
            let plan = Plan::from_name(name)?;
            for &len in &a.lengths {
                for mode in [Mode::Lm, Mode::Mlm] {
                    let layout = plan.layout(len, mode)?;
                    let shape = [a.batch, a.heads, len, a.head_dim];
                    let draw =
                        || Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                    // rounded to `dtype` once: every run sees the same values
                    let inputs = [draw(), draw(), draw(), draw()]
                        .map(|x| combiner::to_dtype(combiner::to_dtype(x, dtype), DType::F32));
                    let run = |fused: bool, dt: DType| -> Run {
                        combiner::kernel::set_enabled(fused);
                        let tensors = LayoutTensors::<Autodiff<B>>::new(&layout, &device);
                        let abs = AbstractionKind::Mean.init::<Autodiff<B>>(a.head_dim, &device);
                        let [q, k, v, cot] = inputs.clone().map(|x| {
                            Tensor::<Autodiff<B>, 4>::from_inner(combiner::to_dtype(x, dt))
                        });
                        let [q, k, v] = [q, k, v].map(|x| x.require_grad());
                        let out = combiner_attention_on(
                            q.clone(),
                            k.clone(),
                            v.clone(),
                            &layout,
                            &tensors,
                            &abs,
                            None,
                        );
                        let grads = (out.clone() * cot).sum().backward();
                        let host = |x: Tensor<B, 4>| {
                            combiner::to_dtype(x, DType::F32)
                                .into_data()
                                .convert::<f32>()
                                .to_vec::<f32>()
                                .expect("f32 data")
                        };
                        let g =
                            |x: &Tensor<Autodiff<B>, 4>| host(x.grad(&grads).expect("a gradient"));
                        Run([host(out.inner()), g(&q), g(&k), g(&v)])
                    };
                    let before = combiner::kernel::calls();
                    let fused = run(true, dtype);
                    let used = combiner::kernel::calls() > before;
                    let generic = run(false, dtype);
                    let reference = run(false, DType::F32);
                    combiner::kernel::set_enabled(true);
                    let mut row = format!(
                        "{name:<18} {len:>6} {:>4} {:>7}",
                        mode_name(mode),
                        if used { "fused" } else { "none" }
                    );
                    let mut ok = true;
                    for i in 0..4 {
                        let ef = rel_err(&fused.0[i], &reference.0[i]);
                        let eg = rel_err(&generic.0[i], &reference.0[i]);
                        ok &= !used || ef <= 2.0 * eg + 2e-3;
                        row += &format!("  {ef:>10.2e}/{eg:<10.2e}");
                    }
                    checked += 1;
                    unused += usize::from(!used);
                    if !ok {
                        failures += 1;
                        row += "  FAIL";
                    }
                    println!("{row}");
                }
            }
        }
        println!(
            "{checked} checks, {failures} failed (relative max error against the f32 generic \
             reference; `none`: the backend has no kernel for this dtype or shape, both runs are \
             the generic operations)"
        );
        Ok([failures, unused, checked])
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Lm => "lm",
        Mode::Mlm => "mlm",
    }
}
