// DualPipeV's per-rank op lists (dualpipev.h): the eight steps of §6.3 with the V's geometry. Phase
// 0 is always the first leg (a) and phase 1 the second (b); the last rank plays DualPipe's middle
// rank, its leg-a output and leg-b input gradient stay on the rank.
#include "engine/parallel/dualpipev.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/parallel/schedule_emitter.h"

namespace dsv3::parallel {

using StepLengths = std::array<int, 8>;  // (a comma-free name for ASSIGN_OR_RETURN)

absl::Status ValidateDualPipeV(int num_ranks, int num_micro_batches) {
  if (num_ranks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("DualPipeV needs at least one rank (N >= 1); got ranks=", num_ranks));
  }
  if (num_micro_batches < 2 * num_ranks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DualPipeV needs at least 2N micro-batches (C >= 2N); got micro_batches=",
        num_micro_batches, " with ranks=", num_ranks, " (minimum ", 2 * num_ranks, ")"));
  }
  return absl::OkStatus();
}

PipelineLayout DualPipeVLayout(int num_ranks, int num_micro_batches) {
  PipelineLayout layout;
  layout.num_ranks = num_ranks;
  layout.num_stages = 2 * num_ranks;
  Route v{num_micro_batches, {}};
  for (int s = 0; s < num_ranks; ++s) v.hops.push_back(Hop{Direction::kA, s, s});
  for (int s = num_ranks; s < 2 * num_ranks; ++s) {
    v.hops.push_back(Hop{Direction::kB, s, 2 * num_ranks - 1 - s});
  }
  layout.routes = {v};
  return layout;
}

absl::StatusOr<std::array<int, 8>> DualPipeVStepLengths(int num_ranks, int num_micro_batches,
                                                        int rank) {
  RETURN_IF_ERROR(ValidateDualPipeV(num_ranks, num_micro_batches));
  RETURN_IF_ERROR(ValidateRank(num_ranks, rank));
  const int rest = num_ranks - rank - 1;  // 0 on the last rank
  return std::array<int, 8>{2 * rest, rank + 1, rest, num_micro_batches - 2 * num_ranks + rank + 1,
                            rest,     rank + 1, rest, rank + 1};
}

absl::StatusOr<std::vector<Op>> BuildDualPipeVRank(int num_ranks, int num_micro_batches, int rank) {
  ASSIGN_OR_RETURN(const StepLengths steps,
                   DualPipeVStepLengths(num_ranks, num_micro_batches, rank));
  const PipelineLayout layout = DualPipeVLayout(num_ranks, num_micro_batches);
  const bool last = rank == num_ranks - 1;
  constexpr Direction kDown = Direction::kA;  // phase 0: the first leg
  constexpr Direction kUp = Direction::kB;    // phase 1: the second leg

  OpEmitter e(layout, rank);

  // Step 1: first-leg forwards until the first micro-batch comes back up to this rank.
  e.set_step(1);
  for (int i = 0; i < steps[0]; ++i) e.ForwardChunk(kDown);

  // Step 2: alternate down and up forwards; the down input is received one iteration ahead and the
  // down output is sent after the up forward. The last rank keeps its final up output for step 4.
  e.set_step(2);
  e.RecvForward(kDown);
  for (int i = 0; i < steps[1]; ++i) {
    e.ForwardChunk(kDown, /*recv=*/false, /*send=*/false);
    e.RecvForward(kDown);
    e.ForwardChunk(kUp, /*recv=*/true, /*send=*/!last || i < steps[1] - 1);
    e.SendForward(kDown);
  }

  // Step 3: up backward input-only, W, up forward.
  e.set_step(3);
  for (int i = 0; i < steps[2]; ++i) {
    e.BackwardChunk(kUp, /*defer_weights=*/true);
    e.RecvForward(kUp);
    e.WeightChunk();
    e.ForwardChunk(kUp, /*recv=*/false);
  }

  // Step 4: steady state, F(down)&B(up) then F(up)&B(down); on the last rank the first pair runs
  // back to back instead of overlapped.
  e.set_step(4);
  for (int i = 0; i < steps[3]; ++i) {
    if (i == 0 && last) {
      e.ForwardChunk(kDown, /*recv=*/false, /*send=*/false);
      e.SendForward(kUp);
      e.BackwardChunk(kUp, /*defer_weights=*/false, /*recv=*/true, /*send=*/false);
      e.SendForward(kDown);
      e.SendBackward(kUp);
    } else {
      e.ForwardBackwardChunk(kDown, kUp, /*recv_forward=*/i > 0);
    }
    e.ForwardBackwardChunk(kUp, kDown);
  }

  // Step 5: B(up), F(up)&B(down).
  e.set_step(5);
  for (int i = 0; i < steps[4]; ++i) {
    e.BackwardChunk(kUp);
    e.ForwardBackwardChunk(kUp, kDown);
  }

  // Step 6: B(up), B(down); the second half defer their weight part (start as in DualPipe, h = r).
  e.set_step(6);
  bool defer = false;
  for (int i = 0; i < steps[5]; ++i) {
    if (i == steps[5] / 2 && rank % 2 == 1) defer = true;
    e.BackwardChunk(kUp, defer);
    if (i == steps[5] / 2 && rank % 2 == 0) defer = true;
    e.BackwardChunk(kDown, defer);
  }

  // Step 7: W, B(down) input-only.
  e.set_step(7);
  for (int i = 0; i < steps[6]; ++i) {
    e.WeightChunk();
    e.BackwardChunk(kDown, /*defer_weights=*/true);
  }

  // Step 8: the remaining deferred weight parts.
  e.set_step(8);
  for (int i = 0; i < steps[7]; ++i) e.WeightChunk();
  return e.Finish();
}

absl::StatusOr<Schedule> BuildDualPipeV(int num_ranks, int num_micro_batches) {
  RETURN_IF_ERROR(ValidateDualPipeV(num_ranks, num_micro_batches));
  Schedule schedule;
  schedule.kind = ScheduleKind::kDualPipeV;
  schedule.num_ranks = num_ranks;
  schedule.num_micro_batches = num_micro_batches;
  schedule.layout = DualPipeVLayout(num_ranks, num_micro_batches);
  for (int r = 0; r < num_ranks; ++r) {
    ASSIGN_OR_RETURN(std::vector<Op> ops, BuildDualPipeVRank(num_ranks, num_micro_batches, r));
    schedule.ops.push_back(std::move(ops));
  }
  return schedule;
}

}  // namespace dsv3::parallel
