// Internal: AVX-512 BF16 versions of the FP8 GEMM inner loops (gemm_fp8_kernels.h): table decode
// of E4M3 to BF16, VNNI packing with 16x16 register transposes, and a 6x64 micro-kernel on
// vdpbf16ps with the per-128 promotion of spec §5.3. Bit-identical to gemm_fp8_scalar.cc.
// Compiled through function target attributes, so the library needs no -m flag and runs on any
// x86-64; Avx512Bf16Fp8GemmKernels() returns nullptr where the CPU lacks these extensions.

#include "kernels/check.h"
#include "kernels/cpu/gemm_fp8_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstdint>
#define DSV3_HAVE_AVX512_BF16_GEMM 1
#if !defined(__clang__)
// GCC 12 warns inside its own AVX-512 intrinsics (_mm512_undefined_*, GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#endif

namespace dsv3::kernels::internal {

#ifdef DSV3_HAVE_AVX512_BF16_GEMM
namespace {

#define DSV3_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

// The BF16 bits of E4M3 magnitudes 0..127, 32 per register.
struct DecodeTables {
  __m512i t[4];
};

// The table itself, made once (E4M3ToBf16Bits is a table lookup behind a function call).
const std::uint16_t* DecodeTableMemory() {
  struct Table {
    alignas(64) std::uint16_t mags[128];
  };
  static const Table table = [] {
    Table t;
    for (int i = 0; i < 128; ++i) t.mags[i] = E4M3ToBf16Bits(static_cast<std::uint8_t>(i));
    return t;
  }();
  return table.mags;
}

DSV3_AVX512BF16 inline DecodeTables LoadDecodeTables() {
  const std::uint16_t* mags = DecodeTableMemory();
  DecodeTables tables;
  for (int i = 0; i < 4; ++i) tables.t[i] = _mm512_load_si512(mags + 32 * i);
  return tables;
}

// 32 E4M3 codes (zero-extended to 16 bits) -> their 32 BF16 bit patterns.
DSV3_AVX512BF16 inline __m512i DecodeE4M3x32(const DecodeTables& tables, __m512i codes) {
  const __m512i mag = _mm512_and_si512(codes, _mm512_set1_epi16(0x7F));
  const __m512i low = _mm512_permutex2var_epi16(tables.t[0], mag, tables.t[1]);
  const __m512i high = _mm512_permutex2var_epi16(tables.t[2], mag, tables.t[3]);
  const __mmask32 is_high = _mm512_test_epi16_mask(mag, _mm512_set1_epi16(0x40));
  const __m512i value = _mm512_mask_blend_epi16(is_high, low, high);
  const __m512i sign = _mm512_slli_epi16(_mm512_and_si512(codes, _mm512_set1_epi16(0x80)), 8);
  return _mm512_or_si512(value, sign);
}

DSV3_AVX512BF16 inline __mmask32 Mask32(int64_t n) {
  return n >= 32 ? ~__mmask32{0} : (n <= 0 ? __mmask32{0} : (__mmask32{1} << n) - 1);
}

DSV3_AVX512BF16 inline __mmask64 Mask64(int64_t n) {
  return n >= 64 ? ~__mmask64{0} : (n <= 0 ? __mmask64{0} : (__mmask64{1} << n) - 1);
}

// Codes q[0 .. n) (n <= 32; the rest zero) decoded to BF16.
DSV3_AVX512BF16 inline __m512i LoadDecode32(const DecodeTables& tables, const std::uint8_t* q,
                                            int64_t n) {
  const __m256i bytes = _mm256_maskz_loadu_epi8(Mask32(n), q);
  return DecodeE4M3x32(tables, _mm512_cvtepu8_epi16(bytes));
}

DSV3_AVX512BF16 void DecodeRow(const std::uint8_t* q, int64_t k, int64_t kpad, std::uint16_t* out) {
  const DecodeTables tables = LoadDecodeTables();
  for (int64_t i = 0; i < kpad; i += 32) {
    _mm512_storeu_si512(out + i, LoadDecode32(tables, q + i, k - i));
  }
}

// x[c] <- column c of the 16x16 matrix of 32-bit elements whose row r is x[r].
DSV3_AVX512BF16 inline void Transpose16x16(__m512i x[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_epi32(x[2 * i], x[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi32(x[2 * i], x[2 * i + 1]);
  }
  // b[4i + j], 128-bit lane L: rows 4i..4i+3 of column 4L + j.
  for (int i = 0; i < 4; ++i) {
    b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i + 0], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i + 0], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i s0 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0x88);
    const __m512i s1 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0xDD);
    const __m512i t0 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0x88);
    const __m512i t1 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0xDD);
    x[0 + j] = _mm512_shuffle_i32x4(s0, t0, 0x88);   // lane 0 of every row group
    x[4 + j] = _mm512_shuffle_i32x4(s1, t1, 0x88);   // lane 1
    x[8 + j] = _mm512_shuffle_i32x4(s0, t0, 0xDD);   // lane 2
    x[12 + j] = _mm512_shuffle_i32x4(s1, t1, 0xDD);  // lane 3
  }
}

DSV3_AVX512BF16 void PackBRows(const std::uint8_t* b, int64_t ldb, int64_t cols, int64_t k,
                               int64_t kpad, std::uint32_t* out) {
  const DecodeTables tables = LoadDecodeTables();
  for (int64_t g = 0; g < kFp8Nr / 16; ++g) {
    const int64_t col0 = 16 * g;
    for (int64_t k0 = 0; k0 < kpad; k0 += 32) {
      __m512i x[16];
      if (col0 + 16 <= cols && k0 + 32 <= k) {
        const std::uint8_t* src = b + col0 * ldb + k0;
#pragma GCC unroll 16
        for (int r = 0; r < 16; ++r) {
          // This row's codes for the next chunk of K (the engine packs a panel chunk by chunk, kpad
          // codes at a time): 64 strided rows defeat the hardware prefetchers. Measured: 10% of
          // the 128 x 2112 x 7168 GEMM on one thread.
          if ((k0 & 63) == 0) {
            _mm_prefetch(reinterpret_cast<const char*>(src + r * ldb + kpad), _MM_HINT_T0);
          }
          const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + r * ldb));
          x[r] = DecodeE4M3x32(tables, _mm512_cvtepu8_epi16(bytes));
        }
      } else {
        for (int64_t r = 0; r < 16; ++r) {
          x[r] = col0 + r < cols ? LoadDecode32(tables, b + (col0 + r) * ldb + k0, k - k0)
                                 : _mm512_setzero_si512();
        }
      }
      Transpose16x16(x);  // x[p]: pair k0/2 + p of the 16 columns
      std::uint32_t* dst = out + (k0 / 2) * kFp8Nr + col0;
      for (int64_t p = 0; p < 16; ++p) _mm512_storeu_si512(dst + p * kFp8Nr, x[p]);
    }
  }
}

DSV3_AVX512BF16 void PackBCols(const std::uint8_t* b, int64_t ldb, int64_t cols, int64_t k,
                               int64_t kpad, std::uint32_t* out) {
  const DecodeTables tables = LoadDecodeTables();
  // Interleave 16 columns of the even row (indices 0..31) with those of the odd row (32..63).
  alignas(64) std::uint16_t idx_lo[32], idx_hi[32];
  for (int i = 0; i < 16; ++i) {
    idx_lo[2 * i] = static_cast<std::uint16_t>(i);
    idx_lo[2 * i + 1] = static_cast<std::uint16_t>(32 + i);
    idx_hi[2 * i] = static_cast<std::uint16_t>(16 + i);
    idx_hi[2 * i + 1] = static_cast<std::uint16_t>(48 + i);
  }
  const __m512i lo = _mm512_load_si512(idx_lo);
  const __m512i hi = _mm512_load_si512(idx_hi);
  const __mmask64 col_mask = Mask64(cols);
  for (int64_t p = 0; p < kpad / 2; ++p) {
    __m512i rows[2][2];  // [even/odd][columns 0..31 / 32..63]
    for (int64_t h = 0; h < 2; ++h) {
      const int64_t row = 2 * p + h;
      const __m512i bytes =
          row < k ? _mm512_maskz_loadu_epi8(col_mask, b + row * ldb) : _mm512_setzero_si512();
      rows[h][0] = DecodeE4M3x32(tables, _mm512_cvtepu8_epi16(_mm512_castsi512_si256(bytes)));
      rows[h][1] = DecodeE4M3x32(tables, _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(bytes, 1)));
    }
    std::uint32_t* dst = out + p * kFp8Nr;
    for (int64_t half = 0; half < 2; ++half) {
      _mm512_storeu_si512(dst + 32 * half,
                          _mm512_permutex2var_epi16(rows[0][half], lo, rows[1][half]));
      _mm512_storeu_si512(dst + 32 * half + 16,
                          _mm512_permutex2var_epi16(rows[0][half], hi, rows[1][half]));
    }
  }
}

DSV3_AVX512BF16 inline __m512 BroadcastPair(const std::uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(
      static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 16))));
}

// R rows and 16 x V columns of the micro-tile (R <= kFp8Mr, V <= 4): a panel's last rows, and the
// last panel's columns when N is not a multiple of 64, cost what they compute.
template <int R, int V>
DSV3_AVX512BF16 void MicroKernelRV(const std::uint16_t* a, int64_t lda, const float* a_scales,
                                   int64_t lds, const std::uint32_t* b, const float* b_scales,
                                   int64_t kb_begin, int64_t kb_end, int64_t tail_pairs,
                                   bool c_is_zero, float* c, int64_t ldc) {
  for (int64_t kb = kb_begin; kb < kb_end; ++kb) {
    const std::uint32_t* bp = b + kb * kFp8PairsPerBlock * kFp8Nr;
    const std::uint16_t* ap = a + kb * kFp8KBlock;
    __m512 acc[R][V];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j) acc[r][j] = _mm512_setzero_ps();
    }
    const int64_t pairs = kb + 1 == kb_end ? tail_pairs : kFp8PairsPerBlock;
    for (int64_t p = 0; p < pairs; ++p) {
      __m512 bv[V];
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j) {
        bv[j] = _mm512_castsi512_ps(_mm512_loadu_si512(bp + p * kFp8Nr + 16 * j));
      }
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        const __m512bh av = (__m512bh)BroadcastPair(ap + r * lda + 2 * p);
#pragma GCC unroll 4
        for (int j = 0; j < V; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], av, (__m512bh)bv[j]);
      }
    }
    // Promotion: C += P · (s_a · s_b), one FMA rounding.
    const float* sb = b_scales + kb * kFp8Nr;
    __m512 sbs[V];
#pragma GCC unroll 4
    for (int j = 0; j < V; ++j) sbs[j] = _mm512_loadu_ps(sb + 16 * j);
    const bool zero = c_is_zero && kb == kb_begin;
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m512 sa = _mm512_set1_ps(a_scales[r * lds + kb]);
      float* cr = c + r * ldc;
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j) {
        const __m512 old = zero ? _mm512_setzero_ps() : _mm512_loadu_ps(cr + 16 * j);
        _mm512_storeu_ps(cr + 16 * j, _mm512_fmadd_ps(acc[r][j], _mm512_mul_ps(sa, sbs[j]), old));
      }
    }
  }
}

using KernelRV = void (*)(const std::uint16_t*, int64_t, const float*, int64_t,
                          const std::uint32_t*, const float*, int64_t, int64_t, int64_t, bool,
                          float*, int64_t);

template <int V>
struct KernelsForV {
  static_assert(kFp8Mr == 6);
  static constexpr KernelRV kByRows[kFp8Mr] = {MicroKernelRV<1, V>, MicroKernelRV<2, V>,
                                               MicroKernelRV<3, V>, MicroKernelRV<4, V>,
                                               MicroKernelRV<5, V>, MicroKernelRV<6, V>};
};

DSV3_AVX512BF16 void MicroKernel(int rows, int cols, const std::uint16_t* a, int64_t lda,
                                 const float* a_scales, int64_t lds, const std::uint32_t* b,
                                 const float* b_scales, int64_t kb_begin, int64_t kb_end,
                                 int64_t tail_pairs, bool c_is_zero, float* c, int64_t ldc) {
  static_assert(kFp8Nr == 64);
  DSV3_KERNEL_CHECK(rows >= 1 && rows <= kFp8Mr && cols >= 16 && cols <= 64 && cols % 16 == 0,
                    "FP8 micro-kernel: rows=%d cols=%d", rows, cols);
  static constexpr const KernelRV* kByCols[4] = {KernelsForV<1>::kByRows, KernelsForV<2>::kByRows,
                                                 KernelsForV<3>::kByRows, KernelsForV<4>::kByRows};
  kByCols[cols / 16 - 1][rows - 1](a, lda, a_scales, lds, b, b_scales, kb_begin, kb_end, tail_pairs,
                                   c_is_zero, c, ldc);
}

constexpr Fp8GemmKernels kAvx512Bf16 = {"avx512bf16", DecodeRow, PackBRows, PackBCols, MicroKernel};

}  // namespace

const Fp8GemmKernels* Avx512Bf16Fp8GemmKernels() {
  const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512bf16");
  return supported ? &kAvx512Bf16 : nullptr;
}

#else  // !DSV3_HAVE_AVX512_BF16_GEMM

const Fp8GemmKernels* Avx512Bf16Fp8GemmKernels() { return nullptr; }

#endif  // DSV3_HAVE_AVX512_BF16_GEMM

}  // namespace dsv3::kernels::internal
