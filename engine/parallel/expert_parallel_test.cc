// Expert parallelism against one process (expert_parallel.h): P ranks (threads with the in-process
// and Gloo backends), each routing its own tokens through an MoE layer whose routed experts are
// split over the group, give the same layer outputs, input gradients and parameter gradients as
// one MoE layer run on all the ranks' tokens together; a rank that never joins the exchange makes
// the others fail with an error instead of hanging.
#include "engine/parallel/expert_parallel.h"

#include <cmath>
#include <random>
#include <thread>

#include "common/status_matchers.h"
#include "engine/model/ffn.h"
#include "engine/model/model.h"
#include "engine/model/parameters.h"
#include "engine/parallel/in_process_store.h"
#include "engine/parallel/testing_groups.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using model::FloatBuffer;

ModelConfig MoeConfig() {
  ModelConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 1;  // layer 1 is the MoE layer under test
  c.intermediate_size = 32;
  c.moe_intermediate_size = 24;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 3;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.num_attention_heads = 2;
  c.kv_lora_rank = 16;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 8;
  return c;
}
constexpr char kPrefix[] = "model.layers.1.mlp.";

std::vector<float> Normal(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

double RelErr(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

struct RankResult {
  absl::Status status;
  double balance = 0;
  std::vector<float> y, du;
  std::unique_ptr<model::ParameterSet> params;
};

using testing::MakeGroup;

// One MoE layer's forward and backward on `rows` x `seq` tokens, the routed experts run by
// `executor` (null: all experts locally), means over `normalizer_rows`.
RankResult RunLayer(const ModelConfig& c, Communicator* comm, const std::vector<float>& u,
                    const std::vector<float>& dy, int64_t rows, int64_t seq,
                    int64_t normalizer_rows, model::GemmMode mode = model::GemmMode::kFp32) {
  RankResult r;
  r.params = std::make_unique<model::ParameterSet>(model::ParameterLayout::Build(c));
  model::InitParameters(5, 0.1, r.params.get());
  model::Moe moe(c, r.params.get(), kPrefix, mode);
  if (comm != nullptr) {
    absl::StatusOr<std::shared_ptr<ExpertParallelExecutor>> ep =
        ExpertParallelExecutor::Create(comm, c, r.params.get(), kPrefix, mode);
    if (!ep.ok()) {
      r.status = ep.status();
      return r;
    }
    moe.set_executor(*ep);
  }
  const kernels::CpuContext ctx;
  const model::SeqShape shape{rows, seq};
  const int64_t n = rows * seq * c.hidden_size;
  model::MoeRunOptions o;
  o.normalizer_rows = normalizer_rows;
  o.alpha = 0.01;
  model::Moe::Cache cache;
  r.y.resize(n);
  absl::StatusOr<double> balance = moe.Forward(ctx, shape, u.data(), r.y.data(), &cache, o, false);
  if (!balance.ok()) {
    r.status = balance.status();
    return r;
  }
  r.balance = *balance;
  r.du.resize(n);
  r.status = moe.Backward(ctx, shape, u.data(), &cache, dy.data(), o, r.du.data());
  return r;
}

class ExpertParallelTest
    : public ::testing::TestWithParam<std::tuple<Backend, int, model::GemmMode>> {};

// FP8: the dispatch carries E4M3 rows with power-of-two scales, which the experts quantise the
// same way in one process, so FP8 is held to the same tolerances as FP32.
TEST_P(ExpertParallelTest, MatchesOneProcessOnAllTheTokens) {
  const auto [backend, ranks, mode] = GetParam();
  ModelConfig c = MoeConfig();
  if (mode == model::GemmMode::kFp8) c.hidden_size = 160;  // a full and a partial 1x128 tile
  const int64_t rows = 2, seq = 7, d = c.hidden_size;
  const int64_t per_rank = rows * seq * d;
  // Rank r's tokens are block r of the whole batch.
  const std::vector<float> u = Normal(ranks * per_rank, 1);
  const std::vector<float> dy = Normal(ranks * per_rank, 2);
  const RankResult whole = RunLayer(c, nullptr, u, dy, ranks * rows, seq, ranks * rows, mode);
  ASSERT_OK(whole.status);

  std::vector<std::unique_ptr<Communicator>> comms = MakeGroup(backend, ranks, absl::Seconds(30));
  std::vector<RankResult> parts(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      const std::vector<float> ur(u.begin() + r * per_rank, u.begin() + (r + 1) * per_rank);
      const std::vector<float> dyr(dy.begin() + r * per_rank, dy.begin() + (r + 1) * per_rank);
      parts[r] = RunLayer(c, comms[r].get(), ur, dyr, rows, seq, ranks * rows, mode);
    });
  }
  for (auto& t : threads) t.join();

  double balance = 0;
  for (int r = 0; r < ranks; ++r) {
    ASSERT_OK(parts[r].status) << "rank " << r;
    balance += parts[r].balance;
    EXPECT_LT(RelErr(parts[r].y.data(), whole.y.data() + r * per_rank, per_rank), 1e-6)
        << "rank " << r << " outputs";
    EXPECT_LT(RelErr(parts[r].du.data(), whole.du.data() + r * per_rank, per_rank), 1e-6)
        << "rank " << r << " input gradients";
  }
  EXPECT_NEAR(balance, whole.balance, 1e-9 * std::abs(whole.balance));

  // Routed experts: each expert's gradient lives on its owner. Router and shared experts: every
  // rank has a partial gradient from its own tokens; they add up to the whole batch's.
  const model::ParameterLayout& layout = whole.params->layout;
  for (const model::ParamInfo& p : layout.params()) {
    if (p.name.rfind(kPrefix, 0) != 0 || !p.trainable) continue;
    std::vector<float> got(static_cast<size_t>(p.size), 0.0f);
    const size_t at = p.name.find("experts.");
    if (at != std::string::npos && p.name.find("shared_experts") == std::string::npos) {
      const int64_t expert = std::stoll(p.name.substr(at + 8));
      const int owner = static_cast<int>(expert / (c.n_routed_experts / ranks));
      std::copy_n(parts[owner].params->grads.begin() + p.offset, p.size, got.begin());
      for (int r = 0; r < ranks; ++r) {
        if (r == owner) continue;
        for (int64_t i = 0; i < p.size; ++i) {
          ASSERT_EQ(parts[r].params->grads[p.offset + i], 0.0f) << p.name << " on rank " << r;
        }
      }
    } else {
      for (int r = 0; r < ranks; ++r) {
        for (int64_t i = 0; i < p.size; ++i) got[i] += parts[r].params->grads[p.offset + i];
      }
    }
    // FP8 weight gradients tile the tokens 128 x 1, so the shared experts' partial gradients
    // from each rank's own tokens differ from one tiling of all of them (as with any data
    // split); the routed experts see the same rows in the same order either way.
    const bool routed = at != std::string::npos && p.name.find("shared_experts") == std::string::npos;
    const double tolerance = mode == model::GemmMode::kFp8 && !routed ? 0.1 : 1e-5;
    EXPECT_LT(RelErr(got.data(), whole.params->grads.data() + p.offset, p.size), tolerance)
        << p.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ExpertParallelTest,
                         ::testing::Combine(::testing::Values(Backend::kInProcess, Backend::kGloo),
                                            ::testing::Values(2, 4),
                                            ::testing::Values(model::GemmMode::kFp32,
                                                              model::GemmMode::kFp8)),
                         [](const auto& info) {
                           return std::string(BackendName(std::get<0>(info.param))) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "ranks" +
                                  (std::get<2>(info.param) == model::GemmMode::kFp8 ? "_fp8"
                                                                                    : "");
                         });

TEST(ExpertParallelModelTest, AWholeModelMatchesOneProcess) {
  // The full model (MoE layers and the MTP's MoE block) with every MoE layer expert-parallel over
  // two ranks, each rank on half of the rows: the loss shares add up to the one-process loss and
  // the gradients to its gradients.
  ModelConfig c = MoeConfig();
  c.num_hidden_layers = 3;
  c.num_nextn_predict_layers = 1;
  c.q_lora_rank = 12;
  const int ranks = 2;
  const int64_t rows = 2, seq = 6;
  std::mt19937_64 rng(9);
  std::vector<int32_t> tokens(static_cast<size_t>(ranks * rows * (seq + 1)));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % c.vocab_size);
  auto make = [&]() {
    absl::StatusOr<std::unique_ptr<model::Model>> m = model::Model::Create(c, {}, nullptr);
    EXPECT_OK(m);
    model::InitParameters(3, 0.1, &(*m)->parameters());
    return std::move(*m);
  };
  std::unique_ptr<model::Model> whole = make();
  ASSERT_OK_AND_ASSIGN(model::LossTerms want, whole->Run({tokens.data(), ranks * rows, seq}, {}));

  std::vector<std::unique_ptr<Communicator>> comms =
      MakeGroup(Backend::kInProcess, ranks, absl::Seconds(30));
  std::vector<std::unique_ptr<model::Model>> models(ranks);
  std::vector<absl::StatusOr<model::LossTerms>> got(ranks, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    models[r] = make();
    for (int64_t layer = 0; layer < models[r]->num_moe_layers(); ++layer) {
      const std::string prefix =
          "model.layers." + std::to_string(c.first_k_dense_replace + layer) + ".mlp.";
      ASSERT_OK_AND_ASSIGN(std::shared_ptr<ExpertParallelExecutor> ep,
                           ExpertParallelExecutor::Create(comms[r].get(), c,
                                                          &models[r]->parameters(), prefix,
                                                          model::GemmMode::kFp32));
      models[r]->SetExpertExecutor(layer, ep);
    }
  }
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      model::RunOptions o;
      o.normalizer_rows = ranks * rows;
      got[r] = models[r]->Run({tokens.data() + r * rows * (seq + 1), rows, seq}, o);
    });
  }
  for (auto& t : threads) t.join();
  double loss = 0;
  for (int r = 0; r < ranks; ++r) {
    ASSERT_OK(got[r].status());
    loss += got[r]->loss;
  }
  EXPECT_NEAR(loss, want.loss, 1e-6 * want.loss);
  const model::ParameterSet& wp = whole->parameters();
  for (const model::ParamInfo& p : wp.layout.params()) {
    std::vector<float> sum(static_cast<size_t>(p.size), 0.0f);
    for (int r = 0; r < ranks; ++r) {
      for (int64_t i = 0; i < p.size; ++i) sum[i] += models[r]->parameters().grads[p.offset + i];
    }
    EXPECT_LT(RelErr(sum.data(), wp.grads.data() + p.offset, p.size), 1e-5) << p.name;
  }
}

TEST(ExpertParallelErrors, ARankThatNeverDispatchesFailsTheOthersInTime) {
  const ModelConfig c = MoeConfig();
  std::vector<std::unique_ptr<Communicator>> comms =
      MakeGroup(Backend::kInProcess, 2, absl::Seconds(1));
  const int64_t per_rank = 2 * 5 * c.hidden_size;
  const std::vector<float> u = Normal(per_rank, 3), dy = Normal(per_rank, 4);
  // Rank 1 joined the group but never runs the layer.
  const RankResult r0 = RunLayer(c, comms[0].get(), u, dy, 2, 5, 4);
  EXPECT_FALSE(r0.status.ok());
  EXPECT_NE(r0.status.message().find("rank 1"), std::string::npos) << r0.status;
}

TEST(ExpertParallelErrors, TheGroupSizeMustDivideTheExperts) {
  EXPECT_EQ(ExpertsOfRank(8, 0, 3).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(ExpertRange r, ExpertsOfRank(8, 3, 4));
  EXPECT_EQ(r.first, 6);
  EXPECT_EQ(r.count, 2);
}

}  // namespace
}  // namespace dsv3::parallel
