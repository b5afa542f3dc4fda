//! The efficient Combiner attention: span summaries with batched block ops,
//! then one joint softmax (eq. 9) over direct logits and span logits.
//!
//! No `L x L` tensor is built: every op is sized by the layout's blocks,
//! i.e. by the three counts of paper section 3.1.

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, FloatDType};

use crate::abstraction::{Abstraction, Pool};
use crate::layout::{Layout, SpanSet, Term};

/// The value masked logits are set to. Finite, so that a fully masked row
/// (a padding query, an empty span never used) stays finite instead of NaN;
/// `exp(MASKED - max)` is exactly 0 in f32 and bf16 next to any real logit.
pub const MASKED: f32 = -1.0e9;

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

/// Softmax along `dim` with f32 statistics (max, exponentials, sum)
/// whatever the dtype of `logits`; the probabilities come back in that
/// dtype. In f32 and f64 it is plain softmax.
pub fn softmax_f32<B: Backend, const D: usize>(logits: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    match logits.dtype() {
        DType::F32 | DType::F64 => softmax(logits, dim),
        dtype => softmax(logits.cast(FloatDType::F32), dim).cast(FloatDType::from(dtype)),
    }
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

/// A float tensor of constants from host values, in the dtype of `like`.
fn floats_like<B: Backend, const D: usize, const E: usize>(
    v: Vec<f32>,
    shape: [usize; D],
    like: &Tensor<B, E>,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, shape), (&like.device(), like.dtype()))
}

/// Whether `queries` lists `0..len` in order followed only by padding.
fn is_identity(queries: &[usize], len: usize) -> bool {
    queries
        .iter()
        .enumerate()
        .all(|(a, &q)| q == if a < len { a } else { len })
        && queries.len() >= len
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

/// Pools `x: [b, h, c, w, d]` over dim 3 where `valid: [c, w]` holds.
fn pool_block<B: Backend>(x: Tensor<B, 5>, valid: &[bool], pool: Pool) -> Tensor<B, 4> {
    let [b, h, c, w, d] = x.dims();
    let device = x.device();
    let invalid = bool_tensor::<B, 2>(valid.iter().map(|v| !v).collect(), [c, w], &device)
        .reshape([1, 1, c, w, 1])
        .expand([b, h, c, w, d]);
    match pool {
        Pool::Max => x.mask_fill(invalid, MASKED).max_dim(3).squeeze_dim(3),
        Pool::Mean => {
            let counts: Vec<f32> = valid
                .chunks(w.max(1))
                .map(|row| row.iter().filter(|&&v| v).count().max(1) as f32)
                .collect();
            let counts = floats_like::<B, 1, 5>(counts, [c], &x).reshape([1, 1, c, 1]);
            x.mask_fill(invalid, 0.0).sum_dim(3).squeeze_dim(3) / counts
        }
    }
}

/// Pools every inclusive prefix (`exclude = false`) or every leave-one-out
/// set (`exclude = true`) of `x: [b, h, c, w, d]` along dim 3.
fn pool_scan<B: Backend>(
    x: Tensor<B, 5>,
    valid: &[bool],
    pool: Pool,
    exclude: bool,
) -> Tensor<B, 5> {
    let [b, h, c, w, d] = x.dims();
    let device = x.device();
    let valid_t = bool_tensor::<B, 2>(valid.to_vec(), [c, w], &device).reshape([1, 1, c, w, 1]);
    let invalid = valid_t.clone().bool_not().expand([b, h, c, w, d]);
    match pool {
        Pool::Max => {
            let x = x.mask_fill(invalid, MASKED);
            if !exclude {
                x.cummax(3)
            } else {
                let before = shift_right(x.clone().cummax(3), 3, MASKED);
                let after = shift_right(x.flip([3]).cummax(3), 3, MASKED).flip([3]);
                before.max_pair(after)
            }
        }
        Pool::Mean => {
            let x = x.mask_fill(invalid, 0.0);
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

/// Softmax attention inside blocks: `q: [b,h,c,g,d]`, `k, v: [b,h,c,w,d]`,
/// `invalid: [c, g, w]` (true = masked). Returns `[b,h,c,g,d]`.
fn block_attention<B: Backend>(
    q: Tensor<B, 5>,
    k: Tensor<B, 5>,
    v: Tensor<B, 5>,
    invalid: Vec<bool>,
    scale: f64,
    dropout: Option<&Dropout>,
) -> Tensor<B, 5> {
    let [b, h, c, g, _] = q.dims();
    let w = k.dims()[3];
    let mask = bool_tensor::<B, 3>(invalid, [c, g, w], &q.device())
        .unsqueeze::<5>()
        .expand([b, h, c, g, w]);
    let logits = q
        .matmul(k.swap_dims(3, 4))
        .mul_scalar(scale)
        .mask_fill(mask, MASKED);
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
    len: usize,
    q_ext: &Tensor<B, 4>,
    k_ext: &Tensor<B, 4>,
    v_ext: &Tensor<B, 4>,
    qp_ext: &Tensor<B, 4>,
    kp_ext: &Tensor<B, 4>,
    abs: &Abstraction<B>,
    scale: f64,
    dropout: Option<&Dropout>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [b, h, _, d] = q_ext.dims();
    let device = q_ext.device();
    let gather = |t: &Tensor<B, 4>, idx: &[usize], c: usize, w: usize| {
        t.clone()
            .select(2, int_tensor::<B>(idx, &device))
            .reshape([b, h, c, w, d])
    };
    match set {
        SpanSet::Blocks {
            count,
            width,
            members,
            token_queries,
        } => {
            let (c, w) = (*count, *width);
            let valid: Vec<bool> = members.iter().map(|&p| p < len).collect();
            let km = gather(k_ext, members, c, w);
            let vm = gather(v_ext, members, c, w);
            let k_span = abs.post_k(pool_block(
                gather(kp_ext, members, c, w),
                &valid,
                abs.pool(),
            ));
            let (qs, g) = match token_queries {
                None => (
                    abs.post_q(pool_block(
                        gather(qp_ext, members, c, w),
                        &valid,
                        abs.pool(),
                    ))
                    .unsqueeze_dim::<5>(3),
                    1,
                ),
                Some((g, tokens)) => (gather(q_ext, tokens, c, *g), *g),
            };
            let invalid: Vec<bool> = (0..c)
                .flat_map(|blk| {
                    let valid = &valid;
                    (0..g).flat_map(move |_| (0..w).map(move |j| !valid[blk * w + j]))
                })
                .collect();
            let vbar =
                block_attention(qs, km, vm, invalid, scale, dropout).reshape([b, h, c * g, d]);
            let k_span = k_span
                .unsqueeze_dim::<5>(3)
                .expand([b, h, c, g, d])
                .reshape([b, h, c * g, d]);
            (k_span, vbar)
        }
        SpanSet::Prefixes { count, width, seqs } | SpanSet::ExcludeOne { count, width, seqs } => {
            let exclude = matches!(set, SpanSet::ExcludeOne { .. });
            let (c, w) = (*count, *width);
            let valid: Vec<bool> = seqs.iter().map(|&p| p < len).collect();
            let ks = gather(k_ext, seqs, c, w);
            let vs = gather(v_ext, seqs, c, w);
            let k_span = abs.post_k(pool_scan(
                gather(kp_ext, seqs, c, w),
                &valid,
                abs.pool(),
                exclude,
            ));
            let q_span = abs.post_q(pool_scan(
                gather(qp_ext, seqs, c, w),
                &valid,
                abs.pool(),
                exclude,
            ));
            let invalid: Vec<bool> = (0..c)
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
            let vbar =
                block_attention(q_span, ks, vs, invalid, scale, dropout).reshape([b, h, c * w, d]);
            (k_span.reshape([b, h, c * w, d]), vbar)
        }
    }
}

/// Rows of `x: [b,h,n,f]` for query positions `0..len`, from a term's query order.
fn to_query_order<B: Backend>(
    x: Tensor<B, 4>,
    term: &Term,
    len: usize,
    inv: &[usize],
) -> Tensor<B, 4> {
    if is_identity(&term.queries, len) {
        x.narrow(2, 0, len)
    } else {
        let device = x.device();
        x.select(2, int_tensor::<B>(inv, &device))
    }
}

/// Rows of `x: [b,h,len,f]` arranged in a term's query order (padding rows zero).
fn to_term_order<B: Backend>(x: Tensor<B, 4>, term: &Term, len: usize) -> Tensor<B, 4> {
    let [b, h, _, f] = x.dims();
    let n = term.queries.len();
    let device = x.device();
    if is_identity(&term.queries, len) {
        if n == len {
            x
        } else {
            let pad = Tensor::zeros([b, h, n - len, f], (&device, x.dtype()));
            Tensor::cat(vec![x, pad], 2)
        }
    } else {
        let pad = Tensor::zeros([b, h, 1, f], (&device, x.dtype()));
        let ext = Tensor::cat(vec![x, pad], 2);
        ext.select(2, int_tensor::<B>(&term.queries, &device))
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
    let padded = Padded::new(q, k, v);
    let spans = span_tables(&padded, layout, abs, dropout);
    joint_attention(padded, layout, spans, dropout)
}

/// `q`, `k`, `v` (`[batch, heads, seq, d_head]`) each with one zero row
/// appended: position `seq` is the padding item that layouts point unused
/// slots at. Built once per call and shared by [`span_tables`] and
/// [`joint_attention`].
#[derive(Clone, Debug)]
pub struct Padded<B: Backend> {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
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
            q: Tensor::cat(vec![q, zero.clone()], 2),
            k: Tensor::cat(vec![k, zero.clone()], 2),
            v: Tensor::cat(vec![v, zero], 2),
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
    abs: &Abstraction<B>,
    dropout: Option<&Dropout>,
) -> Vec<(Tensor<B, 4>, Tensor<B, 4>)> {
    let (len, d) = (padded.len, padded.dims()[3]);
    assert_eq!(
        len, layout.len,
        "sequence length {len} != layout length {}",
        layout.len
    );
    let scale = 1.0 / (d as f64).sqrt();
    let qp_ext = abs.pre_q(padded.q.clone());
    let kp_ext = abs.pre_k(padded.k.clone());
    layout
        .span_sets
        .iter()
        .map(|set| {
            span_summaries(
                set, len, &padded.q, &padded.k, &padded.v, &qp_ext, &kp_ext, abs, scale, dropout,
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
    let Padded {
        q: q_ext,
        k: k_ext,
        v: v_ext,
        ..
    } = padded;
    let device = q_ext.device();
    let scale = 1.0 / (d as f64).sqrt();

    let mut k_table = vec![k_ext];
    let mut v_table = vec![v_ext];
    for (ks, vs) in spans {
        k_table.push(ks);
        v_table.push(vs);
    }
    let k_table = Tensor::cat(k_table, 2);
    let v_table = Tensor::cat(v_table, 2);

    // Logits of every term, in query order, side by side for one softmax.
    let mut logits = Vec::with_capacity(layout.terms.len());
    let mut inverses = Vec::with_capacity(layout.terms.len());
    for term in &layout.terms {
        let (gs, g, w) = (term.groups, term.group_size, term.width);
        let qg = q_ext
            .clone()
            .select(2, int_tensor::<B>(&term.queries, &device))
            .reshape([b, h, gs, g, d]);
        let ki = k_table
            .clone()
            .select(2, int_tensor::<B>(&term.items, &device))
            .reshape([b, h, gs, w, d]);
        let invalid =
            bool_tensor::<B, 3>(term.mask.iter().map(|m| !m).collect(), [gs, g, w], &device)
                .unsqueeze::<5>()
                .expand([b, h, gs, g, w]);
        let l = qg
            .matmul(ki.swap_dims(3, 4))
            .mul_scalar(scale)
            .mask_fill(invalid, MASKED)
            .reshape([b, h, gs * g, w]);
        let mut inv = vec![0usize; len];
        for (a, &p) in term.queries.iter().enumerate() {
            if p < len {
                inv[p] = a;
            }
        }
        logits.push(to_query_order(l, term, len, &inv));
        inverses.push(inv);
    }
    let probs = softmax_f32(Tensor::cat(logits, 3), 3);
    let probs = match dropout {
        Some(drop) => drop.forward(probs),
        None => probs,
    };

    let mut out: Option<Tensor<B, 4>> = None;
    let mut offset = 0;
    for (term, inv) in layout.terms.iter().zip(&inverses) {
        let (gs, g, w) = (term.groups, term.group_size, term.width);
        let p =
            to_term_order(probs.clone().narrow(3, offset, w), term, len).reshape([b, h, gs, g, w]);
        offset += w;
        let vi = v_table
            .clone()
            .select(2, int_tensor::<B>(&term.items, &device))
            .reshape([b, h, gs, w, d]);
        let o = to_query_order(p.matmul(vi).reshape([b, h, gs * g, d]), term, len, inv);
        out = Some(match out {
            Some(acc) => acc + o,
            None => o,
        });
    }
    out.expect("a layout has at least one term")
}
