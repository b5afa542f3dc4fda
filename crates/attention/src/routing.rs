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
use combiner::{softmax_f32, Mode, MultiHead};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::pattern::{strip_spans, Pattern};
use crate::util::{drop_probs, int_tensor, MASKED};
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
    match mode {
        Mode::Lm => {
            // each token takes the best-scoring cluster that has room (the
            // lowest index among equal scores)
            for (t, id) in ids.iter_mut().enumerate() {
                let row = &scores[t * n..(t + 1) * n];
                let c = (0..n)
                    .filter(|&c| count[c] < cap)
                    .reduce(|a, c| {
                        if row[c].total_cmp(&row[a]).is_gt() {
                            c
                        } else {
                            a
                        }
                    })
                    .expect("capacity n * cap >= len");
                count[c] += 1;
                *id = c;
            }
        }
        Mode::Mlm => {
            // pairs by descending score (ties: earlier token, then lower
            // cluster), each token to the first cluster with room
            let mut pairs: Vec<(usize, usize)> =
                (0..len).flat_map(|t| (0..n).map(move |c| (t, c))).collect();
            pairs.sort_unstable_by(|&(t1, c1), &(t2, c2)| {
                scores[t2 * n + c2]
                    .total_cmp(&scores[t1 * n + c1])
                    .then(t1.cmp(&t2))
                    .then(c1.cmp(&c2))
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
/// (`clusters[b * heads + h][t]`): every token attends to the tokens of its
/// own cluster (in LM mode only to those at or before it).
///
/// Runs as the Routing Transformer does: the tokens of every `(batch, head)`
/// are sorted by cluster (and by position within one), each cluster is padded
/// to the largest cluster's size `cap`, and one batched softmax attention over
/// `[batch * heads, clusters, cap, cap]` blocks replaces the per-sequence
/// patterns; the outputs are gathered back to token order. `O(L cap)` memory,
/// a fixed number of tensor operations per call whatever the batch and heads.
/// [`routing_pattern`] is the same attention written as a sparse pattern.
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
    let device = q.device();
    let blocks = ClusterBlocks::new(clusters, len);
    let (n, cap) = (blocks.clusters, blocks.cap);
    let rows = b * h * n * cap;
    // padding slots read an appended zero row (index `b * h * len`)
    let zero = Tensor::<B, 2>::zeros([1, d], (&device, q.dtype()));
    let sort = |t: Tensor<B, 4>| {
        Tensor::cat(vec![t.reshape([b * h * len, d]), zero.clone()], 0)
            .select(0, int_tensor::<B>(&blocks.token, &device))
            .reshape([1, b * h * n, cap, d])
    };
    let (qs, ks, vs) = (sort(q), sort(k), sort(v));
    // slot j of a cluster is hidden from slot i when it is padding (a
    // cluster's tokens fill its first `size` slots) or, in LM mode, later
    // than i (slots keep token order within a cluster). Built on the device
    // from the cluster sizes: the full `[blocks, cap, cap]` mask would be
    // an upload of `b * h * L * cap` flags per call.
    let blocks_n = b * h * n;
    let sizes = int_tensor::<B>(&blocks.sizes, &device)
        .reshape([blocks_n, 1])
        .expand([blocks_n, cap]);
    let padding = Tensor::<B, 1, Int>::arange(0..cap as i64, &device)
        .reshape([1, cap])
        .expand([blocks_n, cap])
        .greater_equal(sizes)
        .reshape([1, blocks_n, 1, cap])
        .expand([1, blocks_n, cap, cap]);
    let mut logits = qs
        .matmul(ks.swap_dims(2, 3))
        .mul_scalar(1.0 / (d as f64).sqrt())
        .mask_fill(padding, MASKED);
    if mode == Mode::Lm {
        // `tril_mask` marks the entries above the diagonal: j > i
        let later = Tensor::<B, 2, Bool>::tril_mask([cap, cap], 0, &device)
            .reshape([1, 1, cap, cap])
            .expand([1, blocks_n, cap, cap]);
        logits = logits.mask_fill(later, MASKED);
    }
    drop_probs(softmax_f32(logits, 3), dropout)
        .matmul(vs)
        .reshape([rows, d])
        .select(0, int_tensor::<B>(&blocks.slot, &device))
        .reshape([b, h, len, d])
}

/// Where every token of every `(batch, head)` sits once sorted by cluster.
struct ClusterBlocks {
    /// Clusters per sequence (the largest id used, plus one).
    clusters: usize,
    /// Slots per cluster: the largest cluster's size.
    cap: usize,
    /// For slot `((s * clusters) + c) * cap + r`: the flat token index
    /// `s * len + t` it holds (`sequences * len`, one past the last token,
    /// for padding).
    token: Vec<usize>,
    /// Tokens in cluster `c` of sequence `s`, at `s * clusters + c`: its
    /// first `size` slots hold them, the rest are padding.
    sizes: Vec<usize>,
    /// For flat token `s * len + t`: its slot.
    slot: Vec<usize>,
}

impl ClusterBlocks {
    fn new(clusters: &[Vec<usize>], len: usize) -> Self {
        let n = clusters.iter().flatten().max().map_or(1, |&c| c + 1);
        let mut members = vec![Vec::new(); n];
        let mut cap = 1;
        for ids in clusters {
            assert_eq!(ids.len(), len, "one cluster id per token");
            members.iter_mut().for_each(Vec::clear);
            for (t, &c) in ids.iter().enumerate() {
                members[c].push(t);
            }
            cap = cap.max(members.iter().map(Vec::len).max().unwrap_or(0));
        }
        let mut token = vec![clusters.len() * len; clusters.len() * n * cap];
        let mut sizes = vec![0; clusters.len() * n];
        let mut slot = vec![0; clusters.len() * len];
        for (s, ids) in clusters.iter().enumerate() {
            let fill = &mut sizes[s * n..(s + 1) * n];
            for (t, &c) in ids.iter().enumerate() {
                let at = (s * n + c) * cap + fill[c];
                fill[c] += 1;
                token[at] = s * len + t;
                slot[s * len + t] = at;
            }
        }
        ClusterBlocks {
            clusters: n,
            cap,
            token,
            sizes,
            slot,
        }
    }
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
        // one independent assignment per (batch, head), on the host's cores
        scores
            .par_chunks(len * n)
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
