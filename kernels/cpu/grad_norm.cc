// Sum of squares over many buffers: fixed blocks in parallel, partials added in order.

#include "kernels/cpu/grad_norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/check.h"

namespace dsv3::kernels {

double SumOfSquares(const CpuContext& ctx, const float* const* buffers, const int64_t* sizes,
                    int64_t count) {
  DSV3_KERNEL_CHECK(count >= 0, "SumOfSquares: count=%lld must be >= 0",
                    static_cast<long long>(count));
  if (count == 0) return 0.0;
  DSV3_KERNEL_CHECK(buffers != nullptr && sizes != nullptr, "SumOfSquares: null buffers or sizes");
  // Block b of the whole list starts at block_start[buffer]; one partial per block.
  std::vector<int64_t> first_block(count + 1, 0);
  for (int64_t i = 0; i < count; ++i) {
    DSV3_KERNEL_CHECK(sizes[i] >= 0, "SumOfSquares: sizes[%lld]=%lld must be >= 0",
                      static_cast<long long>(i), static_cast<long long>(sizes[i]));
    DSV3_KERNEL_CHECK(sizes[i] == 0 || buffers[i] != nullptr,
                      "SumOfSquares: buffers[%lld] is null with size %lld",
                      static_cast<long long>(i), static_cast<long long>(sizes[i]));
    first_block[i + 1] = first_block[i] + (sizes[i] + kSumOfSquaresBlock - 1) / kSumOfSquaresBlock;
  }
  const int64_t blocks = first_block[count];
  std::vector<double> partial(blocks, 0.0);
  ParallelFor(ctx, blocks, 4, [&](int64_t begin, int64_t end) {
    // The buffer holding block `begin`, then walk forward.
    int64_t buf =
        std::upper_bound(first_block.begin(), first_block.end(), begin) - first_block.begin() - 1;
    for (int64_t b = begin; b < end; ++b) {
      while (b >= first_block[buf + 1]) ++buf;
      const int64_t start = (b - first_block[buf]) * kSumOfSquaresBlock;
      const int64_t stop = std::min(sizes[buf], start + kSumOfSquaresBlock);
      const float* x = buffers[buf];
      double acc[4] = {0.0, 0.0, 0.0, 0.0};
      for (int64_t j = start; j < stop; ++j) {
        const double v = static_cast<double>(x[j]);
        acc[(j - start) & 3] += v * v;
      }
      partial[b] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

double ClipCoefficient(double norm, double max_norm) {
  DSV3_KERNEL_CHECK(max_norm > 0.0, "ClipCoefficient: max_norm=%g must be > 0", max_norm);
  DSV3_KERNEL_CHECK(!(norm < 0.0), "ClipCoefficient: norm=%g must be >= 0", norm);
  const double coef = max_norm / (norm + 1e-6);
  return std::isnan(coef) ? coef : std::min(1.0, coef);
}

}  // namespace dsv3::kernels
