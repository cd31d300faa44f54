// Internal helpers shared by the model-primitive kernels (rmsnorm.cc, rope.cc, swiglu.cc,
// router.cc, permute.cc, embedding.cc, cross_entropy.cc, adamw.cc, grad_norm.cc): fixed-order FP32
// reductions, a correctly rounded sigmoid, and argument checks. Not a public API (the ops' headers
// are), and no threading here: every helper is a pure function of its arguments.
#ifndef DSV3_KERNELS_CPU_OPS_COMMON_H_
#define DSV3_KERNELS_CPU_OPS_COMMON_H_

#include <cmath>
#include <cstdint>

#include "kernels/check.h"

namespace dsv3::kernels::internal {

// Sum of a[i] * b[i] in FP32 with 8 interleaved partial sums combined pairwise at the end. The
// order is fixed by n alone, so the result depends only on the inputs (and vectorises).
inline float DotF32(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  for (; i < n; ++i) acc[i & 7] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Sum of a[i] * b[i] * c[i] ((a*b)*c per element), same order as DotF32.
inline float Dot3F32(const float* a, const float* b, const float* c, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l] * c[i + l];
  }
  for (; i < n; ++i) acc[i & 7] += a[i] * b[i] * c[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// sigmoid(x) = 1 / (1 + exp(-x)) evaluated in double: rounded to FP32 it is the correctly rounded
// FP32 sigmoid except in vanishingly rare double-rounding cases, so a reference that rounds a
// float64 sigmoid to float32 sees the same bits (the router's selection is compared exactly).
inline double SigmoidF64(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Elements of a row-strided matrix view: the last row ends `cols` after its start.
inline int64_t StridedExtent(int64_t rows, int64_t cols, int64_t stride) {
  return rows <= 0 || cols <= 0 ? 0 : (rows - 1) * stride + cols;
}

// True when two FP32 row-strided views share an element (conservatively: their spans overlap).
inline bool ViewsOverlap(const float* a, int64_t a_elems, const float* b, int64_t b_elems) {
  return Overlaps(a, a_elems * static_cast<int64_t>(sizeof(float)), b,
                  b_elems * static_cast<int64_t>(sizeof(float)));
}

// Rows per ParallelFor chunk for row-wise work of `cols` elements a row: about 16K elements.
inline int64_t RowGrain(int64_t cols) {
  const int64_t c = cols > 0 ? cols : 1;
  return c >= 16384 ? 1 : 16384 / c;
}

}  // namespace dsv3::kernels::internal

#endif  // DSV3_KERNELS_CPU_OPS_COMMON_H_
