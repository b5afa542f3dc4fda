//! Longformer (Beltagy et al. 2020): a sliding window plus global tokens.
//!
//! Every query attends to keys within `window` positions and to the global
//! tokens; global tokens attend to the whole support (LM: everything up to
//! themselves). Cost `O(L * (window + g))` for `g` global tokens.

use combiner::{Layout, Mode};
use serde::{Deserialize, Serialize};

use crate::local::window_term;
use crate::pattern::{grouped_term, Pattern};
use crate::AttentionError;

/// Hyperparameters of Longformer attention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LongformerConfig {
    /// One-sided window width.
    pub window: usize,
    /// Positions with global attention (e.g. `[0]` for a CLS token);
    /// positions past the sequence end are ignored.
    pub global: Vec<usize>,
}

impl Default for LongformerConfig {
    fn default() -> Self {
        LongformerConfig {
            window: 64,
            global: vec![0],
        }
    }
}

impl LongformerConfig {
    pub(crate) fn validate(&self) -> Result<(), AttentionError> {
        if self.window == 0 {
            return Err(AttentionError::invalid(
                "longformer",
                "window must be at least 1",
            ));
        }
        Ok(())
    }

    fn globals(&self, len: usize) -> Vec<usize> {
        let mut g: Vec<usize> = self.global.iter().copied().filter(|&p| p < len).collect();
        g.sort_unstable();
        g.dedup();
        g
    }

    /// Whether query `i` attends to key `j`.
    pub fn allows(&self, _len: usize, mode: Mode, i: usize, j: usize) -> bool {
        let global = |p| self.global.contains(&p);
        mode.allows(i, j) && (i.abs_diff(j) <= self.window || global(i) || global(j))
    }

    /// The pattern at `len`: the window band without global keys, a column
    /// term for the global keys, and dense rows for the global queries.
    pub fn pattern(&self, len: usize, mode: Mode) -> Result<Pattern, AttentionError> {
        self.validate()?;
        let globals = self.globals(len);
        let is_global = |p: usize| globals.binary_search(&p).is_ok();
        let mut terms = vec![window_term(len, self.window, mode, |_, j| !is_global(j))];
        if !globals.is_empty() {
            terms.push(grouped_term(
                len,
                &[((0..len).collect(), globals.clone())],
                |i, j| mode.allows(i, j),
            ));
        }
        Ok(Pattern {
            layout: std::sync::Arc::new(Layout {
                len,
                span_sets: Vec::new(),
                terms,
            }),
            full_rows: globals,
        })
    }
}
