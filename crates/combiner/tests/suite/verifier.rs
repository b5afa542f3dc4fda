//! The plan verifier accepts every plan of the paper and rejects broken ones.

use combiner::layout::{Layout, SpanSet, Term};
use combiner::plan::fixed_layout;
use combiner::verify::{
    check_layout, check_layout_with, verify_plan, verify_with, Violation, CHECK_LENGTHS,
    GROWTH_LENGTHS, MAX_EXPONENT,
};
use combiner::{Grid, Mode, Plan};

#[test]
fn every_paper_plan_passes_in_both_modes() {
    for (name, plan) in Plan::all() {
        for mode in [Mode::Lm, Mode::Mlm] {
            let report = verify_plan(&plan, mode, &CHECK_LENGTHS, &GROWTH_LENGTHS);
            assert!(report.passed(), "{name} {mode} failed:\n{report}");
            for e in report.exponents {
                let e = e.expect("three growth lengths give an exponent");
                assert!(e < 1.7, "{name} {mode}: exponent {e}");
            }
        }
    }
}

#[test]
fn fitted_exponents_match_the_paper_complexities() {
    let growth = [1024, 4096, 16384];
    let fixed = verify_plan(&Plan::Fixed { block: None }, Mode::Lm, &[], &growth);
    let e = fixed.exponents[0].unwrap();
    assert!(
        (1.4..1.6).contains(&e),
        "Combiner-Fixed terms grow as L^{e}, expected L^1.5"
    );
    let log = verify_plan(&Plan::Logsparse, Mode::Lm, &[], &growth);
    let e = log.exponents[0].unwrap();
    assert!(
        (1.0..1.2).contains(&e),
        "Combiner-Logsparse terms grow as L^{e}, expected L log L"
    );
    let e = log.exponents[1].unwrap();
    assert!(
        (0.95..1.05).contains(&e),
        "Combiner-Logsparse has O(L) unique spans, got L^{e}"
    );
}

fn lm_violations(layout: &Layout, mode: Mode) -> Vec<Violation> {
    check_layout(layout, mode, 100).1
}

#[test]
fn rejects_incomplete_support() {
    let mut layout = fixed_layout(10, 3, Mode::Lm);
    // query 5 (block 1, slot 2) loses its direct link to position 4
    let direct = &mut layout.terms[0];
    let w = direct.width;
    direct.mask[5 * w + 1] = false;
    let v = lm_violations(&layout, Mode::Lm);
    assert!(
        v.contains(&Violation::Missing {
            query: 5,
            position: 4
        }),
        "{v:?}"
    );
}

#[test]
fn rejects_overlapping_parts() {
    let mut layout = fixed_layout(10, 3, Mode::Mlm);
    // query 0 attends block 1 directly too, while block 1 is also its span
    let direct = &mut layout.terms[0];
    direct.width += 0;
    let mut wide = Term::new(direct.groups, direct.group_size, direct.width + 1, 10);
    for g in 0..direct.groups {
        for a in 0..direct.group_size {
            wide.queries[g * direct.group_size + a] = direct.queries[g * direct.group_size + a];
            for b in 0..direct.width {
                wide.mask[(g * direct.group_size + a) * wide.width + b] =
                    direct.mask[(g * direct.group_size + a) * direct.width + b];
            }
        }
        for b in 0..direct.width {
            wide.items[g * wide.width + b] = direct.items[g * direct.width + b];
        }
        wide.items[g * wide.width + direct.width] = 4;
    }
    wide.mask[direct.width] = true; // query 0 -> position 4
    layout.terms[0] = wide;
    let v = lm_violations(&layout, Mode::Mlm);
    assert!(
        v.contains(&Violation::Overlap {
            query: 0,
            position: 4
        }),
        "{v:?}"
    );
}

#[test]
fn rejects_causality_leaks() {
    // the MLM layout run as LM: spans and direct parts reach the future
    let layout = fixed_layout(12, 4, Mode::Mlm);
    let v = lm_violations(&layout, Mode::Lm);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::OutsideSupport { query: 0, .. })),
        "{v:?}"
    );
}

#[test]
fn rejects_empty_spans_and_padding() {
    let len = 6;
    let mut layout = fixed_layout(len, 4, Mode::Mlm);
    // a block made only of padding, attended by query 0
    layout.span_sets.push(SpanSet::Blocks {
        count: 1,
        width: 2,
        members: vec![len, len],
        token_queries: None,
    });
    let empty_span = layout.num_spans() - 1;
    let mut t = Term::new(len, 1, 2, len);
    for i in 0..len {
        t.queries[i] = i;
    }
    t.items[0] = layout.span_item(empty_span);
    t.mask[0] = true;
    t.items[2] = len; // padding slot, unmasked for query 1
    t.mask[2] = true;
    layout.terms.push(t);
    let v = lm_violations(&layout, Mode::Mlm);
    assert!(
        v.contains(&Violation::EmptySpan {
            query: 0,
            span: empty_span
        }),
        "{v:?}"
    );
    assert!(v.contains(&Violation::PaddingLeak(1)), "{v:?}");
}

#[test]
fn rejects_malformed_layouts() {
    let mut layout = fixed_layout(8, 3, Mode::Lm);
    layout.terms[1].items[0] = 10_000;
    let v = lm_violations(&layout, Mode::Lm);
    assert!(matches!(v.as_slice(), [Violation::Layout(_)]), "{v:?}");
}

/// Dense attention written as a "plan": complete and exact, but quadratic.
fn dense_as_plan(len: usize) -> Layout {
    let mut t = Term::new(1, len, len, len);
    for i in 0..len {
        t.queries[i] = i;
        t.items[i] = i;
        for j in 0..=i {
            t.mask[i * len + j] = true;
        }
    }
    Layout {
        len,
        span_sets: vec![],
        terms: vec![t],
    }
}

#[test]
fn rejects_quadratic_plans() {
    let report = verify_with(
        "dense",
        Mode::Lm,
        &CHECK_LENGTHS,
        &GROWTH_LENGTHS,
        MAX_EXPONENT,
        |len| Ok(vec![dense_as_plan(len)]),
    );
    assert!(report.violations.is_empty(), "dense is complete: {report}");
    assert!(!report.passed(), "a quadratic plan must fail:\n{report}");
    let e = report.exponents[0].unwrap();
    assert!((1.95..2.05).contains(&e), "dense terms grow as L^{e}");
    assert!(report.to_string().contains("not sub-quadratic"));
}

#[test]
fn joint_mixture_is_reported_overlapping_and_otherwise_passes() {
    let plan = Plan::from_name("mixture-joint").unwrap();
    assert!(plan.overlaps_by_design());
    assert!(!Plan::from_name("mixture").unwrap().overlaps_by_design());
    for mode in [Mode::Lm, Mode::Mlm] {
        let report = verify_plan(&plan, mode, &CHECK_LENGTHS, &GROWTH_LENGTHS);
        assert!(report.passed(), "{mode}:\n{report}");
        assert!(report.overlaps > 0, "{mode}: no overlap counted");
        assert!(report.to_string().contains("OVERLAPPING"), "{report}");
        // a verifier that requires disjoint parts rejects it
        let strict = verify_with("mixture-joint", mode, &[12, 65], &[], MAX_EXPONENT, |len| {
            plan.component_layouts(len, mode)
        });
        assert!(
            strict
                .violations
                .iter()
                .any(|(_, v)| matches!(v, Violation::Overlap { .. })),
            "{strict}"
        );
    }
    // LM on a full 3 x 3 grid: query (r, c) reaches each (s, t) with s < r and
    // t != c through its column span and its row span: r * (m - 1) pairs.
    let grid = Plan::MixtureJoint {
        grid: Some(Grid { rows: 3, cols: 3 }),
    };
    let layout = grid.layout(9, Mode::Lm).unwrap();
    let (counts, v) = check_layout_with(&layout, Mode::Lm, 100, true);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(counts.overlaps, 3 * 2 * (1 + 2));
    let v = check_layout(&layout, Mode::Lm, 100).1;
    assert!(v.contains(&Violation::Overlap {
        query: 4, // (1, 1)
        position: 0,
    }));
}
