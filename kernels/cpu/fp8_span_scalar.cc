// Internal: the portable scalar span kernels (the reference for the AVX-512 ones) and the choice
// between the two. Plain loops over the scalar conversions of fp8.h.

#include <algorithm>
#include <bit>

#include "kernels/cpu/fp8.h"
#include "kernels/cpu/fp8_span.h"

namespace dsv3::kernels::internal {
namespace {

void EncodeE4M3(const float* x, int64_t n, std::uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = FloatToE4M3(x[i]);
  }
}
void EncodeE5M2(const float* x, int64_t n, std::uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = FloatToE5M2(x[i]);
  }
}
void DecodeE4M3(const std::uint8_t* codes, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = E4M3ToFloat(codes[i]);
  }
}
void DecodeE5M2(const std::uint8_t* codes, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = E5M2ToFloat(codes[i]);
  }
}
void EncodeBf16(const float* x, int64_t n, std::uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = FloatToBf16(x[i]);
  }
}
void DecodeBf16(const std::uint16_t* bits, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = Bf16ToFloat(bits[i]);
  }
}
std::uint32_t AbsMaxBits(const float* x, int64_t n) {
  std::uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    m = std::max(m, std::bit_cast<std::uint32_t>(x[i]) & 0x7FFFFFFFu);
  }
  return m;
}
void AbsMaxBitsInto(const float* x, int64_t n, std::uint32_t* acc) {
  for (int64_t i = 0; i < n; ++i) {
    acc[i] = std::max(acc[i], std::bit_cast<std::uint32_t>(x[i]) & 0x7FFFFFFFu);
  }
}
void ScaleEncodeE4M3(const float* x, int64_t n, float inv_scale, std::uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = FloatToE4M3(x[i] * inv_scale);
  }
}
void ScaleEachEncodeE4M3(const float* x, const float* inv_scale, int64_t n, std::uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = FloatToE4M3(x[i] * inv_scale[i]);
  }
}
void DecodeScaleE4M3(const std::uint8_t* codes, int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = E4M3ToFloat(codes[i]) * scale;
  }
}

constexpr SpanKernels kScalar = {
    .name = "scalar",
    .encode_e4m3 = EncodeE4M3,
    .encode_e5m2 = EncodeE5M2,
    .decode_e4m3 = DecodeE4M3,
    .decode_e5m2 = DecodeE5M2,
    .encode_bf16 = EncodeBf16,
    .decode_bf16 = DecodeBf16,
    .abs_max_bits = AbsMaxBits,
    .abs_max_bits_into = AbsMaxBitsInto,
    .scale_encode_e4m3 = ScaleEncodeE4M3,
    .scale_each_encode_e4m3 = ScaleEachEncodeE4M3,
    .decode_scale_e4m3 = DecodeScaleE4M3,
};

}  // namespace

const SpanKernels& ScalarSpanKernels() { return kScalar; }

const SpanKernels& SpanKernelsFor(const CpuContext& ctx) {
  static const SpanKernels* const avx512 = Avx512SpanKernels();
  return (ctx.use_simd && avx512 != nullptr) ? *avx512 : kScalar;
}

}  // namespace dsv3::kernels::internal
