//! The task layer's integration tests, in one binary (one link of burn
//! instead of one per file).

mod kmeans;
mod tasks;
