// PyTorch's FlashAttention-2 forward for the tch backend's attention kernel.
//
// tch wraps the flash backward but not the forward (its schema returns
// SymInts, which tch's generator skips), so this one call goes through the
// ATen C++ API. Tensors cross as `at::Tensor*`, the handles tch uses.

#include <ATen/core/Tensor.h>
#include <ATen/ops/_scaled_dot_product_flash_attention.h>

#include <cstddef>
#include <cstdio>
#include <exception>

extern "C" int combiner_flash_forward(const at::Tensor *q, const at::Tensor *k,
                                      const at::Tensor *v, int causal,
                                      double scale, at::Tensor **out,
                                      at::Tensor **lse, at::Tensor **cum_q,
                                      at::Tensor **cum_k, at::Tensor **rng,
                                      at::Tensor **unused, char *err,
                                      std::size_t err_len) {
  try {
    auto r = at::_scaled_dot_product_flash_attention(*q, *k, *v, 0.0,
                                                     causal != 0, false, scale);
    *out = new at::Tensor(std::get<0>(r));
    *lse = new at::Tensor(std::get<1>(r));
    *cum_q = new at::Tensor(std::get<2>(r));
    *cum_k = new at::Tensor(std::get<3>(r));
    *rng = new at::Tensor(std::get<6>(r));
    *unused = new at::Tensor(std::get<7>(r));
    return 0;
  } catch (const std::exception &e) {
    std::snprintf(err, err_len, "%s", e.what());
    return 1;
  }
}
