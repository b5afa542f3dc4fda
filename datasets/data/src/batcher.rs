//! burn batchers: items -> Int token tensors `[batch, seq]` plus labels or
//! targets, generic over the backend.

use std::borrow::Cow;
use std::sync::Mutex;

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::cifar::CifarImage;
use crate::imagenet::Image64;
use crate::listops::ListOpsExample;
use crate::pathfinder::PathfinderExample;
use crate::retrieval::RetrievalPair;
use crate::text::mlm::{mask_tokens, MlmConfig};

/// An item that a model reads as a sequence of token ids.
pub trait SequenceItem: Send + Sync {
    /// The token ids (sub-pixels, bytes, subwords, symbols).
    fn tokens(&self) -> Cow<'_, [u32]>;
    /// The class label (0 where the task has none).
    fn label(&self) -> u32 {
        0
    }
}

fn widen(bytes: &[u8]) -> Cow<'_, [u32]> {
    Cow::Owned(bytes.iter().map(|&b| b as u32).collect())
}

impl SequenceItem for CifarImage {
    fn tokens(&self) -> Cow<'_, [u32]> {
        widen(&self.pixels)
    }
    fn label(&self) -> u32 {
        self.label as u32
    }
}

impl SequenceItem for Image64 {
    fn tokens(&self) -> Cow<'_, [u32]> {
        widen(&self.pixels)
    }
    fn label(&self) -> u32 {
        self.label
    }
}

impl SequenceItem for ListOpsExample {
    fn tokens(&self) -> Cow<'_, [u32]> {
        Cow::Borrowed(&self.tokens)
    }
    fn label(&self) -> u32 {
        self.label as u32
    }
}

impl SequenceItem for PathfinderExample {
    fn tokens(&self) -> Cow<'_, [u32]> {
        widen(&self.pixels)
    }
    fn label(&self) -> u32 {
        self.label as u32
    }
}

impl SequenceItem for RetrievalPair {
    /// Both documents, one after the other (for models that take a single
    /// sequence; dual encoders split it at the task length).
    fn tokens(&self) -> Cow<'_, [u32]> {
        Cow::Owned([self.a.as_slice(), self.b.as_slice()].concat())
    }
    fn label(&self) -> u32 {
        self.label
    }
}

/// A plain token sequence with a label: LRA Text and Image items, LM windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSequence {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Class label (0 for LM windows).
    pub label: u32,
}

impl SequenceItem for TokenSequence {
    fn tokens(&self) -> Cow<'_, [u32]> {
        Cow::Borrowed(&self.tokens)
    }
    fn label(&self) -> u32 {
        self.label
    }
}

/// Token sequences of the LRA and LM tasks, built from their sources; wrap
/// them in burn's `InMemDataset` to index them.
impl TokenSequence {
    /// LRA Image: CIFAR-10 as 1,024 gray levels.
    pub fn lra_image(images: &[CifarImage]) -> Vec<Self> {
        images
            .iter()
            .map(|i| TokenSequence {
                tokens: i.grayscale().into_iter().map(u32::from).collect(),
                label: i.label as u32,
            })
            .collect()
    }

    /// LRA Text: byte-level reviews, truncated and padded to `len` (LRA: 4,000).
    pub fn lra_text(reviews: &[crate::text::Review], len: usize) -> Vec<Self> {
        let t = crate::text::ByteTokenizer;
        reviews
            .iter()
            .map(|r| TokenSequence {
                tokens: t.encode_fixed(r.text.as_bytes(), len),
                label: r.label as u32,
            })
            .collect()
    }

    /// Language-model windows of `seq_len + 1` tokens (see [`crate::text::pack`]).
    pub fn lm_windows<I>(docs: I, seq_len: usize, eos: u32) -> Vec<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<[u32]>,
    {
        crate::text::pack(docs, seq_len, eos)
            .into_iter()
            .map(|tokens| TokenSequence { tokens, label: 0 })
            .collect()
    }
}

/// Pads with `pad` or truncates every item to `len` and stacks them row-major.
fn stack<'a>(
    rows: impl Iterator<Item = Cow<'a, [u32]>>,
    len: usize,
    pad: u32,
) -> (Vec<i64>, usize) {
    let mut out = Vec::new();
    let mut n = 0;
    for row in rows {
        let take = row.len().min(len);
        out.extend(row[..take].iter().map(|&t| t as i64));
        out.extend(std::iter::repeat_n(pad as i64, len - take));
        n += 1;
    }
    (out, n)
}

fn int2<B: Backend>(
    data: Vec<i64>,
    rows: usize,
    cols: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(data, [rows, cols]), device)
}

/// A classification batch.
#[derive(Debug, Clone)]
pub struct ClassificationBatch<B: Backend> {
    /// Token ids, `[batch, seq_len]`.
    pub tokens: Tensor<B, 2, Int>,
    /// Labels, `[batch]`.
    pub labels: Tensor<B, 1, Int>,
}

/// Batches any [`SequenceItem`] for classification (LRA tasks).
#[derive(Debug, Clone)]
pub struct ClassificationBatcher {
    /// Every row is padded or truncated to this length.
    pub seq_len: usize,
    /// Padding id.
    pub pad: u32,
}

impl<B: Backend, I: SequenceItem> Batcher<B, I, ClassificationBatch<B>> for ClassificationBatcher {
    fn batch(&self, items: Vec<I>, device: &B::Device) -> ClassificationBatch<B> {
        let (data, n) = stack(items.iter().map(|i| i.tokens()), self.seq_len, self.pad);
        let labels: Vec<i64> = items.iter().map(|i| i.label() as i64).collect();
        ClassificationBatch {
            tokens: int2(data, n, self.seq_len, device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// A batch of document pairs (LRA Retrieval, dual encoder).
#[derive(Debug, Clone)]
pub struct PairBatch<B: Backend> {
    /// First documents, `[batch, seq_len]`.
    pub a: Tensor<B, 2, Int>,
    /// Second documents, `[batch, seq_len]`.
    pub b: Tensor<B, 2, Int>,
    /// 1 where the documents match, `[batch]`.
    pub labels: Tensor<B, 1, Int>,
}

/// Batches [`RetrievalPair`]s, each document padded or truncated to `seq_len`.
#[derive(Debug, Clone)]
pub struct PairBatcher {
    /// Length of each document.
    pub seq_len: usize,
    /// Padding id.
    pub pad: u32,
}

impl<B: Backend> Batcher<B, RetrievalPair, PairBatch<B>> for PairBatcher {
    fn batch(&self, items: Vec<RetrievalPair>, device: &B::Device) -> PairBatch<B> {
        let (a, n) = stack(
            items.iter().map(|i| Cow::Borrowed(i.a.as_slice())),
            self.seq_len,
            self.pad,
        );
        let (b, _) = stack(
            items.iter().map(|i| Cow::Borrowed(i.b.as_slice())),
            self.seq_len,
            self.pad,
        );
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        PairBatch {
            a: int2(a, n, self.seq_len, device),
            b: int2(b, n, self.seq_len, device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// A next-token-prediction batch.
#[derive(Debug, Clone)]
pub struct LmBatch<B: Backend> {
    /// Inputs, `[batch, seq_len]`.
    pub inputs: Tensor<B, 2, Int>,
    /// Targets: the inputs shifted left by one, `[batch, seq_len]`.
    pub targets: Tensor<B, 2, Int>,
}

/// Batches sequences of `seq_len + 1` tokens into (inputs, targets); an image
/// is one such sequence too once a start token is put in front of it.
#[derive(Debug, Clone)]
pub struct LmBatcher {
    /// Model sequence length.
    pub seq_len: usize,
    /// Padding id for short items.
    pub pad: u32,
}

impl<B: Backend, I: SequenceItem> Batcher<B, I, LmBatch<B>> for LmBatcher {
    fn batch(&self, items: Vec<I>, device: &B::Device) -> LmBatch<B> {
        let (data, n) = stack(items.iter().map(|i| i.tokens()), self.seq_len + 1, self.pad);
        let w = self.seq_len + 1;
        let inputs = data
            .chunks(w)
            .flat_map(|r| r[..self.seq_len].to_vec())
            .collect();
        let targets = data.chunks(w).flat_map(|r| r[1..].to_vec()).collect();
        LmBatch {
            inputs: int2(inputs, n, self.seq_len, device),
            targets: int2(targets, n, self.seq_len, device),
        }
    }
}

/// A masked-LM batch.
#[derive(Debug, Clone)]
pub struct MlmBatch<B: Backend> {
    /// Masked inputs, `[batch, seq_len]`.
    pub inputs: Tensor<B, 2, Int>,
    /// Original tokens, `[batch, seq_len]`.
    pub targets: Tensor<B, 2, Int>,
    /// True where the loss is taken, `[batch, seq_len]`.
    pub mask: Tensor<B, 2, Bool>,
}

/// Masks items with BERT's rule on the fly, so every epoch sees new masks.
/// The random stream is seeded: with one loader worker the masks repeat
/// exactly from run to run.
#[derive(Debug)]
pub struct MlmBatcher {
    /// Model sequence length.
    pub seq_len: usize,
    /// Padding id (never masked when below `cfg.first_regular`).
    pub pad: u32,
    /// Masking settings.
    pub cfg: MlmConfig,
    rng: Mutex<ChaCha8Rng>,
    /// `Some(seed)`: every sequence's mask follows only the seed and its
    /// tokens (validation: every evaluation masks alike).
    fixed: Option<u64>,
}

impl MlmBatcher {
    /// A batcher whose masks follow `seed`.
    pub fn new(seq_len: usize, pad: u32, cfg: MlmConfig, seed: u64) -> Self {
        Self {
            seq_len,
            pad,
            cfg,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            fixed: None,
        }
    }

    /// A batcher whose mask of a sequence depends only on `seed` and the
    /// sequence's tokens, not on the order or number of earlier batches:
    /// for validation sets, so that every evaluation masks the same tokens.
    pub fn fixed(seq_len: usize, pad: u32, cfg: MlmConfig, seed: u64) -> Self {
        Self {
            fixed: Some(seed),
            ..Self::new(seq_len, pad, cfg, seed)
        }
    }
}

/// FNV-1a over token ids: a stable per-sequence seed.
fn fnv(tokens: &[u32]) -> u64 {
    tokens.iter().fold(0xcbf2_9ce4_8422_2325, |h, &t| {
        (h ^ t as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl<B: Backend, I: SequenceItem> Batcher<B, I, MlmBatch<B>> for MlmBatcher {
    fn batch(&self, items: Vec<I>, device: &B::Device) -> MlmBatch<B> {
        let (data, n) = stack(items.iter().map(|i| i.tokens()), self.seq_len, self.pad);
        let tokens: Vec<u32> = data.iter().map(|&t| t as u32).collect();
        let m = match self.fixed {
            Some(seed) => {
                let mut m = crate::text::mlm::Masked {
                    inputs: Vec::with_capacity(tokens.len()),
                    targets: Vec::with_capacity(tokens.len()),
                    chosen: Vec::with_capacity(tokens.len()),
                };
                for row in tokens.chunks(self.seq_len.max(1)) {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv(row));
                    let r = mask_tokens(row, &self.cfg, &mut rng);
                    m.inputs.extend(r.inputs);
                    m.targets.extend(r.targets);
                    m.chosen.extend(r.chosen);
                }
                m
            }
            None => {
                // A poisoned lock only means another batch panicked; the RNG state is still usable.
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                mask_tokens(&tokens, &self.cfg, &mut *rng)
            }
        };
        let shape = [n, self.seq_len];
        MlmBatch {
            inputs: int2(
                m.inputs.iter().map(|&t| t as i64).collect(),
                n,
                self.seq_len,
                device,
            ),
            targets: int2(data, n, self.seq_len, device),
            mask: Tensor::from_data(TensorData::new(m.chosen, shape), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    type B = NdArray;

    fn seq(tokens: &[u32], label: u32) -> TokenSequence {
        TokenSequence {
            tokens: tokens.to_vec(),
            label,
        }
    }

    #[test]
    fn classification_batch_pads_truncates_and_keeps_labels() {
        let dev = Default::default();
        let b: ClassificationBatch<B> = ClassificationBatcher { seq_len: 3, pad: 0 }
            .batch(vec![seq(&[5, 6], 1), seq(&[7, 8, 9, 10], 0)], &dev);
        assert_eq!(b.tokens.dims(), [2, 3]);
        let t: Vec<i64> = b.tokens.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(t, vec![5, 6, 0, 7, 8, 9]);
        let l: Vec<i64> = b.labels.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(l, vec![1, 0]);
    }

    #[test]
    fn cifar_items_become_3072_subpixel_tokens() {
        let dev = Default::default();
        let img = CifarImage {
            pixels: (0..3072).map(|i| (i % 256) as u8).collect(),
            label: 4,
        };
        let b: ClassificationBatch<B> = ClassificationBatcher {
            seq_len: 3072,
            pad: 0,
        }
        .batch(vec![img.clone()], &dev);
        let t: Vec<i64> = b.tokens.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(t[(5 * 32 + 7) * 3 + 1], img.at(5, 7, 1) as i64);
    }

    #[test]
    fn lm_targets_are_inputs_shifted_by_one() {
        let dev = Default::default();
        let b: LmBatch<B> =
            LmBatcher { seq_len: 4, pad: 0 }.batch(vec![seq(&[1, 2, 3, 4, 5], 0)], &dev);
        let i: Vec<i64> = b.inputs.into_data().convert::<i64>().to_vec().unwrap();
        let t: Vec<i64> = b.targets.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!((i, t), (vec![1, 2, 3, 4], vec![2, 3, 4, 5]));
    }

    #[test]
    fn mlm_batch_masks_only_where_flagged_and_repeats_with_seed() {
        let dev = Default::default();
        let items: Vec<TokenSequence> = (0..8)
            .map(|k| seq(&(0..64).map(|i| 4 + (i + k) % 250).collect::<Vec<_>>(), 0))
            .collect();
        let run = || {
            let b: MlmBatch<B> =
                MlmBatcher::new(64, 0, MlmConfig::bytes(), 5).batch(items.clone(), &dev);
            let i: Vec<i64> = b.inputs.into_data().convert::<i64>().to_vec().unwrap();
            let t: Vec<i64> = b.targets.into_data().convert::<i64>().to_vec().unwrap();
            let m: Vec<bool> = b.mask.into_data().to_vec().unwrap();
            (i, t, m)
        };
        let (i, t, m) = run();
        assert!(m.iter().any(|&x| x));
        for k in 0..i.len() {
            if !m[k] {
                assert_eq!(i[k], t[k]);
            }
        }
        assert_eq!(run(), (i, t, m));
    }

    #[test]
    fn fixed_mlm_masks_depend_only_on_the_sequence() {
        let dev = Default::default();
        let items: Vec<TokenSequence> = (0..6)
            .map(|k| {
                seq(
                    &(0..64).map(|i| 4 + (i * 7 + k) % 250).collect::<Vec<_>>(),
                    0,
                )
            })
            .collect();
        let masks = |b: &MlmBatcher, items: Vec<TokenSequence>| -> Vec<bool> {
            let out: MlmBatch<B> = b.batch(items, &dev);
            out.mask.into_data().to_vec().unwrap()
        };
        let b = MlmBatcher::fixed(64, 0, MlmConfig::bytes(), 9);
        let first = masks(&b, items.clone());
        assert!(first.iter().any(|&x| x));
        // the same batch again, and the same sequences in another batch split
        assert_eq!(masks(&b, items.clone()), first);
        let mut split = masks(&b, items[..2].to_vec());
        split.extend(masks(&b, items[2..].to_vec()));
        assert_eq!(split, first);
        // the running batcher draws new masks every batch
        let r = MlmBatcher::new(64, 0, MlmConfig::bytes(), 9);
        assert_ne!(masks(&r, items.clone()), masks(&r, items));
    }

    #[test]
    fn lra_image_is_1024_gray_levels() {
        let img = CifarImage {
            pixels: vec![10; 3072],
            label: 2,
        };
        let d = TokenSequence::lra_image(&[img]);
        assert_eq!(d[0].tokens, vec![10; 1024]);
        assert_eq!(d[0].label, 2);
    }
}
