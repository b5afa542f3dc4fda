//! The combiner crate's integration tests, in one binary (one link of burn
//! instead of one per file). `gradcheck.rs` stays apart: it switches the CPU
//! device to f64, a process-wide setting.

mod causality;
mod common;
mod config;
mod extension;
mod gradients;
mod learned;
mod memory;
mod oracle;
mod verifier;
