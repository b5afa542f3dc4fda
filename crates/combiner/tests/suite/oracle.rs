//! Exactness: the efficient attention equals the dense oracle for every plan,
//! mode, abstraction and awkward length; `q(j|i)` is a distribution whose
//! support is exactly `Omega_i`.

use crate::common::*;
use burn::prelude::*;
use combiner::exec::combiner_attention;
use combiner::oracle::{effective_attention, oracle_attention};
use combiner::{AbstractionKind, Mode};

fn efficient(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    layouts: &[combiner::Layout],
    abs: &combiner::Abstraction<B>,
) -> Tensor<B, 4> {
    let n = layouts.len() as f64;
    layouts
        .iter()
        .map(|l| combiner_attention(q.clone(), k.clone(), v.clone(), l, abs))
        .reduce(|a, b| a + b)
        .unwrap()
        .div_scalar(n)
}

#[test]
fn efficient_equals_dense_oracle_for_every_plan_mode_abstraction_and_length() {
    let dev = Default::default();
    B::seed(&dev, 7);
    let abstractions = [
        AbstractionKind::Max,
        AbstractionKind::Mean,
        AbstractionKind::DeepSetsMax,
    ];
    let mut worst = 0.0f64;
    for (name, plan) in plans() {
        for mode in [Mode::Lm, Mode::Mlm] {
            for kind in abstractions {
                let abs = kind.init::<B>(8, &dev);
                for len in LENGTHS {
                    let layouts = layouts(&plan, len, mode);
                    let parts: Vec<_> = layouts.iter().map(|l| l.partition()).collect();
                    let [q, k, v] = qkv::<B>(2, 2, len, 8, &dev);
                    let fast = efficient(q.clone(), k.clone(), v.clone(), &layouts, &abs);
                    let slow = oracle_attention(q, k, v, &parts, &abs);
                    let err = max_abs_diff(fast, slow);
                    worst = worst.max(err);
                    assert!(
                        err < 1e-5,
                        "{name} {mode} {kind:?} L={len}: efficient differs from oracle by {err:e}"
                    );
                }
            }
        }
    }
    eprintln!("largest difference to the oracle: {worst:e}");
}

#[test]
fn effective_attention_rows_are_distributions_supported_exactly_on_omega() {
    let dev = Default::default();
    B::seed(&dev, 11);
    for (name, plan) in plans() {
        for mode in [Mode::Lm, Mode::Mlm] {
            let abs = AbstractionKind::Max.init::<B>(4, &dev);
            for len in LENGTHS {
                for layout in layouts(&plan, len, mode) {
                    let [q, k, _] = qkv::<B>(1, 1, len, 4, &dev);
                    let a = effective_attention(q, k, &layout.partition(), &abs);
                    let vals: Vec<f32> = a.into_data().to_vec().unwrap();
                    for i in 0..len {
                        let row = &vals[i * len..(i + 1) * len];
                        let sum: f32 = row.iter().sum();
                        assert!(
                            (sum - 1.0).abs() < 1e-5,
                            "{name} {mode} L={len}: row {i} sums to {sum}"
                        );
                        for (j, &p) in row.iter().enumerate() {
                            let inside = mode.allows(i, j);
                            assert!(
                                if inside { p > 0.0 } else { p == 0.0 },
                                "{name} {mode} L={len}: q({j}|{i}) = {p} but j {} Omega_i",
                                if inside { "is in" } else { "is not in" }
                            );
                        }
                    }
                }
            }
        }
    }
}
