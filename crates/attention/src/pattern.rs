//! Exact sparse patterns as Combiner layouts without span summaries.
//!
//! A sparse attention is a Combiner partition whose spans were dropped: only
//! the direct part `Omega_i^0` is left, and the one joint softmax of
//! [`combiner::combiner_attention`] becomes an ordinary softmax over that part.
//! So the sparse baselines run on the same executor as Combiner, with the same
//! block-structured gathers, and never build an `L x L` tensor.
//!
//! Rows whose support is the whole sequence (the global tokens of Longformer
//! and BigBird) do not fit a block structure; they are listed in
//! [`Pattern::full_rows`] and computed densely, `O(g L)` for `g` such rows.

use std::sync::Arc;

use burn::nn::Dropout;
use burn::prelude::*;
use combiner::{AbstractionKind, Layout, LayoutTensors, Memo, Mode, MultiHead, Term};

use crate::util::{bool_tensor, int_tensor};
use crate::{
    AttentionError, AxialConfig, BigBirdConfig, LocalConfig, LogsparseConfig, LongformerConfig,
    SparseFixedConfig, SparseStridedConfig,
};

pub(crate) use combiner::plan::ceil_sqrt;

/// A sparse pattern compiled for one length: a span-free layout plus rows
/// that attend to their whole support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// Direct-only layout (no span sets, every term item is a token or
    /// padding), shared so that its device tensors are uploaded once
    /// ([`LayoutTensors::cached`]).
    pub layout: Arc<Layout>,
    /// Query positions whose support is all of `Omega_i` (global tokens);
    /// their rows of `layout` are overwritten.
    pub full_rows: Vec<usize>,
}

impl Pattern {
    /// A pattern with no full rows.
    pub fn new(layout: Layout) -> Self {
        Pattern {
            layout: Arc::new(layout),
            full_rows: Vec::new(),
        }
    }

    /// The dense view: `allowed[i * len + j]` says whether query `i` attends
    /// to key `j`. Read from the layout's partition, so it shows what the
    /// executor runs, not what the pattern was meant to be.
    pub fn allowed(&self, mode: Mode) -> Vec<bool> {
        let len = self.layout.len;
        let mut m = vec![false; len * len];
        for (i, parts) in self.layout.partition().queries.iter().enumerate() {
            for &j in &parts.direct {
                m[i * len + j] = true;
            }
        }
        for &i in &self.full_rows {
            for j in 0..len {
                m[i * len + j] = mode.allows(i, j);
            }
        }
        m
    }

    /// Softmax attention over the pattern.
    ///
    /// # Shapes
    /// - `q`, `k`, `v`: `[batch, heads, seq, d_head]` with `seq == layout.len`
    /// - output: `[batch, heads, seq, d_head]`
    pub fn attend<B: Backend>(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mode: Mode,
    ) -> Tensor<B, 4> {
        self.attend_with(q, k, v, mode, None)
    }

    /// [`Pattern::attend`] with dropout on the attention probabilities.
    pub fn attend_with<B: Backend>(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mode: Mode,
        dropout: Option<&Dropout>,
    ) -> Tensor<B, 4> {
        let [_, _, len, d] = q.dims();
        let device = q.device();
        // Max pooling has no parameters; with no spans it is never used.
        let abs = AbstractionKind::Max.init::<B>(d, &device);
        let tensors = LayoutTensors::cached(&self.layout, &device);
        let out = combiner::combiner_attention_on(
            q.clone(),
            k.clone(),
            v.clone(),
            &self.layout,
            &tensors,
            &abs,
            dropout,
        );
        if self.full_rows.is_empty() {
            return out;
        }
        let g = self.full_rows.len();
        let qg = q.select(2, int_tensor::<B>(&self.full_rows, &device));
        let hidden: Vec<bool> = self
            .full_rows
            .iter()
            .flat_map(|&i| (0..len).map(move |j| !mode.allows(i, j)))
            .collect();
        let hidden = bool_tensor::<B, 2>(hidden, [g, len], &device);
        let rows = combiner::masked_attention_with(qg, k, v, Some(hidden), dropout);
        // Row i comes from the dense rows where i is global, else from `out`.
        let mut source: Vec<usize> = (0..len).collect();
        for (a, &i) in self.full_rows.iter().enumerate() {
            source[i] = len + a;
        }
        Tensor::cat(vec![out, rows], 2).select(2, int_tensor::<B>(&source, &device))
    }
}

/// The layout with its span sets and every term that scores a span removed:
/// the sparse pattern a Combiner plan was built from.
pub fn strip_spans(layout: Layout) -> Layout {
    let len = layout.len;
    Layout {
        len,
        span_sets: Vec::new(),
        terms: layout
            .terms
            .into_iter()
            .filter(|t| t.items.iter().all(|&it| it <= len))
            .collect(),
    }
}

/// A term from explicit groups `(queries, items)`, padded to the largest
/// group; query `i` scores item `j` where both are real and `allow(i, j)`.
pub(crate) fn grouped_term(
    len: usize,
    groups: &[(Vec<usize>, Vec<usize>)],
    allow: impl Fn(usize, usize) -> bool,
) -> Term {
    let gs = groups.iter().map(|g| g.0.len()).max().unwrap_or(0).max(1);
    let w = groups.iter().map(|g| g.1.len()).max().unwrap_or(0).max(1);
    let mut term = Term::new(groups.len().max(1), gs, w, len);
    for (g, (qs, items)) in groups.iter().enumerate() {
        for (a, &i) in qs.iter().enumerate() {
            term.queries[g * gs + a] = i;
            for (c, &j) in items.iter().enumerate() {
                term.mask[(g * gs + a) * w + c] = i < len && j < len && allow(i, j);
            }
        }
        for (c, &j) in items.iter().enumerate() {
            term.items[g * w + c] = j;
        }
    }
    term
}

/// Positions of each block of size `s` (the last one may be short).
pub(crate) fn blocks(len: usize, s: usize) -> Vec<Vec<usize>> {
    (0..len.div_ceil(s).max(1))
        .map(|b| (b * s..((b + 1) * s).min(len)).collect())
        .collect()
}

/// Items of blocks `b - before ..= b + after` that exist.
pub(crate) fn neighbour_items(
    bl: &[Vec<usize>],
    b: usize,
    before: usize,
    after: usize,
) -> Vec<usize> {
    (b.saturating_sub(before)..=(b + after).min(bl.len() - 1))
        .flat_map(|c| bl[c].iter().copied())
        .collect()
}

/// Which exact sparse pattern a [`Sparse`] module runs.
#[derive(Clone, Debug, PartialEq)]
pub enum SparseKind {
    /// Sparse Transformer, fixed pattern.
    Fixed(SparseFixedConfig),
    /// Sparse Transformer, strided pattern.
    Strided(SparseStridedConfig),
    /// LogSparse Transformer.
    Logsparse(LogsparseConfig),
    /// Axial Transformer.
    Axial(AxialConfig),
    /// Sliding window.
    Local(LocalConfig),
    /// Longformer: window plus global tokens.
    Longformer(LongformerConfig),
    /// BigBird: window, global and random blocks.
    BigBird(BigBirdConfig),
}

impl SparseKind {
    /// The pattern at `len`.
    pub fn pattern(&self, len: usize, mode: Mode) -> Result<Pattern, AttentionError> {
        match self {
            SparseKind::Fixed(c) => c.pattern(len, mode),
            SparseKind::Strided(c) => c.pattern(len, mode),
            SparseKind::Logsparse(c) => Ok(c.pattern(len, mode)),
            SparseKind::Axial(c) => c.pattern(len, mode),
            SparseKind::Local(c) => c.pattern(len, mode),
            SparseKind::Longformer(c) => c.pattern(len, mode),
            SparseKind::BigBird(c) => c.pattern(len, mode),
        }
    }

    /// [`SparseKind::pattern`], built once per (pattern, length, mode) in a
    /// process and shared afterwards, like [`combiner::Plan::cached_layout`]
    /// (the cache keeps the 16 most recent patterns' worth).
    pub fn cached_pattern(&self, len: usize, mode: Mode) -> Result<Arc<Pattern>, AttentionError> {
        static CACHE: Memo<(String, usize, Mode), Pattern> = Memo::new();
        CACHE.get_or_try_insert((format!("{self:?}"), len, mode), || self.pattern(len, mode))
    }

    /// The pattern's definition, pair by pair (the oracle's mask).
    pub fn allows(&self, len: usize, mode: Mode, i: usize, j: usize) -> bool {
        match self {
            SparseKind::Fixed(c) => c.allows(len, mode, i, j),
            SparseKind::Strided(c) => c.allows(len, mode, i, j),
            SparseKind::Logsparse(c) => c.allows(len, mode, i, j),
            SparseKind::Axial(c) => c.allows(len, mode, i, j),
            SparseKind::Local(c) => c.allows(len, mode, i, j),
            SparseKind::Longformer(c) => c.allows(len, mode, i, j),
            SparseKind::BigBird(c) => c.allows(len, mode, i, j),
        }
    }
}

/// Multi-head attention over an exact sparse pattern.
#[derive(Module, Debug)]
pub struct Sparse<B: Backend> {
    heads: MultiHead<B>,
    #[module(skip)]
    kind: SparseKind,
    #[module(skip)]
    mode: Mode,
}

impl<B: Backend> Sparse<B> {
    pub(crate) fn new(heads: MultiHead<B>, kind: SparseKind, mode: Mode) -> Self {
        Sparse { heads, kind, mode }
    }

    /// The pattern this module runs.
    pub fn kind(&self) -> &SparseKind {
        &self.kind
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    ///
    /// # Panics
    /// If the pattern cannot be built at this length (an explicit axial grid
    /// smaller than `seq`).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let len = x.dims()[1];
        let pattern = self
            .kind
            .cached_pattern(len, self.mode)
            .unwrap_or_else(|e| panic!("{e}"));
        let drop = self.heads.attention_dropout();
        let dropout = Some(&drop);
        self.heads.forward_with(x, |q, k, v| {
            pattern.attend_with(q, k, v, self.mode, dropout)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BigBirdConfig, SparseFixedConfig};

    #[test]
    fn cached_patterns_are_built_once_and_equal_fresh_ones() {
        for kind in [
            SparseKind::Fixed(SparseFixedConfig::default()),
            SparseKind::BigBird(BigBirdConfig::default()),
        ] {
            for mode in [Mode::Lm, Mode::Mlm] {
                let Ok(fresh) = kind.pattern(41, mode) else {
                    // BigBird is bidirectional only: the cache refuses it too
                    assert!(kind.cached_pattern(41, mode).is_err());
                    continue;
                };
                let a = kind.cached_pattern(41, mode).unwrap();
                let b = kind.cached_pattern(41, mode).unwrap();
                assert!(Arc::ptr_eq(&a, &b), "{kind:?} {mode:?}: built twice");
                assert_eq!(*a, fresh, "{kind:?} {mode:?}");
            }
        }
    }
}
