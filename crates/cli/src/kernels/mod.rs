//! The fused joint-softmax kernel of the tch backend on CUDA.
//!
//! Each term of the joint softmax is a batch of small dense attentions
//! (`groups` blocks of `group_size` queries over `width` items, some pairs
//! masked). Terms run PyTorch's memory-efficient attention (the CUTLASS
//! kernel behind `scaled_dot_product_attention`): without a mask, with the
//! causal mask of square blocks as the kernel's own mask type, and with any
//! other mask as an additive bias. Terms of at least [`FLASH_MIN_GROUP`]
//! queries per block without a mask or with the causal one run
//! FlashAttention-2 (PyTorch's `_scaled_dot_product_flash_attention`,
//! through `aten.rs`) instead: its backward works in 128-query tiles and
//! accumulates `dq` in f32 through two extra kernels, which costs more than
//! it saves on the small blocks of the paper's grids. Below that, terms
//! without a mask or with the causal one from [`CUDNN_MIN_GROUP`] queries
//! per block run cuDNN's fused attention forward
//! (`_scaled_dot_product_cudnn_attention`) and, from
//! [`CUDNN_MIN_BACKWARD_GROUP`], its backward (below, memory-efficient
//! attention's backward: a backward needs only q, k, v, the output, its
//! gradient and the log-sum-exp, whichever kernel ran the forward), where
//! each measured fastest; a cuDNN that refuses a term turns it off for the
//! run (with a warning) and memory-efficient attention takes over. No
//! kernel writes the logits to memory. The terms' outputs
//! `o_t` and log-sum-exps `lse_t` are merged per query as split attention
//! is (`lse = logsumexp_t lse_t`, `o = sum_t exp(lse_t - lse) o_t`), which
//! is the one softmax over the union of the terms.
//!
//! The backward of term `t` is the kernel's backward called with the merged
//! output `o` and the merged `lse` instead of the term's own: the kernel
//! forms `P = exp(s - lse)`, the term's block of the joint probabilities,
//! and `dS = P (dO v - rowsum(dO o))`, the gradient of the joint softmax
//! restricted to the term's logits; the sum over terms is the exact
//! gradient. The whole joint softmax is one autodiff node.
//!
//! No copies in or out where the layout allows: the projections lay q, k,
//! v out as `[b, len, h, d]`, and a term whose blocks are runs of
//! consecutive positions (the kernel's batch is (sequence, block)) or
//! columns of a grid read row by row (the kernel's heads are (column,
//! head), its sequence the grid's rows) is a strided view of them; the
//! kernel's output in the same geometry is then the output in query order.
//! Other terms are copied into the first geometry and gathered back.
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
use tch::Tensor as T;

mod adamw;
mod aten;
mod dense;

/// Tests that turn kernels on and off run one at a time.
#[cfg(test)]
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Registers the joint-softmax, dense-layer and AdamW kernels for every tch
/// backend type the binary runs, and lets the training loop read libtorch
/// tensors on threads of their own (`combiner_train::allow_async_reads`).
pub fn register_tch() {
    fn both<E: TchElement>() {
        register::<LibTorch<E>>(Arc::new(Fused));
        register::<Autodiff<LibTorch<E>>>(Arc::new(Fused));
        dense::register::<E>();
        adamw::register::<E>();
        combiner_train::allow_async_reads::<LibTorch<E>>();
    }
    both::<f32>();
    both::<bf16>();
    both::<f16>();
}

/// FlashAttention-2 or memory-efficient attention, one call per term.
struct Fused;

/// CUDA's limit on the grid's second and third dims, which hold the
/// kernel's heads and batches (here: batch x blocks).
const MAX_GRID: usize = 65_535;

/// Below this many queries per block most of the kernel's 64-query tile
/// idles (Combiner-Logsparse and Sparse-Strided have one query per block:
/// the generic operations are faster there).
const MIN_GROUP: usize = 16;

/// The largest head dim FlashAttention-2 runs.
const MAX_FLASH_HEAD_DIM: i64 = 256;

/// Blocks of fewer queries run memory-efficient attention even where
/// FlashAttention-2 could: forward and backward of the row-major grid's
/// row terms on one H100 (`scripts/bench_blocks_torch.py`, bf16, 8 heads
/// of 64) took 0.94 against 1.35 ms with 96-query blocks (CIFAR-10,
/// batch 32) and 1.17 against 1.47 ms with 192 (ImageNet-64, batch 8).
const FLASH_MIN_GROUP: i64 = 256;

/// Blocks of at least this many queries (and fewer than
/// [`FLASH_MIN_GROUP`]) without a mask or with the causal one run cuDNN's
/// attention forward. On one H100 (`scripts/bench_blocks_torch.py`, bf16,
/// 8 heads of 64; forward, then forward and backward, ms) the row-major
/// grid's terms took, with cuDNN and with memory-efficient attention:
///
/// | term | CIFAR-10 (96-query blocks, batch 32) | ImageNet-64 (192, batch 8) |
/// |---|---|---|
/// | row (causal) | 0.23, 1.04; 0.32, 0.94 | 0.26, 1.07; 0.33, 1.17 |
/// | local expectations (no mask) | 0.19, 1.06; 0.36, 1.13 | 0.29, 1.20; 0.39, 1.49 |
///
/// cuDNN's forward is the faster at both sizes; smaller blocks were not
/// measured.
const CUDNN_MIN_GROUP: i64 = 96;

/// cuDNN's attention backward runs blocks of at least this many queries:
/// from the table of [`CUDNN_MIN_GROUP`], its backward is the slower with
/// 96-query blocks (0.81 against 0.62 ms, 0.87 against 0.77) and the faster
/// or even with 192 (0.81 against 0.84, 0.91 against 1.10); between the two
/// it was not measured.
const CUDNN_MIN_BACKWARD_GROUP: i64 = 128;

/// Cleared for the rest of the run when cuDNN refuses a term.
static CUDNN_OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether cuDNN's attention runs the forward (`backward` false) or the
/// backward of a term without a mask or with the causal one, `g` queries
/// per block, head dim `d`.
fn cudnn_runs(backward: bool, g: i64, d: i64) -> bool {
    let min = if backward {
        CUDNN_MIN_BACKWARD_GROUP
    } else {
        CUDNN_MIN_GROUP
    };
    (min..FLASH_MIN_GROUP).contains(&g)
        && d <= 128
        && CUDNN_OK.load(std::sync::atomic::Ordering::Relaxed)
}

/// Turns cuDNN's attention off for the rest of the run after it refused a
/// term (`e`: PyTorch's message), saying so once.
fn cudnn_refused(e: &str) {
    if CUDNN_OK.swap(false, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("warning: {e}; memory-efficient attention runs its terms from now on");
    }
}

/// Tests run the kernel's layouts, merge and backward node on libtorch's
/// CPU device, with the attention of each term in plain operations
/// ([`math`]) where CUDA runs FlashAttention or memory-efficient attention.
#[cfg(test)]
static CPU_MATH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn accepts(call: &Call, device: &LibTorchDevice) -> bool {
    #[cfg(test)]
    if CPU_MATH.load(std::sync::atomic::Ordering::Relaxed) && *device == LibTorchDevice::Cpu {
        return call.min_group_size >= MIN_GROUP && call.head_dim.is_multiple_of(8);
    }
    matches!(call.dtype, DType::BF16 | DType::F16)
        && matches!(device, LibTorchDevice::Cuda(_))
        && call.head_dim.is_multiple_of(8)
        && call.min_group_size >= MIN_GROUP
        && call.batch * call.max_groups <= MAX_GRID
        && call.batch_heads <= MAX_GRID
}

fn inner<E: TchElement, const D: usize>(x: &Tensor<LibTorch<E>, D>) -> T {
    x.clone().into_primitive().tensor().tensor
}

impl<E: TchElement> JointKernel<LibTorch<E>> for Fused {
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
                    [inner(&t.q), inner(&t.k), inner(&t.v)],
                    t.base.as_ref().map(inner),
                    len,
                    scale,
                )
            })
            .collect();
        let merged = merge(&mut prepared);
        Tensor::from_primitive(TensorPrimitive::Float(TchTensor::new(merged.out)))
    }
}

/// Finishes the joint node on the parents' `nodes` (burn does not export
/// the node type, so this is a macro; the count is a const generic).
macro_rules! joint_node {
    ($n:literal, $nodes:expr, $state:expr, $out:expr) => {{
        let nodes: [_; $n] = std::array::from_fn(|i| $nodes[i].clone());
        match JointBackward
            .prepare::<NoCheckpointing>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish($state, $out),
            OpsKind::UnTracked(prep) => prep.finish($out),
        }
    }};
}

impl<E: TchElement> JointKernel<Autodiff<LibTorch<E>>> for Fused {
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
            .map(|(t, qkv)| {
                let base = t
                    .base
                    .as_ref()
                    .map(|x| x.clone().into_primitive().tensor().primitive.tensor);
                let mut term = Term::new(
                    t,
                    qkv.clone().map(|x| x.primitive.tensor.shallow_clone()),
                    base,
                    len,
                    scale,
                );
                term.inputs = qkv.iter().map(|x| x.primitive.clone()).collect();
                term
            })
            .collect();
        let merged = merge(&mut prepared);
        let out = TchTensor::new(merged.out);
        let state = Joint {
            terms: prepared,
            out: out.clone(),
            lse: TchTensor::new(merged.lse),
        };
        let nodes: Vec<_> = inputs
            .iter()
            .flat_map(|qkv| qkv.iter().map(|x| x.node.clone()))
            .collect();
        let out = match nodes.len() {
            3 => joint_node!(3, nodes, state, out),
            6 => joint_node!(6, nodes, state, out),
            9 => joint_node!(9, nodes, state, out),
            12 => joint_node!(12, nodes, state, out),
            15 => joint_node!(15, nodes, state, out),
            18 => joint_node!(18, nodes, state, out),
            n => panic!("the joint kernel takes 1 to 6 terms, not {}", n / 3),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

/// How a term's blocks map onto the kernel's `[B, M, H, K]` layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Geometry {
    /// `B = b * groups`, `M` = the block, `H = h`: blocks of consecutive
    /// positions read in place.
    Blocks,
    /// `B = b`, `M` = the block, `H = groups * h`: the columns of a grid
    /// read in place (a column's position stride is the row length, its
    /// neighbour column is one position on, right after the `h` heads).
    Heads,
}

impl Geometry {
    /// Whether `x: [b, h, groups, m, d]` is this geometry without a copy.
    fn fits(self, x: &T) -> bool {
        let (n, s) = (x.size(), x.stride());
        match self {
            Geometry::Blocks => n[0] == 1 || s[0] == n[2] * s[2],
            Geometry::Heads => n[2] == 1 || s[2] == n[1] * s[1],
        }
    }

    /// `x: [b, h, groups, m, d]` in the kernel's `[B, m, H, d]` (a view
    /// where it fits, a copy otherwise).
    fn of(self, x: &T) -> T {
        let [b, h, gs, m, d] = dims5(x);
        let y = match self {
            Geometry::Blocks => x.permute([0, 2, 3, 1, 4]).reshape([b * gs, m, h, d]),
            Geometry::Heads => x.permute([0, 3, 2, 1, 4]).reshape([b, m, gs * h, d]),
        };
        if y.stride().last() == Some(&1) {
            y
        } else {
            y.contiguous()
        }
    }

    /// The kernel's `[B, m, H, d]` back as `[b, h, groups, m, d]`.
    fn back(self, x: &T, [b, h, gs, m, d]: [i64; 5]) -> T {
        match self {
            Geometry::Blocks => x.reshape([b, gs, m, h, d]).permute([0, 3, 1, 2, 4]),
            Geometry::Heads => x.reshape([b, m, gs, h, d]).permute([0, 3, 2, 1, 4]),
        }
    }
}

fn dims5(x: &T) -> [i64; 5] {
    let n = x.size();
    [n[0], n[1], n[2], n[3], n[4]]
}

/// Where the kernel's output rows go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// The kernel's `[B, M, H, d]` output, contiguous, is the output
    /// `[b, len, h, d]` in query order (the queries were read in place).
    InPlace,
    /// Slot order (geometry `Blocks`), gathered into query order.
    Indexed,
}

/// Which kernel runs the term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attn {
    /// FlashAttention-2, without a mask or with the causal one.
    Flash { causal: bool },
    /// cuDNN's fused attention, without a mask or with the causal one.
    Cudnn { causal: bool },
    /// Memory-efficient attention: without a mask, with the causal one
    /// (the kernel's mask type) or, when `causal` is false and the term
    /// has a mask, with the mask as a bias.
    Efficient { causal: bool },
}

impl Attn {
    /// Whether the kernel applies the causal mask of square blocks itself.
    fn causal(self) -> bool {
        match self {
            Attn::Flash { causal } | Attn::Cudnn { causal } | Attn::Efficient { causal } => causal,
        }
    }
}

/// One term on the device in the kernel's layout `[B, M, H, K]` (see
/// [`Geometry`]), `M` the queries of a block or its items.
struct Term {
    q: T,
    k: T,
    v: T,
    geometry: Geometry,
    order: Order,
    attn: Attn,
    /// The kernel of the backward: the forward's, or memory-efficient
    /// attention's after a cuDNN forward.
    backward: Attn,
    /// `[B, H, group_size, width]` additive mask (0 or `MASKED`), the
    /// `[groups, group_size, width]` block laid out per the geometry, rows
    /// 16-aligned as the kernel requires; `None` when no mask is read.
    bias: Option<T>,
    queries: T,
    inverse: T,
    identity: bool,
    dims: [i64; 6],
    len: i64,
    scale: f64,
    /// What the memory-efficient backward needs (seed, offset).
    seed: T,
    offset: T,
    /// What the FlashAttention or cuDNN backward needs.
    saved: Option<aten::Saved>,
    /// burn's handles of the inputs whose storage `q`, `k`, `v` may view:
    /// burn-tch changes a tensor in place only when no other handle shares
    /// its storage, so holding them keeps the inputs as the backward needs.
    inputs: Vec<TchTensor>,
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term")
            .field("dims", &self.dims)
            .field("geometry", &self.geometry)
            .field("order", &self.order)
            .field("attn", &self.attn)
            .field("backward", &self.backward)
            .finish()
    }
}

impl Clone for Term {
    fn clone(&self) -> Self {
        Term {
            q: self.q.shallow_clone(),
            k: self.k.shallow_clone(),
            v: self.v.shallow_clone(),
            geometry: self.geometry,
            order: self.order,
            attn: self.attn,
            backward: self.backward,
            bias: self.bias.as_ref().map(T::shallow_clone),
            queries: self.queries.shallow_clone(),
            inverse: self.inverse.shallow_clone(),
            identity: self.identity,
            dims: self.dims,
            len: self.len,
            scale: self.scale,
            seed: self.seed.shallow_clone(),
            offset: self.offset.shallow_clone(),
            saved: self.saved.clone(),
            inputs: self.inputs.clone(),
        }
    }
}

/// What the joint node keeps for the backward: the terms and the merged
/// output and log-sum-exp in query order.
#[derive(Clone, Debug)]
struct Joint {
    terms: Vec<Term>,
    out: TchTensor,
    lse: TchTensor,
}

/// The terms merged into one softmax.
struct Merged {
    /// `[b, h, len, d]` over `[b, len, h, d]` memory, compute dtype.
    out: T,
    /// `[b, h, len]`, f32.
    lse: T,
}

/// Whether `x` (`[B, M, H, d]`) covers `base` (`[b, h, len, d]` over
/// `[b, len, h, d]` memory) exactly, element for element in memory order.
fn covers(x: &T, base: &T) -> bool {
    x.is_contiguous()
        && base.permute([0, 2, 1, 3]).is_contiguous()
        && x.data_ptr() == base.data_ptr()
        && x.numel() == base.numel()
        && x.kind() == base.kind()
}

impl Term {
    fn new<B: Backend>(
        t: &TermInput<B>,
        [q, k, v]: [T; 3],
        base: Option<T>,
        len: usize,
        scale: f64,
    ) -> Term
    where
        B::IntTensorPrimitive: Into<TchTensor>,
        B::BoolTensorPrimitive: Into<TchTensor>,
    {
        let [b, h, gs, g, d] = dims5(&q);
        let w = k.size()[3];
        let slots_are_queries = t.identity && gs * g == len as i64;
        let mut geometry = [Geometry::Blocks, Geometry::Heads]
            .into_iter()
            .find(|x| x.fits(&q))
            .unwrap_or(Geometry::Blocks);
        let mut qg = geometry.of(&q);
        let in_place = match &base {
            Some(base) if covers(&qg, base) => true,
            _ => geometry == Geometry::Blocks && slots_are_queries,
        };
        if !in_place && geometry == Geometry::Heads {
            geometry = Geometry::Blocks;
            qg = geometry.of(&q);
        }
        let order = if in_place {
            Order::InPlace
        } else {
            Order::Indexed
        };
        // no mask, or the causal one the kernels apply without reading it
        let plain = t.hidden.is_none() || (t.causal && g == w);
        let causal = plain && t.hidden.is_some();
        let (attn, backward) = if plain && d <= MAX_FLASH_HEAD_DIM && g >= FLASH_MIN_GROUP {
            (Attn::Flash { causal }, Attn::Flash { causal })
        } else if plain && cudnn_runs(false, g, d) {
            let backward = if cudnn_runs(true, g, d) {
                Attn::Cudnn { causal }
            } else {
                Attn::Efficient { causal }
            };
            (Attn::Cudnn { causal }, backward)
        } else {
            (Attn::Efficient { causal }, Attn::Efficient { causal })
        };
        let bias = match (attn, &t.hidden) {
            (Attn::Efficient { causal: false }, Some(hidden)) => {
                let wpad = (w + 15) / 16 * 16;
                let hidden: TchTensor = hidden.clone().into_primitive().into();
                let block = T::zeros([gs, g, wpad], (q.kind(), q.device()));
                let _ = block
                    .narrow(2, 0, w)
                    .masked_fill_(&hidden.tensor, f64::from(combiner::exec::MASKED));
                Some(match geometry {
                    // one copy per sequence: the kernel's batch stride is uniform
                    Geometry::Blocks => block
                        .unsqueeze(0)
                        .expand([b, gs, g, wpad], false)
                        .reshape([b * gs, 1, g, wpad])
                        .narrow(3, 0, w)
                        .expand([b * gs, h, g, w], false),
                    // one copy per head: the kernel's head stride is uniform
                    Geometry::Heads => block
                        .unsqueeze(1)
                        .expand([gs, h, g, wpad], false)
                        .reshape([1, gs * h, g, wpad])
                        .narrow(3, 0, w)
                        .expand([b, gs * h, g, w], false),
                })
            }
            _ => None,
        };
        let queries: TchTensor = t.queries.clone().into_primitive().into();
        let inverse: TchTensor = t.inverse.clone().into_primitive().into();
        Term {
            q: qg,
            k: geometry.of(&k),
            v: geometry.of(&v),
            geometry,
            order,
            attn,
            backward,
            bias,
            queries: queries.tensor,
            inverse: inverse.tensor,
            identity: t.identity,
            dims: [b, h, gs, g, w, d],
            len: len as i64,
            scale,
            // what memory-efficient attention's backward reads without
            // dropout, when another kernel ran the forward
            seed: T::zeros([], (tch::Kind::Int64, tch::Device::Cpu)),
            offset: T::zeros([], (tch::Kind::Int64, tch::Device::Cpu)),
            saved: None,
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

    /// `[b, h, len, f]` in query order as the kernel's `[B, M, H, f]`
    /// (in-place terms; `x_blhf` is `x` as contiguous `[b, len, h, f]`).
    fn in_place(&self, x_blhf: &T) -> T {
        let [b, h, gs, g, _, _] = self.dims;
        let f = x_blhf.size()[3];
        match self.geometry {
            Geometry::Blocks => x_blhf.reshape([b * gs, g, h, f]),
            Geometry::Heads => x_blhf.reshape([b, g, gs * h, f]),
        }
    }

    /// The kernel's forward: `o: [b, h, len, d]` and `lse: [b, h, len]`
    /// (f32) in query order.
    fn forward(&mut self) -> (T, T) {
        let [b, h, gs, g, _, d] = self.dims;
        let (o, lse) = match self.attn {
            _ if self.q.device() == tch::Device::Cpu => math::forward(self),
            Attn::Flash { causal } => {
                let (o, lse, saved) = aten::flash_forward(
                    &self.q.transpose(1, 2),
                    &self.k.transpose(1, 2),
                    &self.v.transpose(1, 2),
                    causal,
                    self.scale,
                );
                self.saved = Some(saved);
                (o, lse)
            }
            Attn::Cudnn { causal } => match aten::cudnn_forward(
                &self.q.transpose(1, 2),
                &self.k.transpose(1, 2),
                &self.v.transpose(1, 2),
                causal,
                self.scale,
            ) {
                Ok((o, lse, saved)) => {
                    self.saved = Some(saved);
                    (o, lse)
                }
                Err(e) => {
                    cudnn_refused(&e);
                    self.attn = Attn::Efficient { causal };
                    self.backward = Attn::Efficient { causal };
                    return self.forward();
                }
            },
            Attn::Efficient { causal } => {
                let (o, lse, seed, offset) = T::internal_scaled_dot_product_efficient_attention(
                    &self.q.transpose(1, 2),
                    &self.k.transpose(1, 2),
                    &self.v.transpose(1, 2),
                    self.bias.as_ref(),
                    true,
                    0.0,
                    causal,
                    self.scale,
                );
                self.seed = seed;
                self.offset = offset;
                (o, lse.narrow(2, 0, g))
            }
        };
        // o: [B, H, M, d] over [B, M, H, d] memory; lse: [B, H, M]
        let o = o.transpose(1, 2);
        match self.order {
            Order::InPlace => {
                let o = if o.is_contiguous() { o } else { o.contiguous() };
                let o = o.reshape([b, self.len, h, d]).permute([0, 2, 1, 3]);
                let lse = lse
                    .permute([0, 2, 1])
                    .reshape([b, self.len, h])
                    .permute([0, 2, 1]);
                (o, lse)
            }
            Order::Indexed => {
                let o = o.reshape([b, gs * g, h, d]).permute([0, 2, 1, 3]);
                let lse = lse
                    .reshape([b, gs, h, g])
                    .permute([0, 2, 1, 3])
                    .reshape([b, h, gs * g]);
                (self.to_query(&o), self.to_query(&lse))
            }
        }
    }

    /// Gradients of `q`, `k`, `v` (`[b, h, groups, ., d]`) from the gradient
    /// of the merged output, `out` and `lse` the merged forward results
    /// (`grad_blhd`, `out_blhd`: the first two as contiguous `[b, len, h,
    /// d]`, made once for every in-place term).
    fn backward(&self, grad: &T, out: &T, lse: &T, blhd: &mut Option<(T, T)>) -> [T; 3] {
        let [b, h, gs, g, w, d] = self.dims;
        let (grad_t, out_t, lse_t) = match self.order {
            Order::InPlace => {
                let (grad_blhd, out_blhd) = blhd.get_or_insert_with(|| {
                    let c = |x: &T| x.permute([0, 2, 1, 3]).contiguous();
                    (c(&grad.to_kind(self.q.kind())), c(out))
                });
                let lse_t = lse.permute([0, 2, 1]).contiguous();
                let lse_t = self.in_place(&lse_t.unsqueeze(-1)).squeeze_dim(-1);
                (
                    self.in_place(grad_blhd),
                    self.in_place(out_blhd),
                    lse_t.permute([0, 2, 1]),
                )
            }
            Order::Indexed => {
                // [b, h, groups * m, d] -> [b * groups, m, h, d]
                let bmhk = |x: T| {
                    x.reshape([b, h, gs, g, d])
                        .permute([0, 2, 3, 1, 4])
                        .reshape([b * gs, g, h, d])
                        .contiguous()
                };
                let grad_t = bmhk(self.to_term(&grad.to_kind(self.q.kind()), 0.0));
                let out_t = bmhk(self.to_term(out, 0.0));
                // padding slots: lse = +inf, so that their probabilities are 0
                let lse_t = self
                    .to_term(lse, f64::INFINITY)
                    .reshape([b, h, gs, g])
                    .permute([0, 2, 1, 3])
                    .reshape([b * gs, h, g]);
                (grad_t, out_t, lse_t)
            }
        };
        let (gq, gk, gv) = match self.backward {
            _ if self.q.device() == tch::Device::Cpu => {
                math::backward(self, &grad_t, &out_t, &lse_t)
            }
            Attn::Flash { causal } => {
                let saved = self.saved.as_ref().expect("the forward ran");
                let (gq, gk, gv) = aten::flash_backward(
                    &grad_t.transpose(1, 2),
                    &self.q.transpose(1, 2),
                    &self.k.transpose(1, 2),
                    &self.v.transpose(1, 2),
                    &out_t.transpose(1, 2),
                    &lse_t.contiguous(),
                    saved,
                    causal,
                    self.scale,
                );
                (gq.transpose(1, 2), gk.transpose(1, 2), gv.transpose(1, 2))
            }
            Attn::Cudnn { causal } => {
                let saved = self.saved.as_ref().expect("the forward ran");
                match aten::cudnn_backward(
                    &grad_t.transpose(1, 2),
                    &self.q.transpose(1, 2),
                    &self.k.transpose(1, 2),
                    &self.v.transpose(1, 2),
                    &out_t.transpose(1, 2),
                    &lse_t,
                    saved,
                    causal,
                    self.scale,
                ) {
                    Ok((gq, gk, gv)) => {
                        (gq.transpose(1, 2), gk.transpose(1, 2), gv.transpose(1, 2))
                    }
                    Err(e) => {
                        cudnn_refused(&e);
                        self.efficient_backward(&grad_t, &out_t, &lse_t, causal)
                    }
                }
            }
            Attn::Efficient { causal } => self.efficient_backward(&grad_t, &out_t, &lse_t, causal),
        };
        [(gq, g), (gk, w), (gv, w)].map(|(x, m)| self.geometry.back(&x, [b, h, gs, m, d]))
    }

    /// Memory-efficient attention's backward in the kernel's layout (see
    /// [`Term::backward`]), `lse_t: [B, H, M]`.
    fn efficient_backward(&self, grad_t: &T, out_t: &T, lse_t: &T, causal: bool) -> (T, T, T) {
        let [_, _, _, g, w, _] = self.dims;
        let m_pad = (g + 31) / 32 * 32;
        let lse_t = lse_t.constant_pad_nd([0, m_pad - g]).contiguous();
        let (gq, gk, gv, _) = T::internal_efficient_attention_backward(
            grad_t,
            &self.q,
            &self.k,
            &self.v,
            self.bias.as_ref(),
            out_t,
            None::<&T>,
            None::<&T>,
            g,
            w,
            &lse_t,
            0.0,
            &self.seed,
            &self.offset,
            // the mask type: 1 = causal from the top left
            i64::from(causal),
            false,
            self.scale,
            None,
            None,
            false,
        );
        (gq, gk, gv)
    }
}

/// Runs every term and merges them into one softmax.
fn merge(terms: &mut [Term]) -> Merged {
    let mut results: Vec<(T, T)> = terms.iter_mut().map(Term::forward).collect();
    if results.len() == 1 {
        let (out, lse) = results.pop().expect("one term");
        return Merged { out, lse };
    }
    if let Some(merged) = merge_in_place(&results) {
        return merged;
    }
    // one pass per term (a stacked `logsumexp` is about ten small kernels)
    let lse = results[1..]
        .iter()
        .fold(results[0].1.shallow_clone(), |acc, (_, l)| acc.logaddexp(l));
    // [b, h, len, d] over [b, len, h, d] memory, as the projections are
    let [b, h, len, d] = {
        let n = results[0].0.size();
        [n[0], n[1], n[2], n[3]]
    };
    let first = &results[0].0;
    let mut out = T::empty([b, len, h, d], (first.kind(), first.device())).permute([0, 2, 1, 3]);
    for (i, (o, l)) in results.iter().enumerate() {
        // exp(lse_t - lse) in f32; the products are computed in f32 and
        // rounded once into `out`
        let weight = (l - &lse).exp().unsqueeze(-1);
        if i == 0 {
            let _ = o.mul_out(&out, &weight);
        } else {
            let _ = out.addcmul_(o, &weight);
        }
    }
    Merged { out, lse }
}

/// [`merge`] of two terms whose outputs lie in the projections' `[b, len,
/// h, d]` memory order (terms read in place), in one pass over `[b * len *
/// h, d]` rows: `o = o_2 + w_1 (o_1 - o_2)` (`w_2 = 1 - w_1`), PyTorch's
/// `lerp` with `w_1` rounded to the compute dtype (the kernel reads one
/// dtype; it computes in f32): 0.18 ms on an H100 at CIFAR-10's shape
/// where the two mixed-dtype passes of [`merge`] take 0.55 ms
/// (`scripts/bench_reductions_torch.py`). `None` otherwise.
fn merge_in_place(results: &[(T, T)]) -> Option<Merged> {
    let [(o1, l1), (o2, l2)] = results else {
        return None;
    };
    let (o1, o2) = (o1.permute([0, 2, 1, 3]), o2.permute([0, 2, 1, 3]));
    if !(o1.is_contiguous() && o2.is_contiguous()) {
        return None;
    }
    let [b, len, h, d] = {
        let n = o1.size();
        [n[0], n[1], n[2], n[3]]
    };
    let rows = b * len * h;
    // [b, len, h], f32
    let [l1, l2] = [l1, l2].map(|l| l.permute([0, 2, 1]).contiguous());
    let lse = l1.logaddexp(&l2);
    let w1 = (&l1 - &lse).exp().to_kind(o1.kind()).view([rows, 1]);
    let out = o2.view([rows, d]).lerp_tensor(&o1.view([rows, d]), &w1);
    Some(Merged {
        out: out.view([b, len, h, d]).permute([0, 2, 1, 3]),
        lse: lse.permute([0, 2, 1]),
    })
}

#[derive(Debug)]
struct JointBackward;

impl<E: TchElement, const N: usize> Backward<LibTorch<E>, N> for JointBackward {
    type State = Joint;

    fn backward(self, ops: Ops<Joint, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch<E>>(&ops.node);
        let Joint { terms, out, lse } = ops.state;
        let mut blhd = None;
        for (i, term) in terms.iter().enumerate() {
            let gs = term.backward(&grad.tensor, &out.tensor, &lse.tensor, &mut blhd);
            for (j, g) in gs.into_iter().enumerate() {
                if let Some(node) = &ops.parents[3 * i + j] {
                    grads.register::<LibTorch<E>>(node.id, TchTensor::new(g));
                }
            }
        }
    }
}

/// A term's attention in plain libtorch operations, the same contract as
/// the CUDA kernels (`[B, M, H, K]` tensors, log-sum-exp `[B, H, M]`, the
/// backward from a joint softmax's output and log-sum-exp): what the
/// kernel runs on the CPU, which [`accepts`] admits only in tests.
mod math {
    use super::Term;
    use tch::Tensor as T;

    /// Scaled, masked logits `[B, H, M, N]`.
    fn logits(t: &Term) -> T {
        let (q, k) = (t.q.transpose(1, 2), t.k.transpose(1, 2));
        let s = q.matmul(&k.transpose(-2, -1)) * t.scale;
        let s = match &t.bias {
            Some(bias) => s + bias,
            None => s,
        };
        if t.attn.causal() {
            let (m, n) = (s.size()[2], s.size()[3]);
            let above = T::ones([m, n], (tch::Kind::Bool, s.device())).triu(1);
            s.masked_fill(&above, f64::NEG_INFINITY)
        } else {
            s
        }
    }

    /// `o: [B, H, M, K]`, `lse: [B, H, M]`.
    pub fn forward(t: &Term) -> (T, T) {
        let s = logits(t);
        let lse = s.logsumexp([-1], false);
        let p = (s - lse.unsqueeze(-1)).exp();
        (p.matmul(&t.v.transpose(1, 2)), lse)
    }

    /// `dq, dk, dv` as `[B, ., H, K]` from `grad`, `out` (`[B, M, H, K]`)
    /// and `lse` (`[B, H, M]`).
    pub fn backward(t: &Term, grad: &T, out: &T, lse: &T) -> (T, T, T) {
        let p = (logits(t) - lse.unsqueeze(-1)).exp();
        let (q, k, v) = (
            t.q.transpose(1, 2),
            t.k.transpose(1, 2),
            t.v.transpose(1, 2),
        );
        let (dout, out) = (grad.transpose(1, 2), out.transpose(1, 2));
        let dv = p.transpose(-2, -1).matmul(&dout);
        let dp = dout.matmul(&v.transpose(-2, -1));
        let rows = (&dout * &out).sum_dim_intlist([-1i64].as_slice(), true, None::<tch::Kind>);
        let ds = p * (dp - rows) * t.scale;
        let dq = ds.matmul(&k);
        let dk = ds.transpose(-2, -1).matmul(&q);
        (dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2))
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::libtorch::{LibTorch, LibTorchDevice};
    use burn::backend::Autodiff;
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use combiner::plan::{Mode, Plan};
    use combiner::{combiner_attention_on, AbstractionKind, LayoutTensors};
    use std::sync::atomic::Ordering;

    type B = Autodiff<LibTorch<f32>>;

    /// The kernel's layouts (blocks and grid columns read in place, other
    /// terms copied and gathered), masks as biases, merge and backward node,
    /// run with exact per-term attention on the CPU: output and q, k, v
    /// gradients equal the generic path's, for grid-filling and ragged
    /// lengths, LM and MLM.
    #[test]
    fn kernel_layouts_merge_and_backward_match_the_generic_path() {
        let _serial = super::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        super::register_tch();
        super::CPU_MATH.store(true, Ordering::Relaxed);
        let dev = LibTorchDevice::Cpu;
        let (b, h, d) = (2, 2, 16);
        for (name, len) in [
            ("axial-rowmajor", 1024),
            ("axial-rowmajor", 1000),
            ("fixed", 1024),
            ("fixed", 1000),
            ("axial-vertical", 1024),
            ("axial-horizontal", 1024),
        ] {
            for mode in [Mode::Lm, Mode::Mlm] {
                let layout = Plan::from_name(name).unwrap().layout(len, mode).unwrap();
                let tensors = LayoutTensors::<B>::new(&layout, &dev);
                let abs = AbstractionKind::Max.init::<B>(d, &dev);
                // leaves laid out as the projections lay q, k, v out
                let draw =
                    || Tensor::<B, 4>::random([b, len, h, d], Distribution::Normal(0.0, 1.0), &dev);
                let (x, y, z, w) = (draw(), draw(), draw(), draw().swap_dims(1, 2));
                let run = |fused: bool| {
                    combiner::kernel::set_enabled(fused);
                    let before = combiner::kernel::calls();
                    let leaves = [&x, &y, &z].map(|t| t.clone().detach().require_grad());
                    let [q, k, v] = leaves.clone().map(|t| t.swap_dims(1, 2));
                    let out = combiner_attention_on(q, k, v, &layout, &tensors, &abs, None);
                    let grads = (out.clone() * w.clone()).sum().backward();
                    let ran = combiner::kernel::calls() > before;
                    let g = leaves.map(|t| t.grad(&grads).unwrap());
                    (out.inner(), g, ran)
                };
                let (o1, g1, ran) = run(true);
                let (o2, g2, _) = run(false);
                assert!(ran, "{name} {len} {mode:?}: the kernel declined");
                let diff = |a: Tensor<LibTorch<f32>, 4>, b: Tensor<LibTorch<f32>, 4>| -> f32 {
                    (a - b).abs().max().into_scalar()
                };
                assert!(diff(o1, o2) < 1e-4, "{name} {len} {mode:?}: outputs differ");
                for (i, (a, b)) in g1.into_iter().zip(g2).enumerate() {
                    let e = diff(a, b);
                    assert!(
                        e < 1e-3,
                        "{name} {len} {mode:?}: gradient {i} differs by {e}"
                    );
                }
            }
        }
        super::CPU_MATH.store(false, Ordering::Relaxed);
        combiner::kernel::set_enabled(true);
    }
}
