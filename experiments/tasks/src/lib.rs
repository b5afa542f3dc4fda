//! The task layer of the Combiner zoo: run configs (`[task]`, `[trunk]`,
//! `[train]`, presets), one file per task of the paper, and one generic
//! path that trains, evaluates and samples every model family on any burn
//! backend. The `combiner` binary only parses, picks a backend and calls
//! [`run::train`], [`run::eval`] or [`run::sample`].
//!
//! | task | family | metric | paper |
//! |---|---|---|---|
//! | `cifar10`, `imagenet64` | image AR | bits/dim | Table 1 |
//! | `lm` | causal LM | perplexity | Tables 2, 3 |
//! | `mlm` | masked LM | masked perplexity | Table 6 |
//! | `listops`, `lra_text`, `lra_image`, `pathfinder` | classifier | accuracy | Table 5 |
//! | `lra_retrieval` | dual encoder | accuracy | Table 5 |
#![warn(missing_docs)]

pub mod config;
pub mod family;
pub mod plot;
pub mod run;
pub mod settings;
pub mod table;
pub mod tasks;
pub mod text;

pub use combiner_nn::precision::Precision;
pub use config::{load_config, run_config, RunConfig, TrainSettings};
pub use family::{Evaluation, Prepared, SampleRequest};
pub use tasks::{Task, TaskSpec};
