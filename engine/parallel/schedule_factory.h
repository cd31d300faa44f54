// One entry point over the three builders, chosen by ScheduleKind (for the CLI and the executor).
// It only dispatches; each schedule's rules and control flow live in its own file.
#ifndef DSV3_ENGINE_PARALLEL_SCHEDULE_FACTORY_H_
#define DSV3_ENGINE_PARALLEL_SCHEDULE_FACTORY_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/parallel/schedule.h"

namespace dsv3::parallel {

// The kind's (N, C) rule: ValidateDualPipe, ValidateDualPipeV or ValidateOneFOneB.
absl::Status ValidateSchedule(ScheduleKind kind, int num_ranks, int num_micro_batches);

// BuildDualPipe, BuildDualPipeV or BuildOneFOneB. INVALID_ARGUMENT for invalid (N, C).
absl::StatusOr<Schedule> BuildSchedule(ScheduleKind kind, int num_ranks, int num_micro_batches);

// One rank's op list of the kind. INVALID_ARGUMENT for invalid (N, C) or rank.
absl::StatusOr<std::vector<Op>> BuildScheduleRank(ScheduleKind kind, int num_ranks,
                                                  int num_micro_batches, int rank);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_SCHEDULE_FACTORY_H_
