// Tests of the block-scaled FP8 GEMMs of gemm.h, on operands made by the quantisers of quantize.h:
// bit-exactness against an emulation (written here) of the arithmetic gemm.h documents, on the
// portable and AVX-512 paths and any thread count; closeness to the float64 product with the same
// scales applied block by block (spec §5.2); DeepGEMM's calc_diff < 1e-3 against the unquantised
// product (oracle 17) on scaled-down DeepSeek-V3 shapes and one full-size one; awkward shapes.

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_fp8_kernels.h"
#include "kernels/cpu/gemm_test_util.h"
#include "kernels/cpu/quantize.h"
#include "kernels/cpu/test_util.h"
#include "kernels/testing/torch_reference.h"

namespace dsv3::kernels {
namespace {

using testing::AllClose;
using testing::MaxAbs;

struct Shape {
  int64_t m, n, k;
};

std::string Name(const std::string& what, const Shape& s) {
  return what + " m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
         " k=" + std::to_string(s.k);
}

// Random x [m,k], w [n,k], dy [m,n] with row and column magnitudes spread over e^±2, so that the
// tile scales differ and a scale applied to the wrong block shows; and their FP8 forms as the
// training step makes them (dy^T and x^T re-tiled 128x1 for Wgrad, x^T from the cached FP8 x).
struct Operands {
  Shape s;
  std::vector<float> x, w, dy;
  std::vector<std::uint8_t> x_q, w_q, dy_q, dy_t_q, x_t_q;
  std::vector<float> x_s, w_s, dy_s, dy_t_s, x_t_s;
};

std::vector<float> Spread(std::mt19937_64& rng, int64_t rows, int64_t cols) {
  std::vector<float> v = testing::RandomNormal(rng, rows * cols);
  const std::vector<float> fr = testing::RandomNormal(rng, rows),
                           fc = testing::RandomNormal(rng, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) v[r * cols + c] *= std::exp(fr[r]) * std::exp(fc[c]);
  }
  return v;
}

// spread = false: plain N(0, 1) values (DeepGEMM's test data).
Operands MakeOperands(std::mt19937_64& rng, const Shape& s, bool spread = true) {
  const CpuContext ctx;
  Operands o;
  o.s = s;
  const int64_t m = s.m, n = s.n, k = s.k;
  o.x = spread ? Spread(rng, m, k) : testing::RandomNormal(rng, m * k);
  o.w = spread ? Spread(rng, n, k) : testing::RandomNormal(rng, n * k);
  o.dy = spread ? Spread(rng, m, n) : testing::RandomNormal(rng, m * n);
  o.x_q.resize(m * k), o.x_s.resize(m * NumTiles(k));
  Quantize1x128(ctx, {}, o.x.data(), m, k, o.x_q.data(), o.x_s.data());
  o.w_q.resize(n * k), o.w_s.resize(NumTiles(n) * NumTiles(k));
  Quantize128x128(ctx, {}, o.w.data(), n, k, o.w_q.data(), o.w_s.data());
  o.dy_q.resize(m * n), o.dy_s.resize(m * NumTiles(n));
  Quantize1x128(ctx, {}, o.dy.data(), m, n, o.dy_q.data(), o.dy_s.data());
  o.dy_t_q.resize(n * m), o.dy_t_s.resize(n * NumTiles(m));
  Quantize128x1Transposed(ctx, {}, o.dy.data(), m, n, o.dy_t_q.data(), o.dy_t_s.data());
  o.x_t_q.resize(k * m), o.x_t_s.resize(k * NumTiles(m));
  Requantize128x1Transposed(ctx, {}, o.x_q.data(), o.x_s.data(), m, k, o.x_t_q.data(),
                            o.x_t_s.data());
  return o;
}

enum class Layout { kFprop, kDgrad, kWgrad };
constexpr Layout kLayouts[] = {Layout::kFprop, Layout::kDgrad, Layout::kWgrad};
const char* LayoutName(Layout l) {
  return l == Layout::kFprop ? "fprop" : (l == Layout::kDgrad ? "dgrad" : "wgrad");
}

// The product as an NT GEMM out[rows, cols] over kk: accessors of the codes and scales.
struct NtView {
  int64_t rows, cols, kk;
  std::function<std::uint8_t(int64_t r, int64_t t)> a;
  std::function<std::uint8_t(int64_t c, int64_t t)> b;
  std::function<float(int64_t r, int64_t kb)> sa;
  std::function<float(int64_t c, int64_t kb)> sb;
};

NtView View(const Operands& o, Layout layout) {
  const int64_t m = o.s.m, n = o.s.n, k = o.s.k;
  const int64_t mt = NumTiles(m), nt = NumTiles(n), kt = NumTiles(k);
  switch (layout) {
    case Layout::kFprop:
      return {m,
              n,
              k,
              [&o, k](int64_t r, int64_t t) { return o.x_q[r * k + t]; },
              [&o, k](int64_t c, int64_t t) { return o.w_q[c * k + t]; },
              [&o, kt](int64_t r, int64_t kb) { return o.x_s[r * kt + kb]; },
              [&o, kt](int64_t c, int64_t kb) { return o.w_s[(c / 128) * kt + kb]; }};
    case Layout::kDgrad:
      return {m,
              k,
              n,
              [&o, n](int64_t r, int64_t t) { return o.dy_q[r * n + t]; },
              [&o, k](int64_t c, int64_t t) { return o.w_q[t * k + c]; },
              [&o, nt](int64_t r, int64_t kb) { return o.dy_s[r * nt + kb]; },
              [&o, kt](int64_t c, int64_t kb) { return o.w_s[kb * kt + c / 128]; }};
    case Layout::kWgrad:
      return {n,
              k,
              m,
              [&o, m](int64_t r, int64_t t) { return o.dy_t_q[r * m + t]; },
              [&o, m](int64_t c, int64_t t) { return o.x_t_q[c * m + t]; },
              [&o, mt](int64_t r, int64_t kb) { return o.dy_t_s[r * mt + kb]; },
              [&o, mt](int64_t c, int64_t kb) { return o.x_t_s[c * mt + kb]; }};
  }
  return {};
}

void RunFp8(const CpuContext& ctx, const GemmOptions& opt, const Operands& o, Layout layout,
            float* out) {
  const int64_t m = o.s.m, n = o.s.n, k = o.s.k;
  switch (layout) {
    case Layout::kFprop:
      GemmFpropFp8(ctx, opt, o.x_q.data(), o.x_s.data(), o.w_q.data(), o.w_s.data(), m, n, k, out);
      break;
    case Layout::kDgrad:
      GemmDgradFp8(ctx, opt, o.dy_q.data(), o.dy_s.data(), o.w_q.data(), o.w_s.data(), m, n, k,
                   out);
      break;
    case Layout::kWgrad:
      GemmWgradFp8(ctx, opt, o.dy_t_q.data(), o.dy_t_s.data(), o.x_t_q.data(), o.x_t_s.data(), m, n,
                   k, out);
      break;
  }
}

// gemm.h's documented arithmetic, step by step in FP32: per 128-block, pairs in order, the odd
// product added before the even one (zero padding included), then C = fma(P, sa*sb, C).
std::vector<float> Emulate(const NtView& v, const std::vector<float>& start) {
  std::vector<float> c = start;
  for (int64_t r = 0; r < v.rows; ++r) {
    for (int64_t j = 0; j < v.cols; ++j) {
      float acc = c[r * v.cols + j];
      for (int64_t kb = 0; kb < NumTiles(v.kk); ++kb) {
        float p = 0.0f;
        for (int64_t t = kb * 128; t < kb * 128 + 128; t += 2) {
          auto val = [&](bool is_a, int64_t idx, int64_t tt) {
            if (tt >= v.kk) return 0.0f;
            return E4M3ToFloat(is_a ? v.a(idx, tt) : v.b(idx, tt));
          };
          p = p + val(true, r, t + 1) * val(false, j, t + 1);
          p = p + val(true, r, t) * val(false, j, t);
        }
        acc = std::fma(p, v.sa(r, kb) * v.sb(j, kb), acc);
      }
      c[r * v.cols + j] = acc;
    }
  }
  return c;
}

// Index of the first element whose bits differ, or -1.
int64_t FirstBitDifference(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return static_cast<int64_t>(i);
  }
  return -1;
}

TEST(GemmFp8, FollowsTheDocumentedArithmeticBitForBitOnEveryPathAndThreadCount) {
  std::mt19937_64 rng(testing::TestSeed(101));
  ThreadPool pool(2), pool3(3), pool4(4);
  const bool have_simd = internal::Avx512Bf16Fp8GemmKernels() != nullptr;
  if (!have_simd) std::printf("no AVX-512 BF16 on this CPU: only the portable path is checked\n");
  // Several tiles, partial row panels, column panels and K blocks; one and several row tiles (B
  // packed per tile, or once for all); one GEMM cut between threads by rows (400x80 on 2 threads),
  // by columns (200x1000) and in a 2x2 grid (200x300 on 4), with B packed once per thread's block;
  // last column panels of 16 (N = 80, computed in place), 44 (N = 300, through a copy) and 6.
  for (const Shape& s :
       {Shape{100, 300, 520}, Shape{200, 70, 300}, Shape{1, 70, 1}, Shape{13, 1, 129},
        Shape{400, 80, 130}, Shape{200, 1000, 130}, Shape{200, 300, 130}}) {
    const Operands o = MakeOperands(rng, s);
    for (Layout layout : kLayouts) {
      const NtView v = View(o, layout);
      for (bool accumulate : {false, true}) {
        const std::vector<float> start = accumulate
                                             ? testing::RandomNormal(rng, v.rows * v.cols, 100.0f)
                                             : std::vector<float>(v.rows * v.cols, 0.0f);
        const std::vector<float> want = Emulate(v, start);
        const CpuContext contexts[] = {{nullptr, false}, {&pool, false}, {nullptr, true},
                                       {&pool, true},    {&pool3, true}, {&pool4, true}};
        for (const CpuContext& ctx : contexts) {
          if (ctx.use_simd && !have_simd) continue;
          std::vector<float> got =
              accumulate ? start : std::vector<float>(v.rows * v.cols, 12345.0f);
          RunFp8(ctx, {.accumulate = accumulate}, o, layout, got.data());
          const int64_t bad = FirstBitDifference(got, want);
          EXPECT_EQ(bad, -1) << Name(LayoutName(layout), s) << " accumulate=" << accumulate
                             << " simd=" << ctx.use_simd
                             << " threads=" << (ctx.pool ? ctx.pool->num_threads() : 1)
                             << ": element [" << (bad < 0 ? 0 : bad / v.cols) << ", "
                             << (bad < 0 ? 0 : bad % v.cols) << "] of [" << v.rows << ", " << v.cols
                             << "] is " << (bad < 0 ? 0 : got[bad]) << ", want "
                             << (bad < 0 ? 0 : want[bad]);
        }
      }
    }
  }
}

// Every layout, awkward shapes included, against the float64 product with the same scales applied
// block by block: only FP32 rounding inside the blocks and at the promotions is left.
TEST(GemmFp8, MatchesTheBlockScaledFloat64Reference) {
  std::mt19937_64 rng(testing::TestSeed(102));
  ThreadPool pool(2);
  const std::vector<Shape> shapes = {{1, 1, 1},       {1, 288, 256},  {7, 1, 300},    {33, 65, 129},
                                     {128, 160, 256}, {96, 200, 384}, {130, 96, 1000}};
  for (const Shape& s : shapes) {
    const Operands o = MakeOperands(rng, s);
    for (Layout layout : kLayouts) {
      const NtView v = View(o, layout);
      std::vector<std::uint8_t> a(v.rows * v.kk), b(v.cols * v.kk);
      for (int64_t r = 0; r < v.rows; ++r) {
        for (int64_t t = 0; t < v.kk; ++t) a[r * v.kk + t] = v.a(r, t);
      }
      for (int64_t c = 0; c < v.cols; ++c) {
        for (int64_t t = 0; t < v.kk; ++t) b[c * v.kk + t] = v.b(c, t);
      }
      std::vector<double> want, abs_want;
      testing::RefFp8Nt(a, b, v.rows, v.cols, v.kk, v.sa, v.sb, &want, &abs_want);
      // First-order bound of FP32 rounding: 128 sums in a block, one FMA per block.
      const double tol = std::ldexp(128.0 + NumTiles(v.kk), -24) * MaxAbs(abs_want);
      std::vector<float> got(v.rows * v.cols);
      RunFp8(CpuContext{&pool}, {}, o, layout, got.data());
      EXPECT_TRUE(
          AllClose(Name(LayoutName(layout), s), got.data(), want, {v.rows, v.cols}, 0, tol));
    }
  }
}

// Oracle 17: calc_diff(FP8 GEMM, unquantised product) < 1e-3. The reference is the FP32 GEMM of
// the unquantised operands (tested against float64 in gemm_test.cc).
TEST(GemmFp8, CalcDiffAgainstTheUnquantisedProductIsBelowOneThousandth) {
  std::mt19937_64 rng(testing::TestSeed(103));
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  // Oracle 2's (N, K) scaled down (2112x7168 /4, 24576x1536 /16, 32768x512 /8, 7168x16384 /16,
  // 4096x7168 /8, 7168x2048 /8), the demo model's, and (2112, 7168) at full size.
  struct Case {
    Shape s;
    bool all_layouts;
  };
  const std::vector<Case> cases = {{{128, 528, 1792}, true},  {{64, 1536, 96}, false},
                                   {{128, 4096, 512}, false}, {{64, 448, 1024}, false},
                                   {{128, 512, 896}, false},  {{128, 896, 256}, false},
                                   {{128, 288, 256}, true},   {{128, 2112, 7168}, false}};
  for (const Case& c : cases) {
    const Shape& s = c.s;
    std::mt19937_64 local(rng());
    // Plain N(0,1) data, as DeepGEMM's test uses (only the Fprop operands, for speed).
    Operands o;
    o.s = s;
    o.x = testing::RandomNormal(local, s.m * s.k);
    o.w = testing::RandomNormal(local, s.n * s.k);
    o.x_q.resize(s.m * s.k), o.x_s.resize(s.m * NumTiles(s.k));
    Quantize1x128(ctx, {}, o.x.data(), s.m, s.k, o.x_q.data(), o.x_s.data());
    o.w_q.resize(s.n * s.k), o.w_s.resize(NumTiles(s.n) * NumTiles(s.k));
    Quantize128x128(ctx, {}, o.w.data(), s.n, s.k, o.w_q.data(), o.w_s.data());
    std::vector<float> got(s.m * s.n), ref(s.m * s.n);
    RunFp8(ctx, {}, o, Layout::kFprop, got.data());
    GemmFpropFp32(ctx, {}, o.x.data(), o.w.data(), s.m, s.n, s.k, ref.data());
    const double diff = testing::CalcDiff(got.data(), testing::ToDouble(ref));
    EXPECT_LT(diff, 1e-3) << Name("fprop", s);
    std::printf("calc_diff fprop m=%lld n=%lld k=%lld: %.2e\n", static_cast<long long>(s.m),
                static_cast<long long>(s.n), static_cast<long long>(s.k), diff);
    if (!c.all_layouts) continue;
    Operands full = MakeOperands(local, s, /*spread=*/false);
    std::vector<float> dx(s.m * s.k), dx_ref(s.m * s.k), dw(s.n * s.k), dw_ref(s.n * s.k);
    RunFp8(ctx, {}, full, Layout::kDgrad, dx.data());
    GemmDgradFp32(ctx, {}, full.dy.data(), full.w.data(), s.m, s.n, s.k, dx_ref.data());
    GemmWgradFp32(ctx, {}, full.dy.data(), full.x.data(), s.m, s.n, s.k, dw_ref.data());
    // The training step re-quantises the cached FP8 x as 128x1 tiles (two roundings of x); the
    // oracle quantises the unquantised x once. The first is reported with a looser bound.
    RunFp8(ctx, {}, full, Layout::kWgrad, dw.data());
    const double diff_dw_requant = testing::CalcDiff(dw.data(), testing::ToDouble(dw_ref));
    Quantize128x1Transposed(ctx, {}, full.x.data(), s.m, s.k, full.x_t_q.data(), full.x_t_s.data());
    RunFp8(ctx, {}, full, Layout::kWgrad, dw.data());
    const double diff_dx = testing::CalcDiff(dx.data(), testing::ToDouble(dx_ref));
    const double diff_dw = testing::CalcDiff(dw.data(), testing::ToDouble(dw_ref));
    EXPECT_LT(diff_dx, 1e-3) << Name("dgrad", s);
    EXPECT_LT(diff_dw, 1e-3) << Name("wgrad", s);
    EXPECT_LT(diff_dw_requant, 1.5e-3) << Name("wgrad, x re-quantised", s);
    std::printf("calc_diff dgrad %.2e, wgrad %.2e (x re-quantised from FP8: %.2e)\n", diff_dx,
                diff_dw, diff_dw_requant);
  }
}

TEST(GemmFp8, ZeroKGivesZerosAndOverwriteIgnoresNaN) {
  std::vector<float> y(6, std::numeric_limits<float>::quiet_NaN());
  GemmFpropFp8({}, {}, nullptr, nullptr, nullptr, nullptr, 2, 3, 0, y.data());
  EXPECT_TRUE(AllClose("k=0", y.data(), std::vector<double>(6, 0.0), {2, 3}, 0, 0));
  GemmWgradFp8({}, {.accumulate = true}, nullptr, nullptr, nullptr, nullptr, 0, 2, 3, y.data());
  EXPECT_TRUE(AllClose("k=0 accumulate", y.data(), std::vector<double>(6, 0.0), {2, 3}, 0, 0));
  // Codes 0x38 = 1.0; scales 2 and 0.5: y = k * 1 * 1 * 2 * 0.5 = k.
  const std::vector<std::uint8_t> ones(2 * 5, 0x38);
  const std::vector<float> s2(2, 2.0f), shalf(1, 0.5f);
  std::vector<float> out(4, std::numeric_limits<float>::quiet_NaN());
  GemmFpropFp8({}, {}, ones.data(), s2.data(), ones.data(), shalf.data(), 2, 2, 5, out.data());
  EXPECT_TRUE(AllClose("ones", out.data(), std::vector<double>(4, 5.0), {2, 2}, 0, 0));
}

TEST(GemmFp8DeathTest, MissingScalesAbort) {
  const std::vector<std::uint8_t> q(16, 0x38);
  const std::vector<float> s(4, 1.0f);
  std::vector<float> y(16);
  EXPECT_DEATH(GemmFpropFp8({}, {}, q.data(), nullptr, q.data(), s.data(), 4, 4, 4, y.data()),
               "x_scales is null");
}

}  // namespace
}  // namespace dsv3::kernels
