// DualPipe (DeepSeek-V3 TR §3.2.1; spec §6.1-§6.3): N ranks, N stages, rank r holds stage r for
// direction a and stage N-1-r for direction b (parameters held twice); C micro-batches, C/2
// entering at each end. The builders are pure functions that reproduce the reference step() control
// flow, including its comm batches. They do not run anything (see schedule_sim.h for a simulation).
#ifndef DSV3_ENGINE_PARALLEL_DUALPIPE_H_
#define DSV3_ENGINE_PARALLEL_DUALPIPE_H_

#include <array>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/parallel/schedule.h"

namespace dsv3::parallel {

// OK iff the reference's rules hold: N even and >= 2, C even, C >= 2N. Otherwise INVALID_ARGUMENT
// naming the rule and the values.
absl::Status ValidateDualPipe(int num_ranks, int num_micro_batches);

// Routes {a: stage s on rank s} and {b: stage s on rank N-1-s}, C/2 micro-batches each.
// Precondition: ValidateDualPipe(num_ranks, num_micro_batches) is OK.
PipelineLayout DualPipeLayout(int num_ranks, int num_micro_batches);

// The iteration counts of steps 1..8 of spec §6.3 for `rank` (with h = min(r, N-1-r), H = N/2):
// [2(H-h-1), h+1, H-h-1, C/2-N+h+1, H-h-1, h+1, H-h-1, h+1].
// INVALID_ARGUMENT for invalid (N, C) or a rank outside [0, N).
absl::StatusOr<std::array<int, 8>> DualPipeStepLengths(int num_ranks, int num_micro_batches,
                                                       int rank);

// Rank `rank`'s op list. INVALID_ARGUMENT for invalid (N, C) or a rank outside [0, N).
absl::StatusOr<std::vector<Op>> BuildDualPipeRank(int num_ranks, int num_micro_batches, int rank);

// Every rank's op list with its layout. INVALID_ARGUMENT for invalid (N, C).
absl::StatusOr<Schedule> BuildDualPipe(int num_ranks, int num_micro_batches);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_DUALPIPE_H_
