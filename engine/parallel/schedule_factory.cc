// Dispatch from ScheduleKind to the builders (schedule_factory.h). No schedule logic here.
#include "engine/parallel/schedule_factory.h"

#include "engine/parallel/dualpipe.h"
#include "engine/parallel/dualpipev.h"
#include "engine/parallel/one_f_one_b.h"

namespace dsv3::parallel {

absl::Status ValidateSchedule(ScheduleKind kind, int num_ranks, int num_micro_batches) {
  switch (kind) {
    case ScheduleKind::kDualPipe:
      return ValidateDualPipe(num_ranks, num_micro_batches);
    case ScheduleKind::kDualPipeV:
      return ValidateDualPipeV(num_ranks, num_micro_batches);
    case ScheduleKind::kOneFOneB:
      return ValidateOneFOneB(num_ranks, num_micro_batches);
  }
  return absl::InvalidArgumentError("unknown schedule kind");
}

absl::StatusOr<Schedule> BuildSchedule(ScheduleKind kind, int num_ranks, int num_micro_batches) {
  switch (kind) {
    case ScheduleKind::kDualPipe:
      return BuildDualPipe(num_ranks, num_micro_batches);
    case ScheduleKind::kDualPipeV:
      return BuildDualPipeV(num_ranks, num_micro_batches);
    case ScheduleKind::kOneFOneB:
      return BuildOneFOneB(num_ranks, num_micro_batches);
  }
  return absl::InvalidArgumentError("unknown schedule kind");
}

absl::StatusOr<std::vector<Op>> BuildScheduleRank(ScheduleKind kind, int num_ranks,
                                                  int num_micro_batches, int rank) {
  switch (kind) {
    case ScheduleKind::kDualPipe:
      return BuildDualPipeRank(num_ranks, num_micro_batches, rank);
    case ScheduleKind::kDualPipeV:
      return BuildDualPipeVRank(num_ranks, num_micro_batches, rank);
    case ScheduleKind::kOneFOneB:
      return BuildOneFOneBRank(num_ranks, num_micro_batches, rank);
  }
  return absl::InvalidArgumentError("unknown schedule kind");
}

}  // namespace dsv3::parallel
