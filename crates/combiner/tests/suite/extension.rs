//! README "Adding a factorization plan", followed verbatim: Combiner-Strided
//! is added as one file (`plan/strided.rs`), one variant with its arm in
//! `Plan::layout` and one `NAMED_PLANS` entry; it is then selectable from a
//! config, passes the verifier, and is swept with every other plan by the
//! oracle tests (`Plan::all()`). The README's code blocks are checked to be
//! this code, character for character.

use crate::common::*;
use burn::prelude::*;
use combiner::exec::combiner_attention;
use combiner::layout::Layout;
use combiner::oracle::oracle_attention;
use combiner::plan::strided::strided;
use combiner::verify::{verify_plan, verify_with, CHECK_LENGTHS, GROWTH_LENGTHS, MAX_EXPONENT};
use combiner::{AbstractionKind, Mode, Plan};

/// The ```rust blocks of README's "Adding a factorization plan" section.
fn readme_blocks() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md beside the workspace");
    let section = readme
        .split("\n## Adding a factorization plan\n")
        .nth(1)
        .expect("README has the section")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .split("```rust\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

#[test]
fn the_readme_shows_this_code_verbatim() {
    let blocks = readme_blocks();
    assert_eq!(blocks.len(), 3, "three rust blocks in the section");
    let sources = [
        include_str!("../../src/plan/strided.rs"),
        concat!(
            include_str!("../../src/plan/mod.rs"),
            include_str!("../../src/plan/names.rs")
        ),
        include_str!("extension.rs"),
    ];
    for (block, source) in blocks.iter().zip(sources) {
        for line in block
            .lines()
            .filter(|l| !l.trim().is_empty() && l.trim() != "// ...")
        {
            assert!(
                source.lines().any(|s| s.trim_end() == line.trim_end()),
                "README line not in the source:\n{line}"
            );
        }
    }
    // the plan's file is shown whole, in order
    let file = include_str!("../../src/plan/strided.rs");
    let region = file
        .split("// README: begin\n")
        .nth(1)
        .and_then(|r| r.split("// README: end").next())
        .expect("markers in strided.rs");
    assert_eq!(
        blocks[0], region,
        "README shows plan/strided.rs between its markers"
    );
}

#[test]
fn strided_is_selectable_from_a_config_and_by_name() {
    let plan: Plan = toml::from_str("kind = \"strided\"\nstride = 5").unwrap();
    assert_eq!(plan, Plan::Strided { stride: Some(5) });
    assert_eq!(
        Plan::from_name("strided").unwrap(),
        Plan::Strided { stride: None }
    );
    assert!(Plan::all().iter().any(|(n, _)| *n == "strided"), "swept");
    assert_eq!(
        Plan::Strided { stride: Some(0) }
            .layout(10, Mode::Lm)
            .unwrap_err(),
        combiner::PlanError::Zero("strided stride")
    );
}

#[test]
fn strided_plan_passes_the_verifier() {
    for mode in [Mode::Lm, Mode::Mlm] {
        let plan = Plan::Strided { stride: None };
        let report = verify_plan(&plan, mode, &CHECK_LENGTHS, &GROWTH_LENGTHS[..2]);
        assert!(report.passed(), "{report}");
        // the same through the partition, for any other set-built plan
        let report = verify_with(
            "strided",
            mode,
            &CHECK_LENGTHS,
            &[256, 1024],
            MAX_EXPONENT,
            |len| {
                Ok(vec![Layout::from_partition(&strided(
                    len,
                    combiner::plan::ceil_sqrt(len),
                    mode,
                ))])
            },
        );
        assert!(report.passed(), "{report}");
    }
}

#[test]
fn strided_plan_matches_the_oracle() {
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
                let [q, k, v] = qkv::<B>(1, 2, len, 8, &dev);
                let p = strided(len, 5, mode);
                let fast = combiner_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    &Layout::from_partition(&p),
                    &abs,
                );
                let slow = oracle_attention(q, k, v, &[p], &abs);
                let err = max_abs_diff(fast, slow);
                assert!(err < 1e-5, "strided {mode} {kind:?} L={len}: {err:e}");
            }
        }
    }
}
