// Fused cross-entropy on the CPU: rows in parallel (AVX-512 row kernels where available and
// ctx.use_simd, else the portable loop), per-row losses summed in row order.

#include "kernels/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/cross_entropy_kernels.h"
#include "kernels/cpu/ops_common.h"

namespace dsv3::kernels {

double CrossEntropyForwardBackward(const CpuContext& ctx, const float* logits,
                                   const int32_t* targets, int64_t tokens, int64_t vocab,
                                   const CrossEntropyOptions& options, float* dlogits) {
  DSV3_KERNEL_CHECK(tokens >= 0 && vocab >= 1 && options.count >= 0,
                    "CrossEntropyForwardBackward: tokens=%lld and count=%lld must be >= 0, "
                    "vocab=%lld >= 1",
                    static_cast<long long>(tokens), static_cast<long long>(options.count),
                    static_cast<long long>(vocab));
  if (tokens == 0) return 0.0;
  DSV3_KERNEL_CHECK(logits != nullptr && targets != nullptr,
                    "CrossEntropyForwardBackward: null logits or targets");
  const int64_t n = tokens * vocab;
  DSV3_KERNEL_CHECK(
      dlogits == nullptr || dlogits == logits || !internal::ViewsOverlap(dlogits, n, logits, n),
      "CrossEntropyForwardBackward: dlogits overlaps logits without being it");
  DSV3_KERNEL_CHECK(dlogits == nullptr || !internal::Overlaps(dlogits, n * 4, targets, tokens * 4),
                    "CrossEntropyForwardBackward: dlogits overlaps targets");
  int64_t counted = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t y = targets[t];
    DSV3_KERNEL_CHECK(y == options.ignore_index || (y >= 0 && y < vocab),
                      "CrossEntropyForwardBackward: targets[%lld]=%d outside [0, vocab=%lld) and "
                      "not ignore_index=%d",
                      static_cast<long long>(t), y, static_cast<long long>(vocab),
                      options.ignore_index);
    if (y != options.ignore_index) ++counted;
  }
  const int64_t count = options.count > 0 ? options.count : counted;
  const float grad_factor =
      count > 0 ? static_cast<float>(options.grad_scale / static_cast<double>(count)) : 0.0f;

  const internal::CrossEntropyRowKernels* simd =
      ctx.use_simd ? internal::Avx512CrossEntropyRowKernels() : nullptr;
  std::vector<double> row_loss(tokens, 0.0);
  ParallelFor(ctx, tokens, internal::RowGrain(vocab), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* x = logits + t * vocab;
      float* d = dlogits == nullptr ? nullptr : dlogits + t * vocab;
      const int32_t y = targets[t];
      if (y == options.ignore_index || count == 0) {
        if (d != nullptr) std::memset(d, 0, vocab * sizeof(float));
        continue;
      }
      const float xy = x[y];  // Read before an in-place gradient overwrites the row.
      if (simd != nullptr) {
        float m = 0;
        const double sum = simd->max_exp_sum(x, vocab, d, &m);
        if (d != nullptr) {
          const float inv_sum = static_cast<float>(1.0 / sum);
          const float p_y = d[y] * inv_sum;
          simd->scale(d, vocab, inv_sum, grad_factor);
          d[y] = (p_y - 1.0f) * grad_factor;
        }
        row_loss[t] = static_cast<double>(m) + std::log(sum) - static_cast<double>(xy);
        continue;
      }
      float m = x[0];
      for (int64_t j = 1; j < vocab; ++j) m = std::max(m, x[j]);
      double sum = 0.0;
      if (d == nullptr) {
        for (int64_t j = 0; j < vocab; ++j) sum += static_cast<double>(std::exp(x[j] - m));
      } else {
        for (int64_t j = 0; j < vocab; ++j) {
          const float e = std::exp(x[j] - m);
          d[j] = e;
          sum += static_cast<double>(e);
        }
        const float inv_sum = static_cast<float>(1.0 / sum);
        const float p_y = d[y] * inv_sum;
        for (int64_t j = 0; j < vocab; ++j) d[j] = (d[j] * inv_sum) * grad_factor;
        d[y] = (p_y - 1.0f) * grad_factor;
      }
      row_loss[t] = static_cast<double>(m) + std::log(sum) - static_cast<double>(xy);
    }
  });
  if (count == 0) return 0.0;
  double total = 0.0;
  for (int64_t t = 0; t < tokens; ++t) total += row_loss[t];
  return total / static_cast<double>(count);
}

}  // namespace dsv3::kernels
