// Internal: BlasGemm (gemm_blas.h) on OpenBLAS's cblas_sgemm, the fallback backend for machines
// without oneDNN (the GPU hosts). BF16 operands are decoded to FP32 first (exact), so the products
// and sums are FP32 as with oneDNN, at FP32 speed. OpenBLAS's thread count is process-wide:
// each call sets it to ctx.pool's. Its kernels follow OPENBLAS_CORETYPE as it was when the
// library loaded (see gemm.h). Not a public API.

#include <cblas.h>

#include <cstdint>
#include <vector>

#include "kernels/cpu/fp8.h"
#include "kernels/cpu/gemm_blas.h"

namespace dsv3::kernels::internal {
namespace {

// Copies the [rows, cols] BF16 matrix with leading dimension ld into dense FP32.
std::vector<float> DecodeMatrix(const CpuContext& ctx, const void* bf16, int64_t rows, int64_t cols,
                                int64_t ld) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  const auto* bits = static_cast<const std::uint16_t*>(bf16);
  if (ld == cols) {
    DecodeBf16(ctx, bits, rows * cols, out.data());
  } else {
    for (int64_t r = 0; r < rows; ++r) DecodeBf16(ctx, bits + r * ld, cols, &out[r * cols]);
  }
  return out;
}

}  // namespace

void BlasGemm(const CpuContext& ctx, BlasType type, bool trans_a, bool trans_b, int64_t m,
              int64_t n, int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb,
              bool accumulate, float* c, int64_t ldc) {
  openblas_set_num_threads(ctx.pool != nullptr ? ctx.pool->num_threads() : 1);
  const float* a32 = static_cast<const float*>(a);
  const float* b32 = static_cast<const float*>(b);
  std::vector<float> a_tmp, b_tmp;
  if (type == BlasType::kBf16) {
    a_tmp = trans_a ? DecodeMatrix(ctx, a, k, m, lda) : DecodeMatrix(ctx, a, m, k, lda);
    b_tmp = trans_b ? DecodeMatrix(ctx, b, n, k, ldb) : DecodeMatrix(ctx, b, k, n, ldb);
    a32 = a_tmp.data();
    b32 = b_tmp.data();
    lda = trans_a ? m : k;
    ldb = trans_b ? k : n;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), 1.0f, a32, static_cast<blasint>(lda), b32,
              static_cast<blasint>(ldb), accumulate ? 1.0f : 0.0f, c, static_cast<blasint>(ldc));
}

const char* BlasBackendName() { return "openblas"; }

}  // namespace dsv3::kernels::internal
