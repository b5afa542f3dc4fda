//! The plan verifier: full support, disjoint parts (or counted overlaps where a
//! plan has them by design), causality (LM), no empty
//! or padding items, and the three cost counts of paper section 3.1 with
//! their growth exponent in `L`.

use std::fmt;

use crate::layout::{Layout, SpanQuery};
use crate::plan::{Mode, Plan, PlanError};

/// The three quantities of paper section 3.1 at one length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Sequence length.
    pub len: usize,
    /// `sum_i (n_i + |Omega_i^0|)`: terms of the joint softmax.
    pub terms: usize,
    /// `|U|`: unique spans used by some query.
    pub unique_spans: usize,
    /// `sum_{Omega in U} |Omega|`: cost of all local expectations.
    pub span_cost: usize,
    /// `(query, position)` pairs reached through more than one part (counted
    /// only where overlaps are allowed; otherwise each is a violation).
    pub overlaps: usize,
}

/// One broken invariant, with the query and position that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A malformed layout.
    Layout(String),
    /// `j` is in `Omega_i` but in no part of query `i`.
    Missing {
        /// Query.
        query: usize,
        /// Position not covered.
        position: usize,
    },
    /// `j` is covered by query `i` but not in `Omega_i` (LM: a future position).
    OutsideSupport {
        /// Query.
        query: usize,
        /// Position wrongly covered.
        position: usize,
    },
    /// `j` is in two parts of query `i`.
    Overlap {
        /// Query.
        query: usize,
        /// Position covered twice.
        position: usize,
    },
    /// Query `i` attends an empty span.
    EmptySpan {
        /// Query.
        query: usize,
        /// Span id.
        span: usize,
    },
    /// A span's local expectation is queried by a token after `i` (LM).
    FutureSpanQuery {
        /// Query.
        query: usize,
        /// Span id.
        span: usize,
    },
    /// Unmasked pairs point at the padding slot.
    PaddingLeak(usize),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Layout(e) => write!(f, "malformed layout: {e}"),
            Violation::Missing { query, position } => {
                write!(
                    f,
                    "incomplete support: query {query} never reaches position {position}"
                )
            }
            Violation::OutsideSupport { query, position } => write!(
                f,
                "support leak: query {query} reaches position {position} outside its support"
            ),
            Violation::Overlap { query, position } => {
                write!(
                    f,
                    "parts overlap: query {query} reaches position {position} twice"
                )
            }
            Violation::EmptySpan { query, span } => {
                write!(
                    f,
                    "empty span: query {query} attends span {span} with no members"
                )
            }
            Violation::FutureSpanQuery { query, span } => write!(
                f,
                "causality: span {span} used by query {query} is queried by a later token"
            ),
            Violation::PaddingLeak(n) => write!(f, "{n} unmasked pairs point at the padding slot"),
        }
    }
}

/// Checks one layout against `mode`; returns its counts and the violations
/// (at most `limit`). Overlapping parts are violations.
pub fn check_layout(layout: &Layout, mode: Mode, limit: usize) -> (Counts, Vec<Violation>) {
    check_layout_with(layout, mode, limit, false)
}

/// [`check_layout`]; with `allow_overlap` a position reached through two
/// parts is counted in [`Counts::overlaps`] instead of being a violation
/// (the authors' joint mixture, whose `q(j|i)` sums both contributions).
pub fn check_layout_with(
    layout: &Layout,
    mode: Mode,
    limit: usize,
    allow_overlap: bool,
) -> (Counts, Vec<Violation>) {
    let len = layout.len;
    let mut v = Vec::new();
    let empty = Counts {
        len,
        terms: 0,
        unique_spans: 0,
        span_cost: 0,
        overlaps: 0,
    };
    if let Err(e) = layout.validate() {
        return (empty, vec![Violation::Layout(e.to_string())]);
    }
    let leaks = layout.padding_leaks();
    if leaks > 0 {
        v.push(Violation::PaddingLeak(leaks));
    }
    let p = layout.partition();
    let used = p.used_spans();
    let mut counts = Counts {
        len,
        overlaps: 0,
        terms: p
            .queries
            .iter()
            .map(|q| q.direct.len() + q.spans.len())
            .sum(),
        unique_spans: used.len(),
        span_cost: used.iter().map(|&u| p.spans[u].members.len()).sum(),
    };
    // stamp[j] == i + 1 marks j as covered for query i; a second hit is an overlap
    let mut stamp = vec![0usize; len];
    'queries: for (i, parts) in p.queries.iter().enumerate() {
        let mut cover = |j: usize, v: &mut Vec<Violation>| {
            if stamp[j] == i + 1 {
                if allow_overlap {
                    counts.overlaps += 1;
                } else {
                    v.push(Violation::Overlap {
                        query: i,
                        position: j,
                    });
                }
            }
            stamp[j] = i + 1;
            if !mode.allows(i, j) {
                v.push(Violation::OutsideSupport {
                    query: i,
                    position: j,
                });
            }
        };
        for &j in &parts.direct {
            cover(j, &mut v);
        }
        for &u in &parts.spans {
            let span = &p.spans[u];
            if span.members.is_empty() {
                v.push(Violation::EmptySpan { query: i, span: u });
            }
            if let SpanQuery::Token(t) = span.query {
                if !mode.allows(i, t) {
                    v.push(Violation::FutureSpanQuery { query: i, span: u });
                }
            }
            for &j in &span.members {
                cover(j, &mut v);
            }
        }
        for (j, &mark) in stamp.iter().enumerate() {
            if mode.allows(i, j) && mark != i + 1 {
                v.push(Violation::Missing {
                    query: i,
                    position: j,
                });
            }
            if v.len() >= limit {
                break 'queries;
            }
        }
    }
    v.truncate(limit);
    (counts, v)
}

/// Least-squares slope of `log y` against `log x`.
pub fn growth_exponent(points: &[(usize, usize)]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|&&(x, y)| x > 0 && y > 0)
        .map(|&(x, y)| ((x as f64).ln(), (y as f64).ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The verdict on one plan and mode over several lengths.
#[derive(Clone, Debug)]
pub struct Report {
    /// Plan name.
    pub plan: String,
    /// Mode.
    pub mode: Mode,
    /// Counts per component and length.
    pub counts: Vec<Counts>,
    /// Violations found, with the length at which they occurred.
    pub violations: Vec<(usize, Violation)>,
    /// Fitted exponents of (terms, unique spans, span cost).
    pub exponents: [Option<f64>; 3],
    /// Largest exponent accepted as sub-quadratic.
    pub max_exponent: f64,
    /// Overlapping parts found where the plan allows them (summed over the
    /// checked lengths): `(query, position)` pairs reached twice.
    pub overlaps: usize,
}

impl Report {
    /// Whether every invariant holds and every count grows slower than `L^2`.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.cost_failures().is_empty()
    }

    /// Counts whose fitted exponent is not sub-quadratic.
    pub fn cost_failures(&self) -> Vec<String> {
        ["terms", "unique spans", "span cost"]
            .iter()
            .zip(self.exponents)
            .filter_map(|(name, e)| match e {
                Some(e) if e > self.max_exponent => Some(format!(
                    "{name} grow as L^{e:.2} (limit L^{:.2}): not sub-quadratic",
                    self.max_exponent
                )),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.passed() { "PASS" } else { "FAIL" };
        writeln!(f, "{status} {} [{}]", self.plan, self.mode)?;
        if self.overlaps > 0 {
            writeln!(
                f,
                "  OVERLAPPING: {} (query, position) pairs are reached through two parts \
                 (by design: q(j|i) sums both contributions)",
                self.overlaps
            )?;
        }
        writeln!(
            f,
            "  {:>7} {:>12} {:>12} {:>12}",
            "L", "terms", "|U|", "sum|Omega|"
        )?;
        for c in &self.counts {
            writeln!(
                f,
                "  {:>7} {:>12} {:>12} {:>12}",
                c.len, c.terms, c.unique_spans, c.span_cost
            )?;
        }
        let fmt_e = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("L^{e:.2}"));
        writeln!(
            f,
            "  growth: terms {}, |U| {}, sum|Omega| {} (dense attention: L^2.00)",
            fmt_e(self.exponents[0]),
            fmt_e(self.exponents[1]),
            fmt_e(self.exponents[2])
        )?;
        for (len, v) in self.violations.iter().take(10) {
            writeln!(f, "  L={len}: {v}")?;
        }
        if self.violations.len() > 10 {
            writeln!(
                f,
                "  ... and {} more violations",
                self.violations.len() - 10
            )?;
        }
        for c in self.cost_failures() {
            writeln!(f, "  {c}")?;
        }
        Ok(())
    }
}

/// Default lengths at which support is checked: awkward ones plus a few large.
pub const CHECK_LENGTHS: [usize; 10] = [1, 2, 3, 12, 16, 50, 63, 64, 65, 100];
/// Default lengths at which the exponents are fitted.
pub const GROWTH_LENGTHS: [usize; 3] = [256, 1024, 4096];

/// Verifies layouts produced by `build` for each length in `check` (support)
/// and `growth` (counts and exponents; support is checked there too).
pub fn verify_with(
    name: &str,
    mode: Mode,
    check: &[usize],
    growth: &[usize],
    max_exponent: f64,
    build: impl FnMut(usize) -> Result<Vec<Layout>, PlanError>,
) -> Report {
    verify_with_overlap(name, mode, check, growth, max_exponent, false, build)
}

/// [`verify_with`]; `allow_overlap` counts overlapping parts in
/// [`Report::overlaps`] instead of reporting them as violations.
pub fn verify_with_overlap(
    name: &str,
    mode: Mode,
    check: &[usize],
    growth: &[usize],
    max_exponent: f64,
    allow_overlap: bool,
    mut build: impl FnMut(usize) -> Result<Vec<Layout>, PlanError>,
) -> Report {
    let mut overlaps = 0;
    let mut violations = Vec::new();
    let mut counts = Vec::new();
    let mut series: [Vec<(usize, usize)>; 3] = Default::default();
    let mut all: Vec<usize> = check.iter().chain(growth).copied().collect();
    all.sort_unstable();
    all.dedup();
    for len in all {
        let layouts = match build(len) {
            Ok(l) => l,
            Err(e) => {
                violations.push((len, Violation::Layout(e.to_string())));
                continue;
            }
        };
        let mut total = Counts {
            len,
            terms: 0,
            unique_spans: 0,
            span_cost: 0,
            overlaps: 0,
        };
        for layout in &layouts {
            let (c, vs) = check_layout_with(layout, mode, 20, allow_overlap);
            overlaps += c.overlaps;
            total.overlaps += c.overlaps;
            violations.extend(vs.into_iter().map(|v| (len, v)));
            total.terms += c.terms;
            total.unique_spans += c.unique_spans;
            total.span_cost += c.span_cost;
        }
        if growth.contains(&len) {
            series[0].push((len, total.terms));
            series[1].push((len, total.unique_spans));
            series[2].push((len, total.span_cost));
            counts.push(total);
        }
    }
    Report {
        plan: name.to_string(),
        mode,
        counts,
        violations,
        exponents: [
            growth_exponent(&series[0]),
            growth_exponent(&series[1]),
            growth_exponent(&series[2]),
        ],
        max_exponent,
        overlaps,
    }
}

/// Largest growth exponent accepted as sub-quadratic by default.
pub const MAX_EXPONENT: f64 = 1.75;

/// Verifies a plan of the paper; plans that overlap by design
/// ([`Plan::overlaps_by_design`]) have their overlaps counted, not failed.
pub fn verify_plan(plan: &Plan, mode: Mode, check: &[usize], growth: &[usize]) -> Report {
    verify_with_overlap(
        &plan.name(),
        mode,
        check,
        growth,
        MAX_EXPONENT,
        plan.overlaps_by_design(),
        |len| plan.component_layouts(len, mode),
    )
}
