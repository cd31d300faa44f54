// FP8 (E4M3, E5M2) and BF16 conversions on the CPU, bit-identical to CUDA's own conversions
// (cuda_fp8.h __nv_cvt_float_to_fp8(x, __NV_SATFINITE, fmt), __nv_cvt_fp8_to_halfraw, cuda_bf16.h
// __float2bfloat16_rn, __bfloat162float). Scalar functions for single values, and buffer functions
// (AVX-512 where the CPU has it) for whole arrays. Scaling and tiling live in
// kernels/cpu/quantize.h.
//
// Encoding FP32 -> FP8 (both formats):
//   - round to nearest, ties to even, at every binade and in the subnormal range;
//   - saturating ("satfinite"): a finite value beyond the largest finite code, and +-inf, become
//     +-max (448 for E4M3, 57344 for E5M2); for E4M3 everything above 464 saturates, values in
//     (448, 464] round to 448; for E5M2 everything at or above 61440 saturates;
//   - |x| <= half the smallest subnormal (2^-10 for E4M3, 2^-17 for E5M2) becomes a signed zero;
//   - NaN (any sign or payload) becomes 0x7F, the positive NaN code.
// Decoding FP8 -> FP32 is exact; every NaN code decodes to the FP32 NaN 0x7FFFFFFF (sign dropped),
// E5M2 infinities to +-inf.
// FP32 -> BF16 rounds to nearest even (overflow gives +-inf, subnormals are kept), NaN becomes
// 0x7FFF; BF16 -> FP32 is exact (NaN payloads kept).
// The scalar functions assume the default FP environment (round to nearest); FTZ/DAZ don't matter.
#ifndef DSV3_KERNELS_CPU_FP8_H_
#define DSV3_KERNELS_CPU_FP8_H_

#include <bit>
#include <cstdint>

#include "kernels/cpu/context.h"
#include "kernels/fp8_types.h"

namespace dsv3::kernels {

// ---- Scalar conversions ---------------------------------------------------------------------

inline std::uint8_t FloatToE4M3(float x) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  const std::uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return 0x7F;  // NaN
  const std::uint32_t sign = (bits >> 24) & 0x80u;
  std::uint32_t mag;
  if (abs >= 0x3C800000u) {  // |x| >= 2^-6, the smallest normal: drop 20 mantissa bits, RNE.
    const std::uint32_t rounded = abs + 0x7FFFFu + ((abs >> 20) & 1u);
    mag = (rounded >> 20) - ((127u - 7u) << 3);  // Rebias the exponent from 127 to 7.
    if (mag > 0x7Eu) mag = 0x7Eu;                // Saturate (0x7F would be NaN).
  } else {
    // Subnormal range: adding 2^14 (whose ulp is 2^-9, the E4M3 subnormal step) makes the FPU
    // round |x| to a multiple of 2^-9 with ties to even; the low bits are the code (0..8).
    const float sum = std::bit_cast<float>(abs) + 16384.0f;
    mag = std::bit_cast<std::uint32_t>(sum) - 0x46800000u;  // bits of 2^14
  }
  return static_cast<std::uint8_t>(sign | mag);
}

inline std::uint8_t FloatToE5M2(float x) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  const std::uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return 0x7F;  // NaN
  const std::uint32_t sign = (bits >> 24) & 0x80u;
  std::uint32_t mag;
  if (abs >= 0x38800000u) {  // |x| >= 2^-14: drop 21 mantissa bits, RNE.
    const std::uint32_t rounded = abs + 0xFFFFFu + ((abs >> 21) & 1u);
    mag = (rounded >> 21) - ((127u - 15u) << 2);
    if (mag > 0x7Bu) mag = 0x7Bu;  // Saturate (0x7C is inf).
  } else {
    // Same trick with 2^7, whose ulp is 2^-16, the E5M2 subnormal step.
    const float sum = std::bit_cast<float>(abs) + 128.0f;
    mag = std::bit_cast<std::uint32_t>(sum) - 0x43000000u;  // bits of 2^7
  }
  return static_cast<std::uint8_t>(sign | mag);
}

inline float E4M3ToFloat(std::uint8_t code) {
  const std::uint32_t sign = static_cast<std::uint32_t>(code & 0x80u) << 24;
  const std::uint32_t mag = code & 0x7Fu;
  if (mag == 0x7Fu) return std::bit_cast<float>(0x7FFFFFFFu);  // NaN
  if (mag >= 0x08u) return std::bit_cast<float>(sign | ((mag << 20) + ((127u - 7u) << 23)));
  // Subnormal or zero: mag * 2^-9, exact.
  const float value = static_cast<float>(mag) * 0x1p-9f;
  return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(value));
}

inline float E5M2ToFloat(std::uint8_t code) {
  const std::uint32_t sign = static_cast<std::uint32_t>(code & 0x80u) << 24;
  const std::uint32_t mag = code & 0x7Fu;
  if (mag > 0x7Cu) return std::bit_cast<float>(0x7FFFFFFFu);          // NaN
  if (mag == 0x7Cu) return std::bit_cast<float>(sign | 0x7F800000u);  // +-inf
  if (mag >= 0x04u) return std::bit_cast<float>(sign | ((mag << 21) + ((127u - 15u) << 23)));
  const float value = static_cast<float>(mag) * 0x1p-16f;
  return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(value));
}

inline std::uint16_t FloatToBf16(float x) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;  // NaN
  return static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

inline float Bf16ToFloat(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

inline std::uint8_t FloatToFp8(Fp8Format format, float x) {
  return format == Fp8Format::kE4M3 ? FloatToE4M3(x) : FloatToE5M2(x);
}

inline float Fp8ToFloat(Fp8Format format, std::uint8_t code) {
  return format == Fp8Format::kE4M3 ? E4M3ToFloat(code) : E5M2ToFloat(code);
}

// ---- Buffer conversions ---------------------------------------------------------------------
// Element i of the output is the scalar conversion of element i of the input, whatever the
// thread count or instruction set. n >= 0; input and output must not overlap (aborts otherwise).

// x: [n] FP32 -> codes: [n] FP8 codes of `format`.
void EncodeFp8(const CpuContext& ctx, Fp8Format format, const float* x, int64_t n,
               std::uint8_t* codes);

// codes: [n] FP8 codes of `format` -> x: [n] FP32.
void DecodeFp8(const CpuContext& ctx, Fp8Format format, const std::uint8_t* codes, int64_t n,
               float* x);

// x: [n] FP32 -> bf16: [n] BF16 bits.
void EncodeBf16(const CpuContext& ctx, const float* x, int64_t n, std::uint16_t* bf16);

// bf16: [n] BF16 bits -> x: [n] FP32.
void DecodeBf16(const CpuContext& ctx, const std::uint16_t* bf16, int64_t n, float* x);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_FP8_H_
