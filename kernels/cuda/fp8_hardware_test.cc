// Checks the CPU FP8 (E4M3, E5M2) and BF16 codecs of kernels/cpu/fp8.h against the GPU's own
// conversion instructions for every one of the 2^32 float bit patterns, and every code's decoding.
// Skips (GTEST_SKIP) on a machine without a CUDA device.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/fp8_convert_reference.h"

namespace dsv3::kernels {
namespace {

using cuda_reference::Kind;

class Fp8HardwareTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    if (!cuda_reference::HaveGpu()) {
      GTEST_SKIP() << "no CUDA device: the hardware comparison needs a GPU";
    }
  }
};

TEST_P(Fp8HardwareTest, EveryFloatEncodesLikeTheGpu) {
  const Kind kind = GetParam();
  constexpr uint32_t kChunk = 1u << 28;
  std::vector<float> x(kChunk);
  std::vector<uint8_t> gpu8(kChunk), cpu8(kChunk);
  std::vector<uint16_t> gpu16(kind == Kind::kBf16 ? kChunk : 0);
  std::vector<uint16_t> cpu16(kind == Kind::kBf16 ? kChunk : 0);
  ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  CpuContext ctx;
  ctx.pool = &pool;
  uint64_t mismatches = 0;
  for (uint64_t base = 0; base < (uint64_t{1} << 32); base += kChunk) {
    ASSERT_EQ(cuda_reference::EncodeRange(static_cast<uint32_t>(base), kChunk, kind, gpu8.data(),
                                          gpu16.data()),
              "");
    pool.ParallelFor(kChunk, 1 << 20, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const uint32_t bits = static_cast<uint32_t>(base + i);
        std::memcpy(&x[i], &bits, 4);
      }
    });
    if (kind == Kind::kBf16) {
      EncodeBf16(ctx, x.data(), kChunk, cpu16.data());
    } else {
      EncodeFp8(ctx, kind == Kind::kE4M3 ? Fp8Format::kE4M3 : Fp8Format::kE5M2, x.data(), kChunk,
                cpu8.data());
    }
    for (uint32_t i = 0; i < kChunk; ++i) {
      const uint32_t cpu = kind == Kind::kBf16 ? cpu16[i] : cpu8[i];
      const uint32_t gpu = kind == Kind::kBf16 ? gpu16[i] : gpu8[i];
      if (cpu != gpu && mismatches++ < 5) {
        ADD_FAILURE() << "float bits 0x" << std::hex << base + i << ": cpu 0x" << cpu
                      << ", gpu 0x" << gpu;
      }
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST_P(Fp8HardwareTest, EveryCodeDecodesLikeTheGpu) {
  const Kind kind = GetParam();
  const int n = kind == Kind::kBf16 ? 65536 : 256;
  std::vector<float> gpu(n);
  ASSERT_EQ(cuda_reference::DecodeAll(kind, gpu.data()), "");
  for (int c = 0; c < n; ++c) {
    const float cpu = kind == Kind::kBf16   ? Bf16ToFloat(static_cast<uint16_t>(c))
                      : kind == Kind::kE4M3 ? E4M3ToFloat(static_cast<uint8_t>(c))
                                            : E5M2ToFloat(static_cast<uint8_t>(c));
    // NaN payloads may differ between decoders: NaN must map to NaN, everything else bit-exact.
    if (std::isnan(cpu) || std::isnan(gpu[c])) {
      EXPECT_TRUE(std::isnan(cpu) && std::isnan(gpu[c])) << "code " << c;
    } else {
      uint32_t a, b;
      std::memcpy(&a, &cpu, 4);
      std::memcpy(&b, &gpu[c], 4);
      EXPECT_EQ(a, b) << "code " << c << ": cpu " << cpu << ", gpu " << gpu[c];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, Fp8HardwareTest,
                         ::testing::Values(Kind::kE4M3, Kind::kE5M2, Kind::kBf16),
                         [](const ::testing::TestParamInfo<Kind>& info) {
                           return std::string(info.param == Kind::kE4M3   ? "E4M3"
                                              : info.param == Kind::kE5M2 ? "E5M2"
                                                                          : "BF16");
                         });

}  // namespace
}  // namespace dsv3::kernels
