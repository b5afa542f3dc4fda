//! Factorization plans of the paper (section 4, Appendices B-D), each in LM
//! and MLM form, compiled to a [`Layout`] for a given length.
//!
//! Positions are 0-based. For the axial plans the sequence is laid out on a
//! grid of `rows x cols` cells, position `i = r * cols + c`.

//!
//! One file per plan family builds its [`Layout`]: `fixed.rs`,
//! `logsparse.rs`, `axial.rs` (vertical, horizontal, row-major), `mixture.rs`
//! (the joint form; the paper's mixture averages its components) and
//! `learnable.rs` (regions from k-means); `strided.rs` is README's worked
//! example of adding a plan. Names live in one list,
//! [`NAMED_PLANS`]; a new plan is a file, a variant with its arm in
//! [`Plan::layout`], and an entry there.

mod axial;
mod fixed;
mod learnable;
mod logsparse;
mod mixture;
mod names;
pub mod strided;

use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use axial::Cells;
pub use fixed::fixed_layout;
pub use learnable::{clusters_for, compact_regions, routing_layout, MODULE_CLUSTERS};
pub use logsparse::logsparse_layout;
pub use names::{plan_names, NamedPlan, NAMED_PLANS};

/// Attention mode: the support `Omega_i` of query `i`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Autoregressive (causal): `Omega_i = {j <= i}`.
    #[default]
    Lm,
    /// Bidirectional (masked LM): `Omega_i = {all j}`.
    Mlm,
}

impl Mode {
    /// Whether `j` is in the full support of `i`.
    pub fn allows(self, i: usize, j: usize) -> bool {
        match self {
            Mode::Lm => j <= i,
            Mode::Mlm => true,
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "lm" | "causal" => Ok(Mode::Lm),
            "mlm" | "bidirectional" => Ok(Mode::Mlm),
            _ => Err(format!("unknown mode `{s}`: expected `lm` or `mlm`")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Lm => "lm",
            Mode::Mlm => "mlm",
        })
    }
}

/// A 2-D grid shape for the axial plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    /// Number of rows `n`.
    pub rows: usize,
    /// Number of columns `m`.
    pub cols: usize,
}

/// How Combiner-Axial row-major summarizes an earlier row for a query column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowSummary {
    /// Parameter-free (paper section 4.3): the span key is the abstraction
    /// (max-pool by default) of the row's keys.
    #[default]
    Pooled,
    /// The authors' code (`SelfAttAxialRowmajor`): the span key of row `r2`
    /// for column `c` is `W1 LayerNorm(x(r2, c) + W0 concat_heads(vbar(r2, c)))`,
    /// with learned `W0`, `W1` and LayerNorm ([`crate::LearnedRowSummary`]).
    Learned,
}

impl RowSummary {
    fn is_pooled(&self) -> bool {
        *self == RowSummary::Pooled
    }
}

/// A factorization plan: which parts of `Omega_i` are attended directly and
/// which through span summaries. A plan is data: it prints, serializes to TOML
/// (`kind = "fixed"`, ...) and compiles to a [`Layout`] for any length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Plan {
    /// Combiner-Fixed (4.1): direct = own block, one span per other block.
    /// `block` defaults to `ceil(sqrt(L))`.
    Fixed {
        /// Block size `s`.
        #[serde(default)]
        block: Option<usize>,
    },
    /// Combiner-Logsparse (4.2, Appendix B): dyadic spans, `O(L log L)`.
    Logsparse,
    /// Combiner-Axial-Vertical (4.3, Appendix C): spans are other columns.
    AxialVertical {
        /// Grid; defaults to `cols = ceil(sqrt(L))`, `rows = ceil(L / cols)`.
        #[serde(default)]
        grid: Option<Grid>,
    },
    /// Combiner-Axial-Horizontal: spans are other rows without the query's column.
    AxialHorizontal {
        /// Grid; see [`Plan::AxialVertical`].
        #[serde(default)]
        grid: Option<Grid>,
    },
    /// Combiner-Axial-Rowmajor: direct = own row; one span per other row whose
    /// local expectation is the attention of the token in the query's column.
    AxialRowmajor {
        /// Grid; see [`Plan::AxialVertical`].
        #[serde(default)]
        grid: Option<Grid>,
        /// Span keys: pooled (parameter-free, the default) or learned (the
        /// authors' code).
        #[serde(default, skip_serializing_if = "RowSummary::is_pooled")]
        summary: RowSummary,
    },
    /// Mixture (3.3): the mean of the outputs of several plans.
    Mixture {
        /// Component plans (the paper uses two).
        plans: Vec<Plan>,
    },
    /// Combiner-Mixture in the authors' joint form (`AxialMixtureAtt`): the
    /// terms of axial-vertical and axial-horizontal in ONE softmax. LM:
    /// direct = own column above the query plus own row up to it; spans =
    /// every other column's rows above the query's row, and every earlier
    /// row left of and right of the query's column. A position above and
    /// off the query's column is reached through two spans, so the parts
    /// overlap by design ([`Plan::overlaps_by_design`]). MLM mirrors every
    /// part (rows below, later rows).
    MixtureJoint {
        /// Grid; see [`Plan::AxialVertical`].
        #[serde(default)]
        grid: Option<Grid>,
    },
    /// Combiner-Strided (README "Adding a factorization plan"; not in the
    /// paper): direct = the query's residue class modulo `stride`, one span
    /// per other residue class.
    Strided {
        /// Stride `s`; defaults to `ceil(sqrt(L))`.
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Combiner-Learnable (4.4, eq. 11/12): every token joins the region of
    /// its key's nearest centroid; centroids follow online k-means
    /// (`attention::kmeans_update`).
    Learnable {
        /// Number of regions; defaults to `ceil(sqrt(L))`.
        #[serde(default)]
        clusters: Option<usize>,
    },
}

impl Default for Plan {
    fn default() -> Self {
        Plan::Fixed { block: None }
    }
}

/// A plan that cannot be compiled for the requested length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The grid has fewer cells than the sequence.
    #[error("grid {rows}x{cols} holds {cells} positions but the sequence has {len}")]
    GridTooSmall {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// rows * cols.
        cells: usize,
        /// Sequence length.
        len: usize,
    },
    /// A size parameter is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The plan needs data (cluster assignments) to compile.
    #[error("the learnable plan needs cluster assignments; use `Layout` from `routing_layout`")]
    DataDependent,
    /// A mixture has no component.
    #[error("a mixture needs at least one component plan")]
    EmptyMixture,
    /// A mixture of several plans has no single layout: its components
    /// each have one (the mixture averages their outputs).
    #[error(
        "a mixture of {0} plans has no single layout: compile each component \
         (`Plan::components`, `Plan::component_layouts`)"
    )]
    MultiComponent(usize),
    /// Unknown plan name, and what was expected.
    #[error("unknown plan `{0}`: expected one of {1}")]
    Unknown(String, String),
    /// The learned row summary was asked for without its weights.
    #[error(
        "the learned row-major summary needs the layer input x and its weights \
         (w0, ln_scale, ln_bias, w1); run it through `CombinerAttention` or \
         `plan_attention_with`"
    )]
    MissingSummaryWeights,
}

/// `ceil(sqrt(n))`, at least 1: the default block size, axial width and
/// cluster count of the `O(L sqrt L)` plans (and of the sparse baselines).
pub fn ceil_sqrt(n: usize) -> usize {
    let mut s = (n as f64).sqrt() as usize;
    while s * s < n {
        s += 1;
    }
    while s > 1 && (s - 1) * (s - 1) >= n {
        s -= 1;
    }
    s.max(1)
}

impl Plan {
    /// The paper's plans by name ([`NAMED_PLANS`]), with default parameters.
    pub fn from_name(name: &str) -> Result<Plan, PlanError> {
        names::by_name(name)
            .map(NamedPlan::plan)
            .ok_or_else(|| PlanError::Unknown(name.to_string(), plan_names()))
    }

    /// Every swept plan of [`NAMED_PLANS`] with default parameters (for
    /// `verify --all` and the test sweeps).
    pub fn all() -> Vec<(&'static str, Plan)> {
        NAMED_PLANS
            .iter()
            .filter(|p| p.swept)
            .map(|p| (p.name, p.plan()))
            .collect()
    }

    /// A short name for tables and pictures: the name in [`NAMED_PLANS`],
    /// with a fixed block size or a mixture's components spelled out.
    pub fn name(&self) -> String {
        match self {
            Plan::Fixed { block: Some(s) } => format!("fixed(s={s})"),
            Plan::Mixture { plans } => format!(
                "mixture({})",
                plans.iter().map(Plan::name).collect::<Vec<_>>().join("+")
            ),
            p => names::of(p)
                .expect("every kind of plan has an entry in NAMED_PLANS")
                .name
                .into(),
        }
    }

    /// The row summary of an axial row-major plan (`None` for other plans).
    pub fn row_summary(&self) -> Option<RowSummary> {
        match self {
            Plan::AxialRowmajor { summary, .. } => Some(*summary),
            _ => None,
        }
    }

    /// Whether the plan lays the sequence out on a grid (`grid = ...`).
    pub fn takes_grid(&self) -> bool {
        self.grid_param().is_some()
    }

    fn grid_param(&self) -> Option<Option<Grid>> {
        match self {
            Plan::AxialVertical { grid }
            | Plan::AxialHorizontal { grid }
            | Plan::AxialRowmajor { grid, .. }
            | Plan::MixtureJoint { grid } => Some(*grid),
            _ => None,
        }
    }

    /// The component plans whose outputs are averaged (one for non-mixtures).
    pub fn components(&self) -> Vec<&Plan> {
        match self {
            Plan::Mixture { plans } => plans.iter().flat_map(Plan::components).collect(),
            p => vec![p],
        }
    }

    /// Whether some query reaches a position through two parts on purpose
    /// (the authors' joint mixture); the verifier then counts overlaps
    /// instead of failing on them, and `q(j|i)` sums both contributions.
    pub fn overlaps_by_design(&self) -> bool {
        self.components()
            .iter()
            .any(|p| matches!(p, Plan::MixtureJoint { .. }))
    }

    /// Whether some component needs the learned row summary (weights and
    /// the layer input), so that it cannot run on `q`, `k`, `v` alone.
    pub fn needs_learned_summary(&self) -> bool {
        self.components().iter().any(|p| {
            matches!(
                p,
                Plan::AxialRowmajor {
                    summary: RowSummary::Learned,
                    ..
                }
            )
        })
    }

    /// The grid of an axial plan at `len` (`None` for other plans).
    pub fn grid(&self, len: usize) -> Result<Option<Grid>, PlanError> {
        self.grid_param().map(|g| grid_for(len, g)).transpose()
    }

    /// Compiles a single (non-mixture, non-learnable) plan for `len`.
    pub fn layout(&self, len: usize, mode: Mode) -> Result<Layout, PlanError> {
        let cells = |grid: &Option<Grid>| -> Result<Cells, PlanError> {
            Ok(Cells::new(len, grid_for(len, *grid)?, mode))
        };
        match self {
            Plan::Fixed { block } => {
                let s = block.unwrap_or_else(|| ceil_sqrt(len));
                if s == 0 {
                    return Err(PlanError::Zero("fixed block size"));
                }
                Ok(fixed_layout(len, s, mode))
            }
            Plan::Logsparse => Ok(logsparse_layout(len, mode)),
            Plan::AxialVertical { grid } => Ok(axial::vertical(&cells(grid)?)),
            Plan::AxialHorizontal { grid } => Ok(axial::horizontal(&cells(grid)?)),
            Plan::AxialRowmajor { grid, .. } => Ok(axial::rowmajor(&cells(grid)?)),
            Plan::MixtureJoint { grid } => Ok(mixture::joint_layout(&cells(grid)?)),
            Plan::Mixture { plans } => match plans.as_slice() {
                [] => Err(PlanError::EmptyMixture),
                [one] => one.layout(len, mode),
                many => Err(PlanError::MultiComponent(many.len())),
            },
            Plan::Strided { stride } => strided::strided_layout(len, *stride, mode),
            Plan::Learnable { .. } => Err(PlanError::DataDependent),
        }
    }

    /// [`Plan::layout`], built once per (plan, length, mode) in a process
    /// and shared afterwards: a layout of length `L` holds `O(L sqrt L)`
    /// indices, too many to rebuild on every forward pass. The cache keeps
    /// the 16 most recent layouts' worth (it is emptied when full).
    pub fn cached_layout(
        &self,
        len: usize,
        mode: Mode,
    ) -> Result<std::sync::Arc<Layout>, PlanError> {
        static CACHE: crate::Memo<(String, usize, Mode), Layout> = crate::Memo::new();
        CACHE.get_or_try_insert((format!("{self:?}"), len, mode), || self.layout(len, mode))
    }

    /// Layouts of every component, for `len` (learnable: `clusters` regions
    /// of consecutive positions, a fixed stand-in for data-driven clusters).
    pub fn component_layouts(&self, len: usize, mode: Mode) -> Result<Vec<Layout>, PlanError> {
        if let Plan::Mixture { plans } = self {
            if plans.is_empty() {
                return Err(PlanError::EmptyMixture);
            }
        }
        self.components()
            .into_iter()
            .map(|p| match p {
                Plan::Learnable { clusters } => Ok(routing_layout(
                    &learnable::consecutive_regions(len, *clusters),
                    mode,
                )),
                p => p.layout(len, mode),
            })
            .collect()
    }
}

/// The grid an axial plan uses at length `len`.
pub fn grid_for(len: usize, grid: Option<Grid>) -> Result<Grid, PlanError> {
    match grid {
        Some(g) => {
            if g.rows == 0 || g.cols == 0 {
                return Err(PlanError::Zero("grid rows and cols"));
            }
            if g.rows * g.cols < len {
                return Err(PlanError::GridTooSmall {
                    rows: g.rows,
                    cols: g.cols,
                    cells: g.rows * g.cols,
                    len,
                });
            }
            Ok(g)
        }
        None => {
            let cols = ceil_sqrt(len);
            Ok(Grid {
                rows: len.div_ceil(cols).max(1),
                cols,
            })
        }
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn cached_layouts_are_built_once_and_equal_fresh_ones() {
        for plan in [
            Plan::Fixed { block: None },
            Plan::from_name("axial-rowmajor").unwrap(),
            Plan::Logsparse,
        ] {
            for mode in [Mode::Lm, Mode::Mlm] {
                let a = plan.cached_layout(37, mode).unwrap();
                let b = plan.cached_layout(37, mode).unwrap();
                assert!(
                    std::sync::Arc::ptr_eq(&a, &b),
                    "{plan:?} {mode:?}: built twice"
                );
                assert_eq!(*a, plan.layout(37, mode).unwrap(), "{plan:?} {mode:?}");
            }
        }
        assert!(Plan::Fixed { block: Some(0) }
            .cached_layout(8, Mode::Lm)
            .is_err());
    }

    #[test]
    fn a_mixture_of_several_plans_has_no_single_layout() {
        let two = Plan::Mixture {
            plans: vec![Plan::Logsparse, Plan::Fixed { block: None }],
        };
        assert_eq!(two.layout(16, Mode::Lm), Err(PlanError::MultiComponent(2)));
        assert_eq!(two.component_layouts(16, Mode::Lm).unwrap().len(), 2);
        let one = Plan::Mixture {
            plans: vec![Plan::Logsparse],
        };
        assert_eq!(
            one.layout(16, Mode::Lm),
            Plan::Logsparse.layout(16, Mode::Lm)
        );
    }
}
