//! Combiner-Axial row-major with the authors' learned summary: equal to the
//! dense oracle at every awkward length in both modes, equal to a plain-loop
//! computation written here, causal, and trainable.

use crate::common::*;
use burn::prelude::*;
use burn::tensor::Distribution;
use combiner::attention::{plan_attention, plan_attention_with, PlanInputs};
use combiner::oracle::oracle_attention_learned;
use combiner::row_summary::learned_rowmajor_attention;
use combiner::{
    AbstractionKind, CombinerConfig, Grid, LearnedRowSummary, Mode, Plan, PlanError, RowSummary,
};

fn learned(grid: Option<Grid>) -> Plan {
    Plan::AxialRowmajor {
        grid,
        summary: RowSummary::Learned,
    }
}

fn normal<const D: usize>(shape: [usize; D], dev: &Device<B>) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), dev)
}

/// Random weights, with a LayerNorm scale and bias far from 1 and 0 so that
/// both matter.
fn summary(h: usize, dh: usize, dm: usize, dev: &Device<B>) -> LearnedRowSummary<B> {
    LearnedRowSummary::from_weights(
        normal([h, dh, dm], dev).mul_scalar(0.5),
        normal([dm], dev).add_scalar(1.0),
        normal([dm], dev),
        normal([dm, h, dh], dev).mul_scalar(0.5),
    )
    .expect("consistent shapes")
}

#[test]
fn learned_rowmajor_equals_the_dense_oracle_at_every_length_and_mode() {
    let dev = Default::default();
    B::seed(&dev, 31);
    let (h, dh, dm) = (2, 4, 6);
    let s = summary(h, dh, dm, &dev);
    let mut worst = 0.0f64;
    for grid in [None, Some(Grid { rows: 9, cols: 13 })] {
        let plan = learned(grid);
        for mode in [Mode::Lm, Mode::Mlm] {
            for kind in [AbstractionKind::Max, AbstractionKind::Mean] {
                let abs = kind.init::<B>(dh, &dev);
                for len in LENGTHS {
                    let layout =
                        std::sync::Arc::new(plan.layout(len, mode).expect("plan compiles"));
                    let [q, k, v] = qkv::<B>(2, h, len, dh, &dev);
                    let x = normal([2, len, dm], &dev);
                    let fast = learned_rowmajor_attention(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        x.clone(),
                        &layout,
                        &s,
                        &abs,
                        None,
                    );
                    let slow =
                        oracle_attention_learned(q, k, v, x, &[layout.partition()], &abs, &s);
                    let err = max_abs_diff(fast, slow);
                    worst = worst.max(err);
                    assert!(
                        err < 1e-5,
                        "{grid:?} {mode} {kind:?} L={len}: efficient differs from oracle by {err:e}"
                    );
                }
            }
        }
    }
    eprintln!("largest difference to the oracle: {worst:e}");
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec().expect("float data")
}

/// The learned row-major output written out with loops over rows and
/// columns, straight from the definition (see the `row_summary` module docs).
/// Index loops on purpose: this is the path that shares nothing with tensors.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn by_loops(
    [q, k, v]: [&[f64]; 3],
    x: &[f64],
    [w0, scale, bias, w1]: [&[f64]; 4],
    [b, h, len, d, dm]: [usize; 5],
    grid: Grid,
    mode: Mode,
) -> Vec<f64> {
    let (n, m) = (grid.rows, grid.cols);
    let sc = 1.0 / (d as f64).sqrt();
    let at = |t: &[f64], bi: usize, hi: usize, p: usize| -> Vec<f64> {
        let o = ((bi * h + hi) * len + p) * d;
        t[o..o + d].to_vec()
    };
    let dot = |a: &[f64], c: &[f64]| a.iter().zip(c).map(|(x, y)| x * y).sum::<f64>();
    let mut out = vec![0.0; b * h * len * d];
    for bi in 0..b {
        // vbar[r2][c][head] and key[r2][c][head] for every grid cell
        let mut vbar = vec![vec![vec![vec![0.0; d]; h]; m]; n];
        let mut key = vbar.clone();
        for r2 in 0..n {
            if r2 * m >= len {
                continue;
            }
            for c in 0..m {
                let t = (r2 * m + c).min(len - 1);
                for hi in 0..h {
                    let qt = at(q, bi, hi, t);
                    let cols: Vec<usize> = (0..m).filter(|&c2| r2 * m + c2 < len).collect();
                    let logits: Vec<f64> = cols
                        .iter()
                        .map(|&c2| dot(&qt, &at(k, bi, hi, r2 * m + c2)) * sc)
                        .collect();
                    let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
                    for (&c2, l) in cols.iter().zip(&logits) {
                        let p = (l - mx).exp() / z;
                        let vj = at(v, bi, hi, r2 * m + c2);
                        for e in 0..d {
                            vbar[r2][c][hi][e] += p * vj[e];
                        }
                    }
                }
                // y = x_t + W0 concat(vbar); key = W1 LayerNorm(y)
                let mut y: Vec<f64> = x[(bi * len + t) * dm..(bi * len + t + 1) * dm].to_vec();
                for (o, yo) in y.iter_mut().enumerate() {
                    for hi in 0..h {
                        for e in 0..d {
                            *yo += vbar[r2][c][hi][e] * w0[(hi * d + e) * dm + o];
                        }
                    }
                }
                let mean = y.iter().sum::<f64>() / dm as f64;
                let var = y.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / dm as f64;
                let ln: Vec<f64> = (0..dm)
                    .map(|o| (y[o] - mean) / (var + 1e-6).sqrt() * scale[o] + bias[o])
                    .collect();
                for hi in 0..h {
                    for e in 0..d {
                        key[r2][c][hi][e] = (0..dm).map(|o| ln[o] * w1[(o * h + hi) * d + e]).sum();
                    }
                }
            }
        }
        for hi in 0..h {
            for r in 0..n {
                for c in 0..m {
                    let i = r * m + c;
                    if i >= len {
                        continue;
                    }
                    let qi = at(q, bi, hi, i);
                    // (logit, value) of the direct part and of every span
                    let mut parts: Vec<(f64, Vec<f64>)> = Vec::new();
                    for c2 in 0..m {
                        let j = r * m + c2;
                        if j < len && (mode == Mode::Mlm || c2 <= c) {
                            parts.push((dot(&qi, &at(k, bi, hi, j)) * sc, at(v, bi, hi, j)));
                        }
                    }
                    for r2 in 0..n {
                        let other = r2 != r && (mode == Mode::Mlm || r2 < r);
                        if other && r2 * m < len {
                            parts.push((dot(&qi, &key[r2][c][hi]) * sc, vbar[r2][c][hi].clone()));
                        }
                    }
                    let mx = parts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = parts.iter().map(|p| (p.0 - mx).exp()).sum();
                    let o = ((bi * h + hi) * len + i) * d;
                    for (l, val) in &parts {
                        for e in 0..d {
                            out[o + e] += (l - mx).exp() / z * val[e];
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn learned_rowmajor_matches_a_plain_loop_computation() {
    let dev = Default::default();
    B::seed(&dev, 37);
    let (b, h, d, dm) = (2, 2, 3, 5);
    let (w0, w1) = (normal([h, d, dm], &dev), normal([dm, h, d], &dev));
    let (scale, bias) = (normal([dm], &dev).add_scalar(1.0), normal([dm], &dev));
    let s = LearnedRowSummary::from_weights(w0.clone(), scale.clone(), bias.clone(), w1.clone())
        .unwrap();
    let weights = [values(w0), values(scale), values(bias), values(w1)];
    let abs = AbstractionKind::Max.init::<B>(d, &dev);
    // a full grid and one whose last row is short
    for (len, grid) in [
        (12, Grid { rows: 3, cols: 4 }),
        (10, Grid { rows: 3, cols: 4 }),
    ] {
        for mode in [Mode::Lm, Mode::Mlm] {
            let [q, k, v] = qkv::<B>(b, h, len, d, &dev);
            let x = normal([b, len, dm], &dev);
            let inputs = PlanInputs {
                learned: Some((&s, x.clone())),
                ..PlanInputs::default()
            };
            let fast = plan_attention_with(
                q.clone(),
                k.clone(),
                v.clone(),
                &learned(Some(grid)),
                mode,
                &abs,
                inputs,
            )
            .unwrap();
            let [q, k, v, x] = [values(q), values(k), values(v), values(x)];
            let expect = by_loops(
                [&q, &k, &v],
                &x,
                [&weights[0], &weights[1], &weights[2], &weights[3]],
                [b, h, len, d, dm],
                grid,
                mode,
            );
            let got = values(fast);
            let err = got
                .iter()
                .zip(&expect)
                .map(|(a, e)| (a - e).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-4, "L={len} {mode}: loops differ by {err:e}");
            // the learned keys matter: the pooled form gives another output
            let pooled = plan_attention(
                Tensor::<B, 4>::from_data(TensorData::new(q, [b, h, len, d]), &dev),
                Tensor::from_data(TensorData::new(k, [b, h, len, d]), &dev),
                Tensor::from_data(TensorData::new(v, [b, h, len, d]), &dev),
                &Plan::AxialRowmajor {
                    grid: Some(grid),
                    summary: RowSummary::Pooled,
                },
                mode,
                &abs,
                None,
            )
            .unwrap();
            let gap = values(pooled)
                .iter()
                .zip(&got)
                .map(|(a, e)| (a - e).abs())
                .fold(0.0, f64::max);
            assert!(gap > 1e-3, "L={len} {mode}: learned keys had no effect");
        }
    }
}

#[test]
fn learned_rowmajor_is_causal_in_lm_mode() {
    let dev = Default::default();
    B::seed(&dev, 41);
    let (h, dh, dm) = (2, 4, 8);
    let s = summary(h, dh, dm, &dev);
    let abs = AbstractionKind::Max.init::<B>(dh, &dev);
    let plan = learned(None);
    for len in [12, 50, 65] {
        let [q, k, v] = qkv::<B>(1, h, len, dh, &dev);
        let x = normal([1, len, dm], &dev);
        let run = |q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, x: Tensor<B, 3>| {
            let inputs = PlanInputs {
                learned: Some((&s, x)),
                ..PlanInputs::default()
            };
            plan_attention_with(q, k, v, &plan, Mode::Lm, &abs, inputs).unwrap()
        };
        let base = run(q.clone(), k.clone(), v.clone(), x.clone());
        for t in [0, len / 3, len - 2] {
            let tail = |x: &Tensor<B, 4>| {
                let noise = Tensor::<B, 4>::random(
                    [1, h, len - t - 1, dh],
                    Distribution::Normal(0.0, 3.0),
                    &dev,
                );
                x.clone()
                    .slice_assign([0..1, 0..h, t + 1..len, 0..dh], noise)
            };
            let xt = x.clone().slice_assign(
                [0..1, t + 1..len, 0..dm],
                normal([1, len - t - 1, dm], &dev).mul_scalar(3.0),
            );
            let moved = run(tail(&q), tail(&k), tail(&v), xt);
            let err = max_abs_diff(base.clone().narrow(2, 0, t + 1), moved.narrow(2, 0, t + 1));
            assert!(err < 1e-6, "L={len}: output at <= {t} moved by {err:e}");
        }
    }
}

#[test]
fn learned_rowmajor_without_weights_is_a_clear_error() {
    let dev = Default::default();
    let abs = AbstractionKind::Max.init::<B>(4, &dev);
    let [q, k, v] = qkv::<B>(1, 1, 9, 4, &dev);
    let err = plan_attention(q, k, v, &learned(None), Mode::Lm, &abs, None).unwrap_err();
    assert_eq!(err, PlanError::MissingSummaryWeights);
    assert!(
        err.to_string().contains("w0, ln_scale, ln_bias, w1"),
        "{err}"
    );
    let bad = LearnedRowSummary::<B>::from_weights(
        normal([2, 3, 5], &dev),
        normal([5], &dev),
        normal([4], &dev),
        normal([5, 2, 3], &dev),
    )
    .unwrap_err();
    assert_eq!(bad.name, "ln_bias");
    assert!(bad.to_string().contains("expected [5]"), "{bad}");
}

#[test]
fn learned_rowmajor_module_trains_every_parameter() {
    use burn::module::{Module, ModuleVisitor, Param};
    struct Count<'a> {
        grads: &'a <AD as burn::tensor::backend::AutodiffBackend>::Gradients,
        seen: usize,
        bad: Vec<String>,
    }
    impl ModuleVisitor<AD> for Count<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
            self.seen += 1;
            match param.val().grad(self.grads) {
                Some(g) if g.clone().abs().sum().into_scalar().elem::<f32>() > 0.0 => {}
                _ => self.bad.push(format!("{:?}: no gradient", param.id)),
            }
        }
    }
    let dev = Default::default();
    AD::seed(&dev, 43);
    for mode in [Mode::Lm, Mode::Mlm] {
        // DeepSets is ignored by the learned summary: no parameter left untrained
        for kind in [AbstractionKind::Max, AbstractionKind::DeepSetsMax] {
            let attn = CombinerConfig::new(16, 2)
                .with_plan(learned(None))
                .with_mode(mode)
                .with_abstraction(kind)
                .with_dropout(0.1)
                .with_attention_dropout(0.1)
                .init::<AD>(&dev);
            assert!(attn.row_summary().is_some());
            let x = Tensor::<AD, 3>::random([2, 30, 16], Distribution::Normal(0.0, 1.0), &dev);
            let grads = attn.forward(x).powi_scalar(2).sum().backward();
            let mut c = Count {
                grads: &grads,
                seen: 0,
                bad: vec![],
            };
            attn.visit(&mut c);
            // q, k, v, output (weight and bias each) + W0, W1, LayerNorm scale and bias
            assert_eq!(c.seen, 12, "{mode} {kind:?}: parameter count");
            assert!(c.bad.is_empty(), "{mode} {kind:?}: {:?}", c.bad);
        }
    }
}
