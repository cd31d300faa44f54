// The planner: a pure function from a resolved job spec and the idle workers that may serve it to a
// Placement (every rank's pipeline stage, expert shard and data-parallel replica, plus a new
// epoch). It holds no state, does no I/O and knows nothing of leases, sessions or checkpoints; the
// scheduler decides when to plan and what to do with the result. The rules are in docs/planner.md.
#ifndef DSV3_COORDINATOR_PLANNER_H_
#define DSV3_COORDINATOR_PLANNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dsv3/v1/job.pb.h"

namespace dsv3::coordinator {

// A worker the planner may give a rank to (one worker hosts one rank).
struct PlannerWorker {
  std::string worker_id;  // unique among the candidates
  std::string name;
  // Workers with the same node share a machine. An empty node is a node like any other (all
  // workers that did not say share it).
  std::string node;
};

// The shape of a placement, before workers are chosen.
struct PlacementLayout {
  int64_t pipeline_parallel = 0;          // P, from the spec
  int64_t ranks_per_stage = 0;            // R = expert_parallel x data_parallel
  int64_t expert_parallel = 0;            // EP, divides R and model.n_routed_experts
  int64_t data_parallel = 0;              // DP = R / EP, expert-parallel groups per stage
  int64_t world_size = 0;                 // P x R
  int64_t sequences_per_micro_batch = 0;  // S = global_batch_tokens / seq_len / micro_batches
};

// The layout a job gets with `worker_count` candidate workers: W = min(worker_count, max_workers),
// R = the largest r <= W / P that divides S, EP = the largest e <= min(R, parallel.expert_parallel)
// dividing both R and model.n_routed_experts, DP = R / EP. `spec` must be resolved by
// ValidateJobSpec; absent expert_parallel / min_workers / max_workers take the same defaults.
// Errors: FAILED_PRECONDITION when worker_count < max(min_workers, pipeline_parallel), naming
// both numbers; INVALID_ARGUMENT when the spec's sizes are not positive or S is not a whole number.
absl::StatusOr<PlacementLayout> PlanLayout(const v1::JobSpec& spec, int64_t worker_count);

// Places the job on `workers` (any order; the result depends only on the set): the layout of
// PlanLayout(spec, workers.size()), rank = stage x R + dp x EP + shard, routed experts of shard k
// = [k x E/EP, (k+1) x E/EP), the EP ranks of each expert-parallel group on one node whenever some
// node still has EP unassigned workers. Workers not needed stay unassigned (spares) and are not
// listed. Every rank is ASSIGNED; ranks are listed in rank order; epoch = previous_epoch + 1.
// Errors: those of PlanLayout; INVALID_ARGUMENT for a repeated worker_id or previous_epoch < 0.
absl::StatusOr<v1::Placement> PlanPlacement(const v1::JobSpec& spec,
                                            const std::vector<PlannerWorker>& workers,
                                            int64_t previous_epoch);

}  // namespace dsv3::coordinator

#endif  // DSV3_COORDINATOR_PLANNER_H_
