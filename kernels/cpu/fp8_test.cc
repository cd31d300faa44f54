// Tests of the FP8/BF16 conversions that need no CUDA headers: values fixed by the formats'
// definitions, an independent nearest-even reference encoder, and agreement of the AVX-512 and
// scalar paths and of all thread counts. Bit-exactness against CUDA itself is in
// fp8_cuda_reference_test.cc.

#include "kernels/cpu/fp8.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp8_span.h"
#include "kernels/cpu/test_util.h"

namespace dsv3::kernels {
namespace {

using testing::Bits;
using testing::FromBits;
using testing::Hex;

// Floats that exercise every branch: zeros, subnormals, every FP8 value of both formats, the
// midpoints between neighbours (ties) and the floats right next to all of those, the saturation
// boundaries, infinities and NaNs, with both signs.
std::vector<float> EdgeCaseFloats() {
  std::vector<float> out;
  auto add_with_neighbours = [&](float v) {
    out.push_back(v);
    out.push_back(std::nextafter(v, 0.0f));
    out.push_back(std::nextafter(v, std::numeric_limits<float>::infinity()));
  };
  for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    const testing::ReferenceFp8Encoder ref(format);
    const std::vector<double>& v = ref.values();
    for (size_t i = 0; i < v.size(); ++i) {
      add_with_neighbours(static_cast<float>(v[i]));
      if (i + 1 < v.size()) {
        add_with_neighbours(static_cast<float>((v[i] + v[i + 1]) / 2));
      }
    }
    const double max = v.back();
    const double step = max - v[v.size() - 2];
    add_with_neighbours(static_cast<float>(max + step / 2));  // 464 / 61440: the overflow tie
    add_with_neighbours(static_cast<float>(max + step));
    add_with_neighbours(static_cast<float>(v[1] / 2));  // half the smallest subnormal
    add_with_neighbours(static_cast<float>(v[1] / 4));
  }
  for (int e = -149; e <= 127; ++e) {
    add_with_neighbours(std::ldexp(1.0f, e));  // every binade
  }
  for (float v :
       {0.0f, std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(),
        std::numeric_limits<float>::max(), 1.0f + 0x1p-8f, 1.0f + 0x1p-4f, 1.0f + 3 * 0x1p-4f}) {
    add_with_neighbours(v);
  }
  out.push_back(std::numeric_limits<float>::infinity());
  for (std::uint32_t nan : {0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0x7FA00000u}) {
    out.push_back(FromBits(nan));
  }
  const size_t n = out.size();
  for (size_t i = 0; i < n; ++i) {
    out.push_back(-out[i]);
  }
  return out;
}

// n floats whose bit patterns are uniform (all exponents equally likely) or, for every second one,
// normally distributed values at a random scale between 2^-24 and 2^24.
std::vector<float> RandomFloats(std::mt19937_64& rng, size_t n) {
  std::vector<float> out(n);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> exponent(-24, 24);
  for (size_t i = 0; i < n; ++i) {
    out[i] = (i % 2 == 0) ? FromBits(static_cast<std::uint32_t>(rng()))
                          : std::ldexp(normal(rng), exponent(rng));
  }
  return out;
}

TEST(Fp8Test, E4M3CodesDecodeToTheValuesTheFormatDefines) {
  for (int code = 0; code < 256; ++code) {
    const double expected = testing::Fp8MagnitudeFromDefinition(Fp8Format::kE4M3, code & 0x7F) *
                            ((code & 0x80) ? -1.0 : 1.0);
    const float got = E4M3ToFloat(static_cast<std::uint8_t>(code));
    if (std::isnan(expected)) {
      EXPECT_EQ(Bits(got), 0x7FFFFFFFu) << "code " << code;
    } else {
      EXPECT_EQ(Bits(got), Bits(static_cast<float>(expected))) << "code " << code;
    }
  }
  EXPECT_EQ(E4M3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(E4M3ToFloat(0x01), 0x1p-9f);
  EXPECT_EQ(E4M3ToFloat(0x08), 0x1p-6f);
  EXPECT_EQ(E4M3ToFloat(0x38), 1.0f);
  EXPECT_EQ(Bits(E4M3ToFloat(0x80)), 0x80000000u);  // -0
}

TEST(Fp8Test, E5M2CodesDecodeToTheValuesTheFormatDefines) {
  for (int code = 0; code < 256; ++code) {
    const double expected = testing::Fp8MagnitudeFromDefinition(Fp8Format::kE5M2, code & 0x7F) *
                            ((code & 0x80) ? -1.0 : 1.0);
    const float got = E5M2ToFloat(static_cast<std::uint8_t>(code));
    if (std::isnan(expected)) {
      EXPECT_EQ(Bits(got), 0x7FFFFFFFu) << "code " << code;
    } else {
      EXPECT_EQ(Bits(got), Bits(static_cast<float>(expected))) << "code " << code;
    }
  }
  EXPECT_EQ(E5M2ToFloat(0x7B), 57344.0f);
  EXPECT_EQ(E5M2ToFloat(0x7C), std::numeric_limits<float>::infinity());
  EXPECT_EQ(E5M2ToFloat(0xFC), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(E5M2ToFloat(0x01), 0x1p-16f);
  EXPECT_EQ(E5M2ToFloat(0x3C), 1.0f);
}

TEST(Fp8Test, EveryFiniteCodeSurvivesADecodeEncodeRoundTrip) {
  for (int code = 0; code < 256; ++code) {
    const auto c = static_cast<std::uint8_t>(code);
    if ((code & 0x7F) != 0x7F) {
      EXPECT_EQ(FloatToE4M3(E4M3ToFloat(c)), c) << "E4M3 code " << code;
    }
    if ((code & 0x7F) < 0x7C) {
      EXPECT_EQ(FloatToE5M2(E5M2ToFloat(c)), c) << "E5M2 code " << code;
    }
  }
}

TEST(Fp8Test, EncodingSaturatesRoundsTiesToEvenAndKeepsSignedZeros) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FloatToE4M3(464.0f), 0x7E);                       // tie 448|480 -> 448 (even)
  EXPECT_EQ(FloatToE4M3(std::nextafter(464.0f, inf)), 0x7E);  // would be 480: saturates
  EXPECT_EQ(FloatToE4M3(1e30f), 0x7E);
  EXPECT_EQ(FloatToE4M3(inf), 0x7E);
  EXPECT_EQ(FloatToE4M3(-inf), 0xFE);
  EXPECT_EQ(FloatToE4M3(std::nanf("")), 0x7F);
  EXPECT_EQ(FloatToE4M3(-std::nanf("")), 0x7F);
  EXPECT_EQ(FloatToE4M3(1.0625f), 0x38);   // 1 + 2^-4: tie between 1 and 1.125 -> 1 (even)
  EXPECT_EQ(FloatToE4M3(1.1875f), 0x3A);   // 1 + 3*2^-4: tie between 1.125 and 1.25 -> 1.25
  EXPECT_EQ(FloatToE4M3(0x1p-10f), 0x00);  // half the smallest subnormal: tie -> 0
  EXPECT_EQ(FloatToE4M3(std::nextafter(0x1p-10f, 1.0f)), 0x01);
  EXPECT_EQ(FloatToE4M3(-0x1p-12f), 0x80);  // underflow keeps the sign
  EXPECT_EQ(FloatToE4M3(-0.0f), 0x80);
  EXPECT_EQ(FloatToE5M2(61440.0f), 0x7B);  // tie 57344|65536 -> saturates
  EXPECT_EQ(FloatToE5M2(std::nextafter(61440.0f, 0.0f)), 0x7B);
  EXPECT_EQ(FloatToE5M2(inf), 0x7B);
  EXPECT_EQ(FloatToE5M2(-inf), 0xFB);
  EXPECT_EQ(FloatToE5M2(std::nanf("")), 0x7F);
  EXPECT_EQ(FloatToE5M2(0x1p-17f), 0x00);
  EXPECT_EQ(FloatToE5M2(3 * 0x1p-17f), 0x02);  // tie 1|2 subnormal steps -> 2 (even)
}

TEST(Fp8Test, EncodingMatchesANearestEvenReferenceOnEdgeCasesAndRandomFloats) {
  std::mt19937_64 rng(testing::TestSeed(20250301));
  std::vector<float> inputs = EdgeCaseFloats();
  const std::vector<float> random = RandomFloats(rng, 1 << 20);
  inputs.insert(inputs.end(), random.begin(), random.end());
  for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    const testing::ReferenceFp8Encoder ref(format);
    int64_t mismatches = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const std::uint8_t want = ref.Encode(inputs[i]);
      const std::uint8_t got = FloatToFp8(format, inputs[i]);
      if (want != got && mismatches++ < 5) {
        ADD_FAILURE() << (format == Fp8Format::kE4M3 ? "E4M3" : "E5M2") << " input[" << i
                      << "] = " << inputs[i] << " (" << Hex(Bits(inputs[i])) << "): want code "
                      << int{want} << ", got " << int{got};
      }
    }
    EXPECT_EQ(mismatches, 0) << "of " << inputs.size() << " inputs";
  }
}

TEST(Fp8Test, Bf16RoundsToNearestEvenOverflowsToInfAndKeepsSubnormals) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(1.0f + 0x1p-8f), 0x3F80);      // tie -> even
  EXPECT_EQ(FloatToBf16(1.0f + 3 * 0x1p-8f), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(FloatToBf16(std::nextafter(1.0f + 0x1p-8f, 2.0f)), 0x3F81);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(FloatToBf16(-std::numeric_limits<float>::max()), 0xFF80);
  EXPECT_EQ(FloatToBf16(0x1p-133f), 0x0001);
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBf16(-std::nanf("")), 0x7FFF);
  EXPECT_EQ(Bits(Bf16ToFloat(0x3F81)), 0x3F810000u);
  EXPECT_EQ(Bits(Bf16ToFloat(0xFFC1)), 0xFFC10000u);  // NaN payload and sign kept
}

// The AVX-512 span kernels against the scalar ones, over every length up to 40 (masked tails)
// and a long buffer.
TEST(Fp8Test, SimdAndScalarPathsGiveIdenticalBits) {
  const internal::SpanKernels* simd = internal::Avx512SpanKernels();
  if (simd == nullptr) {
    GTEST_SKIP() << "this CPU has no AVX-512; only the scalar path runs here";
  }
  const internal::SpanKernels& scalar = internal::ScalarSpanKernels();
  std::mt19937_64 rng(testing::TestSeed(77));
  std::vector<float> x = EdgeCaseFloats();
  const std::vector<float> random = RandomFloats(rng, 100000);
  x.insert(x.end(), random.begin(), random.end());
  std::vector<std::uint8_t> all_codes(256 * 3);
  for (size_t i = 0; i < all_codes.size(); ++i) {
    all_codes[i] = static_cast<std::uint8_t>(i * 7);
  }
  std::vector<std::uint16_t> bf16(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    bf16[i] = static_cast<std::uint16_t>(Bits(x[i]) >> 13);
  }

  auto expect_same = [](const auto& a, const auto& b, const char* what, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      if (std::memcmp(&a[i], &b[i], sizeof(a[i])) != 0) {
        ADD_FAILURE() << what << " n=" << n << ": first difference at element " << i;
        return;
      }
    }
  };
  std::vector<int64_t> lengths;
  for (int64_t n = 0; n <= 40; ++n) {
    lengths.push_back(n);
  }
  lengths.push_back(static_cast<int64_t>(x.size()));
  for (int64_t n : lengths) {
    const int64_t nc = std::min<int64_t>(n, static_cast<int64_t>(all_codes.size()));
    std::vector<std::uint8_t> c1(n + 1, 0xAB), c2(n + 1, 0xAB);
    std::vector<float> f1(n + 1, 1.5f), f2(n + 1, 1.5f);
    std::vector<std::uint16_t> h1(n + 1, 0xABCD), h2(n + 1, 0xABCD);
    simd->encode_e4m3(x.data(), n, c1.data());
    scalar.encode_e4m3(x.data(), n, c2.data());
    expect_same(c1, c2, "encode_e4m3", n + 1);  // +1: nothing written past the end
    simd->encode_e5m2(x.data(), n, c1.data());
    scalar.encode_e5m2(x.data(), n, c2.data());
    expect_same(c1, c2, "encode_e5m2", n + 1);
    simd->scale_encode_e4m3(x.data(), n, 0.37f, c1.data());
    scalar.scale_encode_e4m3(x.data(), n, 0.37f, c2.data());
    expect_same(c1, c2, "scale_encode_e4m3", n + 1);
    simd->scale_each_encode_e4m3(x.data(), x.data() + 1, n, c1.data());
    scalar.scale_each_encode_e4m3(x.data(), x.data() + 1, n, c2.data());
    expect_same(c1, c2, "scale_each_encode_e4m3", n + 1);
    simd->decode_e4m3(all_codes.data(), nc, f1.data());
    scalar.decode_e4m3(all_codes.data(), nc, f2.data());
    expect_same(f1, f2, "decode_e4m3", nc + 1);
    simd->decode_e5m2(all_codes.data(), nc, f1.data());
    scalar.decode_e5m2(all_codes.data(), nc, f2.data());
    expect_same(f1, f2, "decode_e5m2", nc + 1);
    simd->decode_scale_e4m3(all_codes.data(), nc, 3.0e-3f, f1.data());
    scalar.decode_scale_e4m3(all_codes.data(), nc, 3.0e-3f, f2.data());
    expect_same(f1, f2, "decode_scale_e4m3", nc + 1);
    simd->encode_bf16(x.data(), n, h1.data());
    scalar.encode_bf16(x.data(), n, h2.data());
    expect_same(h1, h2, "encode_bf16", n + 1);
    simd->decode_bf16(bf16.data(), n, f1.data());
    scalar.decode_bf16(bf16.data(), n, f2.data());
    expect_same(f1, f2, "decode_bf16", n + 1);
    EXPECT_EQ(simd->abs_max_bits(x.data(), n), scalar.abs_max_bits(x.data(), n)) << "n=" << n;
    std::vector<std::uint32_t> a1(n + 1, 5), a2(n + 1, 5);
    simd->abs_max_bits_into(x.data(), n, a1.data());
    scalar.abs_max_bits_into(x.data(), n, a2.data());
    expect_same(a1, a2, "abs_max_bits_into", n + 1);
  }
}

TEST(Fp8Test, BufferConversionsDoNotDependOnThreadCountOrSimd) {
  std::mt19937_64 rng(testing::TestSeed(5));
  const std::vector<float> x = RandomFloats(rng, 300001);
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<std::uint8_t> want_e4m3(n), want_e5m2(n);
  std::vector<std::uint16_t> want_bf16(n);
  for (int64_t i = 0; i < n; ++i) {
    want_e4m3[i] = FloatToE4M3(x[i]);
    want_e5m2[i] = FloatToE5M2(x[i]);
    want_bf16[i] = FloatToBf16(x[i]);
  }
  for (int threads : {1, 2, 3}) {
    for (bool simd : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "threads=" << threads << " simd=" << simd);
      ThreadPool pool(threads);
      const CpuContext ctx{&pool, simd};
      std::vector<std::uint8_t> codes(n);
      std::vector<float> decoded(n);
      std::vector<std::uint16_t> bf16(n);
      EncodeFp8(ctx, Fp8Format::kE4M3, x.data(), n, codes.data());
      EXPECT_EQ(codes, want_e4m3);
      DecodeFp8(ctx, Fp8Format::kE4M3, codes.data(), n, decoded.data());
      for (int64_t i = 0; i < n; ++i) {
        if (Bits(decoded[i]) != Bits(E4M3ToFloat(codes[i]))) {
          ADD_FAILURE() << "DecodeFp8 E4M3 element " << i;
          break;
        }
      }
      EncodeFp8(ctx, Fp8Format::kE5M2, x.data(), n, codes.data());
      EXPECT_EQ(codes, want_e5m2);
      EncodeBf16(ctx, x.data(), n, bf16.data());
      EXPECT_EQ(bf16, want_bf16);
      DecodeBf16(ctx, bf16.data(), n, decoded.data());
      for (int64_t i = 0; i < n; ++i) {
        if (Bits(decoded[i]) != Bits(Bf16ToFloat(bf16[i]))) {
          ADD_FAILURE() << "DecodeBf16 element " << i;
          break;
        }
      }
    }
  }
}

TEST(Fp8DeathTest, OverlappingBuffersAbortWithAMessage) {
  std::vector<float> x(64, 1.0f);
  EXPECT_DEATH(EncodeFp8(CpuContext{}, Fp8Format::kE4M3, x.data(), 64,
                         reinterpret_cast<std::uint8_t*>(x.data()) + 8),
               "EncodeFp8: input and output overlap");
  EXPECT_DEATH(DecodeBf16(CpuContext{}, nullptr, 3, x.data()), "DecodeBf16: null buffer");
  EXPECT_DEATH(EncodeBf16(CpuContext{}, x.data(), -1, nullptr), "n=-1 must be >= 0");
}

}  // namespace
}  // namespace dsv3::kernels
