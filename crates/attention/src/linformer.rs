//! Linformer (Wang et al. 2020, "Linformer: Self-Attention with Linear
//! Complexity"): keys and values are projected along the sequence to `k`
//! rows by learned `E, F: [k, max_len]`, so attention is `L x k`.
//!
//! Bidirectional only: a projection along the sequence mixes future
//! positions into every projected key, so there is no causal form;
//! `try_init` with `Mode::Lm` returns [`AttentionError::BidirectionalOnly`].
//! Shorter sequences use the first `L` columns of `E` and `F`.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use combiner::softmax_f32;
use combiner::{Mode, MultiHead};
use serde::{Deserialize, Serialize};

use crate::AttentionError;

/// Hyperparameters of Linformer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinformerConfig {
    /// Longest sequence the projections cover.
    pub max_len: usize,
    /// Projected length `k`.
    pub k: usize,
    /// One projection for keys and values (`E = F`).
    pub share_kv: bool,
}

impl Default for LinformerConfig {
    fn default() -> Self {
        LinformerConfig {
            max_len: 4096,
            k: 256,
            share_kv: false,
        }
    }
}

impl LinformerConfig {
    pub(crate) fn validate(&self, mode: Mode) -> Result<(), AttentionError> {
        if mode == Mode::Lm {
            return Err(AttentionError::BidirectionalOnly {
                attention: "linformer",
            });
        }
        if self.max_len == 0 || self.k == 0 {
            return Err(AttentionError::invalid(
                "linformer",
                "max_len and k must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Multi-head Linformer attention (projections shared across heads).
#[derive(Module, Debug)]
pub struct Linformer<B: Backend> {
    heads: MultiHead<B>,
    e: Param<Tensor<B, 2>>,
    f: Option<Param<Tensor<B, 2>>>,
}

impl<B: Backend> Linformer<B> {
    pub(crate) fn new(heads: MultiHead<B>, config: &LinformerConfig, device: &B::Device) -> Self {
        // E = R / sqrt(k) with Gaussian R: the Johnson-Lindenstrauss scaling of the paper
        let draw = || {
            Param::from_tensor(Tensor::random(
                [config.k, config.max_len],
                Distribution::Normal(0.0, 1.0 / (config.k as f64).sqrt()),
                device,
            ))
        };
        Linformer {
            heads,
            e: draw(),
            f: (!config.share_kv).then(draw),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    ///
    /// # Panics
    /// If `seq` exceeds `max_len`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let drop = self.heads.attention_dropout();
        let dropout = Some(&drop);
        self.heads.forward_with(x, |q, k, v| {
            let dtype = q.dtype();
            let e = combiner::to_dtype(self.e.val(), dtype);
            let f = self.f.as_ref().map(|f| combiner::to_dtype(f.val(), dtype));
            linformer_attention(q, k, v, e, f, dropout)
        })
    }
}

/// Linformer attention with projections `e` (keys) and `f` (values; `None` = `e`).
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`; `e`, `f`: `[k, max_len]`
/// - output: `[batch, heads, seq, d_head]`
///
/// # Panics
/// If `seq > max_len`.
pub fn linformer_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    e: Tensor<B, 2>,
    f: Option<Tensor<B, 2>>,
    dropout: Option<&burn::nn::Dropout>,
) -> Tensor<B, 4> {
    let [b, h, len, d] = q.dims();
    let [kp, max_len] = e.dims();
    assert!(
        len <= max_len,
        "linformer: sequence length {len} exceeds max_len {max_len}; raise max_len in the config"
    );
    let proj = |p: Tensor<B, 2>| p.narrow(1, 0, len).unsqueeze::<4>().expand([b, h, kp, len]);
    let kk = proj(e.clone()).matmul(k); // [b,h,kp,d]
    let vv = proj(f.unwrap_or(e)).matmul(v);
    crate::util::drop_probs(
        softmax_f32(
            q.matmul(kk.swap_dims(2, 3))
                .mul_scalar(1.0 / (d as f64).sqrt()),
            3,
        ),
        dropout,
    )
    .matmul(vv)
}
