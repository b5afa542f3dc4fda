//! Decoder language model (paper 5.1.1, E.3): token and learned position
//! embeddings, pre-norm trunk in LM mode, metric perplexity.

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use combiner::Mode;
use combiner_data::batcher::LmBatch;
use combiner_nn::{
    masked_cross_entropy, output_head, Objective, OnlineKmeans, StepOutput, Trunk, TrunkConfig,
};
use serde::{Deserialize, Serialize};

/// Language model configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmConfig {
    /// The transformer trunk.
    pub trunk: TrunkConfig,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence (position embeddings).
    pub max_len: usize,
}

impl LmConfig {
    /// Builds the model.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Lm<B> {
        let d = self.trunk.d_model;
        Lm {
            tokens: EmbeddingConfig::new(self.vocab_size, d).init(device),
            positions: EmbeddingConfig::new(self.max_len, d).init(device),
            trunk: self.trunk.init(Mode::Lm, device),
            head: LinearConfig::new(d, self.vocab_size).init(device),
            vocab: self.vocab_size,
        }
    }
}

/// Decoder-only language model.
#[derive(Module, Debug)]
pub struct Lm<B: Backend> {
    tokens: Embedding<B>,
    positions: Embedding<B>,
    trunk: Trunk<B>,
    head: Linear<B>,
    vocab: usize,
}

impl<B: Backend> Lm<B> {
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

    /// Loss and counts of a batch.
    pub fn forward_step(&self, batch: LmBatch<B>) -> StepOutput<B> {
        let [b, len] = batch.inputs.dims();
        let logits = self.forward(batch.inputs).reshape([b * len, self.vocab]);
        StepOutput {
            loss: masked_cross_entropy(logits, batch.targets.reshape([b * len]), None),
            correct: None,
            count: b * len,
            tokens: b * len,
            objective: Objective::Lm,
        }
    }

    /// Continues `prompt` by `n` tokens.
    pub fn sample(
        &self,
        prompt: &[u32],
        n: usize,
        temperature: f64,
        mut uniform: impl FnMut() -> f64,
    ) -> Vec<u32> {
        let device = self.head.weight.device();
        let mut seq = prompt.to_vec();
        let max_len = self.positions.weight.dims()[0];
        for _ in 0..n {
            let start = seq.len().saturating_sub(max_len);
            let window: Vec<i64> = seq[start..].iter().map(|&x| x as i64).collect();
            let len = window.len();
            let logits = self
                .forward(Tensor::from_data(
                    TensorData::new(window, [1, len]),
                    &device,
                ))
                .narrow(1, len - 1, 1)
                .reshape([1, self.vocab]);
            seq.push(crate::sample_rows(logits, temperature, &[uniform()])[0] as u32);
        }
        seq
    }
}

impl<B: AutodiffBackend> TrainStep for Lm<B> {
    type Input = LmBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<StepOutput<B>> {
        let out = self.forward_step(batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl<B: Backend> InferenceStep for Lm<B> {
    type Input = LmBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> StepOutput<B> {
        self.forward_step(batch)
    }
}

impl<B: Backend> OnlineKmeans<LmBatch<B>> for Lm<B> {
    fn has_centroids(&self) -> bool {
        self.trunk.has_centroids()
    }

    fn update_centroids(mut self, batch: &LmBatch<B>) -> Self {
        let x = self.embed(batch.inputs.clone());
        self.trunk = self.trunk.update_centroids(x);
        self
    }
}
