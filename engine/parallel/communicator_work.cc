// WorkState, StateWork and CompletedWork; see communicator_work.h.
#include "engine/parallel/communicator_work.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace dsv3::parallel {

void WorkState::Complete(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (done_) return;
  done_ = true;
  status_ = std::move(status);
}

absl::Status WorkState::Wait(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (!mu_.AwaitWithTimeout(absl::Condition(&done_), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("operation not completed within ", absl::FormatDuration(timeout)));
  }
  return status_;
}

bool WorkState::IsCompleted() {
  absl::MutexLock lock(&mu_);
  return done_;
}

void WorkState::WaitUntilCompleted() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done_));
}

StateWork::~StateWork() { state_->WaitUntilCompleted(); }

std::unique_ptr<Work> CompletedWork(absl::Status status) {
  auto state = std::make_shared<WorkState>();
  state->Complete(std::move(status));
  return std::make_unique<StateWork>(std::move(state));
}

}  // namespace dsv3::parallel
