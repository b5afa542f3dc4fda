//! Autoregressive image model over sub-pixels (paper 5.1.2, E.1/E.2).
//!
//! An image of `height x width x channels` 8-bit values is a sequence of
//! sub-pixel tokens in raster order (per pixel R, G, B). The model sees a
//! start token (id 256) followed by all but the last value and predicts every
//! value: 256-way softmax, metric bits/dim = mean cross-entropy / ln 2.

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

/// Start-of-image token id.
pub const START: u32 = 256;

/// Image model configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageArConfig {
    /// The transformer trunk (attention, width, depth).
    pub trunk: TrunkConfig,
    /// Image height in pixels.
    #[serde(default = "default_side")]
    pub height: usize,
    /// Image width in pixels.
    #[serde(default = "default_side")]
    pub width: usize,
    /// Channels per pixel.
    #[serde(default = "default_channels")]
    pub channels: usize,
}

fn default_side() -> usize {
    32
}
fn default_channels() -> usize {
    3
}

impl ImageArConfig {
    /// Sequence length: `height * width * channels`.
    pub fn seq_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Builds the model.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ImageAr<B> {
        let d = self.trunk.d_model;
        ImageAr {
            values: EmbeddingConfig::new(257, d).init(device),
            rows: EmbeddingConfig::new(self.height, d).init(device),
            cols: EmbeddingConfig::new(self.width, d).init(device),
            chans: EmbeddingConfig::new(self.channels, d).init(device),
            trunk: self.trunk.init(Mode::Lm, device),
            head: LinearConfig::new(d, 256).init(device),
            width: self.width,
            channels: self.channels,
        }
    }
}

/// Decoder-only transformer over sub-pixels.
#[derive(Module, Debug)]
pub struct ImageAr<B: Backend> {
    values: Embedding<B>,
    rows: Embedding<B>,
    cols: Embedding<B>,
    chans: Embedding<B>,
    trunk: Trunk<B>,
    head: Linear<B>,
    width: usize,
    channels: usize,
}

impl<B: Backend> ImageAr<B> {
    /// Logits over the 256 values of every position.
    ///
    /// # Shapes
    /// - `inputs`: `[batch, seq]` (start token then values), `seq <= height * width * channels`
    /// - output: `[batch, seq, 256]`
    pub fn forward(&self, inputs: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        output_head(&self.head, self.trunk.forward(self.embed(inputs)))
    }

    /// Value plus factorized row, column and channel position embeddings,
    /// `[batch, seq]` -> `[batch, seq, d_model]`.
    fn embed(&self, inputs: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, len] = inputs.dims();
        let device = inputs.device();
        let pos = crate::positions::<B>(b, len, &device);
        let per_row = (self.width * self.channels) as i64;
        let row = pos.clone().div_scalar(per_row);
        let col = pos
            .clone()
            .remainder_scalar(per_row)
            .div_scalar(self.channels as i64);
        let chan = pos.remainder_scalar(self.channels as i64);
        self.values.forward(inputs)
            + self.rows.forward(row)
            + self.cols.forward(col)
            + self.chans.forward(chan)
    }

    /// Loss and counts of a batch.
    pub fn forward_step(&self, batch: LmBatch<B>) -> StepOutput<B> {
        let [b, len] = batch.inputs.dims();
        let logits = self.forward(batch.inputs).reshape([b * len, 256]);
        let loss = masked_cross_entropy(logits, batch.targets.reshape([b * len]), None);
        StepOutput {
            loss,
            correct: None,
            count: b * len,
            tokens: b * len,
            objective: Objective::ImageBits,
        }
    }

    /// Samples `n` images (values in raster order), one position at a time.
    /// `uniform` supplies one number in `[0, 1)` per draw.
    pub fn sample(
        &self,
        n: usize,
        seq_len: usize,
        temperature: f64,
        mut uniform: impl FnMut() -> f64,
    ) -> Vec<Vec<u8>> {
        let device = self.head.weight.device();
        let mut seqs: Vec<Vec<u32>> = vec![vec![START]; n];
        for t in 0..seq_len {
            let flat: Vec<i64> = seqs.iter().flatten().map(|&x| x as i64).collect();
            let inputs = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [n, t + 1]), &device);
            let logits = self.forward(inputs).narrow(1, t, 1).reshape([n, 256]);
            let u: Vec<f64> = (0..n).map(|_| uniform()).collect();
            for (s, v) in seqs
                .iter_mut()
                .zip(crate::sample_rows(logits, temperature, &u))
            {
                s.push(v as u32);
            }
        }
        seqs.into_iter()
            .map(|s| s[1..].iter().map(|&v| v as u8).collect())
            .collect()
    }
}

impl<B: AutodiffBackend> TrainStep for ImageAr<B> {
    type Input = LmBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<StepOutput<B>> {
        let out = self.forward_step(batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl<B: Backend> InferenceStep for ImageAr<B> {
    type Input = LmBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> StepOutput<B> {
        self.forward_step(batch)
    }
}

impl<B: Backend> OnlineKmeans<LmBatch<B>> for ImageAr<B> {
    fn has_centroids(&self) -> bool {
        self.trunk.has_centroids()
    }

    fn update_centroids(mut self, batch: &LmBatch<B>) -> Self {
        let x = self.embed(batch.inputs.clone());
        self.trunk = self.trunk.update_centroids(x);
        self
    }
}
