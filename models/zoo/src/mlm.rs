//! Encoder masked language model (paper 5.2.2, E.5): bidirectional trunk,
//! loss and perplexity over the masked positions only (Table 6).

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use combiner::Mode;
use combiner_data::batcher::MlmBatch;
use combiner_nn::{
    masked_cross_entropy, output_head, Objective, OnlineKmeans, StepOutput, Trunk, TrunkConfig,
};
use serde::{Deserialize, Serialize};

/// Masked LM configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlmConfig {
    /// The transformer trunk.
    pub trunk: TrunkConfig,
    /// Vocabulary size (including the mask token).
    pub vocab_size: usize,
    /// Longest sequence.
    pub max_len: usize,
}

impl MlmConfig {
    /// Builds the model.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlm<B> {
        let d = self.trunk.d_model;
        Mlm {
            tokens: EmbeddingConfig::new(self.vocab_size, d).init(device),
            positions: EmbeddingConfig::new(self.max_len, d).init(device),
            trunk: self.trunk.init(Mode::Mlm, device),
            head: LinearConfig::new(d, self.vocab_size).init(device),
            vocab: self.vocab_size,
        }
    }
}

/// Bidirectional encoder with a token prediction head.
#[derive(Module, Debug)]
pub struct Mlm<B: Backend> {
    tokens: Embedding<B>,
    positions: Embedding<B>,
    trunk: Trunk<B>,
    head: Linear<B>,
    vocab: usize,
}

impl<B: Backend> Mlm<B> {
    /// # Shapes
    /// - `inputs`: `[batch, seq]` -> logits `[batch, seq, vocab]`
    pub fn forward(&self, inputs: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        output_head(&self.head, self.trunk.forward(self.embed(inputs)))
    }

    /// Token plus position embeddings, `[batch, seq]` -> `[batch, seq, d_model]`.
    fn embed(&self, inputs: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, len] = inputs.dims();
        let pos = crate::positions::<B>(b, len, &inputs.device());
        self.tokens.forward(inputs) + self.positions.forward(pos)
    }

    /// Loss over masked positions and counts.
    pub fn forward_step(&self, batch: MlmBatch<B>) -> StepOutput<B> {
        let [b, len] = batch.inputs.dims();
        let weights = batch.mask.float().reshape([b * len]);
        let count: f64 = weights.clone().sum().into_scalar().elem();
        let logits = self.forward(batch.inputs).reshape([b * len, self.vocab]);
        StepOutput {
            loss: masked_cross_entropy(logits, batch.targets.reshape([b * len]), Some(weights)),
            correct: None,
            count: count as usize,
            tokens: b * len,
            objective: Objective::Mlm,
        }
    }
}

impl<B: AutodiffBackend> TrainStep for Mlm<B> {
    type Input = MlmBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: MlmBatch<B>) -> TrainOutput<StepOutput<B>> {
        let out = self.forward_step(batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl<B: Backend> InferenceStep for Mlm<B> {
    type Input = MlmBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: MlmBatch<B>) -> StepOutput<B> {
        self.forward_step(batch)
    }
}

impl<B: Backend> OnlineKmeans<MlmBatch<B>> for Mlm<B> {
    fn has_centroids(&self) -> bool {
        self.trunk.has_centroids()
    }

    fn update_centroids(mut self, batch: &MlmBatch<B>) -> Self {
        let x = self.embed(batch.inputs.clone());
        self.trunk = self.trunk.update_centroids(x);
        self
    }
}
