//! CIFAR-10 density estimation (Table 1): a decoder over the 3,072
//! sub-pixels of each 32 x 32 image; metric bits/dim. Needs
//! `combiner data prepare cifar10` (the shipped JPEG stand-in, or the
//! official binary batches for numbers comparable with the paper).

use anyhow::{Context, Result};
use combiner::Mode;
use combiner_data::{Cifar10 as Images, Split};
use combiner_models::image_ar::ImageArConfig;
use serde::{Deserialize, Serialize};

use super::{image_items, truncate, Ctx, TaskSpec};
use crate::family::{Data, Prepared};

/// `[task] kind = "cifar10"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cifar10 {
    /// Use only the first N training images (all 50,000 when absent).
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images for validation (all 10,000 when absent).
    #[serde(default)]
    pub valid_limit: Option<usize>,
}

impl TaskSpec for Cifar10 {
    fn name(&self) -> &'static str {
        "cifar10"
    }

    fn validate(&self) -> Result<()> {
        Ok(())
    }

    fn attention_shape(&self) -> (Mode, usize) {
        (Mode::Lm, 32 * 32 * 3)
    }

    fn prepare(&self, ctx: &Ctx) -> Result<Prepared> {
        let load = |split, limit| -> Result<_> {
            let set = Images::load(ctx.data_dir, split)
                .with_context(|| format!("loading CIFAR-10 from {}", ctx.data_dir.display()))?;
            Ok(image_items(truncate(set.images, limit)))
        };
        let train = if ctx.need_train {
            load(Split::Train, self.train_limit)?
        } else {
            image_items::<combiner_data::CifarImage>(Vec::new())
        };
        Ok(Prepared::Image {
            model: ImageArConfig {
                trunk: ctx.trunk.clone(),
                height: 32,
                width: 32,
                channels: 3,
            },
            data: Data {
                train,
                valid: load(Split::Test, self.valid_limit)?,
                extra: Vec::new(),
            },
        })
    }
}
