//! The tasks of the paper, one file each. A task turns its `[task]` table
//! into data and a model family ([`Prepared`]); everything after that (the
//! training loop, evaluation, sampling, the run directory) is shared.
//!
//! Adding a task: write `tasks/<name>.rs` with a settings struct that
//! implements [`TaskSpec`], then add one arm to [`Task`] and one line to
//! [`Task::spec`].

use std::path::Path;

use anyhow::Result;
use combiner::Mode;
use combiner_nn::TrunkConfig;
use serde::{Deserialize, Serialize};

use crate::family::Prepared;

pub mod cifar10;
pub mod imagenet64;
pub mod listops;
pub mod lm;
pub mod lra_image;
pub mod lra_retrieval;
pub mod lra_text;
pub mod mlm;
pub mod pathfinder;

/// Which data the run trains on, and so which model family and metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// LRA ListOps, generated in code (10 classes, accuracy).
    Listops(listops::Listops),
    /// CIFAR-10 density estimation (bits/dim), Table 1.
    Cifar10(cifar10::Cifar10),
    /// ImageNet-64 density estimation (bits/dim), Table 1.
    Imagenet64(imagenet64::Imagenet64),
    /// Causal language model (perplexity), Tables 2 and 3.
    Lm(lm::Lm),
    /// Masked language model (masked perplexity), Table 6.
    Mlm(mlm::Mlm),
    /// LRA Text: byte-level IMDB sentiment (accuracy), Table 5.
    LraText(lra_text::LraText),
    /// LRA Retrieval: document matching with a dual encoder (accuracy), Table 5.
    LraRetrieval(lra_retrieval::LraRetrieval),
    /// LRA Image: grayscale CIFAR-10 classification (accuracy), Table 5.
    LraImage(lra_image::LraImage),
    /// LRA Pathfinder: are the two markers connected (accuracy), Table 5.
    Pathfinder(pathfinder::Pathfinder),
}

impl Task {
    /// Every task kind as written in `[task] kind = ...`.
    pub const KINDS: [&'static str; 9] = [
        "listops",
        "cifar10",
        "imagenet64",
        "lm",
        "mlm",
        "lra_text",
        "lra_retrieval",
        "lra_image",
        "pathfinder",
    ];

    /// The task's settings as the common interface.
    pub fn spec(&self) -> &dyn TaskSpec {
        match self {
            Task::Listops(t) => t,
            Task::Cifar10(t) => t,
            Task::Imagenet64(t) => t,
            Task::Lm(t) => t,
            Task::Mlm(t) => t,
            Task::LraText(t) => t,
            Task::LraRetrieval(t) => t,
            Task::LraImage(t) => t,
            Task::Pathfinder(t) => t,
        }
    }

    /// The `kind` of this task.
    pub fn name(&self) -> &'static str {
        self.spec().name()
    }
}

/// What a task's `prepare` may use.
pub struct Ctx<'a> {
    /// Prepared datasets (`combiner data prepare`).
    pub data_dir: &'a Path,
    /// The run directory (a trained tokenizer is kept here).
    pub run_dir: &'a Path,
    /// The trunk the model family wraps.
    pub trunk: &'a TrunkConfig,
    /// `train.seed`: data generation and splits follow it.
    pub seed: u64,
    /// False for `eval`/`sample`: the training set may be left empty.
    pub need_train: bool,
}

/// One task: its data, its model family and its checks.
pub trait TaskSpec {
    /// The `kind` in `[task]`.
    fn name(&self) -> &'static str;
    /// Checks the task's own settings (sizes, lengths), naming the key.
    fn validate(&self) -> Result<()>;
    /// The attention's mode and sequence length, to check the attention
    /// against before any model is built.
    fn attention_shape(&self) -> (Mode, usize);
    /// Loads or generates the data and configures the model family.
    fn prepare(&self, ctx: &Ctx) -> Result<Prepared>;
}

/// `Err` naming `task.<key>` when `v` is zero.
pub(crate) fn positive(key: &str, v: usize) -> Result<()> {
    anyhow::ensure!(v > 0, "task.{key} = 0: expected a positive integer");
    Ok(())
}

/// Keeps the first `limit` items (all when `None`).
pub(crate) fn truncate<T>(mut v: Vec<T>, limit: Option<usize>) -> Vec<T> {
    if let Some(n) = limit {
        v.truncate(n);
    }
    v
}

/// An LRA classifier over `seq_len` tokens of a `vocab`-id alphabet.
pub(crate) fn classifier(
    trunk: &TrunkConfig,
    vocab_size: usize,
    seq_len: usize,
    classes: usize,
    pooling: combiner_models::lra::Pooling,
    pad_token: u32,
) -> combiner_models::lra::LraConfig {
    combiner_models::lra::LraConfig {
        trunk: trunk.clone(),
        vocab_size,
        max_len: seq_len,
        classes,
        pooling,
        pad_token,
    }
}

/// The trunk length of a classifier: one more with a CLS token in front.
pub(crate) fn classifier_len(seq_len: usize, pooling: combiner_models::lra::Pooling) -> usize {
    match pooling {
        combiner_models::lra::Pooling::Cls => seq_len + 1,
        combiner_models::lra::Pooling::Mean => seq_len,
    }
}

/// Images as `[START, sub-pixels...]` sequences for the image model.
pub(crate) struct ImageTokens;

impl<I: combiner_data::batcher::SequenceItem>
    burn::data::dataset::transform::Mapper<I, combiner_data::TokenSequence> for ImageTokens
{
    fn map(&self, item: &I) -> combiner_data::TokenSequence {
        combiner_data::TokenSequence {
            tokens: std::iter::once(combiner_models::image_ar::START)
                .chain(item.tokens().iter().copied())
                .collect(),
            label: item.label(),
        }
    }
}

/// `items` as a lazily mapped image-token dataset.
pub(crate) fn image_items<I>(items: Vec<I>) -> crate::family::Items<combiner_data::TokenSequence>
where
    I: combiner_data::batcher::SequenceItem + Clone + 'static,
{
    std::sync::Arc::new(burn::data::dataset::transform::MapperDataset::new(
        burn::data::dataset::InMemDataset::new(items),
        ImageTokens,
    ))
}

/// Any labelled items as token sequences.
pub(crate) fn sequences<I: combiner_data::batcher::SequenceItem>(
    items: &[I],
) -> Vec<combiner_data::TokenSequence> {
    items
        .iter()
        .map(|i| combiner_data::TokenSequence {
            tokens: i.tokens().into_owned(),
            label: i.label(),
        })
        .collect()
}
