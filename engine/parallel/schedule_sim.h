// A simulator for schedules (schedule.h): runs every rank's op list under strict rendezvous P2P
// semantics (a batch completes only when the peer of each element has posted the matching op;
// sends and receives between two ranks match in posting order and must agree on what they carry),
// checks every data dependency against the layout, and with per-op costs computes each rank's
// timeline, idle time and peak live activations. A model of the schedule, not an executor.
#ifndef DSV3_ENGINE_PARALLEL_SCHEDULE_SIM_H_
#define DSV3_ENGINE_PARALLEL_SCHEDULE_SIM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/parallel/schedule.h"

namespace dsv3::parallel {

// Durations of the compute ops (arbitrary time units). Communication takes no time.
struct SimCosts {
  double forward = 1;           // F
  double backward = 2;          // B, full; an input-only Bi costs backward - weight
  double weight = 1;            // W
  double forward_backward = 3;  // F&B
};

// How start times are computed (the rendezvous check that proves completion is the same in both).
enum class TimingModel : uint8_t {
  // Spec §6.5 (i), the model of Appendix A.1's timing: a compute op starts when its rank is free
  // and
  // the chunks it consumes (the previous stage's forward, the next stage's backward) have finished,
  // wherever they ran. Communication is instantaneous and never holds a rank.
  kDataflow,
  // The reference runtime's commit-and-wait: a rank also waits at every comm batch until each of
  // its elements has met its counterpart, so a send holds the sender until the receiver posts.
  kRendezvous,
};

struct SimOptions {
  SimCosts costs;
  TimingModel timing = TimingModel::kDataflow;
};

struct OpTiming {
  int op = 0;        // index into the rank's op list
  double start = 0;  // compute: start; comm batch: when it was issued
  double end = 0;    // compute: start + cost; comm batch: when the rank went on (kRendezvous:
                     // when its last element matched; kDataflow: = start)
};

struct RankTimeline {
  std::vector<OpTiming> ops;  // one per op, in op-list order
  double busy = 0;            // sum of compute durations
  double finish = 0;          // end of the rank's last op
  double idle = 0;            // makespan - busy (idle until the slowest rank is done)
  // Peak number of stage activations held at once: an F allocates one at its start; a full B frees
  // it at its end; an input-only Bi keeps it (the weight gradient needs the stored inputs) and its
  // W frees it at its end. An F&B allocates its forward's before freeing its backward's.
  int peak_activations = 0;
};

struct SimResult {
  double makespan = 0;  // the latest finish over ranks
  std::vector<RankTimeline> ranks;

  double MaxIdle() const;
  int MaxPeakActivations() const;
};

// Runs `schedule`. Errors:
//  - INVALID_ARGUMENT: an op that does not fit the layout (a stage or direction the rank does not
//    hold, a micro-batch out of range, a peer that is not the neighbouring hop), a compute op whose
//    input is not there yet (no received or local activation/gradient, W without a matching
//    deferred Bi at the head of the FIFO), a chunk run twice, a send whose peer's next receive from
//    this rank carries something else, or a chunk never run. The message names rank, op index, op.
//  - FAILED_PRECONDITION "deadlock: ...": no rank can move; names every blocked rank, its op and
//  the
//    elements still unmatched.
absl::StatusOr<SimResult> Simulate(const Schedule& schedule, const SimOptions& options = {});

// The timeline in Appendix A.1's timing notation: per rank "rank R Fa0@0 Fa1@1 ..." (compute ops
// with their start times), then "makespan M; busy B per rank; idle I" (busy and idle listed per
// rank when they differ), then "peak activations P0 P1 ...". Times print with %g.
std::string FormatTimeline(const Schedule& schedule, const SimResult& result);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_SCHEDULE_SIM_H_
