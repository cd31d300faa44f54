// Where this process's training is, for liveness reports: the trainer, the pipeline executor and
// the communicators update it as they go; `dsv3-train run --progress=FILE` publishes it from a
// background thread, and the worker reads that file to tell a rank that is busy, one that waits
// for a peer inside a collective, and one that is stuck (hung) apart. Process-wide and lock-free.
#ifndef DSV3_COMMON_RANK_POSITION_H_
#define DSV3_COMMON_RANK_POSITION_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>

namespace dsv3 {

struct RankPosition {
  std::atomic<int64_t> step{0};          // optimizer steps complete
  std::atomic<int64_t> micro_batch{-1};  // micro-batch (or pipeline op) of the current step
  // Bumped at every unit of work done: a micro-batch, a pipeline op, a validation chunk, a
  // communicator wait that returned. A rank whose ticks stop moving while it is not waiting for a
  // peer is stuck.
  std::atomic<int64_t> ticks{0};
  std::atomic<int32_t> waiting{0};  // > 0 while a thread waits for a communicator operation
  // The last collective this process entered (issued): its sequence number in its group and the
  // group (an id of CollectiveGroupName; -1: none yet). Ranks of one group that disagree here are
  // at different collectives: the one behind is where to look.
  std::atomic<int64_t> collective_seq{-1};
  std::atomic<int32_t> collective_group{-1};
};

namespace rank_position_internal {
struct GroupNames {
  std::mutex mu;
  std::deque<std::string> names;  // never shrinks: ids stay valid for the process's life
};
inline GroupNames& Names() {
  static GroupNames names;
  return names;
}
}  // namespace rank_position_internal

// A small id for a communicator group's name (the same name, the same id).
inline int32_t CollectiveGroupId(const std::string& name) {
  rank_position_internal::GroupNames& g = rank_position_internal::Names();
  std::lock_guard<std::mutex> lock(g.mu);
  for (size_t i = 0; i < g.names.size(); ++i) {
    if (g.names[i] == name) return static_cast<int32_t>(i);
  }
  g.names.push_back(name);
  return static_cast<int32_t>(g.names.size() - 1);
}

// The name of a CollectiveGroupId ("" for -1 or an unknown id).
inline std::string CollectiveGroupName(int32_t id) {
  rank_position_internal::GroupNames& g = rank_position_internal::Names();
  std::lock_guard<std::mutex> lock(g.mu);
  return id >= 0 && static_cast<size_t>(id) < g.names.size() ? g.names[id] : std::string();
}

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
