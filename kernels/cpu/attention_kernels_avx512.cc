// Internal: AVX-512 (F, DQ) attention tile kernels: a register-blocked GEMM (24 accumulators: 6
// rows x 64 columns or 4 x 96, columns in vector lanes, masked tails), a 16x16 in-register
// transpose, the softmax steps with a vector exp, and a dot product. Compiled through function
// target attributes, so the rest of the library needs no -mavx512 flag and runs on any x86-64;
// Avx512AttentionKernels() returns nullptr on CPUs (or non-x86 builds) without these extensions.

#include "kernels/cpu/attention_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "kernels/cpu/avx512_exp.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#define DSV3_HAVE_AVX512_ATTENTION 1
#if !defined(__clang__)
// GCC 12 warns inside its own AVX-512 intrinsics (_mm512_undefined_*, GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#endif

namespace dsv3::kernels::internal {

#ifdef DSV3_HAVE_AVX512_ATTENTION
namespace {

#define DSV3_AVX512 __attribute__((target("avx512f,avx512dq")))

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

DSV3_AVX512 inline __mmask16 TailMask(int64_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << remaining) - 1u);
}

// The vector exp (avx512_exp.h).
DSV3_AVX512 inline __m512 Exp(__m512 x) { return Avx512Exp(x); }

// One register tile: C[MR, 16 * NV] = (accumulate ? row_scale * C : 0) + A[MR, K] * B[K, 16 * NV],
// the last vector of each row limited to the lanes in `last`.
template <int MR, int NV>
DSV3_AVX512 void MicroTile(int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                           int64_t ldb, float* c, int64_t ldc, bool accumulate,
                           const float* row_scale, __mmask16 last) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    const __m512 scale = _mm512_set1_ps(row_scale != nullptr ? row_scale[r] : 1.0f);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      if (!accumulate) {
        acc[r][v] = _mm512_setzero_ps();
      } else {
        acc[r][v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, c + r * ldc + 16 * v)
                                : _mm512_loadu_ps(c + r * ldc + 16 * v);
        if (row_scale != nullptr) acc[r][v] = _mm512_mul_ps(acc[r][v], scale);
      }
    }
  }
  const float* a_row[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) a_row[r] = a + r * a_rs;
  int64_t a_off = 0;
  for (int64_t p = 0; p < k; ++p) {
    __m512 bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, b + 16 * v) : _mm512_loadu_ps(b + 16 * v);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a_row[r][a_off]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
    a_off += a_cs;
    b += ldb;
  }
  const bool full = last == static_cast<__mmask16>(0xFFFF);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      float* dst = c + r * ldc + 16 * v;
      if (v == NV - 1 && !full) {
        _mm512_mask_storeu_ps(dst, last, acc[r][v]);  // Masked stores only at a row's tail.
      } else {
        _mm512_storeu_ps(dst, acc[r][v]);
      }
    }
  }
}

using TileFn = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*,
                        int64_t, bool, const float*, __mmask16);

// kTiles[rows - 1][vectors - 1]: up to 6 rows of 4 vectors or 4 rows of 6 (24 accumulators).
template <int MR>
constexpr TileFn kRowTiles[6] = {MicroTile<MR, 1>,
                                 MicroTile<MR, 2>,
                                 MicroTile<MR, 3>,
                                 MicroTile<MR, 4>,
                                 MR <= 4 ? MicroTile<MR, 5> : nullptr,
                                 MR <= 4 ? MicroTile<MR, 6> : nullptr};
constexpr const TileFn* kTiles[6] = {kRowTiles<1>, kRowTiles<2>, kRowTiles<3>,
                                     kRowTiles<4>, kRowTiles<5>, kRowTiles<6>};

// Columns go in chunks of 64 (6-row tiles), except that a rest of 32 or less joins the last 64 in
// one chunk of up to 96 (4-row tiles): head dims 96 or 160 then need no 1- or 2-vector tiles.
DSV3_AVX512 void Gemm(const GemmArgs& g) {
  const auto [m, n, k] = g.shape;
  const auto [a, a_rs, a_cs] = g.a;
  for (int64_t n0 = 0; n0 < n;) {
    const int64_t rest = n - n0;
    const int64_t width = rest > 64 && rest <= 96 ? rest : std::min<int64_t>(rest, 64);
    const int64_t max_rows = width > 64 ? 4 : 6;
    for (int64_t m0 = 0; m0 < m; m0 += max_rows) {
      const int64_t rows = std::min(max_rows, m - m0);
      const BandRanges r = RangesForRows(g.band, m0, rows, k, n);
      int64_t begin = std::max(r.n_begin, n0);
      const int64_t end = std::min(r.n_end, n0 + width);
      if (begin >= end) continue;
      begin = n0 + (begin - n0) / 16 * 16;
      const int64_t vectors = (end - begin + 15) / 16;
      kTiles[rows - 1][vectors - 1](
          std::max<int64_t>(r.k_end - r.k_begin, 0), a + m0 * a_rs + r.k_begin * a_cs, a_rs, a_cs,
          g.b.data + r.k_begin * g.b.ld + begin, g.b.ld, g.c.data + m0 * g.c.ld + begin, g.c.ld,
          g.accumulate, g.row_scale != nullptr ? g.row_scale + m0 : nullptr,
          TailMask(end - begin - 16 * (vectors - 1)));
    }
    n0 += width;
  }
}

// Transposes 16 rows of 16 floats in registers.
DSV3_AVX512 inline void Transpose16x16(__m512 (&x)[16]) {
  __m512 t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(x[2 * i], x[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(x[2 * i], x[2 * i + 1]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 4; ++i) {
    x[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    x[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    x[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    x[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
#pragma GCC unroll 16
  for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {
      t[8 * h + i] = _mm512_shuffle_f32x4(x[8 * h + i], x[8 * h + 4 + i], 0x88);
      t[8 * h + 4 + i] = _mm512_shuffle_f32x4(x[8 * h + i], x[8 * h + 4 + i], 0xdd);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < 8; ++i) {
    x[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
    x[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
  }
}

DSV3_AVX512 void Transpose(const float* src, int64_t rows, int64_t cols, int64_t ld_src, float* dst,
                           int64_t ld_dst) {
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t nr = std::min<int64_t>(16, rows - r0);
    const __mmask16 row_lanes = TailMask(nr);
    for (int64_t c0 = 0; c0 < cols; c0 += 16) {
      const int64_t nc = std::min<int64_t>(16, cols - c0);
      const __mmask16 col_lanes = TailMask(nc);
      __m512 x[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        x[i] = i < nr ? _mm512_maskz_loadu_ps(col_lanes, src + (r0 + i) * ld_src + c0)
                      : _mm512_setzero_ps();
      }
      Transpose16x16(x);
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {  // Unrolled in full, so x stays in registers.
        if (i >= nc) break;
        float* out = dst + (c0 + i) * ld_dst + r0;
        if (nr == 16) {
          _mm512_storeu_ps(out, x[i]);
        } else {
          _mm512_mask_storeu_ps(out, row_lanes, x[i]);
        }
      }
    }
  }
}

// Lanes 0..15 as int32.
DSV3_AVX512 inline __m512i Iota() {
  return _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
}

// Clamps a lane-index threshold to int32 without changing any comparison against 0..kMax.
inline int32_t ClampThreshold(int64_t t) {
  return static_cast<int32_t>(std::clamp<int64_t>(t, -1, kMaxAttentionBlock + 1));
}

DSV3_AVX512 void OnlineSoftmax(float* s, int64_t ld, int64_t nk, int64_t nq, float scale,
                               int64_t key0, int64_t query0, float* m, float* l, float* alpha) {
  const __m512 vscale = _mm512_set1_ps(scale);
  const __m512 neg_inf = _mm512_set1_ps(kNegInf);
  const bool any_hidden = key0 + nk - 1 > query0;
  for (int64_t c0 = 0; c0 < nq; c0 += 16) {
    const __mmask16 lanes = TailMask(nq - c0);
    const __m512i query = _mm512_add_epi32(Iota(), _mm512_set1_epi32(static_cast<int32_t>(c0)));
    __m512 tile_max = neg_inf;
    for (int64_t r = 0; r < nk; ++r) {
      float* row = s + r * ld + c0;
      // Hidden: query0 + c < key0 + r, i.e. lane c < key0 + r - query0. Never read.
      const __mmask16 hidden =
          any_hidden
              ? _mm512_cmplt_epi32_mask(query, _mm512_set1_epi32(ClampThreshold(key0 + r - query0)))
              : static_cast<__mmask16>(0);
      const __mmask16 read = lanes & ~hidden;
      const __m512 x = _mm512_mask_mul_ps(neg_inf, read, vscale, _mm512_maskz_loadu_ps(read, row));
      _mm512_mask_storeu_ps(row, lanes, x);
      tile_max = _mm512_max_ps(tile_max, x);
    }
    const __m512 old_max = _mm512_mask_loadu_ps(neg_inf, lanes, m + c0);
    const __m512 new_max = _mm512_max_ps(old_max, tile_max);
    _mm512_mask_storeu_ps(alpha + c0, lanes, Exp(_mm512_sub_ps(old_max, new_max)));
    _mm512_mask_storeu_ps(m + c0, lanes, new_max);
    __m512 tile_sum = _mm512_setzero_ps();
    for (int64_t r = 0; r < nk; ++r) {
      float* row = s + r * ld + c0;
      const __m512 e = Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, row), new_max));
      _mm512_mask_storeu_ps(row, lanes, e);
      tile_sum = _mm512_add_ps(tile_sum, e);
    }
    const __m512 old_sum = _mm512_maskz_loadu_ps(lanes, l + c0);
    const __m512 a = _mm512_maskz_loadu_ps(lanes, alpha + c0);
    _mm512_mask_storeu_ps(l + c0, lanes, _mm512_add_ps(_mm512_mul_ps(old_sum, a), tile_sum));
  }
}

DSV3_AVX512 void SoftmaxGrad(float* s, float* dp, int64_t ld, int64_t nq, int64_t nk, float scale,
                             int64_t key0, int64_t query0, const float* lse, const float* d) {
  const __m512 vscale = _mm512_set1_ps(scale);
  const bool any_hidden = key0 + nk - 1 > query0;
  for (int64_t r = 0; r < nq; ++r) {
    const __m512 row_lse = _mm512_set1_ps(lse[r]);
    const __m512 row_d = _mm512_set1_ps(d[r]);
    // Hidden: key0 + c > query0 + r, i.e. lane c > query0 + r - key0.
    const __m512i threshold = _mm512_set1_epi32(ClampThreshold(query0 + r - key0));
    for (int64_t c0 = 0; c0 < nk; c0 += 16) {
      const __mmask16 lanes = TailMask(nk - c0);
      float* s_ptr = s + r * ld + c0;
      float* dp_ptr = dp + r * ld + c0;
      __mmask16 visible = lanes;  // Hidden entries are never read, and set to 0.
      if (any_hidden) {
        const __m512i key = _mm512_add_epi32(Iota(), _mm512_set1_epi32(static_cast<int32_t>(c0)));
        visible &= _mm512_cmple_epi32_mask(key, threshold);
      }
      const __m512 x = _mm512_fmsub_ps(vscale, _mm512_maskz_loadu_ps(visible, s_ptr), row_lse);
      const __m512 p = _mm512_maskz_mov_ps(visible, Exp(x));
      const __m512 ds = _mm512_mul_ps(
          _mm512_mul_ps(p, _mm512_sub_ps(_mm512_maskz_loadu_ps(visible, dp_ptr), row_d)), vscale);
      _mm512_mask_storeu_ps(s_ptr, lanes, p);
      _mm512_mask_storeu_ps(dp_ptr, lanes, ds);
    }
  }
}

DSV3_AVX512 void ScaleRows(const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                           const float* scale, float* dst, int64_t ld_dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 f = _mm512_set1_ps(scale[r]);
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 lanes = TailMask(cols - c);
      _mm512_mask_storeu_ps(dst + r * ld_dst + c, lanes,
                            _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, src + r * ld_src + c), f));
    }
  }
}

DSV3_AVX512 void RowDots(const float* x, const float* y, int64_t rows, int64_t n, float* out,
                         int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 lanes = TailMask(n - i);
      sum = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(lanes, x + r * n + i),
                            _mm512_maskz_loadu_ps(lanes, y + r * n + i), sum);
    }
    out[r * out_stride] = _mm512_reduce_add_ps(sum);
  }
}

constexpr AttentionKernels kAvx512 = {"avx512",    Gemm,      Transpose, OnlineSoftmax,
                                      SoftmaxGrad, ScaleRows, RowDots};

}  // namespace

const AttentionKernels* Avx512AttentionKernels() {
  const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return supported ? &kAvx512 : nullptr;
}

#else  // !DSV3_HAVE_AVX512_ATTENTION

const AttentionKernels* Avx512AttentionKernels() { return nullptr; }

#endif  // DSV3_HAVE_AVX512_ATTENTION

}  // namespace dsv3::kernels::internal
