//! The AdamW step of the tch backend: PyTorch's multi-tensor form (through
//! `aten.rs`), where burn's generic step and clipping are twenty-two
//! launches per parameter. All parameters of a step go in one call
//! (`step_all`): the clipping norms, the clipping and the fused AdamW step
//! (`_fused_adamw_`) each a few launches over all parameters, which spread
//! over the whole GPU where one parameter's launch fills a few
//! multiprocessors (a block per 65,536 elements). One parameter on its own
//! (`step`) is the same call with one slot.

use std::sync::Arc;

use burn::backend::libtorch::{LibTorch, TchElement, TchTensor};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use combiner_train::optim::{register_adamw, AdamWKernel, AdamWSlot, AdamWStep};
use tch::Tensor as T;

use super::aten;

/// Registers the step for `LibTorch<E>`, the inner backend optimizers run on.
pub fn register<E: TchElement>() {
    register_adamw::<LibTorch<E>>(Arc::new(Fused));
}

struct Fused;

fn wrap<E: TchElement>(x: T) -> Tensor<LibTorch<E>, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(TchTensor::new(x)))
}

/// The libtorch tensor of `x` and whether it must be copied before it is
/// changed in place: when another burn handle shares its storage
/// (burn-tch's rule for its own in-place operations) or it is not dense.
fn exclusive<E: TchElement>(x: Tensor<LibTorch<E>, 1>) -> (T, bool) {
    let x = x.into_primitive().tensor();
    let shared = !(x.can_mut() && x.tensor.is_contiguous());
    (x.tensor, shared)
}

thread_local! {
    /// The step number of the last step on the device, as the fused kernel
    /// reads it: one fill a step instead of one a parameter.
    static STEP: std::cell::RefCell<Option<(usize, tch::Device, T)>> =
        const { std::cell::RefCell::new(None) };
}

/// `t` as a one-element f32 tensor on `device`, made without a
/// host-to-device copy (which would wait for the queue) and shared by the
/// parameters of a step.
fn step_tensor(time: usize, device: tch::Device) -> T {
    STEP.with(|cell| {
        let mut cell = cell.borrow_mut();
        match &*cell {
            Some((t, d, x)) if *t == time && *d == device => x.shallow_clone(),
            _ => {
                let x = T::full([1], time as f64, (tch::Kind::Float, device));
                *cell = Some((time, device, x.shallow_clone()));
                x
            }
        }
    })
}

/// One multi-tensor call over `slots`, which share the scalars (all but
/// `time`), the device and the dtype.
fn step_together<E: TchElement>(
    slots: Vec<AdamWSlot<LibTorch<E>>>,
) -> Vec<[Tensor<LibTorch<E>, 1>; 3]> {
    let Some(s) = slots.first().map(|s| s.step) else {
        return Vec::new();
    };
    let params: Vec<aten::AdamWParam> = slots
        .into_iter()
        .map(|s| {
            let (param, p) = exclusive(s.param);
            let (grad, g) = exclusive(s.grad);
            let (exp_avg, m) = exclusive(s.moment_1);
            let (exp_avg_sq, v) = exclusive(s.moment_2);
            let step = step_tensor(s.step.time, param.device());
            aten::AdamWParam {
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                step,
                shared: [p, g, m, v],
            }
        })
        .collect();
    let scalars = aten::AdamW {
        lr: s.lr,
        beta_1: f64::from(s.beta_1),
        beta_2: f64::from(s.beta_2),
        weight_decay: f64::from(s.weight_decay),
        epsilon: f64::from(s.epsilon),
    };
    // burn's clip_by_norm multiplies by min(1, clip / (|g| + tiny)); the
    // kernels divide by max(1, |g| / clip), which needs no tiny
    aten::fused_adamw_many(&params, scalars, s.clip_norm.map(f64::from))
        .into_iter()
        .map(|r| r.map(wrap))
        .collect()
}

impl<E: TchElement> AdamWKernel<LibTorch<E>> for Fused {
    fn step(
        &self,
        param: Tensor<LibTorch<E>, 1>,
        grad: Tensor<LibTorch<E>, 1>,
        moment_1: Tensor<LibTorch<E>, 1>,
        moment_2: Tensor<LibTorch<E>, 1>,
        s: &AdamWStep,
    ) -> [Tensor<LibTorch<E>, 1>; 3] {
        let slot = AdamWSlot {
            param,
            grad,
            moment_1,
            moment_2,
            step: *s,
        };
        let [r] = <[_; 1]>::try_from(step_together(vec![slot]))
            .unwrap_or_else(|_| unreachable!("one slot gives one result"));
        r
    }

    fn step_all(&self, slots: Vec<AdamWSlot<LibTorch<E>>>) -> Vec<[Tensor<LibTorch<E>, 1>; 3]> {
        let Some(first) = slots.first() else {
            return Vec::new();
        };
        // one call takes one set of scalars, one device and one dtype
        let (step, device, dtype) = (first.step, first.param.device(), first.param.dtype());
        let same = |s: &AdamWSlot<LibTorch<E>>| {
            let a = &s.step;
            a.lr == step.lr
                && a.beta_1 == step.beta_1
                && a.beta_2 == step.beta_2
                && a.epsilon == step.epsilon
                && a.weight_decay == step.weight_decay
                && a.clip_norm == step.clip_norm
                && s.param.device() == device
                && s.param.dtype() == dtype
        };
        if slots.iter().all(same) {
            step_together(slots)
        } else {
            slots
                .into_iter()
                .flat_map(|s| step_together(vec![s]))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::libtorch::{LibTorch, LibTorchDevice};
    use burn::backend::Autodiff;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::adaptor::OptimizerAdaptor;
    use burn::optim::{GradientsParams, Optimizer};
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use combiner_train::optim::AdamW;

    type B = Autodiff<LibTorch<f32>>;

    /// Three steps with clipping active: the fused step, one parameter at a
    /// time (burn's adaptor over `AdamW`) and all at once (`AdamWOptimizer`,
    /// PyTorch's multi-tensor kernels), gives the generic step's weights on
    /// libtorch's CPU device; a parameter whose storage another handle
    /// shares is left as it was.
    #[test]
    fn fused_adamw_matches_the_generic_step() {
        let _serial = crate::kernels::SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        super::register::<f32>();
        let dev = LibTorchDevice::Cpu;
        let model: Linear<B> = LinearConfig::new(5, 3).init(&dev);
        let x = Tensor::<B, 2>::random([4, 5], Distribution::Normal(0.0, 3.0), &dev);
        let grads = |m: &Linear<B>| {
            let loss = (m.forward(x.clone()) * 10.0).square().sum();
            GradientsParams::from_grads(loss.backward(), m)
        };
        let new = || AdamW::new(0.01, Some(0.5));
        let mut generic = new().init::<B, Linear<B>>();
        let mut single = OptimizerAdaptor::<AdamW, Linear<B>, B>::from(new());
        let mut all = new().init::<B, Linear<B>>();
        // burn initializes parameters lazily: read them once so that the
        // copies start from the same values
        let _ = (model.weight.val(), model.bias.as_ref().map(|b| b.val()));
        let (mut a, mut b, mut c) = (model.clone(), model.clone(), model);
        for step in 0..3 {
            let lr = 1e-2 * (step + 1) as f64;
            combiner::kernel::set_enabled(false);
            a = generic.step(lr, a.clone(), grads(&a));
            combiner::kernel::set_enabled(true);
            b = single.step(lr, b.clone(), grads(&b));
            let before = c.weight.val();
            let kept = before.to_data();
            c = all.step(lr, c.clone(), grads(&c));
            before.to_data().assert_eq(&kept, true);
            for q in [&b, &c] {
                for (x, y) in [
                    (a.weight.val(), q.weight.val()),
                    (
                        a.bias.as_ref().unwrap().val().unsqueeze(),
                        q.bias.as_ref().unwrap().val().unsqueeze(),
                    ),
                ] {
                    let diff: f32 = (x - y).abs().max().into_scalar();
                    assert!(diff < 1e-6, "step {step}: parameters differ by {diff}");
                }
            }
        }
    }
}
