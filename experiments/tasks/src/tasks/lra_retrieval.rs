//! LRA Retrieval (Table 5): do two documents match? A dual encoder reads
//! each document (bytes, LRA: 4,000 each) with the same weights and
//! classifies `[u, v, u * v, u - v]`; metric accuracy. Reads LRA's AAN TSV
//! files when given; otherwise the Wikipedia-pairs stand-in (first half of
//! an article against its own or another article's second half), which is
//! documented as a stand-in, not as AAN. Needs `combiner data prepare
//! wikipedia` for the stand-in.

use std::path::PathBuf;

use anyhow::{Context, Result};
use combiner::Mode;
use combiner_data::retrieval::{read_aan_tsv, wikipedia_pairs};
use combiner_data::text::readers::Wikipedia;
use combiner_data::text::ByteTokenizer;
use combiner_data::Split;
use combiner_models::lra::Pooling;
use serde::{Deserialize, Serialize};

use super::{classifier, classifier_len, positive, truncate, Ctx, TaskSpec};
use crate::family::{Data, Prepared};

/// `[task] kind = "lra_retrieval"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LraRetrieval {
    /// Bytes per document (LRA: 4000).
    pub seq_len: usize,
    /// LRA's `new_aan_pairs.train.tsv` (with `valid_tsv`); the Wikipedia stand-in when absent.
    #[serde(default)]
    pub train_tsv: Option<PathBuf>,
    /// LRA's `new_aan_pairs.eval.tsv`.
    #[serde(default)]
    pub valid_tsv: Option<PathBuf>,
    /// Stand-in: articles shorter than this many bytes are skipped.
    #[serde(default = "min_bytes")]
    pub min_bytes: usize,
    /// Use only N training pairs.
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Use only N validation pairs.
    #[serde(default)]
    pub valid_limit: Option<usize>,
    /// Pooling of each encoder.
    #[serde(default)]
    pub pooling: Pooling,
}

fn min_bytes() -> usize {
    1000
}

impl TaskSpec for LraRetrieval {
    fn name(&self) -> &'static str {
        "lra_retrieval"
    }

    fn validate(&self) -> Result<()> {
        positive("seq_len", self.seq_len)?;
        anyhow::ensure!(
            self.train_tsv.is_some() == self.valid_tsv.is_some(),
            "task.train_tsv and task.valid_tsv: give both (AAN) or neither (the Wikipedia stand-in)"
        );
        Ok(())
    }

    fn attention_shape(&self) -> (Mode, usize) {
        (Mode::Mlm, classifier_len(self.seq_len, self.pooling))
    }

    fn prepare(&self, ctx: &Ctx) -> Result<Prepared> {
        let load = |split: Split, limit| -> Result<Vec<_>> {
            let pairs = match (&self.train_tsv, &self.valid_tsv) {
                (Some(t), Some(v)) => {
                    read_aan_tsv(if split == Split::Train { t } else { v }, self.seq_len)?
                }
                _ => {
                    let docs = Wikipedia::load(ctx.data_dir, split)
                        .with_context(|| {
                            format!(
                                "loading the Wikipedia slice from {}",
                                ctx.data_dir.display()
                            )
                        })?
                        .docs;
                    wikipedia_pairs(&docs, self.seq_len, self.min_bytes, ctx.seed ^ split as u64)?
                }
            };
            Ok(truncate(pairs, limit))
        };
        let train = if ctx.need_train {
            load(Split::Train, self.train_limit)?
        } else {
            Vec::new()
        };
        let valid = load(Split::Valid, self.valid_limit)?;
        Ok(Prepared::Pairs {
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
