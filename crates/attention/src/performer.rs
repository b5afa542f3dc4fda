//! Performer (Choromanski et al. 2021, "Rethinking Attention with
//! Performers"): FAVOR+, softmax attention estimated with positive
//! orthogonal random features.
//!
//! `exp(q.k / sqrt(d)) = E_w[phi(q) phi(k)]` with
//! `phi(x) = exp(w.x - |x|^2 / 2) / sqrt(m)` on `x` scaled by `d^(-1/4)` and
//! `w ~ N(0, I)`; blocks of `w` are orthogonalized, which lowers the
//! variance. The linear-time attention, and the causal prefix-sum form,
//! are in [`crate::kernel`]. Features are a non-trainable parameter, drawn
//! from `seed` at init and redrawn on demand with [`Performer::redraw`].

use burn::module::Param;
use burn::prelude::*;
use combiner::{Mode, MultiHead};
use serde::{Deserialize, Serialize};

use crate::kernel::kernel_attention;
use crate::util::SplitMix;
use crate::AttentionError;

/// Hyperparameters of FAVOR+.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerformerConfig {
    /// Random features `m`; `None` = `ceil(d_head * ln(d_head))` (the paper's choice).
    pub features: Option<usize>,
    /// Orthogonal random features (FAVOR+) instead of i.i.d. Gaussian ones.
    pub orthogonal: bool,
    /// Seed of the first draw.
    pub seed: u64,
}

impl Default for PerformerConfig {
    fn default() -> Self {
        PerformerConfig {
            features: None,
            orthogonal: true,
            seed: 0,
        }
    }
}

impl PerformerConfig {
    pub(crate) fn validate(&self) -> Result<(), AttentionError> {
        if self.features == Some(0) {
            return Err(AttentionError::invalid(
                "performer",
                "features must be at least 1",
            ));
        }
        Ok(())
    }

    /// Features used for heads of width `d_head`.
    pub fn features_for(&self, d_head: usize) -> usize {
        self.features
            .unwrap_or_else(|| ((d_head as f64) * (d_head as f64).ln()).ceil().max(1.0) as usize)
    }
}

/// Random feature directions `[heads, m, d]`: Gaussian rows, orthogonalized
/// in blocks of `d` (Gram-Schmidt) and rescaled to Gaussian norms when
/// `orthogonal`.
pub fn random_features<B: Backend>(
    heads: usize,
    m: usize,
    d: usize,
    orthogonal: bool,
    seed: u64,
    device: &B::Device,
) -> Tensor<B, 3> {
    let mut rng = SplitMix::new(seed);
    let mut out = Vec::with_capacity(heads * m * d);
    for _ in 0..heads {
        let mut rows: Vec<Vec<f64>> = Vec::with_capacity(m);
        while rows.len() < m {
            let block: Vec<Vec<f64>> = (0..d)
                .map(|_| (0..d).map(|_| rng.normal()).collect())
                .collect();
            if !orthogonal {
                rows.extend(block);
                continue;
            }
            let mut basis: Vec<Vec<f64>> = Vec::with_capacity(d);
            for mut r in block {
                for b in &basis {
                    let dot: f64 = r.iter().zip(b).map(|(x, y)| x * y).sum();
                    r.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
                }
                let n = r.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                r.iter_mut().for_each(|x| *x /= n);
                basis.push(r);
            }
            for mut r in basis {
                // a chi-distributed norm keeps each row's marginal N(0, I)
                let norm = (0..d).map(|_| rng.normal().powi(2)).sum::<f64>().sqrt();
                r.iter_mut().for_each(|x| *x *= norm);
                rows.push(r);
            }
        }
        rows.truncate(m);
        out.extend(rows.into_iter().flatten().map(|x| x as f32));
    }
    Tensor::from_data(TensorData::new(out, [heads, m, d]), device)
}

/// Positive random features `phi(x)` of queries (`is_query`) or keys.
///
/// The stabilizing shift (per row for queries, per sequence for keys) is a
/// constant factor that cancels between numerator and normalizer.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, d]`, `w`: `[heads, m, d]` -> `[batch, heads, seq, m]`
pub fn favor_features<B: Backend>(
    x: Tensor<B, 4>,
    w: Tensor<B, 3>,
    is_query: bool,
) -> Tensor<B, 4> {
    let [b, h, _, d] = x.dims();
    let m = w.dims()[1];
    let x = x.mul_scalar((d as f64).powf(-0.25));
    let w = w.unsqueeze::<4>().expand([b, h, m, d]);
    let sq = x.clone().powi_scalar(2).sum_dim(3).mul_scalar(0.5);
    let logits = x.matmul(w.swap_dims(2, 3)) - sq;
    let shift = if is_query {
        logits.clone().detach().max_dim(3)
    } else {
        logits.clone().detach().max_dim(3).max_dim(2)
    };
    (logits - shift).exp().mul_scalar(1.0 / (m as f64).sqrt())
}

/// FAVOR+ attention with feature directions `w: [heads, m, d_head]`.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d_head]`
/// - output: `[batch, heads, seq, d_head]`
pub fn favor_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    w: Tensor<B, 3>,
    mode: Mode,
) -> Tensor<B, 4> {
    let fq = favor_features(q, w.clone(), true);
    let fk = favor_features(k, w, false);
    kernel_attention(fq, fk, v, mode)
}

/// Multi-head Performer attention.
#[derive(Module, Debug)]
pub struct Performer<B: Backend> {
    heads: MultiHead<B>,
    projection: Param<Tensor<B, 3>>,
    #[module(skip)]
    config: PerformerConfig,
    #[module(skip)]
    mode: Mode,
}

impl<B: Backend> Performer<B> {
    pub(crate) fn new(
        heads: MultiHead<B>,
        n_heads: usize,
        config: PerformerConfig,
        mode: Mode,
        device: &B::Device,
    ) -> Self {
        let d = heads.d_head();
        let w = random_features(
            n_heads,
            config.features_for(d),
            d,
            config.orthogonal,
            config.seed,
            device,
        );
        Performer {
            heads,
            projection: Param::from_tensor(w).set_require_grad(false),
            config,
            mode,
        }
    }

    /// The same module with features drawn afresh from `seed` (the paper
    /// redraws them periodically during training).
    pub fn redraw(mut self, seed: u64) -> Self {
        let [h, m, d] = self.projection.val().dims();
        let device = self.projection.val().device();
        let w = random_features(h, m, d, self.config.orthogonal, seed, &device);
        self.projection = Param::from_tensor(w).set_require_grad(false);
        self
    }

    /// The feature directions `[heads, m, d_head]`.
    pub fn projection(&self) -> Tensor<B, 3> {
        self.projection.val()
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.heads.forward_with(x, |q, k, v| {
            let projection = combiner::to_dtype(self.projection.val(), q.dtype());
            favor_attention(q, k, v, projection, self.mode)
        })
    }
}
