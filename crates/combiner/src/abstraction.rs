//! Span abstractions `k_Omega`, `q_Omega` (paper section 3.2): max pooling
//! (default, parameter-free), mean pooling, or DeepSets `phi(pool(psi(x)))`.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

/// Which abstraction summarizes a span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbstractionKind {
    /// Max pooling over the span (the paper's default).
    #[default]
    Max,
    /// Mean pooling over the span.
    Mean,
    /// DeepSets with max pooling: `phi(max(psi(x)))`, learnable.
    DeepSetsMax,
    /// DeepSets with mean pooling: `phi(mean(psi(x)))`, learnable.
    DeepSetsMean,
}

impl AbstractionKind {
    /// All abstractions.
    pub const ALL: [AbstractionKind; 4] = [
        AbstractionKind::Max,
        AbstractionKind::Mean,
        AbstractionKind::DeepSetsMax,
        AbstractionKind::DeepSetsMean,
    ];

    /// The pooling used inside the abstraction.
    pub fn pool(self) -> Pool {
        match self {
            AbstractionKind::Max | AbstractionKind::DeepSetsMax => Pool::Max,
            AbstractionKind::Mean | AbstractionKind::DeepSetsMean => Pool::Mean,
        }
    }

    /// Whether the abstraction has parameters.
    pub fn is_learnable(self) -> bool {
        matches!(
            self,
            AbstractionKind::DeepSetsMax | AbstractionKind::DeepSetsMean
        )
    }

    /// Builds the module for heads of width `d_head`.
    pub fn init<B: Backend>(self, d_head: usize, device: &B::Device) -> Abstraction<B> {
        self.init_with(d_head, true, device)
    }

    /// Builds the module; `pooled_queries = false` leaves out the query-side
    /// DeepSets maps for plans whose spans are all queried by tokens
    /// (axial row-major), so that no parameter goes unused.
    pub fn init_with<B: Backend>(
        self,
        d_head: usize,
        pooled_queries: bool,
        device: &B::Device,
    ) -> Abstraction<B> {
        Abstraction {
            pool: self.pool(),
            deepsets: self
                .is_learnable()
                .then(|| DeepSets::new(d_head, pooled_queries, device)),
        }
    }
}

impl std::str::FromStr for AbstractionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "max" => Ok(Self::Max),
            "mean" => Ok(Self::Mean),
            "deepsets-max" | "deepsets" => Ok(Self::DeepSetsMax),
            "deepsets-mean" => Ok(Self::DeepSetsMean),
            _ => Err(format!(
                "unknown abstraction `{s}`: expected max, mean, deepsets-max or deepsets-mean"
            )),
        }
    }
}

/// The pooling reduction of an abstraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pool {
    /// Elementwise max.
    Max,
    /// Elementwise mean.
    Mean,
}

/// DeepSets parameters, separate for keys and queries.
#[derive(Module, Debug)]
pub struct DeepSets<B: Backend> {
    psi_k: Linear<B>,
    phi_k: Linear<B>,
    psi_q: Option<Linear<B>>,
    phi_q: Option<Linear<B>>,
}

impl<B: Backend> DeepSets<B> {
    fn new(d: usize, queries: bool, device: &B::Device) -> Self {
        let lin = || LinearConfig::new(d, d).init(device);
        DeepSets {
            psi_k: lin(),
            phi_k: lin(),
            psi_q: queries.then(lin),
            phi_q: queries.then(lin),
        }
    }
}

/// A span abstraction module. Pooling itself happens where the span
/// structure is known (in the executor and the oracle); this module holds
/// the per-token map `psi` before pooling and the map `phi` after it.
#[derive(Module, Debug)]
pub struct Abstraction<B: Backend> {
    #[module(skip)]
    pool: Pool,
    deepsets: Option<DeepSets<B>>,
}

impl<B: Backend> Abstraction<B> {
    /// The pooling reduction.
    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// `psi` for keys, applied per token before pooling (identity without DeepSets).
    pub fn pre_k<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match &self.deepsets {
            Some(ds) => relu(ds.psi_k.forward(x)),
            None => x,
        }
    }

    /// `psi` for queries.
    pub fn pre_q<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.deepsets.as_ref().and_then(|ds| ds.psi_q.as_ref()) {
            Some(psi) => relu(psi.forward(x)),
            None => x,
        }
    }

    /// `phi` for keys, applied to pooled summaries.
    pub fn post_k<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match &self.deepsets {
            Some(ds) => ds.phi_k.forward(x),
            None => x,
        }
    }

    /// `phi` for queries.
    pub fn post_q<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.deepsets.as_ref().and_then(|ds| ds.phi_q.as_ref()) {
            Some(phi) => phi.forward(x),
            None => x,
        }
    }
}
