// The "model" section of docs/examples/brown-tiny.json (the demo job), for the benchmarks that run
// the demo model without reading the spec.
#ifndef DSV3_BENCH_DEMO_MODEL_CONFIG_H_
#define DSV3_BENCH_DEMO_MODEL_CONFIG_H_

#include "common/model_config.h"

namespace dsv3::bench {

inline ModelConfig DemoModelConfig() {
  ModelConfig c;
  c.vocab_size = 4096;
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
  c.routed_scaling_factor = 2.5;
  c.num_attention_heads = 4;
  c.q_lora_rank = 128;
  c.kv_lora_rank = 128;
  c.qk_nope_head_dim = 64;
  c.qk_rope_head_dim = 32;
  c.v_head_dim = 64;
  c.num_nextn_predict_layers = 1;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000;
  return c;
}

}  // namespace dsv3::bench

#endif  // DSV3_BENCH_DEMO_MODEL_CONFIG_H_
