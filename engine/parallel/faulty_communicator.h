// FaultyCommunicator: a test-only wrapper that makes one rank misbehave at its Nth operation, so
// tests can check how the other ranks fail: kHang (the op never starts and never completes, like a
// stuck process), kDie (the inner communicator is aborted, closing its connections like a killed
// process, and every op from then on fails). Never linked into production binaries; production
// code has no fault flags.
#ifndef DSV3_ENGINE_PARALLEL_FAULTY_COMMUNICATOR_H_
#define DSV3_ENGINE_PARALLEL_FAULTY_COMMUNICATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/parallel/communicator.h"

namespace dsv3::parallel {

struct FaultPlan {
  enum class Kind { kNone, kHang, kDie };
  Kind kind = Kind::kNone;
  // The 0-based index of the first faulty operation, counting every operation issued through the
  // wrapper (AllReduce ... Barrier; Split counts as one).
  int64_t at_op = 0;
};

class FaultyCommunicator : public Communicator {
 public:
  FaultyCommunicator(std::unique_ptr<Communicator> inner, FaultPlan plan);
  // Releases hung operations (they complete with CANCELLED) before destroying the inner one.
  ~FaultyCommunicator() override;

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  Backend backend() const override { return inner_->backend(); }
  const std::string& name() const override { return inner_->name(); }
  absl::Duration timeout() const override { return inner_->timeout(); }

  std::unique_ptr<Work> AllReduce(const void* send, void* recv, size_t count,
                                  DataType dtype) override;
  std::unique_ptr<Work> ReduceScatter(const void* send, void* recv, size_t recv_count,
                                      DataType dtype) override;
  std::unique_ptr<Work> AllGather(const void* send, void* recv, size_t send_count,
                                  DataType dtype) override;
  std::unique_ptr<Work> AllToAll(const void* send, absl::Span<const size_t> send_counts, void* recv,
                                 absl::Span<const size_t> recv_counts, DataType dtype) override;
  std::unique_ptr<Work> SendRecv(std::vector<PeerSend> sends, std::vector<PeerRecv> recvs) override;
  std::unique_ptr<Work> Barrier() override;
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;
  void Abort(const absl::Status& reason) override { inner_->Abort(reason); }

  // The number of operations issued through the wrapper so far.
  int64_t ops_issued();

 private:
  // Counts the op; returns a faulty Work when the plan says so, nullptr to pass the op through.
  std::unique_ptr<Work> MaybeFault();

  const std::unique_ptr<Communicator> inner_;
  const FaultPlan plan_;
  // Ends hung operations; shared with their Works, which may outlive the wrapper.
  const std::shared_ptr<absl::Notification> release_ = std::make_shared<absl::Notification>();
  absl::Mutex mu_;
  int64_t ops_ ABSL_GUARDED_BY(mu_) = 0;
  bool died_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_FAULTY_COMMUNICATOR_H_
