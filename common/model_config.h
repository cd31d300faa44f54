// The shape of a DeepSeek-V3-style model, named after the Hugging Face DeepSeek-V3 `config.json` keys.
// A plain value type with no dependencies: the engine builds the model from it, the accounting code
// counts its FLOPs, and the coordinator fills it from a JobSpec. It does not validate itself; the
// coordinator's spec validation does that once, at submit.
#ifndef DSV3_COMMON_MODEL_CONFIG_H_
#define DSV3_COMMON_MODEL_CONFIG_H_

#include <cstdint>

namespace dsv3 {

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  // Layers [0, first_k_dense_replace) use a dense SwiGLU FFN, the rest DeepSeekMoE.
  int64_t first_k_dense_replace = 0;
  int64_t intermediate_size = 0;      // dense FFN width
  int64_t moe_intermediate_size = 0;  // width of one routed or shared expert
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;  // K, routed experts chosen per token
  int64_t n_group = 1;              // expert groups (node-limited routing)
  int64_t topk_group = 1;           // groups kept per token
  double routed_scaling_factor = 1.0;
  int64_t num_attention_heads = 0;
  int64_t q_lora_rank = 0;  // 0: a single q_proj, no query compression
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t num_nextn_predict_layers = 0;  // MTP depth D
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  // YaRN (`rope_scaling` of type "yarn", spec §2.4, §11.7); rope_scaling_factor 0 means none.
  double rope_scaling_factor = 0.0;
  int64_t rope_original_max_position_embeddings = 4096;
  double rope_beta_fast = 32.0;
  double rope_beta_slow = 1.0;
  double rope_mscale = 1.0;  // mscale (== mscale_all_dim; the spec validation requires it)

  // Derived quantities used across the project.
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int64_t num_moe_layers() const { return num_hidden_layers - first_k_dense_replace; }
  bool has_yarn() const { return rope_scaling_factor > 0; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace;
  }
};

// The published DeepSeek-V3 671B config (spec §8.1; Hugging Face config.json), pre-training form.
inline ModelConfig DeepSeekV3Config() {
  ModelConfig c;
  c.vocab_size = 129280;
  c.hidden_size = 7168;
  c.num_hidden_layers = 61;
  c.first_k_dense_replace = 3;
  c.intermediate_size = 18432;
  c.moe_intermediate_size = 2048;
  c.n_routed_experts = 256;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 8;
  c.n_group = 8;
  c.topk_group = 4;
  c.routed_scaling_factor = 2.5;
  c.num_attention_heads = 128;
  c.q_lora_rank = 1536;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.num_nextn_predict_layers = 1;
  return c;
}

}  // namespace dsv3

#endif  // DSV3_COMMON_MODEL_CONFIG_H_
