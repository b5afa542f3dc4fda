//! LRA Text (Table 5): IMDB sentiment from bytes, each review cut or padded
//! to `seq_len` bytes (LRA: 4,000); metric accuracy. Needs
//! `combiner data prepare imdb`.

use anyhow::{Context, Result};
use combiner::Mode;
use combiner_data::text::readers::Imdb;
use combiner_data::text::ByteTokenizer;
use combiner_data::Split;
use combiner_data::TokenSequence;
use combiner_models::lra::Pooling;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{classifier, classifier_len, positive, truncate, Ctx, TaskSpec};
use crate::family::{Data, Prepared};

/// `[task] kind = "lra_text"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LraText {
    /// Bytes per review (LRA: 4000).
    pub seq_len: usize,
    /// Use only N training reviews (a seeded, label-balanced shuffle; all 25,000 when absent).
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Use only N test reviews for validation (all 25,000 when absent).
    #[serde(default)]
    pub valid_limit: Option<usize>,
    /// Pooling of the classifier.
    #[serde(default)]
    pub pooling: Pooling,
}

impl TaskSpec for LraText {
    fn name(&self) -> &'static str {
        "lra_text"
    }

    fn validate(&self) -> Result<()> {
        positive("seq_len", self.seq_len)
    }

    fn attention_shape(&self) -> (Mode, usize) {
        (Mode::Mlm, classifier_len(self.seq_len, self.pooling))
    }

    fn prepare(&self, ctx: &Ctx) -> Result<Prepared> {
        let load = |split, limit, seed| -> Result<Vec<_>> {
            let mut reviews = Imdb::load(ctx.data_dir, split)
                .with_context(|| format!("loading IMDB from {}", ctx.data_dir.display()))?
                .reviews;
            // the files alternate labels; a seeded shuffle keeps a prefix balanced in expectation
            reviews.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            Ok(TokenSequence::lra_text(
                &truncate(reviews, limit),
                self.seq_len,
            ))
        };
        let train = if ctx.need_train {
            load(Split::Train, self.train_limit, ctx.seed)?
        } else {
            Vec::new()
        };
        let valid = load(Split::Test, self.valid_limit, 0)?;
        Ok(Prepared::Classifier {
            model: classifier(
                ctx.trunk,
                ByteTokenizer::VOCAB,
                self.seq_len,
                2,
                self.pooling,
                ByteTokenizer::PAD,
            ),
            data: Data::new(train, valid),
            seq_len: self.seq_len,
        })
    }
}
