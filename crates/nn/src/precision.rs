//! Mixed precision: f32 master weights, low-precision matmuls.
//!
//! burn 0.21 has no autocast, so mixed precision is built from casts:
//!
//! - [`to_compute`] makes a per-step copy of a model whose [`Linear`] layers
//!   inside transformer [`Block`](crate::Block)s, and its output head (the
//!   `Linear` field named `head`), hold their weights in the compute dtype
//!   (bf16 or f16), as fresh leaves of the autodiff graph. Embeddings,
//!   layer norms, positional tables and centroids stay f32.
//! - A block reads its compute dtype from its weights: layer norms run in
//!   f32 on the f32 residual stream, attention and MLP run in the compute
//!   dtype, and their outputs are cast back in the residual add. The head's
//!   product runs in the compute dtype and its logits are cast back to f32
//!   ([`output_head`](crate::output_head)).
//!   Attention softmax runs in the compute dtype with its row sums
//!   accumulated in f32 (`combiner::softmax_f32`).
//! - The copy's gradients come back in the compute dtype;
//!   [`grads_to_master`] casts each to its master weight's dtype before the
//!   optimizer (f32 Adam state) applies it. The loss is computed in f32.
//!
//! [`Linear`]: burn::nn::Linear

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

pub use combiner::to_dtype;

/// Numeric precision of training (`[train] precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 matmuls and attention (softmax row sums accumulated in f32),
    /// f32 master weights, norms and loss.
    Bf16,
    /// f16 matmuls and attention, as `bf16` otherwise.
    F16,
}

impl Precision {
    /// The dtype of matmuls and attention; `None` for full f32.
    pub fn compute_dtype(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::F16 => Some(FloatDType::F16),
        }
    }

    /// The name used in configs: `f32`, `bf16`, `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

/// Casts the parameters of `Linear` layers inside transformer blocks and
/// of the output head.
struct ComputeCopy {
    dtype: FloatDType,
    blocks: usize,
    linears: usize,
    head: usize,
}

impl<B: Backend> ModuleMapper<B> for ComputeCopy {
    // burn names the field entered and the struct that holds it: `weight`
    // of `Struct:Linear`, `head` of the model's struct
    fn enter_module(&mut self, name: &str, container_type: &str) {
        match container_type {
            "Struct:Block" => self.blocks += 1,
            "Struct:Linear" => self.linears += 1,
            _ => {}
        }
        if name == "head" {
            self.head += 1;
        }
    }

    fn exit_module(&mut self, name: &str, container_type: &str) {
        match container_type {
            "Struct:Block" => self.blocks -= 1,
            "Struct:Linear" => self.linears -= 1,
            _ => {}
        }
        if name == "head" {
            self.head -= 1;
        }
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if (self.blocks == 0 && self.head == 0) || self.linears == 0 {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let grad = tensor.is_require_grad();
        let cast = tensor.cast(self.dtype).detach();
        let cast = if grad { cast.require_grad() } else { cast };
        Param::from_mapped_value(id, cast, mapper)
    }
}

/// A copy of `model` for one step in `dtype`: the `Linear` weights of its
/// transformer blocks are cast to `dtype` as new leaves with the same
/// parameter ids, so the copy's gradients land on the master's ids
/// (see [`grads_to_master`]). `None` returns `model` as it is.
pub fn to_compute<B: Backend, M: Module<B>>(model: M, dtype: Option<FloatDType>) -> M {
    match dtype {
        None => model,
        Some(dtype) => model.map(&mut ComputeCopy {
            dtype,
            blocks: 0,
            linears: 0,
            head: 0,
        }),
    }
}

/// Casts every gradient in `grads` to the dtype of `master`'s parameter of
/// the same id (compute-dtype gradients of a [`to_compute`] copy become
/// f32 gradients of the f32 master weights).
pub fn grads_to_master<B: AutodiffBackend, M: AutodiffModule<B>>(
    master: &M,
    grads: &mut GradientsParams,
) {
    struct Cast<'a> {
        grads: &'a mut GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Cast<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let dtype = param.val().dtype();
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads
                    .register::<B::InnerBackend, D>(param.id, to_dtype(g, dtype));
            }
        }
    }
    master.visit(&mut Cast { grads });
}
