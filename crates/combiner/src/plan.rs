//! Factorization plans of the paper (section 4, Appendices B-D), each in LM
//! and MLM form, compiled to a [`Layout`] for a given length.
//!
//! Positions are 0-based. For the axial plans the sequence is laid out on a
//! grid of `rows x cols` cells, position `i = r * cols + c`.

use serde::{Deserialize, Serialize};

use crate::layout::{Layout, SpanSet, Term};

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
    /// Unknown plan name.
    #[error("unknown plan `{0}`: expected one of {1}")]
    Unknown(String, &'static str),
    /// The learned row summary was asked for without its weights.
    #[error(
        "the learned row-major summary needs the layer input x and its weights \
         (w0, ln_scale, ln_bias, w1); run it through `CombinerAttention` or \
         `plan_attention_with`"
    )]
    MissingSummaryWeights,
}

/// Names accepted by [`Plan::from_name`].
pub const PLAN_NAMES: &str = "fixed, logsparse, axial-vertical, axial-horizontal, axial-rowmajor, \
     axial-rowmajor-learned, mixture, mixture-joint, learnable";

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
    /// The paper's plans by name, with default parameters. `mixture` is
    /// axial-vertical + axial-horizontal as in section 3.3.
    pub fn from_name(name: &str) -> Result<Plan, PlanError> {
        Ok(match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "fixed" => Plan::Fixed { block: None },
            "logsparse" => Plan::Logsparse,
            "axial-vertical" | "vertical" => Plan::AxialVertical { grid: None },
            "axial-horizontal" | "horizontal" => Plan::AxialHorizontal { grid: None },
            "axial-rowmajor" | "rowmajor" | "axial" => Plan::AxialRowmajor {
                grid: None,
                summary: RowSummary::Pooled,
            },
            "axial-rowmajor-learned" | "rowmajor-learned" | "axial-learned" => {
                Plan::AxialRowmajor {
                    grid: None,
                    summary: RowSummary::Learned,
                }
            }
            "mixture-joint" | "joint-mixture" | "axial-mixture" => {
                Plan::MixtureJoint { grid: None }
            }
            "mixture" => Plan::Mixture {
                plans: vec![
                    Plan::AxialVertical { grid: None },
                    Plan::AxialHorizontal { grid: None },
                ],
            },
            "learnable" | "routing" => Plan::Learnable { clusters: None },
            _ => return Err(PlanError::Unknown(name.to_string(), PLAN_NAMES)),
        })
    }

    /// Every plan of the paper with default parameters (for `verify --all`).
    /// The learned row-major summary is left out: its support is that of
    /// `axial-rowmajor`, only its span keys differ.
    pub fn all() -> Vec<(&'static str, Plan)> {
        [
            "fixed",
            "logsparse",
            "axial-vertical",
            "axial-horizontal",
            "axial-rowmajor",
            "mixture",
            "mixture-joint",
            "learnable",
        ]
        .into_iter()
        .map(|n| (n, Plan::from_name(n).expect("known plan")))
        .collect()
    }

    /// A short name for tables and pictures.
    pub fn name(&self) -> String {
        match self {
            Plan::Fixed { block: Some(s) } => format!("fixed(s={s})"),
            Plan::Fixed { block: None } => "fixed".into(),
            Plan::Logsparse => "logsparse".into(),
            Plan::AxialVertical { .. } => "axial-vertical".into(),
            Plan::AxialHorizontal { .. } => "axial-horizontal".into(),
            Plan::AxialRowmajor {
                summary: RowSummary::Pooled,
                ..
            } => "axial-rowmajor".into(),
            Plan::AxialRowmajor {
                summary: RowSummary::Learned,
                ..
            } => "axial-rowmajor-learned".into(),
            Plan::MixtureJoint { .. } => "mixture-joint".into(),
            Plan::Mixture { plans } => format!(
                "mixture({})",
                plans.iter().map(Plan::name).collect::<Vec<_>>().join("+")
            ),
            Plan::Learnable { .. } => "learnable".into(),
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
        match self {
            Plan::AxialVertical { grid }
            | Plan::AxialHorizontal { grid }
            | Plan::AxialRowmajor { grid, .. }
            | Plan::MixtureJoint { grid } => grid_for(len, *grid).map(Some),
            _ => Ok(None),
        }
    }

    /// Compiles a single (non-mixture, non-learnable) plan for `len`.
    pub fn layout(&self, len: usize, mode: Mode) -> Result<Layout, PlanError> {
        match self {
            Plan::Fixed { block } => {
                let s = block.unwrap_or_else(|| ceil_sqrt(len));
                if s == 0 {
                    return Err(PlanError::Zero("fixed block size"));
                }
                Ok(fixed_layout(len, s, mode))
            }
            Plan::Logsparse => Ok(logsparse_layout(len, mode)),
            Plan::AxialVertical { grid } => Ok(axial_layout(
                len,
                grid_for(len, *grid)?,
                mode,
                Axial::Vertical,
            )),
            Plan::AxialHorizontal { grid } => Ok(axial_layout(
                len,
                grid_for(len, *grid)?,
                mode,
                Axial::Horizontal,
            )),
            Plan::AxialRowmajor { grid, .. } => Ok(axial_layout(
                len,
                grid_for(len, *grid)?,
                mode,
                Axial::Rowmajor,
            )),
            Plan::MixtureJoint { grid } => Ok(axial_layout(
                len,
                grid_for(len, *grid)?,
                mode,
                Axial::MixtureJoint,
            )),
            Plan::Mixture { plans } => match plans.as_slice() {
                [] => Err(PlanError::EmptyMixture),
                [one] => one.layout(len, mode),
                _ => Err(PlanError::Unknown(
                    "mixture".into(),
                    "a single plan (compile each mixture component with `components()`)",
                )),
            },
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
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex, OnceLock};
        type Cache = Mutex<HashMap<(String, usize, Mode), Arc<Layout>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let key = (format!("{self:?}"), len, mode);
        if let Some(hit) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(hit.clone());
        }
        let layout = Arc::new(self.layout(len, mode)?);
        let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 16 {
            map.clear();
        }
        map.insert(key, layout.clone());
        Ok(layout)
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
                Plan::Learnable { clusters } => {
                    let n = clusters.unwrap_or_else(|| ceil_sqrt(len)).max(1);
                    let size = len.div_ceil(n).max(1);
                    let regions: Vec<usize> = (0..len).map(|i| i / size).collect();
                    Ok(routing_layout(&regions, mode))
                }
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

/// Combiner-Fixed with block size `s` (eq. 10; LM form restricted to `j <= i`).
pub fn fixed_layout(len: usize, s: usize, mode: Mode) -> Layout {
    let pad = len;
    let nb = len.div_ceil(s).max(1);
    let pos = |b: usize, t: usize| {
        let p = b * s + t;
        if p < len {
            p
        } else {
            pad
        }
    };
    let members: Vec<usize> = (0..nb)
        .flat_map(|b| (0..s).map(move |t| pos(b, t)))
        .collect();
    let mut direct = Term::new(nb, s, s, pad);
    let mut spans = Term::new(nb, s, nb, pad);
    for b in 0..nb {
        for t in 0..s {
            let i = pos(b, t);
            direct.queries[b * s + t] = i;
            spans.queries[b * s + t] = i;
            direct.items[b * s + t] = i;
            if i == pad {
                continue;
            }
            for t2 in 0..s {
                let j = pos(b, t2);
                direct.mask[(b * s + t) * s + t2] = j != pad && mode.allows(i, j);
            }
            for b2 in 0..nb {
                spans.mask[(b * s + t) * nb + b2] = b2 != b && (mode == Mode::Mlm || b2 < b);
            }
        }
        for b2 in 0..nb {
            spans.items[b * nb + b2] = len + 1 + b2;
        }
    }
    Layout {
        len,
        span_sets: vec![SpanSet::Blocks {
            count: nb,
            width: s,
            members,
            token_queries: None,
        }],
        terms: vec![direct, spans],
    }
}

/// Combiner-Logsparse. LM: direct = `{i}` plus `{i - 1}` for odd `i`; for each
/// set bit `l >= 1` of `i` the span `[a, a + 2^l)` with `a` = `i` with bits
/// `0..=l` cleared, a dyadic cover of `[0, i)` complete at every length.
/// MLM adds the mirror image after `i` (Appendix B, Figure 4).
pub fn logsparse_layout(len: usize, mode: Mode) -> Layout {
    let pad = len;
    let mut span_sets = Vec::new();
    // (level, mirrored) -> offset of its span set in the global numbering
    let mut offsets = std::collections::HashMap::new();
    let mut total = 0usize;
    let sides: &[bool] = if mode == Mode::Mlm {
        &[false, true]
    } else {
        &[false]
    };
    for &mirror in sides {
        let mut l = 1;
        while (1usize << l) < len {
            let size = 1usize << l;
            let stride = size << 1;
            // spans start at multiples of 2^(l+1) with a + 2^l <= len - 1
            let count = (len - 1 - size) / stride + 1;
            let mut members = Vec::with_capacity(count * size);
            for k in 0..count {
                for t in 0..size {
                    let p = k * stride + t;
                    members.push(if mirror { len - 1 - p } else { p });
                }
            }
            offsets.insert((l, mirror), total);
            total += count;
            span_sets.push(SpanSet::Blocks {
                count,
                width: size,
                members,
                token_queries: None,
            });
            l += 1;
        }
    }
    let max_bits = usize::BITS as usize - len.max(1).leading_zeros() as usize;
    let span_w = (max_bits * sides.len()).max(1);
    let direct_w = if mode == Mode::Mlm { 3 } else { 2 };
    let mut direct = Term::new(len, 1, direct_w, pad);
    let mut spans = Term::new(len, 1, span_w, pad);
    for i in 0..len {
        direct.queries[i] = i;
        spans.queries[i] = i;
        let mut d = vec![i];
        if i % 2 == 1 {
            d.push(i - 1);
        }
        let ri = len - 1 - i;
        if mode == Mode::Mlm && ri % 2 == 1 {
            d.push(i + 1);
        }
        for (b, j) in d.into_iter().enumerate() {
            direct.items[i * direct_w + b] = j;
            direct.mask[i * direct_w + b] = true;
        }
        let mut b = 0;
        for &mirror in sides {
            let x = if mirror { ri } else { i };
            let mut l = 1;
            while (1usize << l) <= x {
                if x >> l & 1 == 1 {
                    let a = (x >> (l + 1)) << (l + 1);
                    let u = offsets[&(l, mirror)] + a / (2usize << l);
                    spans.items[i * span_w + b] = len + 1 + u;
                    spans.mask[i * span_w + b] = true;
                    b += 1;
                }
                l += 1;
            }
        }
    }
    Layout {
        len,
        span_sets,
        terms: vec![direct, spans],
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Axial {
    Vertical,
    Horizontal,
    Rowmajor,
    MixtureJoint,
}

/// Combiner-Axial (4.3 LM, Appendix C MLM) on a `rows x cols` grid.
fn axial_layout(len: usize, g: Grid, mode: Mode, kind: Axial) -> Layout {
    let (n, m, pad) = (g.rows, g.cols, len);
    let lm = mode == Mode::Lm;
    let at = |r: usize, c: usize| {
        let p = r * m + c;
        if p < len {
            p
        } else {
            pad
        }
    };
    let row_seqs: Vec<usize> = (0..n).flat_map(|r| (0..m).map(move |c| at(r, c))).collect();
    let col_seqs: Vec<usize> = (0..m).flat_map(|c| (0..n).map(move |r| at(r, c))).collect();
    let item = |u: usize| len + 1 + u;

    // Own row: groups = rows; LM up to the query, MLM the whole row.
    let mut row = Term::new(n, m, m, pad);
    row.queries.clone_from(&row_seqs);
    row.items.clone_from(&row_seqs);
    for r in 0..n {
        for c in 0..m {
            if at(r, c) == pad {
                continue;
            }
            for c2 in 0..m {
                row.mask[(r * m + c) * m + c2] = at(r, c2) != pad && (!lm || c2 <= c);
            }
        }
    }
    // Own column without the own row: groups = columns.
    let mut col = Term::new(m, n, n, pad);
    col.queries.clone_from(&col_seqs);
    col.items.clone_from(&col_seqs);
    for c in 0..m {
        for r in 0..n {
            if at(r, c) == pad {
                continue;
            }
            for r2 in 0..n {
                col.mask[(c * n + r) * n + r2] = at(r2, c) != pad && r2 != r && (!lm || r2 < r);
            }
        }
    }

    // Spans (r2, c) of the other rows (LM: earlier rows), numbered r2 * m + c,
    // scored by queries grouped by column; `nonempty(r2, c)` drops spans
    // with no member.
    let other_rows = |nonempty: &dyn Fn(usize, usize) -> bool| {
        let mut spans = Term::new(m, n, n, pad);
        spans.queries.clone_from(&col_seqs);
        for c in 0..m {
            for r2 in 0..n {
                spans.items[c * n + r2] = item(r2 * m + c);
            }
            for r in 0..n {
                if at(r, c) == pad {
                    continue;
                }
                for r2 in 0..n {
                    spans.mask[(c * n + r) * n + r2] =
                        r2 != r && (!lm || r2 < r) && nonempty(r2, c);
                }
            }
        }
        spans
    };
    match kind {
        Axial::Vertical => {
            // LM: span (c2, r) = column c2, rows < r: inclusive prefix up to r - 1.
            // MLM: column c2 without row r (the own row is direct).
            let set = if lm {
                SpanSet::Prefixes {
                    count: m,
                    width: n,
                    seqs: col_seqs.clone(),
                }
            } else {
                SpanSet::ExcludeOne {
                    count: m,
                    width: n,
                    seqs: col_seqs.clone(),
                }
            };
            let mut spans = Term::new(n, m, m, pad);
            spans.queries.clone_from(&row_seqs);
            for r in 0..n {
                for c2 in 0..m {
                    // prefix index r - 1 (LM) or excluded index r (MLM)
                    let t = if lm { r.saturating_sub(1) } else { r };
                    spans.items[r * m + c2] = item(c2 * n + t);
                }
                for c in 0..m {
                    if at(r, c) == pad {
                        continue;
                    }
                    for c2 in 0..m {
                        let nonempty = if lm {
                            r > 0
                        } else {
                            (0..n).any(|r2| r2 != r && at(r2, c2) != pad)
                        };
                        spans.mask[(r * m + c) * m + c2] = c2 != c && nonempty;
                    }
                }
            }
            Layout {
                len,
                span_sets: vec![set],
                terms: vec![row, col, spans],
            }
        }
        Axial::Horizontal => {
            // span (r2, c) = row r2 without column c; queries grouped by column.
            let set = SpanSet::ExcludeOne {
                count: n,
                width: m,
                seqs: row_seqs.clone(),
            };
            let spans = other_rows(&|r2, c| (0..m).any(|c2| c2 != c && at(r2, c2) != pad));
            Layout {
                len,
                span_sets: vec![set],
                terms: vec![row, col, spans],
            }
        }
        Axial::Rowmajor => {
            // Direct = own row only; span (r2, c) = whole row r2, local
            // expectation queried by token (r2, c) (the last token of a short
            // final row stands in for cells past the end).
            let tokens: Vec<usize> = (0..n)
                .flat_map(|r2| (0..m).map(move |c| (r2 * m + c).min(len.saturating_sub(1))))
                .collect();
            let set = SpanSet::Blocks {
                count: n,
                width: m,
                members: row_seqs.clone(),
                token_queries: Some((m, tokens)),
            };
            let spans = other_rows(&|r2, _| at(r2, 0) != pad);
            // the row term as built: LM up to c, MLM the whole row
            Layout {
                len,
                span_sets: vec![set],
                terms: vec![row, spans],
            }
        }
        Axial::MixtureJoint => {
            // Span sets, all inclusive prefixes (pooled keys and queries by
            // running max/mean): columns top-down, rows left-to-right, rows
            // right-to-left (reversed), and in MLM columns bottom-up.
            let rev_rows: Vec<usize> = (0..n)
                .flat_map(|r| (0..m).rev().map(move |c| at(r, c)))
                .collect();
            let rev_cols: Vec<usize> = (0..m)
                .flat_map(|c| (0..n).rev().map(move |r| at(r, c)))
                .collect();
            let (down, l2r, r2l, up) = (0, n * m, 2 * n * m, 3 * n * m);
            let mut span_sets = vec![
                SpanSet::Prefixes {
                    count: m,
                    width: n,
                    seqs: col_seqs.clone(),
                },
                SpanSet::Prefixes {
                    count: n,
                    width: m,
                    seqs: row_seqs.clone(),
                },
                SpanSet::Prefixes {
                    count: n,
                    width: m,
                    seqs: rev_rows,
                },
            ];
            if !lm {
                span_sets.push(SpanSet::Prefixes {
                    count: m,
                    width: n,
                    seqs: rev_cols,
                });
            }
            // Other columns, queries grouped by row: column c2 above row r
            // (prefix r - 1) and, in MLM, below it (reversed prefix n - 2 - r).
            let cw = if lm { m } else { 2 * m };
            let mut cols = Term::new(n, m, cw, pad);
            cols.queries.clone_from(&row_seqs);
            for r in 0..n {
                for c2 in 0..m {
                    if r > 0 {
                        cols.items[r * cw + c2] = item(down + c2 * n + r - 1);
                    }
                    if !lm && r + 1 < n {
                        cols.items[r * cw + m + c2] = item(up + c2 * n + n - 2 - r);
                    }
                }
                for c in 0..m {
                    if at(r, c) == pad {
                        continue;
                    }
                    for c2 in (0..m).filter(|&c2| c2 != c) {
                        cols.mask[(r * m + c) * cw + c2] = r > 0;
                        if !lm {
                            cols.mask[(r * m + c) * cw + m + c2] =
                                r + 1 < n && at(r + 1, c2) != pad;
                        }
                    }
                }
            }
            // Other rows, queries grouped by column: row s left of column c
            // (prefix c - 1) and right of it (reversed prefix m - 2 - c).
            let mut rows = Term::new(m, n, 2 * n, pad);
            rows.queries.clone_from(&col_seqs);
            for c in 0..m {
                for s in 0..n {
                    if c > 0 {
                        rows.items[c * 2 * n + s] = item(l2r + s * m + c - 1);
                    }
                    if c + 1 < m {
                        rows.items[c * 2 * n + n + s] = item(r2l + s * m + m - 2 - c);
                    }
                }
                for r in 0..n {
                    if at(r, c) == pad {
                        continue;
                    }
                    for s in (0..n).filter(|&s| s != r && (!lm || s < r)) {
                        let q = (c * n + r) * 2 * n;
                        rows.mask[q + s] = c > 0 && at(s, 0) != pad;
                        rows.mask[q + n + s] = c + 1 < m && at(s, c + 1) != pad;
                    }
                }
            }
            Layout {
                len,
                span_sets,
                terms: vec![row, col, cols, rows],
            }
        }
    }
}

/// Combiner-Learnable (eq. 11 MLM, eq. 12 LM) for fixed region assignments:
/// `regions[i]` is the region of position `i`.
///
/// MLM: direct = own region, one span per other region. LM: direct = own
/// region up to `i`; for every other region the span of its members before
/// `i` (an inclusive prefix of the region sorted by position).
pub fn routing_layout(regions: &[usize], mode: Mode) -> Layout {
    let len = regions.len();
    let pad = len;
    let n = regions.iter().copied().max().map_or(1, |x| x + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, &r) in regions.iter().enumerate() {
        members[r].push(i);
    }
    let w = members.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut seqs = vec![pad; n * w];
    for (r, ms) in members.iter().enumerate() {
        seqs[r * w..r * w + ms.len()].copy_from_slice(ms);
    }
    let mut direct = Term::new(n, w, w, pad);
    direct.queries.clone_from(&seqs);
    direct.items.clone_from(&seqs);
    for r in 0..n {
        for a in 0..w {
            let i = seqs[r * w + a];
            if i == pad {
                continue;
            }
            for b in 0..w {
                let j = seqs[r * w + b];
                direct.mask[(r * w + a) * w + b] = j != pad && mode.allows(i, j);
            }
        }
    }
    match mode {
        Mode::Mlm => {
            let mut spans = Term::new(n, w, n, pad);
            spans.queries.clone_from(&seqs);
            for r in 0..n {
                for r2 in 0..n {
                    spans.items[r * n + r2] = len + 1 + r2;
                }
                for a in 0..w {
                    if seqs[r * w + a] == pad {
                        continue;
                    }
                    for (r2, ms) in members.iter().enumerate() {
                        spans.mask[(r * w + a) * n + r2] = r2 != r && !ms.is_empty();
                    }
                }
            }
            Layout {
                len,
                span_sets: vec![SpanSet::Blocks {
                    count: n,
                    width: w,
                    members: seqs,
                    token_queries: None,
                }],
                terms: vec![direct, spans],
            }
        }
        Mode::Lm => {
            let mut spans = Term::new(len, 1, n, pad);
            for (i, &own) in regions.iter().enumerate() {
                spans.queries[i] = i;
                for (r2, ms) in members.iter().enumerate() {
                    // members of r2 before i
                    let t = ms.partition_point(|&j| j < i);
                    if r2 != own && t > 0 {
                        spans.items[i * n + r2] = len + 1 + r2 * w + (t - 1);
                        spans.mask[i * n + r2] = true;
                    }
                }
            }
            Layout {
                len,
                span_sets: vec![SpanSet::Prefixes {
                    count: n,
                    width: w,
                    seqs,
                }],
                terms: vec![direct, spans],
            }
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
}
