//! A run's training stream over a dataset, epoch after epoch, each epoch in
//! its own seeded order: the data position of a run is a plain item count,
//! which the training loop records in its checkpoints and skips on resume.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::data::dataset::Dataset;

/// A run's whole training stream: `total` items drawn epoch after epoch from
/// `base`, each epoch in its own seeded permutation. Position `k` is the same
/// item in every run with the same seed, so a data position is just `k`.
pub struct EpochStream<D> {
    base: D,
    total: usize,
    seed: u64,
    perms: Mutex<HashMap<usize, Arc<Vec<usize>>>>,
}

impl<D> EpochStream<D> {
    /// `total` items from `base` (which must not be empty), shuffled per epoch with `seed`.
    pub fn new(base: D, total: usize, seed: u64) -> Self {
        EpochStream {
            base,
            total,
            seed,
            perms: Mutex::new(Default::default()),
        }
    }
}

fn permutation(n: usize, seed: u64) -> Vec<usize> {
    // splitmix64: stable across platforms and crate versions
    combiner::SplitMix::new(seed).permutation(n)
}

impl<I: Send + Sync + Clone, D: Dataset<I>> Dataset<I> for EpochStream<D> {
    fn get(&self, index: usize) -> Option<I> {
        let n = self.base.len();
        if index >= self.total || n == 0 {
            return None;
        }
        let epoch = index / n;
        let perm = {
            let mut perms = self.perms.lock().unwrap_or_else(|e| e.into_inner());
            perms
                .entry(epoch)
                .or_insert_with(|| Arc::new(permutation(n, self.seed.wrapping_add(epoch as u64))))
                .clone()
        };
        self.base.get(perm[index % n])
    }

    fn len(&self) -> usize {
        self.total
    }
}
