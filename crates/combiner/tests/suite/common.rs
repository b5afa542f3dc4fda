//! Shared helpers for the attention tests.
// each test binary uses a different subset
#![allow(dead_code)]

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_ndarray::NdArray;
use combiner::plan::routing_layout;
use combiner::{Layout, Mode, Plan};

pub type B = NdArray<f32>;
pub type AD = Autodiff<NdArray<f32>>;
pub type B64 = Autodiff<NdArray<f64>>;

pub const LENGTHS: [usize; 10] = [1, 2, 3, 12, 16, 50, 63, 64, 65, 100];

/// Every plan of the paper, with block sizes / grids that do not divide most
/// lengths, plus the learnable plan with fixed, scattered region assignments.
pub fn plans() -> Vec<(&'static str, Plan)> {
    let mut v = Plan::all();
    v.push(("fixed-s7", Plan::Fixed { block: Some(7) }));
    v
}

/// Layouts of one plan at `len` (learnable: a fixed scattered assignment).
pub fn layouts(plan: &Plan, len: usize, mode: Mode) -> Vec<Layout> {
    plan.components()
        .into_iter()
        .map(|p| match p {
            Plan::Learnable { .. } => {
                let n = combiner::plan::clusters_for(len, None);
                // scattered, unbalanced regions: stresses padding and order
                let regions: Vec<usize> = (0..len).map(|i| (i * 7 + i / 3) % n).collect();
                routing_layout(&regions, mode)
            }
            p => p.layout(len, mode).expect("plan compiles"),
        })
        .collect()
}

pub fn qkv<BB: Backend>(
    b: usize,
    h: usize,
    len: usize,
    d: usize,
    dev: &BB::Device,
) -> [Tensor<BB, 4>; 3] {
    let r = || Tensor::<BB, 4>::random([b, h, len, d], Distribution::Normal(0.0, 1.0), dev);
    [r(), r(), r()]
}

pub fn max_abs_diff<BB: Backend, const D: usize>(a: Tensor<BB, D>, b: Tensor<BB, D>) -> f64 {
    let x: f64 = (a - b).abs().max().into_scalar().elem();
    x
}
