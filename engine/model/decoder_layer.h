// One pre-norm transformer block (spec §2.2, §3): x += MLA(input_layernorm(x)); then
// x += FFN(post_attention_layernorm(x)) with a dense SwiGLU FFN or DeepSeekMoE, forward and
// backward. The main layers and the MTP module's block are both DecoderLayers. Not here: the
// embedding, the head, the MTP's projection (model.cc).
#ifndef DSV3_ENGINE_MODEL_DECODER_LAYER_H_
#define DSV3_ENGINE_MODEL_DECODER_LAYER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/model_config.h"
#include "engine/model/ffn.h"
#include "engine/model/layer_common.h"
#include "engine/model/mla.h"
#include "engine/model/parameters.h"

namespace dsv3::model {

class DecoderLayer {
 public:
  DecoderLayer(const ModelConfig& config, ParameterSet* params, int64_t index, GemmMode mode);

  struct Cache {
    Mla::Cache attn;
    FloatBuffer x_mid;  // [N, d] the residual after attention
    FloatBuffer u;      // [N, d] post_attention_layernorm(x_mid) (dropped under recompute)
    SwiGluFfn::Cache dense;
    Moe::Cache moe;
  };

  bool is_moe() const { return moe_.has_value(); }
  const Moe* moe() const { return moe_ ? &*moe_ : nullptr; }
  Moe* mutable_moe() { return moe_ ? &*moe_ : nullptr; }

  // x_in: [N, d] -> x_out: [N, d] (must not alias x_in). Returns the balance-loss share (0 for a
  // dense layer). `moe` is used only by MoE layers. Errors: the MoE's expert executor's.
  absl::StatusOr<double> Forward(const kernels::CpuContext& ctx, const SeqShape& shape, const RopeInputs& rope,
                 const float* x_in, float* x_out, Cache* cache, const MoeRunOptions& moe,
                 bool recompute) const;
  // dx_in = d(x_out)/d(x_in)^T dx_out (overwritten).  x_in: the forward input.
  absl::Status Backward(const kernels::CpuContext& ctx, const SeqShape& shape, const RopeInputs& rope,
                const float* x_in, Cache* cache, const float* dx_out, const MoeRunOptions& moe,
                float* dx_in) const;

 private:
  int64_t d_;
  Mla attn_;
  NormRef post_norm_;
  std::optional<SwiGluFfn> dense_;
  std::optional<Moe> moe_;
};

}  // namespace dsv3::model

#endif  // DSV3_ENGINE_MODEL_DECODER_LAYER_H_
