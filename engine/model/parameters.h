// The parameters of a DeepSeek-V3 model in one flat FP32 buffer (values) with a gradient buffer of
// the same layout, and the table that names every tensor with its Hugging Face name (DESIGN.md
// "Model I/O"), shape and offset. Flat storage keeps the optimizer, gradient norm, checkpoints and
// (later) ZeRO sharding one loop over one array. Not here: the layers that read these values
// (model.h), optimizer state (engine/train).
//
// Layout. Tensors are listed in Hugging Face order (the order of tests/reference's
// parameter_shapes). Each lives in one contiguous range of the flat buffer, but the offsets are
// chosen so that the kernels' fused operands are contiguous too:
//   * a SwiGLU's gate_proj [I, d] is immediately followed by its up_proj [I, d]: together they
//     are the fused [2I, d] gate|up weight (kernels/cpu/swiglu.h);
//   * the routed experts of an MoE layer are stacked: experts.{j}.gate_proj/up_proj at
//     gate_up + j*2I*d (the grouped GEMM's [E, 2I, d]), experts.{j}.down_proj at down + j*d*I
//     ([E, d, I]).
// So offsets are NOT increasing in list order.
#ifndef DSV3_ENGINE_MODEL_PARAMETERS_H_
#define DSV3_ENGINE_MODEL_PARAMETERS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"

namespace dsv3::model {

struct ParamInfo {
  std::string name;            // Hugging Face name, e.g. "model.layers.0.self_attn.o_proj.weight"
  std::vector<int64_t> shape;  // outermost first
  int64_t offset = 0;          // first element in the flat buffers
  int64_t size = 0;            // number of elements (product of shape)
  // AdamW's decoupled weight decay applies (spec §11.10: matrices — projections, experts, router
  // gate, embedding, head — yes; RMSNorm gains and the router bias no).
  bool weight_decay = false;
  // false only for the router bias (e_score_correction_bias): it gets no gradient and is changed
  // by the auxiliary-loss-free update instead of the optimizer.
  bool trainable = true;
  bool is_norm = false;  // an RMSNorm gain (initialised to 1)
};

class ParameterLayout {
 public:
  // The layout of `config` (assumed valid: coordinator/job_spec.h validates configs).
  static ParameterLayout Build(const ModelConfig& config);

  const std::vector<ParamInfo>& params() const { return params_; }
  int64_t total_size() const { return total_size_; }
  // nullptr when there is no tensor `name`.
  const ParamInfo* Find(std::string_view name) const;
  // Offset of `name`; aborts when missing (a programmer error inside the model code).
  int64_t OffsetOf(std::string_view name) const;

 private:
  std::vector<ParamInfo> params_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_size_ = 0;
};

// Values and gradients. Both buffers have layout.total_size() elements.
struct ParameterSet {
  ParameterLayout layout;
  std::vector<float> values;
  std::vector<float> grads;

  explicit ParameterSet(ParameterLayout l)
      : layout(std::move(l)),
        values(static_cast<size_t>(layout.total_size()), 0.0f),
        grads(static_cast<size_t>(layout.total_size()), 0.0f) {}

  float* value(std::string_view name) { return values.data() + layout.OffsetOf(name); }
  float* grad(std::string_view name) { return grads.data() + layout.OffsetOf(name); }
  void ZeroGrads();
};

// Spec §11.8 initialisation: every matrix (Linear weights, embedding, head, router gate) ~ N(0,
// std^2), RMSNorm gains 1, router biases 0. Tensor i (in layout order) draws from its own
// generator seeded with (seed, i), so the values do not depend on thread count or on which other
// tensors a process holds (a pipeline stage initialises its part identically).
void InitParameters(uint64_t seed, double stddev, ParameterSet* params);

}  // namespace dsv3::model

#endif  // DSV3_ENGINE_MODEL_PARAMETERS_H_
