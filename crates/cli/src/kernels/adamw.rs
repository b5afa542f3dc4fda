//! The AdamW step of the tch backend in nine PyTorch operations (and six
//! more, five of them on the one-element norm, when clipping), where
//! burn's generic step and clipping are twenty-two launches per parameter.

use std::sync::Arc;

use burn::backend::libtorch::{LibTorch, TchElement, TchTensor};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use combiner_train::optim::{register_adamw, AdamWKernel, AdamWStep};
use tch::Tensor as T;

/// Registers the step for `LibTorch<E>`, the inner backend optimizers run on.
pub fn register<E: TchElement>() {
    register_adamw::<LibTorch<E>>(Arc::new(Fused));
}

struct Fused;

fn raw<E: TchElement>(x: Tensor<LibTorch<E>, 1>) -> T {
    x.into_primitive().tensor().tensor
}

fn wrap<E: TchElement>(x: T) -> Tensor<LibTorch<E>, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(TchTensor::new(x)))
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
        let [p, g, m, v] = [param, grad, moment_1, moment_2].map(raw);
        // Every result is a new tensor (in-place operations only on tensors
        // made here): the inputs may share storage with other burn handles.
        let g = match s.clip_norm {
            Some(clip) => {
                // burn's clip_by_norm: min(1, clip / (|g| + min_positive))
                let tiny = f64::from(f32::MIN_POSITIVE);
                let mut coef = g.norm();
                let _ = coef.g_add_scalar_(tiny);
                let _ = coef.reciprocal_();
                let _ = coef.g_mul_scalar_(f64::from(clip));
                let _ = coef.clamp_max_(1.0);
                &g * &coef
            }
            None => g,
        };
        let m = m.lerp(&g, f64::from(1.0 - s.beta_1));
        let v = v.lerp(&(&g * &g), f64::from(1.0 - s.beta_2));
        // (m / c1) / (sqrt(v / c2) + eps) = (sqrt(c2) / c1) m / (sqrt(v) + eps sqrt(c2))
        let root_c2 = f64::from(s.correction_2).sqrt();
        let mut denom = v.sqrt();
        let _ = denom.g_add_scalar_(f64::from(s.epsilon) * root_c2);
        let mut update = &m / &denom;
        let _ = update.g_mul_scalar_(-s.lr * root_c2 / f64::from(s.correction_1));
        let mut p = p.g_mul_scalar(1.0 - s.lr * f64::from(s.weight_decay));
        let _ = p.g_add_(&update);
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
