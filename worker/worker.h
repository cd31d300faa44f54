// Worker: the worker daemon's logic. It attaches to the coordinator, keeps one session stream open
// with heartbeats every lease/3, acknowledges the assignments it receives, and re-attaches under the
// same name with backoff whenever the session breaks (a coordinator restart, a network cut).
// This build has no training engine yet: an assignment is accepted and reported plainly as
// WAITING_FOR_ENGINE; no step is ever faked.
#ifndef DSV3_WORKER_WORKER_H_
#define DSV3_WORKER_WORKER_H_

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "dsv3/v1/worker_service.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"

namespace dsv3::worker {

struct WorkerOptions {
  std::string name;    // unique among live workers
  std::string node;    // machine grouping; defaults to the host name
  std::string device = "cpu";
  std::string work_dir = ".";
  std::string auth_token;  // empty: none
  absl::Duration min_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
};

class Worker {
 public:
  Worker(std::shared_ptr<grpc::Channel> channel, WorkerOptions options);

  // Runs until Shutdown(): attach, session, reconnect. Returns OK after a clean shutdown.
  absl::Status Run();
  // Thread-safe: ends Run() (detaching from the coordinator). Safe to call more than once.
  void Shutdown();

  // For tests and logs: the id of the current attachment ("" when not attached).
  std::string worker_id() const;
  // The number of successful attaches so far.
  int attach_count() const;

 private:
  struct HeldRank {
    v1::Assignment assignment;
    v1::RankState state = v1::ASSIGNED;
    std::string detail;
  };

  void PrepareContext(grpc::ClientContext* context, absl::Duration deadline) const;
  absl::Status AttachOnce();
  // Runs one session until it breaks or Shutdown(). Returns the stream's final status.
  absl::Status RunSession();
  void HandleAssignment(const v1::Assignment& assignment, v1::WorkerMessage* ack);
  void HandleStop(const v1::StopCommand& stop);
  v1::WorkerMessage MakeHeartbeat();
  // Sleeps up to `d`, returning early on Shutdown(). True if shutting down.
  bool SleepOrShutdown(absl::Duration d);

  const WorkerOptions options_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  absl::Notification shutdown_;

  mutable absl::Mutex mu_;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);
  int64_t lease_ms_ ABSL_GUARDED_BY(mu_) = 3000;
  int attach_count_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, HeldRank> ranks_ ABSL_GUARDED_BY(mu_);  // by job id
  grpc::ClientContext* session_context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace dsv3::worker

#endif  // DSV3_WORKER_WORKER_H_
