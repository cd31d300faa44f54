// Small helpers on the schedule data types of schedule.h: op constructors, kind names, layout
// look-ups and op counting. No builder and no simulation lives here.
#include "engine/parallel/schedule.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace dsv3::parallel {

char DirectionLetter(Direction d) { return d == Direction::kA ? 'a' : 'b'; }

Op Op::Forward(Chunk c, int step) {
  Op op;
  op.kind = OpKind::kForward;
  op.chunk = c;
  op.step = step;
  return op;
}

Op Op::Backward(Chunk c, int step) {
  Op op = Forward(c, step);
  op.kind = OpKind::kBackward;
  return op;
}

Op Op::BackwardInput(Chunk c, int step) {
  Op op = Forward(c, step);
  op.kind = OpKind::kBackwardInput;
  return op;
}

Op Op::Weight(Chunk c, int step) {
  Op op = Forward(c, step);
  op.kind = OpKind::kWeight;
  return op;
}

Op Op::ForwardBackward(Chunk forward, Chunk backward, int step) {
  Op op = Forward(forward, step);
  op.kind = OpKind::kForwardBackward;
  op.backward = backward;
  return op;
}

Op Op::CommBatch(std::vector<P2P> elements, int step) {
  Op op;
  op.kind = OpKind::kCommBatch;
  op.comm = std::move(elements);
  op.step = step;
  return op;
}

int PipelineLayout::StageOf(int rank, Direction direction) const {
  for (const Route& route : routes) {
    for (const Hop& hop : route.hops) {
      if (hop.rank == rank && hop.direction == direction) return hop.stage;
    }
  }
  return -1;
}

PipelineLayout::HopRef PipelineLayout::Find(Direction direction, int stage) const {
  for (int r = 0; r < static_cast<int>(routes.size()); ++r) {
    const std::vector<Hop>& hops = routes[r].hops;
    for (int h = 0; h < static_cast<int>(hops.size()); ++h) {
      if (hops[h].direction == direction && hops[h].stage == stage) return {r, h};
    }
  }
  return {};
}

absl::string_view ScheduleKindName(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kDualPipe:
      return "dualpipe";
    case ScheduleKind::kDualPipeV:
      return "dualpipev";
    case ScheduleKind::kOneFOneB:
      return "1f1b";
  }
  return "unknown";
}

absl::StatusOr<ScheduleKind> ParseScheduleKind(absl::string_view name) {
  for (ScheduleKind kind :
       {ScheduleKind::kDualPipe, ScheduleKind::kDualPipeV, ScheduleKind::kOneFOneB}) {
    if (name == ScheduleKindName(kind)) return kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown schedule kind \"", name, "\"; expected dualpipe, dualpipev or 1f1b"));
}

absl::Status ValidateRank(int num_ranks, int rank) {
  if (rank < 0 || rank >= num_ranks) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is outside [0, ranks=", num_ranks, ")"));
  }
  return absl::OkStatus();
}

int CountOps(const std::vector<Op>& ops, OpKind kind, Direction direction) {
  int n = 0;
  for (const Op& op : ops) {
    if (op.kind == kind && op.chunk.direction == direction) ++n;
    if (op.kind != OpKind::kForwardBackward) continue;
    if (kind == OpKind::kForward && op.chunk.direction == direction) ++n;
    if (kind == OpKind::kBackward && op.backward.direction == direction) ++n;
  }
  return n;
}

std::vector<Op> ComputeOps(const std::vector<Op>& ops) {
  std::vector<Op> out;
  for (const Op& op : ops) {
    if (op.is_compute()) out.push_back(op);
  }
  return out;
}

}  // namespace dsv3::parallel
