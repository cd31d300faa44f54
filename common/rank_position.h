// Where this process's training is, for liveness reports: the trainer, the pipeline executor and
// the communicators update it as they go; `dsv3-train run --progress=FILE` publishes it from a
// background thread, and the worker reads that file to tell a rank that is busy, one that waits
// for a peer inside a collective, and one that is stuck (hung) apart. Process-wide and lock-free.
#ifndef DSV3_COMMON_RANK_POSITION_H_
#define DSV3_COMMON_RANK_POSITION_H_

#include <atomic>
#include <cstdint>

namespace dsv3 {

struct RankPosition {
  std::atomic<int64_t> step{0};          // optimizer steps complete
  std::atomic<int64_t> micro_batch{-1};  // micro-batch (or pipeline op) of the current step
  // Bumped at every unit of work done: a micro-batch, a pipeline op, a validation chunk, a
  // communicator wait that returned. A rank whose ticks stop moving while it is not waiting for a
  // peer is stuck.
  std::atomic<int64_t> ticks{0};
  std::atomic<int32_t> waiting{0};  // > 0 while a thread waits for a communicator operation
};

// The process's position (a function-local static).
inline RankPosition& GlobalRankPosition() {
  static RankPosition position;
  return position;
}

// Marks the calling thread as waiting for a peer for its lifetime; counts a tick at the end.
class ScopedPeerWait {
 public:
  ScopedPeerWait() { GlobalRankPosition().waiting.fetch_add(1, std::memory_order_relaxed); }
  ~ScopedPeerWait() {
    RankPosition& p = GlobalRankPosition();
    p.waiting.fetch_sub(1, std::memory_order_relaxed);
    p.ticks.fetch_add(1, std::memory_order_relaxed);
  }
  ScopedPeerWait(const ScopedPeerWait&) = delete;
  ScopedPeerWait& operator=(const ScopedPeerWait&) = delete;
};

}  // namespace dsv3

#endif  // DSV3_COMMON_RANK_POSITION_H_
