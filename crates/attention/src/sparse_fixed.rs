//! Sparse Transformer, fixed pattern (Child et al. 2019, "Generating Long
//! Sequences with Sparse Transformers").
//!
//! Query `i` attends to its own block of `block` positions and to the last
//! `summary` positions of every other block (LM: earlier blocks only), the
//! "summary cells" through which information travels between blocks.
//! With `summary = 0` this is exactly Combiner-Fixed with its spans removed.

use combiner::plan::fixed_layout;
use combiner::Mode;
use serde::{Deserialize, Serialize};

use crate::pattern::{blocks, ceil_sqrt, grouped_term, strip_spans, Pattern};
use crate::AttentionError;

/// Hyperparameters of the fixed pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SparseFixedConfig {
    /// Block size `l`; `None` = `ceil(sqrt(L))`.
    pub block: Option<usize>,
    /// Summary positions at the end of each block (`c` of the paper).
    pub summary: usize,
}

impl Default for SparseFixedConfig {
    fn default() -> Self {
        SparseFixedConfig {
            block: None,
            summary: 1,
        }
    }
}

impl SparseFixedConfig {
    fn block_at(&self, len: usize) -> usize {
        self.block.unwrap_or_else(|| ceil_sqrt(len))
    }

    pub(crate) fn validate(&self) -> Result<(), AttentionError> {
        match self.block {
            Some(0) => Err(AttentionError::invalid(
                "sparse_fixed",
                "block must be at least 1",
            )),
            Some(s) if self.summary > s => Err(AttentionError::invalid(
                "sparse_fixed",
                format!("summary ({}) cannot exceed block ({s})", self.summary),
            )),
            _ => Ok(()),
        }
    }

    /// Whether query `i` attends to key `j` at length `len`.
    pub fn allows(&self, len: usize, mode: Mode, i: usize, j: usize) -> bool {
        let s = self.block_at(len);
        let summary = j % s + self.summary.min(s) >= s;
        mode.allows(i, j) && (i / s == j / s || summary)
    }

    /// The pattern at `len`: Combiner-Fixed's direct term plus a term for
    /// the summary positions of other blocks.
    pub fn pattern(&self, len: usize, mode: Mode) -> Result<Pattern, AttentionError> {
        self.validate()?;
        let s = self.block_at(len);
        let mut layout = strip_spans(fixed_layout(len, s, mode));
        let c = self.summary.min(s);
        if c > 0 {
            let bl = blocks(len, s);
            let summaries: Vec<usize> = (0..len).filter(|j| j % s + c >= s).collect();
            let groups: Vec<_> = bl.iter().map(|b| (b.clone(), summaries.clone())).collect();
            layout.terms.push(grouped_term(len, &groups, |i, j| {
                i / s != j / s && mode.allows(i, j)
            }));
        }
        Ok(Pattern::new(layout))
    }
}
