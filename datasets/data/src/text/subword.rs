//! Subword tokenizer trained locally with the `tokenizers` crate: byte-level
//! BPE (as GPT-2), so every string round-trips without an unknown token.
//! The paper used a 32k SentencePiece vocabulary; the size is configurable.

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, Tokenizer, TokenizerBuilder,
};

use crate::error::{DataError, Result};

/// Special tokens, in id order: padding, end of document, mask.
pub const SPECIALS: [&str; 3] = ["<pad>", "<eos>", "<mask>"];

/// The unknown piece of a unigram model (id 3; BPE is byte-level and needs none).
pub const UNK: &str = "<unk>";

/// Which subword model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubwordModel {
    /// Byte-level BPE (GPT-2's form): every string round-trips.
    Bpe,
    /// Unigram language model with SentencePiece's whitespace marker (the
    /// paper's 32k SentencePiece vocabulary is of this kind).
    Unigram,
}

/// A trained subword tokenizer (`tokenizer.json`).
pub struct SubwordTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for SubwordTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubwordTokenizer")
            .field("path", &self.path)
            .field("vocab", &self.vocab_size())
            .finish()
    }
}

fn tok_err(path: &Path, e: impl ToString) -> DataError {
    DataError::Tokenizer {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl SubwordTokenizer {
    /// Trains byte-level BPE with `vocab_size` ids (specials included) on
    /// `texts` and saves it to `out` (conventionally `tokenizer.json`).
    pub fn train<I, S>(texts: I, vocab_size: usize, out: &Path) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        Self::train_model(SubwordModel::Bpe, texts, vocab_size, out)
    }

    /// Trains a subword model of `kind` with `vocab_size` ids (specials
    /// included) on `texts` and saves it to `out`.
    pub fn train_model<I, S>(
        kind: SubwordModel,
        texts: I,
        vocab_size: usize,
        out: &Path,
    ) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let specials = |extra: &[&str]| -> Vec<AddedToken> {
            SPECIALS
                .iter()
                .chain(extra)
                .map(|s| AddedToken::from(*s, true))
                .collect()
        };
        let builder = || {
            TokenizerBuilder::<
                ModelWrapper,
                NormalizerWrapper,
                PreTokenizerWrapper,
                PostProcessorWrapper,
                DecoderWrapper,
            >::new()
            .with_normalizer(None)
            .with_post_processor(None)
        };
        let mut tokenizer: Tokenizer = match kind {
            SubwordModel::Bpe => {
                // No normalizer and no prefix space: decode(encode(x)) must give x back byte for byte.
                let byte_level = ByteLevel::new(false, false, true);
                builder()
                    .with_model(BPE::default().into())
                    .with_pre_tokenizer(Some(byte_level.into()))
                    .with_decoder(Some(byte_level.into()))
                    .build()
                    .map_err(|e| tok_err(out, e))?
                    .into()
            }
            SubwordModel::Unigram => {
                // SentencePiece's form: whitespace becomes a visible piece marker
                let meta = Metaspace::new('\u{2581}', PrependScheme::Always, true);
                let meta_dec = Metaspace::new('\u{2581}', PrependScheme::Always, true);
                builder()
                    .with_model(Unigram::default().into())
                    .with_pre_tokenizer(Some(meta.into()))
                    .with_decoder(Some(meta_dec.into()))
                    .build()
                    .map_err(|e| tok_err(out, e))?
                    .into()
            }
        };
        let mut trainer = match kind {
            SubwordModel::Bpe => TrainerWrapper::from(
                BpeTrainerBuilder::new()
                    .show_progress(false)
                    .vocab_size(vocab_size)
                    .min_frequency(2)
                    .special_tokens(specials(&[]))
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .build(),
            ),
            SubwordModel::Unigram => TrainerWrapper::from(
                UnigramTrainer::builder()
                    .show_progress(false)
                    .vocab_size(vocab_size as u32)
                    .special_tokens(specials(&[UNK]))
                    .unk_token(Some(UNK.to_string()))
                    .build()
                    .map_err(|e| tok_err(out, e))?,
            ),
        };
        tokenizer
            .train(&mut trainer, texts)
            .map_err(|e| tok_err(out, e))?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DataError::io("create", dir, e))?;
        }
        // written beside, then renamed: a killed run never leaves half a tokenizer
        let partial = out.with_extension("json.partial");
        tokenizer
            .save(&partial, false)
            .map_err(|e| tok_err(out, e))?;
        std::fs::rename(&partial, out).map_err(|e| DataError::io("rename", out, e))?;
        Ok(Self {
            inner: tokenizer,
            path: out.to_path_buf(),
        })
    }

    /// Loads a saved `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io("read", path, e))?;
        // a cut file is invalid JSON: say so before `tokenizers` sees it (its
        // deserializers panic on some malformed input instead of erring)
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| tok_err(path, format!("not valid JSON: {e}")))?;
        let inner = std::panic::catch_unwind(|| <Tokenizer as std::str::FromStr>::from_str(&text))
            .map_err(|_| tok_err(path, "not a tokenizer the `tokenizers` crate can read"))?
            .map_err(|e| tok_err(path, e))?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a special token from [`SPECIALS`].
    pub fn special_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tok_err(&self.path, e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (specials kept, so padding shows as `<pad>`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| tok_err(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let words = [
            "the",
            "attention",
            "combiner",
            "sparse",
            "factorized",
            "model",
            "of",
            "a",
        ];
        (0..400)
            .map(|i| {
                (0..12)
                    .map(|j| words[(i * 7 + j * 3) % words.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
                    + "."
            })
            .collect()
    }

    #[test]
    fn trained_bpe_round_trips_held_out_text_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let tok = SubwordTokenizer::train(corpus().into_iter(), 300, &path).unwrap();
        assert!(
            tok.vocab_size() <= 300 && tok.vocab_size() > 256,
            "{}",
            tok.vocab_size()
        );
        assert_eq!(tok.special_id("<pad>"), Some(0));

        // Held out: words, characters and whitespace never seen in training.
        let held_out = "  Zebra-crossing café\tnaïve 東京 \n\n the combiner attention!";
        let ids = tok.encode(held_out).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), held_out);
        // Merges learned: a frequent word takes fewer ids than bytes.
        assert!(tok.encode(" attention").unwrap().len() < 4);

        let again = SubwordTokenizer::load(&path).unwrap();
        assert_eq!(again.encode(held_out).unwrap(), ids);
    }

    #[test]
    fn loading_a_missing_or_bad_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = SubwordTokenizer::load(&path).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
