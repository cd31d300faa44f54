// The AdamW core shared by the single-process optimizer (optimizer.h) and ZeRO-1 (zero_optimizer.h):
// for a range [begin, end) of the flat parameter buffers, the runs of trainable elements with their
// weight-decay flag, their moments (BF16 or FP32), the clip decision, and one element-wise update.
// The single-process optimizer owns the whole range, a ZeRO-1 rank its shard. Not here: where the
// gradient comes from (reductions), checkpoint formats.
#ifndef DSV3_ENGINE_TRAIN_ADAMW_SHARD_H_
#define DSV3_ENGINE_TRAIN_ADAMW_SHARD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/parameters.h"
#include "engine/train/safetensors.h"
#include "kernels/cpu/context.h"

namespace dsv3::train {

// How the first and second moments are stored.
enum class MomentDType { kF32, kBf16 };
// "F32", "BF16" (the safetensors dtype names the state is saved with).
std::string MomentDTypeName(MomentDType dtype);

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // decoupled; applied only to tensors with ParamInfo::weight_decay
  double grad_clip = 1.0;     // max global L2 norm of the trainable gradients; 0 = no clipping
  MomentDType moments = MomentDType::kBf16;
};

struct OptimizerStepResult {
  int64_t step = 0;       // optimizer steps completed, this one included (1-based)
  double grad_norm = 0;   // global L2 norm of the trainable gradients BEFORE clipping
  double grad_scale = 1;  // the factor the gradients were multiplied by (1 = not clipped)
};

// The safetensors dtype moments are stored in.
DType MomentStorageDType(MomentDType m);

// norm -> the step's result: FAILED_PRECONDITION naming step `step` when the norm is not finite
// (a diverged step: the caller must change nothing); else scale = ClipCoefficient(norm, grad_clip)
// (1 when grad_clip is 0).
absl::StatusOr<OptimizerStepResult> ClipStep(const AdamWConfig& config, double grad_norm,
                                             int64_t step);

class AdamWShard {
 public:
  // The trainable elements of `layout` within [begin, end), zero moments.
  AdamWShard(const model::ParameterLayout& layout, const AdamWConfig& config, int64_t begin,
             int64_t end);

  int64_t begin() const { return begin_; }
  int64_t size() const { return end_ - begin_; }

  // Sum of squares of the trainable elements of `grads` ([size()], shard coordinates), in offset
  // order (kernels/cpu/grad_norm.h: deterministic for any thread count).
  double SumOfSquares(const kernels::CpuContext& ctx, const float* grads) const;

  // AdamW (kernels/cpu/adamw.h) on every trainable element at learning rate `lr`, with
  // result.step and result.grad_scale, weight decay where the layout says so.
  //   values: [size()] updated in place   grads: [size()]   (shard coordinates)
  void Update(const kernels::CpuContext& ctx, double lr, const OptimizerStepResult& result,
              float* values, const float* grads);

  // The moments' bytes from shard element `offset` on (for checkpoints; BORROWED), and their FP32
  // values of `count` elements (for tests).
  const void* exp_avg_data(int64_t offset) const;
  const void* exp_avg_sq_data(int64_t offset) const;
  void* mutable_exp_avg_data(int64_t offset);
  void* mutable_exp_avg_sq_data(int64_t offset);
  std::vector<float> ExpAvg(int64_t offset, int64_t count) const;
  std::vector<float> ExpAvgSq(int64_t offset, int64_t count) const;

  // A copy of the moments with every element zero (a staging area for an all-or-nothing load).
  AdamWShard ZeroedCopy() const;

 private:
  struct Segment {  // a run of trainable elements sharing the decay flag, shard coordinates
    int64_t offset = 0;
    int64_t size = 0;
    bool weight_decay = false;
  };
  AdamWConfig config_;
  int64_t begin_ = 0, end_ = 0;
  std::vector<Segment> segments_;
  std::vector<float> m32_, v32_;     // [size()] with FP32 moments
  std::vector<uint16_t> m16_, v16_;  // [size()] with BF16 moments
};

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_ADAMW_SHARD_H_
