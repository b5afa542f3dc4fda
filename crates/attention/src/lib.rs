//! Every attention of the paper's tables behind one [`AttentionConfig`].
//!
//! Models take an `AttentionConfig` and never know which attention they hold:
//! `config.init(d_model, n_heads, mode, dropout, device)` returns an
//! [`Attention`] module whose `forward` maps `[batch, seq, d_model]` to the
//! same shape. All variants share the multi-head wrapper
//! ([`combiner::MultiHead`]: projections, heads, dropout).
#![warn(missing_docs)]

use burn::prelude::*;
use combiner::{AbstractionKind, CombinerAttention, CombinerConfig, Mode, MultiHead, Plan};
use serde::{Deserialize, Serialize};

/// Which attention a model uses. In TOML: `attention = { kind = "combiner", plan = { kind = "fixed" } }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AttentionConfig {
    /// Dense softmax attention (causal in LM mode).
    Vanilla,
    /// Combiner attention with a factorization plan.
    Combiner {
        /// The plan.
        #[serde(default)]
        plan: Plan,
        /// Span abstraction.
        #[serde(default)]
        abstraction: AbstractionKind,
    },
}

impl Default for AttentionConfig {
    fn default() -> Self {
        AttentionConfig::Combiner {
            plan: Plan::default(),
            abstraction: AbstractionKind::default(),
        }
    }
}

impl AttentionConfig {
    /// A short name for tables and logs.
    pub fn name(&self) -> String {
        match self {
            AttentionConfig::Vanilla => "vanilla".into(),
            AttentionConfig::Combiner { plan, .. } => format!("combiner-{}", plan.name()),
        }
    }

    /// Builds the module.
    ///
    /// # Panics
    /// If `d_model` is not a multiple of `n_heads`.
    pub fn init<B: Backend>(
        &self,
        d_model: usize,
        n_heads: usize,
        mode: Mode,
        dropout: f64,
        device: &B::Device,
    ) -> Attention<B> {
        match self {
            AttentionConfig::Vanilla => Attention::Vanilla(Vanilla {
                heads: MultiHead::new(d_model, n_heads, dropout, device),
                mode,
            }),
            AttentionConfig::Combiner { plan, abstraction } => Attention::Combiner(
                CombinerConfig::new(d_model, n_heads)
                    .with_plan(plan.clone())
                    .with_abstraction(*abstraction)
                    .with_mode(mode)
                    .with_dropout(dropout)
                    .init(device),
            ),
        }
    }
}

/// Dense softmax attention.
#[derive(Module, Debug)]
pub struct Vanilla<B: Backend> {
    heads: MultiHead<B>,
    #[module(skip)]
    mode: Mode,
}

impl<B: Backend> Vanilla<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.heads
            .forward_with(x, |q, k, v| combiner::dense_attention(q, k, v, self.mode))
    }
}

/// An attention module of any kind.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Attention<B: Backend> {
    /// Dense softmax attention.
    Vanilla(Vanilla<B>),
    /// Combiner attention.
    Combiner(CombinerAttention<B>),
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Attention::Vanilla(a) => a.forward(x),
            Attention::Combiner(a) => a.forward(x),
        }
    }
}

/// Keeps `Plan` reachable for configs written against this crate.
pub use combiner::Plan as CombinerPlan;
