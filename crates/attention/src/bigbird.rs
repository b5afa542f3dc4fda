//! BigBird (Zaheer et al. 2020, "Big Bird: Transformers for Longer
//! Sequences"), the block form (ITC) used for long inputs; bidirectional.
//!
//! The sequence is cut into blocks of `block` tokens. Each query block
//! attends to `window_blocks` neighbouring blocks (centred on itself), to the
//! first `global_blocks` blocks, and to `random_blocks` other blocks drawn
//! from `seed`. Global blocks attend to everything. The random draw depends
//! on `(seed, number of blocks)` only, so a length always gets one pattern.

use combiner::{Layout, Mode};
use serde::{Deserialize, Serialize};

use crate::pattern::{blocks, grouped_term, Pattern};
use crate::util::SplitMix;
use crate::AttentionError;

/// Hyperparameters of BigBird attention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BigBirdConfig {
    /// Tokens per block.
    pub block: usize,
    /// Sliding window in blocks, odd (3 = previous, own, next).
    pub window_blocks: usize,
    /// Leading blocks with global attention.
    pub global_blocks: usize,
    /// Random key blocks per query block.
    pub random_blocks: usize,
    /// Seed of the random blocks.
    pub seed: u64,
}

impl Default for BigBirdConfig {
    fn default() -> Self {
        BigBirdConfig {
            block: 64,
            window_blocks: 3,
            global_blocks: 2,
            random_blocks: 3,
            seed: 0,
        }
    }
}

impl BigBirdConfig {
    pub(crate) fn validate(&self, mode: Mode) -> Result<(), AttentionError> {
        if mode == Mode::Lm {
            return Err(AttentionError::BidirectionalOnly {
                attention: "bigbird",
            });
        }
        if self.block == 0 {
            return Err(AttentionError::invalid(
                "bigbird",
                "block must be at least 1",
            ));
        }
        if self.window_blocks.is_multiple_of(2) {
            return Err(AttentionError::invalid(
                "bigbird",
                format!("window_blocks ({}) must be odd", self.window_blocks),
            ));
        }
        Ok(())
    }

    /// For each query block, the key blocks it attends to (sorted), global
    /// blocks excluded (they are handled as full rows and columns).
    pub fn block_links(&self, nb: usize) -> Vec<Vec<usize>> {
        let g = self.global_blocks.min(nb);
        let radius = self.window_blocks / 2;
        let mut rng = SplitMix::new(self.seed ^ (nb as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        (0..nb)
            .map(|a| {
                let mut links: Vec<usize> = (a.saturating_sub(radius)..=(a + radius).min(nb - 1))
                    .filter(|&c| c >= g)
                    .collect();
                let mut free: Vec<usize> = (g..nb).filter(|c| !links.contains(c)).collect();
                for _ in 0..self.random_blocks.min(free.len()) {
                    links.push(free.swap_remove(rng.below(free.len())));
                }
                links.sort_unstable();
                links
            })
            .collect()
    }

    /// Whether query `i` attends to key `j` at length `len` (MLM).
    pub fn allows(&self, len: usize, _mode: Mode, i: usize, j: usize) -> bool {
        let nb = len.div_ceil(self.block).max(1);
        let g = self.global_blocks.min(nb);
        let (a, c) = (i / self.block, j / self.block);
        a < g || c < g || self.block_links(nb)[a].contains(&c)
    }

    /// The pattern at `len`.
    pub fn pattern(&self, len: usize, mode: Mode) -> Result<Pattern, AttentionError> {
        self.validate(mode)?;
        let bl = blocks(len, self.block);
        let nb = bl.len();
        let g = self.global_blocks.min(nb);
        let links = self.block_links(nb);
        let groups: Vec<_> = (0..nb)
            .map(|a| {
                let items = links[a]
                    .iter()
                    .flat_map(|&c| bl[c].iter().copied())
                    .collect();
                (bl[a].clone(), items)
            })
            .collect();
        let mut terms = vec![grouped_term(len, &groups, |_, _| true)];
        let globals: Vec<usize> = bl[..g].iter().flatten().copied().collect();
        if !globals.is_empty() {
            terms.push(grouped_term(
                len,
                &[((0..len).collect(), globals.clone())],
                |_, _| true,
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
