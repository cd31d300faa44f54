// Internal: the portable attention tile kernels (plain C++ loops, the reference for the AVX-512
// ones) and the choice between the two. Each sum runs in the order attention_kernels.h states.

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/attention_kernels.h"

namespace dsv3::kernels::internal {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The GEMM's inner loop is element-wise (no sum is reordered), so vectorising it keeps the results
// (attention.cmake lets GCC vectorise it); on x86-64 with GCC an AVX2 clone is built beside the
// baseline one and picked when the program loads. About 4x the speed of plain scalar code.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DSV3_PORTABLE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DSV3_PORTABLE_CLONES
#endif

DSV3_PORTABLE_CLONES void Gemm(const GemmArgs& g) {
  const auto [m, n, k] = g.shape;
  for (int64_t i = 0; i < m; ++i) {
    const BandRanges r = RangesForRows(g.band, i, 1, k, n);
    float* __restrict c_row = g.c.data + i * g.c.ld;
    if (!g.accumulate) {
      std::fill(c_row + r.n_begin, c_row + r.n_end, 0.0f);
    } else if (g.row_scale != nullptr) {
      for (int64_t j = r.n_begin; j < r.n_end; ++j) c_row[j] *= g.row_scale[i];
    }
    for (int64_t p = r.k_begin; p < r.k_end; ++p) {
      const float a_ip = g.a.data[i * g.a.row_stride + p * g.a.col_stride];
      const float* __restrict b_row = g.b.data + p * g.b.ld;
      for (int64_t j = r.n_begin; j < r.n_end; ++j) c_row[j] += a_ip * b_row[j];
    }
  }
}

void Transpose(const float* src, int64_t rows, int64_t cols, int64_t ld_src, float* dst,
               int64_t ld_dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
  }
}

void OnlineSoftmax(float* s, int64_t ld, int64_t nk, int64_t nq, float scale, int64_t key0,
                   int64_t query0, float* m, float* l, float* alpha) {
  float tile_max[kMaxAttentionBlock];
  float tile_sum[kMaxAttentionBlock];
  std::fill(tile_max, tile_max + nq, kNegInf);
  std::fill(tile_sum, tile_sum + nq, 0.0f);
  for (int64_t r = 0; r < nk; ++r) {
    float* row = s + r * ld;
    for (int64_t c = 0; c < nq; ++c) {
      const float x = key0 + r > query0 + c ? kNegInf : scale * row[c];
      row[c] = x;
      tile_max[c] = std::max(tile_max[c], x);
    }
  }
  for (int64_t c = 0; c < nq; ++c) {
    const float new_max = std::max(m[c], tile_max[c]);
    alpha[c] = std::exp(m[c] - new_max);
    m[c] = new_max;
  }
  for (int64_t r = 0; r < nk; ++r) {
    float* row = s + r * ld;
    for (int64_t c = 0; c < nq; ++c) {
      row[c] = std::exp(row[c] - m[c]);
      tile_sum[c] += row[c];
    }
  }
  for (int64_t c = 0; c < nq; ++c) l[c] = l[c] * alpha[c] + tile_sum[c];
}

void SoftmaxGrad(float* s, float* dp, int64_t ld, int64_t nq, int64_t nk, float scale, int64_t key0,
                 int64_t query0, const float* lse, const float* d) {
  for (int64_t r = 0; r < nq; ++r) {
    float* s_row = s + r * ld;
    float* dp_row = dp + r * ld;
    for (int64_t c = 0; c < nk; ++c) {
      if (key0 + c > query0 + r) {
        s_row[c] = dp_row[c] = 0.0f;
      } else {
        const float p = std::exp(scale * s_row[c] - lse[r]);
        s_row[c] = p;
        dp_row[c] = (p * (dp_row[c] - d[r])) * scale;
      }
    }
  }
}

void ScaleRows(const float* src, int64_t ld_src, int64_t rows, int64_t cols, const float* scale,
               float* dst, int64_t ld_dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[r * ld_dst + c] = src[r * ld_src + c] * scale[r];
  }
}

void RowDots(const float* x, const float* y, int64_t rows, int64_t n, float* out,
             int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) sum += x[r * n + i] * y[r * n + i];
    out[r * out_stride] = sum;
  }
}

constexpr AttentionKernels kScalar = {"scalar",    Gemm,      Transpose, OnlineSoftmax,
                                      SoftmaxGrad, ScaleRows, RowDots};

}  // namespace

const AttentionKernels& ScalarAttentionKernels() { return kScalar; }

const AttentionKernels& AttentionKernelsFor(const CpuContext& ctx) {
  static const AttentionKernels* const avx512 = Avx512AttentionKernels();
  return ctx.use_simd && avx512 != nullptr ? *avx512 : kScalar;
}

}  // namespace dsv3::kernels::internal
