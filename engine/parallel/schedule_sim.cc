// The rendezvous simulator of schedule_sim.h. Ranks advance one op at a time; a comm batch posts
// all its elements at once and completes when each has met its counterpart on the peer (FIFO per
// ordered pair of ranks, like untagged NCCL point-to-point). Every compute op checks its inputs
// against the layout's routes. Deterministic: the result does not depend on the order ranks are
// visited.
#include "engine/parallel/schedule_sim.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/parallel/schedule_format.h"

namespace dsv3::parallel {
namespace {

// What one rank knows about one micro-batch of one of its stages.
struct ChunkState {
  bool forwarded = false;        // F ran
  bool input_grad_done = false;  // B or Bi ran
  bool weight_done = false;      // B ran, or Bi and then its W
  bool activation_posted = false;
  bool activation_arrived = false;
  bool gradient_posted = false;
  bool gradient_arrived = false;
  bool activation_sent = false;
  bool gradient_sent = false;
  double forward_end = 0;     // when F finished
  double input_grad_end = 0;  // when B/Bi finished (its input gradient exists)
};

// One rank's view of one direction: its hop and the neighbouring hops.
struct DirState {
  int stage = -1;  // -1: the rank runs nothing in this direction
  int micro_batches = 0;
  bool first = false;  // first hop of the route: reads the input
  bool last = false;   // last hop: computes the loss
  int upstream = -1;   // remote previous hop's rank, or -1
  int downstream = -1;
  bool upstream_local = false;  // previous hop on this rank, run as `upstream_dir`
  bool downstream_local = false;
  Direction upstream_dir = Direction::kA;
  Direction downstream_dir = Direction::kA;
  std::vector<ChunkState> chunks;
};

struct RankState {
  int pc = 0;
  double time = 0;
  bool posted = false;  // the comm batch at pc has been posted
  int unmatched = 0;    // its elements still waiting for a counterpart
  double ready = 0;     // the latest match time of its elements
  std::vector<bool> matched;
  int live = 0;
  std::deque<Chunk> deferred;
  DirState dirs[2];
  RankTimeline timeline;
};

// A posted element waiting for its counterpart.
struct Pending {
  int rank = 0;
  int op = 0;
  int element = 0;
  double issued = 0;
};

struct Channel {  // one ordered pair (src, dst)
  std::deque<Pending> sends;
  std::deque<Pending> recvs;
};

class Simulator {
 public:
  Simulator(const Schedule& schedule, const SimOptions& options)
      : s_(schedule), costs_(options.costs), timing_(options.timing), n_(schedule.num_ranks) {}

  absl::StatusOr<SimResult> Run();

 private:
  absl::Status Init();
  absl::StatusOr<bool> Advance(int r);
  absl::Status Post(int r);
  void Complete(int r);
  absl::Status Compute(int r, const Op& op);
  absl::StatusOr<DirState*> Dir(int r, Direction d, int stage, int micro_batch);
  // Check the chunk's input and mark it started; return when that input was produced.
  absl::StatusOr<double> StartForward(int r, const Chunk& c);
  absl::StatusOr<double> StartBackward(int r, const Chunk& c);
  absl::Status Error(int r, absl::string_view what) const;
  const P2P& Element(const Pending& p) const { return s_.ops[p.rank][p.op].comm[p.element]; }
  Channel& ChannelOf(int src, int dst) { return channels_[src * n_ + dst]; }
  std::string DeadlockReport() const;

  const Schedule& s_;
  const SimCosts costs_;
  const TimingModel timing_;
  const int n_;
  std::vector<RankState> ranks_;
  std::vector<Channel> channels_;
};

absl::Status Simulator::Error(int r, absl::string_view what) const {
  const int pc = ranks_[r].pc;
  return absl::InvalidArgumentError(
      absl::StrCat("rank ", r, " op ", pc, " (", FormatOp(s_.ops[r][pc]), "): ", what));
}

absl::Status Simulator::Init() {
  if (n_ < 1 || static_cast<int>(s_.ops.size()) != n_ || s_.layout.num_ranks != n_) {
    return absl::InvalidArgumentError(absl::StrCat("schedule has ", s_.ops.size(),
                                                   " op lists and a layout of ",
                                                   s_.layout.num_ranks, " ranks for ", n_));
  }
  ranks_.assign(n_, RankState{});
  channels_.assign(n_ * n_, Channel{});
  for (const Route& route : s_.layout.routes) {
    const int hops = static_cast<int>(route.hops.size());
    for (int h = 0; h < hops; ++h) {
      const Hop& hop = route.hops[h];
      if (hop.rank < 0 || hop.rank >= n_) {
        return absl::InvalidArgumentError(
            absl::StrCat("layout puts stage ", hop.stage, " on rank ", hop.rank));
      }
      DirState& d = ranks_[hop.rank].dirs[Index(hop.direction)];
      if (d.stage >= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("layout gives rank ", hop.rank, " two stages of direction ",
                         std::string(1, DirectionLetter(hop.direction))));
      }
      d.stage = hop.stage;
      d.micro_batches = route.micro_batches;
      d.chunks.assign(route.micro_batches, ChunkState{});
      d.first = h == 0;
      d.last = h == hops - 1;
      if (h > 0) {
        const Hop& prev = route.hops[h - 1];
        d.upstream_local = prev.rank == hop.rank;
        d.upstream = d.upstream_local ? -1 : prev.rank;
        d.upstream_dir = prev.direction;
      }
      if (h + 1 < hops) {
        const Hop& next = route.hops[h + 1];
        d.downstream_local = next.rank == hop.rank;
        d.downstream = d.downstream_local ? -1 : next.rank;
        d.downstream_dir = next.direction;
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DirState*> Simulator::Dir(int r, Direction d, int stage, int micro_batch) {
  DirState& dir = ranks_[r].dirs[Index(d)];
  if (dir.stage < 0) return Error(r, "the rank holds no stage of this direction");
  if (stage != dir.stage) {
    return Error(r, absl::StrCat("stage ", stage, " is not the rank's stage ", dir.stage));
  }
  if (micro_batch < 0 || micro_batch >= dir.micro_batches) {
    return Error(
        r, absl::StrCat("micro-batch ", micro_batch, " outside [0, ", dir.micro_batches, ")"));
  }
  return &dir;
}

absl::StatusOr<double> Simulator::StartForward(int r, const Chunk& c) {
  ASSIGN_OR_RETURN(DirState * d, Dir(r, c.direction, c.stage, c.micro_batch));
  ChunkState& st = d->chunks[c.micro_batch];
  if (st.forwarded) return Error(r, "forward chunk run twice");
  double ready = 0;
  if (!d->first) {
    const bool ok = d->upstream_local
                        ? ranks_[r].dirs[Index(d->upstream_dir)].chunks[c.micro_batch].forwarded
                        : st.activation_arrived;
    if (!ok) {
      return Error(r,
                   d->upstream_local
                       ? "forward before the local previous stage produced its input"
                       : absl::StrCat("forward before its input arrived from rank ", d->upstream));
    }
    const int producer = d->upstream_local ? r : d->upstream;
    ready = ranks_[producer].dirs[Index(d->upstream_dir)].chunks[c.micro_batch].forward_end;
  }
  st.forwarded = true;
  RankState& rs = ranks_[r];
  rs.timeline.peak_activations = std::max(rs.timeline.peak_activations, ++rs.live);
  return ready;
}

absl::StatusOr<double> Simulator::StartBackward(int r, const Chunk& c) {
  ASSIGN_OR_RETURN(DirState * d, Dir(r, c.direction, c.stage, c.micro_batch));
  ChunkState& st = d->chunks[c.micro_batch];
  if (!st.forwarded) return Error(r, "backward before the chunk's forward");
  if (st.input_grad_done) return Error(r, "backward chunk run twice");
  double ready = st.forward_end;
  if (!d->last) {
    const bool ok =
        d->downstream_local
            ? ranks_[r].dirs[Index(d->downstream_dir)].chunks[c.micro_batch].input_grad_done
            : st.gradient_arrived;
    if (!ok) {
      return Error(r, d->downstream_local
                          ? "backward before the local next stage produced its output gradient"
                          : absl::StrCat("backward before its output gradient arrived from rank ",
                                         d->downstream));
    }
    const int producer = d->downstream_local ? r : d->downstream;
    ready = std::max(
        ready,
        ranks_[producer].dirs[Index(d->downstream_dir)].chunks[c.micro_batch].input_grad_end);
  }
  st.input_grad_done = true;
  return ready;
}

absl::Status Simulator::Compute(int r, const Op& op) {
  RankState& rs = ranks_[r];
  double cost = 0;
  double ready = 0;                // when the op's inputs exist
  ChunkState* forward = nullptr;   // the chunk whose forward this op runs
  ChunkState* backward = nullptr;  // the chunk whose input gradient this op computes
  switch (op.kind) {
    case OpKind::kForward: {
      ASSIGN_OR_RETURN(ready, StartForward(r, op.chunk));
      forward = &rs.dirs[Index(op.chunk.direction)].chunks[op.chunk.micro_batch];
      cost = costs_.forward;
      break;
    }
    case OpKind::kBackward:
    case OpKind::kBackwardInput: {
      ASSIGN_OR_RETURN(ready, StartBackward(r, op.chunk));
      backward = &rs.dirs[Index(op.chunk.direction)].chunks[op.chunk.micro_batch];
      if (op.kind == OpKind::kBackward) {
        backward->weight_done = true;
        --rs.live;
        cost = costs_.backward;
      } else {
        rs.deferred.push_back(op.chunk);
        cost = costs_.backward - costs_.weight;
      }
      break;
    }
    case OpKind::kWeight: {
      if (rs.deferred.empty()) return Error(r, "W with no deferred weight part");
      if (!(rs.deferred.front() == op.chunk)) {
        Op head = Op::Weight(rs.deferred.front());
        return Error(
            r, absl::StrCat("W out of order: the oldest deferred weight part is ", FormatOp(head)));
      }
      rs.deferred.pop_front();
      rs.dirs[Index(op.chunk.direction)].chunks[op.chunk.micro_batch].weight_done = true;
      --rs.live;
      cost = costs_.weight;
      break;
    }
    case OpKind::kForwardBackward: {
      if (op.chunk.direction == op.backward.direction) {
        return Error(r, "an overlapped pair must combine the two directions");
      }
      ASSIGN_OR_RETURN(const double forward_ready, StartForward(r, op.chunk));
      ASSIGN_OR_RETURN(const double backward_ready, StartBackward(r, op.backward));
      ready = std::max(forward_ready, backward_ready);
      forward = &rs.dirs[Index(op.chunk.direction)].chunks[op.chunk.micro_batch];
      backward = &rs.dirs[Index(op.backward.direction)].chunks[op.backward.micro_batch];
      backward->weight_done = true;
      --rs.live;
      cost = costs_.forward_backward;
      break;
    }
    case OpKind::kCommBatch:
      return Error(r, "internal: comm batch passed to Compute");
  }
  const double start = std::max(rs.time, ready);
  rs.time = start + cost;
  if (forward != nullptr) forward->forward_end = rs.time;
  if (backward != nullptr) backward->input_grad_end = rs.time;
  rs.timeline.ops.push_back(OpTiming{rs.pc, start, rs.time});
  rs.timeline.busy += cost;
  return absl::OkStatus();
}

absl::Status Simulator::Post(int r) {
  RankState& rs = ranks_[r];
  const Op& op = s_.ops[r][rs.pc];
  if (op.comm.empty()) return Error(r, "empty comm batch");
  rs.posted = true;
  rs.unmatched = static_cast<int>(op.comm.size());
  rs.ready = rs.time;
  rs.matched.assign(op.comm.size(), false);
  for (int i = 0; i < static_cast<int>(op.comm.size()); ++i) {
    const P2P& p = op.comm[i];
    const std::string text = FormatOp(Op::CommBatch({p}));
    if (p.peer < 0 || p.peer >= n_ || p.peer == r) {
      return Error(r, absl::StrCat(text, ": peer ", p.peer, " is not another rank"));
    }
    DirState& d = rs.dirs[Index(p.direction)];
    if (d.stage < 0) return Error(r, absl::StrCat(text, ": the rank holds no stage of it"));
    if (p.micro_batch < 0 || p.micro_batch >= d.micro_batches) {
      return Error(r, absl::StrCat(text, ": micro-batch out of range"));
    }
    ChunkState& st = d.chunks[p.micro_batch];
    const bool activation = p.payload == Payload::kActivation;
    // Activations flow downstream, gradients upstream.
    const int expected_peer = activation == p.send ? d.downstream : d.upstream;
    if (p.peer != expected_peer) {
      return Error(r, absl::StrCat(text, ": the ", p.send ? "destination" : "source",
                                   " of this message is rank ", expected_peer,
                                   " (-1: none or local), not ", p.peer));
    }
    if (p.send) {
      if (activation ? !st.forwarded : !st.input_grad_done) {
        return Error(r, absl::StrCat(text, ": sent before it was computed"));
      }
      bool& sent = activation ? st.activation_sent : st.gradient_sent;
      if (sent) return Error(r, absl::StrCat(text, ": sent twice"));
      sent = true;
    } else {
      bool& posted = activation ? st.activation_posted : st.gradient_posted;
      if (posted) return Error(r, absl::StrCat(text, ": received twice"));
      posted = true;
    }
    const Pending self{r, rs.pc, i, rs.time};
    Channel& ch = p.send ? ChannelOf(r, p.peer) : ChannelOf(p.peer, r);
    std::deque<Pending>& waiting = p.send ? ch.recvs : ch.sends;
    if (waiting.empty()) {
      (p.send ? ch.sends : ch.recvs).push_back(self);
      continue;
    }
    const Pending other = waiting.front();
    const P2P& q = Element(other);
    if (q.payload != p.payload || q.direction != p.direction || q.micro_batch != p.micro_batch) {
      return Error(r, absl::StrCat(text, " meets ", FormatOp(Op::CommBatch({q})),
                                   " posted by rank ", other.rank, " op ", other.op,
                                   ": messages between two ranks must be posted in the same order "
                                   "on both sides"));
    }
    waiting.pop_front();
    const double t = std::max(self.issued, other.issued);
    for (const Pending& end : {self, other}) {
      RankState& e = ranks_[end.rank];
      e.matched[end.element] = true;
      --e.unmatched;
      e.ready = std::max(e.ready, t);
    }
  }
  return absl::OkStatus();
}

void Simulator::Complete(int r) {
  RankState& rs = ranks_[r];
  const Op& op = s_.ops[r][rs.pc];
  for (const P2P& p : op.comm) {
    if (p.send) continue;
    ChunkState& st = rs.dirs[Index(p.direction)].chunks[p.micro_batch];
    (p.payload == Payload::kActivation ? st.activation_arrived : st.gradient_arrived) = true;
  }
  const double issued = rs.time;
  if (timing_ == TimingModel::kRendezvous) rs.time = rs.ready;
  rs.timeline.ops.push_back(OpTiming{rs.pc, issued, rs.time});
  rs.posted = false;
}

absl::StatusOr<bool> Simulator::Advance(int r) {
  RankState& rs = ranks_[r];
  bool progress = false;
  const std::vector<Op>& ops = s_.ops[r];
  while (rs.pc < static_cast<int>(ops.size())) {
    const Op& op = ops[rs.pc];
    if (op.is_compute()) {
      RETURN_IF_ERROR(Compute(r, op));
    } else {
      if (!rs.posted) {
        RETURN_IF_ERROR(Post(r));
        progress = true;
      }
      if (rs.unmatched > 0) return progress;
      Complete(r);
    }
    ++rs.pc;
    progress = true;
  }
  return progress;
}

std::string Simulator::DeadlockReport() const {
  std::vector<std::string> parts;
  for (int r = 0; r < n_; ++r) {
    const RankState& rs = ranks_[r];
    if (rs.pc >= static_cast<int>(s_.ops[r].size())) {
      parts.push_back(absl::StrCat("rank ", r, " done"));
      continue;
    }
    const Op& op = s_.ops[r][rs.pc];
    std::vector<P2P> waiting;
    for (int i = 0; i < static_cast<int>(op.comm.size()); ++i) {
      if (!rs.matched[i]) waiting.push_back(op.comm[i]);
    }
    parts.push_back(absl::StrCat("rank ", r, " blocked at op ", rs.pc, " ", FormatOp(op),
                                 " waiting for ", FormatOp(Op::CommBatch(waiting))));
  }
  return absl::StrCat("deadlock: ", absl::StrJoin(parts, "; "));
}

absl::StatusOr<SimResult> Simulator::Run() {
  RETURN_IF_ERROR(Init());
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < n_; ++r) {
      ASSIGN_OR_RETURN(const bool moved, Advance(r));
      progress = progress || moved;
    }
  }
  for (int r = 0; r < n_; ++r) {
    if (ranks_[r].pc < static_cast<int>(s_.ops[r].size())) {
      return absl::FailedPreconditionError(DeadlockReport());
    }
  }
  SimResult result;
  for (int r = 0; r < n_; ++r) {
    RankState& rs = ranks_[r];
    for (int d = 0; d < 2; ++d) {
      const DirState& dir = rs.dirs[d];
      for (int m = 0; m < static_cast<int>(dir.chunks.size()); ++m) {
        const ChunkState& st = dir.chunks[m];
        if (!st.forwarded || !st.input_grad_done || !st.weight_done) {
          return absl::InvalidArgumentError(
              absl::StrCat("rank ", r, " never ran the ",
                           !st.forwarded         ? "forward"
                           : !st.input_grad_done ? "backward"
                                                 : "weight part (W)",
                           " of micro-batch ", m, " of direction ",
                           std::string(1, DirectionLetter(static_cast<Direction>(d))), " (stage ",
                           dir.stage, ")"));
        }
      }
    }
    rs.timeline.finish = rs.time;
    result.makespan = std::max(result.makespan, rs.time);
    result.ranks.push_back(std::move(rs.timeline));
  }
  for (RankTimeline& t : result.ranks) t.idle = result.makespan - t.busy;
  return result;
}

std::string Num(double x) { return absl::StrFormat("%g", x); }

}  // namespace

double SimResult::MaxIdle() const {
  double m = 0;
  for (const RankTimeline& t : ranks) m = std::max(m, t.idle);
  return m;
}

int SimResult::MaxPeakActivations() const {
  int m = 0;
  for (const RankTimeline& t : ranks) m = std::max(m, t.peak_activations);
  return m;
}

absl::StatusOr<SimResult> Simulate(const Schedule& schedule, const SimOptions& options) {
  Simulator sim(schedule, options);
  return sim.Run();
}

std::string FormatTimeline(const Schedule& schedule, const SimResult& result) {
  std::string out;
  bool same_busy = true;
  std::vector<std::string> busy, idle, peak;
  for (int r = 0; r < static_cast<int>(result.ranks.size()); ++r) {
    const RankTimeline& t = result.ranks[r];
    absl::StrAppend(&out, "rank ", r);
    for (const OpTiming& o : t.ops) {
      const Op& op = schedule.ops[r][o.op];
      if (op.is_compute()) absl::StrAppend(&out, " ", FormatOp(op), "@", Num(o.start));
    }
    out += '\n';
    same_busy = same_busy && t.busy == result.ranks[0].busy;
    busy.push_back(Num(t.busy));
    idle.push_back(Num(t.idle));
    peak.push_back(absl::StrCat(t.peak_activations));
  }
  if (same_busy && !result.ranks.empty()) {
    absl::StrAppend(&out, "makespan ", Num(result.makespan), "; busy ", busy[0], " per rank; idle ",
                    idle[0], "\n");
  } else {
    absl::StrAppend(&out, "makespan ", Num(result.makespan), "; busy ", absl::StrJoin(busy, " "),
                    "; idle ", absl::StrJoin(idle, " "), "\n");
  }
  absl::StrAppend(&out, "peak activations ", absl::StrJoin(peak, " "), "\n");
  return out;
}

}  // namespace dsv3::parallel
