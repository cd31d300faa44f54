// The global gradient norm for clipping (spec §8.2, §11.10) on the CPU: the sum of squares over a
// list of FP32 buffers in a fixed order with double accumulation, and torch's clip coefficient.
// Deterministic and thread-count invariant, so every replica computes the same norm from the same
// gradients. Not here: the all-reduce of the partial sums across ranks (the caller sums the
// per-rank results, then takes the square root), or scaling the gradients
// (AdamWOptions.grad_scale).
#ifndef DSV3_KERNELS_CPU_GRAD_NORM_H_
#define DSV3_KERNELS_CPU_GRAD_NORM_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

// Elements per block of SumOfSquares: each block's partial sum is accumulated in double in four
// interleaved lanes (element j of the block into lane j % 4, lanes added as (0+1)+(2+3)), and the
// partials are added in (buffer, block) order.
inline constexpr int64_t kSumOfSquaresBlock = 4096;

// sum over i < count, j < sizes[i] of buffers[i][j]^2 (each square and sum in double).
//   buffers: [count] pointers; buffers[i]: [sizes[i]] FP32 (nullable when sizes[i] == 0)
//   sizes:   [count], each >= 0
// Aborts on count < 0, a negative size, or a null buffer with a positive size.
double SumOfSquares(const CpuContext& ctx, const float* const* buffers, const int64_t* sizes,
                    int64_t count);

// torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (norm + 1e-6)). Aborts on
// max_norm <= 0 or norm < 0 (NaN norms give NaN, so a diverged step is visible).
double ClipCoefficient(double norm, double max_norm);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_GRAD_NORM_H_
