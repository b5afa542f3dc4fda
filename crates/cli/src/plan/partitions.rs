//! The set view of every component of a plan, for one input.
//!
//! Most plans have one partition per length; the learnable plan's regions
//! come from the keys (nearest centroid), so it has one per sequence and
//! head. The same assignment as `combiner::plan_attention` is used so that
//! pictures and the oracle describe exactly what the efficient path computes.

use anyhow::{Context, Result};
use burn::prelude::*;
use combiner::attention::{assign_clusters, default_centroids};
use combiner::plan::routing_layout;
use combiner::{Abstraction, Grid, Mode, Partition, Plan};

/// The partitions of one component plan.
pub enum Parts {
    /// One partition for every sequence and head.
    Shared(Partition),
    /// One partition per `(batch, head)` slice, batch-major.
    PerSlice(Vec<Partition>),
}

/// One component of a plan (a mixture has several).
pub struct Component {
    /// The component plan's name.
    pub name: String,
    /// The grid of an axial plan, for drawing.
    pub grid: Option<Grid>,
    /// Its partitions.
    pub parts: Parts,
}

impl Component {
    /// The partition of slice `s` (`batch * heads + head`).
    pub fn slice(&self, s: usize) -> &Partition {
        match &self.parts {
            Parts::Shared(p) => p,
            Parts::PerSlice(ps) => &ps[s],
        }
    }
}

/// Compiles every component of `plan` for keys `k: [batch, heads, seq, d_head]`.
pub fn components<B: Backend>(plan: &Plan, mode: Mode, k: &Tensor<B, 4>) -> Result<Vec<Component>> {
    let [_, h, len, d] = k.dims();
    let comps = plan.components();
    anyhow::ensure!(!comps.is_empty(), "plan `{}` has no component", plan.name());
    comps
        .into_iter()
        .map(|comp| {
            let name = comp.name();
            let parts = match comp {
                Plan::Learnable { clusters } => {
                    // Same default as `plan_attention` when no centroids are given.
                    let n = clusters
                        .unwrap_or_else(|| (len as f64).sqrt().ceil() as usize)
                        .max(1);
                    let centroids = default_centroids::<B>(h, n, d, &k.device());
                    let ids = assign_clusters(k.clone(), centroids);
                    Parts::PerSlice(
                        ids.iter()
                            .map(|r| routing_layout(&compact(r), mode).partition())
                            .collect(),
                    )
                }
                p => Parts::Shared(
                    p.layout(len, mode)
                        .with_context(|| format!("compiling plan `{name}` at length {len}"))?
                        .partition(),
                ),
            };
            let grid = comp.grid(len)?;
            Ok(Component { name, grid, parts })
        })
        .collect()
}

/// Renumbers cluster ids to `0..used`, as the efficient path does.
fn compact(ids: &[usize]) -> Vec<usize> {
    let mut map = std::collections::HashMap::new();
    ids.iter()
        .map(|&c| {
            let next = map.len();
            *map.entry(c).or_insert(next)
        })
        .collect()
}

/// The dense oracle output `q(j|i) V` averaged over components.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`; output the same
pub fn oracle<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    comps: &[Component],
    abs: &Abstraction<B>,
) -> Tensor<B, 4> {
    use combiner::oracle::oracle_attention;
    let shared: Option<Vec<Partition>> = comps
        .iter()
        .map(|c| match &c.parts {
            Parts::Shared(p) => Some(p.clone()),
            Parts::PerSlice(_) => None,
        })
        .collect();
    if let Some(parts) = shared {
        return oracle_attention(q, k, v, &parts, abs);
    }
    let [b, h, len, d] = q.dims();
    let rows = (0..b)
        .map(|bi| {
            let heads = (0..h)
                .map(|hi| {
                    let s = bi * h + hi;
                    let parts: Vec<Partition> = comps.iter().map(|c| c.slice(s).clone()).collect();
                    let sl =
                        |t: &Tensor<B, 4>| t.clone().slice([bi..bi + 1, hi..hi + 1, 0..len, 0..d]);
                    oracle_attention(sl(&q), sl(&k), sl(&v), &parts, abs)
                })
                .collect();
            Tensor::cat(heads, 1)
        })
        .collect();
    Tensor::cat(rows, 0)
}
