//! Dense softmax attention: the vanilla `O(L^2)` baseline and the one
//! masked dense attention that exact sparse patterns are computed and tested
//! with.

use burn::nn::Dropout;
use burn::prelude::*;

use crate::exec::{bool_tensor, MASKED};
use crate::plan::Mode;

/// Scaled dot-product attention over the full support (causal in LM mode).
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`
/// - output: `[batch, heads, seq, d_head]`
pub fn dense_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mode: Mode,
) -> Tensor<B, 4> {
    dense_attention_with(q, k, v, mode, None)
}

/// [`dense_attention`] with dropout on the attention probabilities.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`; output the same
pub fn dense_attention_with<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mode: Mode,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    let [_, _, len, _] = q.dims();
    let hidden = match mode {
        // true strictly above the diagonal: the future a causal row hides
        Mode::Lm => Some(Tensor::<B, 2, Bool>::tril_mask([len, len], 0, &q.device())),
        Mode::Mlm => None,
    };
    masked_attention_with(q, k, v, hidden, dropout)
}

/// Softmax attention restricted to a dense mask: the `O(L^2)` oracle every
/// exact sparse pattern is tested against.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`
/// - `allowed`: `seq * seq` flags, row-major, `allowed[i * seq + j]` = query `i` sees key `j`
/// - output: `[batch, heads, seq, d_head]`
pub fn masked_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    allowed: &[bool],
) -> Tensor<B, 4> {
    let [_, _, len, _] = q.dims();
    assert_eq!(allowed.len(), len * len, "mask must be seq x seq");
    let hidden = bool_tensor::<B, 2>(
        allowed.iter().map(|a| !a).collect(),
        [len, len],
        &q.device(),
    );
    masked_attention_with(q, k, v, Some(hidden), None)
}

/// Scaled dot-product attention of `rows` queries over every key, with the
/// keys where `hidden` is true left out (no mask: all keys), and dropout on
/// the probabilities. The softmax keeps f32 statistics ([`crate::softmax_f32`]).
///
/// # Shapes
/// - `q`: `[batch, heads, rows, d_head]`; `k`, `v`: `[batch, heads, seq, d_head]`
/// - `hidden`: `[rows, seq]`, shared by every batch and head
/// - output: `[batch, heads, rows, d_head]`
pub fn masked_attention_with<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    hidden: Option<Tensor<B, 2, Bool>>,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    let [b, h, rows, d] = q.dims();
    let len = k.dims()[2];
    let logits = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(1.0 / (d as f64).sqrt());
    let logits = match hidden {
        Some(hidden) => logits.mask_fill(hidden.unsqueeze::<4>().expand([b, h, rows, len]), MASKED),
        None => logits,
    };
    let probs = crate::softmax_f32(logits, 3);
    match dropout {
        Some(d) => d.forward(probs),
        None => probs,
    }
    .matmul(v)
}
