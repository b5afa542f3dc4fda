//! Transformer blocks shared by all models: a pre-norm block (paper E.3)
//! over any [`AttentionConfig`], and the trunk that stacks them.
#![warn(missing_docs)]

pub mod precision;

use burn::nn::{Dropout, DropoutConfig, Gelu, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use combiner::kernel::{layer_norm, linear, residual};
use combiner::Mode;
use combiner_attention::{Attention, AttentionConfig};
use precision::to_dtype;
use serde::{Deserialize, Serialize};

/// Epsilon of the blocks' layer norms (burn's default).
const LN_EPSILON: f64 = 1e-5;

/// Shape of a transformer trunk. Serialized in model configs; unknown keys are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Model width.
    pub d_model: usize,
    /// Attention heads per layer.
    pub n_heads: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Hidden width of the MLP (the paper uses `4 * d_model`).
    pub d_ff: usize,
    /// Dropout after attention and MLP.
    #[serde(default)]
    pub dropout: f64,
    /// Dropout on the attention probabilities (0 = off).
    #[serde(default)]
    pub attention_dropout: f64,
    /// The attention every block uses.
    pub attention: AttentionConfig,
}

impl TrunkConfig {
    /// Builds the trunk for LM (causal) or MLM (bidirectional) attention.
    pub fn init<B: Backend>(&self, mode: Mode, device: &B::Device) -> Trunk<B> {
        Trunk {
            blocks: (0..self.n_layers)
                .map(|_| Block {
                    norm_attn: LayerNormConfig::new(self.d_model)
                        .with_epsilon(LN_EPSILON)
                        .init(device),
                    attn: self.attention.init_with(
                        self.d_model,
                        self.n_heads,
                        mode,
                        self.dropout,
                        self.attention_dropout,
                        device,
                    ),
                    norm_mlp: LayerNormConfig::new(self.d_model)
                        .with_epsilon(LN_EPSILON)
                        .init(device),
                    fc1: LinearConfig::new(self.d_model, self.d_ff).init(device),
                    fc2: LinearConfig::new(self.d_ff, self.d_model).init(device),
                    act: Gelu::new(),
                    dropout: DropoutConfig::new(self.dropout).init(),
                })
                .collect(),
            norm: LayerNormConfig::new(self.d_model)
                .with_epsilon(LN_EPSILON)
                .init(device),
        }
    }
}

/// Pre-norm block: `x + Attn(LN(x))`, then `x + MLP(LN(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    norm_attn: LayerNorm<B>,
    attn: Attention<B>,
    norm_mlp: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    act: Gelu,
    dropout: Dropout,
}

impl<B: Backend> Block<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    ///
    /// Layer norms run in the dtype of `x` (the residual stream); attention
    /// and MLP (with the dropout after it) run in the dtype of this block's
    /// `Linear` weights (bf16 in a [`precision::to_compute`] copy) and are
    /// cast back in the residual add.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let compute = self.fc1.weight.val().dtype();
        let h = to_dtype(layer_norm(&self.norm_attn, x.clone(), LN_EPSILON), compute);
        let x = residual(x, self.attn.forward(h));
        let h = to_dtype(layer_norm(&self.norm_mlp, x.clone(), LN_EPSILON), compute);
        let h = linear(&self.fc2, self.act.forward(linear(&self.fc1, h)));
        residual(x, self.dropout.forward(h))
    }
}

impl<B: Backend> Block<B> {
    /// The block with its attention's centroids moved one online k-means
    /// step towards the keys of `x` (see [`Attention::update_centroids`]),
    /// and the block's output for `x`.
    pub fn update_centroids(mut self, x: Tensor<B, 3>) -> (Self, Tensor<B, 3>) {
        let y = self.forward(x.clone());
        self.attn = self
            .attn
            .update_centroids(layer_norm(&self.norm_attn, x, LN_EPSILON));
        (self, y)
    }
}

/// The output head `layer` on `x` (the trunk's output, in the residual
/// stream's dtype): the product runs in the dtype of the head's weights
/// (the compute dtype in a [`precision::to_compute`] copy) and the logits
/// come back in the dtype of `x`, so that the loss is computed in it.
pub fn output_head<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let stream = x.dtype();
    let compute = layer.weight.val().dtype();
    to_dtype(linear(layer, to_dtype(x, compute)), stream)
}

/// A stack of pre-norm blocks with a final layer norm.
#[derive(Module, Debug)]
pub struct Trunk<B: Backend> {
    blocks: Vec<Block<B>>,
    norm: LayerNorm<B>,
}

impl<B: Backend> Trunk<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.blocks.iter().fold(x, |x, b| b.forward(x));
        layer_norm(&self.norm, x, LN_EPSILON)
    }

    /// True when some block's attention clusters with online k-means.
    pub fn has_centroids(&self) -> bool {
        self.blocks.iter().any(|b| b.attn.has_centroids())
    }

    /// Every block's k-means centroids moved one step towards the keys of
    /// that block's input when the trunk reads `x` (detached: no gradient).
    pub fn update_centroids(mut self, x: Tensor<B, 3>) -> Self {
        let mut x = x.detach();
        self.blocks = std::mem::take(&mut self.blocks)
            .into_iter()
            .map(|b| {
                let (b, y) = b.update_centroids(x.clone());
                x = y.detach();
                b
            })
            .collect();
        self
    }

    /// The centroids of every block that has them, `[heads, clusters, d_head]` each.
    pub fn centroids(&self) -> Vec<Tensor<B, 3>> {
        self.blocks
            .iter()
            .filter_map(|b| b.attn.centroids())
            .collect()
    }
}

/// A model whose attention may cluster tokens with online k-means (Routing,
/// Combiner-Learnable): the training loop moves the centroids after every
/// optimizer step with the step's input (Routing Transformer).
pub trait OnlineKmeans<I>: Sized {
    /// True when some layer has centroids.
    fn has_centroids(&self) -> bool;
    /// The model with every layer's centroids moved one step towards the
    /// keys that layer computes for `input`.
    fn update_centroids(self, input: &I) -> Self;
}

/// What a training objective reports per step; metrics read the synced form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Autoregressive image model: metric bits/dim.
    ImageBits,
    /// Language model: metric perplexity.
    Lm,
    /// Masked language model: perplexity over masked tokens.
    Mlm,
    /// Classification: metric accuracy.
    Classification,
}

impl Objective {
    /// The task metric of a mean loss in nats (and, for classification, an
    /// accuracy): `(name, value)`, e.g. `("bits/dim", 3.74)`.
    pub fn metric(self, loss: f64, accuracy: Option<f64>) -> (&'static str, f64) {
        match self {
            Objective::ImageBits => ("bits/dim", bits_per_dim(loss)),
            Objective::Lm | Objective::Mlm => ("perplexity", perplexity(loss)),
            Objective::Classification => ("accuracy", accuracy.unwrap_or(f64::NAN)),
        }
    }

    /// The metric as text: `bits/dim 3.7423`, `perplexity 41.20`, `accuracy 0.3160`.
    pub fn describe(self, loss: f64, accuracy: Option<f64>) -> String {
        let (name, value) = self.metric(loss, accuracy);
        describe_metric(name, value)
    }
}

/// A task metric `(name, value)` from [`Objective::metric`] as text:
/// `bits/dim 3.7423`, `perplexity 41.20`, `accuracy 0.3160`.
pub fn describe_metric(name: &str, value: f64) -> String {
    match (name, value) {
        ("perplexity", v) => format!("{name} {v:.2}"),
        (_, v) if v.is_nan() => "cross-entropy only".to_string(),
        (_, v) => format!("{name} {v:.4}"),
    }
}

/// Bits per dimension of a mean loss in nats per sub-pixel.
pub fn bits_per_dim(loss: f64) -> f64 {
    loss / std::f64::consts::LN_2
}

/// Perplexity of a mean loss in nats per token.
pub fn perplexity(loss: f64) -> f64 {
    loss.exp()
}

/// One step's output: the loss tensor (kept for backward) and counts.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// Mean loss in nats over `count` predictions, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Correct predictions (classification), `[1]`.
    pub correct: Option<Tensor<B, 1, Int>>,
    /// Number of predictions the loss averages over.
    pub count: usize,
    /// Input tokens in the batch (for throughput).
    pub tokens: usize,
    /// Which objective.
    pub objective: Objective,
}

/// A step's output read back to the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean loss in nats.
    pub loss: f64,
    /// Correct predictions, when the objective is classification.
    pub correct: Option<usize>,
    /// Predictions the loss averages over.
    pub count: usize,
    /// Input tokens.
    pub tokens: usize,
    /// Objective.
    pub objective: Objective,
}

impl<B: Backend> burn::train::ItemLazy for StepOutput<B> {
    type ItemSync = StepStats;

    fn sync(self) -> StepStats {
        let loss: f64 = self.loss.into_scalar().elem();
        StepStats {
            loss,
            correct: self.correct.map(|c| {
                let c: i64 = c.into_scalar().elem();
                c as usize
            }),
            count: self.count,
            tokens: self.tokens,
            objective: self.objective,
        }
    }
}

/// Mean cross-entropy (nats) of `logits: [n, classes]` against `targets: [n]`,
/// counting only rows where `weights: [n]` is 1.
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Option<Tensor<B, 1>>,
) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let logp = burn::tensor::activation::log_softmax(logits, 1);
    let picked = logp.gather(1, targets.reshape([n, 1])).reshape([n]).neg();
    match weights {
        None => picked.mean(),
        Some(w) => {
            let total = w.clone().sum().clamp_min(1.0);
            (picked * w).sum() / total
        }
    }
}
