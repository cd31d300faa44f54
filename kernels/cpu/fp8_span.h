// Internal: the inner loops of the FP8 conversions and quantisers, over one contiguous span, in a
// portable scalar version and an AVX-512 version with identical results. The public kernels
// (fp8.h, quantize.h) validate, split work over threads, and call these. Not a public API.
#ifndef DSV3_KERNELS_CPU_FP8_SPAN_H_
#define DSV3_KERNELS_CPU_FP8_SPAN_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels::internal {

// Every function handles any n >= 0 and must give the same bits as the scalar functions of fp8.h.
struct SpanKernels {
  const char* name;
  void (*encode_e4m3)(const float* x, int64_t n, std::uint8_t* out);
  void (*encode_e5m2)(const float* x, int64_t n, std::uint8_t* out);
  void (*decode_e4m3)(const std::uint8_t* codes, int64_t n, float* out);
  void (*decode_e5m2)(const std::uint8_t* codes, int64_t n, float* out);
  void (*encode_bf16)(const float* x, int64_t n, std::uint16_t* out);
  void (*decode_bf16)(const std::uint16_t* bits, int64_t n, float* out);
  // max_i bits(|x[i]|): the bits of the largest magnitude, NaN-propagating (a NaN's magnitude bits
  // exceed those of +inf). 0 for n == 0.
  std::uint32_t (*abs_max_bits)(const float* x, int64_t n);
  // acc[i] = max(acc[i], bits(|x[i]|)).
  void (*abs_max_bits_into)(const float* x, int64_t n, std::uint32_t* acc);
  // out[i] = FloatToE4M3(x[i] * inv_scale), the product rounded to FP32 first.
  void (*scale_encode_e4m3)(const float* x, int64_t n, float inv_scale, std::uint8_t* out);
  // out[i] = FloatToE4M3(x[i] * inv_scale[i]).
  void (*scale_each_encode_e4m3)(const float* x, const float* inv_scale, int64_t n,
                                 std::uint8_t* out);
  // out[i] = E4M3ToFloat(codes[i]) * scale, rounded to FP32.
  void (*decode_scale_e4m3)(const std::uint8_t* codes, int64_t n, float scale, float* out);
};

const SpanKernels& ScalarSpanKernels();
// nullptr when this build has no AVX-512 code or this CPU lacks AVX-512 F/BW/DQ/VL.
const SpanKernels* Avx512SpanKernels();
// The AVX-512 kernels when available and ctx.use_simd, else the scalar ones.
const SpanKernels& SpanKernelsFor(const CpuContext& ctx);

}  // namespace dsv3::kernels::internal

#endif  // DSV3_KERNELS_CPU_FP8_SPAN_H_
