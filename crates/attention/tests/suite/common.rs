//! Shared helpers for the attention tests.
#![allow(dead_code)]

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_ndarray::NdArray;
use combiner::Mode;
use combiner_attention::*;

pub type B = NdArray<f32>;
pub type AD = Autodiff<NdArray<f32>>;

/// Lengths that are not multiples of the block sizes used below.
pub const LENGTHS: [usize; 6] = [1, 2, 3, 13, 50, 65];

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
    (a - b).abs().max().into_scalar().elem()
}

/// One small configuration of every attention, with sizes that do not divide the test lengths.
pub fn all_configs() -> Vec<AttentionConfig> {
    AttentionConfig::examples()
}

pub fn modes(config: &AttentionConfig) -> Vec<Mode> {
    [Mode::Lm, Mode::Mlm]
        .into_iter()
        .filter(|&m| config.supports(m))
        .collect()
}
