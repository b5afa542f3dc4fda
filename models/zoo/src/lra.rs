//! Long Range Arena classifiers (paper 5.2.1, E.4): a bidirectional encoder
//! with CLS or MEAN pooling, and a dual encoder for Retrieval.

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use combiner::Mode;
use combiner_data::batcher::{ClassificationBatch, PairBatch};
use combiner_nn::{
    masked_cross_entropy, output_head, Objective, OnlineKmeans, StepOutput, Trunk, TrunkConfig,
};
use serde::{Deserialize, Serialize};

/// How a sequence becomes one vector (the paper tries both per model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// A learned CLS token in front of the sequence.
    Cls,
    /// Mean over non-padding positions.
    #[default]
    Mean,
}

/// LRA classifier configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LraConfig {
    /// The transformer trunk.
    pub trunk: TrunkConfig,
    /// Input vocabulary size.
    pub vocab_size: usize,
    /// Longest input sequence.
    pub max_len: usize,
    /// Number of classes.
    pub classes: usize,
    /// Pooling.
    #[serde(default)]
    pub pooling: Pooling,
    /// Padding token id (excluded from MEAN pooling).
    #[serde(default)]
    pub pad_token: u32,
}

impl LraConfig {
    /// Builds the model.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Lra<B> {
        let d = self.trunk.d_model;
        Lra {
            // the extra id is the CLS token
            tokens: EmbeddingConfig::new(self.vocab_size + 1, d).init(device),
            positions: EmbeddingConfig::new(self.max_len + 1, d).init(device),
            trunk: self.trunk.init(Mode::Mlm, device),
            hidden: LinearConfig::new(d, d).init(device),
            head: LinearConfig::new(d, self.classes).init(device),
            dual_head: LinearConfig::new(4 * d, self.classes).init(device),
            pooling: self.pooling,
            cls: self.vocab_size as i64,
            pad: self.pad_token as i64,
            classes: self.classes,
        }
    }
}

/// Encoder classifier.
#[derive(Module, Debug)]
pub struct Lra<B: Backend> {
    tokens: Embedding<B>,
    positions: Embedding<B>,
    trunk: Trunk<B>,
    hidden: Linear<B>,
    head: Linear<B>,
    dual_head: Linear<B>,
    #[module(skip)]
    pooling: Pooling,
    cls: i64,
    pad: i64,
    classes: usize,
}

impl<B: Backend> Lra<B> {
    /// The pooled sequence representation.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` -> `[batch, d_model]`
    pub fn encode(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, _] = tokens.dims();
        let not_pad = tokens.clone().not_equal_elem(self.pad).float(); // [b, len]
        let h = self.trunk.forward(self.embed(tokens));
        let d = h.dims()[2];
        match self.pooling {
            Pooling::Cls => h.narrow(1, 0, 1).reshape([b, d]),
            Pooling::Mean => {
                let w = not_pad.unsqueeze_dim::<3>(2);
                (h * w.clone()).sum_dim(1).reshape([b, d])
                    / w.sum_dim(1).reshape([b, 1]).clamp_min(1.0)
            }
        }
    }

    /// Token and position embeddings, with the CLS token in front under CLS
    /// pooling: `[batch, len]` -> `[batch, len (+ 1), d_model]`.
    fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, len] = tokens.dims();
        let device = tokens.device();
        let (tokens, len) = match self.pooling {
            Pooling::Cls => (
                Tensor::cat(vec![Tensor::full([b, 1], self.cls, &device), tokens], 1),
                len + 1,
            ),
            Pooling::Mean => (tokens, len),
        };
        let pos = crate::positions::<B>(b, len, &device);
        self.tokens.forward(tokens) + self.positions.forward(pos)
    }

    /// The transformer trunk.
    pub fn trunk(&self) -> &Trunk<B> {
        &self.trunk
    }

    /// Class logits of single sequences.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` -> `[batch, classes]`
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let h = burn::tensor::activation::gelu(self.hidden.forward(self.encode(tokens)));
        output_head(&self.head, h)
    }

    /// Dual-encoder logits for pairs (LRA Retrieval): features `[u, v, u*v, u-v]`.
    ///
    /// # Shapes
    /// - `a`, `b`: `[batch, seq]` -> `[batch, classes]`
    pub fn forward_pair(&self, a: Tensor<B, 2, Int>, b: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let u = self.encode(a);
        let v = self.encode(b);
        let f = Tensor::cat(vec![u.clone(), v.clone(), u.clone() * v.clone(), u - v], 1);
        self.dual_head.forward(f)
    }

    /// Loss, accuracy counts.
    pub fn forward_step(&self, batch: ClassificationBatch<B>) -> StepOutput<B> {
        let [b, len] = batch.tokens.dims();
        let logits = self.forward(batch.tokens);
        let pred = logits.clone().argmax(1).reshape([b]);
        let correct = pred.equal(batch.labels.clone()).int().sum();
        let _ = self.classes;
        StepOutput {
            loss: masked_cross_entropy(logits, batch.labels, None),
            correct: Some(correct),
            count: b,
            tokens: b * len,
            objective: Objective::Classification,
        }
    }
}

impl<B: AutodiffBackend> TrainStep for Lra<B> {
    type Input = ClassificationBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: ClassificationBatch<B>) -> TrainOutput<StepOutput<B>> {
        let out = self.forward_step(batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl<B: Backend> InferenceStep for Lra<B> {
    type Input = ClassificationBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: ClassificationBatch<B>) -> StepOutput<B> {
        self.forward_step(batch)
    }
}

/// The dual encoder of LRA Retrieval: one shared [`Lra`] encoder reads both
/// documents and [`Lra::forward_pair`] classifies the pair.
#[derive(Module, Debug)]
pub struct Retrieval<B: Backend> {
    /// The shared encoder and heads.
    pub encoder: Lra<B>,
}

impl LraConfig {
    /// Builds the dual encoder for document pairs.
    pub fn init_retrieval<B: Backend>(&self, device: &B::Device) -> Retrieval<B> {
        Retrieval {
            encoder: self.init(device),
        }
    }
}

impl<B: Backend> Retrieval<B> {
    /// Loss and correct count of a batch of pairs.
    pub fn forward_step(&self, batch: PairBatch<B>) -> StepOutput<B> {
        let [b, len] = batch.a.dims();
        let logits = self.encoder.forward_pair(batch.a, batch.b);
        let pred = logits.clone().argmax(1).reshape([b]);
        let correct = pred.equal(batch.labels.clone()).int().sum();
        StepOutput {
            loss: masked_cross_entropy(logits, batch.labels, None),
            correct: Some(correct),
            count: b,
            tokens: 2 * b * len,
            objective: Objective::Classification,
        }
    }
}

impl<B: AutodiffBackend> TrainStep for Retrieval<B> {
    type Input = PairBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: PairBatch<B>) -> TrainOutput<StepOutput<B>> {
        let out = self.forward_step(batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl<B: Backend> InferenceStep for Retrieval<B> {
    type Input = PairBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: PairBatch<B>) -> StepOutput<B> {
        self.forward_step(batch)
    }
}

impl<B: Backend> OnlineKmeans<ClassificationBatch<B>> for Lra<B> {
    fn has_centroids(&self) -> bool {
        self.trunk.has_centroids()
    }

    fn update_centroids(mut self, batch: &ClassificationBatch<B>) -> Self {
        let x = self.embed(batch.tokens.clone());
        self.trunk = self.trunk.update_centroids(x);
        self
    }
}

impl<B: Backend> OnlineKmeans<PairBatch<B>> for Retrieval<B> {
    fn has_centroids(&self) -> bool {
        self.encoder.trunk.has_centroids()
    }

    fn update_centroids(mut self, batch: &PairBatch<B>) -> Self {
        // both documents of every pair, as one batch
        let tokens = Tensor::cat(vec![batch.a.clone(), batch.b.clone()], 0);
        let x = self.encoder.embed(tokens);
        self.encoder.trunk = self.encoder.trunk.update_centroids(x);
        self
    }
}
