// Tests of the C++ model's own contracts (model.h, parameters.h): recomputation gives the same
// bits, micro-batch shares add up to the batch, the balance loss at perfect balance, expert-load
// counting and the bias update, input and config errors, and the initialisation. The numerics
// against the PyTorch reference are tested by tests/integration/model_eval_test.py.
#include "engine/model/model.h"

#include <bit>
#include <cmath>
#include <numeric>
#include <optional>
#include <random>

#include "common/status_matchers.h"
#include "engine/model/ffn.h"
#include "engine/model/linear.h"
#include "engine/model/parameters.h"
#include "gtest/gtest.h"
#include "kernels/cpu/grouped_gemm.h"
#include "kernels/cpu/quantize.h"

namespace dsv3::model {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.vocab_size = 61;
  c.hidden_size = 40;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 1;
  c.intermediate_size = 48;
  c.moe_intermediate_size = 16;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.num_attention_heads = 2;
  c.q_lora_rank = 24;
  c.kv_lora_rank = 16;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 8;
  c.num_nextn_predict_layers = 1;
  return c;
}

std::vector<int32_t> RandomTokens(int64_t rows, int64_t seq, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(rows * (seq + 1)));
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

std::unique_ptr<Model> MakeModel(const ModelConfig& c, Precision p, bool recompute,
                                 uint64_t seed = 7) {
  ModelOptions o;
  o.precision = p;
  o.recompute = recompute;
  absl::StatusOr<std::unique_ptr<Model>> m = Model::Create(c, o, nullptr);
  EXPECT_TRUE(m.ok()) << m.status();
  InitParameters(seed, 0.05, &(*m)->parameters());
  return std::move(*m);
}

double RelativeDifference(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

TEST(ModelTest, RecomputationGivesTheSameBits) {
  for (Precision p : {Precision::kFp32, Precision::kFp8}) {
    SCOPED_TRACE(PrecisionName(p));
    const ModelConfig c = SmallConfig();
    std::unique_ptr<Model> plain = MakeModel(c, p, false);
    std::unique_ptr<Model> recompute = MakeModel(c, p, true);
    const std::vector<int32_t> tokens = RandomTokens(3, 9, c.vocab_size, 1);
    const TokenRows batch{tokens.data(), 3, 9};
    ASSERT_OK_AND_ASSIGN(LossTerms a, plain->Run(batch, {}));
    ASSERT_OK_AND_ASSIGN(LossTerms b, recompute->Run(batch, {}));
    EXPECT_EQ(a.loss, b.loss);
    EXPECT_EQ(plain->parameters().grads, recompute->parameters().grads);
  }
}

TEST(ModelTest, MicroBatchSharesAddUpToTheBatch) {
  const ModelConfig c = SmallConfig();
  std::unique_ptr<Model> whole = MakeModel(c, Precision::kFp32, false);
  std::unique_ptr<Model> split = MakeModel(c, Precision::kFp32, false);
  const int64_t rows = 4, seq = 7;
  const std::vector<int32_t> tokens = RandomTokens(rows, seq, c.vocab_size, 2);
  ASSERT_OK_AND_ASSIGN(LossTerms all, whole->Run({tokens.data(), rows, seq}, {}));
  LossTerms sum;
  for (int64_t half = 0; half < 2; ++half) {
    RunOptions o;
    o.normalizer_rows = rows;
    ASSERT_OK_AND_ASSIGN(LossTerms part,
                         split->Run({tokens.data() + half * 2 * (seq + 1), 2, seq}, o));
    sum.loss += part.loss;
    sum.main_loss += part.main_loss;
    sum.mtp_loss += part.mtp_loss;
    sum.balance_loss += part.balance_loss;
  }
  EXPECT_NEAR(sum.loss, all.loss, 1e-6 * all.loss);
  EXPECT_NEAR(sum.main_loss, all.main_loss, 1e-6 * all.main_loss);
  EXPECT_NEAR(sum.mtp_loss, all.mtp_loss, 1e-6 * all.mtp_loss);
  EXPECT_NEAR(sum.balance_loss, all.balance_loss, 1e-9 * all.balance_loss);
  EXPECT_LT(RelativeDifference(split->parameters().grads, whole->parameters().grads), 1e-5);
  EXPECT_EQ(split->expert_loads(), whole->expert_loads());
}

TEST(ModelTest, BalanceLossIsAlphaPerMoeLayerWhenScoresAreEqual) {
  // With every router weight zero all sigmoid scores are 0.5, so P_i = 1/E and
  // sum_i f_i P_i = 1 whatever f is: each MoE layer (the MTP one too) contributes exactly alpha.
  const ModelConfig c = SmallConfig();
  std::unique_ptr<Model> m = MakeModel(c, Precision::kFp32, false);
  ParameterSet& p = m->parameters();
  for (const ParamInfo& info : p.layout.params()) {
    if (info.name.ends_with("mlp.gate.weight")) {
      std::fill(p.values.begin() + info.offset, p.values.begin() + info.offset + info.size, 0.f);
    }
  }
  const std::vector<int32_t> tokens = RandomTokens(2, 6, c.vocab_size, 3);
  ASSERT_OK_AND_ASSIGN(LossTerms l, m->Run({tokens.data(), 2, 6}, {.backward = false}));
  ASSERT_EQ(m->num_moe_layers(), 2);
  EXPECT_NEAR(l.balance_loss, 2 * 1e-4, 1e-15);
}

TEST(ModelTest, LoadsCountEveryAssignmentAndDriveTheBiasUpdate) {
  const ModelConfig c = SmallConfig();
  std::unique_ptr<Model> m = MakeModel(c, Precision::kFp32, false);
  const int64_t rows = 2, seq = 8;
  const std::vector<int32_t> tokens = RandomTokens(rows, seq, c.vocab_size, 4);
  ASSERT_OK(m->Run({tokens.data(), rows, seq}, {.backward = false, .count_loads = false}).status());
  for (int64_t x : m->expert_loads()) EXPECT_EQ(x, 0);
  ASSERT_OK(m->Run({tokens.data(), rows, seq}, {}).status());
  const std::vector<int64_t> loads = m->expert_loads();
  const int64_t e = c.n_routed_experts;
  const int64_t tokens_per_layer[2] = {rows * seq, rows * (seq - 1)};  // main, MTP
  for (int64_t layer = 0; layer < 2; ++layer) {
    int64_t sum = 0;
    for (int64_t j = 0; j < e; ++j) sum += loads[layer * e + j];
    EXPECT_EQ(sum, tokens_per_layer[layer] * c.num_experts_per_tok);
  }
  const float gamma = 0.25f;
  const ParameterSet& p = m->parameters();
  const std::vector<float> before = p.values;
  m->ApplyBiasUpdate(gamma);
  const char* names[2] = {"model.layers.1.mlp.gate.e_score_correction_bias",
                          "model.layers.2.mlp.gate.e_score_correction_bias"};
  for (int64_t layer = 0; layer < 2; ++layer) {
    const int64_t off = p.layout.OffsetOf(names[layer]);
    int64_t sum = 0;
    for (int64_t j = 0; j < e; ++j) sum += loads[layer * e + j];
    for (int64_t j = 0; j < e; ++j) {
      const int64_t cmp = loads[layer * e + j] * e - sum;  // > 0: overloaded
      const float want = before[off + j] + (cmp > 0 ? -gamma : cmp < 0 ? gamma : 0.0f);
      EXPECT_EQ(p.values[off + j], want) << names[layer] << " expert " << j;
    }
  }
  for (int64_t x : m->expert_loads()) EXPECT_EQ(x, 0);
  // Nothing else changed.
  for (const ParamInfo& info : p.layout.params()) {
    if (info.trainable) {
      for (int64_t i = 0; i < info.size; ++i) {
        ASSERT_EQ(p.values[info.offset + i], before[info.offset + i]) << info.name;
      }
    }
  }
}

TEST(ModelTest, WritesLogitsWhoseCrossEntropyIsTheLoss) {
  const ModelConfig c = SmallConfig();
  std::unique_ptr<Model> m = MakeModel(c, Precision::kFp32, false);
  const int64_t rows = 2, seq = 5, v = c.vocab_size;
  const std::vector<int32_t> tokens = RandomTokens(rows, seq, v, 6);
  std::vector<float> logits(rows * seq * v), mtp_logits(rows * (seq - 1) * v);
  RunOptions o;
  o.backward = false;
  o.logits = logits.data();
  o.mtp_logits = mtp_logits.data();
  ASSERT_OK_AND_ASSIGN(LossTerms l, m->Run({tokens.data(), rows, seq}, o));
  // Mean cross-entropy of `lg` [count, v] against targets t_{i+shift} of each row.
  auto mean_ce = [&](const std::vector<float>& lg, int64_t per_row, int64_t shift) {
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < per_row; ++i) {
        const float* x = lg.data() + (r * per_row + i) * v;
        double z = 0;
        for (int64_t j = 0; j < v; ++j) z += std::exp(double(x[j]));
        sum += std::log(z) - x[tokens[r * (seq + 1) + i + shift]];
      }
    }
    return sum / (rows * per_row);
  };
  EXPECT_NEAR(mean_ce(logits, seq, 1), l.main_loss, 1e-5);
  EXPECT_NEAR(mean_ce(mtp_logits, seq - 1, 2), l.mtp_loss, 1e-5);
}

TEST(ModelTest, RejectsBadTokensWithTheirPosition) {
  const ModelConfig c = SmallConfig();
  std::unique_ptr<Model> m = MakeModel(c, Precision::kFp32, false);
  std::vector<int32_t> tokens = RandomTokens(2, 4, c.vocab_size, 5);
  tokens[5 + 3] = static_cast<int32_t>(c.vocab_size);
  absl::StatusOr<LossTerms> r = m->Run({tokens.data(), 2, 4}, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("row 1, column 3"), std::string::npos) << r.status();
  tokens[8] = 0;
  r = m->Run({tokens.data(), 2, 1}, {});  // MTP needs T >= 2
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = m->Run({tokens.data(), 2, 4}, {.normalizer_rows = 1});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  for (float g : m->parameters().grads) ASSERT_EQ(g, 0.0f);
}

TEST(ModelTest, RejectsConfigsItCannotRun) {
  ModelConfig c = SmallConfig();
  c.qk_rope_head_dim = 5;
  EXPECT_EQ(Model::Create(c, {}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.num_nextn_predict_layers = 2;
  EXPECT_EQ(Model::Create(c, {}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.topk_group = 5;
  EXPECT_EQ(Model::Create(c, {}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.num_experts_per_tok = 5;  // 2 groups of 2 experts reach only 4
  EXPECT_EQ(Model::Create(c, {}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

// Runs the model as `stages` pipeline stages on one batch (forwards in order, backwards in reverse,
// each backward optionally deferring its weight-gradient GEMMs to the end) and returns the summed
// loss terms.
LossTerms RunAsStages(Model& model, const TokenRows& batch, int stages, bool defer) {
  const ModelConfig& c = model.config();
  const size_t act = static_cast<size_t>(batch.rows * batch.seq_len * c.hidden_size);
  std::vector<std::vector<float>> h(static_cast<size_t>(stages) + 1, std::vector<float>(act));
  std::vector<std::unique_ptr<StageActivations>> saved(static_cast<size_t>(stages));
  std::vector<StageSpan> spans;
  LossTerms total;
  for (int s = 0; s < stages; ++s) {
    absl::StatusOr<StageSpan> span = PipelineStage(c, stages, s);
    EXPECT_TRUE(span.ok()) << span.status();
    spans.push_back(*span);
    absl::StatusOr<LossTerms> loss =
        model.ForwardStage(*span, batch, h[s].data(), h[s + 1].data(), {}, &saved[s]);
    EXPECT_TRUE(loss.ok()) << loss.status();
    total.loss += loss->loss;
    total.main_loss += loss->main_loss;
    total.mtp_loss += loss->mtp_loss;
    total.balance_loss += loss->balance_loss;
  }
  DeferredWeightGrads deferred;
  for (int s = stages; s-- > 0;) {
    std::optional<ScopedWeightGradDeferral> scope;
    if (defer) scope.emplace(&deferred);
    EXPECT_OK(model.BackwardStage(saved[s].get(), h[s + 1].data(), h[s].data()));
  }
  if (defer) {
    EXPECT_FALSE(deferred.empty());
    deferred.Run({});
  }
  return total;
}

TEST(ModelTest, StagesChainedGiveTheBitsOfTheWholeModel) {
  ModelConfig c = SmallConfig();
  c.num_hidden_layers = 3;
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp8}) {
    std::unique_ptr<Model> whole = MakeModel(c, p, false);
    const std::vector<int32_t> tokens = RandomTokens(2, 7, c.vocab_size, 3);
    const TokenRows batch{tokens.data(), 2, 7};
    ASSERT_OK_AND_ASSIGN(LossTerms want, whole->Run(batch, {}));
    // 4 and 5 stages have stages without layers (they pass their input through).
    for (int stages : {1, 2, 3, 4, 5}) {
      for (bool defer : {false, true}) {
        SCOPED_TRACE(::testing::Message() << PrecisionName(p) << " stages " << stages
                                        << (defer ? " deferred W" : ""));
        std::unique_ptr<Model> staged = MakeModel(c, p, false);
        const LossTerms got = RunAsStages(*staged, batch, stages, defer);
        EXPECT_NEAR(got.loss, want.loss, 1e-12 * std::abs(want.loss));
        EXPECT_EQ(got.main_loss, want.main_loss);
        EXPECT_EQ(got.mtp_loss, want.mtp_loss);
        EXPECT_EQ(staged->parameters().grads, whole->parameters().grads);
        EXPECT_EQ(staged->expert_loads(), whole->expert_loads());
      }
    }
  }
}

TEST(ModelTest, StageMisuseIsAnError) {
  const ModelConfig c = SmallConfig();
  std::unique_ptr<Model> model = MakeModel(c, Precision::kFp32, false);
  EXPECT_FALSE(PipelineStage(c, 2, 2).ok());
  EXPECT_FALSE(PipelineStage(c, 0, 0).ok());
  const std::vector<int32_t> tokens = RandomTokens(1, 4, c.vocab_size, 3);
  const TokenRows batch{tokens.data(), 1, 4};
  ASSERT_OK_AND_ASSIGN(StageSpan second, PipelineStage(c, 2, 1));
  std::unique_ptr<StageActivations> saved;
  // A stage after the first needs its input.
  EXPECT_FALSE(model->ForwardStage(second, batch, nullptr, nullptr, {}, &saved).ok());
  std::vector<float> input(4 * c.hidden_size, 0.1f), d_input(input.size());
  ASSERT_OK(model->ForwardStage(second, batch, input.data(), nullptr, {}, &saved).status());
  ASSERT_OK(model->BackwardStage(saved.get(), nullptr, d_input.data()));
  // The activations are released by the backward: a second one is refused.
  EXPECT_EQ(model->BackwardStage(saved.get(), nullptr, d_input.data()).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(Fp8DispatchTest, RoundingThroughFp8WithPowerOfTwoScalesTwiceChangesNothing) {
  // Rows of every magnitude (tiny tiles under the amax floor, subnormal codes, a partial last
  // tile, zeros, tiles whose largest code rounds down to 224): the second rounding is exact.
  const kernels::CpuContext ctx;
  const int64_t rows = 64, cols = 300;
  std::mt19937_64 rng(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = std::ldexp(1.0f, static_cast<int>(r % 40) - 30);
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] = normal(rng) * scale;
  }
  for (int64_t c = 0; c < cols; ++c) x[3 * cols + c] = 0.0f;
  // Largest magnitude just above 224 x 2^k: its code rounds down to 224 (the scale halves).
  for (int64_t c = 0; c < 128; ++c) x[5 * cols + c] = c == 0 ? 229.0f : 1.0f;
  std::vector<float> once = x;
  RoundThroughE4M3(ctx, kernels::ScaleFormat::kUe8m0, once.data(), rows, cols);
  std::vector<float> twice = once;
  RoundThroughE4M3(ctx, kernels::ScaleFormat::kUe8m0, twice.data(), rows, cols);
  int changed = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(twice[i]), std::bit_cast<uint32_t>(once[i])) << i;
    changed += once[i] != x[i];
  }
  EXPECT_GT(changed, static_cast<int>(x.size()) / 2);  // the first rounding did round
  // The scale format matters: amax / 448 scales round many values differently.
  std::vector<float> f32 = x;
  RoundThroughE4M3(ctx, kernels::ScaleFormat::kFp32, f32.data(), rows, cols);
  int differ = 0;
  for (size_t i = 0; i < x.size(); ++i) differ += f32[i] != once[i];
  EXPECT_GT(differ, static_cast<int>(x.size()) / 10);
}

TEST(Fp8DispatchTest, RoutedExpertsQuantiseTheirRowsWithPowerOfTwoScales) {
  // The FP8 experts' output equals the grouped GEMMs run on rows quantised with UE8M0 scales, and
  // rows that already came through that rounding (an expert-parallel dispatch) give the same bits.
  ModelConfig c = SmallConfig();
  c.hidden_size = 160;  // one full and one partial 1x128 tile per row
  c.moe_intermediate_size = 48;
  ParameterSet params(ParameterLayout::Build(c));
  InitParameters(2, 0.05, &params);
  const std::string prefix = "model.layers.1.mlp.";
  LocalExperts experts(c, &params, prefix, GemmMode::kFp8, 0, c.n_routed_experts);
  const kernels::CpuContext ctx;
  const int64_t d = c.hidden_size, inter = c.moe_intermediate_size, e = c.n_routed_experts;
  std::vector<int64_t> counts(static_cast<size_t>(e));
  for (int64_t j = 0; j < e; ++j) counts[j] = 3 + j;
  const int64_t rows = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  std::mt19937_64 rng(8);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  FloatBuffer x = Floats(rows * d);
  for (float& v : x) v = normal(rng) * 3.0f;
  FloatBuffer rounded = x;
  RoundThroughE4M3(ctx, kernels::ScaleFormat::kUe8m0, rounded.data(), rows, d);

  auto run = [&](const FloatBuffer& in) {
    std::vector<float> y(static_cast<size_t>(rows * d));
    LocalExperts::Cache cache;
    experts.Forward(ctx, in, counts.data(), rows, y.data(), &cache);
    return y;
  };
  const std::vector<float> y = run(x);
  EXPECT_EQ(run(rounded), y);
  // By hand: gate|up on the UE8M0 codes of x.
  const float* w_gu = params.value(prefix + "experts.0.gate_proj.weight");
  std::vector<uint8_t> xq(static_cast<size_t>(rows * d));
  std::vector<float> xs(static_cast<size_t>(rows * kernels::NumTiles(d)));
  kernels::Quantize1x128(ctx, {.scale_format = kernels::ScaleFormat::kUe8m0}, x.data(), rows, d,
                         xq.data(), xs.data());
  std::vector<uint8_t> wq(static_cast<size_t>(e * 2 * inter * d));
  std::vector<float> ws(static_cast<size_t>(e * kernels::NumTiles(2 * inter) * kernels::NumTiles(d)));
  for (int64_t j = 0; j < e; ++j) {
    kernels::Quantize128x128(ctx, {}, w_gu + j * 2 * inter * d, 2 * inter, d,
                             wq.data() + j * 2 * inter * d,
                             ws.data() + j * kernels::NumTiles(2 * inter) * kernels::NumTiles(d));
  }
  std::vector<float> gu(static_cast<size_t>(rows * 2 * inter));
  kernels::GroupedGemmFpropFp8(ctx, {.accumulate = false}, xq.data(), xs.data(), wq.data(),
                               ws.data(), counts.data(), e, 2 * inter, d, gu.data());
  LocalExperts::Cache cache;
  std::vector<float> unused(static_cast<size_t>(rows * d));
  experts.Forward(ctx, x, counts.data(), rows, unused.data(), &cache);
  ASSERT_EQ(cache.gu.size(), gu.size());
  EXPECT_TRUE(std::equal(gu.begin(), gu.end(), cache.gu.begin()));
  // With FP32 scales the codes differ (so the check above can fail).
  kernels::Quantize1x128(ctx, {}, x.data(), rows, d, xq.data(), xs.data());
  std::vector<float> gu32(gu.size());
  kernels::GroupedGemmFpropFp8(ctx, {.accumulate = false}, xq.data(), xs.data(), wq.data(),
                               ws.data(), counts.data(), e, 2 * inter, d, gu32.data());
  EXPECT_NE(gu32, gu);

  // Backward: output gradients that came through the rounding give the same bits.
  std::vector<float> dy(static_cast<size_t>(rows * d));
  for (float& v : dy) v = normal(rng) * 1e-3f;
  std::vector<float> dy8 = dy;
  RoundThroughE4M3(ctx, kernels::ScaleFormat::kUe8m0, dy8.data(), rows, d);
  auto backward = [&](const std::vector<float>& g) {
    std::fill(params.grads.begin(), params.grads.end(), 0.0f);
    LocalExperts::Cache cb;
    std::vector<float> out(static_cast<size_t>(rows * d));
    experts.Forward(ctx, x, counts.data(), rows, out.data(), &cb);
    std::vector<float> dx(static_cast<size_t>(rows * d));
    experts.Backward(ctx, g.data(), counts.data(), rows, &cb, dx.data());
    return std::make_pair(dx, std::vector<float>(params.grads.begin(), params.grads.end()));
  };
  EXPECT_EQ(backward(dy8), backward(dy));
}

TEST(ParametersTest, LayoutIsContiguousAndFusesGateUp) {
  const ModelConfig c = SmallConfig();
  const ParameterLayout layout = ParameterLayout::Build(c);
  std::vector<int> covered(static_cast<size_t>(layout.total_size()), 0);
  for (const ParamInfo& p : layout.params()) {
    for (int64_t i = 0; i < p.size; ++i) ++covered[p.offset + i];
  }
  for (int x : covered) ASSERT_EQ(x, 1);  // every element belongs to exactly one tensor
  const int64_t gate = layout.OffsetOf("model.layers.1.mlp.experts.3.gate_proj.weight");
  EXPECT_EQ(layout.OffsetOf("model.layers.1.mlp.experts.3.up_proj.weight"),
            gate + c.moe_intermediate_size * c.hidden_size);
  EXPECT_EQ(layout.OffsetOf("model.layers.1.mlp.experts.4.gate_proj.weight"),
            gate + 2 * c.moe_intermediate_size * c.hidden_size);
  EXPECT_EQ(layout.OffsetOf("model.layers.0.mlp.up_proj.weight"),
            layout.OffsetOf("model.layers.0.mlp.gate_proj.weight") +
                c.intermediate_size * c.hidden_size);
  const ParamInfo* bias = layout.Find("model.layers.2.mlp.gate.e_score_correction_bias");
  ASSERT_NE(bias, nullptr);
  EXPECT_FALSE(bias->trainable);
  EXPECT_FALSE(bias->weight_decay);
  EXPECT_FALSE(layout.Find("model.layers.2.enorm.weight")->weight_decay);
  EXPECT_TRUE(layout.Find("lm_head.weight")->weight_decay);
  EXPECT_EQ(layout.Find("nope"), nullptr);
}

TEST(ParametersTest, InitialisationFollowsTheSpecAndIsDeterministic) {
  const ModelConfig c = SmallConfig();
  ParameterSet a(ParameterLayout::Build(c)), b(ParameterLayout::Build(c));
  InitParameters(11, 0.006, &a);
  InitParameters(11, 0.006, &b);
  EXPECT_EQ(a.values, b.values);
  double sum_sq = 0;
  int64_t count = 0;
  for (const ParamInfo& p : a.layout.params()) {
    for (int64_t i = 0; i < p.size; ++i) {
      const float v = a.values[p.offset + i];
      if (p.is_norm) {
        ASSERT_EQ(v, 1.0f) << p.name;
      } else if (!p.trainable) {
        ASSERT_EQ(v, 0.0f) << p.name;
      } else {
        sum_sq += double(v) * v;
        ++count;
      }
    }
  }
  EXPECT_NEAR(std::sqrt(sum_sq / count), 0.006, 0.0002);
  InitParameters(12, 0.006, &b);
  EXPECT_NE(a.values, b.values);
}

}  // namespace
}  // namespace dsv3::model
