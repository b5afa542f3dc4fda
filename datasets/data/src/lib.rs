#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod archive;
pub mod batcher;
pub mod cache;
pub mod cifar;
pub mod error;
pub mod imagenet;
pub mod listops;
pub mod names;
pub mod pathfinder;
pub mod picture;
pub mod prepare;
pub mod retrieval;
pub mod stream;
pub mod text;

#[cfg(test)]
mod corruption_tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use archive::{sha256_file, verify_sha256, Checksums};

pub use batcher::{
    ClassificationBatch, ClassificationBatcher, LmBatch, LmBatcher, MlmBatch, MlmBatcher,
    PairBatch, PairBatcher, SequenceItem, TokenSequence,
};
pub use cache::{cache_dir, data_dir, shared_data_dir, DATA_DIR_ENV, SHARED_DATA_ENV};
pub use cifar::{Cifar10, CifarImage};
pub use error::{DataError, Result};
pub use imagenet::{Image64, ImageNet64};
pub use listops::{ListOps, ListOpsConfig, ListOpsExample};
pub use names::{DatasetName, Split};
pub use pathfinder::{Pathfinder, PathfinderConfig, PathfinderExample};
pub use prepare::{prepare, show_stats, verify, Report, Stats};
pub use stream::EpochStream;
