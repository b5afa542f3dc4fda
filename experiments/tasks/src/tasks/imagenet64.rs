//! ImageNet-64 density estimation (Table 1): a decoder over the 12,288
//! sub-pixels of each 64 x 64 image; metric bits/dim. Reads the Tiny-ImageNet
//! stand-in prepared by `combiner data prepare tiny-imagenet-train` /
//! `tiny-imagenet-val`, or, when `train_files`/`valid_files` are given, the
//! real downsampled-ImageNet `.npz` batches (`train_data_batch_*.npz`,
//! `val_data.npz`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use combiner::Mode;
use combiner_data::{ImageNet64, Split};
use combiner_models::image_ar::ImageArConfig;
use serde::{Deserialize, Serialize};

use super::{image_items, truncate, Ctx, TaskSpec};
use crate::family::{Data, Prepared};

/// `[task] kind = "imagenet64"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Imagenet64 {
    /// Real ImageNet-64 training batches (`.npz`); the stand-in when empty.
    #[serde(default)]
    pub train_files: Vec<PathBuf>,
    /// Real ImageNet-64 validation batch(es) (`val_data.npz`).
    #[serde(default)]
    pub valid_files: Vec<PathBuf>,
    /// Use only the first N training images.
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Use only the first N validation images.
    #[serde(default)]
    pub valid_limit: Option<usize>,
}

impl TaskSpec for Imagenet64 {
    fn name(&self) -> &'static str {
        "imagenet64"
    }

    fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.train_files.is_empty() == self.valid_files.is_empty(),
            "task.train_files and task.valid_files: give both (real ImageNet-64) or neither (the Tiny-ImageNet stand-in)"
        );
        Ok(())
    }

    fn attention_shape(&self) -> (Mode, usize) {
        (Mode::Lm, 64 * 64 * 3)
    }

    fn prepare(&self, ctx: &Ctx) -> Result<Prepared> {
        let load = |split: Split, limit| -> Result<_> {
            let files = if split == Split::Train {
                &self.train_files
            } else {
                &self.valid_files
            };
            let set = if files.is_empty() {
                ImageNet64::load(ctx.data_dir, split).with_context(|| {
                    format!(
                        "loading the Tiny-ImageNet stand-in from {}",
                        ctx.data_dir.display()
                    )
                })?
            } else {
                ImageNet64::from_npz_files(files, 1000)?
            };
            Ok(image_items(truncate(set.images, limit)))
        };
        let train = if ctx.need_train {
            load(Split::Train, self.train_limit)?
        } else {
            image_items::<combiner_data::Image64>(Vec::new())
        };
        Ok(Prepared::Image {
            model: ImageArConfig {
                trunk: ctx.trunk.clone(),
                height: 64,
                width: 64,
                channels: 3,
            },
            data: Data {
                train,
                valid: load(Split::Valid, self.valid_limit)?,
                extra: Vec::new(),
            },
        })
    }
}
