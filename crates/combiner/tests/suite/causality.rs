//! Causality (LM): outputs at positions <= t do not change when inputs after t change.

use crate::common::*;
use burn::prelude::*;
use burn::tensor::Distribution;
use combiner::attention::plan_attention;
use combiner::exec::combiner_attention;
use combiner::{AbstractionKind, CombinerConfig, Mode, Plan};

#[test]
fn lm_outputs_ignore_future_inputs_for_every_plan() {
    let dev = Default::default();
    B::seed(&dev, 3);
    for (name, plan) in plans() {
        for kind in [
            AbstractionKind::Max,
            AbstractionKind::Mean,
            AbstractionKind::DeepSetsMean,
        ] {
            let abs = kind.init::<B>(8, &dev);
            for len in [12, 50, 65] {
                let layouts = layouts(&plan, len, Mode::Lm);
                let [q, k, v] = qkv::<B>(1, 2, len, 8, &dev);
                let run = |q: &Tensor<B, 4>, k: &Tensor<B, 4>, v: &Tensor<B, 4>| {
                    layouts
                        .iter()
                        .map(|l| combiner_attention(q.clone(), k.clone(), v.clone(), l, &abs))
                        .reduce(|a, b| a + b)
                        .unwrap()
                };
                let base = run(&q, &k, &v);
                for t in [0, len / 3, len - 2] {
                    let noise = |x: &Tensor<B, 4>| {
                        let tail = Tensor::<B, 4>::random(
                            [1, 2, len - t - 1, 8],
                            Distribution::Normal(0.0, 3.0),
                            &dev,
                        );
                        x.clone().slice_assign([0..1, 0..2, t + 1..len, 0..8], tail)
                    };
                    let moved = run(&noise(&q), &noise(&k), &noise(&v));
                    let err =
                        max_abs_diff(base.clone().narrow(2, 0, t + 1), moved.narrow(2, 0, t + 1));
                    assert!(
                        err < 1e-6,
                        "{name} {kind:?} L={len}: output at <= {t} moved by {err:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn learnable_plan_with_centroids_is_causal_in_lm_mode() {
    // Cluster ids come from each token's own key, so changing future q, k, v
    // changes neither the regions of past tokens nor their outputs.
    let dev = Default::default();
    B::seed(&dev, 5);
    let abs = AbstractionKind::Max.init::<B>(8, &dev);
    let len = 40;
    let [q, k, v] = qkv::<B>(2, 2, len, 8, &dev);
    let plan = Plan::Learnable { clusters: Some(6) };
    let out = |q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>| {
        plan_attention(q, k, v, &plan, Mode::Lm, &abs, None).unwrap()
    };
    let base = out(q.clone(), k.clone(), v.clone());
    let t = 20;
    let tail =
        || Tensor::<B, 4>::random([2, 2, len - t - 1, 8], Distribution::Normal(0.0, 3.0), &dev);
    let moved = out(
        q.slice_assign([0..2, 0..2, t + 1..len, 0..8], tail()),
        k.slice_assign([0..2, 0..2, t + 1..len, 0..8], tail()),
        v.slice_assign([0..2, 0..2, t + 1..len, 0..8], tail()),
    );
    assert!(max_abs_diff(base.narrow(2, 0, t + 1), moved.narrow(2, 0, t + 1)) < 1e-6);
}

#[test]
fn multi_head_module_is_causal_at_any_length() {
    let dev = Default::default();
    B::seed(&dev, 9);
    for plan in [
        Plan::Fixed { block: None },
        Plan::from_name("mixture").unwrap(),
    ] {
        let attn = CombinerConfig::new(16, 2).with_plan(plan).init::<B>(&dev);
        let len = 37;
        let x = Tensor::<B, 3>::random([2, len, 16], Distribution::Normal(0.0, 1.0), &dev);
        let y = attn.forward(x.clone());
        assert_eq!(y.dims(), [2, len, 16]);
        let tail = Tensor::<B, 3>::random([2, 7, 16], Distribution::Normal(0.0, 1.0), &dev);
        let y2 = attn.forward(x.slice_assign([0..2, 30..37, 0..16], tail));
        assert!(max_abs_diff(y.narrow(1, 0, 30), y2.narrow(1, 0, 30)) < 1e-6);
    }
}
