//! Text: tokenizers (byte-level and trained subword), readers for the shipped
//! corpora and the real formats, packing into fixed lengths and MLM masking.

pub mod mlm;
pub mod readers;
pub mod subword;

pub use mlm::{mask_tokens, Masked, MlmConfig};
pub use readers::{Imdb, Review, WikiDoc, Wikipedia, Wikitext};
pub use subword::SubwordTokenizer;

/// Byte-level tokenizer: every byte is its own token, shifted past the
/// special ids, so any byte string round-trips and there is no unknown token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// Padding id (also what LRA pads with).
    pub const PAD: u32 = 0;
    /// Beginning of sequence.
    pub const BOS: u32 = 1;
    /// End of document; separates documents when packing.
    pub const EOS: u32 = 2;
    /// The `[MASK]` id of masked-LM inputs.
    pub const MASK: u32 = 3;
    /// Id of byte 0; byte `b` is `b + OFFSET`.
    pub const OFFSET: u32 = 4;
    /// Number of ids: specials plus 256 bytes.
    pub const VOCAB: usize = 260;

    /// Token ids of `bytes`.
    pub fn encode(&self, bytes: &[u8]) -> Vec<u32> {
        bytes.iter().map(|&b| b as u32 + Self::OFFSET).collect()
    }

    /// Bytes of `ids`; special ids are dropped.
    pub fn decode(&self, ids: &[u32]) -> Vec<u8> {
        ids.iter()
            .filter(|&&id| (Self::OFFSET..Self::OFFSET + 256).contains(&id))
            .map(|&id| (id - Self::OFFSET) as u8)
            .collect()
    }

    /// Encodes `bytes`, truncated to `len` tokens and padded with [`Self::PAD`]
    /// up to `len` (the LRA Text convention: 4,000 bytes).
    pub fn encode_fixed(&self, bytes: &[u8], len: usize) -> Vec<u32> {
        let mut ids = self.encode(&bytes[..bytes.len().min(len)]);
        ids.resize(len, Self::PAD);
        ids
    }
}

/// Cuts a stream of documents into language-model windows of `seq_len + 1`
/// tokens: each document is followed by `eos`, the stream is concatenated, and
/// consecutive windows overlap by one token, so every token after the first is
/// a prediction target exactly once (inputs `w[..seq_len]`, targets `w[1..]`).
/// The incomplete tail is dropped.
pub fn pack<I>(docs: I, seq_len: usize, eos: u32) -> Vec<Vec<u32>>
where
    I: IntoIterator,
    I::Item: AsRef<[u32]>,
{
    assert!(seq_len > 0, "seq_len must be positive");
    let mut stream = Vec::new();
    for doc in docs {
        stream.extend_from_slice(doc.as_ref());
        stream.push(eos);
    }
    if stream.len() < seq_len + 1 {
        return Vec::new();
    }
    (0..(stream.len() - 1) / seq_len)
        .map(|k| stream[k * seq_len..k * seq_len + seq_len + 1].to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokenizer_round_trips_any_bytes() {
        let t = ByteTokenizer;
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(t.decode(&t.encode(&all)), all);
        let text = "naïve café — 東京 <br /> \u{1F600}";
        assert_eq!(t.decode(&t.encode(text.as_bytes())), text.as_bytes());
        assert!(t
            .encode(&all)
            .iter()
            .all(|&id| (id as usize) < ByteTokenizer::VOCAB));
    }

    #[test]
    fn encode_fixed_truncates_and_pads() {
        let t = ByteTokenizer;
        assert_eq!(t.encode_fixed(b"abc", 5), vec![101, 102, 103, 0, 0]);
        assert_eq!(t.encode_fixed(b"abcdef", 2), vec![101, 102]);
    }

    #[test]
    fn packing_covers_the_stream_once_with_one_token_overlap() {
        let docs = vec![vec![10, 11, 12], vec![13], vec![14, 15, 16, 17, 18]];
        // Stream: 10 11 12 E 13 E 14 15 16 17 18 E (12 tokens).
        let windows = pack(&docs, 4, 2);
        assert_eq!(
            windows,
            vec![vec![10, 11, 12, 2, 13], vec![13, 2, 14, 15, 16]]
        );
        let targets: Vec<u32> = windows.iter().flat_map(|w| w[1..].to_vec()).collect();
        assert_eq!(targets, vec![11, 12, 2, 13, 2, 14, 15, 16]);
        assert!(pack(&docs, 100, 2).is_empty());
    }
}
