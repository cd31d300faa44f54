// RMSNorm on the CPU (spec §2.2, §5.5, §11.7): y = x / sqrt(mean(x^2) + eps) * g per row, in FP32,
// and its backward (dx, and dg accumulated over rows). Rows may sit inside wider rows (a row
// stride), so kv_a_layernorm can normalise the first kv_lora_rank columns of the fused
// [c_kv | k_pe] projection in place. Not here: the residual add, BF16/FP8 casts of the output.
// The CUDA twin (kernels/cuda/, later) takes a CudaContext and the same arguments.
#ifndef DSV3_KERNELS_CPU_RMSNORM_H_
#define DSV3_KERNELS_CPU_RMSNORM_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

// Shape of one RMSNorm call. A stride of 0 means "dense" (equal to dim).
struct RmsNormShape {
  int64_t rows = 0;      // tokens, >= 0
  int64_t dim = 0;       // normalised width, >= 1
  int64_t x_stride = 0;  // elements between consecutive rows of x and dx (>= dim, or 0)
  int64_t y_stride = 0;  // elements between consecutive rows of y and dy (>= dim, or 0)
};

// Forward. All arithmetic FP32: ss = sum of x^2 (8 interleaved partial sums, combined pairwise),
// rstd = 1 / sqrt(ss / dim + eps), y = (x * rstd) * g.
//   x:    [rows, dim] row-major, row r at x + r * x_stride
//   gain: [dim]
//   y:    [rows, dim] row-major, row r at y + r * y_stride; may be x itself (same stride: in
//         place), otherwise must not overlap x
//   rstd: [rows] (nullable): the per-row 1/sqrt(mean(x^2) + eps), for the backward
// eps >= 0. Aborts on a bad shape, null buffers or overlapping outputs. Results do not depend on
// the thread count.
void RmsNormForward(const CpuContext& ctx, const RmsNormShape& shape, const float* x,
                    const float* gain, float eps, float* y, float* rstd);

// Backward of RmsNormForward, FP32:
//   dx[r, j] = rstd * (g_j * dy[r, j] - x[r, j] * (rstd^2 * sum_k(dy g x)[r] / dim))
//   dgain[j] += sum over rows r (in row order, accumulated in double) of dy[r, j] * x[r, j] * rstd
//   x:     [rows, dim], stride x_stride;   dy: [rows, dim], stride y_stride
//   gain:  [dim]
//   rstd:  [rows] from the forward, or nullptr to recompute it from x and eps
//   dx:    [rows, dim], stride x_stride, OVERWRITTEN; may be dy itself when the strides are
//          equal, otherwise must not overlap any input
//   dgain: [dim], ACCUMULATED into (+=); the caller zeroes it once per step
// Results do not depend on the thread count (rows are independent; dgain is split by columns).
void RmsNormBackward(const CpuContext& ctx, const RmsNormShape& shape, const float* x,
                     const float* gain, const float* rstd, const float* dy, float eps, float* dx,
                     float* dgain);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_RMSNORM_H_
