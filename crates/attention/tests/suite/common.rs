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
    vec![
        AttentionConfig::Vanilla,
        AttentionConfig::Combiner {
            plan: combiner::Plan::Fixed { block: None },
            abstraction: combiner::AbstractionKind::Max,
        },
        AttentionConfig::SparseFixed(SparseFixedConfig {
            block: Some(5),
            summary: 2,
        }),
        AttentionConfig::SparseStrided(SparseStridedConfig { stride: Some(4) }),
        AttentionConfig::Logsparse(LogsparseConfig {}),
        AttentionConfig::Axial(AxialConfig::default()),
        AttentionConfig::Local(LocalConfig { window: 5 }),
        AttentionConfig::Routing(RoutingConfig {
            clusters: 4,
            decay: 0.9,
        }),
        AttentionConfig::Reformer(ReformerConfig {
            bucket_size: 4,
            n_hashes: 2,
            n_buckets: Some(4),
            seed: 1,
        }),
        AttentionConfig::Performer(PerformerConfig {
            features: Some(16),
            orthogonal: true,
            seed: 2,
        }),
        AttentionConfig::LinearTransformer(LinearTransformerConfig {}),
        AttentionConfig::Linformer(LinformerConfig {
            max_len: 80,
            k: 8,
            share_kv: false,
        }),
        AttentionConfig::BigBird(BigBirdConfig {
            block: 4,
            window_blocks: 3,
            global_blocks: 1,
            random_blocks: 2,
            seed: 3,
        }),
        AttentionConfig::Longformer(LongformerConfig {
            window: 3,
            global: vec![0, 7],
        }),
        AttentionConfig::Sinkhorn(SinkhornConfig {
            block: 6,
            iters: 5,
            temperature: 0.75,
        }),
        AttentionConfig::Synthesizer(SynthesizerConfig {
            synthesis: Synthesis::Dense,
            max_len: 80,
            trainable: true,
        }),
        AttentionConfig::Synthesizer(SynthesizerConfig {
            synthesis: Synthesis::Random,
            max_len: 80,
            trainable: true,
        }),
    ]
}

pub fn modes(config: &AttentionConfig) -> Vec<Mode> {
    [Mode::Lm, Mode::Mlm]
        .into_iter()
        .filter(|&m| config.supports(m))
        .collect()
}
