// Tests of the fine-grained quantisers against a float64 reference written here from the spec
// (spec §5.2; the exact rules are in quantize.h): amax, scales and codes bit for bit, partial
// tiles, ue8m0 scales, the transposed re-quantisation, and dequantisation error bounds.

#include "kernels/cpu/quantize.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/test_util.h"

namespace dsv3::kernels {
namespace {

using testing::Bits;
using testing::Hex;

// ---- Float64 reference ------------------------------------------------------------------------

const testing::ReferenceFp8Encoder& E4M3Reference() {
  static const testing::ReferenceFp8Encoder* const ref =
      new testing::ReferenceFp8Encoder(Fp8Format::kE4M3);
  return *ref;
}

double DecodeReference(std::uint8_t code) {
  const double mag = testing::Fp8MagnitudeFromDefinition(Fp8Format::kE4M3, code & 0x7F);
  return (code & 0x80) ? -mag : mag;
}

// A float64 computation rounded once to FP32 is the correctly rounded FP32 result for a single
// +, -, *, / of two floats (53 >= 2 * 24 + 2), which is what the kernels' FP32 ops produce.
float RoundToFloat(double v) { return static_cast<float>(v); }

// Scale of a tile from its elements, from the spec's formula.
float ReferenceScale(const std::vector<float>& tile, ScaleFormat format) {
  double amax = 0;
  for (float v : tile) {
    amax = std::max(amax, std::fabs(static_cast<double>(v)));
  }
  const double clamped = std::max(amax, static_cast<double>(1e-4f));
  double s = RoundToFloat(clamped / 448.0);
  if (format == ScaleFormat::kUe8m0) {
    int e;
    const double m = std::frexp(s, &e);  // s = m * 2^e, m in [0.5, 1)
    s = (m == 0.5) ? s : std::ldexp(1.0, e);
  }
  return static_cast<float>(s);
}

std::uint8_t ReferenceCode(float x, float scale) {
  const float inv = RoundToFloat(1.0 / static_cast<double>(scale));
  return E4M3Reference().Encode(RoundToFloat(static_cast<double>(x) * inv));
}

struct Quantized {
  std::vector<std::uint8_t> q;
  std::vector<float> scales;
};

// Quantises x [rows, cols] in tiles of tile_rows x tile_cols; scales [NumTiles.., NumTiles..].
Quantized ReferenceQuantize(const std::vector<float>& x, int64_t rows, int64_t cols,
                            int64_t tile_rows, int64_t tile_cols, ScaleFormat format) {
  const int64_t row_tiles = (rows + tile_rows - 1) / tile_rows;
  const int64_t col_tiles = (cols + tile_cols - 1) / tile_cols;
  Quantized out{std::vector<std::uint8_t>(rows * cols), std::vector<float>(row_tiles * col_tiles)};
  for (int64_t rt = 0; rt < row_tiles; ++rt) {
    for (int64_t ct = 0; ct < col_tiles; ++ct) {
      std::vector<float> tile;
      for (int64_t r = rt * tile_rows; r < std::min(rows, (rt + 1) * tile_rows); ++r) {
        for (int64_t c = ct * tile_cols; c < std::min(cols, (ct + 1) * tile_cols); ++c) {
          tile.push_back(x[r * cols + c]);
        }
      }
      const float s = ReferenceScale(tile, format);
      out.scales[rt * col_tiles + ct] = s;
      for (int64_t r = rt * tile_rows; r < std::min(rows, (rt + 1) * tile_rows); ++r) {
        for (int64_t c = ct * tile_cols; c < std::min(cols, (ct + 1) * tile_cols); ++c) {
          out.q[r * cols + c] = ReferenceCode(x[r * cols + c], s);
        }
      }
    }
  }
  return out;
}

std::vector<float> Transpose(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> t(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      t[c * rows + r] = x[r * cols + c];
    }
  }
  return t;
}

// x[r, c] = decode(q[r, c]) * scale of its tile, rounded to FP32.
std::vector<float> ReferenceDequantize(const Quantized& qz, int64_t rows, int64_t cols,
                                       int64_t tile_rows, int64_t tile_cols) {
  const int64_t col_tiles = (cols + tile_cols - 1) / tile_cols;
  std::vector<float> x(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double s = qz.scales[(r / tile_rows) * col_tiles + c / tile_cols];
      x[r * cols + c] = RoundToFloat(DecodeReference(qz.q[r * cols + c]) * s);
    }
  }
  return x;
}

// ---- Test data and comparison -----------------------------------------------------------------

// Activation-like data: each row has its own magnitude (2^-30 .. 2^20), a few outliers, some
// all-zero and some tiny (amax < 1e-4) stretches, exact powers of two and 448-multiples.
std::vector<float> MakeData(std::mt19937_64& rng, int64_t rows, int64_t cols) {
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> exponent(-30, 20);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> x(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    const int e = exponent(rng);
    const float kind = uniform(rng);
    for (int64_t c = 0; c < cols; ++c) {
      float v = std::ldexp(normal(rng), e);
      if (uniform(rng) < 0.01f) {
        v *= 50.0f;  // outlier
      }
      if (kind < 0.05f) {
        v = 0.0f;  // zero row
      }
      if (kind > 0.95f && c % 3 == 0) {
        v = std::ldexp(448.0f, e);  // scale becomes 2^e
      }
      x[r * cols + c] = v;
    }
  }
  if (rows * cols > 0) {
    x[0] = -x[0];
  }
  return x;
}

template <typename T>
void ExpectSameBits(const std::vector<T>& want, const std::vector<T>& got, int64_t rows,
                    int64_t cols, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  int64_t mismatches = 0;
  int64_t first = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::memcmp(&want[i], &got[i], sizeof(T)) != 0) {
      if (first < 0) {
        first = static_cast<int64_t>(i);
      }
      ++mismatches;
    }
  }
  if (mismatches > 0) {
    auto show = [](T v) {
      if constexpr (sizeof(T) == 4) {
        return Hex(std::bit_cast<std::uint32_t>(v)) + " (" + std::to_string(v) + ")";
      } else {
        return std::to_string(+v);
      }
    };
    ADD_FAILURE() << what << " [" << rows << ", " << cols << "]: " << mismatches
                  << " differences; first at index " << first << " (row "
                  << first / std::max<int64_t>(cols, 1) << ", col "
                  << first % std::max<int64_t>(cols, 1) << "): want " << show(want[first])
                  << ", got " << show(got[first]);
  }
}

struct Shape {
  int64_t rows;
  int64_t cols;
};

const Shape kShapes[] = {{1, 1},   {3, 127}, {2, 128},   {5, 129},   {4, 300},
                         {7, 384}, {130, 5}, {129, 257}, {256, 256}, {200, 1000}};

// Every execution configuration must give the same bits.
std::vector<CpuContext> Contexts(ThreadPool* pool) {
  return {CpuContext{nullptr, true}, CpuContext{nullptr, false}, CpuContext{pool, true},
          CpuContext{pool, false}};
}

// ---- Tests ----------------------------------------------------------------------------------

TEST(QuantizeTest, Quantize1x128MatchesTheFloat64ReferenceIncludingPartialTiles) {
  std::mt19937_64 rng(testing::TestSeed(1));
  ThreadPool pool(3);
  for (ScaleFormat format : {ScaleFormat::kFp32, ScaleFormat::kUe8m0}) {
    for (const Shape& sh : kShapes) {
      const std::vector<float> x = MakeData(rng, sh.rows, sh.cols);
      const Quantized want = ReferenceQuantize(x, sh.rows, sh.cols, 1, 128, format);
      for (const CpuContext& ctx : Contexts(&pool)) {
        Quantized got{std::vector<std::uint8_t>(x.size()),
                      std::vector<float>(sh.rows * NumTiles(sh.cols))};
        Quantize1x128(ctx, {format}, x.data(), sh.rows, sh.cols, got.q.data(), got.scales.data());
        const std::string what = std::string("ue8m0=") +
                                 (format == ScaleFormat::kUe8m0 ? "1" : "0") +
                                 " simd=" + std::to_string(ctx.use_simd) +
                                 " pool=" + std::to_string(ctx.pool != nullptr);
        ExpectSameBits(want.scales, got.scales, sh.rows, NumTiles(sh.cols), "scales " + what);
        ExpectSameBits(want.q, got.q, sh.rows, sh.cols, "codes " + what);
      }
    }
  }
}

TEST(QuantizeTest, Quantize128x128MatchesTheFloat64ReferenceIncludingPartialBlocks) {
  std::mt19937_64 rng(testing::TestSeed(2));
  ThreadPool pool(2);
  for (ScaleFormat format : {ScaleFormat::kFp32, ScaleFormat::kUe8m0}) {
    for (const Shape& sh : kShapes) {
      std::vector<float> w = MakeData(rng, sh.rows, sh.cols);
      const Quantized want = ReferenceQuantize(w, sh.rows, sh.cols, 128, 128, format);
      for (const CpuContext& ctx : Contexts(&pool)) {
        Quantized got{std::vector<std::uint8_t>(w.size()),
                      std::vector<float>(NumTiles(sh.rows) * NumTiles(sh.cols))};
        Quantize128x128(ctx, {format}, w.data(), sh.rows, sh.cols, got.q.data(), got.scales.data());
        ExpectSameBits(want.scales, got.scales, NumTiles(sh.rows), NumTiles(sh.cols), "scales");
        ExpectSameBits(want.q, got.q, sh.rows, sh.cols, "codes");
      }
    }
  }
}

TEST(QuantizeTest, Quantize128x1TransposedIsTheReference1x128QuantisationOfTheTranspose) {
  std::mt19937_64 rng(testing::TestSeed(3));
  ThreadPool pool(2);
  for (ScaleFormat format : {ScaleFormat::kFp32, ScaleFormat::kUe8m0}) {
    for (const Shape& sh : kShapes) {
      const std::vector<float> x = MakeData(rng, sh.rows, sh.cols);
      const Quantized want =
          ReferenceQuantize(Transpose(x, sh.rows, sh.cols), sh.cols, sh.rows, 1, 128, format);
      for (const CpuContext& ctx : Contexts(&pool)) {
        Quantized got{std::vector<std::uint8_t>(x.size()),
                      std::vector<float>(sh.cols * NumTiles(sh.rows))};
        Quantize128x1Transposed(ctx, {format}, x.data(), sh.rows, sh.cols, got.q.data(),
                                got.scales.data());
        ExpectSameBits(want.scales, got.scales, sh.cols, NumTiles(sh.rows), "scales_t");
        ExpectSameBits(want.q, got.q, sh.cols, sh.rows, "q_t");
      }
    }
  }
}

TEST(QuantizeTest, Requantize128x1TransposedQuantisesTheDequantisedTranspose) {
  std::mt19937_64 rng(testing::TestSeed(4));
  ThreadPool pool(2);
  for (ScaleFormat format : {ScaleFormat::kFp32, ScaleFormat::kUe8m0}) {
    for (const Shape& sh : kShapes) {
      const std::vector<float> x = MakeData(rng, sh.rows, sh.cols);
      const Quantized fwd = ReferenceQuantize(x, sh.rows, sh.cols, 1, 128, format);
      const std::vector<float> deq = ReferenceDequantize(fwd, sh.rows, sh.cols, 1, 128);
      const Quantized want =
          ReferenceQuantize(Transpose(deq, sh.rows, sh.cols), sh.cols, sh.rows, 1, 128, format);
      for (const CpuContext& ctx : Contexts(&pool)) {
        Quantized got{std::vector<std::uint8_t>(x.size()),
                      std::vector<float>(sh.cols * NumTiles(sh.rows))};
        Requantize128x1Transposed(ctx, {format}, fwd.q.data(), fwd.scales.data(), sh.rows, sh.cols,
                                  got.q.data(), got.scales.data());
        ExpectSameBits(want.scales, got.scales, sh.cols, NumTiles(sh.rows), "scales_t");
        ExpectSameBits(want.q, got.q, sh.cols, sh.rows, "q_t");
      }
    }
  }
}

TEST(QuantizeTest, DequantizeMultipliesEachCodeByItsTileScale) {
  std::mt19937_64 rng(testing::TestSeed(5));
  ThreadPool pool(2);
  for (const Shape& sh : kShapes) {
    const std::vector<float> x = MakeData(rng, sh.rows, sh.cols);
    const Quantized act = ReferenceQuantize(x, sh.rows, sh.cols, 1, 128, ScaleFormat::kFp32);
    const Quantized wgt = ReferenceQuantize(x, sh.rows, sh.cols, 128, 128, ScaleFormat::kFp32);
    for (const CpuContext& ctx : Contexts(&pool)) {
      std::vector<float> got(x.size());
      Dequantize1x128(ctx, act.q.data(), act.scales.data(), sh.rows, sh.cols, got.data());
      ExpectSameBits(ReferenceDequantize(act, sh.rows, sh.cols, 1, 128), got, sh.rows, sh.cols,
                     "Dequantize1x128");
      Dequantize128x128(ctx, wgt.q.data(), wgt.scales.data(), sh.rows, sh.cols, got.data());
      ExpectSameBits(ReferenceDequantize(wgt, sh.rows, sh.cols, 128, 128), got, sh.rows, sh.cols,
                     "Dequantize128x128");
    }
  }
}

// |x - dequant(quant(x))| <= 2^-4 |x| (half an E4M3 ulp, relative) + 2^-10 s (half the subnormal
// step), plus FP32 rounding of the scale product and the dequantisation (a few 2^-24 relative).
TEST(QuantizeTest, DequantisedValuesAreWithinHalfAnE4M3StepOfTheInput) {
  std::mt19937_64 rng(testing::TestSeed(6));
  const int64_t rows = 129, cols = 1000;
  const std::vector<float> x = MakeData(rng, rows, cols);
  for (ScaleFormat format : {ScaleFormat::kFp32, ScaleFormat::kUe8m0}) {
    for (int tile_rows : {1, 128}) {
      const int64_t scale_rows = tile_rows == 1 ? rows : NumTiles(rows);
      std::vector<std::uint8_t> q(x.size());
      std::vector<float> scales(scale_rows * NumTiles(cols));
      std::vector<float> back(x.size());
      if (tile_rows == 1) {
        Quantize1x128(CpuContext{}, {format}, x.data(), rows, cols, q.data(), scales.data());
        Dequantize1x128(CpuContext{}, q.data(), scales.data(), rows, cols, back.data());
      } else {
        Quantize128x128(CpuContext{}, {format}, x.data(), rows, cols, q.data(), scales.data());
        Dequantize128x128(CpuContext{}, q.data(), scales.data(), rows, cols, back.data());
      }
      double worst_ratio = 0;
      int64_t worst = -1;
      for (int64_t i = 0; i < rows * cols; ++i) {
        const double s = scales[(i / cols / tile_rows) * NumTiles(cols) + (i % cols) / 128];
        const double bound = (0x1p-4 * std::fabs(x[i]) + 0x1p-10 * s) * (1 + 0x1p-20);
        const double ratio = std::fabs(static_cast<double>(x[i]) - back[i]) / bound;
        if (ratio > worst_ratio) {
          worst_ratio = ratio;
          worst = i;
        }
      }
      EXPECT_LE(worst_ratio, 1.0) << "tile_rows=" << tile_rows << " worst at index " << worst
                                  << " (row " << worst / cols << ", col " << worst % cols
                                  << "): x=" << x[worst] << " dequantised=" << back[worst];
    }
  }
}

TEST(QuantizeTest, Ue8m0ScalesArePowersOfTwoBetweenOneAndTwiceAmaxOver448) {
  std::mt19937_64 rng(testing::TestSeed(7));
  const int64_t rows = 64, cols = 640;
  const std::vector<float> x = MakeData(rng, rows, cols);
  std::vector<std::uint8_t> q(x.size());
  std::vector<float> scales(rows * NumTiles(cols));
  Quantize1x128(CpuContext{}, {ScaleFormat::kUe8m0}, x.data(), rows, cols, q.data(), scales.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < NumTiles(cols); ++t) {
      double amax = 0;
      for (int64_t c = t * 128; c < std::min(cols, (t + 1) * 128); ++c) {
        amax = std::max(amax, std::fabs(static_cast<double>(x[r * cols + c])));
      }
      const double base = std::max(amax, static_cast<double>(1e-4f)) / 448.0;
      const float s = scales[r * NumTiles(cols) + t];
      int e;
      EXPECT_EQ(std::frexp(s, &e), 0.5) << "row " << r << " tile " << t << ": " << s;
      EXPECT_GE(s, base * (1 - 0x1p-23)) << "row " << r << " tile " << t;
      EXPECT_LT(s, 2 * base) << "row " << r << " tile " << t;
    }
  }
  EXPECT_EQ(RoundScaleToUe8m0(1.0f), 1.0f);
  EXPECT_EQ(RoundScaleToUe8m0(std::nextafter(1.0f, 2.0f)), 2.0f);
  EXPECT_EQ(RoundScaleToUe8m0(0.75f), 1.0f);
  EXPECT_EQ(RoundScaleToUe8m0(3 * 0x1p-140f), 0x1p-138f);  // subnormal input
}

// With power-of-two scales, re-quantising 1x128 tiles as 128x1 tiles is exact wherever the new
// code stays in the E4M3 normal range (TR §3.3.3: "round scaled" factors make the conversion
// lossless unless values underflow): only a power-of-two rescaling of the same 4 significant bits
// happens.
TEST(QuantizeTest, Ue8m0RequantisationIsLosslessAwayFromUnderflow) {
  std::mt19937_64 rng(testing::TestSeed(8));
  const int64_t rows = 256, cols = 384;
  std::vector<float> x(rows * cols);
  std::normal_distribution<float> normal;
  for (float& v : x) {
    v = normal(rng) * 3.0f;  // One magnitude: few underflows.
  }
  const QuantOptions ue8m0{ScaleFormat::kUe8m0};
  std::vector<std::uint8_t> q(x.size()), q_t(x.size());
  std::vector<float> s(rows * NumTiles(cols)), s_t(cols * NumTiles(rows));
  Quantize1x128(CpuContext{}, ue8m0, x.data(), rows, cols, q.data(), s.data());
  Requantize128x1Transposed(CpuContext{}, ue8m0, q.data(), s.data(), rows, cols, q_t.data(),
                            s_t.data());
  std::vector<float> before(x.size()), after_t(x.size());
  Dequantize1x128(CpuContext{}, q.data(), s.data(), rows, cols, before.data());
  Dequantize1x128(CpuContext{}, q_t.data(), s_t.data(), cols, rows, after_t.data());
  int64_t checked = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      if (std::fabs(E4M3ToFloat(q_t[c * rows + r])) < 0x1p-6f) {
        continue;  // subnormal: may lose bits
      }
      ++checked;
      ASSERT_EQ(Bits(before[r * cols + c]), Bits(after_t[c * rows + r]))
          << "row " << r << " col " << c << ": " << before[r * cols + c] << " became "
          << after_t[c * rows + r];
    }
  }
  EXPECT_GT(checked, rows * cols * 9 / 10);
}

TEST(QuantizeTest, TileAmaxSetsTheScaleExactly) {
  // amax 896 -> s = 2, inv = 0.5: every code is the exact E4M3 value of x / 2.
  std::vector<float> x(128, 0.0f);
  x[5] = -896.0f;
  x[6] = 3.0f;     // 1.5 exactly
  x[7] = 0.0039f;  // 0.00195 -> subnormal code
  std::vector<std::uint8_t> q(128);
  float s = 0;
  Quantize1x128(CpuContext{}, {}, x.data(), 1, 128, q.data(), &s);
  EXPECT_EQ(s, 2.0f);
  EXPECT_EQ(q[5], 0xFE);  // -448
  EXPECT_EQ(q[6], FloatToE4M3(1.5f));
  EXPECT_EQ(q[7], FloatToE4M3(0.00195f));
  EXPECT_EQ(q[0], 0x00);
}

// The choice documented in quantize.h: q = e4m3(x * RN(1/s)), not e4m3(RN(x / s)). Finds an
// element next to an E4M3 rounding boundary where the two differ and checks which one we give.
TEST(QuantizeTest, CodesComeFromMultiplyingByTheRoundedReciprocalNotFromDividing) {
  const std::vector<double>& values = E4M3Reference().values();
  for (float amax = 1000.0f; amax < 2000.0f; amax = std::nextafter(amax, 4000.0f) + 0.37f) {
    const float s = RoundToFloat(static_cast<double>(amax) / 448.0);
    const float inv = RoundToFloat(1.0 / s);
    for (size_t i = 0; i + 1 < values.size(); ++i) {
      float x = RoundToFloat((values[i] + values[i + 1]) / 2 * s);
      for (int step = 0; step < 4; ++step, x = std::nextafter(x, 0.0f)) {
        const std::uint8_t by_reciprocal = E4M3Reference().Encode(RoundToFloat(double{x} * inv));
        const std::uint8_t by_division = E4M3Reference().Encode(RoundToFloat(double{x} / s));
        if (by_reciprocal == by_division) {
          continue;
        }
        std::vector<float> tile = {amax, x};
        std::vector<std::uint8_t> q(2);
        float scale = 0;
        Quantize1x128(CpuContext{}, {}, tile.data(), 1, 2, q.data(), &scale);
        ASSERT_EQ(scale, s);
        EXPECT_EQ(int{q[1]}, int{by_reciprocal})
            << "x=" << x << " (" << Hex(Bits(x)) << ") amax=" << amax << ": x / s would give "
            << int{by_division};
        return;
      }
    }
  }
  FAIL() << "no element found where the two definitions differ";
}

TEST(QuantizeTest, AllZeroOrTinyTilesUseTheAmaxFloor) {
  std::vector<float> x(256, 0.0f);
  for (int i = 128; i < 256; ++i) {
    x[i] = 1e-6f * (i - 192);  // amax 6.4e-5 < 1e-4
  }
  std::vector<std::uint8_t> q(256);
  float s[2];
  Quantize1x128(CpuContext{}, {}, x.data(), 1, 256, q.data(), s);
  EXPECT_EQ(Bits(s[0]), Bits(1e-4f / 448.0f));
  EXPECT_EQ(Bits(s[1]), Bits(1e-4f / 448.0f));
  for (int i = 0; i < 128; ++i) {
    EXPECT_EQ(q[i], 0) << i;
  }
  EXPECT_EQ(q[255], FloatToE4M3(x[255] * (1.0f / s[1])));
}

TEST(QuantizeTest, ANaNPoisonsOnlyItsOwnTile) {
  std::vector<float> x(3 * 128, 1.0f);
  x[130] = std::numeric_limits<float>::quiet_NaN();
  std::vector<std::uint8_t> q(x.size());
  float s[3];
  Quantize1x128(CpuContext{}, {}, x.data(), 1, 3 * 128, q.data(), s);
  EXPECT_TRUE(std::isnan(s[1]));
  EXPECT_EQ(s[0], 1.0f / 448.0f);
  EXPECT_EQ(s[2], 1.0f / 448.0f);
  for (int i = 128; i < 256; ++i) {
    EXPECT_EQ(q[i], 0x7F) << i;
  }
  EXPECT_EQ(q[0], 0x7E);
  EXPECT_EQ(q[300], 0x7E);
}

TEST(QuantizeTest, EmptyMatricesAreAccepted) {
  Quantize1x128(CpuContext{}, {}, nullptr, 0, 128, nullptr, nullptr);
  Quantize128x128(CpuContext{}, {}, nullptr, 5, 0, nullptr, nullptr);
  Requantize128x1Transposed(CpuContext{}, {}, nullptr, nullptr, 0, 0, nullptr, nullptr);
}

TEST(QuantizeDeathTest, InvalidArgumentsAbortWithAMessageNamingThem) {
  std::vector<float> x(256, 1.0f);
  std::vector<std::uint8_t> q(256);
  std::vector<float> s(2);
  EXPECT_DEATH(Quantize1x128(CpuContext{}, {}, x.data(), -1, 256, q.data(), s.data()),
               "Quantize1x128: rows=-1 and cols=256 must be >= 0");
  EXPECT_DEATH(Quantize1x128(CpuContext{}, {}, x.data(), 1, 256, q.data(), nullptr),
               "Quantize1x128: scales is null");
  EXPECT_DEATH(Quantize128x128(CpuContext{}, {}, x.data(), 1, 256,
                               reinterpret_cast<std::uint8_t*>(x.data()), s.data()),
               "Quantize128x128: w and q overlap");
  EXPECT_DEATH(
      Dequantize1x128(CpuContext{}, q.data(), s.data(), 1, 256, reinterpret_cast<float*>(q.data())),
      "Dequantize1x128: q and x overlap");
}

}  // namespace
}  // namespace dsv3::kernels
