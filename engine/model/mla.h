// Multi-head Latent Attention (spec §2.2, §2.3, §11.7) with the block's input RMSNorm, forward and
// backward on the CPU kernels, in its training ("naive") form: q from the (optionally
// low-rank-compressed) query projection, the shared latent c_kv and the single rope key from
// kv_a_proj_with_mqa, per-head keys/values from kv_b_proj, causal flash attention, o_proj. With
// recompute (spec §2.8) the RMSNorm outputs and the up-projection outputs (q, k, v) are dropped
// after the forward and rebuilt in the backward. Not here: the FFN, the residual stream.
#ifndef DSV3_ENGINE_MODEL_MLA_H_
#define DSV3_ENGINE_MODEL_MLA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/model_config.h"
#include "engine/model/layer_common.h"
#include "engine/model/linear.h"
#include "engine/model/parameters.h"

namespace dsv3::model {

class Mla {
 public:
  // `prefix` is the layer's "model.layers.{i}." (weights under prefix + "self_attn.", the norm
  // prefix + "input_layernorm.weight"). Block Linears run in `mode`.
  Mla(const ModelConfig& config, ParameterSet* params, const std::string& prefix, GemmMode mode);

  // What the backward needs. Kept always: the norm's rstd, the a-projections' outputs, the
  // attention output and its log-sum-exp. The rest is dropped under recompute.
  struct Cache {
    FloatBuffer h;    // [N, d] input_layernorm(x)                       (recomputable)
    FloatBuffer cq;   // [N, q_lora] q_a_proj(h) (q_lora > 0)
    FloatBuffer cqn;  // [N, q_lora] q_a_layernorm(cq)                    (recomputable)
    FloatBuffer q;    // [N, H, dqk] queries with RoPE applied            (recomputable)
    FloatBuffer kva;  // [N, kv_lora + d_rope] kv_a_proj_with_mqa(h)
    FloatBuffer ckv;  // [N, kv_lora] kv_a_layernorm(c_kv)                (recomputable)
    FloatBuffer kv;   // [N, H, dn + dv] kv_b_proj(ckv)                   (recomputable)
    FloatBuffer k;    // [N, H, dqk] assembled keys (rope key broadcast)  (recomputable)
    FloatBuffer v;    // [N, H, dv]                                       (recomputable)
    FloatBuffer o;    // [N, H, dv] attention output (o_proj input)
    FloatBuffer lse;  // [rows, H, seq]
  };

  // out = o_proj(attention(x)) for the pre-norm residual x: [N, d]; out: [N, d] (overwritten).
  void Forward(const kernels::CpuContext& ctx, const SeqShape& shape, const RopeInputs& rope,
               const float* x, float* out, Cache* cache, bool recompute) const;

  // dx += d(out)/dx^T dout; weight gradients accumulate.  x: [N, d] (the forward input)
  void Backward(const kernels::CpuContext& ctx, const SeqShape& shape, const RopeInputs& rope,
                const float* x, Cache* cache, const float* dout, float* dx) const;

 private:
  // h, cqn, q, ckv, kv, k, v from x, cq, kva (the recomputable part).
  void Project(const kernels::CpuContext& ctx, const SeqShape& shape, const RopeInputs& rope,
               const float* x, Cache* cache) const;

  int64_t d_, heads_, q_lora_, kv_lora_, dn_, dr_, dv_;
  NormRef input_norm_, q_norm_, kv_norm_;
  LinearRef q_a_, q_b_, q_proj_, kv_a_, kv_b_, o_proj_;
};

}  // namespace dsv3::model

#endif  // DSV3_ENGINE_MODEL_MLA_H_
