//! Axial Transformer (Ho et al. 2019, "Axial Attention in Multidimensional
//! Transformers"), flattened to one attention on a `rows x cols` grid.
//!
//! Query `i` attends to its own row and its own column (LM: up to `i`).
//! This is exactly the direct part of Combiner-Axial-Vertical: the layout
//! is that plan's with the spans removed.

use combiner::{Grid, Mode, Plan};
use serde::{Deserialize, Serialize};

use crate::pattern::{strip_spans, Pattern};
use crate::AttentionError;

/// Hyperparameters of the axial pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AxialConfig {
    /// Grid; `None` = `cols = ceil(sqrt(L))`, `rows = ceil(L / cols)`.
    pub grid: Option<Grid>,
}

impl AxialConfig {
    fn plan(&self) -> Plan {
        Plan::AxialVertical { grid: self.grid }
    }

    /// Whether query `i` attends to key `j` at length `len`.
    pub fn allows(&self, len: usize, mode: Mode, i: usize, j: usize) -> bool {
        let cols = combiner::plan::grid_for(len, self.grid).map_or(1, |g| g.cols);
        mode.allows(i, j) && (i / cols == j / cols || i % cols == j % cols)
    }

    /// The pattern at `len`.
    pub fn pattern(&self, len: usize, mode: Mode) -> Result<Pattern, AttentionError> {
        let layout = self
            .plan()
            .layout(len, mode)
            .map_err(|e| AttentionError::invalid("axial", e.to_string()))?;
        Ok(Pattern::new(strip_spans(layout)))
    }
}
