// DualPipe's per-rank op lists (dualpipe.h): the eight steps of spec §6.3, written in "phases" so
// the text is the same for every rank. Phase 0 is the direction in which the rank sits in the first
// half of the pipeline (a on ranks < N/2, b on the others), phase 1 the other one.
#include "engine/parallel/dualpipe.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/parallel/schedule_emitter.h"

namespace dsv3::parallel {

using StepLengths = std::array<int, 8>;  // (a comma-free name for ASSIGN_OR_RETURN)

absl::Status ValidateDualPipe(int num_ranks, int num_micro_batches) {
  const int n = num_ranks, c = num_micro_batches;
  if (n < 2 || n % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("DualPipe needs an even number of ranks N >= 2 (N % 2 == 0); got ranks=", n));
  }
  if (c % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DualPipe needs an even number of micro-batches C (C % 2 == 0, half per direction); got "
        "micro_batches=",
        c));
  }
  if (c < 2 * n) {
    return absl::InvalidArgumentError(
        absl::StrCat("DualPipe needs at least 2N micro-batches (C >= 2N); got micro_batches=", c,
                     " with ranks=", n, " (minimum ", 2 * n, ")"));
  }
  return absl::OkStatus();
}

PipelineLayout DualPipeLayout(int num_ranks, int num_micro_batches) {
  PipelineLayout layout;
  layout.num_ranks = num_ranks;
  layout.num_stages = num_ranks;
  Route a{num_micro_batches / 2, {}};
  Route b{num_micro_batches / 2, {}};
  for (int s = 0; s < num_ranks; ++s) {
    a.hops.push_back(Hop{Direction::kA, s, s});
    b.hops.push_back(Hop{Direction::kB, s, num_ranks - 1 - s});
  }
  layout.routes = {a, b};
  return layout;
}

absl::StatusOr<std::array<int, 8>> DualPipeStepLengths(int num_ranks, int num_micro_batches,
                                                       int rank) {
  RETURN_IF_ERROR(ValidateDualPipe(num_ranks, num_micro_batches));
  RETURN_IF_ERROR(ValidateRank(num_ranks, rank));
  const int half = num_ranks / 2;
  const int h = std::min(rank, num_ranks - 1 - rank);
  const int rest = half - h - 1;  // 0 on the two middle ranks
  return std::array<int, 8>{2 * rest, h + 1, rest, num_micro_batches / 2 - num_ranks + h + 1,
                            rest,     h + 1, rest, h + 1};
}

absl::StatusOr<std::vector<Op>> BuildDualPipeRank(int num_ranks, int num_micro_batches, int rank) {
  ASSIGN_OR_RETURN(const StepLengths steps,
                   DualPipeStepLengths(num_ranks, num_micro_batches, rank));
  const PipelineLayout layout = DualPipeLayout(num_ranks, num_micro_batches);
  const int half = num_ranks / 2;
  const int h = std::min(rank, num_ranks - 1 - rank);
  const bool middle = rank == half - 1 || rank == half;
  // direction = phase XOR [rank in the second half].
  const Direction p0 = rank < half ? Direction::kA : Direction::kB;
  const Direction p1 = Other(p0);

  OpEmitter e(layout, rank);

  // Step 1: forwards of phase 0 only, while phase 1's first micro-batch has not reached us.
  e.set_step(1);
  for (int i = 0; i < steps[0]; ++i) e.ForwardChunk(p0);

  // Step 2: alternate F(0), F(1). The phase-0 input is received one iteration ahead; the middle
  // ranks send F(0)'s output at once and hold back the last F(1) output (step 4 sends it).
  e.set_step(2);
  e.RecvForward(p0);
  for (int i = 0; i < steps[1]; ++i) {
    e.ForwardChunk(p0, /*recv=*/false, /*send=*/middle);
    e.RecvForward(p0);
    e.ForwardChunk(p1, /*recv=*/true, /*send=*/!middle || i < steps[1] - 1);
    if (!middle) e.SendForward(p0);
  }

  // Step 3: B(1) input-only, W, F(1): zero-bubble fill before the steady state.
  e.set_step(3);
  for (int i = 0; i < steps[2]; ++i) {
    e.BackwardChunk(p1, /*defer_weights=*/true);
    e.RecvForward(p1);
    e.WeightChunk();
    e.ForwardChunk(p1, /*recv=*/false);
  }

  // Step 4: the steady state, F(0)&B(1) then F(1)&B(0). Its first F(0) input was received in step
  // 2. On the middle ranks the first pair is not overlapped: F(0), then a full B(1).
  e.set_step(4);
  for (int i = 0; i < steps[3]; ++i) {
    if (i == 0 && middle) {
      e.ForwardChunk(p0, /*recv=*/false, /*send=*/false);
      e.SendForward(p1);
      e.BackwardChunk(p1, /*defer_weights=*/false, /*recv=*/true, /*send=*/false);
      e.SendForward(p0);
      e.SendBackward(p1);
    } else {
      e.ForwardBackwardChunk(p0, p1, /*recv_forward=*/i > 0);
    }
    e.ForwardBackwardChunk(p1, p0);
  }

  // Step 5: B(1), F(1)&B(0): phase 0 has no forwards left.
  e.set_step(5);
  for (int i = 0; i < steps[4]; ++i) {
    e.BackwardChunk(p1);
    e.ForwardBackwardChunk(p1, p0);
  }

  // Step 6: B(1), B(0); the second half of these 2(h+1) backwards defer their weight part. With
  // m = (h+1)/2, deferral starts at iteration m's B(1) if h is odd, at its B(0) if h is even.
  e.set_step(6);
  bool defer = false;
  for (int i = 0; i < steps[5]; ++i) {
    if (i == steps[5] / 2 && h % 2 == 1) defer = true;
    e.BackwardChunk(p1, defer);
    if (i == steps[5] / 2 && h % 2 == 0) defer = true;
    e.BackwardChunk(p0, defer);
  }

  // Step 7: W, B(0) input-only.
  e.set_step(7);
  for (int i = 0; i < steps[6]; ++i) {
    e.WeightChunk();
    e.BackwardChunk(p0, /*defer_weights=*/true);
  }

  // Step 8: the remaining deferred weight parts.
  e.set_step(8);
  for (int i = 0; i < steps[7]; ++i) e.WeightChunk();
  return e.Finish();
}

absl::StatusOr<Schedule> BuildDualPipe(int num_ranks, int num_micro_batches) {
  RETURN_IF_ERROR(ValidateDualPipe(num_ranks, num_micro_batches));
  Schedule schedule;
  schedule.kind = ScheduleKind::kDualPipe;
  schedule.num_ranks = num_ranks;
  schedule.num_micro_batches = num_micro_batches;
  schedule.layout = DualPipeLayout(num_ranks, num_micro_batches);
  for (int r = 0; r < num_ranks; ++r) {
    ASSIGN_OR_RETURN(std::vector<Op> ops, BuildDualPipeRank(num_ranks, num_micro_batches, r));
    schedule.ops.push_back(std::move(ops));
  }
  return schedule;
}

}  // namespace dsv3::parallel
