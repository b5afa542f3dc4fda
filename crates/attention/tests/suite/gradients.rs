//! Gradients are finite for every attention, every supported mode, and
//! reach the input and the trainable parameters that the attention uses.

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;

use combiner::Mode;
use combiner_attention::AttentionConfig;

use crate::common::*;

struct Finite<'a> {
    grads: &'a <AD as AutodiffBackend>::Gradients,
    with_grad: usize,
    bad: Vec<String>,
}

impl ModuleVisitor<AD> for Finite<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.with_grad += 1;
            let ok: bool = g.is_finite().all().into_scalar();
            if !ok {
                self.bad.push(format!("{:?}", param.id));
            }
        }
    }
}

#[test]
fn gradients_are_finite_for_every_attention() {
    let dev = Default::default();
    AD::seed(&dev, 40);
    for cfg in all_configs() {
        for mode in modes(&cfg) {
            let a = cfg.init::<AD>(16, 2, mode, 0.0, &dev);
            let x = Tensor::<AD, 3>::random([2, 13, 16], Distribution::Normal(0.0, 1.0), &dev)
                .require_grad();
            let grads = a.forward(x.clone()).powi_scalar(2).sum().backward();
            let gx = x.grad(&grads).expect("input gradient");
            let ok: bool = gx.clone().is_finite().all().into_scalar();
            assert!(ok, "{} {mode}: input gradient not finite", cfg.name());
            let norm: f64 = gx.abs().sum().into_scalar().elem();
            assert!(norm > 0.0, "{} {mode}: zero input gradient", cfg.name());
            let mut v = Finite {
                grads: &grads,
                with_grad: 0,
                bad: Vec::new(),
            };
            a.visit(&mut v);
            assert!(
                v.bad.is_empty(),
                "{} {mode}: non-finite gradients {:?}",
                cfg.name(),
                v.bad
            );
            // at least the value and output projections (weight and bias)
            assert!(
                v.with_grad >= 4,
                "{} {mode}: only {} parameters got gradients",
                cfg.name(),
                v.with_grad
            );
        }
    }
}

/// Attention dropout: while training (autodiff) it drops attention
/// probabilities, so two passes differ, except for the kernel attentions,
/// which form no probabilities; at inference it is off, and the output is
/// that of the same weights without dropout.
#[test]
fn attention_dropout_acts_while_training_only_for_every_attention() {
    use burn::module::AutodiffModule;
    let dev = Default::default();
    AD::seed(&dev, 41);
    let mut configs = all_configs();
    configs.push(AttentionConfig::Combiner {
        plan: combiner::Plan::from_name("axial-rowmajor-learned").unwrap(),
        abstraction: combiner::AbstractionKind::Max,
    });
    configs.push(AttentionConfig::Combiner {
        plan: combiner::Plan::from_name("mixture-joint").unwrap(),
        abstraction: combiner::AbstractionKind::Max,
    });
    for cfg in configs {
        let kernel = matches!(
            cfg,
            AttentionConfig::Performer(_) | AttentionConfig::LinearTransformer(_)
        );
        for mode in modes(&cfg) {
            let a = cfg.init_with::<AD>(16, 2, mode, 0.0, 0.5, &dev);
            let x = Tensor::<AD, 3>::random([2, 13, 16], Distribution::Normal(0.0, 1.0), &dev);
            let gap = max_abs_diff(a.forward(x.clone()), a.forward(x.clone()));
            if kernel {
                assert!(
                    gap < 1e-6,
                    "{} {mode}: kernel attention changed",
                    cfg.name()
                );
            } else {
                assert!(
                    gap > 1e-3,
                    "{} {mode}: attention dropout did nothing",
                    cfg.name()
                );
            }
            // inference: the same weights without dropout
            let plain = cfg
                .init::<AD>(16, 2, mode, 0.0, &dev)
                .load_record(a.clone().into_record());
            let xi = x.clone().inner();
            let gap = max_abs_diff(a.valid().forward(xi.clone()), plain.valid().forward(xi));
            assert!(
                gap < 1e-6,
                "{} {mode}: dropout active at inference",
                cfg.name()
            );
        }
    }
    let err = AttentionConfig::Vanilla
        .try_init_with::<B>(16, 2, Mode::Lm, 0.0, 1.0, &Default::default())
        .map(|_| ())
        .expect_err("attention_dropout = 1 is refused");
    assert!(err.to_string().contains("attention_dropout = 1"), "{err}");
}
