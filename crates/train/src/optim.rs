//! AdamW with clipping by gradient norm, in one step per parameter that a
//! backend may run as a few fused operations, or in one multi-tensor step
//! over all parameters.
//!
//! [`AdamW`] computes what burn's `AdamW` with `GradientClipping::Norm`
//! computes (the norm of each parameter's gradient clipped on its own,
//! decoupled weight decay, bias-corrected moments) and keeps the same
//! state records (`AdamWState`), so checkpoints read either way. Without a
//! registered [`AdamWKernel`] it runs burn's own clipping and step; a
//! backend's kernel takes the flattened parameter, gradient and moments
//! and returns the new ones (burn's generic form is about twenty tensor
//! operations per parameter, each a kernel launch on a GPU). Through
//! [`AdamWOptimizer`] the kernel gets all parameters of a step at once
//! ([`AdamWKernel::step_all`]): a GPU's multi-tensor kernels then spread
//! the step over the whole device, where one parameter fills only a few of
//! its multiprocessors.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use burn::grad_clipping::GradientClipping;
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::{GradAdaptor, OptimizerAdaptor};
use burn::optim::record::AdaptorRecord;
use burn::optim::LearningRate;
use burn::optim::{
    AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsParams, MultiGradientsParams,
    Optimizer, SimpleOptimizer,
};
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

    /// [`Self::step`] of every slot, the results in slot order (all slots
    /// of one call share the scalars but `time` and the corrections). The
    /// default steps one slot after the other.
    fn step_all(&self, slots: Vec<AdamWSlot<B>>) -> Vec<[Tensor<B, 1>; 3]> {
        slots
            .into_iter()
            .map(|s| self.step(s.param, s.grad, s.moment_1, s.moment_2, &s.step))
            .collect()
    }
}

/// One parameter of [`AdamWKernel::step_all`], flattened.
pub struct AdamWSlot<B: Backend> {
    /// The parameter.
    pub param: Tensor<B, 1>,
    /// Its gradient.
    pub grad: Tensor<B, 1>,
    /// First moment (zeros at the first step).
    pub moment_1: Tensor<B, 1>,
    /// Second moment (zeros at the first step).
    pub moment_2: Tensor<B, 1>,
    /// The scalars of its step.
    pub step: AdamWStep,
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
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> AdamWOptimizer<M, B> {
        AdamWOptimizer {
            optim: self,
            records: Records::<M, B>::default(),
            module: PhantomData,
        }
    }

    /// The flattened step of one parameter: the moments of `state` (zeros
    /// without one) and the scalars of its next step.
    fn slot<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<AdamWState<B, D>>,
    ) -> AdamWSlot<B> {
        let n = tensor.shape().num_elements();
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
        AdamWSlot {
            param: tensor.reshape([n]),
            grad: grad.reshape([n]),
            moment_1: m,
            moment_2: v,
            step: AdamWStep {
                lr,
                beta_1: BETA_1,
                beta_2: BETA_2,
                epsilon: EPSILON,
                weight_decay: self.weight_decay,
                time,
                correction_1: 1.0 - BETA_1.powi(time as i32),
                correction_2: 1.0 - BETA_2.powi(time as i32),
                clip_norm: self.clip_norm,
            },
        }
    }
}

/// burn's AdamW state of a parameter of `shape` from flattened moments.
fn state_of<B: Backend, const D: usize>(
    time: usize,
    m: Tensor<B, 1>,
    v: Tensor<B, 1>,
    shape: burn::tensor::Shape,
) -> AdamWState<B, D> {
    AdamWState::new(AdaptiveMomentumState::new(
        time,
        m.reshape(shape.clone()),
        v.reshape(shape),
    ))
}

/// The optimizer records: burn's adaptor's, so that checkpoints of either
/// read the same.
type Records<M, B> = <OptimizerAdaptor<AdamW, M, B> as Optimizer<M, B>>::Record;

/// [`AdamW`] over all parameters of a module. With a registered
/// [`AdamWKernel`] a step hands every parameter to
/// [`AdamWKernel::step_all`] at once; without one it is burn's
/// `OptimizerAdaptor` over [`AdamW`]'s per-parameter step. The records are
/// the adaptor's in both cases.
#[derive(Clone)]
pub struct AdamWOptimizer<M: AutodiffModule<B>, B: AutodiffBackend> {
    optim: AdamW,
    records: Records<M, B>,
    module: PhantomData<M>,
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> AdamWOptimizer<M, B> {
    fn step_with(&mut self, lr: LearningRate, module: M, grads: GradAdaptor) -> M {
        let Some(kernel) = kernel::<B::InnerBackend>() else {
            let mut adaptor = OptimizerAdaptor::<AdamW, M, B>::from(self.optim.clone())
                .load_record(std::mem::take(&mut self.records));
            let module = match grads {
                GradAdaptor::Single(g) => adaptor.step(lr, module, g),
                GradAdaptor::Multi(g) => adaptor.step_multi(lr, module, g),
            };
            self.records = adaptor.to_record();
            return module;
        };
        let mut collect = Collect::<M, B> {
            optim: &self.optim,
            lr,
            grads,
            records: &mut self.records,
            ids: Vec::new(),
            slots: Vec::new(),
        };
        module.visit(&mut collect);
        let Collect { ids, slots, .. } = collect;
        let times: Vec<usize> = slots.iter().map(|s| s.step.time).collect();
        let results = kernel.step_all(slots);
        let mut update = Update::<M, B> {
            results: ids
                .into_iter()
                .zip(times)
                .zip(results)
                .map(|((id, t), r)| (id, (t, r)))
                .collect(),
            records: &mut self.records,
        };
        module.map(&mut update)
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> Optimizer<M, B> for AdamWOptimizer<M, B> {
    type Record = Records<M, B>;

    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        self.step_with(lr, module, grads.into())
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        self.step_with(lr, module, grads.into())
    }

    fn to_record(&self) -> Self::Record {
        self.records.clone()
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.records = record;
        self
    }
}

/// Gathers the flattened step of every parameter with a gradient, taking
/// its state out of the records (as burn's adaptor does).
struct Collect<'a, M: AutodiffModule<B>, B: AutodiffBackend> {
    optim: &'a AdamW,
    lr: LearningRate,
    grads: GradAdaptor,
    records: &'a mut Records<M, B>,
    ids: Vec<ParamId>,
    slots: Vec<AdamWSlot<B::InnerBackend>>,
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, M, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some((grad, device)) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let mut tensor = param.val().inner();
        if tensor.device() != device {
            tensor = tensor.to_device(&device);
        }
        let state = self.records.remove(&param.id).map(|r| {
            <AdamW as SimpleOptimizer<B::InnerBackend>>::to_device(r.into_state::<D>(), &device)
        });
        self.slots
            .push(self.optim.slot(self.lr, tensor, grad, state));
        self.ids.push(param.id);
    }
}

/// A parameter after its step: its step number, the flattened parameter
/// and moments.
type Stepped<B> = (usize, [Tensor<B, 1>; 3]);

/// Puts the stepped parameters back and their states into the records.
struct Update<'a, M: AutodiffModule<B>, B: AutodiffBackend> {
    results: HashMap<ParamId, Stepped<B::InnerBackend>>,
    records: &'a mut Records<M, B>,
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> ModuleMapper<B> for Update<'_, M, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some((time, [p, m, v])) = self.results.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let shape = tensor.shape();
        let mut stepped = Tensor::from_inner(p.reshape(shape.clone()));
        if tensor.is_require_grad() {
            stepped = stepped.require_grad();
        }
        self.records.insert(
            id,
            AdaptorRecord::from_state(state_of::<_, D>(time, m, v, shape)),
        );
        Param::from_mapped_value(id, stepped, mapper)
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
        let s = self.slot(lr, tensor, grad, state);
        let time = s.step.time;
        let [p, m, v] = kernel.step(s.param, s.grad, s.moment_1, s.moment_2, &s.step);
        (p.reshape(shape.clone()), Some(state_of(time, m, v, shape)))
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

        fn step_all(&self, slots: Vec<AdamWSlot<Inner>>) -> Vec<[Tensor<Inner, 1>; 3]> {
            CALLS.lock().unwrap().push(slots.len());
            slots
                .into_iter()
                .rev()
                .map(|s| self.step(s.param, s.grad, s.moment_1, s.moment_2, &s.step))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect()
        }
    }

    /// The slot counts of the `step_all` calls.
    static CALLS: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

    /// With a kernel registered, three steps (first one from empty state,
    /// clipping active) give burn's AdamW-with-clipping parameters and
    /// state, each step one `step_all` call over both parameters; burn's
    /// adaptor then continues from the recorded states.
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
        assert_eq!(*CALLS.lock().unwrap(), [2, 2, 2]);
        // the states the batched step recorded carry on in burn's adaptor
        combiner::kernel::set_enabled(false);
        a = reference.step(0.04, a.clone(), grads(&a));
        b = ours.step(0.04, b.clone(), grads(&b));
        combiner::kernel::set_enabled(true);
        let diff: f32 = (a.weight.val() - b.weight.val()).abs().max().into_scalar();
        assert!(
            diff < 1e-6,
            "generic step after batched ones: weights differ by {diff}"
        );
        assert_eq!(CALLS.lock().unwrap().len(), 3);
        // one state per parameter, as burn's
        assert_eq!(reference.to_record().len(), ours.to_record().len());
    }
}
