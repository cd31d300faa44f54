// 1F1B's per-rank op lists (one_f_one_b.h), with comm batches in the same queue-then-commit style
// as DualPipe: an output is sent together with the receive that the next compute op waits on, which
// pairs "send forward + receive backward" and "send backward + receive forward" as Megatron does.
#include "engine/parallel/one_f_one_b.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/parallel/schedule_emitter.h"

namespace dsv3::parallel {

absl::Status ValidateOneFOneB(int num_ranks, int num_micro_batches) {
  if (num_ranks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("1F1B needs at least one rank (N >= 1); got ranks=", num_ranks));
  }
  if (num_micro_batches < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "1F1B needs at least one micro-batch (C >= 1); got micro_batches=", num_micro_batches));
  }
  return absl::OkStatus();
}

PipelineLayout OneFOneBLayout(int num_ranks, int num_micro_batches) {
  PipelineLayout layout;
  layout.num_ranks = num_ranks;
  layout.num_stages = num_ranks;
  Route route{num_micro_batches, {}};
  for (int s = 0; s < num_ranks; ++s) route.hops.push_back(Hop{Direction::kA, s, s});
  layout.routes = {route};
  return layout;
}

absl::StatusOr<std::vector<Op>> BuildOneFOneBRank(int num_ranks, int num_micro_batches, int rank) {
  RETURN_IF_ERROR(ValidateOneFOneB(num_ranks, num_micro_batches));
  RETURN_IF_ERROR(ValidateRank(num_ranks, rank));
  const PipelineLayout layout = OneFOneBLayout(num_ranks, num_micro_batches);
  const int warmup = std::min(num_ranks - rank - 1, num_micro_batches);
  const int steady = num_micro_batches - warmup;
  constexpr Direction kDir = Direction::kA;

  OpEmitter e(layout, rank);
  e.set_step(1);
  for (int i = 0; i < warmup; ++i) e.ForwardChunk(kDir);
  e.set_step(2);
  for (int i = 0; i < steady; ++i) {
    e.ForwardChunk(kDir);
    e.BackwardChunk(kDir);
  }
  e.set_step(3);
  for (int i = 0; i < warmup; ++i) e.BackwardChunk(kDir);
  return e.Finish();
}

absl::StatusOr<Schedule> BuildOneFOneB(int num_ranks, int num_micro_batches) {
  RETURN_IF_ERROR(ValidateOneFOneB(num_ranks, num_micro_batches));
  Schedule schedule;
  schedule.kind = ScheduleKind::kOneFOneB;
  schedule.num_ranks = num_ranks;
  schedule.num_micro_batches = num_micro_batches;
  schedule.layout = OneFOneBLayout(num_ranks, num_micro_batches);
  for (int r = 0; r < num_ranks; ++r) {
    ASSIGN_OR_RETURN(std::vector<Op> ops, BuildOneFOneBRank(num_ranks, num_micro_batches, r));
    schedule.ops.push_back(std::move(ops));
  }
  return schedule;
}

}  // namespace dsv3::parallel
