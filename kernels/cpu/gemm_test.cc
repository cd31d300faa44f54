// Tests of the FP32 and BF16 GEMMs of gemm.h: the three Linear layouts against float64
// references written here (BF16 against the reference of the BF16-rounded inputs, so the only error
// left is FP32 accumulation), accumulation, empty shapes, argument checks, and a cross-check of the
// layouts against PyTorch's autograd of F.linear (tests/reference/gemm_linear.py).

#include "kernels/cpu/gemm.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/gemm_test_util.h"
#include "kernels/cpu/test_util.h"
#include "kernels/testing/npy.h"
#include "kernels/testing/torch_reference.h"

namespace dsv3::kernels {
namespace {

using testing::AllClose;
using testing::MaxAbs;

struct Shape {
  int64_t m, n, k;
};

std::string Name(const char* layout, const Shape& s, int threads) {
  return std::string(layout) + " m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
         " k=" + std::to_string(s.k) + " threads=" + std::to_string(threads);
}

// Awkward and model-like shapes: M=1, N=1, K=1, sizes off any block multiple, the demo model's
// projections (hidden 256, q_lora 128, kv_a 160, experts 128 wide) and a scaled-down V3 one.
const std::vector<Shape> kShapes = {{1, 1, 1},       {1, 288, 256},  {7, 1, 300},    {33, 65, 129},
                                    {128, 160, 256}, {96, 256, 128}, {64, 528, 1792}};

// FP32 accumulation error, relative to the output's scale (a layout or indexing bug is O(1)).
constexpr double kFp32Tol = 1e-5;

enum class Layout { kFprop, kDgrad, kWgrad };

// Runs one layout in FP32 (bf16 = false) or on BF16-rounded operands, with and without a pool,
// against the float64 reference of the operands it actually received.
void CheckLayout(Layout layout, bool bf16, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  for (const Shape& s : kShapes) {
    // Operand shapes: Fprop (x [m,k], w [n,k]), Dgrad (dy [m,n], w [n,k]), Wgrad (dy [m,n], x
    // [m,k]).
    int64_t a_size = 0, b_size = 0, out_rows = 0, out_cols = 0;
    switch (layout) {
      case Layout::kFprop:
        a_size = s.m * s.k, b_size = s.n * s.k, out_rows = s.m, out_cols = s.n;
        break;
      case Layout::kDgrad:
        a_size = s.m * s.n, b_size = s.n * s.k, out_rows = s.m, out_cols = s.k;
        break;
      case Layout::kWgrad:
        a_size = s.m * s.n, b_size = s.m * s.k, out_rows = s.n, out_cols = s.k;
        break;
    }
    const std::vector<float> a = testing::RandomNormal(rng, a_size);
    const std::vector<float> b = testing::RandomNormal(rng, b_size);
    const std::vector<std::uint16_t> a16 = testing::ToBf16(a), b16 = testing::ToBf16(b);
    const std::vector<double> ad = bf16 ? testing::Bf16ToDouble(a16) : testing::ToDouble(a);
    const std::vector<double> bd = bf16 ? testing::Bf16ToDouble(b16) : testing::ToDouble(b);
    std::vector<double> want;
    const char* name = "";
    switch (layout) {
      case Layout::kFprop:
        want = testing::RefFprop(ad, bd, s.m, s.n, s.k), name = "fprop";
        break;
      case Layout::kDgrad:
        want = testing::RefDgrad(ad, bd, s.m, s.n, s.k), name = "dgrad";
        break;
      case Layout::kWgrad:
        want = testing::RefWgrad(ad, bd, s.m, s.n, s.k), name = "wgrad";
        break;
    }
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      const CpuContext ctx{p};
      std::vector<float> got(static_cast<size_t>(out_rows * out_cols), -7.0f);
      switch (layout) {
        case Layout::kFprop:
          bf16 ? GemmFpropBf16(ctx, {}, a16.data(), b16.data(), s.m, s.n, s.k, got.data())
               : GemmFpropFp32(ctx, {}, a.data(), b.data(), s.m, s.n, s.k, got.data());
          break;
        case Layout::kDgrad:
          bf16 ? GemmDgradBf16(ctx, {}, a16.data(), b16.data(), s.m, s.n, s.k, got.data())
               : GemmDgradFp32(ctx, {}, a.data(), b.data(), s.m, s.n, s.k, got.data());
          break;
        case Layout::kWgrad:
          bf16 ? GemmWgradBf16(ctx, {}, a16.data(), b16.data(), s.m, s.n, s.k, got.data())
               : GemmWgradFp32(ctx, {}, a.data(), b.data(), s.m, s.n, s.k, got.data());
          break;
      }
      EXPECT_TRUE(AllClose(Name(name, s, p ? 2 : 1), got.data(), want, {out_rows, out_cols}, 0,
                           kFp32Tol * MaxAbs(want)));
    }
  }
}

TEST(GemmFp32, FpropMatchesFloat64Reference) {
  CheckLayout(Layout::kFprop, false, testing::TestSeed(11));
}

TEST(GemmFp32, DgradMatchesFloat64Reference) {
  CheckLayout(Layout::kDgrad, false, testing::TestSeed(12));
}

TEST(GemmFp32, WgradMatchesFloat64Reference) {
  CheckLayout(Layout::kWgrad, false, testing::TestSeed(13));
}

TEST(GemmBf16, FpropMatchesFloat64ReferenceOfTheRoundedInputs) {
  CheckLayout(Layout::kFprop, true, testing::TestSeed(21));
}

TEST(GemmBf16, DgradMatchesFloat64ReferenceOfTheRoundedInputs) {
  CheckLayout(Layout::kDgrad, true, testing::TestSeed(22));
}

TEST(GemmBf16, WgradMatchesFloat64ReferenceOfTheRoundedInputs) {
  CheckLayout(Layout::kWgrad, true, testing::TestSeed(23));
}

TEST(GemmFp32, AccumulateAddsTheProductToTheOldOutput) {
  std::mt19937_64 rng(testing::TestSeed(31));
  const int64_t m = 20, n = 48, k = 136;
  const std::vector<float> x = testing::RandomNormal(rng, m * k);
  const std::vector<float> w = testing::RandomNormal(rng, n * k);
  const std::vector<float> dy = testing::RandomNormal(rng, m * n);
  const std::vector<std::uint16_t> x16 = testing::ToBf16(x), w16 = testing::ToBf16(w),
                                   dy16 = testing::ToBf16(dy);
  const CpuContext ctx;
  const GemmOptions acc{.accumulate = true};
  auto check = [&](const char* what, const std::vector<double>& product, int64_t rows, int64_t cols,
                   auto run) {
    const std::vector<float> old = testing::RandomNormal(rng, rows * cols, 10.0f);
    std::vector<float> got = old;
    run(got.data());
    std::vector<double> want = product;
    for (size_t i = 0; i < want.size(); ++i) want[i] += old[i];
    EXPECT_TRUE(AllClose(what, got.data(), want, {rows, cols}, 0, kFp32Tol * MaxAbs(want)));
  };
  const auto xd = testing::ToDouble(x), wd = testing::ToDouble(w), dyd = testing::ToDouble(dy);
  check("fp32 fprop", testing::RefFprop(xd, wd, m, n, k), m, n,
        [&](float* out) { GemmFpropFp32(ctx, acc, x.data(), w.data(), m, n, k, out); });
  check("fp32 dgrad", testing::RefDgrad(dyd, wd, m, n, k), m, k,
        [&](float* out) { GemmDgradFp32(ctx, acc, dy.data(), w.data(), m, n, k, out); });
  check("fp32 wgrad", testing::RefWgrad(dyd, xd, m, n, k), n, k,
        [&](float* out) { GemmWgradFp32(ctx, acc, dy.data(), x.data(), m, n, k, out); });
  const auto x16d = testing::Bf16ToDouble(x16), w16d = testing::Bf16ToDouble(w16),
             dy16d = testing::Bf16ToDouble(dy16);
  check("bf16 fprop", testing::RefFprop(x16d, w16d, m, n, k), m, n,
        [&](float* out) { GemmFpropBf16(ctx, acc, x16.data(), w16.data(), m, n, k, out); });
  check("bf16 dgrad", testing::RefDgrad(dy16d, w16d, m, n, k), m, k,
        [&](float* out) { GemmDgradBf16(ctx, acc, dy16.data(), w16.data(), m, n, k, out); });
  check("bf16 wgrad", testing::RefWgrad(dy16d, x16d, m, n, k), n, k,
        [&](float* out) { GemmWgradBf16(ctx, acc, dy16.data(), x16.data(), m, n, k, out); });
}

TEST(GemmFp32, OverwriteIgnoresTheOldOutputEvenNaN) {
  const int64_t m = 3, n = 5, k = 4;
  const std::vector<float> x(m * k, 1.0f), w(n * k, 0.5f);
  std::vector<float> y(m * n, std::numeric_limits<float>::quiet_NaN());
  GemmFpropFp32({}, {}, x.data(), w.data(), m, n, k, y.data());
  EXPECT_TRUE(AllClose("y", y.data(), std::vector<double>(m * n, 2.0), {m, n}, 0, 0));
}

TEST(GemmFp32, ZeroKGivesZerosOrLeavesAnAccumulatedOutputAlone) {
  const std::vector<float> none;
  std::vector<float> y(6, 3.0f);
  GemmFpropFp32({}, {.accumulate = true}, none.data(), none.data(), 2, 3, 0, y.data());
  EXPECT_TRUE(AllClose("accumulate", y.data(), std::vector<double>(6, 3.0), {2, 3}, 0, 0));
  GemmWgradBf16({}, {}, nullptr, nullptr, 0, 2, 3, y.data());
  EXPECT_TRUE(AllClose("overwrite", y.data(), std::vector<double>(6, 0.0), {2, 3}, 0, 0));
  const std::vector<float> w(5 * 7, 1.0f);
  GemmDgradFp32({}, {}, nullptr, w.data(), 0, 5, 7, nullptr);  // empty output: nothing to do
}

TEST(GemmDeathTest, AnOutputOverlappingAnInputAborts) {
  std::vector<float> buf(64, 1.0f);
  EXPECT_DEATH(GemmFpropFp32({}, {}, buf.data(), buf.data() + 16, 2, 2, 4, buf.data() + 2),
               "output y overlaps input x");
  EXPECT_DEATH(GemmFpropFp32({}, {}, buf.data(), buf.data(), -1, 2, 4, buf.data() + 32), "m=-1");
}

// The PyTorch cross-check: one script run for all shapes; torch computes Y = F.linear(X, W) and
// autograd's dX, dW for upstream dY, in float64 on the float32 inputs.
TEST(GemmFp32, LayoutsMatchPyTorchLinearAndItsAutograd) {
  std::mt19937_64 rng(testing::TestSeed(41));
  const std::vector<Shape> shapes = {{1, 1, 1}, {7, 13, 300}, {128, 288, 256}, {64, 160, 130}};
  const std::string dir = testing::MakeExchangeDir();
  struct Case {
    std::vector<float> x, w, dy;
  };
  std::vector<Case> cases;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    Case c{testing::RandomNormal(rng, s.m * s.k), testing::RandomNormal(rng, s.n * s.k),
           testing::RandomNormal(rng, s.m * s.n)};
    const std::string p = dir + "/case" + std::to_string(i) + "_";
    ASSERT_EQ(WriteNpy(p + "x.npy", {s.m, s.k}, c.x.data()), "");
    ASSERT_EQ(WriteNpy(p + "w.npy", {s.n, s.k}, c.w.data()), "");
    ASSERT_EQ(WriteNpy(p + "dy.npy", {s.m, s.n}, c.dy.data()), "");
    cases.push_back(std::move(c));
  }
  ASSERT_TRUE(testing::RunTorchReference("tests/reference/gemm_linear.py", dir));
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    const Case& c = cases[i];
    const std::string p = dir + "/case" + std::to_string(i) + "_";
    NpyArray y_ref, dx_ref, dw_ref;
    ASSERT_EQ(ReadNpy(p + "y_ref.npy", &y_ref), "");
    ASSERT_EQ(ReadNpy(p + "dx_ref.npy", &dx_ref), "");
    ASSERT_EQ(ReadNpy(p + "dw_ref.npy", &dw_ref), "");
    ASSERT_EQ(y_ref.shape, (std::vector<int64_t>{s.m, s.n}));
    ASSERT_EQ(dx_ref.shape, (std::vector<int64_t>{s.m, s.k}));
    ASSERT_EQ(dw_ref.shape, (std::vector<int64_t>{s.n, s.k}));
    std::vector<float> y(s.m * s.n), dx(s.m * s.k), dw(s.n * s.k);
    GemmFpropFp32(ctx, {}, c.x.data(), c.w.data(), s.m, s.n, s.k, y.data());
    GemmDgradFp32(ctx, {}, c.dy.data(), c.w.data(), s.m, s.n, s.k, dx.data());
    GemmWgradFp32(ctx, {}, c.dy.data(), c.x.data(), s.m, s.n, s.k, dw.data());
    const auto yw = y_ref.AsFloat64(), dxw = dx_ref.AsFloat64(), dww = dw_ref.AsFloat64();
    EXPECT_TRUE(
        AllClose(Name("torch y", s, 2), y.data(), yw, {s.m, s.n}, 0, kFp32Tol * MaxAbs(yw)));
    EXPECT_TRUE(
        AllClose(Name("torch dx", s, 2), dx.data(), dxw, {s.m, s.k}, 0, kFp32Tol * MaxAbs(dxw)));
    EXPECT_TRUE(
        AllClose(Name("torch dw", s, 2), dw.data(), dww, {s.n, s.k}, 0, kFp32Tol * MaxAbs(dww)));
  }
}

}  // namespace
}  // namespace dsv3::kernels
