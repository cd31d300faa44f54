// OpEmitter (schedule_emitter.h): the queue-then-commit bookkeeping shared by the schedule
// builders. Emits data only; it checks its own invariants and aborts on a builder bug.
#include "engine/parallel/schedule_emitter.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

namespace dsv3::parallel {
namespace {

[[noreturn]] void Die(const char* what, int rank) {
  std::fprintf(stderr, "OpEmitter (rank %d): %s\n", rank, what);
  std::abort();
}

}  // namespace

OpEmitter::OpEmitter(const PipelineLayout& layout, int rank) : rank_(rank) {
  for (const Route& route : layout.routes) {
    for (int h = 0; h < static_cast<int>(route.hops.size()); ++h) {
      const Hop& hop = route.hops[h];
      if (hop.rank != rank) continue;
      Neighbours& n = neighbours_[Index(hop.direction)];
      n.stage = hop.stage;
      if (h > 0 && route.hops[h - 1].rank != rank) n.upstream = route.hops[h - 1].rank;
      if (h + 1 < static_cast<int>(route.hops.size()) && route.hops[h + 1].rank != rank) {
        n.downstream = route.hops[h + 1].rank;
      }
    }
  }
}

const OpEmitter::Neighbours& OpEmitter::At(Direction d) const {
  const Neighbours& n = neighbours_[Index(d)];
  if (n.stage < 0) Die("asked to run a direction this rank holds no stage of", rank_);
  return n;
}

Chunk OpEmitter::NextChunk(std::array<int, 2>& counter, Direction d) {
  return Chunk{d, counter[Index(d)]++, At(d).stage};
}

void OpEmitter::Queue(bool send, Payload payload, Direction d, std::array<int, 2>& counter,
                      int peer) {
  if (peer < 0) return;
  queued_.push_back(P2P{send, payload, d, counter[Index(d)]++, peer});
}

void OpEmitter::RecvForward(Direction d) {
  Queue(false, Payload::kActivation, d, recv_forward_, At(d).upstream);
}
void OpEmitter::SendForward(Direction d) {
  Queue(true, Payload::kActivation, d, send_forward_, At(d).downstream);
}
void OpEmitter::RecvBackward(Direction d) {
  Queue(false, Payload::kGradient, d, recv_backward_, At(d).downstream);
}
void OpEmitter::SendBackward(Direction d) {
  Queue(true, Payload::kGradient, d, send_backward_, At(d).upstream);
}

void OpEmitter::Commit() {
  if (queued_.empty()) return;
  ops_.push_back(Op::CommBatch(std::move(queued_), step_));
  queued_.clear();
}

void OpEmitter::Forward(Direction d) {
  ops_.push_back(Op::Forward(NextChunk(forwarded_, d), step_));
}

void OpEmitter::Backward(Direction d, bool defer_weights) {
  const Chunk c = NextChunk(backwarded_, d);
  if (defer_weights) {
    deferred_.push_back(c);
    ops_.push_back(Op::BackwardInput(c, step_));
  } else {
    ops_.push_back(Op::Backward(c, step_));
  }
}

void OpEmitter::ForwardBackward(Direction forward, Direction backward) {
  const Chunk f = NextChunk(forwarded_, forward);
  const Chunk b = NextChunk(backwarded_, backward);
  ops_.push_back(Op::ForwardBackward(f, b, step_));
}

void OpEmitter::Weight() {
  if (deferred_.empty()) Die("W with no deferred weight part", rank_);
  ops_.push_back(Op::Weight(deferred_.front(), step_));
  deferred_.pop_front();
}

void OpEmitter::ForwardChunk(Direction d, bool recv, bool send) {
  if (recv) RecvForward(d);
  Commit();
  Forward(d);
  if (send) SendForward(d);
}

void OpEmitter::BackwardChunk(Direction d, bool defer_weights, bool recv, bool send) {
  if (recv) RecvBackward(d);
  Commit();
  Backward(d, defer_weights);
  if (send) SendBackward(d);
}

void OpEmitter::ForwardBackwardChunk(Direction forward, Direction backward, bool recv_forward) {
  if (recv_forward) RecvForward(forward);
  RecvBackward(backward);
  Commit();
  ForwardBackward(forward, backward);
  SendForward(forward);
  SendBackward(backward);
}

void OpEmitter::WeightChunk() {
  Commit();
  Weight();
}

std::vector<Op> OpEmitter::Finish() {
  Commit();
  if (!deferred_.empty()) Die("deferred weight parts left at the end", rank_);
  return std::move(ops_);
}

}  // namespace dsv3::parallel
