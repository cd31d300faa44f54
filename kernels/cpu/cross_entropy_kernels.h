// Internal: the per-row kernels of the cross-entropy (cross_entropy.cc), an AVX-512 version beside
// the portable loop. Not a public API.
#ifndef DSV3_KERNELS_CPU_CROSS_ENTROPY_KERNELS_H_
#define DSV3_KERNELS_CPU_CROSS_ENTROPY_KERNELS_H_

#include <cstdint>

namespace dsv3::kernels::internal {

struct CrossEntropyRowKernels {
  // m = max_j x[j]; e[j] = exp(x[j] - m) when e is not null; returns sum_j exp(x[j] - m) in double.
  //   x: [n]   e: [n] (nullable; may be x itself)
  double (*max_exp_sum)(const float* x, int64_t n, float* e, float* m);
  // d[j] = (d[j] * inv_sum) * factor.
  void (*scale)(float* d, int64_t n, float inv_sum, float factor);
};

// AVX-512 (F, DQ): the exp of avx512_exp.h (within 2 ulp), the sum in 16 lane partials (lane l adds
// j = l, l + 16, ... in double) added in lane order. nullptr on CPUs without those extensions.
const CrossEntropyRowKernels* Avx512CrossEntropyRowKernels();

}  // namespace dsv3::kernels::internal

#endif  // DSV3_KERNELS_CPU_CROSS_ENTROPY_KERNELS_H_
