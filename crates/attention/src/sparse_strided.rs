//! Sparse Transformer, strided pattern (Child et al. 2019).
//!
//! Query `i` attends to the previous `stride` positions (MLM: within
//! `stride - 1` on both sides) and to every position at a multiple of
//! `stride` from it. Built as two block-structured terms: a band of
//! neighbouring blocks and one group per residue class `i mod stride`.

use combiner::{Layout, Mode};
use serde::{Deserialize, Serialize};

use crate::pattern::{blocks, ceil_sqrt, grouped_term, neighbour_items, Pattern};
use crate::AttentionError;

/// Hyperparameters of the strided pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SparseStridedConfig {
    /// Stride `l`; `None` = `ceil(sqrt(L))`.
    pub stride: Option<usize>,
}

impl SparseStridedConfig {
    fn stride_at(&self, len: usize) -> usize {
        self.stride.unwrap_or_else(|| ceil_sqrt(len))
    }

    pub(crate) fn validate(&self) -> Result<(), AttentionError> {
        if self.stride == Some(0) {
            return Err(AttentionError::invalid(
                "sparse_strided",
                "stride must be at least 1",
            ));
        }
        Ok(())
    }

    /// Whether query `i` attends to key `j` at length `len`.
    pub fn allows(&self, len: usize, mode: Mode, i: usize, j: usize) -> bool {
        let s = self.stride_at(len);
        mode.allows(i, j) && (i.abs_diff(j) < s || i.abs_diff(j).is_multiple_of(s))
    }

    /// The pattern at `len`.
    pub fn pattern(&self, len: usize, mode: Mode) -> Result<Pattern, AttentionError> {
        self.validate()?;
        let s = self.stride_at(len);
        let bl = blocks(len, s);
        let after = usize::from(mode == Mode::Mlm);
        let band: Vec<_> = (0..bl.len())
            .map(|b| (bl[b].clone(), neighbour_items(&bl, b, 1, after)))
            .collect();
        let band = grouped_term(len, &band, |i, j| mode.allows(i, j) && i.abs_diff(j) < s);
        let classes: Vec<_> = (0..s.min(len.max(1)))
            .map(|r| {
                let members: Vec<usize> = (r..len).step_by(s).collect();
                (members.clone(), members)
            })
            .collect();
        let strided = grouped_term(len, &classes, |i, j| {
            mode.allows(i, j) && i.abs_diff(j) >= s
        });
        Ok(Pattern::new(Layout {
            len,
            span_sets: Vec::new(),
            terms: vec![band, strided],
        }))
    }
}
