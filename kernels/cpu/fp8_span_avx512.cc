// Internal: AVX-512 (F, BW, DQ, VL) versions of the span kernels, 16 lanes at a time with masked
// tails. Each lane does exactly what the scalar functions of fp8.h do. Compiled through function
// target attributes, so the rest of the library needs no -mavx512 flag and runs on any x86-64;
// Avx512SpanKernels() returns nullptr on CPUs (or non-x86 builds) without these extensions.

#include "kernels/cpu/fp8_span.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DSV3_HAVE_AVX512_SPANS 1
#if !defined(__clang__)
// GCC 12 warns inside its own AVX-512 intrinsics (_mm512_undefined_*, GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#endif

namespace dsv3::kernels::internal {

#ifdef DSV3_HAVE_AVX512_SPANS
namespace {

#define DSV3_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

DSV3_AVX512 inline __mmask16 TailMask(int64_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << remaining) - 1u);
}

DSV3_AVX512 inline __m512i Splat(std::uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }

// 16 floats -> 16 E4M3 codes in the low byte of each lane (see FloatToE4M3).
DSV3_AVX512 inline __m512i EncodeE4M3x16(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i abs = _mm512_and_si512(bits, Splat(0x7FFFFFFFu));
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(bits, 24), Splat(0x80u));
  // Normal range: round the dropped 20 bits to nearest even, rebias, saturate.
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(abs, 20), Splat(1u));
  const __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(abs, Splat(0x7FFFFu)), odd);
  __m512i normal = _mm512_sub_epi32(_mm512_srli_epi32(rounded, 20), Splat((127u - 7u) << 3));
  normal = _mm512_min_epu32(normal, Splat(0x7Eu));
  // Subnormal range: let the FPU round |x| + 2^14 to a multiple of 2^-9.
  const __m512 sum = _mm512_add_ps(_mm512_castsi512_ps(abs), _mm512_set1_ps(16384.0f));
  const __m512i subnormal = _mm512_sub_epi32(_mm512_castps_si512(sum), Splat(0x46800000u));
  const __mmask16 is_normal = _mm512_cmpge_epu32_mask(abs, Splat(0x3C800000u));
  __m512i code = _mm512_or_si512(_mm512_mask_blend_epi32(is_normal, subnormal, normal), sign);
  const __mmask16 is_nan = _mm512_cmpgt_epu32_mask(abs, Splat(0x7F800000u));
  return _mm512_mask_mov_epi32(code, is_nan, Splat(0x7Fu));
}

// 16 floats -> 16 E5M2 codes (see FloatToE5M2).
DSV3_AVX512 inline __m512i EncodeE5M2x16(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i abs = _mm512_and_si512(bits, Splat(0x7FFFFFFFu));
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(bits, 24), Splat(0x80u));
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(abs, 21), Splat(1u));
  const __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(abs, Splat(0xFFFFFu)), odd);
  __m512i normal = _mm512_sub_epi32(_mm512_srli_epi32(rounded, 21), Splat((127u - 15u) << 2));
  normal = _mm512_min_epu32(normal, Splat(0x7Bu));
  const __m512 sum = _mm512_add_ps(_mm512_castsi512_ps(abs), _mm512_set1_ps(128.0f));
  const __m512i subnormal = _mm512_sub_epi32(_mm512_castps_si512(sum), Splat(0x43000000u));
  const __mmask16 is_normal = _mm512_cmpge_epu32_mask(abs, Splat(0x38800000u));
  __m512i code = _mm512_or_si512(_mm512_mask_blend_epi32(is_normal, subnormal, normal), sign);
  const __mmask16 is_nan = _mm512_cmpgt_epu32_mask(abs, Splat(0x7F800000u));
  return _mm512_mask_mov_epi32(code, is_nan, Splat(0x7Fu));
}

// 16 E4M3 codes (one per 32-bit lane) -> 16 floats (see E4M3ToFloat).
DSV3_AVX512 inline __m512 DecodeE4M3x16(__m512i code) {
  const __m512i mag = _mm512_and_si512(code, Splat(0x7Fu));
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(code, Splat(0x80u)), 24);
  const __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(mag, 20), Splat((127u - 7u) << 23));
  const __m512i subnormal =
      _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(0x1p-9f)));
  const __mmask16 is_normal = _mm512_cmpge_epu32_mask(mag, Splat(0x08u));
  __m512i bits = _mm512_or_si512(_mm512_mask_blend_epi32(is_normal, subnormal, normal), sign);
  const __mmask16 is_nan = _mm512_cmpeq_epi32_mask(mag, Splat(0x7Fu));
  bits = _mm512_mask_mov_epi32(bits, is_nan, Splat(0x7FFFFFFFu));
  return _mm512_castsi512_ps(bits);
}

// 16 E5M2 codes -> 16 floats (see E5M2ToFloat).
DSV3_AVX512 inline __m512 DecodeE5M2x16(__m512i code) {
  const __m512i mag = _mm512_and_si512(code, Splat(0x7Fu));
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(code, Splat(0x80u)), 24);
  const __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(mag, 21), Splat((127u - 15u) << 23));
  const __m512i subnormal =
      _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(0x1p-16f)));
  const __mmask16 is_normal = _mm512_cmpge_epu32_mask(mag, Splat(0x04u));
  __m512i bits = _mm512_mask_blend_epi32(is_normal, subnormal, normal);
  const __mmask16 is_inf = _mm512_cmpeq_epi32_mask(mag, Splat(0x7Cu));
  bits = _mm512_or_si512(_mm512_mask_mov_epi32(bits, is_inf, Splat(0x7F800000u)), sign);
  const __mmask16 is_nan = _mm512_cmpgt_epu32_mask(mag, Splat(0x7Cu));
  bits = _mm512_mask_mov_epi32(bits, is_nan, Splat(0x7FFFFFFFu));
  return _mm512_castsi512_ps(bits);
}

// Loads and stores of 16 lanes. Only the last, partial group of a span uses masked forms: on some
// CPUs (AMD Zen) masked stores to memory are several times slower than plain ones.
DSV3_AVX512 inline __m512 LoadFloats(const float* p, int64_t remaining) {
  return remaining >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(TailMask(remaining), p);
}
DSV3_AVX512 inline void StoreFloats(float* p, __m512 v, int64_t remaining) {
  if (remaining >= 16) {
    _mm512_storeu_ps(p, v);
  } else {
    _mm512_mask_storeu_ps(p, TailMask(remaining), v);
  }
}
DSV3_AVX512 inline __m512i LoadU32(const std::uint32_t* p, int64_t remaining) {
  return remaining >= 16 ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi32(TailMask(remaining), p);
}
DSV3_AVX512 inline void StoreU32(std::uint32_t* p, __m512i v, int64_t remaining) {
  if (remaining >= 16) {
    _mm512_storeu_si512(p, v);
  } else {
    _mm512_mask_storeu_epi32(p, TailMask(remaining), v);
  }
}
// 16 bytes, zero-extended to one per 32-bit lane.
DSV3_AVX512 inline __m512i LoadBytes(const std::uint8_t* p, int64_t remaining) {
  const __m128i bytes = remaining >= 16 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                                        : _mm_maskz_loadu_epi8(TailMask(remaining), p);
  return _mm512_cvtepu8_epi32(bytes);
}
// The low byte of each 32-bit lane.
DSV3_AVX512 inline void StoreBytes(std::uint8_t* p, __m512i v, int64_t remaining) {
  if (remaining >= 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v));
  } else {
    _mm512_mask_cvtepi32_storeu_epi8(p, TailMask(remaining), v);
  }
}
DSV3_AVX512 inline __m512i LoadHalves(const std::uint16_t* p, int64_t remaining) {
  const __m256i halves = remaining >= 16 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                         : _mm256_maskz_loadu_epi16(TailMask(remaining), p);
  return _mm512_cvtepu16_epi32(halves);
}
DSV3_AVX512 inline void StoreHalves(std::uint16_t* p, __m512i v, int64_t remaining) {
  if (remaining >= 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(v));
  } else {
    _mm512_mask_cvtepi32_storeu_epi16(p, TailMask(remaining), v);
  }
}

DSV3_AVX512 void EncodeE4M3(const float* x, int64_t n, std::uint8_t* out) {
  for (int64_t i = 0; i < n; i += 16) {
    StoreBytes(out + i, EncodeE4M3x16(LoadFloats(x + i, n - i)), n - i);
  }
}

DSV3_AVX512 void EncodeE5M2(const float* x, int64_t n, std::uint8_t* out) {
  for (int64_t i = 0; i < n; i += 16) {
    StoreBytes(out + i, EncodeE5M2x16(LoadFloats(x + i, n - i)), n - i);
  }
}

DSV3_AVX512 void DecodeE4M3(const std::uint8_t* codes, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    StoreFloats(out + i, DecodeE4M3x16(LoadBytes(codes + i, n - i)), n - i);
  }
}

DSV3_AVX512 void DecodeE5M2(const std::uint8_t* codes, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    StoreFloats(out + i, DecodeE5M2x16(LoadBytes(codes + i, n - i)), n - i);
  }
}

// Integer round-to-nearest-even, like FloatToBf16; the AVX512-BF16 instruction (vcvtneps2bf16)
// is not used because it flushes subnormal inputs to zero and keeps NaN payloads.
DSV3_AVX512 void EncodeBf16(const float* x, int64_t n, std::uint16_t* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __m512i bits = _mm512_castps_si512(LoadFloats(x + i, n - i));
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), Splat(1u));
    __m512i r =
        _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, Splat(0x7FFFu)), odd), 16);
    const __m512i abs = _mm512_and_si512(bits, Splat(0x7FFFFFFFu));
    r = _mm512_mask_mov_epi32(r, _mm512_cmpgt_epu32_mask(abs, Splat(0x7F800000u)), Splat(0x7FFFu));
    StoreHalves(out + i, r, n - i);
  }
}

DSV3_AVX512 void DecodeBf16(const std::uint16_t* bits, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __m512i wide = LoadHalves(bits + i, n - i);
    StoreFloats(out + i, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)), n - i);
  }
}

DSV3_AVX512 std::uint32_t AbsMaxBits(const float* x, int64_t n) {
  __m512i acc = _mm512_setzero_si512();  // Masked-off lanes load as +0, which changes no max.
  for (int64_t i = 0; i < n; i += 16) {
    const __m512i bits = _mm512_castps_si512(LoadFloats(x + i, n - i));
    acc = _mm512_max_epu32(acc, _mm512_and_si512(bits, Splat(0x7FFFFFFFu)));
  }
  return static_cast<std::uint32_t>(_mm512_reduce_max_epu32(acc));
}

DSV3_AVX512 void AbsMaxBitsInto(const float* x, int64_t n, std::uint32_t* acc) {
  for (int64_t i = 0; i < n; i += 16) {
    const __m512i bits = _mm512_castps_si512(LoadFloats(x + i, n - i));
    const __m512i old = LoadU32(acc + i, n - i);
    StoreU32(acc + i, _mm512_max_epu32(old, _mm512_and_si512(bits, Splat(0x7FFFFFFFu))), n - i);
  }
}

DSV3_AVX512 void ScaleEncodeE4M3(const float* x, int64_t n, float inv_scale, std::uint8_t* out) {
  const __m512 inv = _mm512_set1_ps(inv_scale);
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 scaled = _mm512_mul_ps(LoadFloats(x + i, n - i), inv);
    StoreBytes(out + i, EncodeE4M3x16(scaled), n - i);
  }
}

DSV3_AVX512 void ScaleEachEncodeE4M3(const float* x, const float* inv_scale, int64_t n,
                                     std::uint8_t* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 scaled = _mm512_mul_ps(LoadFloats(x + i, n - i), LoadFloats(inv_scale + i, n - i));
    StoreBytes(out + i, EncodeE4M3x16(scaled), n - i);
  }
}

DSV3_AVX512 void DecodeScaleE4M3(const std::uint8_t* codes, int64_t n, float scale, float* out) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < n; i += 16) {
    StoreFloats(out + i, _mm512_mul_ps(DecodeE4M3x16(LoadBytes(codes + i, n - i)), s), n - i);
  }
}

constexpr SpanKernels kAvx512 = {
    .name = "avx512",
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

const SpanKernels* Avx512SpanKernels() {
  const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return supported ? &kAvx512 : nullptr;
}

#else  // !DSV3_HAVE_AVX512_SPANS

const SpanKernels* Avx512SpanKernels() { return nullptr; }

#endif  // DSV3_HAVE_AVX512_SPANS

}  // namespace dsv3::kernels::internal
