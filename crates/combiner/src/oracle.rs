//! The dense reference oracle: materializes the effective attention
//! `q(j|i)` of eq. (8) from the *set* view of a plan, in `O(L^2)`.
//!
//! It shares no code path with the efficient executor beyond the abstraction's
//! `psi`/`phi` maps: spans are pooled from explicit member sets with dense
//! masks (no cummax, no leave-one-out scans, no block gathers).

use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::abstraction::{Abstraction, Pool};
use crate::exec::{bool_tensor, int_tensor, MASKED};
use crate::layout::{Partition, SpanQuery};
use crate::row_summary::LearnedRowSummary;

/// Span keys from the dense local expectations: `(local, used)` ->
/// `[b, h, used.len(), d]`, with `local: [b, h, used.len(), seq]` and `used`
/// the span ids in order.
type SpanKeyFn<'a, B> = &'a dyn Fn(Tensor<B, 4>, &[usize]) -> Tensor<B, 4>;

/// The effective attention matrix `q(j|i)` of one partition.
///
/// # Shapes
/// - `q`, `k`: `[batch, heads, seq, d_head]`
/// - output: `[batch, heads, seq, seq]`, rows sum to 1 over `Omega_i`
pub fn effective_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    p: &Partition,
    abs: &Abstraction<B>,
) -> Tensor<B, 4> {
    effective_attention_keyed(q, k, p, abs, None)
}

/// The effective attention of Combiner-Axial row-major with the learned
/// summary: token-queried spans take the key `summary.keys(x_t, vbar)`
/// from their dense local expectation `vbar = p(. | Omega) V` and the
/// input `x_t` of their query token.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`; `x`: `[batch, seq, d_model]`
/// - output: `[batch, heads, seq, seq]`
pub fn effective_attention_learned<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    x: Tensor<B, 3>,
    p: &Partition,
    abs: &Abstraction<B>,
    summary: &LearnedRowSummary<B>,
) -> Tensor<B, 4> {
    let device = q.device();
    let pooled = abs.post_k(dense_pool(abs.pre_k(k.clone()), p, abs));
    let keys = |local: Tensor<B, 4>, used: &[usize]| -> Tensor<B, 4> {
        let [b, h, u, d] = pooled.dims();
        let mut tokens = Vec::with_capacity(u);
        let mut is_token = Vec::with_capacity(u);
        for &s in used {
            match p.spans[s].query {
                SpanQuery::Token(t) => {
                    tokens.push(t);
                    is_token.push(true);
                }
                SpanQuery::Pooled => {
                    tokens.push(0);
                    is_token.push(false);
                }
            }
        }
        let vbar = local.matmul(v.clone());
        let xt = x.clone().select(1, int_tensor::<B>(&tokens, &device));
        let learned = summary.keys(xt, vbar);
        let mask = bool_tensor::<B, 1>(is_token, [u], &device)
            .reshape([1, 1, u, 1])
            .expand([b, h, u, d]);
        pooled.clone().mask_where(mask, learned)
    };
    effective_attention_keyed(q, k, p, abs, Some(&keys))
}

/// Pools `x: [b, h, seq, d]` over every used span of `p`: `[b, h, used, d]`.
fn dense_pool<B: Backend>(x: Tensor<B, 4>, p: &Partition, abs: &Abstraction<B>) -> Tensor<B, 4> {
    let [b, h, len, d] = x.dims();
    let device = x.device();
    let used = p.used_spans();
    let u = used.len();
    if u == 0 {
        return Tensor::zeros([b, h, 0, d], &device);
    }
    let mut outside = vec![true; u * len];
    for (a, &s) in used.iter().enumerate() {
        for &j in &p.spans[s].members {
            outside[a * len + j] = false;
        }
    }
    let xe = x.unsqueeze_dim::<5>(2).expand([b, h, u, len, d]);
    let m = bool_tensor::<B, 2>(outside, [u, len], &device)
        .reshape([1, 1, u, len, 1])
        .expand([b, h, u, len, d]);
    match abs.pool() {
        Pool::Max => xe.mask_fill(m, f32::NEG_INFINITY).max_dim(3).squeeze_dim(3),
        Pool::Mean => {
            let sizes: Vec<f32> = used
                .iter()
                .map(|&s| p.spans[s].members.len() as f32)
                .collect();
            let sizes = Tensor::<B, 1>::from_data(TensorData::new(sizes, [u]), &device)
                .reshape([1, 1, u, 1]);
            xe.mask_fill(m, 0.0).sum_dim(3).squeeze_dim(3) / sizes
        }
    }
}

/// [`effective_attention`], with span keys from `keys` when given (else the
/// abstraction's pooled keys).
fn effective_attention_keyed<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    p: &Partition,
    abs: &Abstraction<B>,
    keys: Option<SpanKeyFn<'_, B>>,
) -> Tensor<B, 4> {
    let [b, h, len, d] = q.dims();
    assert_eq!(
        len, p.len,
        "sequence length {len} != partition length {}",
        p.len
    );
    let device = q.device();
    let scale = 1.0 / (d as f64).sqrt();
    let direct_logits = q
        .clone()
        .matmul(k.clone().swap_dims(2, 3))
        .mul_scalar(scale);
    let mut direct = vec![true; len * len];
    for (i, parts) in p.queries.iter().enumerate() {
        for &j in &parts.direct {
            direct[i * len + j] = false;
        }
    }
    let direct_mask = bool_tensor::<B, 2>(direct, [len, len], &device)
        .unsqueeze::<4>()
        .expand([b, h, len, len]);
    let direct_logits = direct_logits.mask_fill(direct_mask, MASKED);

    let used = p.used_spans();
    if used.is_empty() {
        return softmax(direct_logits, 3);
    }
    let u = used.len();
    // member masks [u, len]: true = not a member
    let mut outside = vec![true; u * len];
    for (a, &s) in used.iter().enumerate() {
        for &j in &p.spans[s].members {
            outside[a * len + j] = false;
        }
    }
    let outside_t = bool_tensor::<B, 2>(outside, [u, len], &device);
    let q_pooled = abs.post_q(dense_pool(abs.pre_q(q.clone()), p, abs));
    // token queries replace the pooled query where the span asks for one
    let tokens: Vec<usize> = used
        .iter()
        .map(|&s| match p.spans[s].query {
            SpanQuery::Token(t) => t,
            SpanQuery::Pooled => 0,
        })
        .collect();
    let is_token: Vec<bool> = used
        .iter()
        .map(|&s| matches!(p.spans[s].query, SpanQuery::Token(_)))
        .collect();
    let q_tok = q.clone().select(2, int_tensor::<B>(&tokens, &device));
    let tok_mask = bool_tensor::<B, 1>(is_token, [u], &device)
        .reshape([1, 1, u, 1])
        .expand([b, h, u, d]);
    let q_span = q_pooled.mask_where(tok_mask, q_tok);

    // local expectation p(j | Omega): [b, h, u, len]
    let local = softmax(
        q_span
            .matmul(k.clone().swap_dims(2, 3))
            .mul_scalar(scale)
            .mask_fill(outside_t.unsqueeze::<4>().expand([b, h, u, len]), MASKED),
        3,
    );
    let k_span = match keys {
        Some(f) => f(local.clone(), &used),
        None => abs.post_k(dense_pool(abs.pre_k(k.clone()), p, abs)),
    };
    // joint softmax over direct logits and span logits (eq. 9)
    let mut pos = vec![usize::MAX; p.spans.len()];
    for (a, &s) in used.iter().enumerate() {
        pos[s] = a;
    }
    let mut not_span = vec![true; len * u];
    for (i, parts) in p.queries.iter().enumerate() {
        for &s in &parts.spans {
            not_span[i * u + pos[s]] = false;
        }
    }
    let span_logits = q
        .matmul(k_span.swap_dims(2, 3))
        .mul_scalar(scale)
        .mask_fill(
            bool_tensor::<B, 2>(not_span, [len, u], &device)
                .unsqueeze::<4>()
                .expand([b, h, len, u]),
            MASKED,
        );
    let joint = softmax(Tensor::cat(vec![direct_logits, span_logits], 3), 3);
    let p_direct = joint.clone().narrow(3, 0, len);
    let p_span = joint.narrow(3, len, u);
    p_direct + p_span.matmul(local)
}

/// The oracle output `q(j|i) V`, averaged over mixture components.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`
/// - output: `[batch, heads, seq, d_head]`
pub fn oracle_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    partitions: &[Partition],
    abs: &Abstraction<B>,
) -> Tensor<B, 4> {
    let n = partitions.len() as f64;
    partitions
        .iter()
        .map(|p| effective_attention(q.clone(), k.clone(), p, abs).matmul(v.clone()))
        .reduce(|a, b| a + b)
        .expect("at least one partition")
        .div_scalar(n)
}

/// The oracle output of Combiner-Axial row-major with the learned summary,
/// `q(j|i) V` from [`effective_attention_learned`], averaged over partitions.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`; `x`: `[batch, seq, d_model]`
/// - output: `[batch, heads, seq, d_head]`
pub fn oracle_attention_learned<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    x: Tensor<B, 3>,
    partitions: &[Partition],
    abs: &Abstraction<B>,
    summary: &LearnedRowSummary<B>,
) -> Tensor<B, 4> {
    let n = partitions.len() as f64;
    partitions
        .iter()
        .map(|p| {
            effective_attention_learned(q.clone(), k.clone(), v.clone(), x.clone(), p, abs, summary)
                .matmul(v.clone())
        })
        .reduce(|a, b| a + b)
        .expect("at least one partition")
        .div_scalar(n)
}
