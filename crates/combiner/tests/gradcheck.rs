//! Backward: gradients match central finite differences on a tiny case, in f64.
//! (Its own test binary: it sets the CPU device's default float type to f64.)

#[path = "suite/common.rs"]
mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use combiner::exec::combiner_attention;
use combiner::{AbstractionKind, Layout, Mode};
use common::*;

type F = B64;

fn loss(
    q: Tensor<F, 4>,
    k: Tensor<F, 4>,
    v: Tensor<F, 4>,
    w: &Tensor<F, 4>,
    layouts: &[Layout],
    abs: &combiner::Abstraction<F>,
) -> Tensor<F, 1> {
    let out = layouts
        .iter()
        .map(|l| combiner_attention(q.clone(), k.clone(), v.clone(), l, abs))
        .reduce(|a, b| a + b)
        .unwrap();
    (out * w.clone()).sum()
}

#[test]
fn gradients_match_finite_differences() {
    let dev = Default::default();
    // compute in f64 so that central differences resolve 1e-5
    burn::tensor::set_default_dtypes::<F>(
        &dev,
        burn::tensor::FloatDType::F64,
        burn::tensor::IntDType::I64,
    )
    .unwrap();
    F::seed(&dev, 1);
    let (len, d) = (9, 3);
    let eps = 1e-6;
    for (name, plan) in plans() {
        for mode in [Mode::Lm, Mode::Mlm] {
            for kind in [AbstractionKind::Max, AbstractionKind::DeepSetsMean] {
                let abs = kind.init::<F>(d, &dev);
                let layouts = layouts(&plan, len, mode);
                let [q, k, v] = qkv::<F>(1, 1, len, d, &dev);
                let w =
                    Tensor::<F, 4>::random([1, 1, len, d], Distribution::Normal(0.0, 1.0), &dev);
                let inputs = [q.require_grad(), k.require_grad(), v.require_grad()];
                let grads = loss(
                    inputs[0].clone(),
                    inputs[1].clone(),
                    inputs[2].clone(),
                    &w,
                    &layouts,
                    &abs,
                )
                .backward();
                for (which, x) in inputs.iter().enumerate() {
                    let g: Vec<f64> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
                    let base: Vec<f64> = x.clone().into_data().to_vec().unwrap();
                    for idx in [0, 7, 13, len * d - 1] {
                        let at = |delta: f64| {
                            let mut p = base.clone();
                            p[idx] += delta;
                            let t =
                                Tensor::<F, 4>::from_data(TensorData::new(p, [1, 1, len, d]), &dev);
                            let mut xs = [
                                inputs[0].clone().detach(),
                                inputs[1].clone().detach(),
                                inputs[2].clone().detach(),
                            ];
                            xs[which] = t;
                            let [a, b, c] = xs;
                            let s: f64 = loss(a, b, c, &w, &layouts, &abs).into_scalar().elem();
                            s
                        };
                        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
                        let err = (fd - g[idx]).abs();
                        assert!(
                            err < 1e-5 * (1.0 + fd.abs()),
                            "{name} {mode} {kind:?}: d/d{}[{idx}] autodiff {} vs finite difference {fd}",
                            ["q", "k", "v"][which],
                            g[idx]
                        );
                    }
                }
            }
        }
    }
}
