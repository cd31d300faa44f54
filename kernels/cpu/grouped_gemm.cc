// The grouped GEMM entries of grouped_gemm.h: argument checks, then per-expert dense GEMMs of
// gemm.h (FP32, BF16), or one batch of per-expert problems for the FP8 engine.

#include "kernels/cpu/grouped_gemm.h"

#include <algorithm>
#include <atomic>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_check.h"
#include "kernels/cpu/gemm_fp8_engine.h"
#include "kernels/fp8_types.h"

namespace dsv3::kernels {
namespace {

using internal::CheckGemmBuffers;
using internal::Fp8BLayout;
using internal::Fp8Problem;

// Validates the group sizes and returns the first row of every expert, plus T at the end.
std::vector<int64_t> Offsets(const char* op, const int64_t* rows_per_expert, int64_t num_experts,
                             int64_t n, int64_t k) {
  DSV3_KERNEL_CHECK(num_experts >= 0, "%s: num_experts=%lld must be >= 0", op,
                    static_cast<long long>(num_experts));
  DSV3_KERNEL_CHECK(num_experts == 0 || rows_per_expert != nullptr,
                    "%s: rows_per_expert is null for num_experts=%lld", op,
                    static_cast<long long>(num_experts));
  internal::CheckGemmSizes(op, 0, n, k);
  std::vector<int64_t> offsets(num_experts + 1, 0);
  for (int64_t e = 0; e < num_experts; ++e) {
    DSV3_KERNEL_CHECK(rows_per_expert[e] >= 0, "%s: rows_per_expert[%lld]=%lld must be >= 0", op,
                      static_cast<long long>(e), static_cast<long long>(rows_per_expert[e]));
    offsets[e + 1] = offsets[e] + rows_per_expert[e];
  }
  return offsets;
}

// Calls fn(expert ctx, e) for every expert e (non-empty ones only unless `with_empty`): side by
// side, one thread each, when there are at least twice as many as threads; else in order on ctx.
template <typename Fn>
void ForEachExpert(const CpuContext& ctx, const std::vector<int64_t>& offsets, bool with_empty,
                   const Fn& fn) {
  std::vector<int64_t> experts;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    if (with_empty || offsets[e + 1] > offsets[e]) experts.push_back(static_cast<int64_t>(e));
  }
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  const auto count = static_cast<int64_t>(experts.size());
  if (threads > 1 && count >= 2 * threads) {
    const CpuContext single{nullptr, ctx.use_simd};
    std::atomic<int64_t> next{0};
    ParallelFor(ctx, threads, 1, [&](int64_t, int64_t) {
      for (int64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) fn(single, experts[i]);
    });
  } else {
    for (int64_t e : experts) fn(ctx, e);
  }
}

template <typename T>
struct Dense {
  using Fn = void (*)(const CpuContext&, const GemmOptions&, const T*, const T*, int64_t, int64_t,
                      int64_t, float*);
};

template <typename T>
void GroupedFprop(const char* op, typename Dense<T>::Fn dense, const CpuContext& ctx,
                  const GemmOptions& options, const T* x, const T* w,
                  const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                  float* y) {
  const std::vector<int64_t> off = Offsets(op, rows_per_expert, num_experts, n, k);
  const int64_t t = off.back(), s = sizeof(T);
  CheckGemmBuffers(op, {{"x", x, s * t * k}, {"w", w, s * num_experts * n * k}},
                   {"y", y, 4 * t * n});
  ForEachExpert(ctx, off, false, [&](const CpuContext& c, int64_t e) {
    dense(c, options, x + off[e] * k, w + e * n * k, off[e + 1] - off[e], n, k, y + off[e] * n);
  });
}

template <typename T>
void GroupedDgrad(const char* op, typename Dense<T>::Fn dense, const CpuContext& ctx,
                  const GemmOptions& options, const T* dy, const T* w,
                  const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                  float* dx) {
  const std::vector<int64_t> off = Offsets(op, rows_per_expert, num_experts, n, k);
  const int64_t t = off.back(), s = sizeof(T);
  CheckGemmBuffers(op, {{"dy", dy, s * t * n}, {"w", w, s * num_experts * n * k}},
                   {"dx", dx, 4 * t * k});
  ForEachExpert(ctx, off, false, [&](const CpuContext& c, int64_t e) {
    dense(c, options, dy + off[e] * n, w + e * n * k, off[e + 1] - off[e], n, k, dx + off[e] * k);
  });
}

template <typename T>
void GroupedWgrad(const char* op, typename Dense<T>::Fn dense, const CpuContext& ctx,
                  const GemmOptions& options, const T* dy, const T* x,
                  const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                  float* dw) {
  const std::vector<int64_t> off = Offsets(op, rows_per_expert, num_experts, n, k);
  const int64_t t = off.back(), s = sizeof(T);
  CheckGemmBuffers(op, {{"dy", dy, s * t * n}, {"x", x, s * t * k}},
                   {"dw", dw, 4 * num_experts * n * k});
  ForEachExpert(ctx, off, !options.accumulate, [&](const CpuContext& c, int64_t e) {
    dense(c, options, dy + off[e] * n, x + off[e] * k, off[e + 1] - off[e], n, k, dw + e * n * k);
  });
}

}  // namespace

int64_t GroupedNumTiles(const int64_t* rows_per_expert, int64_t num_experts) {
  int64_t tiles = 0;
  for (int64_t e = 0; e < num_experts; ++e) tiles += NumTiles(rows_per_expert[e]);
  return tiles;
}

void GroupedGemmFpropFp32(const CpuContext& ctx, const GemmOptions& options, const float* x,
                          const float* w, const int64_t* rows_per_expert, int64_t num_experts,
                          int64_t n, int64_t k, float* y) {
  GroupedFprop<float>("GroupedGemmFpropFp32", GemmFpropFp32, ctx, options, x, w, rows_per_expert,
                      num_experts, n, k, y);
}

void GroupedGemmDgradFp32(const CpuContext& ctx, const GemmOptions& options, const float* dy,
                          const float* w, const int64_t* rows_per_expert, int64_t num_experts,
                          int64_t n, int64_t k, float* dx) {
  GroupedDgrad<float>("GroupedGemmDgradFp32", GemmDgradFp32, ctx, options, dy, w, rows_per_expert,
                      num_experts, n, k, dx);
}

void GroupedGemmWgradFp32(const CpuContext& ctx, const GemmOptions& options, const float* dy,
                          const float* x, const int64_t* rows_per_expert, int64_t num_experts,
                          int64_t n, int64_t k, float* dw) {
  GroupedWgrad<float>("GroupedGemmWgradFp32", GemmWgradFp32, ctx, options, dy, x, rows_per_expert,
                      num_experts, n, k, dw);
}

void GroupedGemmFpropBf16(const CpuContext& ctx, const GemmOptions& options, const std::uint16_t* x,
                          const std::uint16_t* w, const int64_t* rows_per_expert,
                          int64_t num_experts, int64_t n, int64_t k, float* y) {
  GroupedFprop<std::uint16_t>("GroupedGemmFpropBf16", GemmFpropBf16, ctx, options, x, w,
                              rows_per_expert, num_experts, n, k, y);
}

void GroupedGemmDgradBf16(const CpuContext& ctx, const GemmOptions& options,
                          const std::uint16_t* dy, const std::uint16_t* w,
                          const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                          float* dx) {
  GroupedDgrad<std::uint16_t>("GroupedGemmDgradBf16", GemmDgradBf16, ctx, options, dy, w,
                              rows_per_expert, num_experts, n, k, dx);
}

void GroupedGemmWgradBf16(const CpuContext& ctx, const GemmOptions& options,
                          const std::uint16_t* dy, const std::uint16_t* x,
                          const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                          float* dw) {
  GroupedWgrad<std::uint16_t>("GroupedGemmWgradBf16", GemmWgradBf16, ctx, options, dy, x,
                              rows_per_expert, num_experts, n, k, dw);
}

void GroupedGemmFpropFp8(const CpuContext& ctx, const GemmOptions& options, const std::uint8_t* x_q,
                         const float* x_scales, const std::uint8_t* w_q, const float* w_scales,
                         const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                         float* y) {
  const char* op = "GroupedGemmFpropFp8";
  const std::vector<int64_t> off = Offsets(op, rows_per_expert, num_experts, n, k);
  const int64_t t = off.back(), kt = NumTiles(k), nt = NumTiles(n);
  CheckGemmBuffers(op,
                   {{"x_q", x_q, t * k},
                    {"x_scales", x_scales, 4 * t * kt},
                    {"w_q", w_q, num_experts * n * k},
                    {"w_scales", w_scales, 4 * num_experts * nt * kt}},
                   {"y", y, 4 * t * n});
  std::vector<Fp8Problem> problems;
  for (int64_t e = 0; e < num_experts; ++e) {
    Fp8Problem p;
    p.a = x_q + off[e] * k;
    p.a_scales = x_scales + off[e] * kt;
    p.b = w_q + e * n * k;
    p.b_scales = w_scales + e * nt * kt;
    p.b_layout = Fp8BLayout::kRowsBlockScaled;
    p.m = off[e + 1] - off[e];
    p.n = n;
    p.k = k;
    p.accumulate = options.accumulate;
    p.c = y + off[e] * n;
    problems.push_back(p);
  }
  internal::RunFp8Gemms(ctx, problems);
}

void GroupedGemmDgradFp8(const CpuContext& ctx, const GemmOptions& options,
                         const std::uint8_t* dy_q, const float* dy_scales, const std::uint8_t* w_q,
                         const float* w_scales, const int64_t* rows_per_expert, int64_t num_experts,
                         int64_t n, int64_t k, float* dx) {
  const char* op = "GroupedGemmDgradFp8";
  const std::vector<int64_t> off = Offsets(op, rows_per_expert, num_experts, n, k);
  const int64_t t = off.back(), kt = NumTiles(k), nt = NumTiles(n);
  CheckGemmBuffers(op,
                   {{"dy_q", dy_q, t * n},
                    {"dy_scales", dy_scales, 4 * t * nt},
                    {"w_q", w_q, num_experts * n * k},
                    {"w_scales", w_scales, 4 * num_experts * nt * kt}},
                   {"dx", dx, 4 * t * k});
  std::vector<Fp8Problem> problems;
  for (int64_t e = 0; e < num_experts; ++e) {
    Fp8Problem p;
    p.a = dy_q + off[e] * n;
    p.a_scales = dy_scales + off[e] * nt;
    p.b = w_q + e * n * k;
    p.b_scales = w_scales + e * nt * kt;
    p.b_layout = Fp8BLayout::kColsBlockScaled;
    p.m = off[e + 1] - off[e];
    p.n = k;
    p.k = n;
    p.accumulate = options.accumulate;
    p.c = dx + off[e] * k;
    problems.push_back(p);
  }
  internal::RunFp8Gemms(ctx, problems);
}

void GroupedGemmWgradFp8(const CpuContext& ctx, const GemmOptions& options,
                         const std::uint8_t* dy_t_q, const float* dy_t_scales,
                         const std::uint8_t* x_t_q, const float* x_t_scales,
                         const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                         float* dw) {
  const char* op = "GroupedGemmWgradFp8";
  const std::vector<int64_t> off = Offsets(op, rows_per_expert, num_experts, n, k);
  const int64_t t = off.back();
  const int64_t tiles = GroupedNumTiles(rows_per_expert, num_experts);
  CheckGemmBuffers(op,
                   {{"dy_t_q", dy_t_q, n * t},
                    {"dy_t_scales", dy_t_scales, 4 * n * tiles},
                    {"x_t_q", x_t_q, k * t},
                    {"x_t_scales", x_t_scales, 4 * k * tiles}},
                   {"dw", dw, 4 * num_experts * n * k});
  std::vector<Fp8Problem> problems;
  int64_t tile_off = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t rows = off[e + 1] - off[e];
    Fp8Problem p;
    p.a = dy_t_q + n * off[e];
    p.a_scales = dy_t_scales + n * tile_off;
    p.b = x_t_q + k * off[e];
    p.b_scales = x_t_scales + k * tile_off;
    p.b_layout = Fp8BLayout::kRowsRowScaled;
    p.m = n;
    p.n = k;
    p.k = rows;
    p.accumulate = options.accumulate;
    p.c = dw + e * n * k;
    problems.push_back(p);
    tile_off += NumTiles(rows);
  }
  internal::RunFp8Gemms(ctx, problems);
}

}  // namespace dsv3::kernels
