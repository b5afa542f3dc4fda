//! Exact patterns: the efficient layout equals dense attention with the
//! pattern's mask, and the sparse baselines are Combiner partitions with the
//! spans removed.

use burn::prelude::*;
use combiner::plan::{fixed_layout, routing_layout};
use combiner::{Mode, Plan};
use combiner_attention::pattern::{strip_spans, SparseKind};
use combiner_attention::reformer::lsh_attention;
use combiner_attention::routing::{balanced_clusters, routing_attention};
use combiner_attention::util::{masked_attention, SplitMix};
use combiner_attention::*;

use crate::common::*;

fn kinds() -> Vec<(&'static str, SparseKind)> {
    vec![
        (
            "fixed-s5-c2",
            SparseKind::Fixed(SparseFixedConfig {
                block: Some(5),
                summary: 2,
            }),
        ),
        (
            "fixed-default",
            SparseKind::Fixed(SparseFixedConfig::default()),
        ),
        (
            "strided-4",
            SparseKind::Strided(SparseStridedConfig { stride: Some(4) }),
        ),
        (
            "strided-default",
            SparseKind::Strided(SparseStridedConfig::default()),
        ),
        ("logsparse", SparseKind::Logsparse(LogsparseConfig {})),
        ("axial-default", SparseKind::Axial(AxialConfig::default())),
        (
            "axial-10x7",
            SparseKind::Axial(AxialConfig {
                grid: Some(combiner::Grid { rows: 10, cols: 7 }),
            }),
        ),
        ("local-5", SparseKind::Local(LocalConfig { window: 5 })),
        ("local-1", SparseKind::Local(LocalConfig { window: 1 })),
        (
            "longformer",
            SparseKind::Longformer(LongformerConfig {
                window: 3,
                global: vec![0, 7, 40, 500],
            }),
        ),
        (
            "bigbird",
            SparseKind::BigBird(BigBirdConfig {
                block: 4,
                window_blocks: 3,
                global_blocks: 1,
                random_blocks: 2,
                seed: 3,
            }),
        ),
    ]
}

fn definition(kind: &SparseKind, len: usize, mode: Mode) -> Vec<bool> {
    (0..len * len)
        .map(|p| kind.allows(len, mode, p / len, p % len))
        .collect()
}

#[test]
fn every_sparse_pattern_equals_dense_attention_with_its_mask() {
    let dev = Default::default();
    B::seed(&dev, 5);
    let mut worst = 0.0f64;
    for (name, kind) in kinds() {
        for mode in [Mode::Lm, Mode::Mlm] {
            if matches!(kind, SparseKind::BigBird(_)) && mode == Mode::Lm {
                assert!(kind.pattern(13, mode).is_err(), "bigbird must refuse LM");
                continue;
            }
            for len in LENGTHS {
                let pattern = kind.pattern(len, mode).unwrap();
                pattern.layout.validate().unwrap();
                assert!(pattern.layout.span_sets.is_empty(), "{name}: spans left");
                assert_eq!(pattern.layout.padding_leaks(), 0, "{name}: padding scored");
                let parts = pattern.layout.partition();
                for (i, p) in parts.queries.iter().enumerate() {
                    assert!(p.spans.is_empty());
                    assert!(
                        p.direct.windows(2).all(|w| w[0] < w[1]),
                        "{name} {mode} L={len}: query {i} scores a key twice"
                    );
                }
                let want = definition(&kind, len, mode);
                let got = pattern.allowed(mode);
                assert_eq!(
                    got, want,
                    "{name} {mode} L={len}: support differs from the definition"
                );
                for i in 0..len {
                    assert!(
                        want[i * len..(i + 1) * len].iter().any(|&a| a),
                        "{name}: empty row {i}"
                    );
                }
                let [q, k, v] = qkv::<B>(2, 2, len, 8, &dev);
                let fast = pattern.attend(q.clone(), k.clone(), v.clone(), mode);
                let slow = masked_attention(q, k, v, &want);
                let err = max_abs_diff(fast, slow);
                worst = worst.max(err);
                assert!(
                    err < 1e-5,
                    "{name} {mode} L={len}: differs from masked dense by {err:e}"
                );
            }
        }
    }
    eprintln!("largest difference to masked dense attention: {worst:e}");
}

fn direct_mask(layout: &combiner::Layout) -> Vec<bool> {
    let len = layout.len;
    let mut m = vec![false; len * len];
    for (i, p) in layout.partition().queries.iter().enumerate() {
        for &j in &p.direct {
            m[i * len + j] = true;
        }
    }
    m
}

#[test]
fn sparse_baselines_are_combiner_partitions_without_spans() {
    let dev = Default::default();
    B::seed(&dev, 6);
    for mode in [Mode::Lm, Mode::Mlm] {
        for len in LENGTHS {
            // Sparse Transformer fixed without summary cells = Combiner-Fixed's direct part
            let fixed = SparseKind::Fixed(SparseFixedConfig {
                block: Some(5),
                summary: 0,
            });
            let combiner_fixed = fixed_layout(len, 5, mode);
            assert_eq!(
                fixed.pattern(len, mode).unwrap().allowed(mode),
                direct_mask(&combiner_fixed)
            );
            // Axial = the direct part of Combiner-Axial (vertical and horizontal alike)
            let axial = SparseKind::Axial(AxialConfig::default())
                .pattern(len, mode)
                .unwrap();
            for plan in [
                Plan::AxialVertical { grid: None },
                Plan::AxialHorizontal { grid: None },
            ] {
                assert_eq!(
                    axial.allowed(mode),
                    direct_mask(&plan.layout(len, mode).unwrap())
                );
            }
            // Routing = Combiner-Learnable's direct part for the same regions
            let regions: Vec<usize> = (0..len).map(|i| (i * 5 + i / 4) % 3).collect();
            let routing = combiner_attention::routing::routing_pattern(&regions, mode);
            assert_eq!(
                routing.allowed(mode),
                direct_mask(&routing_layout(&regions, mode))
            );

            // and the executor on the stripped Combiner layout is the masked softmax
            let stripped = strip_spans(fixed_layout(len, 5, mode));
            let [q, k, v] = qkv::<B>(1, 2, len, 8, &dev);
            let abs = combiner::AbstractionKind::Max.init::<B>(8, &dev);
            let fast =
                combiner::combiner_attention(q.clone(), k.clone(), v.clone(), &stripped, &abs);
            let slow = masked_attention(q, k, v, &direct_mask(&combiner_fixed));
            assert!(max_abs_diff(fast, slow) < 1e-5);
        }
    }
}

/// Routing's dense mask: `i` attends to `j` when both are in one cluster
/// (LM: and `j <= i`).
fn within_clusters(ids: &[usize], mode: Mode) -> Vec<bool> {
    let len = ids.len();
    (0..len * len)
        .map(|p| {
            let (i, j) = (p / len, p % len);
            ids[i] == ids[j] && mode.allows(i, j)
        })
        .collect()
}

#[test]
fn routing_with_fixed_clusters_equals_dense_attention_within_clusters() {
    let dev = Default::default();
    B::seed(&dev, 8);
    let mut rng = SplitMix::new(4);
    for mode in [Mode::Lm, Mode::Mlm] {
        for len in LENGTHS {
            let (b, h) = (2, 2);
            let clusters: Vec<Vec<usize>> = (0..b * h)
                .map(|_| (0..len).map(|_| rng.below(5)).collect())
                .collect();
            let [q, k, v] = qkv::<B>(b, h, len, 8, &dev);
            let fast = routing_attention(q.clone(), k.clone(), v.clone(), &clusters, mode, None);
            for (s, ids) in clusters.iter().enumerate() {
                let mask = within_clusters(ids, mode);
                let (bi, hi) = (s / h, s % h);
                let sl = |t: &Tensor<B, 4>| t.clone().slice([bi..bi + 1, hi..hi + 1, 0..len, 0..8]);
                let want = masked_attention(sl(&q), sl(&k), sl(&v), &mask);
                let err = max_abs_diff(sl(&fast), want);
                assert!(err < 1e-5, "routing {mode} L={len} seq {s}: {err:e}");
            }
        }
    }
}

/// The sorted-block routing attention has the gradients of the dense masked
/// softmax within clusters (uneven and empty clusters included).
///
/// The tolerance is relative: burn-ndarray 0.21 divides through macerator
/// 0.3's SIMD reciprocal, the hardware estimate (relative error up to
/// `1.5 * 2^-12`), once a tensor is past its SIMD threshold, so the softmax
/// backward of the batched blocks differs from the per-sequence one by about
/// `1e-4` of the gradient's size. A wrong mask or slot moves it by `O(1)`.
#[test]
fn routing_gradients_equal_dense_attention_within_clusters() {
    let dev = Default::default();
    AD::seed(&dev, 9);
    let mut rng = SplitMix::new(5);
    for mode in [Mode::Lm, Mode::Mlm] {
        for len in [3, 13, 50] {
            let (b, h, d) = (2, 2, 4);
            let clusters: Vec<Vec<usize>> = (0..b * h)
                .map(|_| (0..len).map(|_| rng.below(4)).collect())
                .collect();
            let [q, k, v] = qkv::<AD>(b, h, len, d, &dev).map(|t| t.require_grad());
            let w = Tensor::<AD, 4>::random(
                [b, h, len, d],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &dev,
            );
            let fast = routing_attention(q.clone(), k.clone(), v.clone(), &clusters, mode, None);
            let mut seqs = Vec::new();
            for (s, ids) in clusters.iter().enumerate() {
                let mask = within_clusters(ids, mode);
                let (bi, hi) = (s / h, s % h);
                let sl =
                    |t: &Tensor<AD, 4>| t.clone().slice([bi..bi + 1, hi..hi + 1, 0..len, 0..d]);
                seqs.push(masked_attention(sl(&q), sl(&k), sl(&v), &mask).reshape([1, len, d]));
            }
            let slow = Tensor::cat(seqs, 0).reshape([b, h, len, d]);
            let g_fast = (fast * w.clone()).sum().backward();
            let g_slow = (slow * w).sum().backward();
            for (name, t) in [("q", &q), ("k", &k), ("v", &v)] {
                let want = t.grad(&g_slow).unwrap();
                let scale: f64 = want.clone().abs().max().into_scalar().elem();
                let err = max_abs_diff(t.grad(&g_fast).unwrap(), want);
                assert!(
                    err <= 2e-3 * scale.max(1.0),
                    "routing {mode} L={len} d{name}: {err:e} (gradient size {scale:e})"
                );
            }
        }
    }
}

#[test]
fn balanced_clusters_respect_capacity_and_lm_assignment_is_causal() {
    let mut rng = SplitMix::new(9);
    let (len, n) = (50, 4);
    let scores: Vec<f32> = (0..len * n).map(|_| rng.normal() as f32).collect();
    for mode in [Mode::Lm, Mode::Mlm] {
        let ids = balanced_clusters(&scores, len, n, mode);
        for c in 0..n {
            assert!(ids.iter().filter(|&&x| x == c).count() <= len.div_ceil(n));
        }
    }
    let mut later = scores.clone();
    for s in later.iter_mut().skip(30 * n) {
        *s = rng.normal() as f32 * 10.0;
    }
    let a = balanced_clusters(&scores, len, n, Mode::Lm);
    let b = balanced_clusters(&later, len, n, Mode::Lm);
    assert_eq!(
        a[..30],
        b[..30],
        "LM assignment of earlier tokens depends on later ones"
    );
}

/// The LSH pattern written out pair by pair, independently of the layout builder.
fn lsh_mask(buckets: &[Vec<usize>], c: usize, mode: Mode) -> Vec<bool> {
    let len = buckets[0].len();
    let mut m = vec![false; len * len];
    for ids in buckets {
        // rank of each token among earlier tokens of its bucket
        let rank: Vec<usize> = (0..len)
            .map(|t| (0..t).filter(|&u| ids[u] == ids[t]).count())
            .collect();
        for i in 0..len {
            for j in 0..len {
                let (ci, cj) = ((rank[i] / c) as i64, (rank[j] / c) as i64);
                let near = ci - cj == 0 || ci - cj == 1 || (mode == Mode::Mlm && cj - ci == 1);
                if ids[i] == ids[j] && near && i != j && mode.allows(i, j) {
                    m[i * len + j] = true;
                }
            }
        }
    }
    for i in 0..len {
        if !m[i * len..(i + 1) * len].iter().any(|&x| x) {
            m[i * len + i] = true;
        }
    }
    m
}

#[test]
fn reformer_with_fixed_buckets_equals_dense_attention_with_the_lsh_mask() {
    let dev = Default::default();
    B::seed(&dev, 10);
    let mut rng = SplitMix::new(11);
    for mode in [Mode::Lm, Mode::Mlm] {
        for len in LENGTHS {
            let (b, h, c) = (1, 2, 3);
            let buckets: Vec<Vec<Vec<usize>>> = (0..b * h)
                .map(|_| {
                    (0..2)
                        .map(|_| (0..len).map(|_| rng.below(3)).collect())
                        .collect()
                })
                .collect();
            let [q, _, v] = qkv::<B>(b, h, len, 8, &dev);
            let fast = lsh_attention(q.clone(), v.clone(), &buckets, c, mode, None);
            // shared QK: keys are the unit queries
            let k = q.clone() / q.clone().powi_scalar(2).sum_dim(3).sqrt().clamp_min(1e-6);
            for (s, table) in buckets.iter().enumerate() {
                let mask = lsh_mask(table, c, mode);
                let sl = |t: &Tensor<B, 4>| t.clone().slice([0..1, s..s + 1, 0..len, 0..8]);
                let want = masked_attention(sl(&q), sl(&k), sl(&v), &mask);
                let err = max_abs_diff(sl(&fast), want);
                assert!(err < 1e-5, "reformer {mode} L={len} head {s}: {err:e}");
            }
        }
    }
}

#[test]
fn vanilla_module_equals_dense_attention() {
    // Vanilla runs the dense attention of the combiner crate; the masked
    // oracle with the full support agrees with it.
    let dev = Default::default();
    B::seed(&dev, 12);
    for mode in [Mode::Lm, Mode::Mlm] {
        let len = 13;
        let [q, k, v] = qkv::<B>(1, 2, len, 8, &dev);
        let mask: Vec<bool> = (0..len * len)
            .map(|p| mode.allows(p / len, p % len))
            .collect();
        let a = combiner::dense_attention(q.clone(), k.clone(), v.clone(), mode);
        assert!(max_abs_diff(a, masked_attention(q, k, v, &mask)) < 1e-5);
    }
}

#[test]
fn routing_centroids_follow_online_kmeans() {
    let dev = Default::default();
    B::seed(&dev, 13);
    let cfg = AttentionConfig::Routing(RoutingConfig {
        clusters: 3,
        decay: 0.5,
    });
    let Attention::Routing(r) = cfg.init::<B>(16, 2, Mode::Lm, 0.0, &dev) else {
        panic!("routing")
    };
    let before = r.centroids();
    let x = Tensor::<B, 3>::random(
        [2, 20, 16],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let r = r.update_centroids(x.clone());
    let after = r.centroids();
    assert_eq!(after.dims(), [2, 3, 8]);
    assert!(
        max_abs_diff(before, after.clone()) > 1e-3,
        "centroids did not move"
    );
    let norms = after.powi_scalar(2).sum_dim(2).sqrt();
    assert!(max_abs_diff(norms.clone(), norms.ones_like()) < 1e-4);
    assert_eq!(r.forward(x).dims(), [2, 20, 16]);
}
