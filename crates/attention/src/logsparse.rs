//! LogSparse Transformer (Li et al. 2019, "Enhancing the Locality and
//! Breaking the Memory Bottleneck of Transformer on Time Series Forecasting").
//!
//! Query `i` attends to itself and to the positions at distance `2^k`
//! (`k = 0, 1, ...`) before it; MLM adds the mirror image after it.
//! `O(log L)` keys per query.

use combiner::{Layout, Mode};
use serde::{Deserialize, Serialize};

use crate::pattern::{grouped_term, Pattern};

/// The LogSparse pattern has no hyperparameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsparseConfig {}

impl LogsparseConfig {
    /// Whether query `i` attends to key `j`.
    pub fn allows(&self, _len: usize, mode: Mode, i: usize, j: usize) -> bool {
        mode.allows(i, j) && (i == j || i.abs_diff(j).is_power_of_two())
    }

    /// The pattern at `len`: one group per query.
    pub fn pattern(&self, len: usize, mode: Mode) -> Pattern {
        let groups: Vec<_> = (0..len)
            .map(|i| {
                let mut items = vec![i];
                let mut step = 1;
                while step <= i.max(len.saturating_sub(1 + i)) {
                    if step <= i {
                        items.push(i - step);
                    }
                    if mode == Mode::Mlm && i + step < len {
                        items.push(i + step);
                    }
                    step <<= 1;
                }
                (vec![i], items)
            })
            .collect();
        Pattern::new(Layout {
            len,
            span_sets: Vec::new(),
            terms: vec![grouped_term(len, &groups, |_, _| true)],
        })
    }
}
