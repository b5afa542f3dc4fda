//! AdamW with clipping by gradient norm, in one step per parameter that a
//! backend may run as a few fused operations.
//!
//! [`AdamW`] computes what burn's `AdamW` with `GradientClipping::Norm`
//! computes (the norm of each parameter's gradient clipped on its own,
//! decoupled weight decay, bias-corrected moments) and keeps the same
//! state records (`AdamWState`), so checkpoints read either way. Without a
//! registered [`AdamWKernel`] it runs burn's own clipping and step; a
//! backend's kernel takes the flattened parameter, gradient and moments
//! and returns the new ones (burn's generic form is about twenty tensor
//! operations per parameter, each a kernel launch on a GPU).

use std::sync::Arc;

use burn::grad_clipping::GradientClipping;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::LearningRate;
use burn::optim::{AdamWConfig, AdamWState, AdaptiveMomentumState, SimpleOptimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use combiner::kernel::Registry;

/// The scalars of one AdamW step of one parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta_1: f32,
    /// Second-moment decay.
    pub beta_2: f32,
    /// Added to the root of the corrected second moment.
    pub epsilon: f32,
    /// Decoupled weight decay (the parameter is scaled by `1 - lr * wd`).
    pub weight_decay: f32,
    /// The step number `t` of this parameter (1 for its first step).
    pub time: usize,
    /// Bias corrections `1 - beta_1^t` and `1 - beta_2^t` of step `t`.
    pub correction_1: f32,
    /// See `correction_1`.
    pub correction_2: f32,
    /// Clip the gradient to this norm first (`None`: no clipping).
    pub clip_norm: Option<f32>,
}

/// A backend's fused AdamW step.
pub trait AdamWKernel<B: Backend>: Send + Sync {
    /// `(param, moment_1, moment_2)` after one step with gradient `grad`,
    /// all flattened to one dim: the gradient clipped to `clip_norm`
    /// (scaled by `min(1, clip / (|g| + tiny))`), `m = b1 m + (1 - b1) g`,
    /// `v = b2 v + (1 - b2) g^2`, and `param (1 - lr wd) - lr (m / c1) /
    /// (sqrt(v / c2) + eps)`.
    fn step(
        &self,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        moment_1: Tensor<B, 1>,
        moment_2: Tensor<B, 1>,
        step: &AdamWStep,
    ) -> [Tensor<B, 1>; 3];
}

static KERNELS: Registry = Registry::new();

/// Makes `kernel` the AdamW step of backend `B` (the inner backend that
/// optimizers run on).
pub fn register_adamw<B: Backend>(kernel: Arc<dyn AdamWKernel<B>>) {
    KERNELS.insert::<B, _>(kernel);
}

fn kernel<B: Backend>() -> Option<Arc<dyn AdamWKernel<B>>> {
    if !combiner::kernel::layers_enabled() {
        return None;
    }
    KERNELS.get::<B, dyn AdamWKernel<B>>()
}

/// burn's AdamW defaults, which both paths use.
const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;
const EPSILON: f32 = 1e-5;

/// AdamW (burn's defaults: betas 0.9 / 0.999, epsilon 1e-5) with optional
/// clipping of each parameter's gradient norm.
#[derive(Clone)]
pub struct AdamW {
    weight_decay: f32,
    clip_norm: Option<f32>,
    burn: burn::optim::AdamW,
}

impl AdamW {
    /// AdamW with `weight_decay` and, when given, clipping to `clip_norm`.
    pub fn new(weight_decay: f32, clip_norm: Option<f32>) -> Self {
        AdamW {
            weight_decay,
            clip_norm,
            burn: AdamWConfig::new()
                .with_weight_decay(weight_decay)
                .with_beta_1(BETA_1)
                .with_beta_2(BETA_2)
                .with_epsilon(EPSILON)
                .build(),
        }
    }

    /// The optimizer over the parameters of `M`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Self, M, B> {
        OptimizerAdaptor::from(self)
    }
}

impl<B: Backend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let Some(kernel) = kernel::<B>() else {
            let grad = match self.clip_norm {
                Some(c) => GradientClipping::Norm(c).clip_gradient(grad),
                None => grad,
            };
            return self.burn.step(lr, tensor, grad, state);
        };
        let shape = tensor.shape();
        let n = shape.num_elements();
        let (time, m, v) = match state {
            Some(s) => (
                s.momentum.time + 1,
                s.momentum.moment_1.reshape([n]),
                s.momentum.moment_2.reshape([n]),
            ),
            None => {
                let zeros = || Tensor::<B, 1>::zeros([n], (&tensor.device(), grad.dtype()));
                (1, zeros(), zeros())
            }
        };
        let step = AdamWStep {
            lr,
            beta_1: BETA_1,
            beta_2: BETA_2,
            epsilon: EPSILON,
            weight_decay: self.weight_decay,
            time,
            correction_1: 1.0 - BETA_1.powi(time as i32),
            correction_2: 1.0 - BETA_2.powi(time as i32),
            clip_norm: self.clip_norm,
        };
        let [p, m, v] = kernel.step(tensor.reshape([n]), grad.reshape([n]), m, v, &step);
        let momentum =
            AdaptiveMomentumState::new(time, m.reshape(shape.clone()), v.reshape(shape.clone()));
        (p.reshape(shape), Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <burn::optim::AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::Distribution;

    /// A backend type of its own, so that the kernel registered here
    /// reaches no other test.
    type Inner = burn_ndarray::NdArray<f32, i32>;
    type B = Autodiff<Inner>;

    /// The documented step in generic operations.
    struct Reference;

    impl AdamWKernel<Inner> for Reference {
        fn step(
            &self,
            p: Tensor<Inner, 1>,
            g: Tensor<Inner, 1>,
            m: Tensor<Inner, 1>,
            v: Tensor<Inner, 1>,
            s: &AdamWStep,
        ) -> [Tensor<Inner, 1>; 3] {
            let g = match s.clip_norm {
                Some(c) => {
                    let norm = g.clone().square().sum().sqrt();
                    let coef = (norm + f32::MIN_POSITIVE).recip() * c;
                    g * coef.clamp_max(1.0)
                }
                None => g,
            };
            let m = m * s.beta_1 + g.clone() * (1.0 - s.beta_1);
            let v = v * s.beta_2 + g.square() * (1.0 - s.beta_2);
            let update =
                (m.clone() / s.correction_1) / ((v.clone() / s.correction_2).sqrt() + s.epsilon);
            let p = p * (1.0 - s.lr * f64::from(s.weight_decay)) - update * s.lr;
            [p, m, v]
        }
    }

    /// With a kernel registered, three steps (first one from empty state,
    /// clipping active) give burn's AdamW-with-clipping parameters and
    /// state.
    #[test]
    fn kernel_step_matches_burns_adamw() {
        let dev = Default::default();
        let model: Linear<B> = LinearConfig::new(5, 3).init(&dev);
        let x = Tensor::<B, 2>::random([4, 5], Distribution::Normal(0.0, 3.0), &dev);
        let grads = |m: &Linear<B>| {
            let loss = (m.forward(x.clone()) * 10.0).square().sum();
            GradientsParams::from_grads(loss.backward(), m)
        };
        let mut reference = AdamWConfig::new()
            .with_weight_decay(0.01)
            .with_grad_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(0.5)))
            .init::<B, Linear<B>>();
        register_adamw::<Inner>(Arc::new(Reference));
        let mut ours = AdamW::new(0.01, Some(0.5)).init::<B, Linear<B>>();
        // burn initializes parameters lazily: read them once so that both
        // copies start from the same values
        let _ = (model.weight.val(), model.bias.as_ref().map(|b| b.val()));
        let (mut a, mut b) = (model.clone(), model);
        for step in 0..3 {
            let lr = 1e-2 * (step + 1) as f64;
            a = reference.step(lr, a.clone(), grads(&a));
            b = ours.step(lr, b.clone(), grads(&b));
            let diff: f32 = (a.weight.val() - b.weight.val()).abs().max().into_scalar();
            assert!(diff < 1e-6, "step {step}: weights differ by {diff}");
        }
        // one state per parameter, as burn's
        assert_eq!(reference.to_record().len(), ours.to_record().len());
    }
}
