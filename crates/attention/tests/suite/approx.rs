//! Approximate attentions: linear forms equal their quadratic forms, the
//! Performer converges to softmax attention, and the shape / masking
//! properties of Linformer, Synthesizer and Sinkhorn.

use burn::prelude::*;
use burn::tensor::Distribution;
use combiner::Mode;
use combiner_attention::kernel::{kernel_attention, kernel_attention_quadratic};
use combiner_attention::linear_transformer::elu_feature;
use combiner_attention::performer::{favor_attention, favor_features, random_features};
use combiner_attention::sinkhorn::{sinkhorn_attention, sinkhorn_normalize};
use combiner_attention::*;

use crate::common::*;

#[test]
fn linear_transformer_equals_its_quadratic_form() {
    let dev = Default::default();
    B::seed(&dev, 20);
    for mode in [Mode::Lm, Mode::Mlm] {
        // 150 spans three chunks of the causal form, the last one short
        for len in [1, 13, 64, 65, 150] {
            let [q, k, v] = qkv::<B>(2, 2, len, 8, &dev);
            let fast = kernel_attention(
                elu_feature(q.clone()),
                elu_feature(k.clone()),
                v.clone(),
                mode,
            );
            let slow = kernel_attention_quadratic(elu_feature(q), elu_feature(k), v, mode);
            let err = max_abs_diff(fast, slow);
            assert!(err < 1e-5, "linear {mode} L={len}: {err:e}");
        }
    }
}

#[test]
fn performer_linear_form_equals_its_quadratic_form() {
    let dev = Default::default();
    B::seed(&dev, 21);
    let w = random_features::<B>(2, 32, 8, true, 1, &dev);
    for mode in [Mode::Lm, Mode::Mlm] {
        for len in [13, 65, 150] {
            let [q, k, v] = qkv::<B>(1, 2, len, 8, &dev);
            let fast = favor_attention(q.clone(), k.clone(), v.clone(), w.clone(), mode);
            let fq = favor_features(q, w.clone(), true);
            let fk = favor_features(k, w.clone(), false);
            let slow = kernel_attention_quadratic(fq, fk, v, mode);
            let err = max_abs_diff(fast, slow);
            assert!(err < 1e-5, "performer {mode} L={len}: {err:e}");
        }
    }
}

#[test]
fn orthogonal_features_are_orthogonal_within_a_block() {
    let dev = Default::default();
    let w: Vec<f32> = random_features::<B>(1, 8, 8, true, 3, &dev)
        .into_data()
        .to_vec()
        .unwrap();
    for a in 0..8 {
        for b in 0..a {
            let dot: f32 = (0..8).map(|t| w[a * 8 + t] * w[b * 8 + t]).sum();
            assert!(dot.abs() < 1e-3, "rows {a} and {b}: dot {dot}");
        }
    }
}

/// Mean absolute error of FAVOR+ to softmax attention, over `seeds` draws.
fn favor_error(m: usize, mode: Mode, seeds: u64) -> f64 {
    let dev = Default::default();
    B::seed(&dev, 22);
    let (len, d) = (64, 8);
    let r = |s: f64| Tensor::<B, 4>::random([1, 2, len, d], Distribution::Normal(0.0, s), &dev);
    let (q, k, v) = (r(0.7), r(0.7), r(1.0));
    let exact = combiner::dense_attention(q.clone(), k.clone(), v.clone(), mode);
    let mut total = 0.0;
    for seed in 0..seeds {
        let w = random_features::<B>(2, m, d, true, 100 + seed, &dev);
        let approx = favor_attention(q.clone(), k.clone(), v.clone(), w, mode);
        let e: f64 = (approx - exact.clone()).abs().mean().into_scalar().elem();
        total += e;
    }
    total / seeds as f64
}

#[test]
fn performer_error_to_softmax_attention_decreases_with_features() {
    for mode in [Mode::Mlm, Mode::Lm] {
        let errors: Vec<(usize, f64)> = [4, 32, 256]
            .iter()
            .map(|&m| (m, favor_error(m, mode, 4)))
            .collect();
        eprintln!("performer {mode}: mean |error| by features {errors:?}");
        for w in errors.windows(2) {
            assert!(
                w[1].1 < 0.8 * w[0].1,
                "{mode}: error with {} features ({:.4}) not clearly below {} features ({:.4})",
                w[1].0,
                w[1].1,
                w[0].0,
                w[0].1
            );
        }
        // Monte-Carlo rate 1/sqrt(m): 64x the features, well under half the error
        assert!(errors[2].1 < 0.5 * errors[0].1);
    }
}

#[test]
fn performer_redraw_changes_features_but_keeps_shape() {
    let dev = Default::default();
    let cfg = AttentionConfig::Performer(PerformerConfig {
        features: Some(12),
        orthogonal: true,
        seed: 0,
    });
    let Attention::Performer(p) = cfg.init::<B>(16, 2, Mode::Lm, 0.0, &dev) else {
        panic!("performer")
    };
    let before = p.projection();
    let p = p.redraw(7);
    let after = p.projection();
    assert_eq!(before.dims(), [2, 12, 8]);
    assert_eq!(after.dims(), [2, 12, 8]);
    assert!(max_abs_diff(before, after) > 1e-3);
}

fn x(len: usize, dev: &burn_ndarray::NdArrayDevice) -> Tensor<B, 3> {
    Tensor::random([2, len, 16], Distribution::Normal(0.0, 1.0), dev)
}

#[test]
fn linformer_shapes_and_refusals() {
    let dev = Default::default();
    let cfg = AttentionConfig::Linformer(LinformerConfig {
        max_len: 50,
        k: 8,
        share_kv: true,
    });
    let a = cfg.init::<B>(16, 2, Mode::Mlm, 0.0, &dev);
    for len in [1, 13, 50] {
        assert_eq!(a.forward(x(len, &dev)).dims(), [2, len, 16]);
    }
    let err = cfg.try_init::<B>(16, 2, Mode::Lm, 0.0, &dev).unwrap_err();
    assert_eq!(
        err,
        AttentionError::BidirectionalOnly {
            attention: "linformer"
        }
    );
    assert!(err.to_string().contains("bidirectional only"));
}

#[test]
#[should_panic(expected = "exceeds max_len")]
fn linformer_refuses_sequences_longer_than_max_len() {
    let dev = Default::default();
    let cfg = AttentionConfig::Linformer(LinformerConfig {
        max_len: 20,
        k: 4,
        share_kv: false,
    });
    cfg.init::<B>(16, 2, Mode::Mlm, 0.0, &dev)
        .forward(x(21, &dev));
}

#[test]
#[should_panic(expected = "bidirectional only")]
fn init_panics_for_bigbird_in_lm_mode() {
    let dev = Default::default();
    AttentionConfig::BigBird(BigBirdConfig::default()).init::<B>(16, 2, Mode::Lm, 0.0, &dev);
}

#[test]
fn synthesizer_shapes_and_limits() {
    let dev = Default::default();
    for synthesis in [Synthesis::Dense, Synthesis::Random] {
        let cfg = AttentionConfig::Synthesizer(SynthesizerConfig {
            synthesis,
            max_len: 30,
            trainable: false,
        });
        for mode in [Mode::Lm, Mode::Mlm] {
            let a = cfg.init::<B>(16, 2, mode, 0.0, &dev);
            for len in [1, 13, 30] {
                assert_eq!(a.forward(x(len, &dev)).dims(), [2, len, 16]);
            }
        }
    }
}

#[test]
#[should_panic(expected = "exceeds max_len")]
fn synthesizer_refuses_sequences_longer_than_max_len() {
    let dev = Default::default();
    let cfg = AttentionConfig::Synthesizer(SynthesizerConfig {
        max_len: 10,
        ..Default::default()
    });
    cfg.init::<B>(16, 2, Mode::Lm, 0.0, &dev)
        .forward(x(11, &dev));
}

#[test]
fn sinkhorn_normalization_is_doubly_stochastic() {
    let dev = Default::default();
    B::seed(&dev, 23);
    let logits = Tensor::<B, 4>::random([1, 2, 7, 7], Distribution::Normal(0.0, 2.0), &dev);
    let p = sinkhorn_normalize(logits, 40).exp();
    let rows = p.clone().sum_dim(3);
    let cols = p.sum_dim(2);
    let one = |t: Tensor<B, 4>| max_abs_diff(t.clone(), t.ones_like());
    assert!(one(cols) < 1e-5, "columns");
    assert!(one(rows) < 1e-3, "rows");
}

#[test]
fn sinkhorn_shapes_and_padding() {
    let dev = Default::default();
    B::seed(&dev, 24);
    let cfg = SinkhornConfig {
        block: 6,
        iters: 5,
        temperature: 0.75,
    };
    for mode in [Mode::Lm, Mode::Mlm] {
        for len in LENGTHS {
            let [q, k, v] = qkv::<B>(2, 2, len, 8, &dev);
            let out = sinkhorn_attention(q.clone(), k.clone(), v.clone(), &cfg, mode, None);
            assert_eq!(out.dims(), [2, 2, len, 8]);
            let finite: bool = out.clone().is_finite().all().into_scalar();
            assert!(finite, "{mode} L={len}");
            // outputs are convex combinations of values (mixtures of them in
            // the sorted block), so they stay within the values' range
            let vmax: f32 = v.clone().abs().max().into_scalar();
            let omax: f32 = out.abs().max().into_scalar();
            assert!(omax <= vmax + 1e-4, "{mode} L={len}: {omax} > {vmax}");
        }
    }
    // a single block in LM mode has nothing to sort: plain causal attention in the block
    let len = 5;
    let [q, k, v] = qkv::<B>(1, 2, len, 8, &dev);
    let out = sinkhorn_attention(q.clone(), k.clone(), v.clone(), &cfg, Mode::Lm, None);
    let dense = combiner::dense_attention(q, k, v, Mode::Lm);
    assert!(max_abs_diff(out, dense) < 1e-5);
}
