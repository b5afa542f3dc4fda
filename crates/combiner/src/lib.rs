//! Combiner attention (Ren et al., *Combiner: Full Attention Transformer with
//! Sparse Computation Cost*, NeurIPS 2021) for burn, generic over `B: Backend`.
//!
//! - [`Plan`]: the factorization plans of the paper, compiled per length to a
//!   [`Layout`] (plain index data).
//! - [`combiner_attention`]: the efficient attention on per-head tensors, with
//!   one joint softmax over direct and span logits (eq. 9).
//! - [`oracle`]: the dense `O(L^2)` reference `q(j|i)` (eq. 8).
//! - [`verify`]: full support, disjointness, causality and cost exponents.
//! - [`CombinerAttention`]: the multi-head module.
//! - [`LearnedRowSummary`]: the authors' learned span keys of Combiner-Axial
//!   row-major (`summary = "learned"`).
#![warn(missing_docs)]

pub mod abstraction;
pub mod attention;
pub mod dense;
pub mod exec;
mod gather;
pub mod kernel;
pub mod layout;
pub mod memo;
pub mod oracle;
pub mod plan;
pub mod rng;
pub mod row_summary;
pub mod verify;

pub use abstraction::{Abstraction, AbstractionKind, Pool};
pub use attention::{
    plan_attention, plan_attention_with, CombinerAttention, CombinerConfig, MultiHead, PlanInputs,
};
pub use dense::{dense_attention, dense_attention_with, masked_attention, masked_attention_with};
pub use exec::{
    combiner_attention, combiner_attention_on, combiner_attention_with, softmax_f32, to_dtype,
    LayoutTensors,
};
pub use layout::{Layout, Partition, SpanQuery, SpanSet, Term};
pub use memo::Memo;
pub use plan::{Grid, Mode, Plan, PlanError, RowSummary};
pub use rng::SplitMix;
pub use row_summary::LearnedRowSummary;
