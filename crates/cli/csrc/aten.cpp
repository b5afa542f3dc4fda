// ATen calls the tch backend's kernels need and tch does not wrap:
// FlashAttention-2's and cuDNN's attention forwards (their schemas return
// SymInts, which tch's generator skips), layer norm's fused backward and the fused AdamW step
// (PyTorch's multi-tensor form, one call for all parameters). Tensors cross as
// `at::Tensor*`, the handles tch uses; errors come back as text.

#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_clamp_min.h>
#include <ATen/ops/_foreach_copy.h>
#include <ATen/ops/_foreach_div.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention.h>
#include <ATen/ops/_scaled_dot_product_flash_attention.h>
#include <ATen/ops/native_layer_norm_backward.h>

#include <array>
#include <optional>
#include <vector>

#include <cstddef>
#include <cstdio>
#include <exception>

// The outputs of a fused attention forward its backward needs (FlashAttention
// and cuDNN return them at the same places): output, log-sum-exp, the
// cumulative sequence lengths, and the random-number state (seed, offset).
template <class Run>
static int attention_forward(Run run, at::Tensor **out, char *err,
                             std::size_t err_len) {
  try {
    auto r = run();
    out[0] = new at::Tensor(std::get<0>(r));
    out[1] = new at::Tensor(std::get<1>(r));
    out[2] = new at::Tensor(std::get<2>(r));
    out[3] = new at::Tensor(std::get<3>(r));
    out[4] = new at::Tensor(std::get<6>(r));
    out[5] = new at::Tensor(std::get<7>(r));
    return 0;
  } catch (const std::exception &e) {
    std::snprintf(err, err_len, "%s", e.what());
    return 1;
  }
}

// FlashAttention-2's forward (no mask, or the causal one): six new handles
// in `out` (see `attention_forward`).
extern "C" int combiner_flash_forward(const at::Tensor *q, const at::Tensor *k,
                                      const at::Tensor *v, int causal,
                                      double scale, at::Tensor **out,
                                      char *err, std::size_t err_len) {
  return attention_forward(
      [&] {
        return at::_scaled_dot_product_flash_attention(*q, *k, *v, 0.0,
                                                       causal != 0, false,
                                                       scale);
      },
      out, err, err_len);
}

// cuDNN's fused attention forward (no mask, or the causal one), its
// log-sum-exp [B, H, M, 1] (f32): six new handles in `out`.
extern "C" int combiner_cudnn_forward(const at::Tensor *q, const at::Tensor *k,
                                      const at::Tensor *v, int causal,
                                      double scale, at::Tensor **out,
                                      char *err, std::size_t err_len) {
  return attention_forward(
      [&] {
        return at::_scaled_dot_product_cudnn_attention(
            *q, *k, *v, std::nullopt, true, 0.0, causal != 0, false, scale);
      },
      out, err, err_len);
}

extern "C" int combiner_layer_norm_backward(
    const at::Tensor *grad, const at::Tensor *x, int64_t d,
    const at::Tensor *mean, const at::Tensor *rstd, const at::Tensor *gamma,
    const at::Tensor *beta, at::Tensor **dx, at::Tensor **dgamma,
    at::Tensor **dbeta, char *err, std::size_t err_len) {
  try {
    std::array<bool, 3> mask = {true, true, beta != nullptr};
    std::optional<at::Tensor> b;
    if (beta != nullptr) {
      b = *beta;
    }
    auto r = at::native_layer_norm_backward(*grad, *x, {d}, *mean, *rstd,
                                            *gamma, b, mask);
    *dx = new at::Tensor(std::get<0>(r));
    *dgamma = new at::Tensor(std::get<1>(r));
    *dbeta = new at::Tensor(std::get<2>(r));
    return 0;
  } catch (const std::exception &e) {
    std::snprintf(err, err_len, "%s", e.what());
    return 1;
  }
}

// One AdamW step of `n` parameters at once, PyTorch's multi-tensor form:
// `params`, `grads`, `exp_avgs`, `exp_avg_sqs` and `steps` hold `n` handles
// each (`steps[i]`: t of parameter i as a one-element f32 tensor; all on one
// device and of one dtype). `copy[4 i + j]` marks tensor i of list j
// (param, grad, exp_avg, exp_avg_sq) as shared elsewhere: it is copied
// first, in one multi-tensor copy, and the step changes the copy. With
// `clip > 0` each gradient is divided by max(1, |g| / clip) first (its own
// norm). `out[3 i ..]` receive new handles of the updated param, exp_avg
// and exp_avg_sq of parameter i.
extern "C" int combiner_fused_adamw_many(
    at::Tensor *const *params, at::Tensor *const *grads,
    at::Tensor *const *exp_avgs, at::Tensor *const *exp_avg_sqs,
    const at::Tensor *const *steps, const unsigned char *copy, int64_t n,
    double lr, double beta1, double beta2, double weight_decay, double eps,
    double clip, at::Tensor **out, char *err, std::size_t err_len) {
  try {
    std::array<std::vector<at::Tensor>, 4> lists;
    std::vector<at::Tensor> src, dst, step;
    std::array<at::Tensor *const *, 4> ins = {params, grads, exp_avgs,
                                              exp_avg_sqs};
    for (int64_t i = 0; i < n; ++i) {
      for (int j = 0; j < 4; ++j) {
        at::Tensor t = *ins[j][i];
        if (copy[4 * i + j] != 0) {
          at::Tensor c = at::empty_like(t);
          src.push_back(t);
          dst.push_back(c);
          t = c;
        }
        lists[j].push_back(t);
      }
      step.push_back(*steps[i]);
    }
    if (!src.empty()) {
      at::_foreach_copy_(dst, src);
    }
    if (clip > 0) {
      auto scale = at::_foreach_norm(lists[1], 2);
      at::_foreach_div_(scale, clip);
      at::_foreach_clamp_min_(scale, 1.0);
      at::_foreach_div_(lists[1], scale);
    }
    at::_fused_adamw_(lists[0], lists[1], lists[2], lists[3], {}, step, lr,
                      beta1, beta2, weight_decay, eps, false, false,
                      std::nullopt, std::nullopt);
    for (int64_t i = 0; i < n; ++i) {
      out[3 * i] = new at::Tensor(lists[0][i]);
      out[3 * i + 1] = new at::Tensor(lists[2][i]);
      out[3 * i + 2] = new at::Tensor(lists[3][i]);
    }
    return 0;
  } catch (const std::exception &e) {
    std::snprintf(err, err_len, "%s", e.what());
    return 1;
  }
}
