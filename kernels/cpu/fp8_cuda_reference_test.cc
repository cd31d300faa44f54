// Bit-exactness of the FP8 and BF16 conversions against CUDA's own host conversion functions
// (cuda_fp8.h, cuda_bf16.h, compiled by the C++ compiler; no GPU or nvcc involved): all codes,
// edge cases, millions of random floats, and a sweep over the 2^32 float bit patterns (strided by
// default; DSV3_TEST_EXHAUSTIVE=1 for all of them).
// Built only where those headers exist; it never skips.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/fp8_span.h"
#include "kernels/cpu/test_util.h"

namespace dsv3::kernels {
namespace {

using testing::Bits;
using testing::FromBits;
using testing::Hex;

__nv_fp8_interpretation_t CudaFormat(Fp8Format format) {
  return format == Fp8Format::kE4M3 ? __NV_E4M3 : __NV_E5M2;
}
const char* Name(Fp8Format format) { return format == Fp8Format::kE4M3 ? "E4M3" : "E5M2"; }

std::uint8_t CudaEncode(Fp8Format format, float x) {
  return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, CudaFormat(format));
}

float CudaDecode(Fp8Format format, std::uint8_t code) {
  const __half_raw half = __nv_cvt_fp8_to_halfraw(code, CudaFormat(format));
  return __half2float(__half(half));
}

std::uint16_t CudaEncodeBf16(float x) {
  const __nv_bfloat16_raw raw = __float2bfloat16_rn(x);
  return raw.x;
}

float CudaDecodeBf16(std::uint16_t bits) {
  __nv_bfloat16_raw raw;
  raw.x = bits;
  return __bfloat162float(__nv_bfloat16(raw));
}

// All the float paths this library has for a conversion: the scalar function, and the buffer
// function through the scalar and (where the CPU has it) the AVX-512 span kernels.
std::vector<CpuContext> AllPaths() {
  std::vector<CpuContext> paths = {CpuContext{nullptr, false}};
  if (internal::Avx512SpanKernels() != nullptr) {
    paths.push_back(CpuContext{nullptr, true});
  }
  return paths;
}

// Compares our encoding of `inputs` (scalar function and every buffer path) with CUDA's; reports
// the first few differences and the count.
void ExpectEncodingMatchesCuda(Fp8Format format, const std::vector<float>& inputs) {
  const int64_t n = static_cast<int64_t>(inputs.size());
  std::vector<std::uint8_t> want(n);
  for (int64_t i = 0; i < n; ++i) {
    want[i] = CudaEncode(format, inputs[i]);
  }
  auto report = [&](const char* path, const std::vector<std::uint8_t>& got) {
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (got[i] != want[i] && mismatches++ < 5) {
        ADD_FAILURE() << Name(format) << " " << path << ": input[" << i << "] = " << inputs[i]
                      << " (" << Hex(Bits(inputs[i])) << "): CUDA gives " << int{want[i]}
                      << ", we give " << int{got[i]};
      }
    }
    EXPECT_EQ(mismatches, 0) << Name(format) << " " << path << ": mismatches of " << n;
  };
  std::vector<std::uint8_t> got(n);
  for (int64_t i = 0; i < n; ++i) {
    got[i] = FloatToFp8(format, inputs[i]);
  }
  report("scalar function", got);
  for (const CpuContext& ctx : AllPaths()) {
    std::fill(got.begin(), got.end(), 0xAA);
    EncodeFp8(ctx, format, inputs.data(), n, got.data());
    report(ctx.use_simd ? "EncodeFp8 (AVX-512)" : "EncodeFp8 (scalar)", got);
  }
}

void ExpectBf16EncodingMatchesCuda(const std::vector<float>& inputs) {
  const int64_t n = static_cast<int64_t>(inputs.size());
  std::vector<std::uint16_t> want(n);
  for (int64_t i = 0; i < n; ++i) {
    want[i] = CudaEncodeBf16(inputs[i]);
  }
  auto report = [&](const char* path, const std::vector<std::uint16_t>& got) {
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (got[i] != want[i] && mismatches++ < 5) {
        ADD_FAILURE() << "BF16 " << path << ": input[" << i << "] = " << inputs[i] << " ("
                      << Hex(Bits(inputs[i])) << "): CUDA gives " << want[i] << ", we give "
                      << got[i];
      }
    }
    EXPECT_EQ(mismatches, 0) << "BF16 " << path << ": mismatches of " << n;
  };
  std::vector<std::uint16_t> got(n);
  for (int64_t i = 0; i < n; ++i) {
    got[i] = FloatToBf16(inputs[i]);
  }
  report("scalar function", got);
  for (const CpuContext& ctx : AllPaths()) {
    EncodeBf16(ctx, inputs.data(), n, got.data());
    report(ctx.use_simd ? "EncodeBf16 (AVX-512)" : "EncodeBf16 (scalar)", got);
  }
}

// Zeros, subnormals, every binade's power of two and its neighbours, every FP8 value of both
// formats, the exact midpoints (ties) between neighbouring FP8 values and the floats on either
// side, the saturation boundaries, +-inf and NaNs; both signs.
std::vector<float> EdgeCaseFloats() {
  std::vector<float> out;
  auto add_with_neighbours = [&](float v) {
    out.push_back(v);
    out.push_back(std::nextafter(v, 0.0f));
    out.push_back(std::nextafter(v, std::numeric_limits<float>::infinity()));
  };
  for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    std::vector<float> values;
    for (int code = 0; code < 0x80; ++code) {
      const float v = CudaDecode(format, static_cast<std::uint8_t>(code));
      if (std::isfinite(v)) {
        values.push_back(v);
      }
    }
    for (size_t i = 0; i < values.size(); ++i) {
      add_with_neighbours(values[i]);
      if (i + 1 < values.size()) {
        add_with_neighbours((values[i] + values[i + 1]) / 2);  // exact
      }
    }
    const float max = values.back();
    const float step = max - values[values.size() - 2];
    add_with_neighbours(max + step / 2);  // 464 (E4M3) / 61440 (E5M2)
    add_with_neighbours(max + step);
    add_with_neighbours(2 * max);
    add_with_neighbours(values[1] / 2);  // half the smallest subnormal
    add_with_neighbours(values[1] / 4);
    add_with_neighbours(3 * values[1] / 2);
  }
  for (int e = -149; e <= 127; ++e) {
    add_with_neighbours(std::ldexp(1.0f, e));
    add_with_neighbours(std::ldexp(1.0f + 0x1p-8f, e));  // BF16 ties in every binade
    add_with_neighbours(std::ldexp(1.0f + 3 * 0x1p-8f, e));
  }
  for (float v : {0.0f, std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(),
                  std::numeric_limits<float>::max()}) {
    add_with_neighbours(v);
  }
  out.push_back(std::numeric_limits<float>::infinity());
  for (std::uint32_t nan : {0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0x7FA00000u, 0x7FBFFFFFu}) {
    out.push_back(FromBits(nan));
  }
  const size_t n = out.size();
  for (size_t i = 0; i < n; ++i) {
    out.push_back(-out[i]);
  }
  return out;
}

// Random floats: uniform bit patterns (every exponent) and normal values at random scales.
std::vector<float> RandomFloats(std::uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::vector<float> out(n);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> exponent(-30, 30);
  for (size_t i = 0; i < n; ++i) {
    out[i] = (i % 2 == 0) ? FromBits(static_cast<std::uint32_t>(rng()))
                          : std::ldexp(normal(rng), exponent(rng));
  }
  return out;
}

TEST(Fp8CudaReferenceTest, AllE4M3CodesDecodeExactlyAsCudaDoes) {
  std::vector<std::uint8_t> codes(256);
  for (int c = 0; c < 256; ++c) {
    codes[c] = static_cast<std::uint8_t>(c);
  }
  for (const CpuContext& ctx : AllPaths()) {
    std::vector<float> decoded(256);
    DecodeFp8(ctx, Fp8Format::kE4M3, codes.data(), 256, decoded.data());
    for (int c = 0; c < 256; ++c) {
      const std::uint32_t want = Bits(CudaDecode(Fp8Format::kE4M3, codes[c]));
      EXPECT_EQ(Hex(Bits(E4M3ToFloat(codes[c]))), Hex(want)) << "scalar, code " << c;
      EXPECT_EQ(Hex(Bits(decoded[c])), Hex(want))
          << "DecodeFp8 simd=" << ctx.use_simd << ", code " << c;
    }
  }
}

TEST(Fp8CudaReferenceTest, AllE5M2CodesDecodeExactlyAsCudaDoes) {
  std::vector<std::uint8_t> codes(256);
  for (int c = 0; c < 256; ++c) {
    codes[c] = static_cast<std::uint8_t>(c);
  }
  for (const CpuContext& ctx : AllPaths()) {
    std::vector<float> decoded(256);
    DecodeFp8(ctx, Fp8Format::kE5M2, codes.data(), 256, decoded.data());
    for (int c = 0; c < 256; ++c) {
      const std::uint32_t want = Bits(CudaDecode(Fp8Format::kE5M2, codes[c]));
      EXPECT_EQ(Hex(Bits(E5M2ToFloat(codes[c]))), Hex(want)) << "scalar, code " << c;
      EXPECT_EQ(Hex(Bits(decoded[c])), Hex(want))
          << "DecodeFp8 simd=" << ctx.use_simd << ", code " << c;
    }
  }
}

TEST(Fp8CudaReferenceTest, AllBf16CodesDecodeExactlyAsCudaDoes) {
  std::vector<std::uint16_t> codes(1 << 16);
  for (int c = 0; c < (1 << 16); ++c) {
    codes[c] = static_cast<std::uint16_t>(c);
  }
  for (const CpuContext& ctx : AllPaths()) {
    std::vector<float> decoded(codes.size());
    DecodeBf16(ctx, codes.data(), static_cast<int64_t>(codes.size()), decoded.data());
    int64_t mismatches = 0;
    for (int c = 0; c < (1 << 16); ++c) {
      const std::uint32_t want = Bits(CudaDecodeBf16(codes[c]));
      if ((Bits(decoded[c]) != want || Bits(Bf16ToFloat(codes[c])) != want) && mismatches++ < 5) {
        ADD_FAILURE() << "BF16 code " << c << ": CUDA " << Hex(want) << ", we "
                      << Hex(Bits(Bf16ToFloat(codes[c]))) << " / " << Hex(Bits(decoded[c]));
      }
    }
    EXPECT_EQ(mismatches, 0) << "simd=" << ctx.use_simd;
  }
}

TEST(Fp8CudaReferenceTest, EdgeCasesEncodeExactlyAsCudaDoes) {
  const std::vector<float> inputs = EdgeCaseFloats();
  ExpectEncodingMatchesCuda(Fp8Format::kE4M3, inputs);
  ExpectEncodingMatchesCuda(Fp8Format::kE5M2, inputs);
  ExpectBf16EncodingMatchesCuda(inputs);
}

TEST(Fp8CudaReferenceTest, MillionsOfRandomFloatsEncodeExactlyAsCudaDoes) {
  const std::vector<float> inputs = RandomFloats(testing::TestSeed(0x5EED), 4 << 20);
  ExpectEncodingMatchesCuda(Fp8Format::kE4M3, inputs);
  ExpectEncodingMatchesCuda(Fp8Format::kE5M2, inputs);
  ExpectBf16EncodingMatchesCuda(inputs);
}

// The stride of the float bit-pattern sweeps. All 2^32 patterns take about 12 s per FP8 format on
// 2 cores (CUDA's host conversion is ~1.5 ns), so the default visits every 13th pattern (~330
// million, every binade densely); DSV3_TEST_EXHAUSTIVE=1 makes the sweeps exhaustive.
std::uint32_t SweepStride() {
  const char* env = std::getenv("DSV3_TEST_EXHAUSTIVE");
  return (env != nullptr && std::string(env) == "1") ? 1 : 13;
}

// Sweeps the float bit patterns i * stride (i < 2^32 / stride; stride odd, so all distinct; 1 is
// exhaustive) on all hardware threads, comparing the buffer path (AVX-512 where available) and the
// scalar function with `cuda` (a function of the float returning the code). Returns the number of
// mismatches and reports the first ones.
template <typename CudaFn, typename BufferFn, typename ScalarFn>
int64_t SweepFloatBits(const char* what, std::uint32_t stride, CudaFn cuda, BufferFn buffer,
                       ScalarFn scalar) {
  const std::uint64_t count = (std::uint64_t{1} << 32) / stride;
  constexpr std::uint64_t kBlock = 1 << 14;
  const std::uint64_t blocks = (count + kBlock - 1) / kBlock;
  const unsigned num_threads = std::max(1u, std::thread::hardware_concurrency());
  std::atomic<std::uint64_t> next_block{0};
  std::atomic<int64_t> mismatches{0};
  std::mutex report_mu;
  std::vector<std::string> reports;
  auto work = [&] {
    std::vector<float> x(kBlock);
    using Code = decltype(cuda(0.0f));
    std::vector<Code> got(kBlock);
    for (std::uint64_t b = next_block++; b < blocks; b = next_block++) {
      const std::uint64_t begin = b * kBlock;
      const std::uint64_t n = std::min(kBlock, count - begin);
      for (std::uint64_t i = 0; i < n; ++i) {
        x[i] = FromBits(static_cast<std::uint32_t>((begin + i) * stride));
      }
      buffer(x.data(), static_cast<int64_t>(n), got.data());
      for (std::uint64_t i = 0; i < n; ++i) {
        const Code want = cuda(x[i]);
        if (got[i] != want || scalar(x[i]) != want) {
          if (mismatches++ < 5) {
            std::lock_guard<std::mutex> lock(report_mu);
            reports.push_back(std::string(what) + ": float bits " + Hex(Bits(x[i])) + ": CUDA " +
                              std::to_string(want) + ", buffer path " + std::to_string(got[i]) +
                              ", scalar " + std::to_string(scalar(x[i])));
          }
        }
      }
    }
  };
  std::vector<std::thread> threads;
  for (unsigned t = 1; t < num_threads; ++t) {
    threads.emplace_back(work);
  }
  work();
  for (std::thread& t : threads) {
    t.join();
  }
  for (const std::string& r : reports) {
    ADD_FAILURE() << r;
  }
  std::printf("[  SWEEP   ] %s: %llu float bit patterns (stride %u), %u threads\n", what,
              static_cast<unsigned long long>(count), stride, num_threads);
  return mismatches;
}

TEST(Fp8CudaReferenceTest, SweptFloatBitPatternsEncodeToE4M3ExactlyAsCudaDoes) {
  const CpuContext ctx;  // AVX-512 where the CPU has it
  const internal::SpanKernels& k = internal::SpanKernelsFor(ctx);
  EXPECT_EQ(SweepFloatBits(
                "E4M3", SweepStride(), [](float x) { return CudaEncode(Fp8Format::kE4M3, x); },
                k.encode_e4m3, [](float x) { return FloatToE4M3(x); }),
            0);
}

TEST(Fp8CudaReferenceTest, SweptFloatBitPatternsEncodeToE5M2ExactlyAsCudaDoes) {
  const CpuContext ctx;  // AVX-512 where the CPU has it
  const internal::SpanKernels& k = internal::SpanKernelsFor(ctx);
  EXPECT_EQ(SweepFloatBits(
                "E5M2", SweepStride(), [](float x) { return CudaEncode(Fp8Format::kE5M2, x); },
                k.encode_e5m2, [](float x) { return FloatToE5M2(x); }),
            0);
}

TEST(Fp8CudaReferenceTest, SweptFloatBitPatternsEncodeToBf16ExactlyAsCudaDoes) {
  const CpuContext ctx;  // AVX-512 where the CPU has it
  const internal::SpanKernels& k = internal::SpanKernelsFor(ctx);
  EXPECT_EQ(SweepFloatBits(
                "BF16", SweepStride(), [](float x) { return CudaEncodeBf16(x); }, k.encode_bf16,
                [](float x) { return FloatToBf16(x); }),
            0);
}

}  // namespace
}  // namespace dsv3::kernels
