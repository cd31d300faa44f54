// Linear and grouped Linear GEMMs in FP32 / BF16 / FP8 (see linear.h).
#include "engine/model/linear.h"

#include <cstdint>
#include <vector>

#include "kernels/cpu/fp8.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/grouped_gemm.h"
#include "kernels/cpu/quantize.h"
#include "kernels/fp8_types.h"

namespace dsv3::model {
namespace {

using kernels::CpuContext;
using kernels::GemmOptions;
using kernels::NumTiles;

std::vector<uint16_t> ToBf16(const CpuContext& ctx, const float* x, int64_t n) {
  std::vector<uint16_t> out(static_cast<size_t>(n));
  kernels::EncodeBf16(ctx, x, n, out.data());
  return out;
}

// 1x128 codes and scales of an activation-like [rows, cols] matrix.
struct Act8 {
  std::vector<uint8_t> q;
  std::vector<float> s;
};
Act8 Quant1x128(const CpuContext& ctx, const float* x, int64_t rows, int64_t cols,
                kernels::ScaleFormat format = kernels::ScaleFormat::kFp32) {
  Act8 a;
  a.q.resize(static_cast<size_t>(rows * cols));
  a.s.resize(static_cast<size_t>(rows * NumTiles(cols)));
  kernels::Quantize1x128(ctx, {.scale_format = format}, x, rows, cols, a.q.data(), a.s.data());
  return a;
}
Act8 Quant128x128(const CpuContext& ctx, const float* w, int64_t rows, int64_t cols) {
  Act8 a;
  a.q.resize(static_cast<size_t>(rows * cols));
  a.s.resize(static_cast<size_t>(NumTiles(rows) * NumTiles(cols)));
  kernels::Quantize128x128(ctx, {}, w, rows, cols, a.q.data(), a.s.data());
  return a;
}

constexpr GemmOptions kOverwrite{.accumulate = false};
constexpr GemmOptions kAccumulate{.accumulate = true};

}  // namespace

void LinearForward(const CpuContext& ctx, const LinearRef& lin, const float* x, int64_t m,
                   float* y) {
  switch (lin.mode) {
    case GemmMode::kFp32:
      kernels::GemmFpropFp32(ctx, kOverwrite, x, lin.w, m, lin.n, lin.k, y);
      return;
    case GemmMode::kBf16: {
      const std::vector<uint16_t> xb = ToBf16(ctx, x, m * lin.k);
      const std::vector<uint16_t> wb = ToBf16(ctx, lin.w, lin.n * lin.k);
      kernels::GemmFpropBf16(ctx, kOverwrite, xb.data(), wb.data(), m, lin.n, lin.k, y);
      return;
    }
    case GemmMode::kFp8: {
      const Act8 xq = Quant1x128(ctx, x, m, lin.k);
      const Act8 wq = Quant128x128(ctx, lin.w, lin.n, lin.k);
      kernels::GemmFpropFp8(ctx, kOverwrite, xq.q.data(), xq.s.data(), wq.q.data(), wq.s.data(), m,
                            lin.n, lin.k, y);
      return;
    }
  }
}

namespace {

thread_local DeferredWeightGrads* deferral_sink = nullptr;

// dW += dy^T x in the Linear's precision.
void LinearWgrad(const CpuContext& ctx, const LinearRef& lin, const float* x, const float* dy,
                 int64_t m) {
  switch (lin.mode) {
    case GemmMode::kFp32:
      kernels::GemmWgradFp32(ctx, kAccumulate, dy, x, m, lin.n, lin.k, lin.dw);
      return;
    case GemmMode::kBf16: {
      const std::vector<uint16_t> dyb = ToBf16(ctx, dy, m * lin.n);
      const std::vector<uint16_t> xb = ToBf16(ctx, x, m * lin.k);
      kernels::GemmWgradBf16(ctx, kAccumulate, dyb.data(), xb.data(), m, lin.n, lin.k, lin.dw);
      return;
    }
    case GemmMode::kFp8: {
      // dy^T tiled 128x1 along the tokens, x re-quantised from its 1x128 codes.
      std::vector<uint8_t> dyt_q(static_cast<size_t>(lin.n * m));
      std::vector<float> dyt_s(static_cast<size_t>(lin.n * NumTiles(m)));
      kernels::Quantize128x1Transposed(ctx, {}, dy, m, lin.n, dyt_q.data(), dyt_s.data());
      const Act8 xq = Quant1x128(ctx, x, m, lin.k);
      std::vector<uint8_t> xt_q(static_cast<size_t>(lin.k * m));
      std::vector<float> xt_s(static_cast<size_t>(lin.k * NumTiles(m)));
      kernels::Requantize128x1Transposed(ctx, {}, xq.q.data(), xq.s.data(), m, lin.k, xt_q.data(),
                                         xt_s.data());
      kernels::GemmWgradFp8(ctx, kAccumulate, dyt_q.data(), dyt_s.data(), xt_q.data(),
                            xt_s.data(), m, lin.n, lin.k, lin.dw);
      return;
    }
  }
}

std::vector<float> Copy(const float* x, int64_t n) { return std::vector<float>(x, x + n); }

}  // namespace

void DeferredWeightGrads::Run(const CpuContext& ctx) {
  std::vector<std::function<void(const CpuContext&)>> tasks;
  tasks.swap(tasks_);
  for (auto& task : tasks) task(ctx);
}

ScopedWeightGradDeferral::ScopedWeightGradDeferral(DeferredWeightGrads* sink)
    : previous_(deferral_sink) {
  deferral_sink = sink;
}
ScopedWeightGradDeferral::~ScopedWeightGradDeferral() { deferral_sink = previous_; }

void LinearBackward(const CpuContext& ctx, const LinearRef& lin, const float* x, const float* dy,
                    int64_t m, float* dx, bool accumulate_dx) {
  if (dx != nullptr) {
    const GemmOptions dx_opts{.accumulate = accumulate_dx};
    switch (lin.mode) {
      case GemmMode::kFp32:
        kernels::GemmDgradFp32(ctx, dx_opts, dy, lin.w, m, lin.n, lin.k, dx);
        break;
      case GemmMode::kBf16: {
        const std::vector<uint16_t> dyb = ToBf16(ctx, dy, m * lin.n);
        const std::vector<uint16_t> wb = ToBf16(ctx, lin.w, lin.n * lin.k);
        kernels::GemmDgradBf16(ctx, dx_opts, dyb.data(), wb.data(), m, lin.n, lin.k, dx);
        break;
      }
      case GemmMode::kFp8: {
        const Act8 dyq = Quant1x128(ctx, dy, m, lin.n);
        const Act8 wq = Quant128x128(ctx, lin.w, lin.n, lin.k);
        kernels::GemmDgradFp8(ctx, dx_opts, dyq.q.data(), dyq.s.data(), wq.q.data(), wq.s.data(),
                              m, lin.n, lin.k, dx);
        break;
      }
    }
  }
  if (deferral_sink == nullptr) {
    LinearWgrad(ctx, lin, x, dy, m);
    return;
  }
  deferral_sink->Add([lin, m, xs = Copy(x, m * lin.k), dys = Copy(dy, m * lin.n)](
                         const CpuContext& c) { LinearWgrad(c, lin, xs.data(), dys.data(), m); });
}

namespace {

// Per-expert 128x128 quantisation of stacked weights [experts, n, k].
Act8 QuantExperts(const CpuContext& ctx, const GroupedLinearRef& lin) {
  Act8 a;
  const int64_t per_q = lin.n * lin.k;
  const int64_t per_s = NumTiles(lin.n) * NumTiles(lin.k);
  a.q.resize(static_cast<size_t>(lin.experts * per_q));
  a.s.resize(static_cast<size_t>(lin.experts * per_s));
  for (int64_t e = 0; e < lin.experts; ++e) {
    kernels::Quantize128x128(ctx, {}, lin.w + e * per_q, lin.n, lin.k, a.q.data() + e * per_q,
                             a.s.data() + e * per_s);
  }
  return a;
}

}  // namespace

void RoundThroughE4M3(const CpuContext& ctx, kernels::ScaleFormat format, float* x, int64_t rows,
                      int64_t cols) {
  const Act8 q = Quant1x128(ctx, x, rows, cols, format);
  kernels::Dequantize1x128(ctx, q.q.data(), q.s.data(), rows, cols, x);
}

void GroupedLinearForward(const CpuContext& ctx, const GroupedLinearRef& lin, const float* x,
                          const int64_t* rows_per_expert, int64_t rows, float* y) {
  switch (lin.mode) {
    case GemmMode::kFp32:
      kernels::GroupedGemmFpropFp32(ctx, kOverwrite, x, lin.w, rows_per_expert, lin.experts, lin.n,
                                    lin.k, y);
      return;
    case GemmMode::kBf16: {
      const std::vector<uint16_t> xb = ToBf16(ctx, x, rows * lin.k);
      const std::vector<uint16_t> wb = ToBf16(ctx, lin.w, lin.experts * lin.n * lin.k);
      kernels::GroupedGemmFpropBf16(ctx, kOverwrite, xb.data(), wb.data(), rows_per_expert,
                                    lin.experts, lin.n, lin.k, y);
      return;
    }
    case GemmMode::kFp8: {
      const Act8 xq = Quant1x128(ctx, x, rows, lin.k, lin.x_scales);
      const Act8 wq = QuantExperts(ctx, lin);
      kernels::GroupedGemmFpropFp8(ctx, kOverwrite, xq.q.data(), xq.s.data(), wq.q.data(),
                                   wq.s.data(), rows_per_expert, lin.experts, lin.n, lin.k, y);
      return;
    }
  }
}

namespace {

// dW_e += dy_e^T x_e for every expert e, in the grouped Linear's precision.
void GroupedLinearWgrad(const CpuContext& ctx, const GroupedLinearRef& lin, const float* x,
                        const float* dy, const int64_t* rows_per_expert, int64_t rows) {
  switch (lin.mode) {
    case GemmMode::kFp32:
      kernels::GroupedGemmWgradFp32(ctx, kAccumulate, dy, x, rows_per_expert, lin.experts, lin.n,
                                    lin.k, lin.dw);
      return;
    case GemmMode::kBf16: {
      const std::vector<uint16_t> dyb = ToBf16(ctx, dy, rows * lin.n);
      const std::vector<uint16_t> xb = ToBf16(ctx, x, rows * lin.k);
      kernels::GroupedGemmWgradBf16(ctx, kAccumulate, dyb.data(), xb.data(), rows_per_expert,
                                    lin.experts, lin.n, lin.k, lin.dw);
      return;
    }
    case GemmMode::kFp8: {
      // Every expert's rows tiled 128x1 on their own (tiles restart at each expert).
      const int64_t tiles = kernels::GroupedNumTiles(rows_per_expert, lin.experts);
      std::vector<uint8_t> dyt_q(static_cast<size_t>(lin.n * rows));
      std::vector<float> dyt_s(static_cast<size_t>(lin.n * tiles));
      std::vector<uint8_t> xt_q(static_cast<size_t>(lin.k * rows));
      std::vector<float> xt_s(static_cast<size_t>(lin.k * tiles));
      const Act8 xq = Quant1x128(ctx, x, rows, lin.k, lin.x_scales);
      const int64_t x_tiles = NumTiles(lin.k);
      int64_t offset = 0;
      int64_t tile_offset = 0;
      for (int64_t e = 0; e < lin.experts; ++e) {
        const int64_t m = rows_per_expert[e];
        if (m > 0) {
          kernels::Quantize128x1Transposed(ctx, {}, dy + offset * lin.n, m, lin.n,
                                           dyt_q.data() + lin.n * offset,
                                           dyt_s.data() + lin.n * tile_offset);
          kernels::Requantize128x1Transposed(ctx, {}, xq.q.data() + offset * lin.k,
                                             xq.s.data() + offset * x_tiles, m, lin.k,
                                             xt_q.data() + lin.k * offset,
                                             xt_s.data() + lin.k * tile_offset);
        }
        offset += m;
        tile_offset += NumTiles(m);
      }
      kernels::GroupedGemmWgradFp8(ctx, kAccumulate, dyt_q.data(), dyt_s.data(), xt_q.data(),
                                   xt_s.data(), rows_per_expert, lin.experts, lin.n, lin.k,
                                   lin.dw);
      return;
    }
  }
}

}  // namespace

void GroupedLinearBackward(const CpuContext& ctx, const GroupedLinearRef& lin, const float* x,
                           const float* dy, const int64_t* rows_per_expert, int64_t rows,
                           float* dx) {
  if (dx != nullptr) {
    switch (lin.mode) {
      case GemmMode::kFp32:
        kernels::GroupedGemmDgradFp32(ctx, kOverwrite, dy, lin.w, rows_per_expert, lin.experts,
                                      lin.n, lin.k, dx);
        break;
      case GemmMode::kBf16: {
        const std::vector<uint16_t> dyb = ToBf16(ctx, dy, rows * lin.n);
        const std::vector<uint16_t> wb = ToBf16(ctx, lin.w, lin.experts * lin.n * lin.k);
        kernels::GroupedGemmDgradBf16(ctx, kOverwrite, dyb.data(), wb.data(), rows_per_expert,
                                      lin.experts, lin.n, lin.k, dx);
        break;
      }
      case GemmMode::kFp8: {
        const Act8 dyq = Quant1x128(ctx, dy, rows, lin.n, lin.dy_scales);
        const Act8 wq = QuantExperts(ctx, lin);
        kernels::GroupedGemmDgradFp8(ctx, kOverwrite, dyq.q.data(), dyq.s.data(), wq.q.data(),
                                     wq.s.data(), rows_per_expert, lin.experts, lin.n, lin.k, dx);
        break;
      }
    }
  }
  if (deferral_sink == nullptr) {
    GroupedLinearWgrad(ctx, lin, x, dy, rows_per_expert, rows);
    return;
  }
  deferral_sink->Add(
      [lin, rows, xs = Copy(x, rows * lin.k), dys = Copy(dy, rows * lin.n),
       counts = std::vector<int64_t>(rows_per_expert, rows_per_expert + lin.experts)](
          const CpuContext& c) {
        GroupedLinearWgrad(c, lin, xs.data(), dys.data(), counts.data(), rows);
      });
}

}  // namespace dsv3::model
