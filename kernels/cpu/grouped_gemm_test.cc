// Tests of the grouped (MoE) GEMMs of grouped_gemm.h: every expert's block equals the dense GEMM
// of gemm.h on that expert's rows (bit for bit where the thread counts match), in FP32, BF16 and
// FP8 and all three layouts, with experts of zero, one and many tokens; the Wgrad of an expert
// without tokens; no experts at all.

#include "kernels/cpu/grouped_gemm.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_test_util.h"
#include "kernels/cpu/quantize.h"
#include "kernels/cpu/test_util.h"
#include "kernels/testing/torch_reference.h"

namespace dsv3::kernels {
namespace {

using testing::AllClose;

// A routed batch: T tokens sorted by expert, E experts' weights, and every operand form.
struct Batch {
  std::vector<int64_t> counts, offsets;  // offsets: E + 1 entries
  int64_t e = 0, t = 0, n = 0, k = 0;
  std::vector<float> x, w, dy;
  std::vector<std::uint16_t> x16, w16, dy16;
  std::vector<std::uint8_t> x_q, w_q, dy_q, dy_t_q, x_t_q;
  std::vector<float> x_s, w_s, dy_s, dy_t_s, x_t_s;
  std::vector<int64_t> tile_offsets;  // E + 1 entries, per-expert 128x1 scale rows
};

Batch MakeBatch(std::mt19937_64& rng, const std::vector<int64_t>& counts, int64_t n, int64_t k) {
  const CpuContext ctx;
  Batch b;
  b.counts = counts;
  b.e = static_cast<int64_t>(counts.size());
  b.n = n;
  b.k = k;
  b.offsets.assign(1, 0);
  b.tile_offsets.assign(1, 0);
  for (int64_t c : counts) {
    b.offsets.push_back(b.offsets.back() + c);
    b.tile_offsets.push_back(b.tile_offsets.back() + NumTiles(c));
  }
  b.t = b.offsets.back();
  b.x = testing::RandomNormal(rng, b.t * k);
  b.w = testing::RandomNormal(rng, b.e * n * k);
  b.dy = testing::RandomNormal(rng, b.t * n);
  b.x16 = testing::ToBf16(b.x), b.w16 = testing::ToBf16(b.w), b.dy16 = testing::ToBf16(b.dy);
  const int64_t kt = NumTiles(k), nt = NumTiles(n);
  b.x_q.resize(b.t * k), b.x_s.resize(b.t * kt);
  Quantize1x128(ctx, {}, b.x.data(), b.t, k, b.x_q.data(), b.x_s.data());
  b.dy_q.resize(b.t * n), b.dy_s.resize(b.t * nt);
  Quantize1x128(ctx, {}, b.dy.data(), b.t, n, b.dy_q.data(), b.dy_s.data());
  b.w_q.resize(b.e * n * k), b.w_s.resize(b.e * nt * kt);
  const int64_t tiles = GroupedNumTiles(counts.data(), b.e);
  EXPECT_EQ(tiles, b.tile_offsets.back());
  b.dy_t_q.resize(n * b.t), b.dy_t_s.resize(n * tiles);
  b.x_t_q.resize(k * b.t), b.x_t_s.resize(k * tiles);
  for (int64_t e = 0; e < b.e; ++e) {
    Quantize128x128(ctx, {}, &b.w[e * n * k], n, k, &b.w_q[e * n * k], &b.w_s[e * nt * kt]);
    const int64_t off = b.offsets[e], rows = counts[e], toff = b.tile_offsets[e];
    Quantize128x1Transposed(ctx, {}, &b.dy[off * n], rows, n, &b.dy_t_q[n * off],
                            &b.dy_t_s[n * toff]);
    Requantize128x1Transposed(ctx, {}, &b.x_q[off * k], &b.x_s[off * kt], rows, k,
                              &b.x_t_q[k * off], &b.x_t_s[k * toff]);
  }
  return b;
}

enum class Precision { kFp32, kBf16, kFp8 };
enum class Layout { kFprop, kDgrad, kWgrad };

std::string Name(Precision p, Layout l) {
  const char* ps[] = {"fp32", "bf16", "fp8"};
  const char* ls[] = {"fprop", "dgrad", "wgrad"};
  return std::string(ps[static_cast<int>(p)]) + " " + ls[static_cast<int>(l)];
}

// Output size of a layout: Fprop [T, n], Dgrad [T, k], Wgrad [E, n, k].
int64_t OutSize(const Batch& b, Layout l) {
  return l == Layout::kFprop ? b.t * b.n : (l == Layout::kDgrad ? b.t * b.k : b.e * b.n * b.k);
}

void RunGrouped(const CpuContext& ctx, const GemmOptions& opt, const Batch& b, Precision p,
                Layout l, float* out) {
  const int64_t* c = b.counts.data();
  switch (p) {
    case Precision::kFp32:
      if (l == Layout::kFprop)
        GroupedGemmFpropFp32(ctx, opt, b.x.data(), b.w.data(), c, b.e, b.n, b.k, out);
      if (l == Layout::kDgrad)
        GroupedGemmDgradFp32(ctx, opt, b.dy.data(), b.w.data(), c, b.e, b.n, b.k, out);
      if (l == Layout::kWgrad)
        GroupedGemmWgradFp32(ctx, opt, b.dy.data(), b.x.data(), c, b.e, b.n, b.k, out);
      break;
    case Precision::kBf16:
      if (l == Layout::kFprop)
        GroupedGemmFpropBf16(ctx, opt, b.x16.data(), b.w16.data(), c, b.e, b.n, b.k, out);
      if (l == Layout::kDgrad)
        GroupedGemmDgradBf16(ctx, opt, b.dy16.data(), b.w16.data(), c, b.e, b.n, b.k, out);
      if (l == Layout::kWgrad)
        GroupedGemmWgradBf16(ctx, opt, b.dy16.data(), b.x16.data(), c, b.e, b.n, b.k, out);
      break;
    case Precision::kFp8:
      if (l == Layout::kFprop) {
        GroupedGemmFpropFp8(ctx, opt, b.x_q.data(), b.x_s.data(), b.w_q.data(), b.w_s.data(), c,
                            b.e, b.n, b.k, out);
      }
      if (l == Layout::kDgrad) {
        GroupedGemmDgradFp8(ctx, opt, b.dy_q.data(), b.dy_s.data(), b.w_q.data(), b.w_s.data(), c,
                            b.e, b.n, b.k, out);
      }
      if (l == Layout::kWgrad) {
        GroupedGemmWgradFp8(ctx, opt, b.dy_t_q.data(), b.dy_t_s.data(), b.x_t_q.data(),
                            b.x_t_s.data(), c, b.e, b.n, b.k, out);
      }
      break;
  }
}

// The same product expert by expert with the dense GEMMs of gemm.h.
void RunPerExpert(const CpuContext& ctx, const GemmOptions& opt, const Batch& b, Precision p,
                  Layout l, float* out) {
  const int64_t n = b.n, k = b.k, kt = NumTiles(k), nt = NumTiles(n);
  for (int64_t e = 0; e < b.e; ++e) {
    const int64_t off = b.offsets[e], m = b.counts[e], toff = b.tile_offsets[e];
    float* y = out + off * n;
    float* dx = out + off * k;
    float* dw = out + e * n * k;
    switch (p) {
      case Precision::kFp32:
        if (l == Layout::kFprop)
          GemmFpropFp32(ctx, opt, &b.x[off * k], &b.w[e * n * k], m, n, k, y);
        if (l == Layout::kDgrad)
          GemmDgradFp32(ctx, opt, &b.dy[off * n], &b.w[e * n * k], m, n, k, dx);
        if (l == Layout::kWgrad)
          GemmWgradFp32(ctx, opt, &b.dy[off * n], &b.x[off * k], m, n, k, dw);
        break;
      case Precision::kBf16:
        if (l == Layout::kFprop)
          GemmFpropBf16(ctx, opt, &b.x16[off * k], &b.w16[e * n * k], m, n, k, y);
        if (l == Layout::kDgrad)
          GemmDgradBf16(ctx, opt, &b.dy16[off * n], &b.w16[e * n * k], m, n, k, dx);
        if (l == Layout::kWgrad)
          GemmWgradBf16(ctx, opt, &b.dy16[off * n], &b.x16[off * k], m, n, k, dw);
        break;
      case Precision::kFp8:
        if (l == Layout::kFprop) {
          GemmFpropFp8(ctx, opt, &b.x_q[off * k], &b.x_s[off * kt], &b.w_q[e * n * k],
                       &b.w_s[e * nt * kt], m, n, k, y);
        }
        if (l == Layout::kDgrad) {
          GemmDgradFp8(ctx, opt, &b.dy_q[off * n], &b.dy_s[off * nt], &b.w_q[e * n * k],
                       &b.w_s[e * nt * kt], m, n, k, dx);
        }
        if (l == Layout::kWgrad) {
          GemmWgradFp8(ctx, opt, &b.dy_t_q[n * off], &b.dy_t_s[n * toff], &b.x_t_q[k * off],
                       &b.x_t_s[k * toff], m, n, k, dw);
        }
        break;
    }
  }
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(GroupedGemm, EveryExpertEqualsTheDenseGemmOnItsRows) {
  std::mt19937_64 rng(testing::TestSeed(201));
  ThreadPool pool(2);
  // Zero-token experts (first, middle, last), a one-token expert, partial 128-tiles, one expert.
  const std::vector<std::vector<int64_t>> groupings = {{0, 5, 0, 130, 1, 64, 7, 0}, {37}};
  for (const auto& counts : groupings) {
    const Batch b = MakeBatch(rng, counts, 72, 136);
    for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp8}) {
      for (Layout l : {Layout::kFprop, Layout::kDgrad, Layout::kWgrad}) {
        for (bool accumulate : {false, true}) {
          const GemmOptions opt{.accumulate = accumulate};
          const std::vector<float> start = testing::RandomNormal(rng, OutSize(b, l));
          const std::string what = Name(p, l) + " experts=" + std::to_string(b.e) +
                                   " accumulate=" + std::to_string(accumulate);
          // One thread on both sides: bit for bit in every precision.
          std::vector<float> want = start, got = start;
          RunPerExpert(CpuContext{}, opt, b, p, l, want.data());
          RunGrouped(CpuContext{}, opt, b, p, l, got.data());
          EXPECT_TRUE(SameBits(got, want)) << what << " (1 thread)";
          // Two threads: FP8 still bit for bit; the BLAS may split its sums differently.
          std::vector<float> got2 = start;
          RunGrouped(CpuContext{&pool}, opt, b, p, l, got2.data());
          if (p == Precision::kFp8) {
            EXPECT_TRUE(SameBits(got2, want)) << what << " (2 threads)";
          } else {
            EXPECT_TRUE(AllClose(what + " (2 threads)", got2.data(), testing::ToDouble(want),
                                 {OutSize(b, l)}, 0,
                                 1e-5 * testing::MaxAbs(testing::ToDouble(want))));
          }
        }
      }
    }
  }
}

TEST(GroupedGemm, ExpertsRunSideBySideGiveTheSingleThreadBits) {
  // With at least twice as many non-empty experts as threads, experts run side by side, one thread
  // each, so the result must equal the one-thread result bit for bit. Equal counts make the
  // experts share one cached BLAS primitive, executed from both threads at once: this caught a
  // shared oneDNN scratchpad that corrupted results under concurrency.
  std::mt19937_64 rng(testing::TestSeed(205));
  ThreadPool pool(2);
  const Batch b = MakeBatch(rng, std::vector<int64_t>(16, 96), 192, 160);
  for (Precision p : {Precision::kFp32, Precision::kBf16}) {
    for (Layout l : {Layout::kFprop, Layout::kDgrad, Layout::kWgrad}) {
      std::vector<float> want(OutSize(b, l));
      RunPerExpert(CpuContext{}, {}, b, p, l, want.data());
      for (int repeat = 0; repeat < 5; ++repeat) {
        std::vector<float> got(OutSize(b, l));
        RunGrouped(CpuContext{&pool}, {}, b, p, l, got.data());
        ASSERT_TRUE(SameBits(got, want)) << Name(p, l) << " repeat " << repeat;
      }
    }
  }
}

TEST(GroupedGemm, WgradOfAnExpertWithoutTokensIsZeroOrLeftAlone) {
  std::mt19937_64 rng(testing::TestSeed(202));
  const Batch b = MakeBatch(rng, {3, 0, 2}, 16, 8);
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp8}) {
    std::vector<float> dw(OutSize(b, Layout::kWgrad), 5.0f);
    RunGrouped(CpuContext{}, {}, b, p, Layout::kWgrad, dw.data());
    EXPECT_TRUE(AllClose(Name(p, Layout::kWgrad) + " expert 1", dw.data() + 16 * 8,
                         std::vector<double>(16 * 8, 0.0), {16, 8}, 0, 0));
    std::fill(dw.begin(), dw.end(), 5.0f);
    RunGrouped(CpuContext{}, {.accumulate = true}, b, p, Layout::kWgrad, dw.data());
    EXPECT_TRUE(AllClose(Name(p, Layout::kWgrad) + " expert 1 accumulate", dw.data() + 16 * 8,
                         std::vector<double>(16 * 8, 5.0), {16, 8}, 0, 0));
  }
}

TEST(GroupedGemm, NoExpertsIsANoOp) {
  GroupedGemmFpropFp32({}, {}, nullptr, nullptr, nullptr, 0, 4, 4, nullptr);
  GroupedGemmWgradFp8({}, {}, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, 4, nullptr);
}

TEST(GroupedGemmDeathTest, ANegativeTokenCountAborts) {
  const std::vector<int64_t> counts = {2, -1};
  std::vector<float> buf(64);
  EXPECT_DEATH(
      GroupedGemmFpropFp32({}, {}, buf.data(), buf.data(), counts.data(), 2, 2, 2, buf.data() + 32),
      "rows_per_expert\\[1\\]=-1");
}

}  // namespace
}  // namespace dsv3::kernels
