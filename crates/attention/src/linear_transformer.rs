//! Linear Transformer (Katharopoulos et al. 2020, "Transformers are RNNs"):
//! kernelized attention with the feature map `phi(x) = elu(x) + 1`; the
//! causal form keeps running sums of `phi(k) v^T` and `phi(k)`.

use burn::prelude::*;
use burn::tensor::activation::elu;
use combiner::{Mode, MultiHead};
use serde::{Deserialize, Serialize};

use crate::kernel::kernel_attention;

/// The Linear Transformer has no hyperparameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearTransformerConfig {}

/// The feature map `elu(x) + 1` (positive, so the normalizer never vanishes).
pub fn elu_feature<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    elu(x, 1.0).add_scalar(1.0)
}

/// Multi-head linear attention.
#[derive(Module, Debug)]
pub struct LinearTransformer<B: Backend> {
    heads: MultiHead<B>,
    #[module(skip)]
    mode: Mode,
}

impl<B: Backend> LinearTransformer<B> {
    pub(crate) fn new(heads: MultiHead<B>, mode: Mode) -> Self {
        LinearTransformer { heads, mode }
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.heads.forward_with(x, |q, k, v| {
            kernel_attention(elu_feature(q), elu_feature(k), v, self.mode)
        })
    }
}
