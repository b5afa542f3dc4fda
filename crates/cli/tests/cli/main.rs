//! End-to-end tests of the `combiner` binary, in one test binary.

mod common;
mod data;
mod faults;
mod plan;
mod tasks;
mod train;
