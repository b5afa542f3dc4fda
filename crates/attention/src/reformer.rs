//! Reformer (Kitaev et al. 2020, "Reformer: The Efficient Transformer"):
//! LSH attention with shared queries and keys and several hash rounds.
//!
//! Keys are the unit-normalized queries (shared QK). Each round hashes every
//! token by a random rotation, `argmax([xR; -xR])`, into `n_buckets` buckets.
//! Inside a bucket, tokens in position order are cut into chunks of
//! `bucket_size`; a query attends to the same-bucket keys of its own chunk and
//! the previous one (MLM: and the next one), never to itself unless nothing
//! else is left (with shared QK a token's own key dominates). The rounds'
//! pairs are joined without repeats and normalized by one softmax, which is
//! what the paper's per-round log-sum-exp weighting with duplicate
//! correction computes.
//!
//! Chunking inside each bucket (rather than the paper's chunks of the
//! globally sorted sequence) keeps every pattern decision a function of the
//! tokens up to the query, so the LM form is causal. Rotations are drawn from
//! `seed`; they are fixed for a module, like the hash of a trained layer at
//! evaluation.

use std::collections::HashSet;

use burn::prelude::*;
use combiner::{Layout, Mode, MultiHead};
use serde::{Deserialize, Serialize};

use crate::pattern::{grouped_term, Pattern};
use crate::util::SplitMix;
use crate::AttentionError;

/// Hyperparameters of LSH attention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReformerConfig {
    /// Chunk length inside a bucket.
    pub bucket_size: usize,
    /// Hash rounds.
    pub n_hashes: usize,
    /// Buckets per round (even); `None` = `L / bucket_size` rounded up to even, at least 2.
    pub n_buckets: Option<usize>,
    /// Seed of the random rotations.
    pub seed: u64,
}

impl Default for ReformerConfig {
    fn default() -> Self {
        ReformerConfig {
            bucket_size: 32,
            n_hashes: 2,
            n_buckets: None,
            seed: 0,
        }
    }
}

impl ReformerConfig {
    pub(crate) fn validate(&self) -> Result<(), AttentionError> {
        if self.bucket_size == 0 || self.n_hashes == 0 {
            return Err(AttentionError::invalid(
                "reformer",
                "bucket_size and n_hashes must be at least 1",
            ));
        }
        if let Some(n) = self.n_buckets {
            if n < 2 || n % 2 == 1 {
                return Err(AttentionError::invalid(
                    "reformer",
                    format!("n_buckets ({n}) must be even and at least 2"),
                ));
            }
        }
        Ok(())
    }

    /// Buckets per round at length `len`.
    pub fn buckets_at(&self, len: usize) -> usize {
        self.n_buckets
            .unwrap_or_else(|| len.div_ceil(self.bucket_size).max(2).next_multiple_of(2))
    }
}

/// The LSH pattern of one sequence from its bucket ids, `buckets[round][t]`.
pub fn reformer_pattern(buckets: &[Vec<usize>], bucket_size: usize, mode: Mode) -> Pattern {
    let len = buckets.first().map_or(0, Vec::len);
    let c = bucket_size.max(1);
    let mut seen: Vec<HashSet<usize>> = vec![HashSet::new(); len];
    let mut own_slot = vec![usize::MAX; len];
    let mut terms = Vec::with_capacity(buckets.len());
    for (round, ids) in buckets.iter().enumerate() {
        let n = ids.iter().copied().max().map_or(1, |m| m + 1);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (t, &b) in ids.iter().enumerate() {
            members[b].push(t);
        }
        let mut groups = Vec::new();
        for ms in &members {
            let chunks: Vec<&[usize]> = ms.chunks(c).collect();
            for (ci, chunk) in chunks.iter().enumerate() {
                let mut items = Vec::with_capacity(3 * c);
                if ci > 0 {
                    items.extend_from_slice(chunks[ci - 1]);
                }
                items.extend_from_slice(chunk);
                if mode == Mode::Mlm && ci + 1 < chunks.len() {
                    items.extend_from_slice(chunks[ci + 1]);
                }
                groups.push((chunk.to_vec(), items));
            }
        }
        let mut term = grouped_term(len, &groups, |_, _| true);
        let (gs, w) = (term.group_size, term.width);
        for g in 0..term.groups {
            for a in 0..gs {
                let i = term.queries[g * gs + a];
                for s in 0..w {
                    let at = (g * gs + a) * w + s;
                    if !term.mask[at] {
                        continue;
                    }
                    let j = term.items[g * w + s];
                    if round == 0 && j == i {
                        own_slot[i] = at;
                    }
                    term.mask[at] = j != i && mode.allows(i, j) && seen[i].insert(j);
                }
            }
        }
        terms.push(term);
    }
    // A query with no other key attends to itself (LM: the first token).
    for i in 0..len {
        if seen[i].is_empty() {
            terms[0].mask[own_slot[i]] = true;
        }
    }
    Pattern::new(Layout {
        len,
        span_sets: Vec::new(),
        terms,
    })
}

/// Multi-head LSH attention.
#[derive(Module, Debug)]
pub struct Reformer<B: Backend> {
    heads: MultiHead<B>,
    #[module(skip)]
    config: ReformerConfig,
    #[module(skip)]
    mode: Mode,
}

fn unit<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let n = x.clone().powi_scalar(2).sum_dim(3).sqrt().clamp_min(1e-6);
    x / n
}

impl<B: Backend> Reformer<B> {
    pub(crate) fn new(heads: MultiHead<B>, config: ReformerConfig, mode: Mode) -> Self {
        Reformer {
            heads,
            config,
            mode,
        }
    }

    /// Bucket ids `[batch * heads][round][seq]` of shared query/keys `q`.
    ///
    /// # Shapes
    /// - `q`: `[batch, heads, seq, d_head]`
    pub fn buckets(&self, q: Tensor<B, 4>) -> Vec<Vec<Vec<usize>>> {
        let [b, h, len, d] = q.dims();
        let device = q.device();
        let half = self.config.buckets_at(len) / 2;
        let rounds = self.config.n_hashes;
        let mut per_round = Vec::with_capacity(rounds);
        for r in 0..rounds {
            let mut rng = SplitMix::new(self.config.seed.wrapping_add(1_000_003 * r as u64));
            let rot: Vec<f32> = (0..h * d * half).map(|_| rng.normal() as f32).collect();
            let rot =
                Tensor::<B, 3>::from_data(TensorData::new(rot, [h, d, half]), (&device, q.dtype()))
                    .unsqueeze::<4>()
                    .expand([b, h, d, half]);
            let proj = q.clone().detach().matmul(rot);
            let ids: Vec<i64> = Tensor::cat(vec![proj.clone(), proj.neg()], 3)
                .argmax(3)
                .into_data()
                .convert::<i64>()
                .to_vec()
                .expect("int data");
            per_round.push(ids);
        }
        (0..b * h)
            .map(|s| {
                per_round
                    .iter()
                    .map(|ids| {
                        ids[s * len..(s + 1) * len]
                            .iter()
                            .map(|&x| x as usize)
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let drop = self.heads.attention_dropout();
        let dropout = Some(&drop);
        self.heads.forward_with(x, |q, _k, v| {
            let buckets = self.buckets(q.clone());
            lsh_attention(q, v, &buckets, self.config.bucket_size, self.mode, dropout)
        })
    }
}

/// LSH attention with shared QK for given buckets, `buckets[b * heads + h][round][t]`.
///
/// # Shapes
/// - `q`, `v`: `[batch, heads, seq, d_head]`
/// - output: `[batch, heads, seq, d_head]`
pub fn lsh_attention<B: Backend>(
    q: Tensor<B, 4>,
    v: Tensor<B, 4>,
    buckets: &[Vec<Vec<usize>>],
    bucket_size: usize,
    mode: Mode,
    dropout: Option<&burn::nn::Dropout>,
) -> Tensor<B, 4> {
    let [b, h, len, d] = q.dims();
    assert_eq!(buckets.len(), b * h, "one bucket table per (batch, head)");
    let k = unit(q.clone());
    let mut rows = Vec::with_capacity(b);
    for bi in 0..b {
        let mut heads = Vec::with_capacity(h);
        for hi in 0..h {
            let pattern = reformer_pattern(&buckets[bi * h + hi], bucket_size, mode);
            let sl = |t: &Tensor<B, 4>| t.clone().slice([bi..bi + 1, hi..hi + 1, 0..len, 0..d]);
            heads.push(pattern.attend_with(sl(&q), sl(&k), sl(&v), mode, dropout));
        }
        rows.push(Tensor::cat(heads, 1));
    }
    Tensor::cat(rows, 0)
}
