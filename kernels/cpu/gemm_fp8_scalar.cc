// Internal: the portable scalar versions of the FP8 GEMM inner loops (gemm_fp8_kernels.h), the
// definition the AVX-512 BF16 versions must match bit for bit, and the kernel selection.

#include <array>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/fp8.h"
#include "kernels/cpu/gemm_fp8_kernels.h"

namespace dsv3::kernels::internal {
namespace {

const std::array<std::uint16_t, 256>& Bf16Table() {
  static const std::array<std::uint16_t, 256> table = [] {
    std::array<std::uint16_t, 256> t{};
    for (int code = 0; code < 256; ++code) {
      // Magnitude through FP32 (exact), sign re-attached so that NaN codes keep theirs too.
      const std::uint16_t mag = FloatToBf16(E4M3ToFloat(static_cast<std::uint8_t>(code & 0x7F)));
      t[code] = static_cast<std::uint16_t>(mag | ((code & 0x80) << 8));
    }
    return t;
  }();
  return table;
}

void DecodeRow(const std::uint8_t* q, int64_t k, int64_t kpad, std::uint16_t* out) {
  const auto& table = Bf16Table();
  for (int64_t i = 0; i < k; ++i) out[i] = table[q[i]];
  for (int64_t i = k; i < kpad; ++i) out[i] = 0;
}

std::uint32_t Pair(std::uint16_t even, std::uint16_t odd) {
  return static_cast<std::uint32_t>(even) | (static_cast<std::uint32_t>(odd) << 16);
}

void PackBRows(const std::uint8_t* b, int64_t ldb, int64_t cols, int64_t k, int64_t kpad,
               std::uint32_t* out) {
  const auto& table = Bf16Table();
  for (int64_t p = 0; p < kpad / 2; ++p) {
    for (int64_t j = 0; j < kFp8Nr; ++j) {
      std::uint16_t even = 0, odd = 0;
      if (j < cols) {
        const std::uint8_t* row = b + j * ldb;
        if (2 * p < k) even = table[row[2 * p]];
        if (2 * p + 1 < k) odd = table[row[2 * p + 1]];
      }
      out[p * kFp8Nr + j] = Pair(even, odd);
    }
  }
}

void PackBCols(const std::uint8_t* b, int64_t ldb, int64_t cols, int64_t k, int64_t kpad,
               std::uint32_t* out) {
  const auto& table = Bf16Table();
  for (int64_t p = 0; p < kpad / 2; ++p) {
    for (int64_t j = 0; j < kFp8Nr; ++j) {
      std::uint16_t even = 0, odd = 0;
      if (j < cols) {
        if (2 * p < k) even = table[b[(2 * p) * ldb + j]];
        if (2 * p + 1 < k) odd = table[b[(2 * p + 1) * ldb + j]];
      }
      out[p * kFp8Nr + j] = Pair(even, odd);
    }
  }
}

void MicroKernel(int rows, int cols, const std::uint16_t* a, int64_t lda, const float* a_scales,
                 int64_t lds, const std::uint32_t* b, const float* b_scales, int64_t kb_begin,
                 int64_t kb_end, int64_t tail_pairs, bool c_is_zero, float* c, int64_t ldc) {
  for (int64_t kb = kb_begin; kb < kb_end; ++kb) {
    const std::uint32_t* bp = b + kb * kFp8PairsPerBlock * kFp8Nr;
    const int64_t pairs = kb + 1 == kb_end ? tail_pairs : kFp8PairsPerBlock;
    for (int64_t r = 0; r < rows; ++r) {
      const std::uint16_t* ar = a + r * lda + kb * kFp8KBlock;
      float acc[kFp8Nr] = {};
      for (int64_t p = 0; p < pairs; ++p) {
        const float a_even = Bf16ToFloat(ar[2 * p]);
        const float a_odd = Bf16ToFloat(ar[2 * p + 1]);
        for (int64_t j = 0; j < cols; ++j) {
          const std::uint32_t pair = bp[p * kFp8Nr + j];
          const float b_even = Bf16ToFloat(static_cast<std::uint16_t>(pair & 0xFFFFu));
          const float b_odd = Bf16ToFloat(static_cast<std::uint16_t>(pair >> 16));
          // The odd product first, as vdpbf16ps does (Intel SDM pseudo-code; checked on Zen 5).
          acc[j] = acc[j] + a_odd * b_odd;
          acc[j] = acc[j] + a_even * b_even;
        }
      }
      const float sa = a_scales[r * lds + kb];
      float* cr = c + r * ldc;
      const bool zero = c_is_zero && kb == kb_begin;
      for (int64_t j = 0; j < cols; ++j) {
        cr[j] = std::fma(acc[j], sa * b_scales[kb * kFp8Nr + j], zero ? 0.0f : cr[j]);
      }
    }
  }
}

constexpr Fp8GemmKernels kScalar = {"scalar", DecodeRow, PackBRows, PackBCols, MicroKernel};

}  // namespace

std::uint16_t E4M3ToBf16Bits(std::uint8_t code) { return Bf16Table()[code]; }

const Fp8GemmKernels& ScalarFp8GemmKernels() { return kScalar; }

const Fp8GemmKernels& Fp8GemmKernelsFor(const CpuContext& ctx) {
  static const Fp8GemmKernels* const simd = Avx512Bf16Fp8GemmKernels();
  return ctx.use_simd && simd != nullptr ? *simd : kScalar;
}

}  // namespace dsv3::kernels::internal
