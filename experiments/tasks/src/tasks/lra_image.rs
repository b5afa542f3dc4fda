//! LRA Image (Table 5): CIFAR-10 as 1,024 gray levels (32 x 32), 10 classes;
//! metric accuracy. Needs `combiner data prepare cifar10`.

use anyhow::{Context, Result};
use combiner::Mode;
use combiner_data::TokenSequence;
use combiner_data::{Cifar10, Split};
use combiner_models::lra::Pooling;
use serde::{Deserialize, Serialize};

use super::{classifier, classifier_len, truncate, Ctx, TaskSpec};
use crate::family::{Data, Prepared};

/// `[task] kind = "lra_image"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LraImage {
    /// Use only the first N training images (all 50,000 when absent).
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images for validation (all 10,000 when absent).
    #[serde(default)]
    pub valid_limit: Option<usize>,
    /// Pooling of the classifier.
    #[serde(default)]
    pub pooling: Pooling,
}

const LEN: usize = 1024;

impl TaskSpec for LraImage {
    fn name(&self) -> &'static str {
        "lra_image"
    }

    fn validate(&self) -> Result<()> {
        Ok(())
    }

    fn attention_shape(&self) -> (Mode, usize) {
        (Mode::Mlm, classifier_len(LEN, self.pooling))
    }

    fn prepare(&self, ctx: &Ctx) -> Result<Prepared> {
        let load = |split, limit| -> Result<Vec<_>> {
            let set = Cifar10::load(ctx.data_dir, split)
                .with_context(|| format!("loading CIFAR-10 from {}", ctx.data_dir.display()))?;
            Ok(TokenSequence::lra_image(&truncate(set.images, limit)))
        };
        let train = if ctx.need_train {
            load(Split::Train, self.train_limit)?
        } else {
            Vec::new()
        };
        let valid = load(Split::Test, self.valid_limit)?;
        Ok(Prepared::Classifier {
            model: classifier(ctx.trunk, 256, LEN, 10, self.pooling, u32::MAX),
            data: Data::new(train, valid),
            seq_len: LEN,
        })
    }
}
