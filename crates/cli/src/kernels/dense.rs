//! Dense layers of the tch backend as single PyTorch operations.
//!
//! burn's generic `Linear` adds its bias as a separate broadcast pass and
//! sums the weight gradient over a batched product; its generic layer norm
//! is about twenty passes over the activations forward and backward (mean,
//! centring, variance, their broadcasts and gradients). Here `x W + b` is
//! one `addmm` (cuBLAS adds the bias in the product's epilogue) with the
//! three products of its backward, and layer norm is PyTorch's fused
//! kernel forward (`native_layer_norm`, which also returns the row
//! statistics) and backward (`native_layer_norm_backward`, through
//! `aten.rs`).
//!
//! Both run in any dtype on any device (f32 included); they replace the
//! generic forms wherever kernels are enabled (`--no-fused` turns them
//! off).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::libtorch::{LibTorch, TchElement, TchTensor};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use combiner::kernel::{register_layers, LayerKernel};
use tch::{Kind, Tensor as T};

/// Registers the dense-layer kernels for `LibTorch<E>` and its autodiff.
pub fn register<E: TchElement>() {
    register_layers::<LibTorch<E>>(Arc::new(Dense));
    register_layers::<Autodiff<LibTorch<E>>>(Arc::new(Dense));
}

/// `addmm` linear layers and PyTorch's fused layer norm.
struct Dense;

fn raw<E: TchElement, const D: usize>(x: Tensor<LibTorch<E>, D>) -> T {
    x.into_primitive().tensor().tensor
}

fn wrap<E: TchElement, const D: usize>(x: T) -> Tensor<LibTorch<E>, D> {
    Tensor::from_primitive(TensorPrimitive::Float(TchTensor::new(x)))
}

/// `x @ w + b` as one product.
fn affine(x: &T, w: &T, b: Option<&T>) -> T {
    match b {
        Some(b) => b.addmm(x, w),
        None => x.mm(w),
    }
}

impl<E: TchElement> LayerKernel<LibTorch<E>> for Dense {
    fn linear(
        &self,
        x: Tensor<LibTorch<E>, 2>,
        weight: Tensor<LibTorch<E>, 2>,
        bias: Option<Tensor<LibTorch<E>, 1>>,
    ) -> Tensor<LibTorch<E>, 2> {
        let b = bias.map(raw);
        wrap(affine(&raw(x), &raw(weight), b.as_ref()))
    }

    fn layer_norm(
        &self,
        x: Tensor<LibTorch<E>, 2>,
        gamma: Tensor<LibTorch<E>, 1>,
        beta: Option<Tensor<LibTorch<E>, 1>>,
        epsilon: f64,
    ) -> Tensor<LibTorch<E>, 2> {
        let d = x.dims()[1] as i64;
        let (g, b) = (raw(gamma), beta.map(raw));
        wrap(raw(x).layer_norm([d], Some(&g), b.as_ref(), epsilon, true))
    }

    fn residual(
        &self,
        x: Tensor<LibTorch<E>, 2>,
        y: Tensor<LibTorch<E>, 2>,
    ) -> Tensor<LibTorch<E>, 2> {
        wrap(mixed_add(&raw(x), &raw(y)))
    }
}

/// `x + y` in the dtype of `x`: one pass that reads `y` in its own dtype
/// where PyTorch's type promotion gives the dtype of `x` (an f32 stream
/// plus a bf16 or f16 branch), a cast and an add otherwise.
fn mixed_add(x: &T, y: &T) -> T {
    let widens = matches!(
        (x.kind(), y.kind()),
        (Kind::Float, Kind::BFloat16 | Kind::Half)
            | (Kind::Double, Kind::Float | Kind::BFloat16 | Kind::Half)
    );
    if y.kind() == x.kind() || widens {
        x + y
    } else {
        x + y.to_kind(x.kind())
    }
}

/// A tensor the autodiff state holds. burn-tch runs an operation in place
/// on a tensor whose storage no other burn handle shares, so the state
/// holds burn's handle (which counts as a share), not only a libtorch view.
#[derive(Clone, Debug)]
struct Held(TchTensor);

impl Held {
    fn t(&self) -> &T {
        &self.0.tensor
    }
}

/// burn's autodiff handle of a libtorch tensor (a type burn does not
/// export by name).
type AdTensor<E> = <Ad<E> as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

/// What the linear backward needs: the input (burn's autodiff handle, which
/// also names its node: the backward looks up the gradient the input already
/// has) and the weight.
#[derive(Clone, Debug)]
struct LinearState<E: TchElement> {
    x: AdTensor<E>,
    w: Held,
}

#[derive(Debug)]
struct LinearBackward;

/// Whether `prev` (a gradient the input already has) can take `grad @ w^T`
/// inside the product (`addmm_`): a dense, unshared tensor of the product's
/// shape, dtype and device.
fn accumulates(prev: &TchTensor, grad: &T, w: &T) -> bool {
    let t = &prev.tensor;
    prev.can_mut()
        && t.is_contiguous()
        && t.size() == [grad.size()[0], w.size()[0]]
        && t.kind() == grad.kind()
        && t.device() == grad.device()
}

impl<E: TchElement, const N: usize> Backward<LibTorch<E>, N> for LinearBackward {
    type State = LinearState<E>;

    fn backward(self, ops: Ops<LinearState<E>, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch<E>>(&ops.node).tensor;
        let LinearState { x: x_ad, w } = ops.state;
        let (x, w) = (&x_ad.primitive.tensor, w.t());
        let [px, pw, pb] = [0, 1, 2].map(|i| ops.parents.get(i).cloned().flatten());
        if let Some(node) = px {
            // products sharing the input (`combiner::kernel::linears`): the
            // input gradient is summed by the product's epilogue, no add pass
            let g = match grads.remove::<LibTorch<E>>(&x_ad) {
                Some(mut prev) if accumulates(&prev, &grad, w) => {
                    let _ = prev.tensor.addmm_(&grad, &w.tr());
                    prev
                }
                Some(prev) => {
                    grads.register::<LibTorch<E>>(node.id, prev);
                    TchTensor::new(grad.mm(&w.tr()))
                }
                None => TchTensor::new(grad.mm(&w.tr())),
            };
            grads.register::<LibTorch<E>>(node.id, g);
        }
        if let Some(node) = pw {
            let g = x.tr().mm(&grad);
            grads.register::<LibTorch<E>>(node.id, TchTensor::new(g));
        }
        if let Some(node) = pb {
            let g = bias_grad(&grad);
            grads.register::<LibTorch<E>>(node.id, TchTensor::new(g));
        }
    }
}

/// The column sums of `grad: [n, width]`. In bf16 and f16 a product with a
/// row of ones (cuBLAS, f32 accumulation like the reduction's): 60 against
/// 105 us for a `[98304, 512]` bf16 gradient on an H100
/// (`scripts/bench_reductions_torch.py`).
fn bias_grad(grad: &T) -> T {
    match grad.kind() {
        Kind::BFloat16 | Kind::Half => {
            let ones = T::ones([1, grad.size()[0]], (grad.kind(), grad.device()));
            ones.mm(grad).squeeze_dim(0)
        }
        _ => grad.sum_dim_intlist([0i64].as_slice(), false, None::<Kind>),
    }
}

/// What the layer-norm backward needs: the input, the scale and shift, the
/// row statistics of the forward, as burn's handles (which keep burn from
/// changing the inputs in place before the backward).
#[derive(Clone, Debug)]
struct NormState {
    x: Held,
    gamma: Held,
    beta: Option<Held>,
    mean: Held,
    rstd: Held,
}

#[derive(Debug)]
struct NormBackward;

impl<E: TchElement, const N: usize> Backward<LibTorch<E>, N> for NormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<NormState, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch<E>>(&ops.node).tensor;
        let s = ops.state;
        // PyTorch's fused backward: the input gradient in one kernel, the
        // scale and shift gradients in another
        let (dx, dgamma, dbeta) = super::aten::layer_norm_backward(
            &grad,
            s.x.t(),
            s.mean.t(),
            s.rstd.t(),
            s.gamma.t(),
            s.beta.as_ref().map(Held::t),
        );
        let gs = [Some(dx), Some(dgamma), dbeta];
        for (parent, g) in ops.parents.into_iter().zip(gs) {
            if let (Some(node), Some(g)) = (parent, g) {
                grads.register::<LibTorch<E>>(node.id, TchTensor::new(g));
            }
        }
    }
}

/// The residual add's backward: the output's gradient for the stream, the
/// same cast to the branch's dtype for the branch.
#[derive(Debug)]
struct ResidualBackward;

impl<E: TchElement, const N: usize> Backward<LibTorch<E>, N> for ResidualBackward {
    type State = Kind;

    fn backward(self, ops: Ops<Kind, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch<E>>(&ops.node);
        let [px, py] = [0, 1].map(|i| ops.parents.get(i).cloned().flatten());
        if let Some(node) = py {
            let g = if grad.tensor.kind() == ops.state {
                // burn's clone: the two handles count as shares, so neither
                // is changed in place
                grad.clone()
            } else {
                TchTensor::new(grad.tensor.to_kind(ops.state))
            };
            grads.register::<LibTorch<E>>(node.id, g);
        }
        if let Some(node) = px {
            grads.register::<LibTorch<E>>(node.id, grad);
        }
    }
}

type Ad<E> = Autodiff<LibTorch<E>>;

/// Finishes the autodiff node of `op` on the parents' `nodes` (burn does
/// not export the node type, so this is a macro) whose output is `out`.
macro_rules! node {
    ($op:expr, $nodes:expr, $state:expr, $out:expr) => {{
        let out = TchTensor::new($out);
        let prim = match $op
            .prepare::<NoCheckpointing>($nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish($state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Tensor::from_primitive(TensorPrimitive::Float(prim))
    }};
}

impl<E: TchElement> LayerKernel<Ad<E>> for Dense {
    fn linear(
        &self,
        x: Tensor<Ad<E>, 2>,
        weight: Tensor<Ad<E>, 2>,
        bias: Option<Tensor<Ad<E>, 1>>,
    ) -> Tensor<Ad<E>, 2> {
        let x = x.into_primitive().tensor();
        let w = weight.into_primitive().tensor();
        // the state's handle of the input with a reference count of its own:
        // burn counts tensors alive by these, and the state is not one
        let mut x_ad = x.clone();
        x_ad.rc = std::sync::Arc::new(x.node.id);
        let state = LinearState {
            x: x_ad,
            w: Held(w.primitive.clone()),
        };
        match bias {
            Some(b) => {
                let b = b.into_primitive().tensor();
                let out = affine(
                    &x.primitive.tensor,
                    &w.primitive.tensor,
                    Some(&b.primitive.tensor),
                );
                node!(LinearBackward, [x.node, w.node, b.node], state, out)
            }
            None => {
                let out = affine(&x.primitive.tensor, &w.primitive.tensor, None);
                node!(LinearBackward, [x.node, w.node], state, out)
            }
        }
    }

    fn layer_norm(
        &self,
        x: Tensor<Ad<E>, 2>,
        gamma: Tensor<Ad<E>, 1>,
        beta: Option<Tensor<Ad<E>, 1>>,
        epsilon: f64,
    ) -> Tensor<Ad<E>, 2> {
        let d = x.dims()[1] as i64;
        let x = x.into_primitive().tensor();
        let g = gamma.into_primitive().tensor();
        let b = beta.map(|b| b.into_primitive().tensor());
        let (out, mean, rstd) = x.primitive.tensor.native_layer_norm(
            [d],
            Some(&g.primitive.tensor),
            b.as_ref().map(|b| &b.primitive.tensor),
            epsilon,
        );
        let state = NormState {
            x: Held(x.primitive.clone()),
            gamma: Held(g.primitive.clone()),
            beta: b.as_ref().map(|b| Held(b.primitive.clone())),
            mean: Held(TchTensor::new(mean)),
            rstd: Held(TchTensor::new(rstd)),
        };
        match b {
            Some(b) => node!(NormBackward, [x.node, g.node, b.node], state, out),
            None => node!(NormBackward, [x.node, g.node], state, out),
        }
    }

    fn residual(&self, x: Tensor<Ad<E>, 2>, y: Tensor<Ad<E>, 2>) -> Tensor<Ad<E>, 2> {
        let x = x.into_primitive().tensor();
        let y = y.into_primitive().tensor();
        let out = mixed_add(&x.primitive.tensor, &y.primitive.tensor);
        let kind = y.primitive.tensor.kind();
        node!(ResidualBackward, [x.node, y.node], kind, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::libtorch::LibTorchDevice;
    use burn::nn::{LayerNormConfig, LinearConfig};
    use burn::tensor::Distribution;
    use burn::tensor::FloatDType;
    use combiner::kernel::{layer_kernel, layer_norm, linear, residual};

    type B = Ad<f32>;

    fn max_diff<K: Backend, const D: usize>(a: Tensor<K, D>, b: Tensor<K, D>) -> f32 {
        (a - b).abs().max().into_scalar().elem()
    }

    /// The fused layers equal burn's generic ones on libtorch's CPU device,
    /// forward and every gradient, at a shape with leading dims to flatten,
    /// in a block whose branch runs in bf16 (its residual add reads it
    /// without a cast pass where fused).
    #[test]
    fn fused_layers_match_the_generic_ones() {
        let _serial = crate::kernels::SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        register::<f32>();
        assert!(layer_kernel::<B>().is_some());
        let dev = LibTorchDevice::Cpu;
        let lin = LinearConfig::new(24, 24).init::<B>(&dev);
        let mut norm = LayerNormConfig::new(24).init::<B>(&dev);
        // non-trivial scale and shift, so that their gradients are tested
        norm.gamma = burn::module::Param::from_tensor(Tensor::random(
            [24],
            Distribution::Normal(1.0, 0.3),
            &dev,
        ));
        norm.beta = Some(burn::module::Param::from_tensor(Tensor::random(
            [24],
            Distribution::Normal(0.0, 0.3),
            &dev,
        )));
        let x =
            Tensor::<B, 3>::random([3, 7, 24], Distribution::Normal(0.5, 2.0), &dev).require_grad();
        let up = Tensor::<B, 3>::random([3, 7, 24], Distribution::Default, &dev);
        let run = |fused: bool| {
            combiner::kernel::set_enabled(fused);
            // a pre-norm residual block: burn-tch adds the residual in place
            // into `r`'s storage, which the norm's backward still needs
            let r = x.clone() * 2.0;
            let h = layer_norm(&norm, r.clone(), 1e-5);
            let y = residual(r, linear(&lin, h).cast(FloatDType::BF16));
            assert_eq!(y.dtype(), burn::tensor::DType::F32);
            combiner::kernel::set_enabled(true);
            let grads = (y.clone() * up.clone()).sum().backward();
            let g = |p: &Tensor<B, 1>| p.grad(&grads).unwrap();
            (
                y,
                x.grad(&grads).unwrap(),
                lin.weight.val().grad(&grads).unwrap(),
                g(&lin.bias.as_ref().unwrap().val()),
                g(&norm.gamma.val()),
                g(&norm.beta.as_ref().unwrap().val()),
            )
        };
        let (y0, gx0, gw0, gb0, gg0, gbeta0) = run(false);
        let (y1, gx1, gw1, gb1, gg1, gbeta1) = run(true);
        let tol = 1e-4;
        let diffs = [
            ("output", max_diff(y0.inner(), y1.inner())),
            ("x", max_diff(gx0, gx1)),
            ("weight", max_diff(gw0, gw1)),
            ("bias", max_diff(gb0, gb1)),
            ("gamma", max_diff(gg0, gg1)),
            ("beta", max_diff(gbeta0, gbeta1)),
        ];
        for (name, d) in diffs {
            assert!(d < tol, "{name}: fused and generic differ by {d}");
        }
    }

    /// Three products of one input (`linears`, attention's q, k, v
    /// projections, the fused backward summing the input gradient inside
    /// the products) equal burn's three `Linear`s: output and the gradients
    /// of the input (whose node also takes a gradient from elsewhere) and
    /// of every weight.
    #[test]
    fn products_sharing_an_input_match_the_generic_layers() {
        let _serial = crate::kernels::SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        register::<f32>();
        let dev = LibTorchDevice::Cpu;
        let layers: Vec<_> = [16, 24, 8]
            .map(|out| LinearConfig::new(24, out).init::<B>(&dev))
            .into();
        let x =
            Tensor::<B, 3>::random([3, 5, 24], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let run = |fused: bool| {
            combiner::kernel::set_enabled(fused);
            let h = x.clone() * 1.5;
            let ys = combiner::kernel::linears([&layers[0], &layers[1], &layers[2]], h.clone());
            combiner::kernel::set_enabled(true);
            let loss = ys
                .iter()
                .enumerate()
                .map(|(i, y)| (y.clone() * (i as f32 + 1.0)).powf_scalar(2.0).sum())
                .fold(h.sin().sum(), |a, b| a + b);
            let grads = loss.backward();
            let gw: Vec<_> = layers
                .iter()
                .map(|l| l.weight.val().grad(&grads).unwrap())
                .collect();
            (ys, x.grad(&grads).unwrap(), gw)
        };
        let (y0, gx0, gw0) = run(false);
        let (y1, gx1, gw1) = run(true);
        for (a, b) in y0.into_iter().zip(y1) {
            assert!(max_diff(a.inner(), b.inner()) < 1e-4, "outputs differ");
        }
        let d = max_diff(gx0, gx1);
        assert!(d < 1e-3, "input gradients differ by {d}");
        for (i, (a, b)) in gw0.into_iter().zip(gw1).enumerate() {
            let d = max_diff(a, b);
            assert!(d < 1e-3, "weight {i} gradients differ by {d}");
        }
    }

    /// The bias gradient is the gradient's column sums in every dtype (in
    /// bf16 and f16 the product with a row of ones).
    #[test]
    fn bias_gradients_are_column_sums() {
        let g = tch::Tensor::randn([300, 24], (Kind::Float, tch::Device::Cpu));
        let want = g.sum_dim_intlist([0i64].as_slice(), false, None::<Kind>);
        for (kind, tol) in [
            (Kind::Float, 1e-4),
            (Kind::BFloat16, 0.25),
            (Kind::Half, 0.05),
        ] {
            let low = g.to_kind(kind);
            // the sums of the rounded entries, accumulated in f32
            let exact =
                low.to_kind(Kind::Float)
                    .sum_dim_intlist([0i64].as_slice(), false, None::<Kind>);
            let got = bias_grad(&low);
            assert_eq!(got.kind(), kind);
            assert_eq!(got.size(), [24]);
            let diff = (got.to_kind(Kind::Float) - &exact)
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < tol, "{kind:?}: column sums off by {diff}");
            let drift = (exact - &want).abs().max().double_value(&[]);
            assert!(drift < 1.0, "{kind:?}: rounding moved the sums by {drift}");
        }
    }
}
