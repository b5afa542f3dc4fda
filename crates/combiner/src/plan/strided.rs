//! Combiner-Strided: the worked example of README "Adding a factorization
//! plan", a plan written as sets and made selectable (`kind = "strided"`,
//! `--plan strided`).
//!
//! Direct part: the query's own residue class modulo `s` (a dilated pattern,
//! as in the Sparse Transformer's strided head). Spans: every other residue
//! class, restricted to the support (LM: its members up to `i`). With
//! `s = ceil(sqrt L)` the cost is `O(L sqrt L)`.

use std::collections::HashMap;

use super::{ceil_sqrt, Mode, PlanError};
use crate::layout::{Layout, Partition, QueryParts, SpanDef, SpanQuery};

// README: begin
/// Combiner-Strided with stride `s` as a partition of every query's support.
pub fn strided(len: usize, s: usize, mode: Mode) -> Partition {
    let mut spans: Vec<SpanDef> = Vec::new();
    let mut ids: HashMap<Vec<usize>, usize> = HashMap::new();
    let mut queries = Vec::with_capacity(len);
    for i in 0..len {
        let support = |j: &usize| mode.allows(i, *j);
        let direct: Vec<usize> = (i % s..len).step_by(s).filter(support).collect();
        let mut parts = QueryParts {
            direct,
            spans: vec![],
        };
        for r in (0..s).filter(|&r| r != i % s) {
            let members: Vec<usize> = (r..len).step_by(s).filter(support).collect();
            if members.is_empty() {
                continue; // no empty spans in the softmax
            }
            let next = spans.len();
            let id = *ids.entry(members.clone()).or_insert(next);
            if id == next {
                spans.push(SpanDef {
                    members,
                    query: SpanQuery::Pooled,
                });
            }
            parts.spans.push(id);
        }
        parts.spans.sort_unstable();
        queries.push(parts);
    }
    Partition {
        len,
        spans,
        queries,
    }
}

/// The plan's layout; `stride` defaults to `ceil(sqrt(L))`.
pub fn strided_layout(len: usize, stride: Option<usize>, mode: Mode) -> Result<Layout, PlanError> {
    match stride.unwrap_or_else(|| ceil_sqrt(len)) {
        0 => Err(PlanError::Zero("strided stride")),
        s => Ok(Layout::from_partition(&strided(len, s, mode))),
    }
}
// README: end
