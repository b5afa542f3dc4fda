//! ATen calls tch does not wrap (`csrc/aten.cpp`): FlashAttention-2's and
//! cuDNN's attention forwards (their backwards are tch's), layer norm's fused backward and the
//! fused AdamW step (PyTorch's multi-tensor form).

use std::ffi::{c_char, c_int, c_void, CStr};

use tch::Tensor as T;

extern "C" {
    fn combiner_flash_forward(
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        causal: c_int,
        scale: f64,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;

    fn combiner_cudnn_forward(
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        causal: c_int,
        scale: f64,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;

    #[allow(clippy::too_many_arguments)]
    fn combiner_layer_norm_backward(
        grad: *const c_void,
        x: *const c_void,
        d: i64,
        mean: *const c_void,
        rstd: *const c_void,
        gamma: *const c_void,
        beta: *const c_void,
        dx: *mut *mut c_void,
        dgamma: *mut *mut c_void,
        dbeta: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;

    #[allow(clippy::too_many_arguments)]
    fn combiner_fused_adamw_many(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        exp_avgs: *const *mut c_void,
        exp_avg_sqs: *const *mut c_void,
        steps: *const *const c_void,
        copy: *const u8,
        n: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        clip: f64,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

/// What the backward needs from a forward besides q, k, v, output and
/// log-sum-exp (FlashAttention's and cuDNN's alike).
#[derive(Debug)]
pub struct Saved {
    cum_q: T,
    cum_k: T,
    seed: T,
    offset: T,
}

impl Clone for Saved {
    fn clone(&self) -> Self {
        Saved {
            cum_q: self.cum_q.shallow_clone(),
            cum_k: self.cum_k.shallow_clone(),
            seed: self.seed.shallow_clone(),
            offset: self.offset.shallow_clone(),
        }
    }
}

type AttentionForward = unsafe extern "C" fn(
    *const c_void,
    *const c_void,
    *const c_void,
    c_int,
    f64,
    *mut *mut c_void,
    *mut c_char,
    usize,
) -> c_int;

/// Runs one of the C++ attention forwards: the output, the log-sum-exp as
/// the kernel returns it and what the backward needs; `Err` with
/// PyTorch's message where the kernel refuses the inputs.
fn attention_forward(
    run: AttentionForward,
    q: &T,
    k: &T,
    v: &T,
    causal: bool,
    scale: f64,
) -> Result<(T, T, Saved), String> {
    let mut ptrs = [std::ptr::null_mut::<c_void>(); 6];
    let mut err = [0 as c_char; 2048];
    // SAFETY: tch's tensors are `at::Tensor*` handles; the call only reads
    // them and, when it succeeds, returns six new handles, which `from_ptr`
    // takes over.
    let [out, lse, cum_q, cum_k, seed, offset] = unsafe {
        let rc = run(
            q.as_ptr() as *const c_void,
            k.as_ptr() as *const c_void,
            v.as_ptr() as *const c_void,
            c_int::from(causal),
            scale,
            ptrs.as_mut_ptr(),
            err.as_mut_ptr(),
            err.len(),
        );
        if rc != 0 {
            let msg = CStr::from_ptr(err.as_ptr()).to_string_lossy();
            return Err(format!("q {:?}, k {:?}: {msg}", q.size(), k.size()));
        }
        ptrs.map(|p| T::from_ptr(p as *mut _))
    };
    let saved = Saved {
        cum_q,
        cum_k,
        seed,
        offset,
    };
    Ok((out, lse, saved))
}

/// `softmax(scale q k^T) v` for `q: [B, H, M, K]`, `k, v: [B, H, N, K]`
/// (bf16 or f16 on CUDA, last dim contiguous), causal (`j <= i`, `M == N`)
/// or not: the output `[B, H, M, K]` (over `[B, M, H, K]` memory), the
/// log-sum-exp `[B, H, M]` (f32) and what the backward needs.
///
/// # Panics
/// With PyTorch's message where it refuses the inputs.
pub fn flash_forward(q: &T, k: &T, v: &T, causal: bool, scale: f64) -> (T, T, Saved) {
    attention_forward(combiner_flash_forward, q, k, v, causal, scale)
        .unwrap_or_else(|e| panic!("flash attention refused {e}"))
}

/// Gradients of q, k, v (`[B, H, ., K]`) given the output gradient, with
/// `out` and `lse` the softmax's output and log-sum-exp (a joint
/// softmax's, when the term is one block of it).
#[allow(clippy::too_many_arguments)]
pub fn flash_backward(
    grad: &T,
    q: &T,
    k: &T,
    v: &T,
    out: &T,
    lse: &T,
    saved: &Saved,
    causal: bool,
    scale: f64,
) -> (T, T, T) {
    let (m, n) = (q.size()[2], k.size()[2]);
    T::internal_scaled_dot_product_flash_attention_backward(
        grad,
        q,
        k,
        v,
        out,
        lse,
        &saved.cum_q,
        &saved.cum_k,
        m,
        n,
        0.0,
        causal,
        &saved.seed,
        &saved.offset,
        scale,
    )
}

/// cuDNN's fused attention, the contract of [`flash_forward`]: `q: [B, H,
/// M, K]`, `k, v: [B, H, N, K]` (bf16 or f16 on CUDA, last dim
/// contiguous), causal (`j <= i`, `M == N`) or not; the output (in the
/// memory order of `q`), the log-sum-exp `[B, H, M]` (f32) and what the
/// backward needs. `Err` with PyTorch's message where cuDNN refuses the
/// inputs (a cuDNN build without fused attention, an unsupported shape).
pub fn cudnn_forward(
    q: &T,
    k: &T,
    v: &T,
    causal: bool,
    scale: f64,
) -> Result<(T, T, Saved), String> {
    let (out, lse, saved) = attention_forward(combiner_cudnn_forward, q, k, v, causal, scale)
        .map_err(|e| format!("cuDNN attention refused {e}"))?;
    // [B, H, M, 1] -> [B, H, M]
    Ok((out, lse.squeeze_dim(-1), saved))
}

/// Gradients of q, k, v (`[B, H, ., K]`) from cuDNN's attention backward,
/// the contract of [`flash_backward`] (`lse: [B, H, M]`, f32); `Err` with
/// PyTorch's message where cuDNN refuses the inputs.
#[allow(clippy::too_many_arguments)]
pub fn cudnn_backward(
    grad: &T,
    q: &T,
    k: &T,
    v: &T,
    out: &T,
    lse: &T,
    saved: &Saved,
    causal: bool,
    scale: f64,
) -> Result<(T, T, T), String> {
    let (m, n) = (q.size()[2], k.size()[2]);
    // cuDNN's statistics layout: contiguous [B, H, M, 1]
    let lse = lse.contiguous().unsqueeze(-1);
    T::f_internal_scaled_dot_product_cudnn_attention_backward(
        grad,
        q,
        k,
        v,
        out,
        &lse,
        &saved.seed,
        &saved.offset,
        // no bias: an undefined tensor, as PyTorch's autograd passes
        &T::new(),
        &saved.cum_q,
        &saved.cum_k,
        m,
        n,
        0.0,
        causal,
        scale,
    )
    .map_err(|e| format!("cuDNN attention backward refused q {:?}: {e}", q.size()))
}

/// Gradients of layer norm over the last dim `d` of `x: [n, d]` (`mean`,
/// `rstd`: what `native_layer_norm` returned) with respect to `x`, `gamma`
/// and, when there is one, `beta`: PyTorch's fused backward.
///
/// # Panics
/// With PyTorch's message where it refuses the inputs.
pub fn layer_norm_backward(
    grad: &T,
    x: &T,
    mean: &T,
    rstd: &T,
    gamma: &T,
    beta: Option<&T>,
) -> (T, T, Option<T>) {
    let d = x.size()[1];
    let mut ptrs = [std::ptr::null_mut::<c_void>(); 3];
    let mut err = [0 as c_char; 2048];
    // SAFETY: as in `flash_forward`; `beta` may be null (no bias), and
    // then `dbeta` is an undefined tensor.
    let [dx, dgamma, dbeta] = unsafe {
        let [a, b, c] = &mut ptrs;
        let rc = combiner_layer_norm_backward(
            grad.as_ptr() as *const c_void,
            x.as_ptr() as *const c_void,
            d,
            mean.as_ptr() as *const c_void,
            rstd.as_ptr() as *const c_void,
            gamma.as_ptr() as *const c_void,
            beta.map_or(std::ptr::null(), |b| b.as_ptr() as *const c_void),
            a,
            b,
            c,
            err.as_mut_ptr(),
            err.len(),
        );
        if rc != 0 {
            let msg = CStr::from_ptr(err.as_ptr()).to_string_lossy();
            panic!("layer norm backward refused x {:?}: {msg}", x.size());
        }
        ptrs.map(|p| T::from_ptr(p as *mut _))
    };
    (dx, dgamma, beta.map(|_| dbeta))
}

/// The scalars of one fused AdamW step (PyTorch's `_fused_adamw_`).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f64,
    pub beta_1: f64,
    pub beta_2: f64,
    pub weight_decay: f64,
    pub epsilon: f64,
}

/// One parameter of [`fused_adamw_many`]: its tensors (dense, one dtype and
/// device with the others) and whether each is shared with other handles.
pub struct AdamWParam {
    pub param: T,
    pub grad: T,
    pub exp_avg: T,
    pub exp_avg_sq: T,
    /// The step number `t` as a one-element f32 tensor on the device.
    pub step: T,
    /// Param, grad, exp_avg, exp_avg_sq: copied before the step changes it.
    pub shared: [bool; 4],
}

/// One AdamW step of all of `params` in PyTorch's multi-tensor kernels
/// (the fused step over the lists, and with `clip` each gradient divided
/// by max(1, |g| / clip) first): the new `(param, exp_avg, exp_avg_sq)` of
/// each, which are the given tensors changed in place except where marked
/// shared (then copies, made in one multi-tensor copy first).
///
/// # Panics
/// With PyTorch's message where it refuses the inputs.
pub fn fused_adamw_many(params: &[AdamWParam], s: AdamW, clip: Option<f64>) -> Vec<[T; 3]> {
    let n = params.len();
    let ptrs = |f: fn(&AdamWParam) -> &T| -> Vec<*mut c_void> {
        params
            .iter()
            .map(|p| f(p).as_ptr() as *mut c_void)
            .collect()
    };
    let (p, g, m, v) = (
        ptrs(|x| &x.param),
        ptrs(|x| &x.grad),
        ptrs(|x| &x.exp_avg),
        ptrs(|x| &x.exp_avg_sq),
    );
    let steps: Vec<*const c_void> = params
        .iter()
        .map(|x| x.step.as_ptr() as *const c_void)
        .collect();
    let copy: Vec<u8> = params.iter().flat_map(|x| x.shared.map(u8::from)).collect();
    let mut out = vec![std::ptr::null_mut::<c_void>(); 3 * n];
    let mut err = [0 as c_char; 2048];
    // SAFETY: as in `flash_forward`; the call changes the unshared tensors
    // in place (PyTorch's own in-place kernels, on handles the caller
    // holds) and returns 3 n new handles, which `from_ptr` takes over.
    unsafe {
        let rc = combiner_fused_adamw_many(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            steps.as_ptr(),
            copy.as_ptr(),
            n as i64,
            s.lr,
            s.beta_1,
            s.beta_2,
            s.weight_decay,
            s.epsilon,
            clip.unwrap_or(0.0),
            out.as_mut_ptr(),
            err.as_mut_ptr(),
            err.len(),
        );
        if rc != 0 {
            let msg = CStr::from_ptr(err.as_ptr()).to_string_lossy();
            panic!("fused AdamW refused {n} parameters: {msg}");
        }
        out.chunks(3)
            .map(|c| [c[0], c[1], c[2]].map(|x| T::from_ptr(x as *mut _)))
            .collect()
    }
}
