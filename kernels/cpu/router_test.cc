// Tests of the router (spec §3.2, §11.5): selection and load counts compared EXACTLY with a PyTorch
// reference that ranks the same FP32 scores (including many near-ties and a forcing bias), gate
// weights and their backward with autograd, and the oracles 8-10 of spec §9. The balance loss and
// the bias update (oracles 11-12) are in router_balance_test.cc.

#include "kernels/cpu/router.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <set>
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

struct RouterCase {
  const char* name;
  int64_t tokens, n, groups, topk_groups, k;
  double scale;
  enum Kind { kRandom, kNearTies, kForcing, kNegativeBias } kind;
};

const RouterCase kCases[] = {
    {"single_expert", 1, 1, 1, 1, 1, 1.0, RouterCase::kRandom},
    {"k1_no_groups", 11, 8, 1, 1, 1, 2.5, RouterCase::kRandom},
    {"v3_like", 37, 16, 4, 2, 4, 2.5, RouterCase::kRandom},
    {"groups_of_one", 9, 6, 6, 3, 2, 1.5, RouterCase::kRandom},
    {"every_expert", 10, 12, 3, 3, 12, 1.0, RouterCase::kRandom},
    {"many_near_ties", 64, 32, 8, 4, 8, 2.5, RouterCase::kNearTies},
    {"near_ties_no_groups", 50, 10, 1, 1, 3, 1.0, RouterCase::kNearTies},
    {"large_bias_forces_expert", 20, 16, 4, 2, 4, 2.5, RouterCase::kForcing},
    {"negative_bias_one_group", 15, 16, 4, 1, 3, 2.5, RouterCase::kNegativeBias},
    {"v3_671b_shape", 8, 256, 8, 4, 8, 2.5, RouterCase::kRandom},
};

void BuildCases(testing::RefCaseSet& set) {
  std::mt19937_64 rng = set.Rng("router");
  for (const RouterCase& rc : kCases) {
    std::vector<float> logits = testing::RandomNormal(rng, rc.tokens * rc.n, 1.5);
    std::vector<float> bias = testing::RandomNormal(rng, rc.n, 0.1);
    if (rc.kind == RouterCase::kNearTies) {
      // Logits on a coarse grid, nudged by 0 or +-2^-22 (s moves by about one FP32 ulp), and
      // biases in {0, +-0.25}: many exact ties and ties-after-rounding in s + b.
      for (float& l : logits) {
        l = static_cast<float>(static_cast<int>(rng() % 5) - 2) * 0.5f +
            static_cast<float>(static_cast<int>(rng() % 3) - 1) * 0x1p-22f;
      }
      for (float& b : bias) b = static_cast<float>(static_cast<int>(rng() % 3) - 1) * 0.25f;
    } else if (rc.kind == RouterCase::kForcing) {
      for (float& b : bias) b *= 0.1f;
      bias[5] = 10.0f;
    } else if (rc.kind == RouterCase::kNegativeBias) {
      for (float& b : bias) b = -2.0f + b * 0.1f;
    }
    set.Add("router", rc.name)
        .IntParam("n_groups", rc.groups)
        .IntParam("topk_groups", rc.topk_groups)
        .IntParam("top_k", rc.k)
        .Param("scale", rc.scale)
        .Array("logits", {rc.tokens, rc.n}, logits)
        .Array("bias", {rc.n}, bias)
        .Array("dweights", {rc.tokens, rc.k}, testing::RandomNormal(rng, rc.tokens * rc.k));
  }
}
DSV3_REGISTER_REF_CASES(BuildCases);

RouterConfig ConfigOf(const RefCase& c) {
  RouterConfig config;
  config.n_experts = c.Shape("logits")[1];
  config.n_groups = c.IntParam("n_groups");
  config.topk_groups = c.IntParam("topk_groups");
  config.top_k = c.IntParam("top_k");
  config.routed_scaling_factor = static_cast<float>(c.Param("scale"));
  return config;
}

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<int64_t> load;
};

Routed Route(const CpuContext& ctx, const RouterConfig& config, const std::vector<float>& logits,
             const std::vector<float>& bias) {
  const int64_t tokens = static_cast<int64_t>(logits.size()) / config.n_experts;
  Routed r{std::vector<int32_t>(tokens * config.top_k), std::vector<float>(tokens * config.top_k),
           std::vector<int64_t>(config.n_experts, 0)};
  RouterForward(ctx, config, logits.data(), bias.data(), tokens, r.ids.data(), r.weights.data(),
                r.load.data());
  return r;
}

// sigmoid in double, as the kernel's scores before rounding.
double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

TEST(Router, SelectionAndLoadCountsMatchTorchExactly) {
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (const RefCase& c : testing::RefCases("router")) {
    SCOPED_TRACE(c.name());
    const Routed r = Route(ctx, ConfigOf(c), c.F32("logits"), c.F32("bias"));
    EXPECT_EQ(r.ids, c.I32("ref_ids"));
    const std::vector<int32_t> want_load = c.I32("ref_load");
    EXPECT_EQ(r.load, std::vector<int64_t>(want_load.begin(), want_load.end()));
  }
}

TEST(Router, GateWeightsAndTheirBackwardMatchTorch) {
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (const RefCase& c : testing::RefCases("router")) {
    SCOPED_TRACE(c.name());
    const RouterConfig config = ConfigOf(c);
    const std::vector<float> logits = c.F32("logits"), dw = c.F32("dweights");
    const int64_t tokens = c.Shape("logits")[0];
    const Routed r = Route(ctx, config, logits, c.F32("bias"));
    EXPECT_TRUE(AllClose("weights", r.weights.data(), c.F64("ref_weights"), {tokens, config.top_k},
                         1e-6, 1e-7));
    std::vector<float> dlogits(logits.size(), 99.0f);
    RouterBackward(ctx, config, logits.data(), r.ids.data(), dw.data(), tokens, dlogits.data());
    EXPECT_TRUE(AllClose("dlogits", dlogits.data(), c.F64("ref_dlogits"),
                         {tokens, config.n_experts}, 1e-6, 1e-9));
  }
}

TEST(Router, GateWeightsSumToTheScalingFactorAndUseUnbiasedScores) {
  // Oracle 8.
  const CpuContext ctx;
  std::mt19937_64 rng(testing::TestSeed(23));
  const RouterConfig config{16, 4, 2, 4, 2.5f};
  const int64_t tokens = 500;
  const std::vector<float> logits = testing::RandomNormal(rng, tokens * 16, 2.0);
  const std::vector<float> bias = testing::RandomNormal(rng, 16, 0.5);
  const Routed r = Route(ctx, config, logits, bias);
  for (int64_t t = 0; t < tokens; ++t) {
    double sum = 0, z = 0;
    for (int k = 0; k < 4; ++k) {
      sum += r.weights[t * 4 + k];
      z += Sigmoid(logits[t * 16 + r.ids[t * 4 + k]]);
    }
    ASSERT_NEAR(sum, 2.5, 2.5 * 4e-7) << "token " << t;
    for (int k = 0; k < 4; ++k) {
      ASSERT_NEAR(r.weights[t * 4 + k], 2.5 * Sigmoid(logits[t * 16 + r.ids[t * 4 + k]]) / z, 2e-6)
          << "token " << t << " slot " << k;
    }
  }
}

// Logits on a grid with gaps of 0.05 (no two scores of a token within rounding of each other).
std::vector<float> SpacedLogits(std::mt19937_64& rng, int64_t tokens, int64_t n) {
  std::vector<float> logits(tokens * n);
  std::vector<int> grid(n);
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(grid.begin(), grid.end(), 0);
    std::shuffle(grid.begin(), grid.end(), rng);
    for (int64_t i = 0; i < n; ++i) logits[t * n + i] = -2.0f + 0.05f * static_cast<float>(grid[i]);
  }
  return logits;
}

TEST(Router, AddingAConstantToEveryBiasChangesNothing) {
  // Oracle 9, first half. Biases are multiples of 1/8 and the constant 0.375 is exact, so only
  // the ranking could change, and it must not.
  const CpuContext ctx;
  std::mt19937_64 rng(testing::TestSeed(29));
  const RouterConfig config{32, 4, 2, 6, 2.5f};
  const int64_t tokens = 200;
  const std::vector<float> logits = SpacedLogits(rng, tokens, 32);
  std::vector<float> bias(32), shifted(32);
  for (int i = 0; i < 32; ++i) {
    bias[i] = static_cast<float>(static_cast<int>(rng() % 9) - 4) / 8.0f;
    shifted[i] = bias[i] + 0.375f;
  }
  const Routed a = Route(ctx, config, logits, bias);
  const Routed b = Route(ctx, config, logits, shifted);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_TRUE(SameBits("weights", a.weights, b.weights));
  EXPECT_EQ(a.load, b.load);
}

TEST(Router, ALargeBiasForcesItsExpertIntoEveryTokenWithAnUnbiasedWeight) {
  // Oracle 9, second half: the forced expert takes slot 0 of every token (its group's top-2 sum
  // rises too), and its weight still comes from the unbiased score.
  const CpuContext ctx;
  std::mt19937_64 rng(testing::TestSeed(31));
  const RouterConfig config{16, 4, 2, 4, 2.5f};
  const int64_t tokens = 300;
  const std::vector<float> logits = testing::RandomNormal(rng, tokens * 16, 2.0);
  std::vector<float> bias = testing::RandomNormal(rng, 16, 0.05);
  bias[13] = 5.0f;
  const Routed r = Route(ctx, config, logits, bias);
  EXPECT_EQ(r.load[13], tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    ASSERT_EQ(r.ids[t * 4], 13) << "token " << t;
    double z = 0;
    for (int k = 0; k < 4; ++k) z += Sigmoid(logits[t * 16 + r.ids[t * 4 + k]]);
    ASSERT_NEAR(r.weights[t * 4], 2.5 * Sigmoid(logits[t * 16 + 13]) / z, 2e-6) << "token " << t;
  }
}

TEST(Router, ChosenExpertsLieInTheBestTopkGroupsGroups) {
  // Oracle 10: at most topk_groups groups per token, and they are groups whose top-2 sum of biased
  // scores is at least that of every dropped group.
  const CpuContext ctx;
  std::mt19937_64 rng(testing::TestSeed(37));
  const RouterConfig config{64, 8, 3, 6, 2.5f};
  const int64_t tokens = 300, gs = 8;
  const std::vector<float> logits = testing::RandomNormal(rng, tokens * 64, 1.5);
  const std::vector<float> bias = testing::RandomNormal(rng, 64, 0.2);
  const Routed r = Route(ctx, config, logits, bias);
  for (int64_t t = 0; t < tokens; ++t) {
    std::set<int> used;
    for (int k = 0; k < 6; ++k) used.insert(r.ids[t * 6 + k] / gs);
    ASSERT_LE(used.size(), 3u) << "token " << t;
    std::vector<double> score(8);
    for (int g = 0; g < 8; ++g) {
      std::vector<float> v;
      for (int i = 0; i < gs; ++i) {
        const int e = g * gs + i;
        v.push_back(static_cast<float>(Sigmoid(logits[t * 64 + e])) + bias[e]);
      }
      std::sort(v.rbegin(), v.rend());
      score[g] = static_cast<double>(v[0]) + v[1];
    }
    double worst_used = INFINITY, best_unused = -INFINITY;
    std::vector<int> order(8);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
    const std::set<int> kept(order.begin(), order.begin() + 3);
    for (int g : used) worst_used = std::min(worst_used, score[g]);
    for (int g = 0; g < 8; ++g) {
      if (!kept.count(g)) best_unused = std::max(best_unused, score[g]);
    }
    ASSERT_GE(worst_used, best_unused - 1e-6) << "token " << t;
  }
}

TEST(Router, DroppedGroupsAreMaskedWithMinusInfinityNotZero) {
  // With every biased score negative, masking with 0.0 (the HF variant) would pick experts from
  // dropped groups; -inf keeps all choices inside the single kept group.
  const CpuContext ctx;
  std::mt19937_64 rng(testing::TestSeed(41));
  const RouterConfig config{16, 4, 1, 3, 1.0f};
  const int64_t tokens = 100;
  const std::vector<float> logits = testing::RandomNormal(rng, tokens * 16);
  const std::vector<float> bias(16, -2.0f);
  const Routed r = Route(ctx, config, logits, bias);
  for (int64_t t = 0; t < tokens; ++t) {
    int best_group = -1;
    double best_score = -INFINITY;
    for (int g = 0; g < 4; ++g) {
      std::vector<double> v;
      for (int e = 4 * g; e < 4 * g + 4; ++e) v.push_back(Sigmoid(logits[t * 16 + e]) - 2.0);
      std::sort(v.rbegin(), v.rend());
      if (v[0] + v[1] > best_score) {
        best_score = v[0] + v[1];
        best_group = g;
      }
    }
    for (int k = 0; k < 3; ++k) ASSERT_EQ(r.ids[t * 3 + k] / 4, best_group) << "token " << t;
  }
}

TEST(Router, TiesGoToTheLowerIndex) {
  const CpuContext ctx;
  // All scores equal: groups 0 and 1 are kept, experts 0, 1, 2 chosen in that order.
  const RouterConfig config{16, 4, 2, 3, 1.0f};
  const Routed flat = Route(ctx, config, std::vector<float>(16, 0.0f), std::vector<float>(16, 0));
  EXPECT_EQ(flat.ids, (std::vector<int32_t>{0, 1, 2}));
  // Groups 1 and 3 tie above the rest: group 1 wins the single kept slot; inside it, experts 5
  // and 6 tie above 4 and 7.
  const RouterConfig one_group{16, 4, 1, 3, 1.0f};
  std::vector<float> bias(16, 0.0f);
  for (int e : {5, 6, 13, 14}) bias[e] = 0.5f;
  const Routed r = Route(ctx, one_group, std::vector<float>(16, 0.0f), bias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{5, 6, 4}));
}

TEST(Router, LoadCountsAccumulateAcrossCalls) {
  const CpuContext ctx;
  std::mt19937_64 rng(testing::TestSeed(43));
  const RouterConfig config{8, 2, 1, 2, 1.0f};
  const std::vector<float> logits = testing::RandomNormal(rng, 50 * 8);
  const std::vector<float> bias(8, 0.0f);
  const Routed once = Route(ctx, config, logits, bias);
  std::vector<int64_t> load = once.load;
  std::vector<int32_t> ids(100);
  std::vector<float> w(100);
  RouterForward(ctx, config, logits.data(), bias.data(), 50, ids.data(), w.data(), load.data());
  for (int e = 0; e < 8; ++e) EXPECT_EQ(load[e], 2 * once.load[e]) << "expert " << e;
  EXPECT_EQ(std::accumulate(load.begin(), load.end(), int64_t{0}), 200);
}

TEST(Router, ResultsAreBitIdenticalForAnyThreadCount) {
  std::mt19937_64 rng(testing::TestSeed(47));
  const RouterConfig config{64, 8, 4, 8, 2.5f};
  const int64_t tokens = 777;
  std::vector<float> logits = testing::RandomNormal(rng, tokens * 64);
  for (size_t i = 0; i < logits.size(); i += 3) logits[i] = 0.25f;  // many exact ties
  const std::vector<float> bias = testing::RandomNormal(rng, 64, 0.01);
  const std::vector<float> dw = testing::RandomNormal(rng, tokens * 8);
  auto run = [&](ThreadPool* pool, Routed* r, std::vector<float>* dlogits) {
    const CpuContext ctx{pool};
    *r = Route(ctx, config, logits, bias);
    dlogits->assign(logits.size(), 0.0f);
    RouterBackward(ctx, config, logits.data(), r->ids.data(), dw.data(), tokens, dlogits->data());
  };
  Routed one;
  std::vector<float> d_one;
  run(nullptr, &one, &d_one);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    Routed many;
    std::vector<float> d_many;
    run(&pool, &many, &d_many);
    EXPECT_EQ(one.ids, many.ids) << threads << " threads";
    EXPECT_EQ(one.load, many.load) << threads << " threads";
    EXPECT_TRUE(SameBits("weights", one.weights, many.weights)) << threads << " threads";
    EXPECT_TRUE(SameBits("dlogits", d_one, d_many)) << threads << " threads";
  }
}

TEST(RouterDeathTest, AbortsWhenTopKExceedsTheExpertsOfTheKeptGroups) {
  const std::vector<float> logits(16), bias(16);
  std::vector<int32_t> ids(5);
  std::vector<float> w(5);
  const RouterConfig config{16, 4, 1, 5, 1.0f};
  EXPECT_DEATH(RouterForward(CpuContext{}, config, logits.data(), bias.data(), 1, ids.data(),
                             w.data(), nullptr),
               "top_k=5 must be in \\[1, topk_groups \\* n_experts / n_groups = 4\\]");
}

}  // namespace
}  // namespace dsv3::kernels
