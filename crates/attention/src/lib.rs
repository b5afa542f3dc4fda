//! Every attention of the paper's tables behind one [`AttentionConfig`].
//!
//! Models take an `AttentionConfig` and never know which attention they hold:
//! `config.init(d_model, n_heads, mode, dropout, device)` returns an
//! [`Attention`] module whose `forward` maps `[batch, seq, d_model]` to the
//! same shape. All variants share the multi-head wrapper
//! ([`combiner::MultiHead`]: projections, heads, dropout).
//!
//! The exact sparse patterns (Sparse Transformer fixed and strided,
//! LogSparse, Axial, Local, Longformer, BigBird, Routing, Reformer) are
//! Combiner layouts without span summaries ([`pattern`]) and run on the
//! Combiner executor. Linformer and BigBird are bidirectional only:
//! [`AttentionConfig::try_init`] refuses them in LM mode.
#![warn(missing_docs)]

use burn::prelude::*;
use combiner::{AbstractionKind, CombinerAttention, CombinerConfig, Mode, MultiHead, Plan};
use serde::{Deserialize, Serialize};

pub mod axial;
pub mod bigbird;
pub mod kernel;
pub mod linear_transformer;
pub mod linformer;
pub mod local;
pub mod logsparse;
pub mod longformer;
pub mod pattern;
pub mod performer;
pub mod reformer;
pub mod routing;
pub mod sinkhorn;
pub mod sparse_fixed;
pub mod sparse_strided;
pub mod synthesizer;
pub mod util;
pub mod vanilla;

pub use axial::AxialConfig;
pub use bigbird::BigBirdConfig;
pub use linear_transformer::{LinearTransformer, LinearTransformerConfig};
pub use linformer::{Linformer, LinformerConfig};
pub use local::LocalConfig;
pub use logsparse::LogsparseConfig;
pub use longformer::LongformerConfig;
pub use pattern::{Pattern, Sparse, SparseKind};
pub use performer::{Performer, PerformerConfig};
pub use reformer::{Reformer, ReformerConfig};
pub use routing::{Routing, RoutingConfig};
pub use sinkhorn::{Sinkhorn, SinkhornConfig};
pub use sparse_fixed::SparseFixedConfig;
pub use sparse_strided::SparseStridedConfig;
pub use synthesizer::{Synthesis, Synthesizer, SynthesizerConfig};
pub use vanilla::Vanilla;

/// Which attention a model uses. In TOML:
/// `attention = { kind = "combiner", plan = { kind = "fixed" } }`,
/// `attention = { kind = "local", window = 128 }`, `attention = { kind = "vanilla" }`.
/// Omitted hyperparameters take their defaults; unknown fields are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AttentionConfig {
    /// Dense softmax attention (causal in LM mode).
    #[serde(deserialize_with = "no_fields")]
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
    /// Sparse Transformer, fixed pattern (Child et al. 2019).
    SparseFixed(SparseFixedConfig),
    /// Sparse Transformer, strided pattern (Child et al. 2019).
    SparseStrided(SparseStridedConfig),
    /// LogSparse Transformer (Li et al. 2019).
    Logsparse(LogsparseConfig),
    /// Axial Transformer (Ho et al. 2019): own row and column.
    Axial(AxialConfig),
    /// Sliding-window attention.
    Local(LocalConfig),
    /// Routing Transformer (Roy et al. 2020): balanced k-means clusters.
    Routing(RoutingConfig),
    /// Reformer (Kitaev et al. 2020): LSH attention, shared QK.
    Reformer(ReformerConfig),
    /// Performer (Choromanski et al. 2021): FAVOR+ random features.
    Performer(PerformerConfig),
    /// Linear Transformer (Katharopoulos et al. 2020): `elu + 1` features.
    LinearTransformer(LinearTransformerConfig),
    /// Linformer (Wang et al. 2020): low-rank projection; bidirectional only.
    Linformer(LinformerConfig),
    /// BigBird (Zaheer et al. 2020): window, global and random blocks; bidirectional only.
    #[serde(rename = "bigbird")]
    BigBird(BigBirdConfig),
    /// Longformer (Beltagy et al. 2020): window plus global tokens.
    Longformer(LongformerConfig),
    /// Sinkhorn Transformer (Tay et al. 2020): sorted blocks.
    Sinkhorn(SinkhornConfig),
    /// Synthesizer (Tay et al. 2021): dense or random synthesized weights.
    Synthesizer(SynthesizerConfig),
}

/// Serde ignores extra fields of a unit variant in an internally tagged
/// enum; this makes `kind = "vanilla"` with any other field an error too.
fn no_fields<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoFields {}
    NoFields::deserialize(d).map(|_| ())
}

impl Default for AttentionConfig {
    fn default() -> Self {
        AttentionConfig::Combiner {
            plan: Plan::default(),
            abstraction: AbstractionKind::default(),
        }
    }
}

/// A configuration that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttentionError {
    /// The attention has no causal form.
    #[error(
        "{attention} attention is bidirectional only and cannot run in LM (causal) mode; \
         use mode = \"mlm\" or a causal attention"
    )]
    BidirectionalOnly {
        /// Which attention.
        attention: &'static str,
    },
    /// A hyperparameter is out of range.
    #[error("{attention}: {message}")]
    Invalid {
        /// Which attention.
        attention: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl AttentionError {
    pub(crate) fn invalid(attention: &'static str, message: impl Into<String>) -> Self {
        AttentionError::Invalid {
            attention,
            message: message.into(),
        }
    }
}

impl AttentionConfig {
    /// A short name for tables and logs.
    pub fn name(&self) -> String {
        match self {
            AttentionConfig::Vanilla => "vanilla".into(),
            AttentionConfig::Combiner { plan, .. } => format!("combiner-{}", plan.name()),
            AttentionConfig::SparseFixed(_) => "sparse-fixed".into(),
            AttentionConfig::SparseStrided(_) => "sparse-strided".into(),
            AttentionConfig::Logsparse(_) => "logsparse".into(),
            AttentionConfig::Axial(_) => "axial".into(),
            AttentionConfig::Local(_) => "local".into(),
            AttentionConfig::Routing(_) => "routing".into(),
            AttentionConfig::Reformer(_) => "reformer".into(),
            AttentionConfig::Performer(_) => "performer".into(),
            AttentionConfig::LinearTransformer(_) => "linear-transformer".into(),
            AttentionConfig::Linformer(_) => "linformer".into(),
            AttentionConfig::BigBird(_) => "bigbird".into(),
            AttentionConfig::Longformer(_) => "longformer".into(),
            AttentionConfig::Sinkhorn(_) => "sinkhorn".into(),
            AttentionConfig::Synthesizer(c) => match c.synthesis {
                Synthesis::Dense => "synthesizer-dense".into(),
                Synthesis::Random => "synthesizer-random".into(),
            },
        }
    }

    /// Whether the attention has a causal (LM) form.
    pub fn supports(&self, mode: Mode) -> bool {
        mode == Mode::Mlm
            || !matches!(
                self,
                AttentionConfig::Linformer(_) | AttentionConfig::BigBird(_)
            )
    }

    /// Checks the hyperparameters for `mode` without building anything.
    pub fn validate(&self, mode: Mode) -> Result<(), AttentionError> {
        if !self.supports(mode) {
            return Err(AttentionError::BidirectionalOnly {
                attention: match self {
                    AttentionConfig::Linformer(_) => "linformer",
                    _ => "bigbird",
                },
            });
        }
        match self {
            AttentionConfig::Combiner { plan, abstraction }
                if plan.needs_learned_summary() && abstraction.is_learnable() =>
            {
                Err(AttentionError::invalid(
                    "combiner",
                    format!(
                        "abstraction {abstraction:?} has learned maps, but the learned row \
                         summary of `{}` replaces the pooled span keys; use max or mean",
                        plan.name()
                    ),
                ))
            }
            AttentionConfig::Vanilla
            | AttentionConfig::Combiner { .. }
            | AttentionConfig::Logsparse(_)
            | AttentionConfig::Axial(_)
            | AttentionConfig::LinearTransformer(_) => Ok(()),
            AttentionConfig::SparseFixed(c) => c.validate(),
            AttentionConfig::SparseStrided(c) => c.validate(),
            AttentionConfig::Local(c) => c.validate(),
            AttentionConfig::Routing(c) => c.validate(),
            AttentionConfig::Reformer(c) => c.validate(),
            AttentionConfig::Performer(c) => c.validate(),
            AttentionConfig::Linformer(c) => c.validate(mode),
            AttentionConfig::BigBird(c) => c.validate(mode),
            AttentionConfig::Longformer(c) => c.validate(),
            AttentionConfig::Sinkhorn(c) => c.validate(),
            AttentionConfig::Synthesizer(c) => c.validate(),
        }
    }

    /// One small configuration of every attention (Combiner with its Fixed
    /// plan; `combiner::Plan::all` lists the plans), with block sizes and
    /// lengths that do not divide typical test lengths: for tests and
    /// examples that sweep every attention.
    pub fn examples() -> Vec<AttentionConfig> {
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

    /// Builds the module, or says why this configuration cannot run in
    /// `mode` (bidirectional-only attentions in LM mode, bad hyperparameters,
    /// `d_model` not divisible by `n_heads`). No attention dropout; see
    /// [`AttentionConfig::try_init_with`].
    pub fn try_init<B: Backend>(
        &self,
        d_model: usize,
        n_heads: usize,
        mode: Mode,
        dropout: f64,
        device: &B::Device,
    ) -> Result<Attention<B>, AttentionError> {
        self.try_init_with(d_model, n_heads, mode, dropout, 0.0, device)
    }

    /// [`AttentionConfig::try_init`] with dropout `attention_dropout` on the
    /// attention probabilities (while training). Every attention that forms
    /// probabilities applies it: dense, the sparse patterns, Combiner (joint
    /// softmax and local expectations), Routing, Reformer, Linformer,
    /// Sinkhorn, Synthesizer. Performer and the Linear Transformer form no
    /// probabilities (kernel features), so it does not apply to them.
    pub fn try_init_with<B: Backend>(
        &self,
        d_model: usize,
        n_heads: usize,
        mode: Mode,
        dropout: f64,
        attention_dropout: f64,
        device: &B::Device,
    ) -> Result<Attention<B>, AttentionError> {
        util::check_heads(d_model, n_heads)?;
        self.validate(mode)?;
        if !(attention_dropout.is_finite() && (0.0..1.0).contains(&attention_dropout)) {
            return Err(AttentionError::invalid(
                "attention dropout",
                format!("attention_dropout = {attention_dropout}: expected a number in [0, 1)"),
            ));
        }
        let heads = || {
            MultiHead::new(d_model, n_heads, dropout, device)
                .with_attention_dropout(attention_dropout)
        };
        let sparse = |kind| Sparse::new(heads(), kind, mode);
        Ok(match self {
            AttentionConfig::Vanilla => Attention::Vanilla(Vanilla::new(heads(), mode)),
            AttentionConfig::Combiner { plan, abstraction } => Attention::Combiner(
                CombinerConfig::new(d_model, n_heads)
                    .with_plan(plan.clone())
                    .with_abstraction(*abstraction)
                    .with_mode(mode)
                    .with_dropout(dropout)
                    .with_attention_dropout(attention_dropout)
                    .init(device),
            ),
            AttentionConfig::SparseFixed(c) => {
                Attention::SparseFixed(sparse(SparseKind::Fixed(c.clone())))
            }
            AttentionConfig::SparseStrided(c) => {
                Attention::SparseStrided(sparse(SparseKind::Strided(c.clone())))
            }
            AttentionConfig::Logsparse(c) => {
                Attention::Logsparse(sparse(SparseKind::Logsparse(c.clone())))
            }
            AttentionConfig::Axial(c) => Attention::Axial(sparse(SparseKind::Axial(c.clone()))),
            AttentionConfig::Local(c) => Attention::Local(sparse(SparseKind::Local(c.clone()))),
            AttentionConfig::Longformer(c) => {
                Attention::Longformer(sparse(SparseKind::Longformer(c.clone())))
            }
            AttentionConfig::BigBird(c) => {
                Attention::BigBird(sparse(SparseKind::BigBird(c.clone())))
            }
            AttentionConfig::Routing(c) => {
                Attention::Routing(Routing::new(heads(), n_heads, c.clone(), mode, device))
            }
            AttentionConfig::Reformer(c) => {
                Attention::Reformer(Reformer::new(heads(), c.clone(), mode))
            }
            AttentionConfig::Performer(c) => {
                Attention::Performer(Performer::new(heads(), n_heads, c.clone(), mode, device))
            }
            AttentionConfig::LinearTransformer(_) => {
                Attention::LinearTransformer(LinearTransformer::new(heads(), mode))
            }
            AttentionConfig::Linformer(c) => {
                Attention::Linformer(Linformer::new(heads(), c, device))
            }
            AttentionConfig::Sinkhorn(c) => {
                Attention::Sinkhorn(Sinkhorn::new(heads(), c.clone(), mode))
            }
            AttentionConfig::Synthesizer(c) => {
                Attention::Synthesizer(Synthesizer::new(heads(), n_heads, c, mode, device))
            }
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    /// Where [`AttentionConfig::try_init`] returns an error, with its message:
    /// if `d_model` is not a multiple of `n_heads`, if a hyperparameter is out
    /// of range, or if a bidirectional-only attention (Linformer, BigBird) is
    /// asked for in LM mode.
    pub fn init<B: Backend>(
        &self,
        d_model: usize,
        n_heads: usize,
        mode: Mode,
        dropout: f64,
        device: &B::Device,
    ) -> Attention<B> {
        self.try_init(d_model, n_heads, mode, dropout, device)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`AttentionConfig::init`] with attention dropout
    /// ([`AttentionConfig::try_init_with`]).
    ///
    /// # Panics
    /// Where [`AttentionConfig::try_init_with`] returns an error.
    pub fn init_with<B: Backend>(
        &self,
        d_model: usize,
        n_heads: usize,
        mode: Mode,
        dropout: f64,
        attention_dropout: f64,
        device: &B::Device,
    ) -> Attention<B> {
        self.try_init_with(d_model, n_heads, mode, dropout, attention_dropout, device)
            .unwrap_or_else(|e| panic!("{e}"))
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
    /// Sparse Transformer, fixed pattern.
    SparseFixed(Sparse<B>),
    /// Sparse Transformer, strided pattern.
    SparseStrided(Sparse<B>),
    /// LogSparse Transformer.
    Logsparse(Sparse<B>),
    /// Axial Transformer.
    Axial(Sparse<B>),
    /// Sliding window.
    Local(Sparse<B>),
    /// Routing Transformer.
    Routing(Routing<B>),
    /// Reformer.
    Reformer(Reformer<B>),
    /// Performer.
    Performer(Performer<B>),
    /// Linear Transformer.
    LinearTransformer(LinearTransformer<B>),
    /// Linformer.
    Linformer(Linformer<B>),
    /// BigBird.
    BigBird(Sparse<B>),
    /// Longformer.
    Longformer(Sparse<B>),
    /// Sinkhorn Transformer.
    Sinkhorn(Sinkhorn<B>),
    /// Synthesizer.
    Synthesizer(Synthesizer<B>),
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Attention::Vanilla(a) => a.forward(x),
            Attention::Combiner(a) => a.forward(x),
            Attention::SparseFixed(a)
            | Attention::SparseStrided(a)
            | Attention::Logsparse(a)
            | Attention::Axial(a)
            | Attention::Local(a)
            | Attention::BigBird(a)
            | Attention::Longformer(a) => a.forward(x),
            Attention::Routing(a) => a.forward(x),
            Attention::Reformer(a) => a.forward(x),
            Attention::Performer(a) => a.forward(x),
            Attention::LinearTransformer(a) => a.forward(x),
            Attention::Linformer(a) => a.forward(x),
            Attention::Sinkhorn(a) => a.forward(x),
            Attention::Synthesizer(a) => a.forward(x),
        }
    }
}

impl<B: Backend> Attention<B> {
    /// Decay of the online k-means step of Combiner-Learnable (Routing uses its own `decay`).
    pub const LEARNABLE_DECAY: f64 = 0.999;

    /// True when the attention clusters tokens with online k-means (Routing,
    /// Combiner-Learnable): its centroids move during training.
    pub fn has_centroids(&self) -> bool {
        match self {
            Attention::Routing(_) => true,
            Attention::Combiner(a) => a.has_centroids(),
            _ => false,
        }
    }

    /// One online k-means step of the centroids towards the keys this layer
    /// computes for `x` (Routing Transformer's EMA update); other attentions
    /// are returned unchanged.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, the layer's input
    pub fn update_centroids(self, x: Tensor<B, 3>) -> Self {
        match self {
            Attention::Routing(a) => Attention::Routing(a.update_centroids(x)),
            Attention::Combiner(a) => {
                Attention::Combiner(a.update_centroids(x, Self::LEARNABLE_DECAY))
            }
            other => other,
        }
    }

    /// The k-means centroids, `[heads, clusters, d_head]`, where the attention has them.
    pub fn centroids(&self) -> Option<Tensor<B, 3>> {
        match self {
            Attention::Routing(a) => Some(a.centroids()),
            Attention::Combiner(a) => a.centroids(),
            _ => None,
        }
    }
}

/// Keeps `Plan` reachable for configs written against this crate.
pub use combiner::Plan as CombinerPlan;
