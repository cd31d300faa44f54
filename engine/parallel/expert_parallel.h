// Expert parallelism for an MoE layer (spec §3, DESIGN.md "Parallelism"): the routed experts are
// split contiguously over the expert-parallel group (rank r owns experts [r*E/P, (r+1)*E/P)), every
// rank routes its own tokens, and an ExpertExecutor moves the expert-sorted rows to the experts'
// owners and back: per-expert counts are exchanged first, then the rows (dispatch all-to-all),
// the owner runs its experts on everything it received, and the outputs return (combine
// all-to-all); the backward sends output gradients the same way and input gradients back. The
// router, permutation, weighted combine and shared experts stay on the token's rank
// (engine/model/ffn.h). In FP8 mode the dispatch direction (forward rows, backward output
// gradients) carries E4M3 codes with power-of-two scales, a quarter of the FP32 bytes (spec §5.7);
// the experts quantise their rows that way with or without expert parallelism, so the results are
// the same bits. The combine direction carries FP32. Not here: choosing the group (the planner),
// reducing expert gradients across data-parallel replicas (ZeRO), node-limited group placement.
#ifndef DSV3_ENGINE_PARALLEL_EXPERT_PARALLEL_H_
#define DSV3_ENGINE_PARALLEL_EXPERT_PARALLEL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "engine/model/ffn.h"
#include "engine/parallel/communicator.h"

namespace dsv3::parallel {

// The experts expert-parallel rank `rank` of `size` owns: [first, first + count).
struct ExpertRange {
  int64_t first = 0;
  int64_t count = 0;
};
// INVALID_ARGUMENT unless 1 <= size, 0 <= rank < size and size divides n_experts.
absl::StatusOr<ExpertRange> ExpertsOfRank(int64_t n_experts, int rank, int size);

class ExpertParallelExecutor : public model::ExpertExecutor {
 public:
  // `comm` is the expert-parallel group (not owned; it must outlive the executor). The layer's
  // weights under `prefix` ("model.layers.{i}.mlp.") in `params`: only this rank's experts are
  // read and get gradients. `backward_comm` (nullable: comm) is a second communicator over the
  // same ranks in the same order for the backward's all-to-alls, so that a forward and a backward
  // chunk can run overlapped (pipeline_executor.h, F&B) and each communicator still sees its
  // operations in the same order on every rank. Errors: those of ExpertsOfRank for comm's rank
  // and size; INVALID_ARGUMENT when backward_comm's rank or size differ from comm's.
  static absl::StatusOr<std::shared_ptr<ExpertParallelExecutor>> Create(
      Communicator* comm, const ModelConfig& config, model::ParameterSet* params,
      const std::string& prefix, model::GemmMode mode, Communicator* backward_comm = nullptr);

  const ExpertRange& experts() const { return range_; }

  // Every rank of the group must call Forward (and later Backward) for the same layer in the same
  // order. Errors: the communicator's (DEADLINE_EXCEEDED / UNAVAILABLE naming a dead or hung
  // peer, FAILED_PRECONDITION when the ranks disagree).
  absl::Status Forward(const kernels::CpuContext& ctx, model::FloatBuffer u_perm,
                       const int64_t* rows_per_expert, int64_t rows, float* eo,
                       std::unique_ptr<Cache>* cache) override;
  absl::Status Backward(const kernels::CpuContext& ctx, const float* d_eo,
                        const int64_t* rows_per_expert, int64_t rows, Cache* cache,
                        float* du_perm) override;

 private:
  ExpertParallelExecutor(Communicator* comm, Communicator* backward_comm, ExpertRange range,
                         int64_t hidden, bool fp8_dispatch, model::LocalExperts experts)
      : comm_(comm),
        backward_comm_(backward_comm),
        range_(range),
        hidden_(hidden),
        fp8_dispatch_(fp8_dispatch),
        experts_(std::move(experts)) {}

  Communicator* comm_;
  Communicator* backward_comm_;
  ExpertRange range_;
  int64_t hidden_;
  bool fp8_dispatch_;
  model::LocalExperts experts_;
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_EXPERT_PARALLEL_H_
