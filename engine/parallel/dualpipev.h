// DualPipeV, DualPipe "cut in half" (spec §6.4): N ranks, 2N stages in a V. Rank r holds stage r
// (first leg, direction a) and stage 2N-1-r (second leg, direction b); every micro-batch goes down
// ranks 0..N-1, turns on rank N-1 without P2P, comes back up, and its loss is computed on rank 0.
// No parameter copy. Pure builders only; nothing runs here.
#ifndef DSV3_ENGINE_PARALLEL_DUALPIPEV_H_
#define DSV3_ENGINE_PARALLEL_DUALPIPEV_H_

#include <array>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/parallel/schedule.h"

namespace dsv3::parallel {

// OK iff N >= 1 and C >= 2N (no parity rule). Otherwise INVALID_ARGUMENT naming the rule.
absl::Status ValidateDualPipeV(int num_ranks, int num_micro_batches);

// One route of 2N hops: stage s on rank s as a for s < N, stage s on rank 2N-1-s as b for s >= N;
// C micro-batches. Precondition: ValidateDualPipeV is OK.
PipelineLayout DualPipeVLayout(int num_ranks, int num_micro_batches);

// Steps 1..8 of §6.3 with H -> N, h -> r, C/2 -> C:
// [2(N-r-1), r+1, N-r-1, C-2N+r+1, N-r-1, r+1, N-r-1, r+1].
// INVALID_ARGUMENT for invalid (N, C) or a rank outside [0, N).
absl::StatusOr<std::array<int, 8>> DualPipeVStepLengths(int num_ranks, int num_micro_batches,
                                                        int rank);

// Rank `rank`'s op list. INVALID_ARGUMENT for invalid (N, C) or a rank outside [0, N).
absl::StatusOr<std::vector<Op>> BuildDualPipeVRank(int num_ranks, int num_micro_batches, int rank);

// Every rank's op list with its layout. INVALID_ARGUMENT for invalid (N, C).
absl::StatusOr<Schedule> BuildDualPipeV(int num_ranks, int num_micro_batches);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_DUALPIPEV_H_
