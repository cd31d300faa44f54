// RoPE frequencies, table and the in-place rotation of strided slices; tokens in parallel.

#include "kernels/cpu/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/check.h"
#include "kernels/cpu/ops_common.h"

namespace dsv3::kernels {
namespace {

void CheckRopeDim(const char* op, int64_t d_rope, double rope_theta) {
  DSV3_KERNEL_CHECK(d_rope >= 2 && d_rope % 2 == 0, "%s: d_rope=%lld must be even and >= 2", op,
                    static_cast<long long>(d_rope));
  DSV3_KERNEL_CHECK(rope_theta > 0.0, "%s: rope_theta=%g must be > 0", op, rope_theta);
}

// V3code find_correction_dim.
double CorrectionDim(double num_rotations, int64_t dim, double base, double max_seq_len) {
  return static_cast<double>(dim) *
         std::log(max_seq_len / (num_rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(base));
}

template <bool kInverse>
void Rotate(const CpuContext& ctx, const char* op, const RopeTable& table, const int32_t* positions,
            const RopeLayout& l, float* x) {
  DSV3_KERNEL_CHECK(l.tokens >= 0 && l.heads >= 1, "%s: tokens=%lld must be >= 0, heads=%lld >= 1",
                    op, static_cast<long long>(l.tokens), static_cast<long long>(l.heads));
  DSV3_KERNEL_CHECK(l.d_rope >= 2 && l.d_rope % 2 == 0 && l.d_rope == 2 * table.half_dim,
                    "%s: d_rope=%lld must be even, >= 2 and twice table.half_dim=%lld", op,
                    static_cast<long long>(l.d_rope), static_cast<long long>(table.half_dim));
  DSV3_KERNEL_CHECK(l.heads == 1 || l.head_stride >= l.d_rope,
                    "%s: head_stride=%lld must be >= d_rope=%lld with heads=%lld", op,
                    static_cast<long long>(l.head_stride), static_cast<long long>(l.d_rope),
                    static_cast<long long>(l.heads));
  const int64_t row_span = (l.heads - 1) * l.head_stride + l.d_rope;
  DSV3_KERNEL_CHECK(l.tokens <= 1 || l.token_stride >= row_span,
                    "%s: token_stride=%lld must be >= (heads-1)*head_stride+d_rope=%lld", op,
                    static_cast<long long>(l.token_stride), static_cast<long long>(row_span));
  if (l.tokens == 0) return;
  DSV3_KERNEL_CHECK(
      x != nullptr && positions != nullptr && table.cos != nullptr && table.sin != nullptr,
      "%s: null x, positions or table with tokens=%lld", op, static_cast<long long>(l.tokens));
  for (int64_t t = 0; t < l.tokens; ++t) {
    DSV3_KERNEL_CHECK(positions[t] >= 0 && positions[t] < table.positions,
                      "%s: positions[%lld]=%d outside the table's [0, %lld)", op,
                      static_cast<long long>(t), positions[t],
                      static_cast<long long>(table.positions));
  }
  const int64_t half = table.half_dim;
  ParallelFor(ctx, l.tokens, internal::RowGrain(l.heads * l.d_rope),
              [&](int64_t begin, int64_t end) {
                for (int64_t t = begin; t < end; ++t) {
                  const float* c = table.cos + positions[t] * half;
                  const float* s = table.sin + positions[t] * half;
                  for (int64_t h = 0; h < l.heads; ++h) {
                    float* v = x + t * l.token_stride + h * l.head_stride;
                    for (int64_t j = 0; j < half; ++j) {
                      const float a = v[2 * j];
                      const float b = v[2 * j + 1];
                      if constexpr (kInverse) {
                        v[2 * j] = a * c[j] + b * s[j];
                        v[2 * j + 1] = b * c[j] - a * s[j];
                      } else {
                        v[2 * j] = a * c[j] - b * s[j];
                        v[2 * j + 1] = a * s[j] + b * c[j];
                      }
                    }
                  }
                }
              });
}

}  // namespace

void RopeFrequencies(int64_t d_rope, double rope_theta, double* theta) {
  CheckRopeDim("RopeFrequencies", d_rope, rope_theta);
  DSV3_KERNEL_CHECK(theta != nullptr, "RopeFrequencies: null theta");
  for (int64_t j = 0; j < d_rope / 2; ++j) {
    theta[j] = std::pow(rope_theta, -static_cast<double>(2 * j) / static_cast<double>(d_rope));
  }
}

void YarnRopeFrequencies(int64_t d_rope, double rope_theta, const YarnScaling& yarn,
                         double* theta) {
  CheckRopeDim("YarnRopeFrequencies", d_rope, rope_theta);
  DSV3_KERNEL_CHECK(yarn.factor > 0.0 && yarn.original_max_position_embeddings >= 1 &&
                        yarn.beta_fast > 0.0 && yarn.beta_slow > 0.0,
                    "YarnRopeFrequencies: factor=%g, original_max_position_embeddings=%lld, "
                    "beta_fast=%g, beta_slow=%g must all be positive",
                    yarn.factor, static_cast<long long>(yarn.original_max_position_embeddings),
                    yarn.beta_fast, yarn.beta_slow);
  RopeFrequencies(d_rope, rope_theta, theta);
  const double l0 = static_cast<double>(yarn.original_max_position_embeddings);
  const double low =
      std::max(std::floor(CorrectionDim(yarn.beta_fast, d_rope, rope_theta, l0)), 0.0);
  double high = std::min(std::ceil(CorrectionDim(yarn.beta_slow, d_rope, rope_theta, l0)),
                         static_cast<double>(d_rope - 1));
  if (high == low) high += 0.001;
  for (int64_t j = 0; j < d_rope / 2; ++j) {
    const double ramp = std::clamp((static_cast<double>(j) - low) / (high - low), 0.0, 1.0);
    theta[j] = theta[j] / yarn.factor * ramp + theta[j] * (1.0 - ramp);
  }
}

double YarnMscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

void BuildRopeTable(const CpuContext& ctx, const double* theta, int64_t half_dim, int64_t positions,
                    float* cos, float* sin) {
  DSV3_KERNEL_CHECK(half_dim >= 1 && positions >= 0,
                    "BuildRopeTable: half_dim=%lld must be >= 1 and positions=%lld >= 0",
                    static_cast<long long>(half_dim), static_cast<long long>(positions));
  if (positions == 0) return;
  DSV3_KERNEL_CHECK(theta != nullptr && cos != nullptr && sin != nullptr,
                    "BuildRopeTable: null theta, cos or sin");
  const int64_t n = positions * half_dim;
  DSV3_KERNEL_CHECK(!internal::ViewsOverlap(cos, n, sin, n), "BuildRopeTable: cos overlaps sin");
  ParallelFor(ctx, positions, internal::RowGrain(half_dim * 8), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      for (int64_t j = 0; j < half_dim; ++j) {
        const double angle = static_cast<double>(p) * theta[j];
        cos[p * half_dim + j] = static_cast<float>(std::cos(angle));
        sin[p * half_dim + j] = static_cast<float>(std::sin(angle));
      }
    }
  });
}

void RopeForward(const CpuContext& ctx, const RopeTable& table, const int32_t* positions,
                 const RopeLayout& layout, float* x) {
  Rotate<false>(ctx, "RopeForward", table, positions, layout, x);
}

void RopeBackward(const CpuContext& ctx, const RopeTable& table, const int32_t* positions,
                  const RopeLayout& layout, float* dx) {
  Rotate<true>(ctx, "RopeBackward", table, positions, layout, dx);
}

}  // namespace dsv3::kernels
