// Tests of RoPE (adjacent-pair rotation of strided slices, its inverse, the frequencies and the
// YaRN blend) against PyTorch (V3code's complex-multiplication form in float64) and the spec's
// oracles 4, 5 and 6.

#include "kernels/cpu/rope.h"

#include <algorithm>
#include <cmath>
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

struct YarnCase {
  const char* name;
  int64_t d;
  double base, factor;
  int64_t l0;
  double beta_fast, beta_slow;
};
const YarnCase kYarnCases[] = {{"v3_d64", 64, 1e4, 40, 4096, 32, 1},
                               {"d32_factor4", 32, 1e4, 4, 2048, 32, 1},
                               {"d16_base5e5", 16, 5e5, 8, 1024, 16, 2},
                               {"d8_tiny", 8, 1e4, 2, 64, 32, 1}};

void BuildCases(testing::RefCaseSet& set) {
  std::mt19937_64 rng = set.Rng("rope");
  struct Shape {
    const char* name;
    int64_t tokens, heads, d;
    double theta;
    std::vector<int32_t> pos;
    bool yarn;
  };
  const Shape shapes[] = {{"q_two_rows", 6, 3, 8, 1e4, {0, 1, 2, 0, 1, 2}, false},
                          {"k_pe_long_positions", 5, 1, 64, 1e4, {0, 1, 4095, 100, 7}, false},
                          {"one_token_one_pair", 1, 1, 2, 1e4, {3}, false},
                          {"odd_heads_theta5e4", 7, 5, 16, 5e4, {0, 3, 299, 17, 17, 250, 1}, false},
                          {"yarn_d64", 4, 2, 64, 1e4, {0, 5000, 32767, 123}, true}};
  for (const Shape& s : shapes) {
    const int64_t n = s.tokens * s.heads * s.d;
    testing::RefCaseWriter w = set.Add("rope", s.name);
    w.IntParam("d_rope", s.d)
        .Param("rope_theta", s.theta)
        .IntParam("yarn", s.yarn ? 1 : 0)
        .Array("x", {s.tokens, s.heads, s.d}, testing::RandomNormal(rng, n))
        .Array("dy", {s.tokens, s.heads, s.d}, testing::RandomNormal(rng, n))
        .Array("pos", {s.tokens}, s.pos);
    if (s.yarn) {
      w.Param("factor", 40).Param("l0", 4096).Param("beta_fast", 32).Param("beta_slow", 1);
    }
  }
  for (const YarnCase& y : kYarnCases) {
    set.Add("yarn", y.name)
        .IntParam("d_rope", y.d)
        .Param("rope_theta", y.base)
        .IntParam("yarn", 1)
        .Param("factor", y.factor)
        .Param("l0", static_cast<double>(y.l0))
        .Param("beta_fast", y.beta_fast)
        .Param("beta_slow", y.beta_slow);
  }
}
DSV3_REGISTER_REF_CASES(BuildCases);

// Frequencies and a table covering `positions`.
struct Table {
  std::vector<double> theta;
  std::vector<float> cos, sin;
  RopeTable view() const {
    return RopeTable{cos.data(), sin.data(), static_cast<int64_t>(cos.size() / theta.size()),
                     static_cast<int64_t>(theta.size())};
  }
};

Table MakeTable(const CpuContext& ctx, const std::vector<double>& theta, int64_t positions) {
  Table t{theta, std::vector<float>(positions * theta.size()),
          std::vector<float>(positions * theta.size())};
  BuildRopeTable(ctx, theta.data(), static_cast<int64_t>(theta.size()), positions, t.cos.data(),
                 t.sin.data());
  return t;
}

std::vector<double> CaseTheta(const RefCase& c) {
  const int64_t d = c.IntParam("d_rope");
  std::vector<double> theta(d / 2);
  if (c.IntParam("yarn")) {
    YarnScaling y{c.Param("factor"), static_cast<int64_t>(c.Param("l0")), c.Param("beta_fast"),
                  c.Param("beta_slow")};
    YarnRopeFrequencies(d, c.Param("rope_theta"), y, theta.data());
  } else {
    RopeFrequencies(d, c.Param("rope_theta"), theta.data());
  }
  return theta;
}

TEST(Rope, RotatesStridedQSlicesLikeTorchAndBackwardIsTheInverse) {
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (const RefCase& c : testing::RefCases("rope")) {
    SCOPED_TRACE(c.name());
    const std::vector<int64_t> shape = c.Shape("x");
    const int64_t tokens = shape[0], heads = shape[1], d = shape[2];
    const std::vector<int32_t> pos = c.I32("pos");
    const Table table = MakeTable(ctx, CaseTheta(c), *std::max_element(pos.begin(), pos.end()) + 1);
    // q rows [nope | rope] per head, with an odd nope width so nothing is aligned.
    const int64_t nope = 5, head_stride = nope + d, token_stride = heads * head_stride;
    const std::vector<float> x = c.F32("x"), dy = c.F32("dy");
    std::vector<float> q(tokens * token_stride), dq(tokens * token_stride);
    for (size_t i = 0; i < q.size(); ++i) q[i] = dq[i] = 1000.0f + static_cast<float>(i);
    const std::vector<float> untouched = q;
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t i = 0; i < d; ++i) {
          q[t * token_stride + h * head_stride + nope + i] = x[(t * heads + h) * d + i];
          dq[t * token_stride + h * head_stride + nope + i] = dy[(t * heads + h) * d + i];
        }
      }
    }
    const RopeLayout layout{tokens, heads, d, token_stride, head_stride};
    RopeForward(ctx, table.view(), pos.data(), layout, q.data() + nope);
    RopeBackward(ctx, table.view(), pos.data(), layout, dq.data() + nope);
    std::vector<float> y(x.size()), dx(x.size());
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t i = 0; i < d; ++i) {
          y[(t * heads + h) * d + i] = q[t * token_stride + h * head_stride + nope + i];
          dx[(t * heads + h) * d + i] = dq[t * token_stride + h * head_stride + nope + i];
        }
        for (int64_t i = 0; i < nope; ++i) {
          const int64_t at = t * token_stride + h * head_stride + i;
          ASSERT_EQ(q[at], untouched[at]) << "nope element written at " << at;
          ASSERT_EQ(dq[at], untouched[at]) << "nope element written at " << at;
        }
      }
    }
    const std::vector<double> want_theta = c.F64("ref_theta");
    for (int64_t j = 0; j < d / 2; ++j) {
      EXPECT_NEAR(table.theta[j], want_theta[j], 1e-13 * want_theta[j]) << "theta j=" << j;
    }
    EXPECT_TRUE(AllClose("y", y.data(), c.F64("ref_y"), shape, 1e-5, 1e-6));
    EXPECT_TRUE(AllClose("dx", dx.data(), c.F64("ref_dx"), shape, 1e-5, 1e-6));
  }
}

TEST(Rope, RotatesTheSharedKeyInsideKvRows) {
  // k_pe sits at the tail of the 576-wide [c_kv | k_pe] rows: heads = 1, token_stride = 576.
  const CpuContext ctx;
  const int64_t tokens = 9, kv = 512, d = 64, stride = kv + d;
  std::vector<double> theta(d / 2);
  RopeFrequencies(d, 1e4, theta.data());
  const Table table = MakeTable(ctx, theta, tokens);
  std::mt19937_64 rng(testing::TestSeed(3));
  std::vector<float> a = testing::RandomNormal(rng, tokens * stride);
  const std::vector<float> before = a;
  std::vector<int32_t> pos(tokens);
  for (int64_t t = 0; t < tokens; ++t) pos[t] = static_cast<int32_t>(t);
  RopeForward(ctx, table.view(), pos.data(), {tokens, 1, d, stride, 0}, a.data() + kv);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < kv; ++i) ASSERT_EQ(a[t * stride + i], before[t * stride + i]);
    for (int64_t j = 0; j < d / 2; ++j) {
      const double ang = static_cast<double>(t) * theta[j];
      const double x0 = before[t * stride + kv + 2 * j], x1 = before[t * stride + kv + 2 * j + 1];
      EXPECT_NEAR(a[t * stride + kv + 2 * j], x0 * std::cos(ang) - x1 * std::sin(ang), 1e-5);
      EXPECT_NEAR(a[t * stride + kv + 2 * j + 1], x0 * std::sin(ang) + x1 * std::cos(ang), 1e-5);
    }
  }
}

TEST(Rope, RotatesAdjacentPairsNotHalves) {
  // Oracle 6: (x[2j], x[2j+1]) rotate together. A half-split ("rotate_half") implementation would
  // move e_0 into element 2 instead of element 1.
  const CpuContext ctx;
  std::vector<double> theta(2);
  RopeFrequencies(4, 1e4, theta.data());  // {1, 0.01}
  ASSERT_EQ(theta[0], 1.0);
  ASSERT_DOUBLE_EQ(theta[1], 0.01);
  const Table table = MakeTable(ctx, theta, 2);
  const int32_t pos[] = {1, 1};
  std::vector<float> x = {1, 0, 0, 0, 0, 0, 1, 0};  // token 0: e_0, token 1: e_2
  RopeForward(ctx, table.view(), pos, {2, 1, 4, 4, 0}, x.data());
  EXPECT_FLOAT_EQ(x[0], static_cast<float>(std::cos(1.0)));
  EXPECT_FLOAT_EQ(x[1], static_cast<float>(std::sin(1.0)));
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_EQ(x[3], 0.0f);
  EXPECT_EQ(x[4], 0.0f);
  EXPECT_EQ(x[5], 0.0f);
  EXPECT_FLOAT_EQ(x[6], static_cast<float>(std::cos(0.01)));
  EXPECT_FLOAT_EQ(x[7], static_cast<float>(std::sin(0.01)));
}

TEST(Rope, PositionZeroIsTheIdentity) {
  const CpuContext ctx;
  std::vector<double> theta(32);
  RopeFrequencies(64, 1e4, theta.data());
  const Table table = MakeTable(ctx, theta, 1);
  std::mt19937_64 rng(testing::TestSeed(5));
  std::vector<float> x = testing::RandomNormal(rng, 3 * 64);
  const std::vector<float> before = x;
  const int32_t pos[] = {0, 0, 0};
  RopeForward(ctx, table.view(), pos, {3, 1, 64, 64, 0}, x.data());
  EXPECT_TRUE(SameBits("x", x, before));
}

TEST(Rope, BackwardUndoesForward) {
  const CpuContext ctx;
  std::vector<double> theta(8);
  RopeFrequencies(16, 1e4, theta.data());
  const Table table = MakeTable(ctx, theta, 5000);
  std::mt19937_64 rng(testing::TestSeed(11));
  const int64_t tokens = 40, heads = 4;
  std::vector<float> x = testing::RandomNormal(rng, tokens * heads * 16);
  const std::vector<float> before = x;
  std::vector<int32_t> pos(tokens);
  for (auto& p : pos) p = static_cast<int32_t>(rng() % 5000);
  const RopeLayout layout{tokens, heads, 16, heads * 16, 16};
  RopeForward(ctx, table.view(), pos.data(), layout, x.data());
  RopeBackward(ctx, table.view(), pos.data(), layout, x.data());
  std::vector<double> want(before.begin(), before.end());
  EXPECT_TRUE(AllClose("x", x.data(), want, {tokens, heads, 16}, 0, 1e-6));
}

TEST(Rope, ResultsAreBitIdenticalForAnyThreadCount) {
  std::vector<double> theta(32);
  RopeFrequencies(64, 1e4, theta.data());
  std::mt19937_64 rng(testing::TestSeed(13));
  const int64_t tokens = 333, heads = 3;
  const std::vector<float> x = testing::RandomNormal(rng, tokens * heads * 64);
  std::vector<int32_t> pos(tokens);
  for (auto& p : pos) p = static_cast<int32_t>(rng() % 4096);
  auto run = [&](ThreadPool* pool) {
    const CpuContext ctx{pool};
    const Table table = MakeTable(ctx, theta, 4096);
    std::vector<float> y = x;
    RopeForward(ctx, table.view(), pos.data(), {tokens, heads, 64, heads * 64, 64}, y.data());
    y.insert(y.end(), table.cos.begin(), table.cos.end());
    return y;
  };
  const std::vector<float> one = run(nullptr);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    EXPECT_TRUE(SameBits("y", one, run(&pool))) << threads << " threads";
  }
}

TEST(Rope, FrequenciesAreRopeThetaToTheMinusTwoJOverD) {
  std::vector<double> theta(32);
  RopeFrequencies(64, 1e4, theta.data());
  for (int j = 0; j < 32; ++j) {
    EXPECT_DOUBLE_EQ(theta[j], std::pow(1e4, -2.0 * j / 64.0)) << "j=" << j;
  }
}

TEST(Yarn, BlendMatchesOracle5) {
  // d=64, base 1e4, L0 4096, s 40, beta 32/1: low 10, high 23; j <= 10 unchanged, j >= 23 / 40,
  // a linear ramp between (theta/theta' = 1.0, 1.081, 1.176, ..., 40 for j = 10..23).
  std::vector<double> base(32), yarn(32);
  RopeFrequencies(64, 1e4, base.data());
  YarnRopeFrequencies(64, 1e4, YarnScaling{40, 4096, 32, 1}, yarn.data());
  for (int j = 0; j < 32; ++j) {
    const double ratio = base[j] / yarn[j];
    if (j <= 10) {
      EXPECT_EQ(yarn[j], base[j]) << "j=" << j;
    } else if (j >= 23) {
      EXPECT_NEAR(ratio, 40.0, 40.0 * 1e-14) << "j=" << j;
    } else {
      const double ramp = (j - 10) / 13.0;
      EXPECT_NEAR(yarn[j], base[j] * (ramp / 40.0 + 1.0 - ramp), base[j] * 1e-14) << "j=" << j;
    }
  }
  EXPECT_NEAR(base[11] / yarn[11], 1.081, 5e-4);
  EXPECT_NEAR(base[12] / yarn[12], 1.176, 5e-4);
  EXPECT_NEAR(base[22] / yarn[22], 1.0 / (12.0 / 13 / 40 + 1.0 / 13), 1e-12);
}

TEST(Yarn, FrequenciesMatchTheReferenceImplementation) {
  for (const RefCase& c : testing::RefCases("yarn")) {
    SCOPED_TRACE(c.name());
    const std::vector<double> theta = CaseTheta(c);
    const std::vector<double> want = c.F64("ref_theta");
    ASSERT_EQ(theta.size(), want.size());
    for (size_t j = 0; j < theta.size(); ++j) {
      EXPECT_NEAR(theta[j], want[j], 1e-13 * want[j]) << "j=" << j;
    }
  }
}

TEST(Yarn, MscaleGivesTheSoftmaxScaleOfOracle4) {
  const double base_scale = 1.0 / std::sqrt(192.0);
  EXPECT_NEAR(base_scale, 0.0721688, 1e-7);
  const double m = YarnMscale(40.0, 1.0);
  EXPECT_NEAR(m, 1.368888, 1e-6);
  EXPECT_NEAR(base_scale * m * m, 0.1352338, 1e-7);
  EXPECT_EQ(YarnMscale(1.0, 1.0), 1.0);
}

TEST(RopeDeathTest, AbortsOnAPositionOutsideTheTable) {
  std::vector<double> theta(2);
  RopeFrequencies(4, 1e4, theta.data());
  const Table table = MakeTable(CpuContext{}, theta, 8);
  std::vector<float> x(8);
  const int32_t pos[] = {0, 8};
  EXPECT_DEATH(RopeForward(CpuContext{}, table.view(), pos, {2, 1, 4, 4, 0}, x.data()),
               "positions\\[1\\]=8 outside the table's \\[0, 8\\)");
}

}  // namespace
}  // namespace dsv3::kernels
