//! Forward + backward time of every attention of the zoo on the CPU backend
//! at L = 1k and 4k (the baselines of issue 4 / Figure 3).
//!
//! `cargo bench -p combiner-attention --bench baselines` (set
//! `ATTENTION_BENCH_LENGTHS=1024,4096` to choose lengths,
//! `ATTENTION_BENCH_REPEATS=n` for repeats). The whole module is timed
//! (projections included): batch 1, one head, d_model = d_head = 64.
//! LM mode wherever the attention has a causal form, MLM otherwise.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_ndarray::NdArray;
use combiner::Mode;
use combiner_attention::*;

type B = Autodiff<NdArray<f32>>;

fn configs(len: usize) -> Vec<AttentionConfig> {
    vec![
        AttentionConfig::Vanilla,
        AttentionConfig::default(),
        AttentionConfig::SparseFixed(SparseFixedConfig::default()),
        AttentionConfig::SparseStrided(SparseStridedConfig::default()),
        AttentionConfig::Logsparse(LogsparseConfig {}),
        AttentionConfig::Axial(AxialConfig::default()),
        AttentionConfig::Local(LocalConfig::default()),
        AttentionConfig::Routing(RoutingConfig::default()),
        AttentionConfig::Reformer(ReformerConfig::default()),
        AttentionConfig::Performer(PerformerConfig::default()),
        AttentionConfig::LinearTransformer(LinearTransformerConfig {}),
        AttentionConfig::Linformer(LinformerConfig {
            max_len: len,
            ..Default::default()
        }),
        AttentionConfig::BigBird(BigBirdConfig::default()),
        AttentionConfig::Longformer(LongformerConfig::default()),
        AttentionConfig::Sinkhorn(SinkhornConfig::default()),
        AttentionConfig::Synthesizer(SynthesizerConfig {
            synthesis: Synthesis::Dense,
            max_len: len,
            trainable: true,
        }),
        AttentionConfig::Synthesizer(SynthesizerConfig {
            synthesis: Synthesis::Random,
            max_len: len,
            trainable: true,
        }),
    ]
}

fn main() {
    let lengths: Vec<usize> = std::env::var("ATTENTION_BENCH_LENGTHS")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().parse().expect("length"))
                .collect()
        })
        .unwrap_or_else(|| vec![1024, 4096]);
    let repeats: usize = std::env::var("ATTENTION_BENCH_REPEATS")
        .ok()
        .map(|s| s.parse().expect("repeats"))
        .unwrap_or(3);
    let dev = Default::default();
    B::seed(&dev, 0);
    let d = 64;
    println!(
        "# forward+backward, CPU (burn-ndarray), batch 1, 1 head, d_model {d}; median of {repeats}"
    );
    println!(
        "{:>6} {:<20} {:>4} {:>10} {:>9}",
        "L", "attention", "mode", "ms", "vs dense"
    );
    for &len in &lengths {
        let mut rows = Vec::new();
        for cfg in configs(len) {
            let mode = if cfg.supports(Mode::Lm) {
                Mode::Lm
            } else {
                Mode::Mlm
            };
            let attn = cfg.init::<B>(d, 1, mode, 0.0, &dev);
            let mut times = Vec::new();
            for rep in 0..=repeats {
                let x = Tensor::<B, 3>::random([1, len, d], Distribution::Normal(0.0, 1.0), &dev)
                    .require_grad();
                let start = Instant::now();
                let grads = attn.forward(x.clone()).sum().backward();
                let g = x.grad(&grads).expect("input gradient");
                let _: f32 = g.sum().into_scalar().elem();
                if rep > 0 {
                    // the first run warms caches and allocators
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.sort_by(|a, b| a.total_cmp(b));
            rows.push((cfg.name(), mode, times[times.len() / 2]));
        }
        let dense = rows[0].2;
        for (name, mode, ms) in rows {
            println!(
                "{len:>6} {name:<20} {mode:>4} {ms:>10.1} {:>8.2}x",
                dense / ms
            );
        }
    }
}
