// AdamW over a model's flat parameter set (spec §5.6, §11.10): global-norm gradient clipping over
// every trainable gradient, then one element-wise AdamW step per run of tensors, with decoupled
// weight decay only where ParamInfo::weight_decay says so and nothing at all for tensors that are
// not trainable (the router bias, which the auxiliary-loss-free update owns). Moments in BF16 (the
// V3 recipe; bf16 and fp8 precision) or FP32 (fp32 precision). Also the optimizer's part of a
// checkpoint. Not here: the LR schedule (lr_schedule.h), ZeRO sharding, the trainer loop.
#ifndef DSV3_ENGINE_TRAIN_OPTIMIZER_H_
#define DSV3_ENGINE_TRAIN_OPTIMIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/parameters.h"
#include "engine/train/adamw_shard.h"
#include "engine/train/safetensors.h"
#include "kernels/cpu/context.h"

namespace dsv3::train {

// MomentDType, AdamWConfig and OptimizerStepResult are in adamw_shard.h.

// The metadata keys of a saved state (values are strings): format "dsv3-adamw", format_version
// "1", step (decimal), moment_dtype ("BF16" or "F32"), and beta1/beta2/eps (informational).
inline constexpr char kAdamWStateFormat[] = "dsv3-adamw";

class AdamW {
 public:
  // An optimizer for parameters laid out as `layout` (copied), with zero moments and step 0.
  // INVALID_ARGUMENT naming the value unless betas are in [0, 1), eps, weight_decay and grad_clip
  // are finite and >= 0.
  static absl::StatusOr<AdamW> Create(const model::ParameterLayout& layout,
                                      const AdamWConfig& config);

  const AdamWConfig& config() const { return config_; }
  int64_t step() const { return step_; }

  // The global L2 norm of the trainable gradients of `params` (kernels/cpu/grad_norm.h, tensors in
  // offset order; non-trainable tensors excluded). Deterministic for any thread count.
  double GradNorm(const kernels::CpuContext& ctx, const model::ParameterSet& params) const;

  // One step at learning rate `lr` (>= 0): norm = GradNorm; scale = ClipCoefficient(norm,
  // grad_clip) (1 when grad_clip is 0); then AdamW (kernels/cpu/adamw.h, step = step() + 1) on
  // every trainable tensor, with weight decay where the layout says so. params->grads is read,
  // not changed. FAILED_PRECONDITION, with nothing changed, when the norm is not finite (a
  // diverged step). Aborts when `params` does not have the layout given to Create (a programmer
  // error).
  absl::StatusOr<OptimizerStepResult> Step(const kernels::CpuContext& ctx, double lr,
                                           model::ParameterSet* params);

  // Adds the state to `writer`: for every trainable tensor "<name>.exp_avg" and
  // "<name>.exp_avg_sq" (moment dtype, the parameter's shape), BORROWED from this object (keep it
  // alive and unchanged until the writer is done), plus the metadata above.
  absl::Status AddTo(SafetensorsWriter* writer) const;

  // Replaces the state by the one in `reader`, all or nothing. Strict: DATA_LOSS naming the file
  // and the tensor when the metadata is missing or malformed, a tensor is missing, has another
  // shape or dtype than the moment dtype, or a tensor is there that no trainable parameter
  // explains; FAILED_PRECONDITION when the file's moment dtype is not this optimizer's (the
  // precision changed); read errors of the reader.
  absl::Status Load(const SafetensorsReader& reader);

  // Read-only views of the moments of tensor `info` (for tests): FP32 values, decoded from BF16
  // when the moments are BF16. [info.size] each.
  std::vector<float> ExpAvg(const model::ParamInfo& info) const;
  std::vector<float> ExpAvgSq(const model::ParamInfo& info) const;

 private:
  AdamW(const model::ParameterLayout& layout, const AdamWConfig& config);

  AdamWConfig config_;
  std::vector<model::ParamInfo> params_;  // trainable tensors, in layout order
  int64_t total_size_ = 0;
  int64_t step_ = 0;
  AdamWShard shard_;  // all of [0, total_size)
};

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_OPTIMIZER_H_
