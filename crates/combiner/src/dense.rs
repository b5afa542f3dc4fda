//! Vanilla dense softmax attention, the `O(L^2)` baseline.

use burn::nn::Dropout;
use burn::prelude::*;

use crate::exec::MASKED;
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
    let [b, h, len, d] = q.dims();
    let logits = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(1.0 / (d as f64).sqrt());
    let logits = match mode {
        Mode::Lm => {
            // true strictly above the diagonal: the future a causal row hides
            let future = Tensor::<B, 2, Bool>::tril_mask([len, len], 0, &logits.device())
                .unsqueeze::<4>()
                .expand([b, h, len, len]);
            logits.mask_fill(future, MASKED)
        }
        Mode::Mlm => logits,
    };
    let probs = crate::softmax_f32(logits, 3);
    match dropout {
        Some(d) => d.forward(probs),
        None => probs,
    }
    .matmul(v)
}
