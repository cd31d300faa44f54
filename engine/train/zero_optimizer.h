// ZeRO-1 AdamW (spec §5.6) for one rank of a data-parallel group of D replicas: the flat gradient
// is reduce-scattered (the buffer padded to D * S elements; rank r owns [r*S, (r+1)*S) of it), the
// global norm comes from each rank's shard sum of squares plus an all-reduce of the partial sums,
// AdamW updates only the owned shard (moments exist only for it; weight decay and trainability per
// element, as optimizer.h), and the updated parameters are all-gathered so every rank holds all of
// them. Also the shard's part of a checkpoint. Not here: the loss and expert-load reductions (the
// trainer), the single-process optimizer (optimizer.h), resharding to another world size.
#ifndef DSV3_ENGINE_TRAIN_ZERO_OPTIMIZER_H_
#define DSV3_ENGINE_TRAIN_ZERO_OPTIMIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/parameters.h"
#include "engine/parallel/communicator.h"
#include "engine/train/adamw_shard.h"
#include "engine/train/optimizer.h"
#include "engine/train/safetensors.h"
#include "kernels/cpu/context.h"

namespace dsv3::train {

// The metadata "format" of a saved shard state (with format_version "1", step, moment_dtype,
// world_size, rank, shard_begin, shard_end, total_size; tensors "exp_avg" and "exp_avg_sq", each
// [shard_end - shard_begin] in the moment dtype, the moments of flat elements [begin, end)).
inline constexpr char kZeroAdamWStateFormat[] = "dsv3-adamw-zero1";

// Waits for `work` (bounded by its communicator's timeout) and prefixes its error with `what`.
absl::Status WaitFor(std::unique_ptr<parallel::Work> work, const std::string& what);

class ZeroAdamW {
 public:
  // An optimizer for parameters laid out as `layout` on rank comm->rank() of comm->size() (the
  // data-parallel group; BORROWED, must outlive this object), zero moments, step 0.
  // INVALID_ARGUMENT as AdamW::Create, or for a null communicator.
  static absl::StatusOr<std::unique_ptr<ZeroAdamW>> Create(const model::ParameterLayout& layout,
                                                           const AdamWConfig& config,
                                                           parallel::Communicator* comm);

  const AdamWConfig& config() const { return config_; }
  int64_t step() const { return step_; }
  // The padded shard size S = ceil(total / D) and this rank's real elements [begin, end).
  int64_t shard_size() const { return shard_size_; }
  int64_t shard_begin() const { return begin_; }
  int64_t shard_end() const { return end_; }

  // One step at learning rate `lr`, a collective of the group (every rank calls it with the same
  // lr, after accumulating its share of the gradient in params->grads, which is read, not
  // changed): reduce-scatter, norm, clip, AdamW on the shard (step = step() + 1), all-gather of
  // params->values. The norm and scale are identical on every rank. FAILED_PRECONDITION, with
  // nothing changed, when the norm is not finite (on every rank alike); the communicator's errors
  // (prefixed with the op) otherwise, after which the parameters may be partly updated. Aborts when
  // `params` does not have the layout given to Create.
  absl::StatusOr<OptimizerStepResult> Step(const kernels::CpuContext& ctx, double lr,
                                           model::ParameterSet* params);

  // Adds this rank's shard state to `writer` (tensors BORROWED from this object) with the metadata
  // above.
  absl::Status AddTo(SafetensorsWriter* writer) const;

  // Replaces the state by the one in `reader`, all or nothing. FAILED_PRECONDITION naming both
  // values when the file was written by another world size or rank, for another total size, or
  // with another moment dtype; DATA_LOSS naming the file for a missing or malformed entry.
  absl::Status Load(const SafetensorsReader& reader);

  // Resharding: replaces the state by the parts of `shards` (the shard files of a run with any
  // world size, e.g. every rank's of a checkpoint) that fall into this rank's elements, all or
  // nothing. Errors as Load (except for the world size and rank), and DATA_LOSS when the shards
  // disagree on the step or do not cover this rank's elements.
  absl::Status LoadResharded(const std::vector<const SafetensorsReader*>& shards);

  // FP32 views of this shard's moments, [shard_end - shard_begin] (for tests).
  std::vector<float> ExpAvg() const;
  std::vector<float> ExpAvgSq() const;

 private:
  ZeroAdamW(const model::ParameterLayout& layout, const AdamWConfig& config,
            parallel::Communicator* comm);

  struct ShardHeader {
    int64_t step = 0, world = 0, rank = 0, begin = 0, end = 0, total = 0;
  };
  // The metadata of a saved shard, checked against this optimizer (format, total size, moment
  // dtype, tensor names and shapes).
  absl::StatusOr<ShardHeader> ReadShardHeader(const SafetensorsReader& reader) const;

  AdamWConfig config_;
  parallel::Communicator* comm_;
  int64_t total_size_ = 0;
  int64_t shard_size_ = 0;
  int64_t begin_ = 0, end_ = 0;
  int64_t step_ = 0;
  AdamWShard shard_;  // [begin_, end_)
  // Scratch: the padded flat buffer [D * S] and the reduced shard gradient [S].
  std::vector<float> padded_, shard_grad_, shard_values_;
};

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_ZERO_OPTIMIZER_H_
