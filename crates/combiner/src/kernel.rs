//! Fused backend kernels for the joint softmax of eq. (9) and for the dense
//! layers around it ([`LayerKernel`]: linear layers and layer norms).
//!
//! [`exec::joint_attention`](crate::exec) computes the logits of every term,
//! one softmax over all of them and the weighted sum of the values with
//! generic tensor operations: correct on every backend, but each step writes
//! the `O(L sqrt L)` logits to memory. A backend with a fused attention
//! kernel can take over that part: the executor hands it each term's queries,
//! keys and values (already gathered into the term's block order) with the
//! term's mask and query order, and the kernel returns the attention output
//! in query order, or declines and the generic operations run.
//!
//! Kernels are registered per backend type at start-up by the binary, which
//! names the concrete backends ([`register`]); models stay generic over
//! `B: Backend`. Registered kernels are checked against the generic
//! operations by the dense-oracle tests of the backend that provides them.
//!
//! A kernel must compute exactly what the generic path computes: for every
//! query, one softmax over the union of its terms' unmasked logits
//! `scale * q . k`, weights applied to the values. The local expectations
//! of the span summaries (softmax attention inside blocks) reach it too, as
//! a single term whose query order is its block order. Attention dropout on the
//! probabilities is not a kernel's business: with dropout active the
//! executor does not call kernels.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use burn::prelude::*;
use burn::tensor::DType;

/// One term of the joint softmax, in the term's block order.
#[derive(Clone, Debug)]
pub struct TermInput<B: Backend> {
    /// Queries `[b, h, groups, group_size, d]` (padding slots hold zeros).
    pub q: Tensor<B, 5>,
    /// Keys `[b, h, groups, width, d]`.
    pub k: Tensor<B, 5>,
    /// Values `[b, h, groups, width, d]`.
    pub v: Tensor<B, 5>,
    /// `[groups, group_size, width]`, true where a query does not score an
    /// item; `None` when every pair counts.
    pub hidden: Option<Tensor<B, 3, Bool>>,
    /// For each of the `groups * group_size` slots its position, `len` for
    /// a padding slot.
    pub queries: Tensor<B, 1, Int>,
    /// For each position `0..len` its slot.
    pub inverse: Tensor<B, 1, Int>,
    /// Whether slot `i` holds position `i` for every `i < len` (the slots
    /// past `len` are padding).
    pub identity: bool,
    /// Whether `hidden` is exactly the causal mask of square blocks
    /// (`group_size == width`, query `i` of every block scores items
    /// `0..=i`), which kernels may apply without reading a mask.
    pub causal: bool,
    /// The queries in query order, `[b, h, len, d]`, of which `q` may be a
    /// strided view (the executor reads blocks and transposed blocks in
    /// place): a kernel that finds `q` covering it exactly can write its
    /// output in query order without a gather. `None` when there is no
    /// such tensor (the term's slot order is its query order).
    pub base: Option<Tensor<B, 4>>,
}

/// The shape of one joint softmax, for a kernel to decide whether it runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Element type of q, k and v.
    pub dtype: DType,
    /// Width of one head.
    pub head_dim: usize,
    /// Batch size.
    pub batch: usize,
    /// `batch * heads`.
    pub batch_heads: usize,
    /// The smallest `group_size` of the terms.
    pub min_group_size: usize,
    /// The largest `groups` of the terms.
    pub max_groups: usize,
}

/// A backend's fused joint-softmax attention.
pub trait JointKernel<B: Backend>: Send + Sync {
    /// Whether the kernel runs `call` on `device`; when it does not, the
    /// executor runs the generic operations.
    fn accepts(&self, call: &Call, device: &B::Device) -> bool;

    /// The attention output `[b, h, len, d]` in query order: for each
    /// position, the softmax over the unmasked logits `scale * q . k` of
    /// all terms, applied to the values. Differentiable in every `q`, `k`
    /// and `v` where `B` is an autodiff backend.
    fn joint(&self, terms: &[TermInput<B>], len: usize, scale: f64) -> Tensor<B, 4>;
}

/// Kernels of one kind per backend type, `K` the kind's trait object
/// (`dyn JointKernel<B>`, `dyn LayerKernel<B>`, ...): the binary registers
/// one per concrete backend at start-up, generic code looks its own up.
pub struct Registry(OnceLock<RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>);

impl Registry {
    /// An empty registry (for a `static`).
    pub const fn new() -> Self {
        Registry(OnceLock::new())
    }

    fn map(&self) -> &RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>> {
        self.0.get_or_init(Default::default)
    }

    /// Makes `kernel` the kernel of backend `B` (replacing any earlier one).
    pub fn insert<B: 'static, K: ?Sized + Send + Sync + 'static>(&self, kernel: Arc<K>) {
        self.map()
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(TypeId::of::<B>(), Box::new(kernel));
    }

    /// The kernel registered for backend `B`.
    pub fn get<B: 'static, K: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<K>> {
        let map = self.map().read().unwrap_or_else(|e| e.into_inner());
        map.get(&TypeId::of::<B>())
            .and_then(|k| k.downcast_ref::<Arc<K>>())
            .cloned()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

static JOINT: Registry = Registry::new();
static LAYERS: Registry = Registry::new();

static ENABLED: AtomicBool = AtomicBool::new(true);
static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Makes `kernel` the joint-softmax kernel of backend `B` (replacing any
/// earlier one).
pub fn register<B: Backend>(kernel: Arc<dyn JointKernel<B>>) {
    JOINT.insert::<B, _>(kernel);
}

/// Turns every registered kernel on or off (off: the generic operations
/// run everywhere, e.g. to compare the two).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether registered kernels are used.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// How many joint softmaxes registered kernels have computed in this
/// process (to tell whether a run used one).
pub fn calls() -> usize {
    CALLS.load(Ordering::Relaxed)
}

/// The kernel the executor hands `call` to on `device`, counted as one
/// call: the one registered for `B`, when kernels are enabled, attention
/// dropout is not active (`dropout` with a positive rate while training)
/// and the kernel accepts the call.
pub(crate) fn select<B: Backend>(
    call: &Call,
    device: &B::Device,
    dropout: Option<&burn::nn::Dropout>,
) -> Option<Arc<dyn JointKernel<B>>> {
    if dropout.is_some_and(|d| d.prob > 0.0 && B::ad_enabled(device)) {
        return None;
    }
    let chosen = kernel::<B>().filter(|k| k.accepts(call, device))?;
    CALLS.fetch_add(1, Ordering::Relaxed);
    Some(chosen)
}

/// The kernel registered for `B`, when kernels are enabled.
pub fn kernel<B: Backend>() -> Option<Arc<dyn JointKernel<B>>> {
    if !enabled() {
        return None;
    }
    JOINT.get::<B, dyn JointKernel<B>>()
}

/// Dense layers a backend may run as single fused operations: `x W + b`
/// as one matrix product with the bias added in its epilogue, and layer
/// norm as one kernel forward and one backward, where burn's generic forms
/// are several passes over the activations each (bias broadcast, mean,
/// variance, their backward). The model code calls [`linear`] and
/// [`layer_norm`]; without a registered kernel (or with kernels disabled)
/// they are burn's `Linear::forward` and `LayerNorm::forward`.
pub trait LayerKernel<B: Backend>: Send + Sync {
    /// `x [n, d_in] @ weight [d_in, d_out] (+ bias [d_out])`, differentiable
    /// in all three where `B` is an autodiff backend.
    fn linear(
        &self,
        x: Tensor<B, 2>,
        weight: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 2>;

    /// Layer norm of every row of `x [n, d]` (biased variance, `epsilon`
    /// inside the square root), scaled by `gamma` and shifted by `beta`.
    fn layer_norm(
        &self,
        x: Tensor<B, 2>,
        gamma: Tensor<B, 1>,
        beta: Option<Tensor<B, 1>>,
        epsilon: f64,
    ) -> Tensor<B, 2>;

    /// The residual add `x + y` of a mixed-precision block: `y` (a branch's
    /// output, in the compute dtype) cast to the dtype of `x` (the residual
    /// stream) and added, which a backend with mixed-dtype adds runs as one
    /// pass. The gradient of `y` is the output's gradient cast back.
    fn residual(&self, x: Tensor<B, 2>, y: Tensor<B, 2>) -> Tensor<B, 2> {
        let dtype = x.dtype();
        x + crate::to_dtype(y, dtype)
    }
}

/// Makes `kernel` the dense-layer kernel of backend `B` (replacing any
/// earlier one); [`set_enabled`] turns it off with the attention kernels.
pub fn register_layers<B: Backend>(kernel: Arc<dyn LayerKernel<B>>) {
    LAYERS.insert::<B, _>(kernel);
}

static LAYERS_ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the kernels outside attention (dense layers, the optimizer step)
/// on or off on their own (with the attention kernels on: to measure what
/// each adds).
pub fn set_layers_enabled(on: bool) {
    LAYERS_ENABLED.store(on, Ordering::Relaxed);
}

/// Whether kernels outside attention (dense layers, the optimizer step)
/// are used: kernels are enabled and [`set_layers_enabled`] did not turn
/// these off.
pub fn layers_enabled() -> bool {
    enabled() && LAYERS_ENABLED.load(Ordering::Relaxed)
}

/// The dense-layer kernel registered for `B`, when kernels (and the
/// dense-layer kernels among them) are enabled.
pub fn layer_kernel<B: Backend>() -> Option<Arc<dyn LayerKernel<B>>> {
    if !layers_enabled() {
        return None;
    }
    LAYERS.get::<B, dyn LayerKernel<B>>()
}

/// `layer.forward(x)`, through the backend's [`LayerKernel`] when it has
/// one (the leading dims of `x` are flattened into rows for it).
pub fn linear<B: Backend, const D: usize>(
    layer: &burn::nn::Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let [y] = linears([layer], x);
    y
}

/// `layers[i].forward(x)` for every layer, through the backend's
/// [`LayerKernel`] when it has one: the rows of `x` are flattened once, so
/// that the products share one input (a backend's backward may then add
/// their input gradients inside the products, not in passes of their own:
/// the q, k, v projections of attention).
pub fn linears<B: Backend, const D: usize, const N: usize>(
    layers: [&burn::nn::Linear<B>; N],
    x: Tensor<B, D>,
) -> [Tensor<B, D>; N] {
    let Some(kernel) = layer_kernel::<B>() else {
        return layers.map(|layer| layer.forward(x.clone()));
    };
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let x = x.reshape([rows, dims[D - 1]]);
    layers.map(|layer| {
        let y = kernel.linear(
            x.clone(),
            layer.weight.val(),
            layer.bias.as_ref().map(|b| b.val()),
        );
        let mut out = dims;
        out[D - 1] = y.dims()[1];
        y.reshape(out)
    })
}

/// `norm.forward(x)` for a norm built with `epsilon` (burn keeps a
/// norm's epsilon private, so the caller passes the one it configured),
/// through the backend's [`LayerKernel`] when it has one.
pub fn layer_norm<B: Backend, const D: usize>(
    norm: &burn::nn::LayerNorm<B>,
    x: Tensor<B, D>,
    epsilon: f64,
) -> Tensor<B, D> {
    let Some(kernel) = layer_kernel::<B>() else {
        return norm.forward(x);
    };
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    kernel
        .layer_norm(
            x.reshape([rows, dims[D - 1]]),
            norm.gamma.val(),
            norm.beta.as_ref().map(|b| b.val()),
            epsilon,
        )
        .reshape(dims)
}

/// `x + y` with `y` cast to the dtype of `x` (see [`LayerKernel::residual`]),
/// through the backend's [`LayerKernel`] when it has one.
pub fn residual<B: Backend, const D: usize>(x: Tensor<B, D>, y: Tensor<B, D>) -> Tensor<B, D> {
    let Some(kernel) = layer_kernel::<B>() else {
        let dtype = x.dtype();
        return x + crate::to_dtype(y, dtype);
    };
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let flat = |t: Tensor<B, D>| t.reshape([rows, dims[D - 1]]);
    kernel.residual(flat(x), flat(y)).reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Mode, Plan};
    use crate::{combiner_attention_on, AbstractionKind, LayoutTensors};
    use std::sync::Mutex;

    /// A backend type of its own (i32 indices), so that the kernel this test
    /// registers reaches no other test.
    type B = burn_ndarray::NdArray<f64, i32>;

    /// A kernel that records its calls and computes the joint softmax from
    /// its inputs alone with dense per-term operations, so that the test
    /// checks what the executor hands over (block order, masks, query order).
    struct Reference(Mutex<usize>);

    impl JointKernel<B> for Reference {
        fn accepts(&self, call: &Call, _device: &burn_ndarray::NdArrayDevice) -> bool {
            call.head_dim == 8
        }

        fn joint(&self, terms: &[TermInput<B>], len: usize, scale: f64) -> Tensor<B, 4> {
            *self.0.lock().unwrap() += 1;
            let mut logits = Vec::new();
            let mut values = Vec::new();
            for t in terms {
                let [b, h, gs, g, d] = t.q.dims();
                let w = t.k.dims()[3];
                let mut l = t.q.clone().matmul(t.k.clone().swap_dims(3, 4)) * scale;
                if let Some(hidden) = &t.hidden {
                    l = l.mask_fill(
                        hidden.clone().unsqueeze::<5>().expand([b, h, gs, g, w]),
                        -1e30,
                    );
                }
                // to query order: [b, h, len, w] and per-query values [b, h, len, w, d]
                let l = l.reshape([b, h, gs * g, w]).select(2, t.inverse.clone());
                let slot_group = t.inverse.clone().div_scalar(g as i64);
                let v = t.v.clone().select(2, slot_group);
                logits.push(l);
                values.push(v);
                assert_eq!(t.queries.dims()[0], gs * g);
                assert_eq!(t.k.dims(), [b, h, gs, w, d]);
            }
            let p = burn::tensor::activation::softmax(Tensor::cat(logits, 3), 3);
            let v = Tensor::cat(values, 3);
            let [b, h, _, w] = p.dims();
            let d = v.dims()[4];
            p.reshape([b, h, len, 1, w])
                .matmul(v)
                .reshape([b, h, len, d])
        }
    }

    /// Tests that turn kernels on and off run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn registered_kernel_receives_each_term_and_matches_the_generic_path() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dev = Default::default();
        let kernel = Arc::new(Reference(Mutex::new(0)));
        for name in ["axial-rowmajor", "fixed", "axial-vertical", "strided"] {
            for (len, mode) in [(37, Mode::Lm), (50, Mode::Mlm)] {
                let layout = Plan::from_name(name).unwrap().layout(len, mode).unwrap();
                let tensors = LayoutTensors::<B>::new(&layout, &dev);
                let abs = AbstractionKind::Mean.init::<B>(8, &dev);
                let [q, k, v] = [(); 3].map(|_| {
                    Tensor::<B, 4>::random(
                        [2, 3, len, 8],
                        burn::tensor::Distribution::Normal(0.0, 1.0),
                        &dev,
                    )
                });
                let run = || {
                    combiner_attention_on(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        &layout,
                        &tensors,
                        &abs,
                        None,
                    )
                };
                set_enabled(false);
                let generic = run();
                register::<B>(kernel.clone());
                set_enabled(true);
                let before = *kernel.0.lock().unwrap();
                let fused = run();
                // the joint softmax, and the local expectations of span sets
                // with a softmax inside their blocks
                let calls = *kernel.0.lock().unwrap() - before;
                assert_eq!(calls, 1 + layout.span_sets.len(), "{name} L={len}");
                // f64 unless an earlier test made f32 the device's default
                let tol = if q.dtype() == DType::F64 { 1e-10 } else { 1e-5 };
                let diff = (fused - generic).abs().max().into_scalar();
                assert!(diff < tol, "{name} L={len} {mode:?}: max diff {diff}");
            }
        }
    }

    /// A backend type of its own for the dense-layer kernel test.
    type L = burn_ndarray::NdArray<f32, i32>;

    /// Counts its calls and computes with generic operations on the rows it
    /// is handed.
    struct Rows(Mutex<[usize; 2]>);

    impl LayerKernel<L> for Rows {
        fn linear(
            &self,
            x: Tensor<L, 2>,
            weight: Tensor<L, 2>,
            bias: Option<Tensor<L, 1>>,
        ) -> Tensor<L, 2> {
            self.0.lock().unwrap()[0] += 1;
            let y = x.matmul(weight);
            match bias {
                Some(b) => y + b.unsqueeze(),
                None => y,
            }
        }

        fn layer_norm(
            &self,
            x: Tensor<L, 2>,
            gamma: Tensor<L, 1>,
            beta: Option<Tensor<L, 1>>,
            epsilon: f64,
        ) -> Tensor<L, 2> {
            self.0.lock().unwrap()[1] += 1;
            let (var, mean) = x.clone().var_mean_bias(1);
            let y = (x - mean) / (var + epsilon).sqrt() * gamma.unsqueeze();
            match beta {
                Some(b) => y + b.unsqueeze(),
                None => y,
            }
        }
    }

    #[test]
    fn layer_kernel_gets_the_rows_and_matches_burns_layers() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dev = Default::default();
        let lin = burn::nn::LinearConfig::new(6, 5).init::<L>(&dev);
        let norm = burn::nn::LayerNormConfig::new(6)
            .with_epsilon(1e-3)
            .init::<L>(&dev);
        let x = Tensor::<L, 4>::random([2, 3, 4, 6], burn::tensor::Distribution::Default, &dev);
        let generic = (lin.forward(x.clone()), norm.forward(x.clone()));
        let kernel = Arc::new(Rows(Mutex::new([0; 2])));
        register_layers::<L>(kernel.clone());
        set_enabled(true);
        set_layers_enabled(false);
        let _ = (linear(&lin, x.clone()), layer_norm(&norm, x.clone(), 1e-3));
        assert_eq!(*kernel.0.lock().unwrap(), [0, 0], "layer kernels off");
        set_layers_enabled(true);
        let fused = (linear(&lin, x.clone()), layer_norm(&norm, x, 1e-3));
        assert_eq!(*kernel.0.lock().unwrap(), [1, 1]);
        assert_eq!(fused.0.dims(), [2, 3, 4, 5]);
        for (a, b) in [(generic.0, fused.0), (generic.1, fused.1)] {
            let diff: f32 = (a - b).abs().max().into_scalar();
            assert!(diff < 1e-5, "max diff {diff}");
        }
    }
}
