// The text notation of spec Appendix A for schedules: `Fa3` forward of direction-a micro-batch 3,
// `Bb1` full backward, `Bib1` input-only backward, `Wb1` deferred weight part, `Fa3&Bb1` overlapped
// pair, `{sFa0>1,rBb2>3}` one comm batch (s/r, F activation / B gradient, direction, micro-batch,
// >peer). One line per rank: `rank 0 : Fa0 {sFa0>1} Fa1 ...`. Formatting and parsing only.
#ifndef DSV3_ENGINE_PARALLEL_SCHEDULE_FORMAT_H_
#define DSV3_ENGINE_PARALLEL_SCHEDULE_FORMAT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/parallel/schedule.h"

namespace dsv3::parallel {

struct FormatOptions {
  bool comm = true;  // print the comm batches; false prints compute ops only
};

// One op in the notation ("Fa3&Bb1", "{sFa3>1,rBa0>1}"). The stage is not part of the notation.
std::string FormatOp(const Op& op);

// One rank's ops separated by single spaces (no "rank r :" prefix).
std::string FormatOps(const std::vector<Op>& ops, const FormatOptions& options = {});

// Every rank as "rank R : OPS\n", ranks in order (Appendix A.1's layout).
std::string FormatSchedule(const Schedule& schedule, const FormatOptions& options = {});

// Parses one rank's space-separated ops; stages are filled in from `layout` for `rank`.
// INVALID_ARGUMENT naming the token for anything outside the notation, or a direction the rank
// holds no stage of.
absl::StatusOr<std::vector<Op>> ParseOps(absl::string_view text, const PipelineLayout& layout,
                                         int rank);

// Parses "rank R : OPS" lines (blank lines ignored) into ops[R]; every rank of `layout` must appear
// exactly once. INVALID_ARGUMENT otherwise.
absl::StatusOr<std::vector<std::vector<Op>>> ParseScheduleText(absl::string_view text,
                                                               const PipelineLayout& layout);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_SCHEDULE_FORMAT_H_
