//! A run's `[train]` table: optimization, checkpointing and precision. A
//! leaf module: the config reader and the task families both read it.

use serde::{Deserialize, Serialize};

/// Optimization settings (paper E.3: Adam with clipping, warm-up + cosine).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Optimizer steps.
    pub steps: usize,
    /// Items per batch over all devices (global batch = batch_size * grad_accumulation).
    pub batch_size: usize,
    /// Batches per optimizer step.
    #[serde(default = "one")]
    pub grad_accumulation: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    #[serde(default)]
    pub warmup: usize,
    /// Decay after the warm-up: `cosine` (default, paper E.3) or `rsqrt`
    /// (LRA's ListOps and Text configs).
    #[serde(default)]
    pub schedule: combiner_train::Decay,
    /// Final learning rate as a fraction of the peak (cosine only).
    #[serde(default = "final_fraction")]
    pub final_lr_fraction: f64,
    /// AdamW weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Gradient norm clipping (none when absent).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Evaluate and checkpoint every N steps.
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    #[serde(default = "two")]
    pub keep_checkpoints: usize,
    /// Seed of initialization, data generation and order.
    #[serde(default)]
    pub seed: u64,
    /// `f32` (default), or `bf16` / `f16` mixed precision (tch and cuda):
    /// matmuls and attention in the low dtype (softmax row sums accumulated
    /// in f32), f32 master weights, optimizer state, layer norms and loss.
    #[serde(default)]
    pub precision: combiner_nn::precision::Precision,
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn final_fraction() -> f64 {
    0.1
}
