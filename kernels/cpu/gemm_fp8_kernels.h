// Internal: the inner loops of the block-scaled FP8 GEMM (gemm_fp8_engine.cc) over packed
// operands, in a portable scalar version and an AVX-512 BF16 version that give identical bits.
// The packed formats are defined here; the engine allocates, packs, tiles and threads. Not a public
// API: the entries are in gemm.h and grouped_gemm.h.
//
// E4M3 values are exact in BF16, so operands are decoded to BF16 once when packed:
//   packed A (the side whose rows are output rows): [rows_pad, kpad] BF16 row-major, rows_pad =
//     rows rounded up to kMr, kpad = K rounded up to 128, zero beyond the data. Consecutive
//     (even, odd) k form one 32-bit pair.
//   packed B (64 output columns per panel): [kpad / 2, 64] 32-bit pairs, pair p of column j =
//     bf16(B[j, 2p]) | bf16(B[j, 2p + 1]) << 16, zero beyond the data (the VNNI layout of
//     vdpbf16ps).
//   scales: A [rows_pad, kb_count] (row r, K block kb), B [kb_count, 64] per panel; zero padded.
#ifndef DSV3_KERNELS_CPU_GEMM_FP8_KERNELS_H_
#define DSV3_KERNELS_CPU_GEMM_FP8_KERNELS_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels::internal {

inline constexpr int64_t kFp8Mr = 6;   // rows of a micro-tile
inline constexpr int64_t kFp8Nr = 64;  // columns of a micro-tile (= of a packed B panel)
inline constexpr int64_t kFp8KBlock = 128;
inline constexpr int64_t kFp8PairsPerBlock = kFp8KBlock / 2;

// Every function must give the same bits in both versions.
struct Fp8GemmKernels {
  const char* name;
  // out[i] = bf16(E4M3 q[i]) for i < k, 0 for k <= i < kpad.
  void (*decode_row)(const std::uint8_t* q, int64_t k, int64_t kpad, std::uint16_t* out);
  // One B panel from codes stored with the contraction along rows: column j < cols of the panel is
  // row j of b ([cols, k] with leading dimension ldb). cols <= 64.
  void (*pack_b_rows)(const std::uint8_t* b, int64_t ldb, int64_t cols, int64_t k, int64_t kpad,
                      std::uint32_t* out);
  // One B panel from codes stored with the contraction along columns: column j < cols of the
  // panel is column j of b ([k, cols] with leading dimension ldb). cols <= 64.
  void (*pack_b_cols)(const std::uint8_t* b, int64_t ldb, int64_t cols, int64_t k, int64_t kpad,
                      std::uint32_t* out);
  // The micro-kernel: for kb in [kb_begin, kb_end), in that order,
  //   P[r, j]  = FP32 sum over the block's pairs p = 0..63 (0..tail_pairs-1 for block
  //              kb_end - 1), in that order, of
  //              P = (P + a[r, 2p+1]·b[j, 2p+1]) + a[r, 2p]·b[j, 2p]  (products exact in FP32,
  //              each + rounded to nearest even; this is vdpbf16ps), starting from +0
  //   C[r, j]  = fma(P[r, j], a_scales[r, kb] * b_scales[kb, j], C[r, j])   (FP32, one rounding)
  // for r < rows (1..6), j < cols (16, 32, 48 or 64); rows r >= rows of a and c, and columns
  // j >= cols of c, are not touched. a: the panel's rows of packed A with leading dimension lda
  // (BF16 elements), a_scales: its rows with leading dimension lds, b: one packed B panel,
  // b_scales: its [kb, 64] scales, c: [rows, cols] with leading dimension ldc. With c_is_zero, C is
  // +0 before block kb_begin and its old contents are not read. tail_pairs (1..64) lets the caller
  // skip pairs that lie wholly in the zero padding of the last K block: P starts at +0 and a sum
  // that is zero is +0, so P is never -0 and adding a zero product cannot change it; skipping them
  // changes no bit.
  void (*micro_kernel)(int rows, int cols, const std::uint16_t* a, int64_t lda,
                       const float* a_scales, int64_t lds, const std::uint32_t* b,
                       const float* b_scales, int64_t kb_begin, int64_t kb_end, int64_t tail_pairs,
                       bool c_is_zero, float* c, int64_t ldc);
};

const Fp8GemmKernels& ScalarFp8GemmKernels();
// nullptr when this build has no AVX-512 BF16 code or the CPU lacks AVX-512 F/BW/VL/BF16.
const Fp8GemmKernels* Avx512Bf16Fp8GemmKernels();
// The AVX-512 BF16 kernels when available and ctx.use_simd, else the scalar ones.
const Fp8GemmKernels& Fp8GemmKernelsFor(const CpuContext& ctx);

// bf16 bits of the E4M3 code (exact; NaN codes give a BF16 NaN).
std::uint16_t E4M3ToBf16Bits(std::uint8_t code);

}  // namespace dsv3::kernels::internal

#endif  // DSV3_KERNELS_CPU_GEMM_FP8_KERNELS_H_
