//! The learned span keys of Combiner-Axial row-major, as in the authors'
//! code (`SelfAttAxialRowmajor` in google-research `combiner/`).
//!
//! Grid of `n` rows x `m` columns; the span of row `r2` seen from column `c`
//! has the local expectation `vbar(r2, c)`: token `(r2, c)`'s attention over
//! the whole row `r2` (the row-major layout's token-queried spans). Its key is
//!
//! ```text
//! key(r2, c) = W1 LayerNorm(x(r2, c) + Dropout(W0 concat_heads(vbar(r2, c))))
//! ```
//!
//! with `x` the attention layer's input, `W0: heads * d_head -> d_model`,
//! `W1: d_model -> heads * d_head` (no biases) and a LayerNorm with learned
//! scale and bias (epsilon `1e-6`, flax's default, which the authors use).
//! The key mixes every head's local expectation, so it is computed for all
//! heads at once, after the local expectations and before the joint softmax.

use std::sync::Arc;

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::abstraction::Abstraction;
use crate::exec::{joint_attention, span_tables, LayoutTensors, Padded};
use crate::layout::Layout;

/// LayerNorm epsilon of the learned summary (flax's default).
pub const LAYER_NORM_EPS: f64 = 1e-6;

/// Weights of the learned row summary that do not fit the layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("learned row summary: `{name}` has shape {found:?}, expected {expected}")]
pub struct SummaryShapeError {
    /// Which weight.
    pub name: &'static str,
    /// Its shape.
    pub found: Vec<usize>,
    /// What was expected, in words.
    pub expected: String,
}

/// The learned span-key map `W1 LayerNorm(x + W0 vbar)` of Combiner-Axial
/// row-major (see the module docs).
#[derive(Module, Debug)]
pub struct LearnedRowSummary<B: Backend> {
    w0: Linear<B>,
    norm: LayerNorm<B>,
    w1: Linear<B>,
    dropout: Dropout,
    n_heads: usize,
}

impl<B: Backend> LearnedRowSummary<B> {
    /// Fresh weights for `n_heads` heads of width `d_head` and model width
    /// `d_model`; `dropout` follows `W0` while training.
    pub fn new(
        d_model: usize,
        n_heads: usize,
        d_head: usize,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        LearnedRowSummary {
            w0: LinearConfig::new(n_heads * d_head, d_model)
                .with_bias(false)
                .init(device),
            norm: LayerNormConfig::new(d_model)
                .with_epsilon(LAYER_NORM_EPS)
                .init(device),
            w1: LinearConfig::new(d_model, n_heads * d_head)
                .with_bias(false)
                .init(device),
            dropout: DropoutConfig::new(dropout).init(),
            n_heads,
        }
    }

    /// The map with given weights: `w0: [heads, d_head, d_model]`,
    /// `ln_scale`, `ln_bias: [d_model]`, `w1: [d_model, heads, d_head]`.
    pub fn from_weights(
        w0: Tensor<B, 3>,
        ln_scale: Tensor<B, 1>,
        ln_bias: Tensor<B, 1>,
        w1: Tensor<B, 3>,
    ) -> Result<Self, SummaryShapeError> {
        let [h, dh, dm] = w0.dims();
        let bad = |name: &'static str, found: Vec<usize>, expected: String| {
            Err(SummaryShapeError {
                name,
                found,
                expected,
            })
        };
        if h * dh * dm == 0 {
            return bad(
                "w0",
                w0.dims().to_vec(),
                "[heads, d_head, d_model], every dimension at least 1".into(),
            );
        }
        if w1.dims() != [dm, h, dh] {
            return bad("w1", w1.dims().to_vec(), format!("[{dm}, {h}, {dh}]"));
        }
        for (name, t) in [("ln_scale", &ln_scale), ("ln_bias", &ln_bias)] {
            if t.dims() != [dm] {
                return bad(name, t.dims().to_vec(), format!("[{dm}]"));
            }
        }
        let device = w0.device();
        let mut s = Self::new(dm, h, dh, 0.0, &device);
        s.w0.weight = Param::from_tensor(w0.reshape([h * dh, dm]));
        s.w1.weight = Param::from_tensor(w1.reshape([dm, h * dh]));
        s.norm.gamma = Param::from_tensor(ln_scale);
        s.norm.beta = Some(Param::from_tensor(ln_bias));
        Ok(s)
    }

    /// Model width the map expects for `x`.
    pub fn d_model(&self) -> usize {
        self.w0.weight.dims()[1]
    }

    /// Number of heads.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// Width of one head.
    pub fn d_head(&self) -> usize {
        self.w0.weight.dims()[0] / self.n_heads
    }

    /// Span keys from the tokens' layer inputs and the spans' local expectations.
    ///
    /// # Shapes
    /// - `x`: `[batch, spans, d_model]` (the input of the token that queries each span)
    /// - `vbar`: `[batch, heads, spans, d_head]`
    /// - output: `[batch, heads, spans, d_head]`
    pub fn keys(&self, x: Tensor<B, 3>, vbar: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, u, d] = vbar.dims();
        let merged = vbar.swap_dims(1, 2).reshape([b, u, h * d]);
        // the norm runs in its weights' dtype (f32 under mixed precision)
        let dtype = x.dtype();
        let pre = x + self.dropout.forward(self.w0.forward(merged));
        let pre = crate::to_dtype(pre, self.norm.gamma.val().dtype());
        let y = crate::to_dtype(self.norm.forward(pre), dtype);
        self.w1.forward(y).reshape([b, u, h, d]).swap_dims(1, 2)
    }
}

/// Combiner attention of a layout whose token-queried spans (Combiner-Axial
/// row-major) take learned keys: local expectations as usual, then
/// `summary.keys` of each span from its token's input in `x`, then the joint
/// softmax. Pooled spans (none in row-major) keep their abstraction keys.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`; `x`: `[batch, seq, d_model]`
/// - output: `[batch, heads, seq, d_head]`
///
/// # Panics
/// If the shapes disagree with each other, the layout or the summary.
#[allow(clippy::too_many_arguments)]
pub fn learned_rowmajor_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    x: Tensor<B, 3>,
    layout: &Arc<Layout>,
    summary: &LearnedRowSummary<B>,
    abs: &Abstraction<B>,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    let [b, h, len, d] = q.dims();
    assert_eq!(
        x.dims(),
        [b, len, summary.d_model()],
        "x must be [batch, seq, d_model]"
    );
    assert_eq!(
        [h, d],
        [summary.n_heads(), summary.d_head()],
        "heads and d_head of q must match the summary's weights"
    );
    let tensors = LayoutTensors::cached(layout, &q.device());
    let padded = Padded::new(q, k, v);
    let spans = span_tables(&padded, layout, &tensors, abs, dropout)
        .into_iter()
        .enumerate()
        .map(|(set, (keys, vbar))| match tensors.tokens(set) {
            Some(tokens) => {
                let xt = tokens.take_3d(x.clone());
                (summary.keys(xt, vbar.clone()), vbar)
            }
            None => (keys, vbar),
        })
        .collect();
    joint_attention(padded, layout, &tensors, spans, dropout)
}
