// 1F1B (PipeDream-flush / Megatron's non-interleaved schedule), the baseline: N ranks, N stages,
// stage r on rank r, C micro-batches. Per rank: a warm-up of min(N-r-1, C) forwards, a steady state
// of one forward then one backward, a cool-down of the remaining backwards. Full backwards only (no
// zero-bubble split). Pure builders; nothing runs here.
#ifndef DSV3_ENGINE_PARALLEL_ONE_F_ONE_B_H_
#define DSV3_ENGINE_PARALLEL_ONE_F_ONE_B_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/parallel/schedule.h"

namespace dsv3::parallel {

// OK iff N >= 1 and C >= 1. Otherwise INVALID_ARGUMENT naming the rule.
absl::Status ValidateOneFOneB(int num_ranks, int num_micro_batches);

// One route, stage s on rank s as direction a, C micro-batches. Precondition: valid (N, C).
PipelineLayout OneFOneBLayout(int num_ranks, int num_micro_batches);

// Rank `rank`'s op list: warm-up ops carry step 1, steady 2, cool-down 3. INVALID_ARGUMENT for
// invalid (N, C) or a rank outside [0, N).
absl::StatusOr<std::vector<Op>> BuildOneFOneBRank(int num_ranks, int num_micro_batches, int rank);

// Every rank's op list with its layout. INVALID_ARGUMENT for invalid (N, C).
absl::StatusOr<Schedule> BuildOneFOneB(int num_ranks, int num_micro_batches);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_ONE_F_ONE_B_H_
