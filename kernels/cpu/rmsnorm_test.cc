// Tests of RMSNorm forward and backward against PyTorch autograd (float64), on awkward shapes, with
// strided rows, in place, and for thread-count invariance.

#include "kernels/cpu/rmsnorm.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops_reference.h"
#include "kernels/cpu/test_util.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/testing/torch_reference.h"

namespace dsv3::kernels {
namespace {

using testing::AllClose;
using testing::RefCase;
using testing::SameBits;

void BuildCases(testing::RefCaseSet& set) {
  std::mt19937_64 rng = set.Rng("rmsnorm");
  struct Shape {
    const char* name;
    int64_t rows, dim;
    double eps, scale;
  };
  const Shape shapes[] = {{"one_by_one", 1, 1, 1e-6, 1.0},   {"odd", 5, 33, 1e-6, 1.0},
                          {"wide", 17, 300, 1e-5, 3.0},      {"tiny_values", 4, 64, 1e-6, 1e-3},
                          {"many_rows", 257, 24, 1e-6, 1.0}, {"kv_lora", 6, 512, 1e-6, 0.5}};
  for (const Shape& s : shapes) {
    std::vector<float> x = testing::RandomNormal(rng, s.rows * s.dim, s.scale);
    set.Add("rmsnorm", s.name)
        .Param("eps", s.eps)
        .Array("x", {s.rows, s.dim}, x)
        .Array("g", {s.dim}, testing::RandomUniform(rng, s.dim, 0.5, 1.5))
        .Array("dy", {s.rows, s.dim}, testing::RandomNormal(rng, s.rows * s.dim))
        .Array("dg0", {s.dim}, testing::RandomNormal(rng, s.dim));
  }
}
DSV3_REGISTER_REF_CASES(BuildCases);

struct Result {
  std::vector<float> y, rstd, dx, dg;
};

Result RunCase(const CpuContext& ctx, const RefCase& c, bool pass_rstd = true) {
  const std::vector<int64_t> shape = c.Shape("x");
  RmsNormShape s{shape[0], shape[1]};
  const float eps = static_cast<float>(c.Param("eps"));
  const std::vector<float> x = c.F32("x"), g = c.F32("g"), dy = c.F32("dy");
  Result r{std::vector<float>(x.size()), std::vector<float>(s.rows), std::vector<float>(x.size()),
           c.F32("dg0")};
  RmsNormForward(ctx, s, x.data(), g.data(), eps, r.y.data(), r.rstd.data());
  RmsNormBackward(ctx, s, x.data(), g.data(), pass_rstd ? r.rstd.data() : nullptr, dy.data(), eps,
                  r.dx.data(), r.dg.data());
  return r;
}

TEST(RmsNorm, ForwardAndBackwardMatchTorchOnAwkwardShapes) {
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (const RefCase& c : testing::RefCases("rmsnorm")) {
    SCOPED_TRACE(c.name());
    const Result r = RunCase(ctx, c);
    const std::vector<int64_t> shape = c.Shape("x");
    EXPECT_TRUE(AllClose("y", r.y.data(), c.F64("ref_y"), shape, 1e-5, 1e-6));
    EXPECT_TRUE(AllClose("dx", r.dx.data(), c.F64("ref_dx"), shape, 1e-4, 1e-5));
    EXPECT_TRUE(AllClose("dg", r.dg.data(), c.F64("ref_dg"), {shape[1]}, 1e-5, 1e-5));
  }
}

TEST(RmsNorm, BackwardRecomputesRstdWhenNotGiven) {
  const CpuContext ctx;
  for (const RefCase& c : testing::RefCases("rmsnorm")) {
    SCOPED_TRACE(c.name());
    const Result with = RunCase(ctx, c, true);
    const Result without = RunCase(ctx, c, false);
    EXPECT_TRUE(SameBits("dx", with.dx, without.dx));
    EXPECT_TRUE(SameBits("dg", with.dg, without.dg));
  }
}

TEST(RmsNorm, RowsInsideWiderRowsGiveTheSameBitsAsDenseRows) {
  const CpuContext ctx;
  for (const RefCase& c : testing::RefCases("rmsnorm")) {
    SCOPED_TRACE(c.name());
    const Result dense = RunCase(ctx, c);
    const std::vector<int64_t> shape = c.Shape("x");
    const int64_t rows = shape[0], dim = shape[1];
    const int64_t xs = dim + 64, ys = dim + 3;  // e.g. c_kv inside [c_kv | k_pe] rows
    const std::vector<float> x = c.F32("x"), g = c.F32("g"), dy = c.F32("dy");
    std::vector<float> xw(rows * xs, 7.0f), dyw(rows * ys, 7.0f);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < dim; ++j) {
        xw[r * xs + j] = x[r * dim + j];
        dyw[r * ys + j] = dy[r * dim + j];
      }
    }
    std::vector<float> yw(rows * ys, -1.0f), dxw(rows * xs, -1.0f), dg = c.F32("dg0");
    const RmsNormShape s{rows, dim, xs, ys};
    const float eps = static_cast<float>(c.Param("eps"));
    RmsNormForward(ctx, s, xw.data(), g.data(), eps, yw.data(), nullptr);
    RmsNormBackward(ctx, s, xw.data(), g.data(), nullptr, dyw.data(), eps, dxw.data(), dg.data());
    std::vector<float> y(rows * dim), dx(rows * dim);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < dim; ++j) {
        y[r * dim + j] = yw[r * ys + j];
        dx[r * dim + j] = dxw[r * xs + j];
      }
      for (int64_t j = dim; j < ys; ++j) ASSERT_EQ(yw[r * ys + j], -1.0f) << "gap written";
      for (int64_t j = dim; j < xs; ++j) ASSERT_EQ(dxw[r * xs + j], -1.0f) << "gap written";
    }
    EXPECT_TRUE(SameBits("y", y, dense.y));
    EXPECT_TRUE(SameBits("dx", dx, dense.dx));
    EXPECT_TRUE(SameBits("dg", dg, dense.dg));
  }
}

TEST(RmsNorm, InPlaceGivesTheSameBitsAsOutOfPlace) {
  const CpuContext ctx;
  for (const RefCase& c : testing::RefCases("rmsnorm")) {
    SCOPED_TRACE(c.name());
    const Result ref = RunCase(ctx, c);
    const std::vector<int64_t> shape = c.Shape("x");
    const RmsNormShape s{shape[0], shape[1]};
    const float eps = static_cast<float>(c.Param("eps"));
    const std::vector<float> x = c.F32("x"), g = c.F32("g");
    std::vector<float> y = x, d = c.F32("dy"), dg = c.F32("dg0");
    RmsNormForward(ctx, s, y.data(), g.data(), eps, y.data(), nullptr);
    RmsNormBackward(ctx, s, x.data(), g.data(), nullptr, d.data(), eps, d.data(), dg.data());
    EXPECT_TRUE(SameBits("y", y, ref.y));
    EXPECT_TRUE(SameBits("dx", d, ref.dx));
    EXPECT_TRUE(SameBits("dg", dg, ref.dg));
  }
}

TEST(RmsNorm, ResultsAreBitIdenticalForAnyThreadCount) {
  std::mt19937_64 rng(testing::TestSeed(7));
  const int64_t rows = 301, dim = 200;
  const std::vector<float> x = testing::RandomNormal(rng, rows * dim);
  const std::vector<float> g = testing::RandomNormal(rng, dim);
  const std::vector<float> dy = testing::RandomNormal(rng, rows * dim);
  auto run = [&](ThreadPool* pool) {
    const CpuContext ctx{pool};
    Result r{std::vector<float>(rows * dim),
             {},
             std::vector<float>(rows * dim),
             std::vector<float>(dim, 0.25f)};
    RmsNormForward(ctx, {rows, dim}, x.data(), g.data(), 1e-6f, r.y.data(), nullptr);
    RmsNormBackward(ctx, {rows, dim}, x.data(), g.data(), nullptr, dy.data(), 1e-6f, r.dx.data(),
                    r.dg.data());
    return r;
  };
  const Result one = run(nullptr);
  for (int threads : {2, 3, 5}) {
    ThreadPool pool(threads);
    const Result many = run(&pool);
    EXPECT_TRUE(SameBits("y", one.y, many.y)) << threads << " threads";
    EXPECT_TRUE(SameBits("dx", one.dx, many.dx)) << threads << " threads";
    EXPECT_TRUE(SameBits("dg", one.dg, many.dg)) << threads << " threads";
  }
}

TEST(RmsNormDeathTest, AbortsOnARowStrideSmallerThanDim) {
  const std::vector<float> x(64), g(8);
  std::vector<float> y(64);
  EXPECT_DEATH(
      RmsNormForward(CpuContext{}, {4, 8, 6, 0}, x.data(), g.data(), 1e-6f, y.data(), nullptr),
      "x_stride=6 and y_stride=8 must be >= dim=8");
}

}  // namespace
}  // namespace dsv3::kernels
