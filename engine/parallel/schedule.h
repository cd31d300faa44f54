// Pipeline schedules as pure data: per rank, the ordered list of ops (forward, backward,
// zero-bubble input-only backward and deferred weight-gradient chunks, overlapped forward&backward
// pairs, and batched point-to-point communication), plus the layout that says which stages each
// rank holds. This file only defines the data; the builders are dualpipe.h, dualpipev.h and
// one_f_one_b.h, the text notation is schedule_format.h, the rendezvous simulator schedule_sim.h.
// Nothing here runs.
#ifndef DSV3_ENGINE_PARALLEL_SCHEDULE_H_
#define DSV3_ENGINE_PARALLEL_SCHEDULE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dsv3::parallel {

// A schedule's two directions. In DualPipe, micro-batches of direction a enter at rank 0 and those
// of direction b at rank N-1. In DualPipeV, a is the first leg of the V (stages 0..N-1, down the
// ranks) and b the second leg of the same micro-batch (stages N..2N-1, back up). 1F1B uses only a.
enum class Direction : uint8_t { kA = 0, kB = 1 };

inline int Index(Direction d) { return static_cast<int>(d); }
inline Direction Other(Direction d) { return d == Direction::kA ? Direction::kB : Direction::kA; }
// 'a' or 'b', as in the notation of spec Appendix A.
char DirectionLetter(Direction d);

enum class OpKind : uint8_t {
  kForward,          // F: forward of one chunk.
  kBackward,         // B: full backward of one chunk (input and weight gradients).
  kBackwardInput,    // Bi: input gradients only; the weight part is deferred to a later W.
  kWeight,           // W: runs the oldest deferred weight-gradient part (FIFO).
  kForwardBackward,  // F&B: a forward chunk and a full backward chunk run mutually overlapped.
  kCommBatch,        // {...}: sends and receives issued together, then waited on together.
};

// One chunk of work: one stage, one micro-batch, one direction.
struct Chunk {
  Direction direction = Direction::kA;
  int micro_batch = 0;  // 0-based, counted per route (see Route)
  int stage = 0;        // 0-based pipeline stage the chunk runs
  friend bool operator==(const Chunk&, const Chunk&) = default;
};

// What a point-to-point message carries: the output activation of a forward chunk ("F" in the
// notation) or the input gradient of a backward chunk ("B").
enum class Payload : uint8_t { kActivation, kGradient };

// One element of a communication batch.
struct P2P {
  bool send = false;  // true: send to `peer`; false: receive from `peer`
  Payload payload = Payload::kActivation;
  Direction direction = Direction::kA;  // the direction of the chunks on both ends
  int micro_batch = 0;
  int peer = 0;  // the other rank
  friend bool operator==(const P2P&, const P2P&) = default;
};

struct Op {
  OpKind kind = OpKind::kForward;
  // F, B, Bi, W: the chunk. F&B: the forward chunk. Comm batches: unused.
  Chunk chunk;
  // F&B only: the backward chunk (always a full backward, of the other direction).
  Chunk backward;
  // Comm batches only: the elements in the order they were queued.
  std::vector<P2P> comm;
  // Which step of the builder's algorithm emitted the op: DualPipe/DualPipeV 1..8 (spec §6.3),
  // 1F1B 1 warm-up, 2 steady, 3 cool-down. Metadata only; never part of equality.
  int step = 0;

  static Op Forward(Chunk c, int step = 0);
  static Op Backward(Chunk c, int step = 0);
  static Op BackwardInput(Chunk c, int step = 0);
  static Op Weight(Chunk c, int step = 0);
  static Op ForwardBackward(Chunk forward, Chunk backward, int step = 0);
  static Op CommBatch(std::vector<P2P> elements, int step = 0);

  bool is_compute() const { return kind != OpKind::kCommBatch; }
  // Two ops are equal when they do the same thing; `step` is ignored.
  friend bool operator==(const Op& x, const Op& y) {
    return x.kind == y.kind && x.chunk == y.chunk && x.backward == y.backward && x.comm == y.comm;
  }
};

// One hop of a route: the stage that runs there, the rank that holds it, and the direction (module
// copy) the rank runs it as.
struct Hop {
  Direction direction = Direction::kA;
  int stage = 0;
  int rank = 0;
};

// The path every micro-batch of one group takes: hops[0] is the first stage (it reads the input),
// hops.back() the last (it computes the loss). Consecutive hops on different ranks exchange
// activations (forward) and gradients (backward) point to point; consecutive hops on the same rank
// hand over locally (DualPipeV's turn on rank N-1). Micro-batch ids are 0..micro_batches-1 per
// route.
struct Route {
  int micro_batches = 0;
  std::vector<Hop> hops;
};

// Where the stages live. DualPipe: routes {a: stage s on rank s} and {b: stage s on rank N-1-s}.
// DualPipeV: one route of 2N hops, stages 0..N-1 on ranks 0..N-1 as a, then N..2N-1 on ranks N-1..0
// as b. 1F1B: one route, stage s on rank s as a.
struct PipelineLayout {
  int num_ranks = 0;
  int num_stages = 0;
  std::vector<Route> routes;

  // The stage `rank` runs as `direction`, or -1 if it runs none.
  int StageOf(int rank, Direction direction) const;
  // The route holding (direction, stage) and the hop's index in it, or {-1, -1}.
  struct HopRef {
    int route = -1;
    int hop = -1;
  };
  HopRef Find(Direction direction, int stage) const;
};

enum class ScheduleKind : uint8_t { kDualPipe, kDualPipeV, kOneFOneB };

// "dualpipe", "dualpipev", "1f1b".
absl::string_view ScheduleKindName(ScheduleKind kind);
// The inverse of ScheduleKindName. INVALID_ARGUMENT naming the accepted values otherwise.
absl::StatusOr<ScheduleKind> ParseScheduleKind(absl::string_view name);

// A whole schedule: the per-rank op lists and the metadata they were built from.
struct Schedule {
  ScheduleKind kind = ScheduleKind::kDualPipe;
  int num_ranks = 0;
  // C as given to the builder. DualPipe counts both directions together (C/2 enter at each end).
  int num_micro_batches = 0;
  PipelineLayout layout;
  std::vector<std::vector<Op>> ops;  // ops[rank], in issue order
};

// OK iff 0 <= rank < num_ranks; INVALID_ARGUMENT naming both otherwise.
absl::Status ValidateRank(int num_ranks, int rank);

// Number of chunks of `kind` and `direction` that `ops` runs. kForward counts F ops and the forward
// half of F&B ops; kBackward counts B ops and the backward half of F&B ops; every other kind counts
// the ops of that kind whose chunk (for F&B: the forward chunk) has that direction.
int CountOps(const std::vector<Op>& ops, OpKind kind, Direction direction);

// The compute ops of `ops`, in order (comm batches dropped).
std::vector<Op> ComputeOps(const std::vector<Op>& ops);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_SCHEDULE_H_
