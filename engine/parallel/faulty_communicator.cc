// FaultyCommunicator; see faulty_communicator.h.
#include "engine/parallel/faulty_communicator.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace dsv3::parallel {
namespace {

// A Work that completes only when `release` is notified (the wrapper's destruction).
class HungWork : public Work {
 public:
  explicit HungWork(std::shared_ptr<absl::Notification> release) : release_(std::move(release)) {}
  absl::Status Wait(absl::Duration timeout) override {
    if (release_->WaitForNotificationWithTimeout(timeout)) {
      return absl::CancelledError("injected hang released");
    }
    return absl::DeadlineExceededError(
        absl::StrCat("injected hang: not completed within ", absl::FormatDuration(timeout)));
  }
  bool IsCompleted() override { return release_->HasBeenNotified(); }

 private:
  const std::shared_ptr<absl::Notification> release_;
};

class DoneWork : public Work {
 public:
  explicit DoneWork(absl::Status status) : status_(std::move(status)) {}
  absl::Status Wait(absl::Duration) override { return status_; }
  bool IsCompleted() override { return true; }

 private:
  const absl::Status status_;
};

}  // namespace

FaultyCommunicator::FaultyCommunicator(std::unique_ptr<Communicator> inner, FaultPlan plan)
    : inner_(std::move(inner)), plan_(plan) {}

FaultyCommunicator::~FaultyCommunicator() { release_->Notify(); }

int64_t FaultyCommunicator::ops_issued() {
  absl::MutexLock lock(&mu_);
  return ops_;
}

std::unique_ptr<Work> FaultyCommunicator::MaybeFault() {
  absl::MutexLock lock(&mu_);
  const int64_t index = ops_++;
  if (plan_.kind == FaultPlan::Kind::kNone || index < plan_.at_op) return nullptr;
  const std::string what =
      absl::StrCat("group '", inner_->name(), "' rank ", inner_->rank(), ": op ", index);
  if (plan_.kind == FaultPlan::Kind::kHang) return std::make_unique<HungWork>(release_);
  if (!died_) {
    died_ = true;
    inner_->Abort(absl::UnavailableError(absl::StrCat(what, ": injected death")));
  }
  return std::make_unique<DoneWork>(
      absl::UnavailableError(absl::StrCat(what, ": this rank is dead (injected)")));
}

std::unique_ptr<Work> FaultyCommunicator::AllReduce(const void* send, void* recv, size_t count,
                                                    DataType dtype) {
  if (auto w = MaybeFault()) return w;
  return inner_->AllReduce(send, recv, count, dtype);
}

std::unique_ptr<Work> FaultyCommunicator::ReduceScatter(const void* send, void* recv,
                                                        size_t recv_count, DataType dtype) {
  if (auto w = MaybeFault()) return w;
  return inner_->ReduceScatter(send, recv, recv_count, dtype);
}

std::unique_ptr<Work> FaultyCommunicator::AllGather(const void* send, void* recv, size_t send_count,
                                                    DataType dtype) {
  if (auto w = MaybeFault()) return w;
  return inner_->AllGather(send, recv, send_count, dtype);
}

std::unique_ptr<Work> FaultyCommunicator::AllToAll(const void* send,
                                                   absl::Span<const size_t> send_counts, void* recv,
                                                   absl::Span<const size_t> recv_counts,
                                                   DataType dtype) {
  if (auto w = MaybeFault()) return w;
  return inner_->AllToAll(send, send_counts, recv, recv_counts, dtype);
}

std::unique_ptr<Work> FaultyCommunicator::SendRecv(std::vector<PeerSend> sends,
                                                   std::vector<PeerRecv> recvs) {
  if (auto w = MaybeFault()) return w;
  return inner_->SendRecv(std::move(sends), std::move(recvs));
}

std::unique_ptr<Work> FaultyCommunicator::Barrier() {
  if (auto w = MaybeFault()) return w;
  return inner_->Barrier();
}

absl::StatusOr<std::unique_ptr<Communicator>> FaultyCommunicator::Split(int color, int key) {
  if (auto w = MaybeFault()) {
    absl::Status s = w->Wait(inner_->timeout());
    return s.ok() ? absl::InternalError("faulty op completed") : s;
  }
  return inner_->Split(color, key);
}

}  // namespace dsv3::parallel
