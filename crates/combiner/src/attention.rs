//! Multi-head Combiner attention as a burn module, and the plan-level
//! attention function on per-head tensors.

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::abstraction::{Abstraction, AbstractionKind, Pool};
use crate::exec::{combiner_attention_on, combiner_attention_with, LayoutTensors};
use crate::layout::Layout;
use crate::plan::{
    clusters_for, compact_regions, routing_layout, Mode, Plan, PlanError, RowSummary,
};
use crate::row_summary::{learned_rowmajor_attention, LearnedRowSummary};

/// Configuration of multi-head Combiner attention.
#[derive(Config, Debug, PartialEq)]
pub struct CombinerConfig {
    /// Model width.
    pub d_model: usize,
    /// Number of heads; `d_model` must divide by it.
    pub n_heads: usize,
    /// Factorization plan.
    #[config(default = "Plan::Fixed { block: None }")]
    pub plan: Plan,
    /// Span abstraction for `k_Omega`, `q_Omega`.
    #[config(default = "AbstractionKind::Max")]
    pub abstraction: AbstractionKind,
    /// LM (causal) or MLM (bidirectional).
    #[config(default = "Mode::Lm")]
    pub mode: Mode,
    /// Dropout on the attention output (and after `W0` of the learned row
    /// summary).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Dropout on the attention probabilities (the joint softmax and every
    /// local expectation's softmax); 0 = off.
    #[config(default = 0.0)]
    pub attention_dropout: f64,
    /// Clusters of the learnable plan when the plan leaves them open.
    /// The centroids are parameters sized at `init`, before any length is
    /// seen; a plan run on its own uses [`crate::plan::clusters_for`].
    #[config(default = "crate::plan::MODULE_CLUSTERS")]
    pub default_clusters: usize,
}

/// Projections, heads and dropout shared by every attention of the zoo.
#[derive(Module, Debug)]
pub struct MultiHead<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    output: Linear<B>,
    dropout: Dropout,
    // a probability, not a sub-module: records (checkpoints) keep their shape
    #[module(skip)]
    attention_dropout: f64,
    n_heads: usize,
}

impl<B: Backend> MultiHead<B> {
    /// Q/K/V/output projections of width `d_model`, split into `n_heads`.
    ///
    /// # Panics
    /// If `d_model` is not a multiple of `n_heads`.
    pub fn new(d_model: usize, n_heads: usize, dropout: f64, device: &B::Device) -> Self {
        assert!(
            n_heads > 0 && d_model.is_multiple_of(n_heads),
            "d_model ({d_model}) must be a positive multiple of n_heads ({n_heads})"
        );
        let lin = || LinearConfig::new(d_model, d_model).init(device);
        MultiHead {
            query: lin(),
            key: lin(),
            value: lin(),
            output: lin(),
            dropout: DropoutConfig::new(dropout).init(),
            attention_dropout: 0.0,
            n_heads,
        }
    }

    /// The same heads with dropout `p` on the attention probabilities
    /// (active only while training); each attention applies it where it
    /// forms probabilities ([`MultiHead::attention_dropout`]).
    ///
    /// # Panics
    /// If `p` is not in `[0, 1]`.
    pub fn with_attention_dropout(mut self, p: f64) -> Self {
        // validates `p` as burn's dropout does
        self.attention_dropout = DropoutConfig::new(p).init().prob;
        self
    }

    /// Dropout on the attention probabilities (probability 0 = off).
    pub fn attention_dropout(&self) -> Dropout {
        DropoutConfig::new(self.attention_dropout).init()
    }

    /// Width of one head.
    pub fn d_head(&self) -> usize {
        self.query.weight.dims()[1] / self.n_heads
    }

    fn split(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, l, d] = x.dims();
        x.reshape([b, l, self.n_heads, d / self.n_heads])
            .swap_dims(1, 2)
    }

    /// Projects `x`, runs `attend(q, k, v)` per head, merges and projects back.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`; `attend` sees `[batch, heads, seq, d_head]`
    /// - output: `[batch, seq, d_model]`
    pub fn forward_with(
        &self,
        x: Tensor<B, 3>,
        attend: impl FnOnce(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
    ) -> Tensor<B, 3> {
        let [b, l, d] = x.dims();
        let [q, k, v] =
            crate::kernel::linears([&self.query, &self.key, &self.value], x).map(|y| self.split(y));
        let o = attend(q, k, v).swap_dims(1, 2).reshape([b, l, d]);
        self.dropout.forward(crate::kernel::linear(&self.output, o))
    }
}

/// Multi-head Combiner attention.
#[derive(Module, Debug)]
pub struct CombinerAttention<B: Backend> {
    heads: MultiHead<B>,
    abstraction: Abstraction<B>,
    row_summary: Option<LearnedRowSummary<B>>,
    #[module(skip)]
    plan: Plan,
    #[module(skip)]
    mode: Mode,
    centroids: Option<Param<Tensor<B, 3>>>,
}

impl CombinerConfig {
    /// Builds the module.
    pub fn init<B: Backend>(&self, device: &B::Device) -> CombinerAttention<B> {
        let heads = MultiHead::new(self.d_model, self.n_heads, self.dropout, device)
            .with_attention_dropout(self.attention_dropout);
        let comps = self.plan.components();
        // The learned row summary replaces the pooled keys and row-major
        // spans are queried by tokens: DeepSets maps would get no gradient.
        let abstraction = if comps.iter().all(|p| {
            matches!(
                p,
                Plan::AxialRowmajor {
                    summary: RowSummary::Learned,
                    ..
                }
            )
        }) {
            match self.abstraction.pool() {
                Pool::Max => AbstractionKind::Max,
                Pool::Mean => AbstractionKind::Mean,
            }
        } else {
            self.abstraction
        };
        CombinerAttention {
            abstraction: abstraction.init_with(
                heads.d_head(),
                !comps
                    .iter()
                    .all(|p| matches!(p, Plan::AxialRowmajor { .. })),
                device,
            ),
            row_summary: self.plan.needs_learned_summary().then(|| {
                LearnedRowSummary::new(
                    self.d_model,
                    self.n_heads,
                    heads.d_head(),
                    self.dropout,
                    device,
                )
            }),
            heads,
            centroids: self.plan.components().iter().find_map(|p| match p {
                Plan::Learnable { clusters } => Some(
                    Param::from_tensor(default_centroids(
                        self.n_heads,
                        clusters.unwrap_or(self.default_clusters).max(1),
                        self.d_model / self.n_heads,
                        device,
                    ))
                    .set_require_grad(false),
                ),
                _ => None,
            }),
            plan: self.plan.clone(),
            mode: self.mode,
        }
    }
}

impl<B: Backend> CombinerAttention<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, any `seq >= 1`
    /// - output: `[batch, seq, d_model]`
    ///
    /// # Panics
    /// If the plan cannot be compiled at this length (e.g. an explicit axial
    /// grid smaller than `seq`); check configs with [`Plan::component_layouts`].
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let input = self.row_summary.as_ref().map(|s| (s, x.clone()));
        let drop = self.heads.attention_dropout();
        self.heads.forward_with(x, |q, k, v| {
            let inputs = PlanInputs {
                centroids: self
                    .centroids
                    .as_ref()
                    .map(|c| crate::to_dtype(c.val(), q.dtype())),
                learned: input,
                dropout: Some(&drop),
            };
            plan_attention_with(q, k, v, &self.plan, self.mode, &self.abstraction, inputs)
                .unwrap_or_else(|e| panic!("combiner attention: {e}"))
        })
    }

    /// The learned row summary, when the plan has one.
    pub fn row_summary(&self) -> Option<&LearnedRowSummary<B>> {
        self.row_summary.as_ref()
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// True for the learnable plan, whose centroids move by online k-means.
    pub fn has_centroids(&self) -> bool {
        self.centroids.is_some()
    }

    /// The learnable plan's centroids, `[heads, clusters, d_head]`.
    pub fn centroids(&self) -> Option<Tensor<B, 3>> {
        self.centroids.as_ref().map(|c| c.val())
    }

    /// The learnable plan's centroids after one online k-means step on the
    /// keys this layer computes for `x` (see [`kmeans_update`]).
    pub fn update_centroids(mut self, x: Tensor<B, 3>, decay: f64) -> Self {
        if let Some(c) = self.centroids.take() {
            let k = self.heads.split(self.heads.key.forward(x));
            let moved = kmeans_update(k, c.val(), decay);
            self.centroids = Some(Param::from_tensor(moved).set_require_grad(false));
        }
        self
    }
}

/// What a plan may need besides `q`, `k`, `v`.
pub struct PlanInputs<'a, B: Backend> {
    /// Centroids of the learnable plan, `[heads, clusters, d_head]`; without
    /// them [`default_centroids`] are used.
    pub centroids: Option<Tensor<B, 3>>,
    /// The learned row summary and the layer input `x: [batch, seq,
    /// d_model]`, for `axial-rowmajor` with `summary = "learned"`.
    pub learned: Option<(&'a LearnedRowSummary<B>, Tensor<B, 3>)>,
    /// Attention dropout (on the attention probabilities), if any.
    pub dropout: Option<&'a Dropout>,
}

impl<B: Backend> Default for PlanInputs<'_, B> {
    fn default() -> Self {
        PlanInputs {
            centroids: None,
            learned: None,
            dropout: None,
        }
    }
}

/// Combiner attention of a plan on per-head tensors: mixtures average their
/// components (paper 3.3); the learnable plan assigns every token to its
/// nearest centroid (eq. 11/12), from `centroids: [heads, clusters, d_head]`
/// or, when none are given, from [`default_centroids`].
///
/// A plan with the learned row summary needs its weights: use
/// [`plan_attention_with`] (this returns [`PlanError::MissingSummaryWeights`]).
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`
/// - output: `[batch, heads, seq, d_head]`
pub fn plan_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    plan: &Plan,
    mode: Mode,
    abs: &Abstraction<B>,
    centroids: Option<Tensor<B, 3>>,
) -> Result<Tensor<B, 4>, PlanError> {
    let inputs = PlanInputs {
        centroids,
        ..PlanInputs::default()
    };
    plan_attention_with(q, k, v, plan, mode, abs, inputs)
}

/// [`plan_attention`] with everything a plan may need ([`PlanInputs`]).
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`; `inputs.learned`'s `x`:
///   `[batch, seq, d_model]`
/// - output: `[batch, heads, seq, d_head]`
pub fn plan_attention_with<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    plan: &Plan,
    mode: Mode,
    abs: &Abstraction<B>,
    inputs: PlanInputs<'_, B>,
) -> Result<Tensor<B, 4>, PlanError> {
    let [_, h, len, d] = q.dims();
    if len == 0 {
        return Err(PlanError::Zero("sequence length"));
    }
    let comps = plan.components();
    if comps.is_empty() {
        return Err(PlanError::EmptyMixture);
    }
    let n = comps.len() as f64;
    let dropout = inputs.dropout;
    let mut out: Option<Tensor<B, 4>> = None;
    for comp in comps {
        let o = match comp {
            Plan::Learnable { clusters } => {
                let c = match &inputs.centroids {
                    Some(c) => c.clone(),
                    None => {
                        let n = clusters_for(len, *clusters);
                        crate::to_dtype(default_centroids(h, n, d, &q.device()), q.dtype())
                    }
                };
                learnable_attention_with(q.clone(), k.clone(), v.clone(), c, mode, abs, dropout)
            }
            Plan::AxialRowmajor {
                summary: RowSummary::Learned,
                ..
            } => {
                let (summary, x) = inputs
                    .learned
                    .as_ref()
                    .ok_or(PlanError::MissingSummaryWeights)?;
                learned_rowmajor_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    x.clone(),
                    &comp.cached_layout(len, mode)?,
                    summary,
                    abs,
                    dropout,
                )
            }
            p => {
                let layout = p.cached_layout(len, mode)?;
                let tensors = LayoutTensors::cached(&layout, &q.device());
                combiner_attention_on(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    &layout,
                    &tensors,
                    abs,
                    dropout,
                )
            }
        };
        out = Some(match out {
            Some(acc) => acc + o,
            None => o,
        });
    }
    let out = out.expect("non-empty");
    Ok(if n > 1.0 { out.div_scalar(n) } else { out })
}

/// Deterministic unit-norm centroids `[heads, clusters, d_head]` (a fixed
/// pseudo-random draw), the starting point of the online k-means.
pub fn default_centroids<B: Backend>(
    heads: usize,
    clusters: usize,
    d_head: usize,
    device: &B::Device,
) -> Tensor<B, 3> {
    let mut rng = crate::SplitMix::from_state(0x9e37_79b9_7f4a_7c15);
    let vals: Vec<f32> = (0..heads * clusters * d_head)
        // uniform in [-1, 1)
        .map(|_| (rng.next_u64() >> 11) as f32 / (1u64 << 52) as f32 - 1.0)
        .collect();
    let c = Tensor::<B, 3>::from_data(TensorData::new(vals, [heads, clusters, d_head]), device);
    let norm = c.clone().powi_scalar(2).sum_dim(2).sqrt().clamp_min(1e-6);
    c / norm
}

/// Nearest-centroid cluster ids: `[batch * heads][seq]`. Each token's id
/// depends on its own key only, which keeps the LM form causal.
///
/// # Shapes
/// - `k`: `[batch, heads, seq, d_head]`, `centroids`: `[heads, clusters, d_head]`
pub fn assign_clusters<B: Backend>(k: Tensor<B, 4>, centroids: Tensor<B, 3>) -> Vec<Vec<usize>> {
    let [b, h, len, _] = k.dims();
    let ids = nearest_centroid(k, centroids)
        .reshape([b * h * len])
        .into_data()
        .convert::<i64>();
    let ids: Vec<i64> = ids.to_vec().expect("int data");
    ids.chunks(len.max(1))
        .map(|c| c.iter().map(|&x| x as usize).collect())
        .collect()
}

/// The nearest centroid of every key, on the device: `[batch, heads, seq, 1]`.
fn nearest_centroid<B: Backend>(k: Tensor<B, 4>, centroids: Tensor<B, 3>) -> Tensor<B, 4, Int> {
    let [b, h, _, d] = k.dims();
    let n = centroids.dims()[1];
    let c = centroids.detach().unsqueeze::<4>().expand([b, h, n, d]);
    // argmin |k - c|^2 = argmax (k.c - |c|^2 / 2)
    let half_norm = c
        .clone()
        .powi_scalar(2)
        .sum_dim(3)
        .swap_dims(2, 3)
        .mul_scalar(0.5);
    k.detach()
        .matmul(c.swap_dims(2, 3))
        .sub(half_norm)
        .argmax(3)
}

/// One online k-means step (Routing Transformer): every centroid moves
/// towards the mean of the keys assigned to it, `c <- decay c + (1 - decay) mean`.
/// Training loops call it after each step with the layer's keys; centroids
/// with no assigned key stay.
///
/// # Shapes
/// - `k`: `[batch, heads, seq, d_head]`, `centroids`: `[heads, clusters, d_head]`
pub fn kmeans_update<B: Backend>(
    k: Tensor<B, 4>,
    centroids: Tensor<B, 3>,
    decay: f64,
) -> Tensor<B, 3> {
    let [b, h, len, d] = k.dims();
    let n = centroids.dims()[1];
    let device = k.device();
    // assignments stay on the device: no host round trip per step
    let ids = nearest_centroid(k.clone(), centroids.clone());
    let onehot = ids
        .equal(
            Tensor::<B, 1, Int>::arange(0..n as i64, &device)
                .reshape([1, 1, 1, n])
                .expand([b, h, len, n]),
        )
        .float();
    let k = k.detach();
    let sums = onehot
        .clone()
        .swap_dims(2, 3)
        .matmul(k)
        .sum_dim(0)
        .squeeze_dim::<3>(0); // [h, n, d]
    let counts = onehot
        .sum_dim(2)
        .sum_dim(0)
        .squeeze_dim::<3>(0)
        .swap_dims(1, 2); // [h, n, 1]
    let empty = counts.clone().equal_elem(0.0).expand([h, n, d]);
    let mean = sums / counts.clamp_min(1.0);
    let moved = centroids.clone().mul_scalar(decay) + mean.mul_scalar(1.0 - decay);
    moved.mask_where(empty, centroids)
}

/// The learnable plan: every token joins its nearest centroid's region, then
/// the routing layout (eq. 11/12) runs per sequence and head.
pub fn learnable_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    centroids: Tensor<B, 3>,
    mode: Mode,
    abs: &Abstraction<B>,
) -> Tensor<B, 4> {
    learnable_attention_with(q, k, v, centroids, mode, abs, None)
}

/// [`learnable_attention`] with attention dropout.
pub fn learnable_attention_with<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    centroids: Tensor<B, 3>,
    mode: Mode,
    abs: &Abstraction<B>,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    let [b, h, len, d] = q.dims();
    let layouts = learnable_layouts(k.clone(), centroids, mode);
    let mut rows = Vec::with_capacity(b);
    for bi in 0..b {
        let mut heads = Vec::with_capacity(h);
        for hi in 0..h {
            let layout = &layouts[bi * h + hi];
            let sl = |t: &Tensor<B, 4>| t.clone().slice([bi..bi + 1, hi..hi + 1, 0..len, 0..d]);
            heads.push(combiner_attention_with(
                sl(&q),
                sl(&k),
                sl(&v),
                layout,
                abs,
                dropout,
            ));
        }
        rows.push(Tensor::cat(heads, 1));
    }
    Tensor::cat(rows, 0)
}

/// The learnable plan's layouts for keys `k`: every token joins its nearest
/// centroid's region, compacted to the regions in use, and the routing
/// layout (eq. 11/12) is compiled per `(batch, head)` slice, batch-major.
///
/// # Shapes
/// - `k`: `[batch, heads, seq, d_head]`, `centroids`: `[heads, clusters, d_head]`
pub fn learnable_layouts<B: Backend>(
    k: Tensor<B, 4>,
    centroids: Tensor<B, 3>,
    mode: Mode,
) -> Vec<Layout> {
    assign_clusters(k, centroids)
        .iter()
        .map(|ids| routing_layout(&compact_regions(ids), mode))
        .collect()
}
