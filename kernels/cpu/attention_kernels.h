// Internal: the inner loops of the flash-style attention (attention.h) over one tile, in a portable
// scalar version and an AVX-512 version, plus the tile sizes. attention.cc validates, tiles, and
// splits work over threads; these assume valid arguments. Not a public API.
//
// Every sum runs in a fixed order (the index order stated per function), so a tile's results never
// depend on where or on which thread it runs. The two versions agree to rounding, not bit for bit
// (the AVX-512 one fuses multiply-adds and has its own exp).
#ifndef DSV3_KERNELS_CPU_ATTENTION_KERNELS_H_
#define DSV3_KERNELS_CPU_ATTENTION_KERNELS_H_

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/context.h"

namespace dsv3::kernels::internal {

// Queries and keys per tile. A pure function of the shape (never of the thread count, which would
// change the order of sums).
struct AttentionTiles {
  int64_t q_block;  // queries per tile, <= kMaxAttentionBlock
  int64_t k_block;  // keys per tile, <= kMaxAttentionBlock
};
inline constexpr int64_t kMaxAttentionBlock = 128;
AttentionTiles ChooseAttentionTiles(const AttentionParams& params);

// The causal structure of a GEMM on a tile that straddles the diagonal, so that work known to be
// zero or unneeded can be skipped (whole register tiles or 16-lane vectors at a time, so a kernel
// may still touch some of it; it must then be harmless):
//   kALower: A[m][k] == 0 for k > m + diag (those terms are skipped);
//   kAUpper: A[m][k] == 0 for k < m + diag (skipped);
//   kCLower: C[m][n] is not needed for n > m + diag (may be left unwritten);
//   kCUpper: C[m][n] is not needed for n < m + diag (may be left unwritten).
enum class BandKind { kNone, kALower, kAUpper, kCLower, kCUpper };
struct Band {
  BandKind kind = BandKind::kNone;
  int64_t diag = 0;
};

// The k and n ranges a kernel must cover for rows [m0, m0 + rows) of a GEMM with band `band`.
struct BandRanges {
  int64_t k_begin, k_end, n_begin, n_end;
};
inline BandRanges RangesForRows(const Band& band, int64_t m0, int64_t rows, int64_t k, int64_t n) {
  BandRanges r{0, k, 0, n};
  const int64_t last = m0 + rows - 1;
  switch (band.kind) {
    case BandKind::kNone:
      break;
    case BandKind::kALower:
      r.k_end = std::clamp<int64_t>(last + band.diag + 1, 0, k);
      break;
    case BandKind::kAUpper:
      r.k_begin = std::clamp<int64_t>(m0 + band.diag, 0, k);
      break;
    case BandKind::kCLower:
      r.n_end = std::clamp<int64_t>(last + band.diag + 1, 0, n);
      break;
    case BandKind::kCUpper:
      r.n_begin = std::clamp<int64_t>(m0 + band.diag, 0, n);
      break;
  }
  return r;
}

// C[M, N] = (accumulate ? row_scale * C : 0) + A[M, K] * B[K, N]. A is read through any strides
// (so it may be a transposed view), B and C are row-major with a row stride. row_scale (nullptr:
// 1) multiplies each old C row by row_scale[m] first. Each C element sums the k of its band range
// in increasing order, starting from its (scaled) old value or 0.
struct GemmArgs {
  struct Shape {
    int64_t m, n, k;
  };
  struct StridedInput {  // element [i][j] at data[i * row_stride + j * col_stride]
    const float* data;
    int64_t row_stride, col_stride;
  };
  struct Input {  // row-major, row i at data + i * ld
    const float* data;
    int64_t ld;
  };
  struct Output {  // row-major, row i at data + i * ld
    float* data;
    int64_t ld;
  };
  Shape shape;
  StridedInput a;
  Input b;
  Output c;
  bool accumulate = false;
  const float* row_scale = nullptr;
  Band band = {};
};

struct AttentionKernels {
  const char* name;

  void (*gemm)(const GemmArgs& args);

  // dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols.
  void (*transpose)(const float* src, int64_t rows, int64_t cols, int64_t ld_src, float* dst,
                    int64_t ld_dst);

  // One key tile of the forward's online softmax, on transposed scores s[key][query] (row stride
  // ld, nk keys by nq queries) holding raw q.k. Key key0 + r is hidden from query query0 + c when
  // key0 + r > query0 + c (hidden entries are never used, so they may hold anything). Per query c
  // (rows r = 0..nk-1 in order):
  //   x = scale * s (or -inf if hidden); m' = max(m, max_r x); alpha = exp(m - m');
  //   s := exp(x - m'); l := l * alpha + sum_r s; m := m'.
  // m starts at -inf and l at 0 for a query's first tile (then alpha = 0).
  void (*online_softmax)(float* s, int64_t ld, int64_t nk, int64_t nq, float scale, int64_t key0,
                         int64_t query0, float* m, float* l, float* alpha);

  // One tile of the backward, on scores s[query][key] and dp[query][key] (row stride ld, nq queries
  // by nk keys) holding raw q.k and dout.v: p = exp(scale * s - lse[r]), then s := p and
  // dp := (p * (dp - d[r])) * scale, the gradient of the raw q.k; both are set to 0 where
  // key0 + c > query0 + r (hidden entries may hold anything before).
  void (*softmax_grad)(float* s, float* dp, int64_t ld, int64_t nq, int64_t nk, float scale,
                       int64_t key0, int64_t query0, const float* lse, const float* d);

  // dst[r * ld_dst + c] = src[r * ld_src + c] * scale[r] for r < rows, c < cols.
  void (*scale_rows)(const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                     const float* scale, float* dst, int64_t ld_dst);

  // out[r * out_stride] = sum_i x[r * n + i] * y[r * n + i] over i < n (in a fixed order), r <
  // rows.
  void (*row_dots)(const float* x, const float* y, int64_t rows, int64_t n, float* out,
                   int64_t out_stride);
};

const AttentionKernels& ScalarAttentionKernels();
// nullptr when this build has no AVX-512 code or this CPU lacks AVX-512 F/DQ.
const AttentionKernels* Avx512AttentionKernels();
// The AVX-512 kernels when available and ctx.use_simd, else the scalar ones.
const AttentionKernels& AttentionKernelsFor(const CpuContext& ctx);

}  // namespace dsv3::kernels::internal

#endif  // DSV3_KERNELS_CPU_ATTENTION_KERNELS_H_
