//! LRA ListOps (Table 5): nested MIN/MAX/MEDIAN/SUM_MOD expressions,
//! generated in code with LRA's process; 10 classes; metric accuracy.

use anyhow::{Context, Result};
use combiner::Mode;
use combiner_data::listops::{self, ListOps, ListOpsConfig};
use combiner_models::lra::Pooling;
use serde::{Deserialize, Serialize};

use super::{classifier, classifier_len, positive, sequences, Ctx, TaskSpec};
use crate::family::{Data, Prepared};

/// `[task] kind = "listops"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listops {
    /// Generator settings (LRA's by default).
    #[serde(default)]
    pub generator: ListOpsConfig,
    /// Training examples generated.
    pub train_size: usize,
    /// Validation examples generated (from another seed).
    pub valid_size: usize,
    /// Pooling of the classifier.
    #[serde(default)]
    pub pooling: Pooling,
}

/// The validation set's seed offset from `train.seed`.
const VALID_SEED: u64 = 1_000_003;

impl TaskSpec for Listops {
    fn name(&self) -> &'static str {
        "listops"
    }

    fn validate(&self) -> Result<()> {
        positive("train_size", self.train_size)?;
        positive("valid_size", self.valid_size)?;
        let g = &self.generator;
        positive("generator.seq_len", g.seq_len)?;
        anyhow::ensure!(
            g.min_length < g.max_length && g.max_length <= g.seq_len + 1,
            "task.generator: expected min_length < max_length <= seq_len + 1, got {} / {} / {}",
            g.min_length,
            g.max_length,
            g.seq_len
        );
        Ok(())
    }

    fn attention_shape(&self) -> (Mode, usize) {
        (
            Mode::Mlm,
            classifier_len(self.generator.seq_len, self.pooling),
        )
    }

    fn prepare(&self, ctx: &Ctx) -> Result<Prepared> {
        let g = &self.generator;
        let n_train = if ctx.need_train { self.train_size } else { 0 };
        eprintln!(
            "generating ListOps: {n_train} train + {} valid examples",
            self.valid_size
        );
        let train = if n_train > 0 {
            ListOps::generate(g, ctx.seed, n_train)
                .context("generating ListOps")?
                .examples
        } else {
            Vec::new()
        };
        let valid = ListOps::generate(g, ctx.seed.wrapping_add(VALID_SEED), self.valid_size)
            .context("generating ListOps")?;
        Ok(Prepared::Classifier {
            model: classifier(
                ctx.trunk,
                listops::VOCAB,
                g.seq_len,
                10,
                self.pooling,
                listops::PAD,
            ),
            data: Data::new(sequences(&train), sequences(&valid.examples)),
            seq_len: g.seq_len,
        })
    }
}
