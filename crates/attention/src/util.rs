//! Small helpers shared by the attentions: host-to-tensor index data, a
//! seeded generator, masked dense attention (the oracle of every exact
//! pattern) and a log-sum-exp.

use burn::prelude::*;

// One masking value and the host-to-tensor helpers of the Combiner executor,
// so that exact patterns and Combiner layouts mask identically.
pub use combiner::exec::MASKED;
pub(crate) use combiner::exec::{bool_tensor, int_tensor};

/// The seeded generator: random patterns and random features are drawn on
/// the host so that a seed fixes them on every backend.
pub use combiner::SplitMix;

/// Attention dropout on probabilities `x`, where the attention has it.
pub(crate) fn drop_probs<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    dropout: Option<&burn::nn::Dropout>,
) -> Tensor<B, D> {
    match dropout {
        Some(d) => d.forward(x),
        None => x,
    }
}

/// The dense masked attention every exact pattern is tested against.
pub use combiner::masked_attention;

/// `log(sum(exp(x)))` along `dim`, kept as a size-1 dimension; the shift by
/// the (detached) maximum keeps it finite for large logits.
pub(crate) fn log_sum_exp<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let m = x.clone().detach().max_dim(dim);
    (x - m.clone()).exp().sum_dim(dim).log() + m
}

/// Checks that `d_model` splits into `n_heads`.
pub(crate) fn check_heads(d_model: usize, n_heads: usize) -> Result<(), crate::AttentionError> {
    if n_heads == 0 || !d_model.is_multiple_of(n_heads) {
        return Err(crate::AttentionError::Invalid {
            attention: "multi-head attention",
            message: format!(
                "d_model ({d_model}) must be a positive multiple of n_heads ({n_heads})"
            ),
        });
    }
    Ok(())
}
