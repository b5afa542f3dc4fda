//! The model families of the Combiner paper, generic over the attention
//! ([`AttentionConfig`](combiner_attention::AttentionConfig)) and the backend:
//!
//! - [`image_ar`]: decoder over sub-pixels with factorized position
//!   embeddings; metric bits/dim (Table 1).
//! - [`lm`]: decoder language model; metric perplexity (Tables 2, 3).
//! - [`mlm`]: encoder masked LM; perplexity over masked tokens (Table 6).
//! - [`lra`]: encoder classifier with CLS or MEAN pooling, and the dual encoder of Retrieval (Table 5).
//!
//! Every model implements burn-train's `TrainStep` / `InferenceStep` with a
//! [`StepOutput`](combiner_nn::StepOutput).
#![warn(missing_docs)]

pub mod image_ar;
pub mod lm;
pub mod lra;
pub mod mlm;

use burn::prelude::*;

/// `[seq]` position ids `0..len` broadcast to `[batch, seq]`.
pub(crate) fn positions<B: Backend>(
    batch: usize,
    len: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::<B, 1, Int>::arange(0..len as i64, device)
        .reshape([1, len])
        .expand([batch, len])
}

/// Samples one token per row from `logits: [batch, vocab]` at `temperature`
/// with host-side uniforms `u` (one per row), by inverting the CDF.
pub(crate) fn sample_rows<B: Backend>(
    logits: Tensor<B, 2>,
    temperature: f64,
    u: &[f64],
) -> Vec<usize> {
    let [n, v] = logits.dims();
    let probs = burn::tensor::activation::softmax(logits.div_scalar(temperature.max(1e-6)), 1);
    let p: Vec<f32> = probs
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 data");
    (0..n)
        .map(|r| {
            let row = &p[r * v..(r + 1) * v];
            let mut acc = 0.0f64;
            for (j, &x) in row.iter().enumerate() {
                acc += x as f64;
                if u[r] < acc {
                    return j;
                }
            }
            v - 1
        })
        .collect()
}
