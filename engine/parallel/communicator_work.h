// WorkState and StateWork: the Work of an operation that some thread completes later (the CPU
// backends' queue thread), and CompletedWork for an operation that is over before it starts (a
// rejected argument, a broken communicator). No knowledge of any backend.
#ifndef DSV3_ENGINE_PARALLEL_COMMUNICATOR_WORK_H_
#define DSV3_ENGINE_PARALLEL_COMMUNICATOR_WORK_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/rank_position.h"
#include "engine/parallel/compute_token.h"
#include "engine/parallel/communicator.h"

namespace dsv3::parallel {

// The completion state shared by a Work and the queue thread.
class WorkState {
 public:
  void Complete(absl::Status status);
  absl::Status Wait(absl::Duration timeout);
  bool IsCompleted();
  // Waits without a bound; only for operations whose own waits are all bounded.
  void WaitUntilCompleted();

 private:
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// A Work that completes when its WorkState does; its destructor waits for completion.
class StateWork : public Work {
 public:
  explicit StateWork(std::shared_ptr<WorkState> state) : state_(std::move(state)) {}
  ~StateWork() override;
  absl::Status Wait(absl::Duration timeout) override {
    ScopedPeerWait waiting;  // for liveness reports (common/rank_position.h)
    if (state_->IsCompleted()) return state_->Wait(timeout);
    ScopedComputeYield yield;  // the other chunk of an overlapped F&B computes meanwhile
    return state_->Wait(timeout);
  }
  bool IsCompleted() override { return state_->IsCompleted(); }

 private:
  std::shared_ptr<WorkState> state_;
};

// A Work that is complete from the start.
std::unique_ptr<Work> CompletedWork(absl::Status status);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_COMMUNICATOR_WORK_H_
