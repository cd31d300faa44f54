// Worker: the worker daemon's logic. It attaches to the coordinator, keeps one session stream open
// with heartbeats every lease/3, and re-attaches under the same name with backoff whenever the
// session breaks (a coordinator restart, a network cut). Each assignment runs as a supervised
// child process (rank_process.h); the child's progress (steps, validations, checkpoints, its exit)
// goes to the coordinator as RankReports, queued while the session is down and sent, in order,
// once it is back. A stop command or a newer assignment ends the child.
#ifndef DSV3_WORKER_WORKER_H_
#define DSV3_WORKER_WORKER_H_

#include <deque>
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
#include "worker/rank_process.h"

namespace dsv3::worker {

struct WorkerOptions {
  std::string name;    // unique among live workers
  std::string node;    // machine grouping; defaults to the host name
  std::string device = "cpu";
  std::string work_dir = ".";
  std::string auth_token;  // empty: none
  // How ranks run: the dsv3-train executable, the coordinator's address for the child's
  // rendezvous store, and the child's kernel threads.
  std::string train_binary;
  std::string coordinator_address;
  int threads = 1;
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
    int64_t step = 0;
    std::unique_ptr<RankProcess> process;
  };

  void PrepareContext(grpc::ClientContext* context, absl::Duration deadline) const;
  absl::Status AttachOnce();
  // Runs one session until it breaks or Shutdown(). Returns the stream's final status.
  absl::Status RunSession();
  void HandleAssignment(const v1::Assignment& assignment, v1::WorkerMessage* ack);
  void HandleStop(const v1::StopCommand& stop);
  // From a rank process's monitor thread: updates the held rank and queues the report.
  void OnReport(const v1::RankReport& report);
  // Stops every rank process (outside mu_: a monitor thread may be waiting for it).
  void StopAllRanks(const std::string& why);
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
  // Reports not yet written to a session, oldest first (kept across sessions; bounded).
  std::deque<v1::WorkerMessage> outbox_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* session_context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace dsv3::worker

#endif  // DSV3_WORKER_WORKER_H_
