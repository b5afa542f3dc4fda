//! The AdamW step of the tch backend: PyTorch's fused kernel (one launch
//! for the moments and the parameter, `_fused_adamw_` through `aten.rs`),
//! after three launches for the clipping norm, where burn's generic step
//! and clipping are twenty-two launches per parameter.

use std::sync::Arc;

use burn::backend::libtorch::{LibTorch, TchElement, TchTensor};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use combiner_train::optim::{register_adamw, AdamWKernel, AdamWStep};
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

/// The libtorch tensor of `x`, to be changed in place: `x`'s own when no
/// other burn handle shares its storage (burn-tch's rule for its own
/// in-place operations) and it is dense, a copy otherwise.
fn owned<E: TchElement>(x: Tensor<LibTorch<E>, 1>) -> T {
    let x = x.into_primitive().tensor();
    if x.can_mut() && x.tensor.is_contiguous() {
        x.tensor
    } else {
        x.tensor.copy()
    }
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

impl<E: TchElement> AdamWKernel<LibTorch<E>> for Fused {
    fn step(
        &self,
        param: Tensor<LibTorch<E>, 1>,
        grad: Tensor<LibTorch<E>, 1>,
        moment_1: Tensor<LibTorch<E>, 1>,
        moment_2: Tensor<LibTorch<E>, 1>,
        s: &AdamWStep,
    ) -> [Tensor<LibTorch<E>, 1>; 3] {
        let [mut p, mut g, mut m, mut v] = [param, grad, moment_1, moment_2].map(owned);
        // burn's clip_by_norm multiplies by min(1, clip / (|g| + tiny)); the
        // fused kernel divides by max(1, |g| / clip), which needs no tiny
        let scale = s.clip_norm.map(|clip| {
            let mut scale = g.norm();
            let _ = scale.g_mul_scalar_(1.0 / f64::from(clip));
            let _ = scale.clamp_min_(1.0);
            scale
        });
        let t = step_tensor(s.time, p.device());
        let scalars = aten::AdamW {
            lr: s.lr,
            beta_1: f64::from(s.beta_1),
            beta_2: f64::from(s.beta_2),
            weight_decay: f64::from(s.weight_decay),
            epsilon: f64::from(s.epsilon),
        };
        aten::fused_adamw(&mut p, &mut g, &mut m, &mut v, &t, scalars, scale.as_ref());
        [wrap(p), wrap(m), wrap(v)]
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::libtorch::{LibTorch, LibTorchDevice};
    use burn::backend::Autodiff;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use combiner_train::optim::AdamW;

    type B = Autodiff<LibTorch<f32>>;

    /// Three steps with clipping active: the fused step gives the generic
    /// step's weights on libtorch's CPU device.
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
        let mut generic = AdamW::new(0.01, Some(0.5)).init::<B, Linear<B>>();
        let mut fused = AdamW::new(0.01, Some(0.5)).init::<B, Linear<B>>();
        // burn initializes parameters lazily: read them once so that both
        // copies start from the same values
        let _ = (model.weight.val(), model.bias.as_ref().map(|b| b.val()));
        let (mut a, mut b) = (model.clone(), model);
        for step in 0..3 {
            let lr = 1e-2 * (step + 1) as f64;
            combiner::kernel::set_enabled(false);
            a = generic.step(lr, a.clone(), grads(&a));
            combiner::kernel::set_enabled(true);
            b = fused.step(lr, b.clone(), grads(&b));
            for (p, q) in [
                (a.weight.val(), b.weight.val()),
                (
                    a.bias.as_ref().unwrap().val().unsqueeze(),
                    b.bias.as_ref().unwrap().val().unsqueeze(),
                ),
            ] {
                let diff: f32 = (p - q).abs().max().into_scalar();
                assert!(diff < 1e-6, "step {step}: parameters differ by {diff}");
            }
        }
    }
}
