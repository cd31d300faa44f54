// Tests of the parameter counts and FLOPs per token against the published DeepSeek-V3 / V2-Lite
// figures (spec §8.5, §8.6, ISCA Table 2) and against closed forms written out by hand for a tiny
// config. Expected values are never taken from the code under test.
#include "engine/accounting/flops.h"

#include <gtest/gtest.h>

#include "common/model_config.h"

namespace dsv3::accounting {
namespace {

ModelConfig DeepSeekV3() { return DeepSeekV3Config(); }

// DeepSeek-V2-Lite (the official 16B config, spec §8.1): no query compression, 15.7B parameters.
ModelConfig DeepSeekV2Lite() {
  ModelConfig c;
  c.vocab_size = 102400;
  c.hidden_size = 2048;
  c.num_hidden_layers = 27;
  c.first_k_dense_replace = 1;
  c.intermediate_size = 10944;
  c.moe_intermediate_size = 1408;
  c.n_routed_experts = 64;
  c.n_shared_experts = 2;
  c.num_experts_per_tok = 6;
  c.num_attention_heads = 16;
  c.q_lora_rank = 0;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  return c;
}

// The V3-faithful toy config of spec §8.7, with vocab 1024.
ModelConfig Tiny() {
  ModelConfig c;
  c.vocab_size = 1024;
  c.hidden_size = 256;
  c.num_hidden_layers = 4;
  c.first_k_dense_replace = 1;
  c.intermediate_size = 512;
  c.moe_intermediate_size = 128;
  c.n_routed_experts = 16;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 4;
  c.n_group = 4;
  c.topk_group = 2;
  c.num_attention_heads = 4;
  c.q_lora_rank = 128;
  c.kv_lora_rank = 128;
  c.qk_nope_head_dim = 64;
  c.qk_rope_head_dim = 32;
  c.v_head_dim = 64;
  c.num_nextn_predict_layers = 1;
  return c;
}

// ---- Parameter counts of the 671B config (spec §8.6, oracle 1) ----

TEST(CountParameters, GivesTheSpecAttentionParametersPerLayerFor671B) {
  EXPECT_EQ(CountParameters(DeepSeekV3()).attention_per_layer, 187'107'328);
}

TEST(CountParameters, GivesTheSpecDenseFfnParametersPerLayerFor671B) {
  EXPECT_EQ(CountParameters(DeepSeekV3()).dense_ffn_per_layer, 396'361'728);
}

TEST(CountParameters, GivesTheSpecMoeParametersPerLayerFor671B) {
  EXPECT_EQ(CountParameters(DeepSeekV3()).moe_per_layer, 11'320'164'608);
}

TEST(CountParameters, GivesTheSpecEmbeddingAndHeadFor671B) {
  const ParameterCounts p = CountParameters(DeepSeekV3());
  EXPECT_EQ(p.embedding, 926'679'040);
  EXPECT_EQ(p.lm_head, 926'679'040);
}

TEST(CountParameters, Gives671Point03BTotalFor671B) {
  EXPECT_NEAR(CountParameters(DeepSeekV3()).total / 1e9, 671.03, 0.005);
}

TEST(CountParameters, Gives37Point55BActivatedFor671B) {
  EXPECT_NEAR(CountParameters(DeepSeekV3()).activated / 1e9, 37.55, 0.005);
}

TEST(CountParameters, Gives11Point61BForTheMtpModuleOf671B) {
  EXPECT_NEAR(CountParameters(DeepSeekV3()).mtp_total / 1e9, 11.61, 0.005);
}

// ---- FLOPs of the 671B config ----

TEST(TrainingFlopsPerToken, MainModelIsWithinTwoPercentOfThePublished250GflopFor671B) {
  // ISCA Table 2: ~250 GFLOP per token, forward + backward, 4K sequence, causal.
  const double gflop = TrainingFlopsPerToken(DeepSeekV3(), 4096).MainModel() / 1e9;
  EXPECT_NEAR(gflop, 250.0, 250.0 * 0.02);
}

TEST(TrainingFlopsPerToken, MatmulTermsAreSixTimesTheActivatedMatmulParametersFor671B) {
  // 6 = 2 FLOP per multiply-add x 3 passes. The activated count minus what is not a matmul weight:
  // the embedding, 61 x (2 block norms + q/kv latent norms), the final norm, 58 router biases.
  const ModelConfig c = DeepSeekV3();
  const ParameterCounts p = CountParameters(c);
  const int64_t not_matmul = p.embedding + 61 * (2 * 7168 + 1536 + 512) + 7168 + 58 * 256;
  const TrainingFlops f = TrainingFlopsPerToken(c, 4096);
  const double matmul =
      f.attention_projections + f.dense_ffn + f.moe_experts + f.router + f.lm_head;
  EXPECT_DOUBLE_EQ(matmul, 6.0 * static_cast<double>(p.activated - not_matmul));
}

TEST(TrainingFlopsPerToken, CausalAttentionCoreOf671BAtFourKMatchesTheClosedForm) {
  // 61 layers x 3 passes x 2 FLOP x 128 heads x (192 + 128) dims x 4097/2 mean keys.
  const double expected = 61.0 * 3 * 2 * 128 * (192 + 128) * (4097.0 / 2);
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(DeepSeekV3(), 4096).attention_core, expected);
}

TEST(TrainingFlopsPerToken, MtpOf671BAddsAboutFourPercent) {
  // One MoE block + eh_proj + the head again: ~1.61B matmul weights x 6 ~ 10 GFLOP/token.
  const TrainingFlops f = TrainingFlopsPerToken(DeepSeekV3(), 4096);
  EXPECT_NEAR(f.mtp / 1e9, 10.2, 0.2);
  EXPECT_DOUBLE_EQ(f.MainModelPlusMtp(), f.MainModel() + f.mtp);
}

// ---- Closed forms on the tiny config (T = 8) ----
// Multiply-adds per position: attention projections 256*128 (q_a) + 128*4*96 (q_b) + 256*160 (kv_a)
// + 128*4*128 (kv_b) + 4*64*256 (o); dense FFN 3*256*512; MoE (1 shared + 4 routed) * 3*256*128;
// router 256*16; head 256*1024; core 4 heads * (96 + 64) * mean keys.

constexpr double kTinyAttentionMacs =
    256 * 128 + 128 * 4 * 96 + 256 * 160 + 128 * 4 * 128 + 4 * 64 * 256;
constexpr double kTinyDenseMacs = 3 * 256 * 512;
constexpr double kTinyMoeMacs = 5 * 3 * 256 * 128;
constexpr double kTinyRouterMacs = 256 * 16;
constexpr double kTinyHeadMacs = 256 * 1024;

TEST(TrainingFlopsPerToken, TinyConfigAttentionProjectionsMatchTheClosedForm) {
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(Tiny(), 8).attention_projections,
                   6.0 * 4 * kTinyAttentionMacs);
}

TEST(TrainingFlopsPerToken, TinyConfigCountsOneDenseLayerAndThreeMoeLayers) {
  const TrainingFlops f = TrainingFlopsPerToken(Tiny(), 8);
  EXPECT_DOUBLE_EQ(f.dense_ffn, 6.0 * 1 * kTinyDenseMacs);
  EXPECT_DOUBLE_EQ(f.moe_experts, 6.0 * 3 * kTinyMoeMacs);
  EXPECT_DOUBLE_EQ(f.router, 6.0 * 3 * kTinyRouterMacs);
}

TEST(TrainingFlopsPerToken, TinyConfigCountsTheHeadOnceAndTheEmbeddingNever) {
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(Tiny(), 8).lm_head, 6.0 * kTinyHeadMacs);
}

TEST(TrainingFlopsPerToken, TinyConfigAttentionCoreAveragesNinePositionsOverTwo) {
  // Positions 0..7 attend 1..8 keys: 36 keys over 8 queries = 4.5 = (T+1)/2.
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(Tiny(), 8).attention_core, 6.0 * 4 * 4 * 160 * 4.5);
}

TEST(TrainingFlopsPerToken, TinyConfigMtpRunsOneMoeBlockOverSevenOfEightPositions) {
  // 7 positions, mean keys 4; eh_proj 256 x 512; the layer index 4 block is MoE.
  const double per_position = 2 * 256 * 256 + kTinyAttentionMacs + kTinyMoeMacs + kTinyRouterMacs +
                              4 * 160 * 4.0 + kTinyHeadMacs;
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(Tiny(), 8).mtp, 6.0 * per_position * 7 / 8);
}

TEST(TrainingFlopsPerToken, SinglePositionAttendsOnlyItselfAndHasNoMtpTarget) {
  const TrainingFlops f = TrainingFlopsPerToken(Tiny(), 1);
  EXPECT_DOUBLE_EQ(f.attention_core, 6.0 * 4 * 4 * 160 * 1.0);
  EXPECT_EQ(f.mtp, 0.0);
}

TEST(TrainingFlopsPerToken, NoMtpDepthMeansNoMtpTerm) {
  ModelConfig c = Tiny();
  c.num_nextn_predict_layers = 0;
  EXPECT_EQ(TrainingFlopsPerToken(c, 8).mtp, 0.0);
  EXPECT_EQ(CountParameters(c).mtp_total, 0);
}

TEST(TrainingFlopsPerToken, MtpBlockIsDenseWhenItsLayerIndexIsBelowFirstKDenseReplace) {
  ModelConfig c = Tiny();
  c.first_k_dense_replace = 5;  // layers 0..4 dense, so the MTP block (index 4) is dense too
  const double per_position =
      2 * 256 * 256 + kTinyAttentionMacs + kTinyDenseMacs + 4 * 160 * 4.0 + kTinyHeadMacs;
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(c, 8).mtp, 6.0 * per_position * 7 / 8);
}

TEST(TrainingFlopsPerToken, SecondMtpDepthRunsOverTwoFewerPositions) {
  ModelConfig c = Tiny();
  c.num_nextn_predict_layers = 2;
  const double depth1 = 2 * 256 * 256 + kTinyAttentionMacs + kTinyMoeMacs + kTinyRouterMacs +
                        4 * 160 * 4.0 + kTinyHeadMacs;  // 7 positions, mean keys 4
  const double depth2 = 2 * 256 * 256 + kTinyAttentionMacs + kTinyMoeMacs + kTinyRouterMacs +
                        4 * 160 * 3.5 + kTinyHeadMacs;  // 6 positions, mean keys 3.5
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(c, 8).mtp, 6.0 * (depth1 * 7 / 8 + depth2 * 6 / 8));
}

TEST(CountParameters, TinyConfigMatchesTheClosedForm) {
  const int64_t attention =
      256 * 128 + 128 + 128 * 4 * 96 + 256 * 160 + 128 + 128 * 4 * 128 + 4 * 64 * 256;
  const int64_t expert = 3 * 256 * 128;
  const int64_t moe = 17 * expert + 256 * 16 + 16;
  const int64_t moe_activated = 5 * expert + 256 * 16 + 16;
  const int64_t block_norms = 2 * 256;
  const int64_t outside_blocks = 1024 * 256 * 2 + 256;  // embedding, head, final norm
  const ParameterCounts p = CountParameters(Tiny());
  EXPECT_EQ(p.attention_per_layer, attention);
  EXPECT_EQ(p.moe_per_layer, moe);
  EXPECT_EQ(p.total, outside_blocks + 4 * (attention + block_norms) + 3 * 256 * 512 + 3 * moe);
  EXPECT_EQ(p.activated,
            outside_blocks + 4 * (attention + block_norms) + 3 * 256 * 512 + 3 * moe_activated);
  EXPECT_EQ(p.mtp_total, 2 * 256 * 256 + 3 * 256 + attention + block_norms + moe);
}

// ---- q_lora_rank == 0: one q_proj ----

TEST(CountParameters, ZeroQLoraRankCountsOneQProjAndNoQNorm) {
  ModelConfig c = Tiny();
  c.q_lora_rank = 0;
  const int64_t q_proj = 256 * 4 * 96;
  const int64_t rest = 256 * 160 + 128 + 128 * 4 * 128 + 4 * 64 * 256;  // kv_a, kv_norm, kv_b, o
  EXPECT_EQ(CountParameters(c).attention_per_layer, q_proj + rest);
}

TEST(TrainingFlopsPerToken, ZeroQLoraRankCountsOneQProj) {
  ModelConfig c = Tiny();
  c.q_lora_rank = 0;
  const double macs = 256 * 4 * 96 + 256 * 160 + 128 * 4 * 128 + 4 * 64 * 256;
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(c, 8).attention_projections, 6.0 * 4 * macs);
}

TEST(CountParameters, DeepSeekV2LiteWithoutQueryCompressionHas15Point7BParameters) {
  // DeepSeek-V2 report: V2-Lite has 15.7B total parameters.
  EXPECT_NEAR(CountParameters(DeepSeekV2Lite()).total / 1e9, 15.7, 0.05);
}

// ---- Dense-only config ----

TEST(TrainingFlopsPerToken, DenseOnlyConfigCountsNoRouterAndNoExperts) {
  ModelConfig c = Tiny();
  c.n_routed_experts = 0;
  const TrainingFlops f = TrainingFlopsPerToken(c, 8);
  EXPECT_EQ(f.router, 0.0);
  EXPECT_EQ(f.moe_experts, 0.0);
  EXPECT_DOUBLE_EQ(f.dense_ffn, 6.0 * 4 * kTinyDenseMacs);
}

TEST(CountParameters, DenseOnlyConfigCountsEveryLayerAsDense) {
  ModelConfig c = Tiny();
  c.n_routed_experts = 0;
  c.num_nextn_predict_layers = 0;
  const int64_t attention =
      256 * 128 + 128 + 128 * 4 * 96 + 256 * 160 + 128 + 128 * 4 * 128 + 4 * 64 * 256;
  const ParameterCounts p = CountParameters(c);
  const int64_t expected = 1024 * 256 * 2 + 256 + 4 * (attention + 2 * 256 + 3 * 256 * 512);
  EXPECT_EQ(p.total, expected);
  EXPECT_EQ(p.activated, expected);
}

TEST(TrainingFlopsPerTokenDeathTest, AbortsOnANonPositiveSequenceLength) {
  EXPECT_DEATH(TrainingFlopsPerToken(Tiny(), 0), "seq_len=0");
}

}  // namespace
}  // namespace dsv3::accounting
