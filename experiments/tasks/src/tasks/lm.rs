//! Causal language modelling (Tables 2 and 3: Wiki-40B at 2,048 and 8,192
//! tokens): a decoder over subword tokens; metric perplexity on held-out
//! documents, and on WikiText-103 test with `combiner eval` when prepared.
//! The tokenizer is trained on the run's training text and kept in the run
//! directory.

use anyhow::Result;
use combiner::Mode;
use combiner_data::text::readers::Wikitext;
use combiner_data::TokenSequence;
use combiner_data::{DatasetName, Split};
use combiner_models::lm::LmConfig;
use serde::{Deserialize, Serialize};

use super::{positive, Ctx, TaskSpec};
use crate::family::{Data, Prepared};
use crate::text::{encode_all, run_codec, Corpus, Part, TokenizerSettings};

/// `[task] kind = "lm"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lm {
    /// The documents.
    pub corpus: Corpus,
    /// Tokens per training window (paper: 2048 or 8192).
    pub seq_len: usize,
    /// Text to ids.
    pub tokenizer: TokenizerSettings,
    /// Use only the first N training documents.
    #[serde(default)]
    pub train_docs: Option<usize>,
    /// Use only the first N held-out documents.
    #[serde(default)]
    pub valid_docs: Option<usize>,
    /// Keep at most N validation windows.
    #[serde(default)]
    pub valid_windows: Option<usize>,
    /// `combiner eval` also reports WikiText-103 test perplexity (needs
    /// `combiner data prepare wikitext-103`; skipped with a note when absent).
    #[serde(default)]
    pub eval_wikitext103: bool,
}

impl TaskSpec for Lm {
    fn name(&self) -> &'static str {
        "lm"
    }

    fn validate(&self) -> Result<()> {
        positive("seq_len", self.seq_len)?;
        self.tokenizer.validate()
    }

    fn attention_shape(&self) -> (Mode, usize) {
        (Mode::Lm, self.seq_len)
    }

    fn prepare(&self, ctx: &Ctx) -> Result<Prepared> {
        let text = run_codec(
            &self.tokenizer,
            &self.corpus,
            self.train_docs,
            ctx.data_dir,
            ctx.run_dir,
        )?;
        let eos = text.eos();
        let windows = |docs: &[String], what: &str| -> Result<Vec<_>> {
            let ids = encode_all(&text, docs, what)?;
            Ok(TokenSequence::lm_windows(&ids, self.seq_len, eos))
        };
        let train = if ctx.need_train {
            let docs = self
                .corpus
                .documents(ctx.data_dir, Part::Train, self.train_docs)?;
            windows(&docs, "training documents")?
        } else {
            Vec::new()
        };
        let valid_docs = self
            .corpus
            .documents(ctx.data_dir, Part::Valid, self.valid_docs)?;
        let mut valid = windows(&valid_docs, "held-out documents")?;
        anyhow::ensure!(
            !valid.is_empty(),
            "the held-out documents give no window of {} tokens: lower task.seq_len or raise task.valid_docs",
            self.seq_len
        );
        if let Some(n) = self.valid_windows {
            valid.truncate(n);
        }
        let mut data = Data::new(train, valid);
        if self.eval_wikitext103 && !ctx.need_train {
            match Wikitext::load(ctx.data_dir, DatasetName::Wikitext103, Split::Test) {
                Ok(w) => {
                    let doc = vec![w.lines.join("\n")];
                    let items = windows(&doc, "WikiText-103 test")?;
                    data.extra.push((
                        "wikitext-103 test".into(),
                        std::sync::Arc::new(burn::data::dataset::InMemDataset::new(items)),
                    ));
                }
                Err(e) => eprintln!("WikiText-103 test skipped: {e}"),
            }
        }
        Ok(Prepared::Lm {
            model: LmConfig {
                trunk: ctx.trunk.clone(),
                vocab_size: text.vocab_size(),
                max_len: self.seq_len,
            },
            data,
            text,
        })
    }
}
