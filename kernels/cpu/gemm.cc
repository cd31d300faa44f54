// The dense GEMM entries of gemm.h: argument checks, then the layout mapping onto the BLAS call
// (gemm_blas.h) for FP32/BF16, or onto one FP8 problem of the FP8 engine (gemm_fp8_engine.h).

#include "kernels/cpu/gemm.h"

#include <cstring>

#include "kernels/cpu/gemm_blas.h"
#include "kernels/cpu/gemm_check.h"
#include "kernels/cpu/gemm_fp8_engine.h"
#include "kernels/fp8_types.h"

namespace dsv3::kernels {
namespace {

using internal::BlasType;
using internal::CheckGemmBuffers;
using internal::CheckGemmSizes;
using internal::Fp8BLayout;
using internal::Fp8Problem;

// out[rows, cols] (leading dimension cols) = op(A)·op(B) over `inner`, or += with accumulate.
void Blas(const CpuContext& ctx, const GemmOptions& options, BlasType type, bool trans_a,
          bool trans_b, int64_t rows, int64_t cols, int64_t inner, const void* a, int64_t lda,
          const void* b, int64_t ldb, float* out) {
  if (rows == 0 || cols == 0) return;
  if (inner == 0) {
    if (!options.accumulate) std::memset(out, 0, sizeof(float) * rows * cols);
    return;
  }
  internal::BlasGemm(ctx, type, trans_a, trans_b, rows, cols, inner, a, lda, b, ldb,
                     options.accumulate, out, cols);
}

template <typename T>
void Fprop(const char* op, const CpuContext& ctx, const GemmOptions& options, BlasType type,
           const T* x, const T* w, int64_t m, int64_t n, int64_t k, float* y) {
  CheckGemmSizes(op, m, n, k);
  const int64_t s = sizeof(T);
  CheckGemmBuffers(op, {{"x", x, s * m * k}, {"w", w, s * n * k}}, {"y", y, 4 * m * n});
  Blas(ctx, options, type, false, true, m, n, k, x, k, w, k, y);
}

template <typename T>
void Dgrad(const char* op, const CpuContext& ctx, const GemmOptions& options, BlasType type,
           const T* dy, const T* w, int64_t m, int64_t n, int64_t k, float* dx) {
  CheckGemmSizes(op, m, n, k);
  const int64_t s = sizeof(T);
  CheckGemmBuffers(op, {{"dy", dy, s * m * n}, {"w", w, s * n * k}}, {"dx", dx, 4 * m * k});
  Blas(ctx, options, type, false, false, m, k, n, dy, n, w, k, dx);
}

template <typename T>
void Wgrad(const char* op, const CpuContext& ctx, const GemmOptions& options, BlasType type,
           const T* dy, const T* x, int64_t m, int64_t n, int64_t k, float* dw) {
  CheckGemmSizes(op, m, n, k);
  const int64_t s = sizeof(T);
  CheckGemmBuffers(op, {{"dy", dy, s * m * n}, {"x", x, s * m * k}}, {"dw", dw, 4 * n * k});
  Blas(ctx, options, type, true, false, n, k, m, dy, n, x, k, dw);
}

}  // namespace

const char* GemmBackendName() { return internal::BlasBackendName(); }

void GemmFpropFp32(const CpuContext& ctx, const GemmOptions& options, const float* x,
                   const float* w, int64_t m, int64_t n, int64_t k, float* y) {
  Fprop("GemmFpropFp32", ctx, options, BlasType::kFp32, x, w, m, n, k, y);
}

void GemmDgradFp32(const CpuContext& ctx, const GemmOptions& options, const float* dy,
                   const float* w, int64_t m, int64_t n, int64_t k, float* dx) {
  Dgrad("GemmDgradFp32", ctx, options, BlasType::kFp32, dy, w, m, n, k, dx);
}

void GemmWgradFp32(const CpuContext& ctx, const GemmOptions& options, const float* dy,
                   const float* x, int64_t m, int64_t n, int64_t k, float* dw) {
  Wgrad("GemmWgradFp32", ctx, options, BlasType::kFp32, dy, x, m, n, k, dw);
}

void GemmFpropBf16(const CpuContext& ctx, const GemmOptions& options, const std::uint16_t* x,
                   const std::uint16_t* w, int64_t m, int64_t n, int64_t k, float* y) {
  Fprop("GemmFpropBf16", ctx, options, BlasType::kBf16, x, w, m, n, k, y);
}

void GemmDgradBf16(const CpuContext& ctx, const GemmOptions& options, const std::uint16_t* dy,
                   const std::uint16_t* w, int64_t m, int64_t n, int64_t k, float* dx) {
  Dgrad("GemmDgradBf16", ctx, options, BlasType::kBf16, dy, w, m, n, k, dx);
}

void GemmWgradBf16(const CpuContext& ctx, const GemmOptions& options, const std::uint16_t* dy,
                   const std::uint16_t* x, int64_t m, int64_t n, int64_t k, float* dw) {
  Wgrad("GemmWgradBf16", ctx, options, BlasType::kBf16, dy, x, m, n, k, dw);
}

void GemmFpropFp8(const CpuContext& ctx, const GemmOptions& options, const std::uint8_t* x_q,
                  const float* x_scales, const std::uint8_t* w_q, const float* w_scales, int64_t m,
                  int64_t n, int64_t k, float* y) {
  const char* op = "GemmFpropFp8";
  CheckGemmSizes(op, m, n, k);
  CheckGemmBuffers(op,
                   {{"x_q", x_q, m * k},
                    {"x_scales", x_scales, 4 * m * NumTiles(k)},
                    {"w_q", w_q, n * k},
                    {"w_scales", w_scales, 4 * NumTiles(n) * NumTiles(k)}},
                   {"y", y, 4 * m * n});
  Fp8Problem p;
  p.a = x_q;
  p.a_scales = x_scales;
  p.b = w_q;
  p.b_scales = w_scales;
  p.b_layout = Fp8BLayout::kRowsBlockScaled;
  p.m = m;
  p.n = n;
  p.k = k;
  p.accumulate = options.accumulate;
  p.c = y;
  internal::RunFp8Gemms(ctx, {p});
}

void GemmDgradFp8(const CpuContext& ctx, const GemmOptions& options, const std::uint8_t* dy_q,
                  const float* dy_scales, const std::uint8_t* w_q, const float* w_scales, int64_t m,
                  int64_t n, int64_t k, float* dx) {
  const char* op = "GemmDgradFp8";
  CheckGemmSizes(op, m, n, k);
  CheckGemmBuffers(op,
                   {{"dy_q", dy_q, m * n},
                    {"dy_scales", dy_scales, 4 * m * NumTiles(n)},
                    {"w_q", w_q, n * k},
                    {"w_scales", w_scales, 4 * NumTiles(n) * NumTiles(k)}},
                   {"dx", dx, 4 * m * k});
  Fp8Problem p;
  p.a = dy_q;
  p.a_scales = dy_scales;
  p.b = w_q;
  p.b_scales = w_scales;
  p.b_layout = Fp8BLayout::kColsBlockScaled;
  p.m = m;
  p.n = k;
  p.k = n;
  p.accumulate = options.accumulate;
  p.c = dx;
  internal::RunFp8Gemms(ctx, {p});
}

void GemmWgradFp8(const CpuContext& ctx, const GemmOptions& options, const std::uint8_t* dy_t_q,
                  const float* dy_t_scales, const std::uint8_t* x_t_q, const float* x_t_scales,
                  int64_t m, int64_t n, int64_t k, float* dw) {
  const char* op = "GemmWgradFp8";
  CheckGemmSizes(op, m, n, k);
  CheckGemmBuffers(op,
                   {{"dy_t_q", dy_t_q, n * m},
                    {"dy_t_scales", dy_t_scales, 4 * n * NumTiles(m)},
                    {"x_t_q", x_t_q, k * m},
                    {"x_t_scales", x_t_scales, 4 * k * NumTiles(m)}},
                   {"dw", dw, 4 * n * k});
  Fp8Problem p;
  p.a = dy_t_q;
  p.a_scales = dy_t_scales;
  p.b = x_t_q;
  p.b_scales = x_t_scales;
  p.b_layout = Fp8BLayout::kRowsRowScaled;
  p.m = n;
  p.n = k;
  p.k = m;
  p.accumulate = options.accumulate;
  p.c = dw;
  internal::RunFp8Gemms(ctx, {p});
}

}  // namespace dsv3::kernels
