//! The fused joint-softmax kernel of the tch backend on CUDA.
//!
//! Each term of the joint softmax is a batch of small dense attentions
//! (`groups` blocks of `group_size` queries over `width` items, some pairs
//! masked), which is what PyTorch's memory-efficient attention (the CUTLASS
//! kernel behind `scaled_dot_product_attention` with a mask) computes
//! without writing the logits to memory: one call per term, the mask as an
//! additive bias. The terms' outputs `o_t` and log-sum-exps `lse_t` are
//! merged per query as split attention is (`lse = logsumexp_t lse_t`,
//! `o = sum_t exp(lse_t - lse) o_t`), which is the one softmax over the
//! union of the terms.
//!
//! The backward of term `t` is the kernel's backward called with the merged
//! output `o` and the merged `lse` instead of the term's own: the kernel
//! forms `P = exp(s - lse)`, the term's block of the joint probabilities,
//! and `dS = P (dO v - rowsum(dO o))`, the gradient of the joint softmax
//! restricted to the term's logits; the sum over terms is the exact
//! gradient. Each term is one autodiff node whose output is its share
//! `exp(lse_t - lse) o_t`; the shares are added by ordinary tensor
//! operations.
//!
//! The kernel runs bf16 and f16 tensors on CUDA devices with head dims
//! divisible by 8, at least 16 queries per block, and at most 65,535
//! batch x blocks and batch x heads (CUDA's grid limits); f32, the CPU and other
//! shapes keep the generic operations (exact f32 arithmetic, as the oracle
//! tests check).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::libtorch::{LibTorch, LibTorchDevice, TchElement, TchTensor};
use burn::prelude::*;
use burn::tensor::{bf16, f16, DType, TensorPrimitive};
use combiner::kernel::{register, Call, JointKernel, TermInput};
use tch::{Kind, Tensor as T};

mod adamw;
mod dense;

/// Tests that turn kernels on and off run one at a time.
#[cfg(test)]
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Registers the joint-softmax and dense-layer kernels for every tch
/// backend type the binary runs.
pub fn register_tch() {
    fn both<E: TchElement>() {
        register::<LibTorch<E>>(Arc::new(Efficient));
        register::<Autodiff<LibTorch<E>>>(Arc::new(Efficient));
        dense::register::<E>();
        adamw::register::<E>();
    }
    both::<f32>();
    both::<bf16>();
    both::<f16>();
}

/// PyTorch's memory-efficient attention, one call per term.
struct Efficient;

/// CUDA's limit on the grid's second and third dims, which hold the
/// kernel's heads and batches (here: batch x blocks).
const MAX_GRID: usize = 65_535;

/// Below this many queries per block most of the kernel's 64-query tile
/// idles (Combiner-Logsparse and Sparse-Strided have one query per block:
/// the generic operations are faster there).
const MIN_GROUP: usize = 16;

fn accepts(call: &Call, device: &LibTorchDevice) -> bool {
    matches!(call.dtype, DType::BF16 | DType::F16)
        && matches!(device, LibTorchDevice::Cuda(_))
        && call.head_dim.is_multiple_of(8)
        && call.min_group_size >= MIN_GROUP
        && call.batch * call.max_groups <= MAX_GRID
        && call.batch_heads <= MAX_GRID
}

impl<E: TchElement> JointKernel<LibTorch<E>> for Efficient {
    fn accepts(&self, call: &Call, device: &LibTorchDevice) -> bool {
        accepts(call, device)
    }

    fn joint(
        &self,
        terms: &[TermInput<LibTorch<E>>],
        len: usize,
        scale: f64,
    ) -> Tensor<LibTorch<E>, 4> {
        let mut prepared: Vec<Term> = terms
            .iter()
            .map(|t| {
                Term::new(
                    t,
                    t.q.clone().into_primitive().tensor().tensor,
                    t.k.clone().into_primitive().tensor().tensor,
                    t.v.clone().into_primitive().tensor().tensor,
                    len,
                    scale,
                )
            })
            .collect();
        let merged = merge(&mut prepared);
        Tensor::from_primitive(TensorPrimitive::Float(TchTensor::new(merged.out)))
    }
}

impl<E: TchElement> JointKernel<Autodiff<LibTorch<E>>> for Efficient {
    fn accepts(&self, call: &Call, device: &LibTorchDevice) -> bool {
        accepts(call, device)
    }

    fn joint(
        &self,
        terms: &[TermInput<Autodiff<LibTorch<E>>>],
        len: usize,
        scale: f64,
    ) -> Tensor<Autodiff<LibTorch<E>>, 4> {
        let inputs: Vec<_> = terms
            .iter()
            .map(|t| [&t.q, &t.k, &t.v].map(|x| x.clone().into_primitive().tensor()))
            .collect();
        let mut prepared: Vec<Term> = terms
            .iter()
            .zip(&inputs)
            .map(|(t, [q, k, v])| {
                let mut term = Term::new(
                    t,
                    q.primitive.tensor.shallow_clone(),
                    k.primitive.tensor.shallow_clone(),
                    v.primitive.tensor.shallow_clone(),
                    len,
                    scale,
                );
                term.inputs = vec![
                    q.primitive.clone(),
                    k.primitive.clone(),
                    v.primitive.clone(),
                ];
                term
            })
            .collect();
        let merged = merge(&mut prepared);
        let out = TchTensor::new(merged.out);
        let lse = TchTensor::new(merged.lse);
        let mut total: Option<Tensor<Autodiff<LibTorch<E>>, 4>> = None;
        for ((term, share), [q, k, v]) in prepared.into_iter().zip(merged.shares).zip(inputs) {
            let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
            let share = TchTensor::new(share);
            let node = match TermBackward
                .prepare::<NoCheckpointing>(nodes)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(
                    State {
                        term,
                        out: out.clone(),
                        lse: lse.clone(),
                    },
                    share,
                ),
                OpsKind::UnTracked(prep) => prep.finish(share),
            };
            let share = Tensor::from_primitive(TensorPrimitive::Float(node));
            total = Some(match total {
                Some(acc) => acc + share,
                None => share,
            });
        }
        total.expect("a layout has at least one term")
    }
}

/// One term on the device in the kernel's layout `[B, M, H, K]`: `B = b *
/// groups` batches (each block of each sequence), `M = group_size` queries
/// (or `width` items), `H = h` heads, `K = d`. A sequence's q, k, v as the
/// projections make them, `[b, len, h, d]` viewed as `[b, h, len, d]`,
/// are this layout already wherever a term's blocks are runs of
/// consecutive positions (the local blocks of Combiner-Axial row-major and
/// Combiner-Fixed): no copies in, out or backward. Other terms are copied
/// into it.
struct Term {
    q: T,
    k: T,
    v: T,
    /// `[b * groups, h, group_size, width]` additive mask (0 or `MASKED`),
    /// the `[groups, group_size, width]` block repeated per sequence, rows
    /// 16-aligned as the kernel requires, expanded over heads; `None` when
    /// every pair counts.
    bias: Option<T>,
    queries: T,
    inverse: T,
    identity: bool,
    dims: [i64; 6],
    len: i64,
    scale: f64,
    seed: T,
    offset: T,
    /// burn's handles of the inputs whose storage `q`, `k`, `v` may view:
    /// burn-tch changes a tensor in place only when no other handle shares
    /// its storage, so holding them keeps the inputs as the backward needs.
    inputs: Vec<TchTensor>,
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term").field("dims", &self.dims).finish()
    }
}

impl Clone for Term {
    fn clone(&self) -> Self {
        Term {
            q: self.q.shallow_clone(),
            k: self.k.shallow_clone(),
            v: self.v.shallow_clone(),
            bias: self.bias.as_ref().map(T::shallow_clone),
            queries: self.queries.shallow_clone(),
            inverse: self.inverse.shallow_clone(),
            identity: self.identity,
            dims: self.dims,
            len: self.len,
            scale: self.scale,
            seed: self.seed.shallow_clone(),
            offset: self.offset.shallow_clone(),
            inputs: self.inputs.clone(),
        }
    }
}

/// What the forward pass keeps for the backward: the term and the merged
/// output and log-sum-exp in query order.
#[derive(Clone, Debug)]
struct State {
    term: Term,
    out: TchTensor,
    lse: TchTensor,
}

/// The terms merged into one softmax.
struct Merged {
    /// `[b, h, len, d]`, compute dtype.
    out: T,
    /// `[b, h, len]`, f32.
    lse: T,
    /// Each term's share of `out`, `[b, h, len, d]`, compute dtype.
    shares: Vec<T>,
}

impl Term {
    fn new<B: Backend>(t: &TermInput<B>, q: T, k: T, v: T, len: usize, scale: f64) -> Term
    where
        B::IntTensorPrimitive: Into<TchTensor>,
        B::BoolTensorPrimitive: Into<TchTensor>,
    {
        let [b, h, gs, g, d] = t.q.dims().map(|x| x as i64);
        let w = t.k.dims()[3] as i64;
        // [b, h, groups, m, d] -> [b * groups, m, h, d] (a view when the
        // input is laid out as [b, groups, m, h, d])
        let bmhk =
            |x: T, m: i64| last_contiguous(x.permute([0, 2, 3, 1, 4]).reshape([b * gs, m, h, d]));
        let q = bmhk(q, g);
        let k = bmhk(k, w);
        let v = bmhk(v, w);
        let bias = t.hidden.as_ref().map(|hidden| {
            let wpad = (w + 15) / 16 * 16;
            let hidden: TchTensor = hidden.clone().into_primitive().into();
            let block = T::zeros([gs, g, wpad], (q.kind(), q.device()));
            let _ = block
                .narrow(2, 0, w)
                .masked_fill_(&hidden.tensor, f64::from(combiner::exec::MASKED));
            // one copy per sequence: the kernel's batch stride is uniform
            block
                .unsqueeze(0)
                .expand([b, gs, g, wpad], false)
                .reshape([b * gs, 1, g, wpad])
                .narrow(3, 0, w)
                .expand([b * gs, h, g, w], false)
        });
        let queries: TchTensor = t.queries.clone().into_primitive().into();
        let inverse: TchTensor = t.inverse.clone().into_primitive().into();
        Term {
            q,
            k,
            v,
            bias,
            queries: queries.tensor,
            inverse: inverse.tensor,
            identity: t.identity,
            dims: [b, h, gs, g, w, d],
            len: len as i64,
            scale,
            seed: T::new(),
            offset: T::new(),
            inputs: Vec::new(),
        }
    }

    /// Rows `[b, h, groups * group_size, f..]` of the term's slots in query
    /// order `[b, h, len, f..]`.
    fn to_query(&self, x: &T) -> T {
        if self.identity {
            x.narrow(2, 0, self.len)
        } else {
            x.index_select(2, &self.inverse)
        }
    }

    /// Rows `[b, h, len, f..]` in the term's slot order, padding slots
    /// filled with `pad`.
    fn to_term(&self, x: &T, pad: f64) -> T {
        let [_, _, gs, g, _, _] = self.dims;
        let slots = gs * g;
        let mut shape = x.size();
        if self.identity {
            if slots == self.len {
                return x.shallow_clone();
            }
            shape[2] = slots - self.len;
            T::cat(
                &[
                    x.shallow_clone(),
                    T::full(&shape, pad, (x.kind(), x.device())),
                ],
                2,
            )
        } else {
            shape[2] = 1;
            let ext = T::cat(
                &[
                    x.shallow_clone(),
                    T::full(&shape, pad, (x.kind(), x.device())),
                ],
                2,
            );
            ext.index_select(2, &self.queries)
        }
    }

    /// The kernel's forward: `o: [b, h, len, d]` and `lse: [b, h, len]`
    /// (f32) in query order.
    fn forward(&mut self) -> (T, T) {
        let [b, h, gs, g, _, d] = self.dims;
        let (o, lse, seed, offset) = T::internal_scaled_dot_product_efficient_attention(
            &self.q.transpose(1, 2),
            &self.k.transpose(1, 2),
            &self.v.transpose(1, 2),
            self.bias.as_ref(),
            true,
            0.0,
            false,
            self.scale,
        );
        self.seed = seed;
        self.offset = offset;
        // o: [b * groups, h, m, d] over [b * groups, m, h, d] memory
        let o = o
            .transpose(1, 2)
            .reshape([b, gs * g, h, d])
            .permute([0, 2, 1, 3]);
        let lse = lse
            .narrow(2, 0, g)
            .reshape([b, gs, h, g])
            .permute([0, 2, 1, 3])
            .reshape([b, h, gs * g]);
        (self.to_query(&o), self.to_query(&lse))
    }

    /// Gradients of `q`, `k`, `v` (`[b, h, groups, ., d]`) from the gradient
    /// of the merged output, `out` and `lse` the merged forward results.
    fn backward(&self, grad: &T, out: &T, lse: &T) -> [T; 3] {
        let [b, h, gs, g, w, d] = self.dims;
        // [b, h, groups * m, d] -> [b * groups, m, h, d]
        let bmhk = |x: T| {
            x.reshape([b, h, gs, g, d])
                .permute([0, 2, 3, 1, 4])
                .reshape([b * gs, g, h, d])
                .contiguous()
        };
        let grad_t = bmhk(self.to_term(&grad.to_kind(self.q.kind()), 0.0));
        let out_t = bmhk(self.to_term(out, 0.0));
        let m_pad = (g + 31) / 32 * 32;
        // padding slots: lse = +inf, so that their probabilities are 0
        let lse_t = self
            .to_term(lse, f64::INFINITY)
            .reshape([b, h, gs, g])
            .permute([0, 2, 1, 3])
            .reshape([b * gs, h, g]);
        let lse_t = lse_t.constant_pad_nd([0, m_pad - g]).contiguous();
        let (gq, gk, gv, _) = T::internal_efficient_attention_backward(
            &grad_t,
            &self.q,
            &self.k,
            &self.v,
            self.bias.as_ref(),
            &out_t,
            None::<&T>,
            None::<&T>,
            g,
            w,
            &lse_t,
            0.0,
            &self.seed,
            &self.offset,
            0,
            false,
            self.scale,
            None,
            None,
            false,
        );
        // [b * groups, m, h, d] -> [b, h, groups, m, d]
        [(gq, g), (gk, w), (gv, w)]
            .map(|(x, m)| x.reshape([b, gs, m, h, d]).permute([0, 3, 1, 2, 4]))
    }
}

fn last_contiguous(x: T) -> T {
    if x.stride().last() == Some(&1) {
        x
    } else {
        x.contiguous()
    }
}

/// Runs every term and merges them into one softmax.
fn merge(terms: &mut [Term]) -> Merged {
    let mut results: Vec<(T, T)> = terms.iter_mut().map(Term::forward).collect();
    if results.len() == 1 {
        let (o, lse) = results.pop().expect("one term");
        return Merged {
            out: o.shallow_clone(),
            lse,
            shares: vec![o],
        };
    }
    let kind = results[0].0.kind();
    let lses: Vec<T> = results.iter().map(|(_, l)| l.shallow_clone()).collect();
    let lse = T::stack(&lses, 0).logsumexp([0], false);
    let mut out: Option<T> = None;
    let mut shares = Vec::with_capacity(results.len());
    for (o, l) in results {
        let share = o.to_kind(Kind::Float) * (l - &lse).exp().unsqueeze(-1);
        shares.push(share.to_kind(kind));
        out = Some(match out {
            Some(acc) => acc + share,
            None => share,
        });
    }
    Merged {
        out: out.expect("a layout has at least one term").to_kind(kind),
        lse,
        shares,
    }
}

#[derive(Debug)]
struct TermBackward;

impl<E: TchElement> Backward<LibTorch<E>, 3> for TermBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch<E>>(&ops.node);
        let State { term, out, lse } = ops.state;
        let [gq, gk, gv] = term.backward(&grad.tensor, &out.tensor, &lse.tensor);
        for (parent, g) in ops.parents.into_iter().zip([gq, gk, gv]) {
            if let Some(node) = parent {
                grads.register::<LibTorch<E>>(node.id, TchTensor::new(g));
            }
        }
    }
}
