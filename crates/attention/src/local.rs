//! Local (sliding-window) attention, as in the Image Transformer (Parmar et
//! al. 2018) and the local layers of Longformer.
//!
//! Query `i` attends to keys within `window` positions (LM: the `window`
//! positions before `i` and `i` itself). Queries are grouped in blocks of
//! `window`; each block scores its neighbouring blocks, `O(L * window)`.

use combiner::{Layout, Mode};
use serde::{Deserialize, Serialize};

use crate::pattern::{blocks, grouped_term, neighbour_items, Pattern};
use crate::AttentionError;

/// Hyperparameters of the sliding window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// One-sided window width.
    pub window: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig { window: 64 }
    }
}

/// The window band as one term (shared with Longformer): block size
/// `window`, each block scoring the previous, own and (MLM) next block.
pub(crate) fn window_term(
    len: usize,
    window: usize,
    mode: Mode,
    extra: impl Fn(usize, usize) -> bool,
) -> combiner::Term {
    let bl = blocks(len, window.max(1));
    let after = usize::from(mode == Mode::Mlm);
    let groups: Vec<_> = (0..bl.len())
        .map(|b| (bl[b].clone(), neighbour_items(&bl, b, 1, after)))
        .collect();
    grouped_term(len, &groups, |i, j| {
        mode.allows(i, j) && i.abs_diff(j) <= window && extra(i, j)
    })
}

impl LocalConfig {
    pub(crate) fn validate(&self) -> Result<(), AttentionError> {
        if self.window == 0 {
            return Err(AttentionError::invalid(
                "local",
                "window must be at least 1",
            ));
        }
        Ok(())
    }

    /// Whether query `i` attends to key `j`.
    pub fn allows(&self, _len: usize, mode: Mode, i: usize, j: usize) -> bool {
        mode.allows(i, j) && i.abs_diff(j) <= self.window
    }

    /// The pattern at `len`.
    pub fn pattern(&self, len: usize, mode: Mode) -> Result<Pattern, AttentionError> {
        self.validate()?;
        Ok(Pattern::new(Layout {
            len,
            span_sets: Vec::new(),
            terms: vec![window_term(len, self.window, mode, |_, _| true)],
        }))
    }
}
