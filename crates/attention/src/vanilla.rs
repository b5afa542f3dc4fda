//! Vanilla dense softmax attention (Vaswani et al. 2017), the `O(L^2)`
//! baseline; causal in LM mode.

use burn::prelude::*;
use combiner::{Mode, MultiHead};

/// Dense softmax attention.
#[derive(Module, Debug)]
pub struct Vanilla<B: Backend> {
    heads: MultiHead<B>,
    #[module(skip)]
    mode: Mode,
}

impl<B: Backend> Vanilla<B> {
    pub(crate) fn new(heads: MultiHead<B>, mode: Mode) -> Self {
        Vanilla { heads, mode }
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let drop = self.heads.attention_dropout();
        let dropout = Some(&drop);
        self.heads.forward_with(x, |q, k, v| {
            combiner::dense_attention_with(q, k, v, self.mode, dropout)
        })
    }
}
