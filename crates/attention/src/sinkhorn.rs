//! Sinkhorn Transformer (Tay et al. 2020, "Sparse Sinkhorn Attention"):
//! blocks of `block` tokens; a learned soft permutation of the blocks sorts
//! a partner block next to each query block, and each query attends to its
//! own block and the sorted one, `O(L * block)`.
//!
//! The sorting logits between blocks `a` and `c` are
//! `q_a . k_c / (sqrt(d) * temperature)` with `q_a`, `k_c` the mean query
//! and key of each block, so the sorting network is the heads' own
//! projections and no weight depends on the number of blocks (the paper's
//! sorting MLP has one output per block and fixes the length). MLM: the
//! logits go through `iters` rounds of Sinkhorn normalization (rows, then
//! columns, in log space) to a doubly stochastic matrix. LM (the paper's
//! causal Sinkhorn): block `a` may only draw from blocks before it, its
//! sorting query is the mean key of block `a - 1` (a block's own mean would
//! read tokens after the query), and the row is a plain softmax, since
//! column balancing would mix in later blocks.
//!
//! A sorted block is a mixture of blocks; a slot whose mixture is partly
//! padding (the short last block) is down-weighted by the real fraction,
//! and dropped when it is all padding. No Gumbel noise: the sort is
//! deterministic.

use burn::prelude::*;
use combiner::softmax_f32;
use combiner::{Mode, MultiHead};
use serde::{Deserialize, Serialize};

use crate::util::{bool_tensor, drop_probs, log_sum_exp, MASKED};
use crate::AttentionError;

/// Hyperparameters of Sinkhorn attention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkhornConfig {
    /// Tokens per block.
    pub block: usize,
    /// Sinkhorn normalization rounds (MLM).
    pub iters: usize,
    /// Temperature of the sorting logits.
    pub temperature: f64,
}

impl Default for SinkhornConfig {
    fn default() -> Self {
        SinkhornConfig {
            block: 64,
            iters: 8,
            temperature: 0.75,
        }
    }
}

impl SinkhornConfig {
    pub(crate) fn validate(&self) -> Result<(), AttentionError> {
        if self.block == 0 {
            return Err(AttentionError::invalid(
                "sinkhorn",
                "block must be at least 1",
            ));
        }
        if self.temperature <= 0.0 || !self.temperature.is_finite() {
            return Err(AttentionError::invalid(
                "sinkhorn",
                "temperature must be positive",
            ));
        }
        Ok(())
    }
}

/// `iters` rounds of Sinkhorn normalization of square logits in log space
/// (rows, then columns); `exp` of the result tends to a doubly stochastic matrix.
///
/// # Shapes
/// - `logits`: `[batch, heads, n, n]` -> same
pub fn sinkhorn_normalize<B: Backend>(logits: Tensor<B, 4>, iters: usize) -> Tensor<B, 4> {
    let mut r = logits;
    for _ in 0..iters {
        r = r.clone() - log_sum_exp(r, 3);
        r = r.clone() - log_sum_exp(r, 2);
    }
    r
}

/// Sinkhorn attention on per-head tensors.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`
/// - output: `[batch, heads, seq, d_head]`
pub fn sinkhorn_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    config: &SinkhornConfig,
    mode: Mode,
    dropout: Option<&burn::nn::Dropout>,
) -> Tensor<B, 4> {
    let [b, h, len, d] = q.dims();
    let device = q.device();
    let dtype = q.dtype();
    let s = config.block.max(1);
    let nb = len.div_ceil(s).max(1);
    let scale = 1.0 / (d as f64).sqrt();
    let pad = |x: Tensor<B, 4>| {
        if nb * s == len {
            x
        } else {
            Tensor::cat(
                vec![x, Tensor::zeros([b, h, nb * s - len, d], (&device, dtype))],
                2,
            )
        }
    };
    let qb = pad(q).reshape([b, h, nb, s, d]);
    let kb = pad(k).reshape([b, h, nb, s, d]);
    let vb = pad(v).reshape([b, h, nb, s, d]);
    let valid: Vec<bool> = (0..nb * s).map(|p| p < len).collect();
    let valid_f = combiner::to_dtype(
        bool_tensor::<B, 2>(valid.clone(), [nb, s], &device).float(),
        dtype,
    );
    let counts = valid_f.clone().sum_dim(1).reshape([1, 1, nb, 1]);
    let mean = |x: Tensor<B, 5>| {
        (x * valid_f.clone().reshape([1, 1, nb, s, 1]))
            .sum_dim(3)
            .reshape([b, h, nb, d])
            / counts.clone()
    };
    let k_sum = mean(kb.clone());
    let q_sum = match mode {
        Mode::Mlm => mean(qb.clone()),
        // the first block has no past and its row is masked below
        Mode::Lm if nb == 1 => Tensor::zeros([b, h, 1, d], (&device, dtype)),
        Mode::Lm => {
            let zero = Tensor::zeros([b, h, 1, d], (&device, dtype));
            Tensor::cat(vec![zero, k_sum.clone().narrow(2, 0, nb - 1)], 2)
        }
    };
    let r = q_sum
        .matmul(k_sum.swap_dims(2, 3))
        .mul_scalar(scale / config.temperature);
    let perm = match mode {
        Mode::Mlm => sinkhorn_normalize(r, config.iters).exp(),
        Mode::Lm => {
            // true where c >= a: the own block and later ones
            let later = Tensor::<B, 2, Bool>::tril_mask([nb, nb], -1, &device)
                .unsqueeze::<4>()
                .expand([b, h, nb, nb]);
            let has_past: Vec<f32> = (0..nb).map(|a| if a > 0 { 1.0 } else { 0.0 }).collect();
            let has_past =
                Tensor::<B, 1>::from_data(TensorData::new(has_past, [nb]), (&device, dtype))
                    .reshape([1, 1, nb, 1]);
            softmax_f32(r.mask_fill(later, MASKED), 3) * has_past
        }
    };
    let sorted = |x: Tensor<B, 5>| {
        perm.clone()
            .matmul(x.reshape([b, h, nb, s * d]))
            .reshape([b, h, nb, s, d])
    };
    let ks = sorted(kb.clone());
    let vs = sorted(vb.clone());
    // share of real tokens in each sorted slot
    let real = perm.matmul(valid_f.reshape([1, 1, nb, s]).expand([b, h, nb, s]));
    let empty = real
        .clone()
        .lower_elem(1e-6)
        .reshape([b, h, nb, 1, s])
        .expand([b, h, nb, s, s]);
    let sorted_logits = (qb.clone().matmul(ks.swap_dims(3, 4)).mul_scalar(scale)
        + real.clamp_min(1e-30).log().reshape([b, h, nb, 1, s]))
    .mask_fill(empty, MASKED);
    let hidden: Vec<bool> = (0..nb)
        .flat_map(|a| {
            let valid = &valid;
            (0..s).flat_map(move |t1| {
                (0..s).map(move |t2| !valid[a * s + t2] || (mode == Mode::Lm && t2 > t1))
            })
        })
        .collect();
    let hidden = bool_tensor::<B, 3>(hidden, [nb, s, s], &device)
        .unsqueeze::<5>()
        .expand([b, h, nb, s, s]);
    let local_logits = qb
        .matmul(kb.swap_dims(3, 4))
        .mul_scalar(scale)
        .mask_fill(hidden, MASKED);
    let p = drop_probs(
        softmax_f32(Tensor::cat(vec![local_logits, sorted_logits], 4), 4),
        dropout,
    );
    let out = p.clone().narrow(4, 0, s).matmul(vb) + p.narrow(4, s, s).matmul(vs);
    out.reshape([b, h, nb * s, d]).narrow(2, 0, len)
}

/// Multi-head Sinkhorn attention.
#[derive(Module, Debug)]
pub struct Sinkhorn<B: Backend> {
    heads: MultiHead<B>,
    #[module(skip)]
    config: SinkhornConfig,
    #[module(skip)]
    mode: Mode,
}

impl<B: Backend> Sinkhorn<B> {
    pub(crate) fn new(heads: MultiHead<B>, config: SinkhornConfig, mode: Mode) -> Self {
        Sinkhorn {
            heads,
            config,
            mode,
        }
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let drop = self.heads.attention_dropout();
        let dropout = Some(&drop);
        self.heads.forward_with(x, |q, k, v| {
            sinkhorn_attention(q, k, v, &self.config, self.mode, dropout)
        })
    }
}
