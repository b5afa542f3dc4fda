//! The efficient Combiner attention: span summaries with batched block ops,
//! then one joint softmax (eq. 9) over direct logits and span logits.
//!
//! No `L x L` tensor is built: every op is sized by the layout's blocks,
//! i.e. by the three counts of paper section 3.1.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, FloatDType};

use crate::abstraction::{Abstraction, Pool};
use crate::gather::{Rows, Table};
use crate::layout::{Layout, SpanSet};

/// The value masked logits are set to. Finite in every float dtype the
/// workspace computes in (f16's largest is 65,504: -1e9 would round to
/// -inf there, and a fully masked row to NaN), so that a fully masked row
/// (a padding query, an empty span never used) stays finite; `exp(MASKED -
/// max)` is exactly 0 in f64, f32, bf16 and f16 next to any real logit
/// above -29,000 (f64 needs a gap of 745, f32 of 104).
pub const MASKED: f32 = -3.0e4;

/// A 1-D index tensor from host positions (layouts live on the host).
pub fn int_tensor<B: Backend>(v: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(data, [v.len()]), device)
}

/// A mask tensor of `shape` from host flags in row-major order.
pub fn bool_tensor<B: Backend, const D: usize>(
    v: Vec<bool>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D, Bool> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Softmax along `dim` in the dtype of `logits`, with its statistics taken
/// in f32: the row max is exact in any dtype, and burn's reductions
/// accumulate the row sum of a bf16 or f16 tensor in f32 on the backends
/// that have those dtypes (libtorch's `sum`, CubeCL's reduce). The
/// exponentials and probabilities are in the input dtype, as the
/// probabilities of a bf16 attention are; no f32 copy of the logits is made
/// (under autodiff softmax is decomposed into max, sub, exp, sum and div,
/// and each pass over the largest tensor of the attention costs twice as
/// much in f32). The mixed-precision training of `combiner-nn` calls every
/// attention softmax through here.
pub fn softmax_f32<B: Backend, const D: usize>(logits: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    softmax(logits, dim)
}

/// `x` in `dtype` (no op when it already is): the one cast of the
/// workspace's mixed-precision code.
pub fn to_dtype<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(FloatDType::from(dtype))
    }
}

/// Whether `queries` lists `0..len` in order followed only by padding.
fn is_identity(queries: &[usize], len: usize) -> bool {
    queries
        .iter()
        .enumerate()
        .all(|(a, &q)| q == if a < len { a } else { len })
        && queries.len() >= len
}

/// Whether `hidden` (`[groups, g, w]`, true = masked) is the causal mask
/// of square blocks in every group: query `i` scores items `0..=i`.
fn is_causal(hidden: &[bool], groups: usize, g: usize, w: usize) -> bool {
    g == w
        && hidden.len() == groups * g * w
        && hidden
            .iter()
            .enumerate()
            .all(|(x, &m)| m == (x % w > (x / w) % g))
}

/// Shifts along `dim` by one, filling the first slot with `fill`:
/// `out[t] = x[t - 1]`, turning an inclusive scan into an exclusive one.
fn shift_right<B: Backend>(x: Tensor<B, 5>, dim: usize, fill: f32) -> Tensor<B, 5> {
    let dims = x.dims();
    let mut first = dims;
    first[dim] = 1;
    let head = Tensor::full(first, fill, (&x.device(), x.dtype()));
    if dims[dim] == 1 {
        return head;
    }
    Tensor::cat(vec![head, x.narrow(dim, 0, dims[dim] - 1)], dim)
}

/// Pools `x: [b, h, c, w, d]` over dim 3 where `valid: [c, w]` holds
/// (`all_valid`: every slot holds a position, nothing to mask).
///
/// The pooling runs on `x` viewed as `[b, c, w, h, d]`, the order the
/// projections lay positions and heads out in memory: the gradient of the
/// pooled-over tensor (a full-size scatter for max) is then laid out as the
/// other gradients of the same keys and adds to them elementwise.
fn pool_block<B: Backend>(
    x: Tensor<B, 5>,
    valid: &Tensor<B, 2, Bool>,
    all_valid: bool,
    pool: Pool,
) -> Tensor<B, 4> {
    let x = x.permute([0, 2, 3, 1, 4]);
    let [b, c, w, h, d] = x.dims();
    let pooled = if all_valid {
        match pool {
            Pool::Max => x.max_dim(2),
            Pool::Mean => x.mean_dim(2),
        }
    } else {
        let invalid = valid
            .clone()
            .bool_not()
            .reshape([1, c, w, 1, 1])
            .expand([b, c, w, h, d]);
        match pool {
            Pool::Max => x.mask_fill(invalid, MASKED).max_dim(2),
            Pool::Mean => {
                let counts = valid.clone().float().sum_dim(1).clamp_min(1.0);
                let counts = to_dtype(counts, x.dtype()).reshape([1, c, 1, 1, 1]);
                x.mask_fill(invalid, 0.0).sum_dim(2) / counts
            }
        }
    };
    // [b, c, 1, h, d] -> [b, h, c, d]
    pooled.squeeze_dim::<4>(2).swap_dims(1, 2)
}

/// Pools every inclusive prefix (`exclude = false`) or every leave-one-out
/// set (`exclude = true`) of `x: [b, h, c, w, d]` along dim 3.
fn pool_scan<B: Backend>(
    x: Tensor<B, 5>,
    valid: &Tensor<B, 2, Bool>,
    all_valid: bool,
    pool: Pool,
    exclude: bool,
) -> Tensor<B, 5> {
    let [b, h, c, w, d] = x.dims();
    let valid_t = valid.clone().reshape([1, 1, c, w, 1]);
    let fill = |x: Tensor<B, 5>, value: f32| {
        if all_valid {
            x
        } else {
            x.mask_fill(valid_t.clone().bool_not().expand([b, h, c, w, d]), value)
        }
    };
    match pool {
        Pool::Max => {
            let x = fill(x, MASKED);
            if !exclude {
                x.cummax(3)
            } else {
                let before = shift_right(x.clone().cummax(3), 3, MASKED);
                let after = shift_right(x.flip([3]).cummax(3), 3, MASKED).flip([3]);
                before.max_pair(after)
            }
        }
        Pool::Mean => {
            let x = fill(x, 0.0);
            let ones = to_dtype(valid_t.float(), x.dtype());
            if !exclude {
                let n = ones.cumsum(3).clamp_min(1.0);
                x.cumsum(3) / n
            } else {
                let total = x.clone().sum_dim(3);
                let n = (ones.clone().sum_dim(3) - ones).clamp_min(1.0);
                (total - x) / n
            }
        }
    }
}

/// `logits: [b,h,c,g,w]` with `MASKED` where `invalid: [c, g, w]` holds
/// (`None`: nothing is masked).
fn mask_logits<B: Backend>(
    logits: Tensor<B, 5>,
    invalid: Option<&Tensor<B, 3, Bool>>,
) -> Tensor<B, 5> {
    match invalid {
        Some(invalid) => {
            let mask = invalid.clone().unsqueeze::<5>().expand(logits.dims());
            logits.mask_fill(mask, MASKED)
        }
        None => logits,
    }
}

/// `scale * q k^T` for `q: [b,h,c,g,d]`, `k: [b,h,c,w,d]`, the scale applied
/// to whichever of `q` and the logits is smaller (one elementwise pass
/// fewer over the largest tensor of the call).
fn scaled_logits<B: Backend>(q: Tensor<B, 5>, k: Tensor<B, 5>, scale: f64) -> Tensor<B, 5> {
    let (d, w) = (q.dims()[4], k.dims()[3]);
    if d <= w {
        q.mul_scalar(scale).matmul(k.swap_dims(3, 4))
    } else {
        q.matmul(k.swap_dims(3, 4)).mul_scalar(scale)
    }
}

/// A host mask (true = masked) on the device, or `None` when it masks nothing.
fn some_masked<B: Backend>(
    hidden: Vec<bool>,
    shape: [usize; 3],
    device: &B::Device,
) -> Option<Tensor<B, 3, Bool>> {
    hidden
        .iter()
        .any(|&m| m)
        .then(|| bool_tensor::<B, 3>(hidden, shape, device))
}

/// Softmax attention inside blocks: `q: [b,h,c,g,d]`, `k, v: [b,h,c,w,d]`,
/// `invalid: [c, g, w]` (true = masked). Returns `[b,h,c,g,d]`.
fn block_attention<B: Backend>(
    q: Tensor<B, 5>,
    k: Tensor<B, 5>,
    v: Tensor<B, 5>,
    invalid: Option<&Tensor<B, 3, Bool>>,
    causal: bool,
    scale: f64,
    dropout: Option<&Dropout>,
) -> Tensor<B, 5> {
    let [b, h, c, g, d] = q.dims();
    let device = q.device();
    let call = crate::kernel::Call {
        dtype: q.dtype(),
        head_dim: d,
        batch: b,
        batch_heads: b * h,
        min_group_size: g,
        max_groups: c,
    };
    match crate::kernel::select::<B>(&call, &device, dropout) {
        Some(kernel) => {
            // one term whose query order is its block order
            let order = Tensor::<B, 1, Int>::arange(0..(c * g) as i64, &device);
            let term = crate::kernel::TermInput {
                q,
                k,
                v,
                hidden: invalid.cloned(),
                queries: order.clone(),
                inverse: order,
                identity: true,
                causal,
                base: None,
            };
            kernel.joint(&[term], c * g, scale).reshape([b, h, c, g, d])
        }
        None => generic_block_attention(q, k, v, invalid, scale, dropout),
    }
}

fn generic_block_attention<B: Backend>(
    q: Tensor<B, 5>,
    k: Tensor<B, 5>,
    v: Tensor<B, 5>,
    invalid: Option<&Tensor<B, 3, Bool>>,
    scale: f64,
    dropout: Option<&Dropout>,
) -> Tensor<B, 5> {
    let logits = mask_logits(scaled_logits(q, k, scale), invalid);
    let probs = softmax_f32(logits, 4);
    let probs = match dropout {
        Some(d) => d.forward(probs),
        None => probs,
    };
    probs.matmul(v)
}

/// Span keys and local expectations of one span set: `([b,h,u,d], [b,h,u,d])`.
#[allow(clippy::too_many_arguments)]
fn span_summaries<B: Backend>(
    set: &SpanSet,
    t: &SetTensors<B>,
    q_ext: &Table<B>,
    k_ext: &Table<B>,
    v_ext: &Table<B>,
    qp_ext: &Table<B>,
    kp_ext: &Table<B>,
    abs: &Abstraction<B>,
    scale: f64,
    dropout: Option<&Dropout>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [b, h, _, d] = q_ext.dims();
    let gather =
        |x: &Table<B>, rows: &Rows<B>, c: usize, w: usize| x.take(rows).reshape([b, h, c, w, d]);
    match set {
        SpanSet::Blocks {
            count,
            width,
            token_queries,
            ..
        } => {
            let (c, w) = (*count, *width);
            let km = gather(k_ext, &t.members, c, w);
            let vm = gather(v_ext, &t.members, c, w);
            let k_span = abs.post_k(pool_block(
                gather(kp_ext, &t.members, c, w),
                &t.valid,
                t.all_valid,
                abs.pool(),
            ));
            let (qs, g) = match (token_queries, &t.tokens) {
                (Some((g, _)), Some(tokens)) => (gather(q_ext, tokens, c, *g), *g),
                _ => (
                    abs.post_q(pool_block(
                        gather(qp_ext, &t.members, c, w),
                        &t.valid,
                        t.all_valid,
                        abs.pool(),
                    ))
                    .unsqueeze_dim::<5>(3),
                    1,
                ),
            };
            let vbar = block_attention(qs, km, vm, t.hidden.as_ref(), t.causal, scale, dropout)
                .reshape([b, h, c * g, d]);
            // laid out as the projections are, `[b, spans, h, d]` in
            // memory, so that kernels read the span terms in place
            let k_span = k_span
                .swap_dims(1, 2)
                .unsqueeze_dim::<5>(2)
                .expand([b, c, g, h, d])
                .reshape([b, c * g, h, d])
                .swap_dims(1, 2);
            (k_span, vbar)
        }
        SpanSet::Prefixes { count, width, .. } | SpanSet::ExcludeOne { count, width, .. } => {
            let exclude = matches!(set, SpanSet::ExcludeOne { .. });
            let (c, w) = (*count, *width);
            let ks = gather(k_ext, &t.members, c, w);
            let vs = gather(v_ext, &t.members, c, w);
            let k_span = abs.post_k(pool_scan(
                gather(kp_ext, &t.members, c, w),
                &t.valid,
                t.all_valid,
                abs.pool(),
                exclude,
            ));
            let q_span = abs.post_q(pool_scan(
                gather(qp_ext, &t.members, c, w),
                &t.valid,
                t.all_valid,
                abs.pool(),
                exclude,
            ));
            let vbar = block_attention(q_span, ks, vs, t.hidden.as_ref(), t.causal, scale, dropout)
                .reshape([b, h, c * w, d]);
            (k_span.reshape([b, h, c * w, d]), vbar)
        }
    }
}

/// Rows of `x: [b,h,n,f]` for query positions `0..len`, from a term's query order.
fn to_query_order<B: Backend>(x: Tensor<B, 4>, t: &TermTensors<B>) -> Tensor<B, 4> {
    t.inverse.take(x)
}

/// Rows of `x: [b,h,len,f]` arranged in a term's query order (padding rows zero).
fn to_term_order<B: Backend>(x: Tensor<B, 4>, t: &TermTensors<B>, n: usize) -> Tensor<B, 4> {
    let [b, h, len, f] = x.dims();
    let device = x.device();
    if t.identity {
        if n == len {
            x
        } else {
            let pad = Tensor::zeros([b, h, n - len, f], (&device, x.dtype()));
            Tensor::cat(vec![x, pad], 2)
        }
    } else {
        let pad = Tensor::zeros([b, h, 1, f], (&device, x.dtype()));
        Table::new(vec![x, pad]).take(&t.queries)
    }
}

/// The index and mask tensors of one span set on a device.
#[derive(Clone, Debug)]
struct SetTensors<B: Backend> {
    /// `members` (blocks) or `seqs` (scans), `[count * width]`.
    members: Rows<B>,
    /// The token queries of token-queried blocks, `[count * group]`.
    tokens: Option<Rows<B>>,
    /// Whether a slot holds a real position, `[count, width]`.
    valid: Tensor<B, 2, Bool>,
    /// Whether every slot does.
    all_valid: bool,
    /// The local expectations' mask (true = masked), `[count, queries,
    /// width]`; `None` when nothing is masked.
    hidden: Option<Tensor<B, 3, Bool>>,
    /// Whether `hidden` is the causal mask of square blocks.
    causal: bool,
}

/// The index and mask tensors of one term on a device.
#[derive(Clone, Debug)]
struct TermTensors<B: Backend> {
    queries: Rows<B>,
    items: Rows<B>,
    /// `[groups, group_size, width]`, true = masked; `None` when every pair
    /// takes part.
    hidden: Option<Tensor<B, 3, Bool>>,
    /// For each position `0..len`, its row in the term's query order.
    inverse: Rows<B>,
    /// Whether the query order is `0..len` followed only by padding.
    identity: bool,
    /// Whether `hidden` is the causal mask of square blocks.
    causal: bool,
}

/// Every index and mask tensor the executor needs for one [`Layout`] on one
/// device: the host-to-device copies of a call, made once.
///
/// [`LayoutTensors::new`] uploads them; [`LayoutTensors::cached`] keeps them
/// per (shared layout, backend, device) for as long as the layout lives, so
/// that training steps reuse them instead of copying `O(L sqrt L)` indices
/// to the device every forward pass (on CUDA each copy from pageable host
/// memory also waits for the queued kernels).
#[derive(Clone, Debug)]
pub struct LayoutTensors<B: Backend> {
    len: usize,
    sets: Vec<SetTensors<B>>,
    terms: Vec<TermTensors<B>>,
}

impl<B: Backend> LayoutTensors<B> {
    /// Uploads the tensors of `layout` to `device`.
    pub fn new(layout: &Layout, device: &B::Device) -> Self {
        let len = layout.len;
        let sets = layout
            .span_sets
            .iter()
            .map(|set| {
                let (c, w, members, token_queries) = match set {
                    SpanSet::Blocks {
                        count,
                        width,
                        members,
                        token_queries,
                    } => (*count, *width, members, token_queries.as_ref()),
                    SpanSet::Prefixes { count, width, seqs }
                    | SpanSet::ExcludeOne { count, width, seqs } => (*count, *width, seqs, None),
                };
                let valid: Vec<bool> = members.iter().map(|&p| p < len).collect();
                let all_valid = valid.iter().all(|&v| v);
                let valid_t = bool_tensor::<B, 2>(valid.clone(), [c, w], device);
                let mut causal = false;
                let hidden = match set {
                    // every query of a block sees the block's valid slots
                    SpanSet::Blocks { .. } => {
                        let g = token_queries.map_or(1, |(g, _)| *g);
                        (!all_valid).then(|| {
                            valid_t
                                .clone()
                                .bool_not()
                                .reshape([c, 1, w])
                                .expand([c, g, w])
                        })
                    }
                    _ => {
                        let exclude = matches!(set, SpanSet::ExcludeOne { .. });
                        let hidden: Vec<bool> = (0..c)
                            .flat_map(|s| {
                                let valid = &valid;
                                (0..w).flat_map(move |t| {
                                    (0..w).map(move |j| {
                                        let inside = if exclude { j != t } else { j <= t };
                                        !(inside && valid[s * w + j])
                                    })
                                })
                            })
                            .collect();
                        causal = is_causal(&hidden, c, w, w);
                        some_masked::<B>(hidden, [c, w, w], device)
                    }
                };
                SetTensors {
                    members: Rows::new(members, device),
                    tokens: token_queries.map(|(_, tokens)| Rows::new(tokens, device)),
                    valid: valid_t,
                    all_valid,
                    hidden,
                    causal,
                }
            })
            .collect();
        let terms = layout
            .terms
            .iter()
            .map(|term| {
                let (gs, g, w) = (term.groups, term.group_size, term.width);
                let mut inv = vec![0usize; len];
                for (a, &p) in term.queries.iter().enumerate() {
                    if p < len {
                        inv[p] = a;
                    }
                }
                let hidden: Vec<bool> = term.mask.iter().map(|m| !m).collect();
                TermTensors {
                    queries: Rows::new(&term.queries, device),
                    items: Rows::new(&term.items, device),
                    causal: is_causal(&hidden, gs, g, w),
                    hidden: some_masked::<B>(hidden, [gs, g, w], device),
                    inverse: Rows::new(&inv, device),
                    identity: is_identity(&term.queries, len),
                }
            })
            .collect();
        LayoutTensors { len, sets, terms }
    }

    /// The tensors of a shared layout on `device`, uploaded on first use and
    /// reused while `layout` (any clone of the `Arc`) is alive. Entries of
    /// dropped layouts are released on the next upload.
    pub fn cached(layout: &Arc<Layout>, device: &B::Device) -> Arc<Self> {
        type Entry = (Weak<Layout>, Arc<dyn Any + Send + Sync>);
        type Cache = Mutex<HashMap<(usize, TypeId, String), Entry>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        // The `Weak` keeps the layout's allocation, so its address cannot be
        // reused by another layout while the entry exists.
        let key = (
            Arc::as_ptr(layout) as usize,
            TypeId::of::<B>(),
            format!("{device:?}"),
        );
        let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, hit)) = lock().get(&key) {
            if let Ok(hit) = hit.clone().downcast::<Self>() {
                return hit;
            }
        }
        let fresh = Arc::new(Self::new(layout, device));
        let mut map = lock();
        map.retain(|_, (alive, _)| alive.strong_count() > 0);
        map.insert(key, (Arc::downgrade(layout), fresh.clone()));
        fresh
    }

    /// Token-query positions of span set `set` (token-queried blocks only).
    pub(crate) fn tokens(&self, set: usize) -> Option<&Rows<B>> {
        self.sets.get(set).and_then(|s| s.tokens.as_ref())
    }

    /// Whether these tensors were built for a layout of `layout`'s length
    /// and numbers of span sets and terms.
    fn fits(&self, layout: &Layout) -> bool {
        self.len == layout.len
            && self.sets.len() == layout.span_sets.len()
            && self.terms.len() == layout.terms.len()
    }
}

/// Combiner attention (eq. 7 with the joint normalization of eq. 9) for one
/// compiled layout.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]` with `seq == layout.len`
/// - output: `[batch, heads, seq, d_head]`
///
/// # Panics
/// If `layout` is malformed (call [`Layout::validate`] on layouts you build
/// by hand) or the shapes disagree.
pub fn combiner_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    layout: &Layout,
    abs: &Abstraction<B>,
) -> Tensor<B, 4> {
    combiner_attention_with(q, k, v, layout, abs, None)
}

/// [`combiner_attention`] with attention dropout: `dropout` (active only
/// while training, i.e. on an autodiff backend) drops entries of the joint
/// softmax and of every local expectation's softmax.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`; output the same
pub fn combiner_attention_with<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    layout: &Layout,
    abs: &Abstraction<B>,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    let tensors = LayoutTensors::new(layout, &q.device());
    combiner_attention_on(q, k, v, layout, &tensors, abs, dropout)
}

/// [`combiner_attention_with`] on tensors already on the device (see
/// [`LayoutTensors::cached`]): the form the model's layers call, with no
/// host-to-device copy.
///
/// # Panics
/// If `tensors` were built for another layout's shape, or as
/// [`combiner_attention`].
pub fn combiner_attention_on<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    layout: &Layout,
    tensors: &LayoutTensors<B>,
    abs: &Abstraction<B>,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    let padded = Padded::new(q, k, v);
    let spans = span_tables(&padded, layout, tensors, abs, dropout);
    joint_attention(padded, layout, tensors, spans, dropout)
}

/// `q`, `k`, `v` (`[batch, heads, seq, d_head]`) each with one zero row
/// appended: position `seq` is the padding item that layouts point unused
/// slots at. Built once per call and shared by [`span_tables`] and
/// [`joint_attention`].
#[derive(Clone, Debug)]
pub struct Padded<B: Backend> {
    q: Table<B>,
    k: Table<B>,
    v: Table<B>,
    len: usize,
}

impl<B: Backend> Padded<B> {
    /// # Panics
    /// If `k` or `v` differ in shape from `q`.
    pub fn new(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Self {
        let [b, h, len, d] = q.dims();
        assert_eq!(k.dims(), q.dims(), "k shape differs from q");
        assert_eq!(v.dims(), q.dims(), "v shape differs from q");
        let zero = Tensor::<B, 4>::zeros([b, h, 1, d], (&q.device(), q.dtype()));
        Padded {
            q: Table::new(vec![q, zero.clone()]),
            k: Table::new(vec![k, zero.clone()]),
            v: Table::new(vec![v, zero]),
            len,
        }
    }

    /// `[batch, heads, seq + 1, d_head]`.
    fn dims(&self) -> [usize; 4] {
        self.q.dims()
    }
}

/// Span keys and local expectations of every span of a layout, one
/// `(keys, values)` pair per span set (each `[batch, heads, spans, d_head]`,
/// in span-numbering order). [`joint_attention`] takes them, possibly with
/// keys replaced (the learned row summary of Combiner-Axial row-major).
///
/// # Panics
/// If the sequence length differs from `layout.len`.
pub fn span_tables<B: Backend>(
    padded: &Padded<B>,
    layout: &Layout,
    tensors: &LayoutTensors<B>,
    abs: &Abstraction<B>,
    dropout: Option<&Dropout>,
) -> Vec<(Tensor<B, 4>, Tensor<B, 4>)> {
    let (len, d) = (padded.len, padded.dims()[3]);
    assert_eq!(
        len, layout.len,
        "sequence length {len} != layout length {}",
        layout.len
    );
    assert!(tensors.fits(layout), "tensors of another layout");
    let scale = 1.0 / (d as f64).sqrt();
    let qp_ext = padded.q.map(|x| abs.pre_q(x));
    let kp_ext = padded.k.map(|x| abs.pre_k(x));
    layout
        .span_sets
        .iter()
        .zip(&tensors.sets)
        .map(|(set, t)| {
            span_summaries(
                set, t, &padded.q, &padded.k, &padded.v, &qp_ext, &kp_ext, abs, scale, dropout,
            )
        })
        .collect()
}

/// The joint softmax (eq. 9) over a layout's direct logits and span logits,
/// with span keys and local expectations from `spans` (one pair per span
/// set, as [`span_tables`] returns them), and the output of eq. (7).
///
/// # Shapes
/// - `padded`: q, k, v of `[batch, heads, seq, d_head]`, `seq == layout.len`
/// - `spans[s]`: `[batch, heads, spans of set s, d_head]` each
/// - output: `[batch, heads, seq, d_head]`
///
/// # Panics
/// If `layout` is malformed or the shapes disagree.
pub fn joint_attention<B: Backend>(
    padded: Padded<B>,
    layout: &Layout,
    tensors: &LayoutTensors<B>,
    spans: Vec<(Tensor<B, 4>, Tensor<B, 4>)>,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    let [b, h, _, d] = padded.dims();
    let len = padded.len;
    assert_eq!(
        len, layout.len,
        "sequence length {len} != layout length {}",
        layout.len
    );
    assert_eq!(
        spans.len(),
        layout.span_sets.len(),
        "one (keys, values) pair per span set"
    );
    assert!(tensors.fits(layout), "tensors of another layout");
    let Padded {
        q: q_ext,
        k: k_ext,
        v: v_ext,
        ..
    } = padded;
    let scale = 1.0 / (d as f64).sqrt();

    let (span_keys, span_values): (Vec<_>, Vec<_>) = spans.into_iter().unzip();
    let k_table = k_ext.extend(span_keys);
    let v_table = v_ext.extend(span_values);

    let first = q_ext.first();
    let call = crate::kernel::Call {
        dtype: first.dtype(),
        head_dim: d,
        batch: b,
        batch_heads: b * h,
        min_group_size: layout.terms.iter().map(|t| t.group_size).min().unwrap_or(0),
        max_groups: layout.terms.iter().map(|t| t.groups).max().unwrap_or(0),
    };
    let kernel = crate::kernel::select::<B>(&call, &first.device(), dropout);
    if let Some(kernel) = kernel {
        let inputs: Vec<_> = layout
            .terms
            .iter()
            .zip(&tensors.terms)
            .map(|(term, t)| {
                let (gs, g, w) = (term.groups, term.group_size, term.width);
                crate::kernel::TermInput {
                    q: q_ext.take_grouped(&t.queries, gs, g),
                    k: k_table.take_grouped(&t.items, gs, w),
                    v: v_table.take_grouped(&t.items, gs, w),
                    hidden: t.hidden.clone(),
                    queries: t.queries.index().clone(),
                    inverse: t.inverse.index().clone(),
                    identity: t.identity,
                    causal: t.causal,
                    base: Some(first.clone()),
                }
            })
            .collect();
        return kernel.joint(&inputs, len, scale);
    }

    // Logits of every term, in query order, side by side for one softmax.
    let mut logits = Vec::with_capacity(layout.terms.len());
    for (term, t) in layout.terms.iter().zip(&tensors.terms) {
        let (gs, g, w) = (term.groups, term.group_size, term.width);
        let qg = q_ext.take(&t.queries).reshape([b, h, gs, g, d]);
        let ki = k_table.take(&t.items).reshape([b, h, gs, w, d]);
        let l =
            mask_logits(scaled_logits(qg, ki, scale), t.hidden.as_ref()).reshape([b, h, gs * g, w]);
        logits.push(to_query_order(l, t));
    }
    let probs = softmax_f32(Tensor::cat(logits, 3), 3);
    let probs = match dropout {
        Some(drop) => drop.forward(probs),
        None => probs,
    };

    let mut out: Option<Tensor<B, 4>> = None;
    let mut offset = 0;
    for (term, t) in layout.terms.iter().zip(&tensors.terms) {
        let (gs, g, w) = (term.groups, term.group_size, term.width);
        let p =
            to_term_order(probs.clone().narrow(3, offset, w), t, gs * g).reshape([b, h, gs, g, w]);
        offset += w;
        let vi = v_table.take(&t.items).reshape([b, h, gs, w, d]);
        let o = to_query_order(p.matmul(vi).reshape([b, h, gs * g, d]), t);
        out = Some(match out {
            Some(acc) => acc + o,
            None => o,
        });
    }
    out.expect("a layout has at least one term")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Mode, Plan};

    type B = burn_ndarray::NdArray<f32>;

    fn ints(t: &Tensor<B, 1, Int>) -> Vec<i64> {
        t.to_data().convert::<i64>().to_vec().unwrap()
    }

    #[test]
    fn device_tensors_are_uploaded_once_per_shared_layout() {
        let dev = Default::default();
        let plan = Plan::from_name("axial-rowmajor").unwrap();
        let a = Arc::new(plan.layout(37, Mode::Mlm).unwrap());
        let first = LayoutTensors::<B>::cached(&a, &dev);
        let again = LayoutTensors::<B>::cached(&a, &dev);
        assert!(Arc::ptr_eq(&first, &again), "uploaded twice");
        // an equal layout behind another `Arc` gets its own entry
        let b = Arc::new(plan.layout(37, Mode::Mlm).unwrap());
        assert!(!Arc::ptr_eq(&first, &LayoutTensors::<B>::cached(&b, &dev)));
        // what is cached is what a fresh upload holds
        let fresh = LayoutTensors::<B>::new(&a, &dev);
        let masks = |m: &Option<Tensor<B, 3, Bool>>| m.as_ref().map(|m| m.to_data());
        for (x, y) in first.terms.iter().zip(&fresh.terms) {
            assert_eq!(ints(x.queries.index()), ints(y.queries.index()));
            assert_eq!(ints(x.items.index()), ints(y.items.index()));
            assert_eq!(masks(&x.hidden), masks(&y.hidden));
            assert_eq!(ints(x.inverse.index()), ints(y.inverse.index()));
        }
        for (x, y) in first.sets.iter().zip(&fresh.sets) {
            assert_eq!(ints(x.members.index()), ints(y.members.index()));
            let tokens = |r: &Option<Rows<B>>| r.as_ref().map(|r| ints(r.index()));
            assert_eq!(tokens(&x.tokens), tokens(&y.tokens));
            assert_eq!(x.valid.to_data(), y.valid.to_data());
            assert_eq!(masks(&x.hidden), masks(&y.hidden));
        }
        // a layout of another length is refused, not silently misread
        let c = plan.layout(40, Mode::Mlm).unwrap();
        let q = Tensor::<B, 4>::zeros([1, 1, 40, 4], &dev);
        let abs = crate::AbstractionKind::Max.init::<B>(4, &dev);
        let other = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            combiner_attention_on(q.clone(), q.clone(), q.clone(), &c, &first, &abs, None)
        }));
        assert!(other.is_err());
    }
}

#[cfg(test)]
mod masked_tests {
    use super::MASKED;
    use burn::tensor::{bf16, f16};

    #[test]
    fn the_mask_value_is_finite_and_vanishes_in_every_compute_dtype() {
        assert!(f16::from_f32(MASKED).to_f32().is_finite());
        assert!(bf16::from_f32(MASKED).to_f32().is_finite());
        // a fully masked row stays finite: MASKED - MASKED = 0
        let row = f16::from_f32(MASKED) - f16::from_f32(MASKED);
        assert_eq!(row.to_f32(), 0.0);
        // next to the lowest real logit we expect, a masked entry's weight is 0
        for max in [-29_000.0f32, -100.0, 0.0, 50.0] {
            let gap = MASKED - max;
            assert_eq!(gap.exp(), 0.0, "f32 at max {max}");
            assert_eq!((gap as f64).exp(), 0.0, "f64 at max {max}");
            assert_eq!(
                f16::from_f32(f16::from_f32(gap).to_f32().exp()).to_f32(),
                0.0
            );
            assert_eq!(
                bf16::from_f32(bf16::from_f32(gap).to_f32().exp()).to_f32(),
                0.0
            );
        }
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;
    use crate::plan::{Mode, Plan};

    type B = burn_ndarray::NdArray<f32>;

    /// `(gathers read as views, all gathers)` of a layout's tensors.
    fn views(t: &LayoutTensors<B>) -> (usize, usize) {
        let mut rows: Vec<&Rows<B>> = Vec::new();
        for s in &t.sets {
            rows.push(&s.members);
            rows.extend(&s.tokens);
        }
        for term in &t.terms {
            rows.extend([&term.queries, &term.items, &term.inverse]);
        }
        (rows.iter().filter(|r| r.is_view()).count(), rows.len())
    }

    /// Kernels may apply a causal mask without reading it: exactly the
    /// blocks whose mask is `j <= i` in every block are flagged.
    #[test]
    fn causal_blocks_are_flagged() {
        let dev = Default::default();
        let t = |name: &str, len: usize, mode: Mode| {
            let layout = Plan::from_name(name).unwrap().layout(len, mode).unwrap();
            let t = LayoutTensors::<B>::new(&layout, &dev);
            (
                t.terms.iter().map(|x| x.causal).collect::<Vec<_>>(),
                t.sets.iter().map(|x| x.causal).collect::<Vec<_>>(),
            )
        };
        // row-major LM: the own row is causal, the spans of earlier rows are
        // strictly earlier (not `j <= i`); a span's local expectation sees
        // its whole row
        assert_eq!(
            t("axial-rowmajor", 1024, Mode::Lm),
            (vec![true, false], vec![false])
        );
        assert_eq!(
            t("axial-rowmajor", 1024, Mode::Mlm),
            (vec![false, false], vec![false])
        );
        // a ragged last row masks the padding cells too
        assert_eq!(t("axial-rowmajor", 1000, Mode::Lm).0, vec![false, false]);
        // vertical LM: column prefixes are inclusive scans
        assert_eq!(t("axial-vertical", 1024, Mode::Lm).1, vec![true]);
        assert!(is_causal(&[false, true, false, false], 1, 2, 2));
        assert!(!is_causal(&[true, false, false, false], 1, 2, 2));
        assert!(!is_causal(&[false, false, false, false], 1, 2, 2));
        assert!(is_causal(
            &[false, true, false, false, false, true, false, false],
            2,
            2,
            2
        ));
        assert!(!is_causal(
            &[false, true, false, false, false, false, false, false],
            2,
            2,
            2
        ));
    }

    /// The grid plans at a length that fills their grid gather nothing: every
    /// block, transposed term and repeated span list is a strided view.
    #[test]
    fn grid_plans_at_grid_lengths_read_rows_as_views() {
        let dev = Default::default();
        for name in ["axial-rowmajor", "fixed", "axial-horizontal"] {
            let plan = Plan::from_name(name).unwrap();
            for mode in [Mode::Lm, Mode::Mlm] {
                let layout = plan.layout(1024, mode).unwrap();
                let (v, n) = views(&LayoutTensors::<B>::new(&layout, &dev));
                assert_eq!(v, n, "{name} {mode:?}: {v} of {n} gathers are views");
            }
        }
        // a ragged last row makes padded blocks: some gathers stay gathers,
        // and they read the same rows (the oracle tests run those lengths)
        let layout = Plan::from_name("axial-rowmajor")
            .unwrap()
            .layout(1000, Mode::Lm)
            .unwrap();
        let (v, n) = views(&LayoutTensors::<B>::new(&layout, &dev));
        assert!(v < n, "{v} of {n}");
    }
}
