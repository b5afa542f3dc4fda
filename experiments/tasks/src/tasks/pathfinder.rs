//! LRA Pathfinder (Table 5): are the two markers joined by one dashed path?
//! Images are generated in code (32 x 32 by default: 1,024 gray levels);
//! the difficulty knobs of [`PathfinderConfig`] are exposed. Metric accuracy.

use anyhow::{Context, Result};
use combiner::Mode;
use combiner_data::pathfinder::{Pathfinder as Generator, PathfinderConfig};
use combiner_models::lra::Pooling;
use serde::{Deserialize, Serialize};

use super::{classifier, classifier_len, positive, sequences, Ctx, TaskSpec};
use crate::family::{Data, Prepared};

/// `[task] kind = "pathfinder"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pathfinder {
    /// Generator settings: `side`, `path_len`, `dash`, `gap`, `distractors`,
    /// `curvature`, `marker`.
    #[serde(default)]
    pub generator: PathfinderConfig,
    /// Training images generated.
    pub train_size: usize,
    /// Validation images generated (from another seed).
    pub valid_size: usize,
    /// Pooling of the classifier.
    #[serde(default)]
    pub pooling: Pooling,
}

const VALID_SEED: u64 = 2_000_003;

impl Pathfinder {
    fn seq_len(&self) -> usize {
        self.generator.side * self.generator.side
    }
}

impl TaskSpec for Pathfinder {
    fn name(&self) -> &'static str {
        "pathfinder"
    }

    fn validate(&self) -> Result<()> {
        positive("train_size", self.train_size)?;
        positive("valid_size", self.valid_size)?;
        positive("generator.side", self.generator.side)?;
        Ok(())
    }

    fn attention_shape(&self) -> (Mode, usize) {
        (Mode::Mlm, classifier_len(self.seq_len(), self.pooling))
    }

    fn prepare(&self, ctx: &Ctx) -> Result<Prepared> {
        let g = &self.generator;
        let gen = |seed, n| -> Result<Vec<_>> {
            if n == 0 {
                return Ok(Vec::new());
            }
            Ok(sequences(
                &Generator::generate(g, seed, n)
                    .context("generating Pathfinder")?
                    .examples,
            ))
        };
        let n_train = if ctx.need_train { self.train_size } else { 0 };
        eprintln!(
            "generating Pathfinder {}x{}: {n_train} train + {} valid images",
            g.side, g.side, self.valid_size
        );
        let train = gen(ctx.seed, n_train)?;
        let valid = gen(ctx.seed.wrapping_add(VALID_SEED), self.valid_size)?;
        Ok(Prepared::Classifier {
            // 256 gray levels; the classifier's padding id is never produced
            // because every image fills its sequence
            model: classifier(ctx.trunk, 256, self.seq_len(), 2, self.pooling, u32::MAX),
            data: Data::new(train, valid),
            seq_len: self.seq_len(),
        })
    }
}
