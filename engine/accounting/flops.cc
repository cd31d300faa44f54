// Parameter counts and training FLOPs per token from a ModelConfig (see flops.h for the
// conventions). Plain arithmetic over the layer structure; nothing here knows about devices, time
// or money.
#include "engine/accounting/flops.h"

#include <cstdio>
#include <cstdlib>

namespace dsv3::accounting {
namespace {

// Forward + backward = 3 forward passes' worth of matmul FLOPs; one multiply-add = 2 FLOP.
constexpr double kTrainingPasses = 3.0;
constexpr double kFlopsPerMac = 2.0;

// Weights of the MLA projections of one layer (the matmul parameters, no norm gains).
int64_t AttentionMatmulParams(const ModelConfig& c) {
  const int64_t heads = c.num_attention_heads;
  const int64_t q = c.q_lora_rank > 0
                        ? c.hidden_size * c.q_lora_rank + c.q_lora_rank * heads * c.qk_head_dim()
                        : c.hidden_size * heads * c.qk_head_dim();
  const int64_t kv_a = c.hidden_size * (c.kv_lora_rank + c.qk_rope_head_dim);
  const int64_t kv_b = c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim);
  const int64_t o = heads * c.v_head_dim * c.hidden_size;
  return q + kv_a + kv_b + o;
}

// The q_a_layernorm (absent without q compression) and kv_a_layernorm gains of one layer.
int64_t AttentionNormParams(const ModelConfig& c) {
  return (c.q_lora_rank > 0 ? c.q_lora_rank : 0) + c.kv_lora_rank;
}

int64_t DenseFfnParams(const ModelConfig& c) { return 3 * c.hidden_size * c.intermediate_size; }
int64_t ExpertParams(const ModelConfig& c) { return 3 * c.hidden_size * c.moe_intermediate_size; }
int64_t RouterWeightParams(const ModelConfig& c) { return c.hidden_size * c.n_routed_experts; }
int64_t ActivatedExperts(const ModelConfig& c) {
  return c.n_shared_experts + c.num_experts_per_tok;
}

// Forward matmul FLOPs of one position through one block's attention core, attending `mean_keys`
// keys.
double AttentionCoreForward(const ModelConfig& c, double mean_keys) {
  return kFlopsPerMac * c.num_attention_heads * (c.qk_head_dim() + c.v_head_dim) * mean_keys;
}

// Forward FLOPs of one position through one full block at `layer`, split as in TrainingFlops.
struct BlockForward {
  double attention_projections = 0;
  double dense_ffn = 0;
  double moe_experts = 0;
  double router = 0;
  double attention_core = 0;
};

BlockForward BlockForwardFlops(const ModelConfig& c, int64_t layer, double mean_keys) {
  BlockForward f;
  f.attention_projections = kFlopsPerMac * AttentionMatmulParams(c);
  if (c.is_moe_layer(layer)) {
    f.moe_experts = kFlopsPerMac * ActivatedExperts(c) * ExpertParams(c);
    f.router = kFlopsPerMac * RouterWeightParams(c);
  } else {
    f.dense_ffn = kFlopsPerMac * DenseFfnParams(c);
  }
  f.attention_core = AttentionCoreForward(c, mean_keys);
  return f;
}

}  // namespace

ParameterCounts CountParameters(const ModelConfig& c) {
  ParameterCounts p;
  p.attention_per_layer = AttentionMatmulParams(c) + AttentionNormParams(c);
  p.dense_ffn_per_layer = DenseFfnParams(c);
  const int64_t router = RouterWeightParams(c) + c.n_routed_experts;  // weight + correction bias
  p.moe_per_layer = (c.n_routed_experts + c.n_shared_experts) * ExpertParams(c) + router;
  p.moe_activated_per_layer = ActivatedExperts(c) * ExpertParams(c) + router;
  p.embedding = c.vocab_size * c.hidden_size;
  p.lm_head = c.hidden_size * c.vocab_size;

  const int64_t block_norms = 2 * c.hidden_size;  // input_layernorm + post_attention_layernorm
  auto block = [&](int64_t layer, bool activated) {
    const int64_t ffn = !c.is_moe_layer(layer) ? p.dense_ffn_per_layer
                        : activated            ? p.moe_activated_per_layer
                                               : p.moe_per_layer;
    return p.attention_per_layer + ffn + block_norms;
  };

  const int64_t final_norm = c.hidden_size;
  p.total = p.embedding + p.lm_head + final_norm;
  p.activated = p.total;
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    p.total += block(layer, /*activated=*/false);
    p.activated += block(layer, /*activated=*/true);
  }

  // eh_proj (hidden x 2*hidden) + enorm + hnorm + shared_head.norm.
  const int64_t mtp_extra = 2 * c.hidden_size * c.hidden_size + 3 * c.hidden_size;
  for (int64_t k = 1; k <= c.num_nextn_predict_layers; ++k) {
    const int64_t layer = c.num_hidden_layers + k - 1;
    p.mtp_total += mtp_extra + block(layer, /*activated=*/false);
    p.mtp_activated += mtp_extra + block(layer, /*activated=*/true);
  }
  return p;
}

TrainingFlops TrainingFlopsPerToken(const ModelConfig& c, int64_t seq_len) {
  if (seq_len < 1) {
    std::fprintf(stderr, "TrainingFlopsPerToken: seq_len=%lld must be >= 1\n",
                 static_cast<long long>(seq_len));
    std::abort();
  }
  const double t = static_cast<double>(seq_len);
  TrainingFlops f;

  // Main model: every block sees the whole row; a query attends (T+1)/2 keys on average.
  const double main_mean_keys = (t + 1.0) / 2.0;
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const BlockForward b = BlockForwardFlops(c, layer, main_mean_keys);
    f.attention_projections += kTrainingPasses * b.attention_projections;
    f.dense_ffn += kTrainingPasses * b.dense_ffn;
    f.moe_experts += kTrainingPasses * b.moe_experts;
    f.router += kTrainingPasses * b.router;
    f.attention_core += kTrainingPasses * b.attention_core;
  }
  const double head_forward = kFlopsPerMac * c.hidden_size * c.vocab_size;
  f.lm_head = kTrainingPasses * head_forward;

  // MTP depth k: T-k positions, each through eh_proj, one block and the shared head.
  for (int64_t k = 1; k <= c.num_nextn_predict_layers; ++k) {
    const double positions = t - static_cast<double>(k);
    if (positions <= 0) break;
    const BlockForward b =
        BlockForwardFlops(c, c.num_hidden_layers + k - 1, (positions + 1.0) / 2.0);
    const double eh_proj = kFlopsPerMac * 2 * c.hidden_size * c.hidden_size;
    const double per_position = eh_proj + b.attention_projections + b.dense_ffn + b.moe_experts +
                                b.router + b.attention_core + head_forward;
    f.mtp += kTrainingPasses * per_position * positions / t;
  }
  return f;
}

}  // namespace dsv3::accounting
