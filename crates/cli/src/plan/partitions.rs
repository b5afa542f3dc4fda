//! The set view of every component of a plan, for one input.
//!
//! Most plans have one partition per length; the learnable plan's regions
//! come from the keys (nearest centroid), so it has one per sequence and
//! head. The same assignment as `combiner::plan_attention` is used so that
//! pictures and the oracle describe exactly what the efficient path computes.

use anyhow::{Context, Result};
use burn::prelude::*;
use combiner::attention::{default_centroids, learnable_layouts};
use combiner::plan::clusters_for;
use combiner::{Abstraction, Grid, Layout, LearnedRowSummary, Mode, Partition, Plan, RowSummary};

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
    /// Whether its span keys are the learned row summary's.
    pub learned: bool,
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
                    // What `plan_attention` runs when no centroids are given.
                    let n = clusters_for(len, *clusters);
                    let centroids = default_centroids::<B>(h, n, d, &k.device());
                    Parts::PerSlice(
                        learnable_layouts(k.clone(), centroids, mode)
                            .iter()
                            .map(Layout::partition)
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
            let learned = matches!(
                comp,
                Plan::AxialRowmajor {
                    summary: RowSummary::Learned,
                    ..
                }
            );
            Ok(Component {
                name,
                grid,
                parts,
                learned,
            })
        })
        .collect()
}

/// The dense oracle output `q(j|i) V` averaged over components; `learned`
/// (the learned row summary and the layer input `x: [batch, seq, d_model]`)
/// gives the span keys of `axial-rowmajor` with `summary = "learned"`.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`; output the same
pub fn oracle<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    comps: &[Component],
    abs: &Abstraction<B>,
    learned: Option<(&LearnedRowSummary<B>, &Tensor<B, 3>)>,
) -> Result<Tensor<B, 4>> {
    use combiner::oracle::{oracle_attention, oracle_attention_learned};
    let [b, h, len, d] = q.dims();
    let mut total: Option<Tensor<B, 4>> = None;
    for c in comps {
        let out = match &c.parts {
            Parts::Shared(p) if c.learned => {
                let (summary, x) = learned.with_context(|| {
                    format!(
                        "the oracle of `{}` needs the learned summary's weights",
                        c.name
                    )
                })?;
                oracle_attention_learned(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    x.clone(),
                    std::slice::from_ref(p),
                    abs,
                    summary,
                )
            }
            Parts::Shared(p) => oracle_attention(
                q.clone(),
                k.clone(),
                v.clone(),
                std::slice::from_ref(p),
                abs,
            ),
            Parts::PerSlice(_) => {
                let rows = (0..b)
                    .map(|bi| {
                        let heads = (0..h)
                            .map(|hi| {
                                let sl = |t: &Tensor<B, 4>| {
                                    t.clone().slice([bi..bi + 1, hi..hi + 1, 0..len, 0..d])
                                };
                                let p = c.slice(bi * h + hi).clone();
                                oracle_attention(sl(&q), sl(&k), sl(&v), &[p], abs)
                            })
                            .collect();
                        Tensor::cat(heads, 1)
                    })
                    .collect();
                Tensor::cat(rows, 0)
            }
        };
        total = Some(match total {
            Some(acc) => acc + out,
            None => out,
        });
    }
    let total = total.context("a plan has at least one component")?;
    Ok(total.div_scalar(comps.len() as f64))
}
