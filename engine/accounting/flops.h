// Parameter counts and training FLOPs per token of a DeepSeek-V3-style model, computed from its
// ModelConfig alone: pure arithmetic, no model is built and nothing is measured. The cost, MFU and
// estimate code (cost.h) and the coordinator's accounting use it. It does not validate the config
// (the coordinator validates a job spec once, at submit); see each function for its preconditions.
#ifndef DSV3_ENGINE_ACCOUNTING_FLOPS_H_
#define DSV3_ENGINE_ACCOUNTING_FLOPS_H_

#include <cstdint>

#include "common/model_config.h"

namespace dsv3::accounting {

// Parameter counts, in parameters (not bytes). Norm gains and the router's correction bias are
// counted; tied weights are counted once. The main model is the embedding, the num_hidden_layers
// blocks (each with its two block norms), the final norm and the LM head; the MTP module(s) are
// reported apart, because spec §8.6's 671.03B / 37.55B exclude them.
struct ParameterCounts {
  // One layer's MLA: q_a_proj + q_a_layernorm + q_b_proj (or one q_proj when q_lora_rank == 0),
  // kv_a_proj_with_mqa + kv_a_layernorm + kv_b_proj + o_proj. Not the block's input/post-attention
  // norms.
  int64_t attention_per_layer = 0;
  int64_t dense_ffn_per_layer = 0;  // gate_proj + up_proj + down_proj, width intermediate_size
  // One MoE layer: every routed and shared expert, the router weight and its correction bias.
  int64_t moe_per_layer = 0;
  // What one token uses in a MoE layer: shared experts, num_experts_per_tok routed experts, the
  // router.
  int64_t moe_activated_per_layer = 0;
  int64_t embedding = 0;  // vocab_size x hidden_size
  int64_t lm_head = 0;    // hidden_size x vocab_size (not tied to the embedding)
  int64_t total = 0;      // main model, every parameter
  // Main model with MoE layers counted as activated (embedding and head included).
  int64_t activated = 0;
  // All MTP depths, parameters of their own only (eh_proj, enorm, hnorm, shared_head.norm and one
  // block per depth); the embedding and head they share with the main model are not counted again.
  int64_t mtp_total = 0;
  int64_t mtp_activated = 0;
};

// Counts the parameters of `config`. Errors: none; a config with negative sizes gives meaningless
// counts (validation is the caller's job).
ParameterCounts CountParameters(const ModelConfig& config);

// Training FLOPs per token, split into terms. Units: FLOP (one multiply-add = 2 FLOP) per token,
// where "token" is one position of the main model's input row of seq_len positions (the tokens the
// main loss is computed on). Every term is forward + backward = 3 x forward FLOPs. Only matmuls are
// counted: no norms, activations, softmax, RoPE, routing top-k, loss or optimizer; the embedding
// lookup is a gather, not a matmul.
//
// Causal convention: with positions 0..T-1 of a row, position i attends keys 0..i (itself
// included), so the attention core averages (T+1)/2 keys per query: forward FLOPs per token per
// layer = 2 * num_attention_heads * (qk_head_dim + v_head_dim) * (T+1)/2 (QK^T plus AV).
//
// MTP convention (spec §4.2, §11.2): depth k (1-based) runs over the T-k positions that have a
// target, so its FLOPs per main-model token are (T-k)/T of its per-position FLOPs, and its
// attention core averages (T-k+1)/2 keys. Per position, depth k costs eh_proj (2*hidden -> hidden),
// one full block of the type that layer index num_hidden_layers+k-1 implies (MoE for V3), its
// attention core, and the shared LM head again.
struct TrainingFlops {
  double attention_projections = 0;  // main model: q (q_a + q_b, or q_proj), kv_a, kv_b, o_proj
  double dense_ffn = 0;              // main model: dense layers' gate, up, down
  double moe_experts = 0;            // main model: shared + num_experts_per_tok routed experts
  double router = 0;                 // main model: hidden x n_routed_experts gate of each MoE layer
  double lm_head = 0;                // main model: hidden x vocab_size
  double attention_core = 0;         // main model: causal QK^T and AV of every layer
  double mtp = 0;                    // all MTP depths, every term above included

  // The main model alone: the convention of DeepSeek's published ~250 GFLOP/token and 38.94% MFU.
  double MainModel() const {
    return attention_projections + dense_ffn + moe_experts + router + lm_head + attention_core;
  }
  // The main model plus the MTP module(s): everything a training step computes.
  double MainModelPlusMtp() const { return MainModel() + mtp; }
};

// Training FLOPs per token of `config` on rows of `seq_len` positions (see TrainingFlops for the
// conventions). Precondition: seq_len >= 1; aborts with a message otherwise (a programmer error:
// job specs are validated at submit).
TrainingFlops TrainingFlopsPerToken(const ModelConfig& config, int64_t seq_len);

}  // namespace dsv3::accounting

#endif  // DSV3_ENGINE_ACCOUNTING_FLOPS_H_
