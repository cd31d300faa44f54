// RMSNorm forward and backward on the CPU: rows in parallel, the gain gradient by column blocks.

#include "kernels/cpu/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/ops_common.h"

namespace dsv3::kernels {
namespace {

using internal::StridedExtent;
using internal::ViewsOverlap;

// The shape with strides resolved (0 -> dim), after checking it.
RmsNormShape Resolve(const char* op, const RmsNormShape& s) {
  RmsNormShape r = s;
  if (r.x_stride == 0) r.x_stride = r.dim;
  if (r.y_stride == 0) r.y_stride = r.dim;
  DSV3_KERNEL_CHECK(r.rows >= 0 && r.dim >= 1, "%s: rows=%lld must be >= 0 and dim=%lld >= 1", op,
                    static_cast<long long>(r.rows), static_cast<long long>(r.dim));
  DSV3_KERNEL_CHECK(r.x_stride >= r.dim && r.y_stride >= r.dim,
                    "%s: x_stride=%lld and y_stride=%lld must be >= dim=%lld (or 0)", op,
                    static_cast<long long>(r.x_stride), static_cast<long long>(r.y_stride),
                    static_cast<long long>(r.dim));
  return r;
}

float RowRstd(const float* x, int64_t dim, float eps) {
  const float ss = internal::DotF32(x, x, dim);
  return 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
}

}  // namespace

void RmsNormForward(const CpuContext& ctx, const RmsNormShape& shape, const float* x,
                    const float* gain, float eps, float* y, float* rstd) {
  const RmsNormShape s = Resolve("RmsNormForward", shape);
  DSV3_KERNEL_CHECK(eps >= 0.0f, "RmsNormForward: eps=%g must be >= 0", static_cast<double>(eps));
  if (s.rows == 0) return;
  DSV3_KERNEL_CHECK(x != nullptr && gain != nullptr && y != nullptr,
                    "RmsNormForward: null x, gain or y with rows=%lld",
                    static_cast<long long>(s.rows));
  const int64_t x_extent = StridedExtent(s.rows, s.dim, s.x_stride);
  const int64_t y_extent = StridedExtent(s.rows, s.dim, s.y_stride);
  const bool in_place = y == x && s.y_stride == s.x_stride;
  DSV3_KERNEL_CHECK(in_place || !ViewsOverlap(x, x_extent, y, y_extent),
                    "RmsNormForward: y overlaps x without being x (in place needs equal strides)");
  DSV3_KERNEL_CHECK(!ViewsOverlap(gain, s.dim, y, y_extent), "RmsNormForward: y overlaps gain");
  DSV3_KERNEL_CHECK(rstd == nullptr || (!ViewsOverlap(rstd, s.rows, x, x_extent) &&
                                        !ViewsOverlap(rstd, s.rows, y, y_extent)),
                    "RmsNormForward: rstd overlaps x or y");
  ParallelFor(ctx, s.rows, internal::RowGrain(s.dim), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * s.x_stride;
      float* yr = y + r * s.y_stride;
      const float rs = RowRstd(xr, s.dim, eps);
      for (int64_t j = 0; j < s.dim; ++j) yr[j] = (xr[j] * rs) * gain[j];
      if (rstd != nullptr) rstd[r] = rs;
    }
  });
}

void RmsNormBackward(const CpuContext& ctx, const RmsNormShape& shape, const float* x,
                     const float* gain, const float* rstd, const float* dy, float eps, float* dx,
                     float* dgain) {
  const RmsNormShape s = Resolve("RmsNormBackward", shape);
  DSV3_KERNEL_CHECK(eps >= 0.0f, "RmsNormBackward: eps=%g must be >= 0", static_cast<double>(eps));
  if (s.rows == 0) return;
  DSV3_KERNEL_CHECK(
      x != nullptr && gain != nullptr && dy != nullptr && dx != nullptr && dgain != nullptr,
      "RmsNormBackward: null x, gain, dy, dx or dgain with rows=%lld",
      static_cast<long long>(s.rows));
  const int64_t x_extent = StridedExtent(s.rows, s.dim, s.x_stride);
  const int64_t y_extent = StridedExtent(s.rows, s.dim, s.y_stride);
  const bool in_place = dx == dy && s.x_stride == s.y_stride;
  DSV3_KERNEL_CHECK(in_place || !ViewsOverlap(dx, x_extent, dy, y_extent),
                    "RmsNormBackward: dx overlaps dy without being dy (in place needs equal "
                    "strides)");
  DSV3_KERNEL_CHECK(!ViewsOverlap(dx, x_extent, x, x_extent) &&
                        !ViewsOverlap(dx, x_extent, gain, s.dim) &&
                        (rstd == nullptr || !ViewsOverlap(dx, x_extent, rstd, s.rows)),
                    "RmsNormBackward: dx overlaps x, gain or rstd");
  DSV3_KERNEL_CHECK(
      !ViewsOverlap(dgain, s.dim, x, x_extent) && !ViewsOverlap(dgain, s.dim, dy, y_extent) &&
          !ViewsOverlap(dgain, s.dim, dx, x_extent) && !ViewsOverlap(dgain, s.dim, gain, s.dim),
      "RmsNormBackward: dgain overlaps another buffer");

  std::vector<float> rstd_local;
  if (rstd == nullptr) {
    rstd_local.resize(s.rows);
    ParallelFor(ctx, s.rows, internal::RowGrain(s.dim), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) rstd_local[r] = RowRstd(x + r * s.x_stride, s.dim, eps);
    });
    rstd = rstd_local.data();
  }

  // dgain first: with dx == dy, the dx pass overwrites dy.
  constexpr int64_t kColBlock = 64;
  const int64_t col_blocks = (s.dim + kColBlock - 1) / kColBlock;
  ParallelFor(ctx, col_blocks, std::max<int64_t>(1, 256 / std::max<int64_t>(s.rows, 1)),
              [&](int64_t begin, int64_t end) {
                double acc[kColBlock];
                for (int64_t b = begin; b < end; ++b) {
                  const int64_t c0 = b * kColBlock;
                  const int64_t n = std::min(kColBlock, s.dim - c0);
                  for (int64_t j = 0; j < n; ++j) acc[j] = 0.0;
                  for (int64_t r = 0; r < s.rows; ++r) {
                    const float* xr = x + r * s.x_stride + c0;
                    const float* dyr = dy + r * s.y_stride + c0;
                    const float rs = rstd[r];
                    for (int64_t j = 0; j < n; ++j)
                      acc[j] += static_cast<double>(dyr[j] * xr[j] * rs);
                  }
                  for (int64_t j = 0; j < n; ++j) {
                    dgain[c0 + j] = static_cast<float>(static_cast<double>(dgain[c0 + j]) + acc[j]);
                  }
                }
              });

  const float inv_dim = 1.0f / static_cast<float>(s.dim);
  ParallelFor(ctx, s.rows, internal::RowGrain(s.dim), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * s.x_stride;
      const float* dyr = dy + r * s.y_stride;
      float* dxr = dx + r * s.x_stride;
      const float rs = rstd[r];
      const float dot = internal::Dot3F32(dyr, gain, xr, s.dim);
      const float c = rs * rs * dot * inv_dim;
      for (int64_t j = 0; j < s.dim; ++j) dxr[j] = rs * (gain[j] * dyr[j] - xr[j] * c);
    }
  });
}

}  // namespace dsv3::kernels
