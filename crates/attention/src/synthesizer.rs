//! Synthesizer (Tay et al. 2021, "Synthesizer: Rethinking Self-Attention in
//! Transformer Models"): attention weights synthesized without query-key
//! dot products.
//!
//! - Dense: `B_i = W2 relu(W1 x_i)`, one row of logits per token from the
//!   token alone (`x_i` is the head's query projection, `W1, W2` shared by
//!   the heads).
//! - Random: a learned (or frozen) `[heads, max_len, max_len]` logit matrix
//!   independent of the input.
//!
//! Both cut to the first `L` rows/columns and are masked causally in LM
//! mode. Cost `O(L * max_len)`; sequences longer than `max_len` are refused.
//! The key projection of the shared multi-head wrapper is not used (random:
//! nor the query projection) and receives no gradient.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::Distribution;
use combiner::softmax_f32;
use combiner::{Mode, MultiHead};
use serde::{Deserialize, Serialize};

use crate::util::MASKED;
use crate::AttentionError;

/// Which synthesizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synthesis {
    /// Logits from each token by a two-layer MLP.
    #[default]
    Dense,
    /// Logits are a parameter matrix.
    Random,
}

/// Hyperparameters of the synthesizer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthesizerConfig {
    /// Dense or random.
    pub synthesis: Synthesis,
    /// Longest sequence (width of the synthesized logit rows).
    pub max_len: usize,
    /// Random synthesizer: train the logit matrix (`false` = fixed random).
    pub trainable: bool,
}

impl Default for SynthesizerConfig {
    fn default() -> Self {
        SynthesizerConfig {
            synthesis: Synthesis::Dense,
            max_len: 1024,
            trainable: true,
        }
    }
}

impl SynthesizerConfig {
    pub(crate) fn validate(&self) -> Result<(), AttentionError> {
        if self.max_len == 0 {
            return Err(AttentionError::invalid(
                "synthesizer",
                "max_len must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Multi-head synthesizer attention.
#[derive(Module, Debug)]
pub struct Synthesizer<B: Backend> {
    heads: MultiHead<B>,
    w1: Option<Linear<B>>,
    w2: Option<Linear<B>>,
    random: Option<Param<Tensor<B, 3>>>,
    #[module(skip)]
    mode: Mode,
    #[module(skip)]
    max_len: usize,
}

impl<B: Backend> Synthesizer<B> {
    pub(crate) fn new(
        heads: MultiHead<B>,
        n_heads: usize,
        config: &SynthesizerConfig,
        mode: Mode,
        device: &B::Device,
    ) -> Self {
        let d = heads.d_head();
        let dense = config.synthesis == Synthesis::Dense;
        let random = (!dense).then(|| {
            let r = Tensor::random(
                [n_heads, config.max_len, config.max_len],
                Distribution::Normal(0.0, 1.0),
                device,
            );
            Param::from_tensor(r).set_require_grad(config.trainable)
        });
        Synthesizer {
            heads,
            w1: dense.then(|| LinearConfig::new(d, d).init(device)),
            w2: dense.then(|| LinearConfig::new(d, config.max_len).init(device)),
            random,
            mode,
            max_len: config.max_len,
        }
    }

    /// Synthesized logits for a sequence of length `len`.
    ///
    /// # Shapes
    /// - `q`: `[batch, heads, seq, d_head]` -> `[batch, heads, seq, seq]`
    pub fn logits(&self, q: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, len, _] = q.dims();
        assert!(
            len <= self.max_len,
            "synthesizer: sequence length {len} exceeds max_len {}; raise max_len in the config",
            self.max_len
        );
        match (&self.w1, &self.w2, &self.random) {
            (Some(w1), Some(w2), _) => w2.forward(relu(w1.forward(q))).narrow(3, 0, len),
            (_, _, Some(r)) => combiner::to_dtype(r.val(), q.dtype())
                .slice([0..h, 0..len, 0..len])
                .unsqueeze::<4>()
                .expand([b, h, len, len]),
            _ => unreachable!("a synthesizer is dense or random"),
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
        self.heads.forward_with(x, |q, _k, v| {
            let [b, h, len, _] = q.dims();
            let logits = self.logits(q);
            let logits = match self.mode {
                Mode::Lm => logits.mask_fill(
                    Tensor::<B, 2, Bool>::tril_mask([len, len], 0, &v.device())
                        .unsqueeze::<4>()
                        .expand([b, h, len, len]),
                    MASKED,
                ),
                Mode::Mlm => logits,
            };
            crate::util::drop_probs(softmax_f32(logits, 3), dropout).matmul(v)
        })
    }
}
