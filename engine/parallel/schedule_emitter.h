// OpEmitter: writes one rank's op list the way DualPipe's reference step() drives its runtime:
// sends and receives are queued and go out as one comm batch at the next commit point, and every
// compute op takes the next micro-batch of its direction. Shared by the builders (dualpipe.cc,
// dualpipev.cc, one_f_one_b.cc); it knows the layout but no schedule's control flow.
#ifndef DSV3_ENGINE_PARALLEL_SCHEDULE_EMITTER_H_
#define DSV3_ENGINE_PARALLEL_SCHEDULE_EMITTER_H_

#include <array>
#include <deque>
#include <vector>

#include "engine/parallel/schedule.h"

namespace dsv3::parallel {

class OpEmitter {
 public:
  // `layout` must outlive the emitter; `rank` must hold a stage of every direction it is asked to
  // run (a broken builder aborts with a message).
  OpEmitter(const PipelineLayout& layout, int rank);

  // Tags every op emitted from now on (Op::step).
  void set_step(int step) { step_ = step; }

  // Queue a P2P element; nothing is issued until Commit. Each is a no-op where the neighbouring
  // hop of the route is absent (first/last stage) or on this same rank (a local hand-over).
  void RecvForward(Direction d);   // the next forward input of d, from the upstream rank
  void SendForward(Direction d);   // the next forward output of d not yet sent, downstream
  void RecvBackward(Direction d);  // the next output gradient of d, from the downstream rank
  void SendBackward(Direction d);  // the next input gradient of d not yet sent, upstream

  // Emits the queued elements as one comm batch (nothing when the queue is empty).
  void Commit();

  // Compute ops; each takes the next micro-batch of its direction.
  void Forward(Direction d);
  // A full backward, or with `defer_weights` an input-only one whose weight part joins the FIFO.
  void Backward(Direction d, bool defer_weights);
  void ForwardBackward(Direction forward, Direction backward);
  // Pops the oldest deferred weight part (aborts if there is none).
  void Weight();

  // The reference runtime's chunk helpers: optional receive, commit, compute, optional send.
  void ForwardChunk(Direction d, bool recv = true, bool send = true);
  void BackwardChunk(Direction d, bool defer_weights = false, bool recv = true, bool send = true);
  void ForwardBackwardChunk(Direction forward, Direction backward, bool recv_forward = true);
  void WeightChunk();

  // Commits what is still queued and returns the op list. Aborts if deferred weight parts remain.
  std::vector<Op> Finish();

 private:
  struct Neighbours {
    int stage = -1;       // the stage this rank runs in the direction, -1 if none
    int upstream = -1;    // rank of the previous hop if remote, else -1
    int downstream = -1;  // rank of the next hop if remote, else -1
  };
  const Neighbours& At(Direction d) const;
  Chunk NextChunk(std::array<int, 2>& counter, Direction d);
  void Queue(bool send, Payload payload, Direction d, std::array<int, 2>& counter, int peer);

  int rank_;
  int step_ = 0;
  std::array<Neighbours, 2> neighbours_;
  std::array<int, 2> forwarded_{};      // forward chunks computed, per direction
  std::array<int, 2> backwarded_{};     // backward chunks computed, per direction
  std::array<int, 2> recv_forward_{};   // forward inputs received, per direction
  std::array<int, 2> send_forward_{};   // forward outputs sent, per direction
  std::array<int, 2> recv_backward_{};  // output gradients received, per direction
  std::array<int, 2> send_backward_{};  // input gradients sent, per direction
  std::vector<P2P> queued_;
  std::deque<Chunk> deferred_;  // input-only backwards whose weight part is still to run
  std::vector<Op> ops_;
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_SCHEDULE_EMITTER_H_
