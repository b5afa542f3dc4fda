//! Learning-rate schedules with linear warm-up: cosine decay (paper E.3)
//! and reciprocal-square-root decay (LRA's ListOps and Text configs).

use burn::lr_scheduler::LrScheduler;
use burn::optim::LearningRate;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// How the rate falls after the warm-up (`[train] schedule`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Cosine from `peak` to `peak * final_fraction` at `total` steps (paper E.3).
    #[default]
    Cosine,
    /// `peak * sqrt(warmup / t)`: LRA's `constant * linear_warmup *
    /// rsqrt_decay` with `constant = peak * sqrt(warmup)`; `final_fraction`
    /// and `total` do not apply.
    Rsqrt,
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then [`Decay`]. The
/// step count is the whole state, saved in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarmupDecay {
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
    /// The decay after the warm-up.
    #[serde(default)]
    pub decay: Decay,
}

impl WarmupDecay {
    /// The rate at step `t` (1-based: the first optimizer step is `t = 1`).
    pub fn rate(&self, t: usize) -> f64 {
        if self.warmup > 0 && t <= self.warmup {
            return self.peak * t as f64 / self.warmup as f64;
        }
        if self.decay == Decay::Rsqrt {
            return self.peak * (self.warmup.max(1) as f64 / t.max(1) as f64).sqrt();
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((t - self.warmup) as f64 / span).min(1.0);
        let floor = self.peak * self.final_fraction;
        floor + (self.peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

impl LrScheduler for WarmupDecay {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(decay: Decay) -> WarmupDecay {
        WarmupDecay {
            peak: 1.6e-3,
            warmup: 1000,
            total: 5000,
            final_fraction: 0.1,
            step: 0,
            decay,
        }
    }

    #[test]
    fn rsqrt_decay_is_lras_constant_times_warmup_times_rsqrt() {
        let s = schedule(Decay::Rsqrt);
        // LRA: 0.05 * min(1, t / w) / sqrt(max(t, w)); peak = 0.05 / sqrt(w)
        let constant = s.peak * (s.warmup as f64).sqrt();
        for t in [1, 10, 500, 1000, 1001, 4000, 20_000] {
            let w = s.warmup as f64;
            let lra = constant * (t as f64 / w).min(1.0) / (t as f64).max(w).sqrt();
            assert!((s.rate(t) - lra).abs() < 1e-12 * constant, "step {t}");
        }
        assert!((s.rate(4000) - s.peak / 2.0).abs() < 1e-15);
    }

    #[test]
    fn cosine_ends_at_the_final_fraction() {
        let s = schedule(Decay::Cosine);
        assert!((s.rate(1000) - s.peak).abs() < 1e-15);
        assert!((s.rate(5000) - s.peak * 0.1).abs() < 1e-12);
        assert!(s.rate(3000) < s.peak && s.rate(3000) > s.peak * 0.1);
    }
}
