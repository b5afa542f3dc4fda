//! Text tokenization for the LM and MLM tasks: byte level, or a subword
//! model trained on the run's training text and kept in the run directory,
//! so that `eval` and `sample` read text exactly as training did.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use combiner_data::text::mlm::MlmConfig as Masking;
use combiner_data::text::subword::{SubwordModel, SubwordTokenizer, SPECIALS};
use combiner_data::text::ByteTokenizer;
use serde::{Deserialize, Serialize};

/// `[task.tokenizer]`: how text becomes ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerSettings {
    /// One id per byte (260 ids with 4 specials); needs no training.
    Bytes,
    /// Byte-level BPE trained on the training text.
    Bpe {
        /// Ids, specials included.
        vocab_size: usize,
        /// Train on the first N training documents only (all when absent).
        #[serde(default)]
        train_docs: Option<usize>,
    },
    /// Unigram LM with SentencePiece's whitespace marker (the paper: 32k).
    Unigram {
        /// Ids, specials included.
        vocab_size: usize,
        /// Train on the first N training documents only (all when absent).
        #[serde(default)]
        train_docs: Option<usize>,
    },
}

impl TokenizerSettings {
    /// Checks the vocabulary size.
    pub fn validate(&self) -> Result<()> {
        match self {
            TokenizerSettings::Bytes => Ok(()),
            TokenizerSettings::Bpe { vocab_size, .. }
            | TokenizerSettings::Unigram { vocab_size, .. } => {
                anyhow::ensure!(
                    (300..=1_000_000).contains(vocab_size),
                    "task.tokenizer.vocab_size = {vocab_size}: expected 300 ..= 1000000"
                );
                Ok(())
            }
        }
    }
}

/// The file a run keeps its trained tokenizer in.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Text <-> ids, with the special ids the batchers need.
#[derive(Clone, Debug)]
pub enum TextCodec {
    /// [`ByteTokenizer`].
    Bytes,
    /// A trained subword model.
    Subword(Arc<SubwordTokenizer>),
}

impl TextCodec {
    /// The run's codec: bytes, or the subword model in `run_dir` (trained on
    /// `train_texts()` first when the run has none yet).
    pub fn for_run<F, I>(
        settings: &TokenizerSettings,
        run_dir: &Path,
        train_texts: F,
    ) -> Result<Self>
    where
        F: FnOnce(Option<usize>) -> Result<I>,
        I: Iterator<Item = String> + Send,
    {
        let (kind, vocab, docs) = match settings {
            TokenizerSettings::Bytes => return Ok(TextCodec::Bytes),
            TokenizerSettings::Bpe {
                vocab_size,
                train_docs,
            } => (SubwordModel::Bpe, *vocab_size, *train_docs),
            TokenizerSettings::Unigram {
                vocab_size,
                train_docs,
            } => (SubwordModel::Unigram, *vocab_size, *train_docs),
        };
        let path = run_dir.join(TOKENIZER_FILE);
        let tok = if path.exists() {
            SubwordTokenizer::load(&path)?
        } else {
            let started = std::time::Instant::now();
            eprintln!(
                "training a {vocab}-id {kind:?} tokenizer on {} training documents (saved to {})",
                docs.map_or("all".to_string(), |d| d.to_string()),
                path.display()
            );
            let tok = SubwordTokenizer::train_model(kind, train_texts(docs)?, vocab, &path)
                .with_context(|| format!("training the tokenizer {}", path.display()))?;
            eprintln!(
                "tokenizer trained in {:.1} s ({} ids)",
                started.elapsed().as_secs_f64(),
                tok.vocab_size()
            );
            tok
        };
        Ok(TextCodec::Subword(Arc::new(tok)))
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            TextCodec::Bytes => ByteTokenizer::VOCAB,
            TextCodec::Subword(t) => t.vocab_size(),
        }
    }

    fn special(&self, k: usize) -> u32 {
        match self {
            TextCodec::Bytes => [ByteTokenizer::PAD, ByteTokenizer::EOS, ByteTokenizer::MASK][k],
            TextCodec::Subword(t) => t.special_id(SPECIALS[k]).unwrap_or(k as u32),
        }
    }

    /// Padding id.
    pub fn pad(&self) -> u32 {
        self.special(0)
    }
    /// End-of-document id.
    pub fn eos(&self) -> u32 {
        self.special(1)
    }

    /// BERT masking (15%, 80/10/10) over the regular ids of this codec.
    pub fn masking(&self, mask_prob: f64) -> Masking {
        match self {
            TextCodec::Bytes => Masking {
                mask_prob,
                ..Masking::bytes()
            },
            TextCodec::Subword(t) => Masking {
                mask_prob,
                mask_id: self.special(2),
                // specials take the first ids (the unigram model adds <unk> after them)
                first_regular: (SPECIALS.len() + usize::from(t.special_id("<unk>").is_some()))
                    as u32,
                vocab: t.vocab_size() as u32,
            },
        }
    }

    /// Ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(match self {
            TextCodec::Bytes => ByteTokenizer.encode(text.as_bytes()),
            TextCodec::Subword(t) => t.encode(text)?,
        })
    }

    /// Text of `ids` (bytes that are not UTF-8 are replaced).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(match self {
            TextCodec::Bytes => String::from_utf8_lossy(&ByteTokenizer.decode(ids)).into_owned(),
            TextCodec::Subword(t) => t.decode(ids)?,
        })
    }
}

/// `[task.corpus]`: where the documents of a text task come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Corpus {
    /// The shipped Wikipedia slice (Wiki-40B stand-in): `wiki_00`..`wiki_97`
    /// train, `wiki_98` validation (held-out articles), `wiki_99` test.
    /// Needs `combiner data prepare wikipedia`.
    Wikipedia,
    /// IMDB reviews as short web documents (a small C4-like corpus); train
    /// and test splits. Needs `combiner data prepare imdb`.
    Imdb,
    /// JSON-lines files with a `text` field (C4, Wiki-40B exports; `.gz` too).
    Jsonl {
        /// Training files.
        train: Vec<PathBuf>,
        /// Validation files.
        valid: Vec<PathBuf>,
    },
}

/// Which part of a corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Training documents.
    Train,
    /// Held-out documents.
    Valid,
}

impl Corpus {
    /// The documents of `part`, at most `limit` of them.
    pub fn documents(
        &self,
        data_dir: &Path,
        part: Part,
        limit: Option<usize>,
    ) -> Result<Vec<String>> {
        use combiner_data::text::readers::{read_jsonl_texts, Imdb, Wikipedia};
        use combiner_data::Split;
        let split = match part {
            Part::Train => Split::Train,
            Part::Valid => Split::Valid,
        };
        let mut docs: Vec<String> = match self {
            Corpus::Wikipedia => Wikipedia::load(data_dir, split)
                .with_context(|| {
                    format!("loading the Wikipedia slice from {}", data_dir.display())
                })?
                .docs
                .into_iter()
                .map(|d| d.text)
                .collect(),
            Corpus::Imdb => Imdb::load(data_dir, split)
                .with_context(|| format!("loading IMDB from {}", data_dir.display()))?
                .reviews
                .into_iter()
                .map(|r| r.text)
                .collect(),
            Corpus::Jsonl { train, valid } => {
                let files = if part == Part::Train { train } else { valid };
                anyhow::ensure!(!files.is_empty(), "task.corpus: no {part:?} files given");
                let mut out = Vec::new();
                for f in files {
                    out.extend(read_jsonl_texts(f)?);
                    if limit.is_some_and(|n| out.len() >= n) {
                        break;
                    }
                }
                out
            }
        };
        if let Some(n) = limit {
            docs.truncate(n);
        }
        anyhow::ensure!(
            !docs.is_empty(),
            "the {part:?} part of the corpus has no documents"
        );
        Ok(docs)
    }
}

/// The codec of a text task's run: trains the tokenizer on the first
/// training documents of `corpus` (at most `train_docs`, and at most the
/// tokenizer's own `train_docs`) the first time, and reads it back after.
pub fn run_codec(
    settings: &TokenizerSettings,
    corpus: &Corpus,
    train_docs: Option<usize>,
    data_dir: &Path,
    run_dir: &Path,
) -> Result<TextCodec> {
    TextCodec::for_run(settings, run_dir, |n| {
        let n = match (n, train_docs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(corpus.documents(data_dir, Part::Train, n)?.into_iter())
    })
}

/// Encodes documents, reporting progress on long corpora.
pub fn encode_all(codec: &TextCodec, docs: &[String], what: &str) -> Result<Vec<Vec<u32>>> {
    let started = std::time::Instant::now();
    let mut out = Vec::with_capacity(docs.len());
    let mut last = started;
    for (i, d) in docs.iter().enumerate() {
        out.push(codec.encode(d)?);
        if last.elapsed().as_secs_f64() > 10.0 {
            eprintln!("tokenizing {what}: {}/{} documents", i + 1, docs.len());
            last = std::time::Instant::now();
        }
    }
    let tokens: usize = out.iter().map(Vec::len).sum();
    eprintln!(
        "tokenized {what}: {} documents, {tokens} tokens in {:.1} s",
        docs.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}
