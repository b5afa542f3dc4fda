//! Routing Transformer (Roy et al. 2020, "Efficient Content-Based Sparse
//! Attention with Routing Transformers").
//!
//! Keys are normalized and routed to `clusters` centroids; a query attends to
//! the keys of its own cluster (LM: up to itself). Clusters are balanced:
//! each holds at most `ceil(L / clusters)` tokens, the balanced top-k of the
//! paper. MLM fills clusters by descending score (every cluster takes its
//! best-matching tokens first); LM fills them in position order, so a token's
//! cluster depends only on the tokens before it and the layer stays causal.
//!
//! Given the assignments, the pattern is Combiner-Learnable's partition
//! (eq. 11/12) with its spans removed. Centroids follow online k-means
//! through [`Routing::update_centroids`], called by the training loop.

use burn::module::Param;
use burn::prelude::*;
use combiner::attention::{default_centroids, kmeans_update};
use combiner::plan::routing_layout;
use combiner::{Mode, MultiHead};
use serde::{Deserialize, Serialize};

use crate::pattern::{strip_spans, Pattern};
use crate::AttentionError;

/// Hyperparameters of routing attention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Number of clusters (centroids per head).
    pub clusters: usize,
    /// Decay of the online k-means update (`c <- decay c + (1 - decay) mean`).
    pub decay: f64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            clusters: 16,
            decay: 0.999,
        }
    }
}

impl RoutingConfig {
    pub(crate) fn validate(&self) -> Result<(), AttentionError> {
        if self.clusters == 0 {
            return Err(AttentionError::invalid(
                "routing",
                "clusters must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.decay) {
            return Err(AttentionError::invalid(
                "routing",
                "decay must lie in [0, 1]",
            ));
        }
        Ok(())
    }
}

/// Balanced assignment of `len` tokens to `n` clusters from `scores[t * n + c]`
/// (higher = closer); every cluster holds at most `ceil(len / n)` tokens.
pub fn balanced_clusters(scores: &[f32], len: usize, n: usize, mode: Mode) -> Vec<usize> {
    let cap = len.div_ceil(n).max(1);
    let mut count = vec![0usize; n];
    let mut ids = vec![usize::MAX; len];
    let by_score = |t: usize| {
        let mut cs: Vec<usize> = (0..n).collect();
        cs.sort_by(|&a, &b| scores[t * n + b].total_cmp(&scores[t * n + a]));
        cs
    };
    match mode {
        Mode::Lm => {
            for (t, id) in ids.iter_mut().enumerate() {
                let c = by_score(t)
                    .into_iter()
                    .find(|&c| count[c] < cap)
                    .expect("capacity n * cap >= len");
                count[c] += 1;
                *id = c;
            }
        }
        Mode::Mlm => {
            let mut pairs: Vec<(usize, usize)> =
                (0..len).flat_map(|t| (0..n).map(move |c| (t, c))).collect();
            pairs.sort_by(|&(t1, c1), &(t2, c2)| {
                scores[t2 * n + c2]
                    .total_cmp(&scores[t1 * n + c1])
                    .then(t1.cmp(&t2))
            });
            for (t, c) in pairs {
                if ids[t] == usize::MAX && count[c] < cap {
                    ids[t] = c;
                    count[c] += 1;
                }
            }
        }
    }
    ids
}

/// Routing attention for given cluster ids, one list per `(batch, head)`
/// (`clusters[b * heads + h][t]`).
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`
/// - output: `[batch, heads, seq, d_head]`
pub fn routing_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    clusters: &[Vec<usize>],
    mode: Mode,
    dropout: Option<&burn::nn::Dropout>,
) -> Tensor<B, 4> {
    let [b, h, len, d] = q.dims();
    assert_eq!(clusters.len(), b * h, "one cluster list per (batch, head)");
    let mut rows = Vec::with_capacity(b);
    for bi in 0..b {
        let mut heads = Vec::with_capacity(h);
        for hi in 0..h {
            let pattern = routing_pattern(&clusters[bi * h + hi], mode);
            let sl = |t: &Tensor<B, 4>| t.clone().slice([bi..bi + 1, hi..hi + 1, 0..len, 0..d]);
            heads.push(pattern.attend_with(sl(&q), sl(&k), sl(&v), mode, dropout));
        }
        rows.push(Tensor::cat(heads, 1));
    }
    Tensor::cat(rows, 0)
}

/// The routing pattern of one sequence: Combiner-Learnable's partition for
/// these regions, spans removed.
pub fn routing_pattern(ids: &[usize], mode: Mode) -> Pattern {
    // Renumber to 0..used so that empty clusters cost nothing.
    let mut map = std::collections::HashMap::new();
    let regions: Vec<usize> = ids
        .iter()
        .map(|&c| {
            let next = map.len();
            *map.entry(c).or_insert(next)
        })
        .collect();
    Pattern::new(strip_spans(routing_layout(&regions, mode)))
}

/// Multi-head routing attention.
#[derive(Module, Debug)]
pub struct Routing<B: Backend> {
    heads: MultiHead<B>,
    centroids: Param<Tensor<B, 3>>,
    #[module(skip)]
    config: RoutingConfig,
    #[module(skip)]
    mode: Mode,
}

/// Keys scaled to unit norm: routing compares directions, as in the paper.
fn unit<B: Backend>(k: Tensor<B, 4>) -> Tensor<B, 4> {
    let n = k.clone().powi_scalar(2).sum_dim(3).sqrt().clamp_min(1e-6);
    k / n
}

impl<B: Backend> Routing<B> {
    pub(crate) fn new(
        heads: MultiHead<B>,
        n_heads: usize,
        config: RoutingConfig,
        mode: Mode,
        device: &B::Device,
    ) -> Self {
        let c = default_centroids(n_heads, config.clusters, heads.d_head(), device);
        Routing {
            heads,
            centroids: Param::from_tensor(c).set_require_grad(false),
            config,
            mode,
        }
    }

    /// Balanced cluster ids of every `(batch, head)` for keys `k`.
    ///
    /// # Shapes
    /// - `k`: `[batch, heads, seq, d_head]`
    pub fn clusters(&self, k: Tensor<B, 4>) -> Vec<Vec<usize>> {
        let [b, h, len, d] = k.dims();
        let n = self.config.clusters;
        let c = combiner::to_dtype(self.centroids.val(), k.dtype())
            .unsqueeze::<4>()
            .expand([b, h, n, d]);
        let scores: Vec<f32> = unit(k.detach())
            .matmul(c.swap_dims(2, 3))
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("float data");
        scores
            .chunks(len * n)
            .map(|s| balanced_clusters(s, len, n, self.mode))
            .collect()
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let drop = self.heads.attention_dropout();
        let dropout = Some(&drop);
        self.heads.forward_with(x, |q, k, v| {
            let ids = self.clusters(k.clone());
            routing_attention(q, k, v, &ids, self.mode, dropout)
        })
    }

    /// One online k-means step of the centroids towards the normalized keys
    /// this layer computes for `x`, with the configured decay.
    pub fn update_centroids(mut self, x: Tensor<B, 3>) -> Self {
        let decay = self.config.decay;
        let mut keys = None;
        // MultiHead exposes its key projection only through `forward_with`;
        // the attention output of this pass is discarded.
        let _ = self.heads.forward_with(x, |q, k, _| {
            keys = Some(unit(k));
            q
        });
        let moved = kmeans_update(keys.expect("keys"), self.centroids.val(), decay);
        let norm = moved
            .clone()
            .powi_scalar(2)
            .sum_dim(2)
            .sqrt()
            .clamp_min(1e-6);
        self.centroids = Param::from_tensor(moved / norm).set_require_grad(false);
        self
    }

    /// Current centroids `[heads, clusters, d_head]`.
    pub fn centroids(&self) -> Tensor<B, 3> {
        self.centroids.val()
    }
}
