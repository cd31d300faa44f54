// Internal: the one call the FP32 and BF16 GEMMs of gemm.h make into the CPU BLAS, a row-major
// C = op(A)·op(B) (+ C). One backend is compiled in (kernels/cpu/gemm.cmake picks it): oneDNN's
// matmul when libdnnl-dev is found (gemm_blas_onednn.cc), else OpenBLAS (gemm_blas_openblas.cc).
// Arguments are validated by the public entries in gemm.cc and grouped_gemm.cc. Not a public API.
#ifndef DSV3_KERNELS_CPU_GEMM_BLAS_H_
#define DSV3_KERNELS_CPU_GEMM_BLAS_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels::internal {

enum class BlasType {
  kFp32,  // operands float
  kBf16,  // operands BF16 bits (std::uint16_t); products and sums in FP32
};

// C[m, n] = sum_k op(A)[m, k] · op(B)[k, n], plus the old C[m, n] when `accumulate`.
//   A: trans_a ? [k, m] : [m, k], row-major with leading dimension lda (elements)
//   B: trans_b ? [n, k] : [k, n], row-major with leading dimension ldb
//   C: [m, n] row-major with leading dimension ldc, FP32
// m, n >= 1 and k >= 1 (the callers handle empty shapes). Runs on ctx.pool's thread count (1
// without a pool). Results may depend on that thread count and on the backend (their reduction
// splits differ), never on anything else.
void BlasGemm(const CpuContext& ctx, BlasType type, bool trans_a, bool trans_b, int64_t m,
              int64_t n, int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb,
              bool accumulate, float* c, int64_t ldc);

// "onednn" or "openblas": the backend compiled in.
const char* BlasBackendName();

}  // namespace dsv3::kernels::internal

#endif  // DSV3_KERNELS_CPU_GEMM_BLAS_H_
