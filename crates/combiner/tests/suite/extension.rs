//! The worked example of README "Adding a factorization plan":
//! Combiner-Strided, written as sets, verified and checked against the oracle.
//!
//! Direct part: the query's own residue class modulo `s` (a dilated pattern,
//! as in the Sparse Transformer's strided head). Spans: every other residue
//! class, restricted to the support (LM: its members up to `i`).

use std::collections::HashMap;

use crate::common::*;
use burn::prelude::*;
use combiner::exec::combiner_attention;
use combiner::layout::{Layout, Partition, QueryParts, SpanDef, SpanQuery};
use combiner::oracle::oracle_attention;
use combiner::verify::{verify_with, CHECK_LENGTHS, GROWTH_LENGTHS, MAX_EXPONENT};
use combiner::{AbstractionKind, Mode};

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

fn stride_for(len: usize) -> usize {
    combiner::plan::ceil_sqrt(len)
}

#[test]
fn strided_plan_passes_the_verifier() {
    for mode in [Mode::Lm, Mode::Mlm] {
        let report = verify_with(
            "strided",
            mode,
            &CHECK_LENGTHS,
            &GROWTH_LENGTHS[..2],
            MAX_EXPONENT,
            |len| {
                Ok(vec![Layout::from_partition(&strided(
                    len,
                    stride_for(len),
                    mode,
                ))])
            },
        );
        assert!(report.passed(), "{report}");
    }
}

#[test]
fn strided_plan_matches_the_oracle_and_is_causal() {
    let dev = Default::default();
    B::seed(&dev, 21);
    for mode in [Mode::Lm, Mode::Mlm] {
        for kind in [
            AbstractionKind::Max,
            AbstractionKind::Mean,
            AbstractionKind::DeepSetsMax,
        ] {
            let abs = kind.init::<B>(8, &dev);
            for len in LENGTHS {
                let p = strided(len, 5, mode);
                let layout = Layout::from_partition(&p);
                assert_eq!(
                    layout.partition().queries,
                    p.queries,
                    "layout keeps the partition"
                );
                let [q, k, v] = qkv::<B>(1, 2, len, 8, &dev);
                let fast = combiner_attention(q.clone(), k.clone(), v.clone(), &layout, &abs);
                let slow = oracle_attention(q, k, v, &[p], &abs);
                let err = max_abs_diff(fast, slow);
                assert!(err < 1e-5, "strided {mode} {kind:?} L={len}: {err:e}");
            }
        }
    }
}
