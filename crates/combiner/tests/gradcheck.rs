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

/// The CPU device, computing in f64 so that central differences resolve 1e-5
/// (set once: both tests of this binary use it).
fn f64_device() -> Device<F> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let dev = Default::default();
    ONCE.call_once(|| {
        burn::tensor::set_default_dtypes::<F>(
            &dev,
            burn::tensor::FloatDType::F64,
            burn::tensor::IntDType::I64,
        )
        .unwrap()
    });
    dev
}

#[test]
fn gradients_match_finite_differences() {
    let dev = f64_device();
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

/// Central differences of `loss` at entry `idx` of `base` (shape `shape`).
fn central<const D: usize>(
    base: &[f64],
    shape: [usize; D],
    idx: usize,
    eps: f64,
    dev: &Device<F>,
    loss: &dyn Fn(Tensor<F, D>) -> f64,
) -> f64 {
    let at = |delta: f64| {
        let mut p = base.to_vec();
        p[idx] += delta;
        loss(Tensor::from_data(TensorData::new(p, shape), dev))
    };
    (at(eps) - at(-eps)) / (2.0 * eps)
}

#[test]
fn learned_rowmajor_gradients_match_finite_differences() {
    use combiner::attention::{plan_attention_with, PlanInputs};
    use combiner::{LearnedRowSummary, Plan, RowSummary};
    let dev = f64_device();
    F::seed(&dev, 5);
    let (h, d, dm, eps) = (2, 3, 4, 1e-6);
    let normal = |shape: Vec<usize>| {
        Tensor::<F, 1>::random(
            [shape.iter().product::<usize>()],
            Distribution::Normal(0.0, 1.0),
            &dev,
        )
        .into_data()
        .to_vec::<f64>()
        .unwrap()
    };
    let summary = LearnedRowSummary::<F>::from_weights(
        Tensor::from_data(TensorData::new(normal(vec![h, d, dm]), [h, d, dm]), &dev),
        Tensor::from_data(TensorData::new(normal(vec![dm]), [dm]), &dev).add_scalar(1.0),
        Tensor::from_data(TensorData::new(normal(vec![dm]), [dm]), &dev),
        Tensor::from_data(TensorData::new(normal(vec![dm, h, d]), [dm, h, d]), &dev),
    )
    .unwrap();
    let plan = Plan::AxialRowmajor {
        grid: None,
        summary: RowSummary::Learned,
    };
    let abs = AbstractionKind::Max.init::<F>(d, &dev);
    // 9 = a full 3 x 3 grid; 10 = 4 columns with a short last row
    for len in [9, 10] {
        for mode in [Mode::Lm, Mode::Mlm] {
            let [q, k, v] = qkv::<F>(1, h, len, d, &dev);
            let x = Tensor::<F, 3>::random([1, len, dm], Distribution::Normal(0.0, 1.0), &dev);
            let w = Tensor::<F, 4>::random([1, h, len, d], Distribution::Normal(0.0, 1.0), &dev);
            let loss = |q: Tensor<F, 4>, k: Tensor<F, 4>, v: Tensor<F, 4>, x: Tensor<F, 3>| {
                let inputs = PlanInputs {
                    learned: Some((&summary, x)),
                    ..PlanInputs::default()
                };
                let out = plan_attention_with(q, k, v, &plan, mode, &abs, inputs).unwrap();
                (out * w.clone()).sum()
            };
            let [q, k, v] = [q.require_grad(), k.require_grad(), v.require_grad()];
            let x = x.require_grad();
            let grads = loss(q.clone(), k.clone(), v.clone(), x.clone()).backward();
            let value = |t: &Tensor<F, 4>| -> Vec<f64> { t.clone().into_data().to_vec().unwrap() };
            let qkv_in = [q.clone(), k.clone(), v.clone()];
            for (which, t) in qkv_in.iter().enumerate() {
                let g: Vec<f64> = t.grad(&grads).unwrap().into_data().to_vec().unwrap();
                let base = value(t);
                for idx in [0, 7, 13, len * h * d - 1] {
                    let fd = central(&base, [1, h, len, d], idx, eps, &dev, &|p| {
                        let mut xs = [q.clone().detach(), k.clone().detach(), v.clone().detach()];
                        xs[which] = p;
                        let [a, b, c] = xs;
                        loss(a, b, c, x.clone().detach()).into_scalar().elem()
                    });
                    let err = (fd - g[idx]).abs();
                    assert!(
                        err < 1e-5 * (1.0 + fd.abs()),
                        "L={len} {mode}: d/d{}[{idx}] autodiff {} vs finite difference {fd}",
                        ["q", "k", "v"][which],
                        g[idx]
                    );
                }
            }
            let g: Vec<f64> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
            let base: Vec<f64> = x.clone().into_data().to_vec().unwrap();
            for idx in [0, 5, 18, len * dm - 1] {
                let fd = central(&base, [1, len, dm], idx, eps, &dev, &|p| {
                    loss(
                        q.clone().detach(),
                        k.clone().detach(),
                        v.clone().detach(),
                        p,
                    )
                    .into_scalar()
                    .elem()
                });
                let err = (fd - g[idx]).abs();
                assert!(
                    err < 1e-5 * (1.0 + fd.abs()),
                    "L={len} {mode}: d/dx[{idx}] autodiff {} vs finite difference {fd}",
                    g[idx]
                );
            }
        }
    }
}
