//! Cosine learning-rate schedule with linear warm-up (paper E.3).

use burn::lr_scheduler::LrScheduler;
use burn::optim::LearningRate;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to
/// `peak * final_fraction` at `total` steps. The step count is the whole
/// state, saved in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub peak: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
    /// Final learning rate as a fraction of the peak.
    pub final_fraction: f64,
    /// Steps taken so far.
    pub step: usize,
}

impl WarmupCosine {
    /// The rate at step `t` (1-based: the first optimizer step is `t = 1`).
    pub fn rate(&self, t: usize) -> f64 {
        if self.warmup > 0 && t <= self.warmup {
            return self.peak * t as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((t - self.warmup) as f64 / span).min(1.0);
        let floor = self.peak * self.final_fraction;
        floor + (self.peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

impl LrScheduler for WarmupCosine {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        self.step += 1;
        self.rate(self.step)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.step = record;
        self
    }
}
