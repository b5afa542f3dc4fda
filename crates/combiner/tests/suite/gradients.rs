//! Backward: gradients are finite and non-zero for every plan and every parameter.

use crate::common::*;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use combiner::{AbstractionKind, CombinerConfig, Mode, Plan};

struct GradCheck<'a> {
    grads: &'a <AD as burn::tensor::backend::AutodiffBackend>::Gradients,
    seen: usize,
    bad: Vec<String>,
}

impl ModuleVisitor<AD> for GradCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
        if !param.is_require_grad() {
            return;
        }
        self.seen += 1;
        match param.val().grad(self.grads) {
            None => self.bad.push(format!("{:?}: no gradient", param.id)),
            Some(g) => {
                let g = g.into_data().to_vec::<f32>().unwrap();
                if g.iter().any(|x| !x.is_finite()) {
                    self.bad
                        .push(format!("{:?}: non-finite gradient", param.id));
                } else if g.iter().all(|&x| x == 0.0) {
                    self.bad.push(format!("{:?}: zero gradient", param.id));
                }
            }
        }
    }
}

#[test]
fn every_parameter_gets_a_finite_gradient_for_every_plan() {
    let dev = Default::default();
    AD::seed(&dev, 2);
    for (name, plan) in plans() {
        for mode in [Mode::Lm, Mode::Mlm] {
            for kind in [AbstractionKind::Max, AbstractionKind::DeepSetsMax] {
                let attn = CombinerConfig::new(16, 2)
                    .with_plan(plan.clone())
                    .with_mode(mode)
                    .with_abstraction(kind)
                    .init::<AD>(&dev);
                let x = Tensor::<AD, 3>::random([2, 50, 16], Distribution::Normal(0.0, 1.0), &dev)
                    .require_grad();
                let grads = attn.forward(x.clone()).powi_scalar(2).sum().backward();
                let gx: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
                assert!(
                    gx.iter().all(|v| v.is_finite()),
                    "{name} {mode}: non-finite input gradient"
                );
                let mut check = GradCheck {
                    grads: &grads,
                    seen: 0,
                    bad: vec![],
                };
                attn.visit(&mut check);
                let rowmajor = matches!(plan, Plan::AxialRowmajor { .. });
                let expected = match (kind.is_learnable(), rowmajor) {
                    (false, _) => 8,
                    (true, false) => 16,
                    (true, true) => 12, // token-queried spans need no query DeepSets
                };
                assert_eq!(check.seen, expected, "{name}: trainable parameter count");
                assert!(
                    check.bad.is_empty(),
                    "{name} {mode} {kind:?}: {:?}",
                    check.bad
                );
            }
        }
    }
}

#[test]
fn learnable_centroids_follow_online_kmeans_without_gradients() {
    let dev = Default::default();
    let attn = CombinerConfig::new(8, 2)
        .with_plan(Plan::Learnable { clusters: Some(4) })
        .init::<AD>(&dev);
    let x = Tensor::<AD, 3>::random([2, 30, 8], Distribution::Normal(0.0, 1.0), &dev);
    let before = attn.clone().into_record();
    let moved = attn.update_centroids(x, 0.5);
    let values = |c: Option<Param<Tensor<AD, 3>>>| -> Vec<f32> {
        c.expect("the learnable plan has centroids")
            .val()
            .into_data()
            .to_vec()
            .unwrap()
    };
    let a = values(before.centroids);
    let b = values(moved.into_record().centroids);
    assert_ne!(a, b, "an online k-means step moves at least one centroid");
}
