//! Masked language modelling (Table 6: C4 at 2,048 and 8,192 tokens): a
//! bidirectional encoder; 15% of the regular tokens are chosen, 80% of them
//! become `<mask>`, 10% a random token, 10% stay (BERT); metric perplexity
//! over the chosen tokens. Documents are concatenated with `<eos>` and cut
//! into sequences of `seq_len` tokens.

use anyhow::Result;
use combiner::Mode;
use combiner_data::TokenSequence;
use combiner_models::mlm::MlmConfig;
use serde::{Deserialize, Serialize};

use super::{positive, Ctx, TaskSpec};
use crate::family::{Data, Prepared};
use crate::text::{encode_all, run_codec, Corpus, Part, TokenizerSettings};

/// `[task] kind = "mlm"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mlm {
    /// The documents.
    pub corpus: Corpus,
    /// Tokens per sequence (paper: 2048 or 8192).
    pub seq_len: usize,
    /// Text to ids.
    pub tokenizer: TokenizerSettings,
    /// Fraction of tokens chosen for prediction (BERT: 0.15).
    #[serde(default = "mask_prob")]
    pub mask_prob: f64,
    /// Use only the first N training documents.
    #[serde(default)]
    pub train_docs: Option<usize>,
    /// Use only the first N held-out documents.
    #[serde(default)]
    pub valid_docs: Option<usize>,
    /// Keep at most N validation sequences.
    #[serde(default)]
    pub valid_sequences: Option<usize>,
}

fn mask_prob() -> f64 {
    0.15
}

/// Concatenates documents, each followed by `eos`, into sequences of `len`.
fn chunk(docs: &[Vec<u32>], len: usize, eos: u32) -> Vec<TokenSequence> {
    let mut stream = Vec::new();
    for d in docs {
        stream.extend_from_slice(d);
        stream.push(eos);
    }
    stream
        .chunks_exact(len)
        .map(|c| TokenSequence {
            tokens: c.to_vec(),
            label: 0,
        })
        .collect()
}

impl TaskSpec for Mlm {
    fn name(&self) -> &'static str {
        "mlm"
    }

    fn validate(&self) -> Result<()> {
        positive("seq_len", self.seq_len)?;
        anyhow::ensure!(
            self.mask_prob.is_finite() && self.mask_prob > 0.0 && self.mask_prob < 1.0,
            "task.mask_prob = {}: expected a number in (0, 1)",
            self.mask_prob
        );
        self.tokenizer.validate()
    }

    fn attention_shape(&self) -> (Mode, usize) {
        (Mode::Mlm, self.seq_len)
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
        let train = if ctx.need_train {
            let docs = self
                .corpus
                .documents(ctx.data_dir, Part::Train, self.train_docs)?;
            chunk(
                &encode_all(&text, &docs, "training documents")?,
                self.seq_len,
                eos,
            )
        } else {
            Vec::new()
        };
        let docs = self
            .corpus
            .documents(ctx.data_dir, Part::Valid, self.valid_docs)?;
        let mut valid = chunk(
            &encode_all(&text, &docs, "held-out documents")?,
            self.seq_len,
            eos,
        );
        anyhow::ensure!(
            !valid.is_empty(),
            "the held-out documents give no sequence of {} tokens: lower task.seq_len or raise task.valid_docs",
            self.seq_len
        );
        if let Some(n) = self.valid_sequences {
            valid.truncate(n);
        }
        let masking = text.masking(self.mask_prob);
        Ok(Prepared::Mlm {
            model: MlmConfig {
                trunk: ctx.trunk.clone(),
                vocab_size: text.vocab_size(),
                max_len: self.seq_len,
            },
            data: Data::new(train, valid),
            text,
            masking,
        })
    }
}
