//! Linear (kernelized) attention shared by the Linear Transformer and the
//! Performer: `out_i = phi(q_i) S_i / phi(q_i) z_i` with `S = sum phi(k_j) v_j^T`
//! and `z = sum phi(k_j)` over the support of `i`.
//!
//! The causal form runs in chunks of [`CHUNK`] positions: a prefix sum of
//! per-chunk states carries everything before the chunk, and the masked
//! quadratic form handles the chunk itself. Memory is `O(L/C * m * d + L * C)`
//! instead of the `O(L * m * d)` of a per-position prefix sum.

use burn::prelude::*;
use combiner::Mode;

/// Chunk length of the causal form.
pub const CHUNK: usize = 64;

/// Guards the normalizer of padding rows (all-zero features).
const TINY: f64 = 1e-20;

/// Kernelized attention from feature maps.
///
/// # Shapes
/// - `fq`, `fk`: `[batch, heads, seq, features]`, non-negative
/// - `v`: `[batch, heads, seq, d_head]`
/// - output: `[batch, heads, seq, d_head]`
pub fn kernel_attention<B: Backend>(
    fq: Tensor<B, 4>,
    fk: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mode: Mode,
) -> Tensor<B, 4> {
    match mode {
        Mode::Mlm => {
            let kv = fk.clone().swap_dims(2, 3).matmul(v); // [b,h,m,d]
            let z = fk.sum_dim(2).swap_dims(2, 3); // [b,h,m,1]
            let num = fq.clone().matmul(kv);
            let den = fq.matmul(z).clamp_min(TINY);
            num / den
        }
        Mode::Lm => causal_chunked(fq, fk, v, CHUNK),
    }
}

fn causal_chunked<B: Backend>(
    fq: Tensor<B, 4>,
    fk: Tensor<B, 4>,
    v: Tensor<B, 4>,
    chunk: usize,
) -> Tensor<B, 4> {
    let [b, h, len, m] = fq.dims();
    let d = v.dims()[3];
    let device = fq.device();
    let c = chunk.min(len).max(1);
    let n = len.div_ceil(c);
    let pad = |x: Tensor<B, 4>| {
        let f = x.dims()[3];
        if n * c == len {
            x
        } else {
            // zero rows add nothing to any state and are cut off at the end
            let zeros = Tensor::zeros([b, h, n * c - len, f], (&device, x.dtype()));
            Tensor::cat(vec![x, zeros], 2)
        }
    };
    let fq = pad(fq).reshape([b, h, n, c, m]);
    let fk = pad(fk).reshape([b, h, n, c, m]);
    let v = pad(v).reshape([b, h, n, c, d]);
    // state of each chunk, then exclusive prefix over chunks
    let s = fk.clone().swap_dims(3, 4).matmul(v.clone()); // [b,h,n,m,d]
    let z = fk.clone().sum_dim(3); // [b,h,n,1,m]
    let s_prev = s.clone().cumsum(2) - s;
    let z_prev = z.clone().cumsum(2) - z;
    // inside the chunk: lower-triangular quadratic form
    let future = Tensor::<B, 2, Bool>::tril_mask([c, c], 0, &device)
        .reshape([1, 1, 1, c, c])
        .expand([b, h, n, c, c]);
    let a = fq.clone().matmul(fk.swap_dims(3, 4)).mask_fill(future, 0.0); // [b,h,n,c,c]
    let num = fq.clone().matmul(s_prev) + a.clone().matmul(v);
    let den = (fq * z_prev).sum_dim(4) + a.sum_dim(4); // [b,h,n,c,1]
    (num / den.clamp_min(TINY))
        .reshape([b, h, n * c, d])
        .narrow(2, 0, len)
}

/// The quadratic form of kernelized attention, `(A V) / (A 1)` with
/// `A = phi(Q) phi(K)^T` (lower-triangular in LM): the reference the linear
/// forms are tested against.
///
/// # Shapes
/// - as [`kernel_attention`]
pub fn kernel_attention_quadratic<B: Backend>(
    fq: Tensor<B, 4>,
    fk: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mode: Mode,
) -> Tensor<B, 4> {
    let [b, h, len, _] = fq.dims();
    let a = fq.matmul(fk.swap_dims(2, 3));
    let a = match mode {
        Mode::Lm => a.mask_fill(
            Tensor::<B, 2, Bool>::tril_mask([len, len], 0, &v.device())
                .unsqueeze::<4>()
                .expand([b, h, len, len]),
            0.0,
        ),
        Mode::Mlm => a,
    };
    let den = a.clone().sum_dim(3).clamp_min(TINY);
    a.matmul(v) / den
}
