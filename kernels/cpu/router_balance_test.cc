// Tests of the sequence-wise balance loss (spec §3.5, §11.3) against PyTorch autograd, and of the
// auxiliary-loss-free bias update (§3.4, §11.6), with the spec's oracles 11 and 12.

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops_reference.h"
#include "kernels/cpu/router.h"
#include "kernels/cpu/test_util.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/testing/torch_reference.h"

namespace dsv3::kernels {
namespace {

using testing::AllClose;
using testing::RefCase;
using testing::SameBits;

void BuildCases(testing::RefCaseSet& set) {
  std::mt19937_64 rng = set.Rng("balance");
  struct Shape {
    const char* name;
    int64_t rows, seq, n, k;
    double alpha;
    int64_t divisor;
    double grad_scale;
    bool ties;
  };
  const Shape shapes[] = {{"single_expert", 1, 1, 1, 1, 1e-4, 1, 1.0, false},
                          {"one_row", 1, 7, 8, 2, 1e-4, 1, 1.0, false},
                          {"v3_like", 3, 16, 16, 4, 1e-3, 3, 1.0, false},
                          {"divisor_and_scale", 2, 5, 6, 1, 0.1, 8, 0.5, false},
                          {"near_ties", 2, 9, 12, 3, 0.01, 2, 1.0, true}};
  for (const Shape& s : shapes) {
    const int64_t tokens = s.rows * s.seq;
    std::vector<float> logits = testing::RandomNormal(rng, tokens * s.n, 1.5);
    if (s.ties) {
      for (float& l : logits) l = static_cast<float>(static_cast<int>(rng() % 3) - 1);
    }
    set.Add("balance", s.name)
        .IntParam("rows", s.rows)
        .IntParam("seq_len", s.seq)
        .IntParam("n_experts", s.n)
        .IntParam("top_k", s.k)
        .Param("alpha", s.alpha)
        .IntParam("divisor", s.divisor)
        .Param("grad_scale", s.grad_scale)
        .Array("logits", {tokens, s.n}, logits)
        .Array("dlogits0", {tokens, s.n}, testing::RandomNormal(rng, tokens * s.n, 1e-3));
  }
}
DSV3_REGISTER_REF_CASES(BuildCases);

BalanceLossConfig ConfigOf(const RefCase& c) {
  BalanceLossConfig config;
  config.n_experts = c.IntParam("n_experts");
  config.top_k = c.IntParam("top_k");
  config.rows = c.IntParam("rows");
  config.seq_len = c.IntParam("seq_len");
  config.alpha = c.Param("alpha");
  config.mean_over_rows = c.IntParam("divisor");
  config.grad_scale = c.Param("grad_scale");
  return config;
}

TEST(BalanceLoss, LossAndGradientMatchTorch) {
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (const RefCase& c : testing::RefCases("balance")) {
    SCOPED_TRACE(c.name());
    const std::vector<float> logits = c.F32("logits");
    std::vector<float> dlogits = c.F32("dlogits0");
    const double loss = SequenceBalanceLoss(ctx, ConfigOf(c), logits.data(), dlogits.data());
    EXPECT_NEAR(loss, c.F64("ref_loss")[0], 1e-12 * std::fabs(c.F64("ref_loss")[0]) + 1e-18);
    EXPECT_TRUE(
        AllClose("dlogits", dlogits.data(), c.F64("ref_dlogits"), c.Shape("logits"), 1e-6, 1e-10));
    EXPECT_EQ(SequenceBalanceLoss(ctx, ConfigOf(c), logits.data(), nullptr), loss);
  }
}

TEST(BalanceLoss, PerfectBalanceGivesAlpha) {
  // Oracle 11: 8 experts, top-2, 4 tokens per row; token t prefers experts 2t and 2t+1, so every
  // expert is chosen once per row: f_i = 8 / (2 * 4) * 1 = 1 and the loss is alpha * sum P = alpha.
  const CpuContext ctx;
  const int64_t rows = 3, seq = 4, n = 8;
  std::vector<float> logits(rows * seq * n, -3.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < seq; ++t) {
      logits[(r * seq + t) * n + 2 * t] = 3.0f;
      logits[(r * seq + t) * n + 2 * t + 1] = 2.0f + static_cast<float>(r);
    }
  }
  BalanceLossConfig config;
  config.n_experts = n;
  config.top_k = 2;
  config.rows = rows;
  config.seq_len = seq;
  config.alpha = 1e-4;
  EXPECT_NEAR(SequenceBalanceLoss(ctx, config, logits.data(), nullptr), 1e-4, 1e-4 * 1e-14);
}

TEST(BalanceLoss, ResultsAreBitIdenticalForAnyThreadCount) {
  std::mt19937_64 rng(testing::TestSeed(53));
  BalanceLossConfig config;
  config.n_experts = 32;
  config.top_k = 4;
  config.rows = 7;
  config.seq_len = 33;
  const std::vector<float> logits =
      testing::RandomNormal(rng, config.rows * config.seq_len * config.n_experts);
  auto run = [&](ThreadPool* pool, double* loss) {
    std::vector<float> d(logits.size(), 0.5f);
    *loss = SequenceBalanceLoss(CpuContext{pool}, config, logits.data(), d.data());
    return d;
  };
  double one_loss = 0;
  const std::vector<float> one = run(nullptr, &one_loss);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    double loss = 0;
    EXPECT_TRUE(SameBits("dlogits", one, run(&pool, &loss))) << threads << " threads";
    EXPECT_EQ(loss, one_loss) << threads << " threads";
  }
}

TEST(RouterBias, UpdateMovesEachBiasByExactlyGammaOrZero) {
  // Oracle 12: loads {3, 5, 4, 4, 0, 8} have mean 4: under-loaded experts gain gamma, over-loaded
  // ones lose it, experts at the mean keep their bias; no centering.
  const int64_t load[] = {3, 5, 4, 4, 0, 8};
  const float gamma = 1e-3f;
  std::vector<float> bias(6, 0.0f);
  UpdateRouterBias(CpuContext{}, load, 6, gamma, bias.data());
  EXPECT_EQ(bias, (std::vector<float>{gamma, -gamma, 0.0f, 0.0f, gamma, -gamma}));
  std::vector<float> start = {0.3f, -1.7f, 2.0f, 5e-4f, -3e-3f, 1.0f};
  std::vector<float> b = start;
  UpdateRouterBias(CpuContext{}, load, 6, gamma, b.data());
  EXPECT_EQ(b, (std::vector<float>{start[0] + gamma, start[1] - gamma, start[2], start[3],
                                   start[4] + gamma, start[5] - gamma}));
}

TEST(RouterBias, SignIsExactForLoadsBeyondDoublePrecision) {
  // Mean of {2^53 + 1, 2^53 + 2, 2^53 + 3} is 2^53 + 2 exactly; a double mean would round.
  const int64_t big = int64_t{1} << 53;
  const int64_t load[] = {big + 1, big + 2, big + 3};
  std::vector<float> bias(3, 0.0f);
  UpdateRouterBias(CpuContext{}, load, 3, 0.5f, bias.data());
  EXPECT_EQ(bias, (std::vector<float>{0.5f, 0.0f, -0.5f}));
}

TEST(RouterBias, ZeroGammaLeavesTheBiasUnchanged) {
  const int64_t load[] = {1, 9};
  std::vector<float> bias = {0.25f, -0.5f};
  UpdateRouterBias(CpuContext{}, load, 2, 0.0f, bias.data());
  EXPECT_EQ(bias, (std::vector<float>{0.25f, -0.5f}));
}

TEST(RouterBiasDeathTest, AbortsOnANegativeLoad) {
  const int64_t load[] = {1, -1};
  std::vector<float> bias(2);
  EXPECT_DEATH(UpdateRouterBias(CpuContext{}, load, 2, 1e-3f, bias.data()),
               "load\\[1\\]=-1 must be >= 0");
}

}  // namespace
}  // namespace dsv3::kernels
