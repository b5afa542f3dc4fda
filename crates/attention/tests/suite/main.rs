//! The properties of issue 4, one test binary (one link) for the whole crate.

mod approx;
mod causal;
mod common;
mod config;
mod gradients;
mod patterns;
