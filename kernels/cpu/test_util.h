// Test-only helpers for the FP8 kernel tests: an FP8 reference encoder built from first principles
// (nearest representable value, ties to the even code, saturation) that shares no code with fp8.h,
// the random seed (logged; DSV3_TEST_SEED overrides it), and bit helpers. Not linked into the
// library.
#ifndef DSV3_KERNELS_CPU_TEST_UTIL_H_
#define DSV3_KERNELS_CPU_TEST_UTIL_H_

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/fp8_types.h"

namespace dsv3::kernels::testing {

inline std::uint32_t Bits(float x) { return std::bit_cast<std::uint32_t>(x); }
inline float FromBits(std::uint32_t b) { return std::bit_cast<float>(b); }

inline std::string Hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08X", v);
  return buf;
}

// The seed for a random test: DSV3_TEST_SEED if set, else `fallback`. Printed, so a failing run
// can be repeated.
inline std::uint64_t TestSeed(std::uint64_t fallback) {
  std::uint64_t seed = fallback;
  if (const char* env = std::getenv("DSV3_TEST_SEED")) seed = std::strtoull(env, nullptr, 0);
  std::printf("[   SEED   ] %s.%s seed=%llu (set DSV3_TEST_SEED to repeat)\n",
              ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name(),
              ::testing::UnitTest::GetInstance()->current_test_info()->name(),
              static_cast<unsigned long long>(seed));
  return seed;
}

// Magnitude of FP8 code `mag` (0..0x7F, sign bit clear) from the format's definition, in double.
// Returns NaN for NaN codes and +inf for the E5M2 infinity.
inline double Fp8MagnitudeFromDefinition(Fp8Format format, int mag) {
  const int exp_bits = format == Fp8Format::kE4M3 ? 4 : 5;
  const int man_bits = 7 - exp_bits;
  const int bias = format == Fp8Format::kE4M3 ? 7 : 15;
  const int e = mag >> man_bits;
  const int m = mag & ((1 << man_bits) - 1);
  if (format == Fp8Format::kE4M3 && mag == 0x7F) return NAN;
  if (format == Fp8Format::kE5M2 && e == 31) return m == 0 ? INFINITY : NAN;
  if (e == 0) return std::ldexp(static_cast<double>(m), 1 - bias - man_bits);
  return std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -man_bits), e - bias);
}

// Encodes x the slow, obvious way: the finite code nearest to |x| (ties to the even code), values
// beyond the largest finite one (and infinities) saturate, NaN gives 0x7F, the sign is kept.
class ReferenceFp8Encoder {
 public:
  explicit ReferenceFp8Encoder(Fp8Format format) {
    for (int mag = 0; mag < 0x80; ++mag) {
      const double v = Fp8MagnitudeFromDefinition(format, mag);
      if (std::isfinite(v)) values_.push_back(v);  // Increasing with mag; index == code.
    }
  }

  std::uint8_t Encode(float x) const {
    if (std::isnan(x)) return 0x7F;
    const std::uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
    const double v = std::fabs(static_cast<double>(x));
    const int last = static_cast<int>(values_.size()) - 1;
    int code;
    if (v >= values_[last]) {
      code = last;  // Saturate; also covers the tie between max and the next (unrepresentable) one.
    } else {
      // values_[lo] <= v < values_[lo + 1]
      const int lo =
          static_cast<int>(std::upper_bound(values_.begin(), values_.end(), v) - values_.begin()) -
          1;
      const double below = v - values_[lo];
      const double above = values_[lo + 1] - v;
      if (below < above) {
        code = lo;
      } else if (above < below) {
        code = lo + 1;
      } else {
        code = (lo % 2 == 0) ? lo : lo + 1;
      }
    }
    return static_cast<std::uint8_t>(sign | code);
  }

  // The non-negative finite values, index = code.
  const std::vector<double>& values() const { return values_; }

 private:
  std::vector<double> values_;
};

}  // namespace dsv3::kernels::testing

#endif  // DSV3_KERNELS_CPU_TEST_UTIL_H_
