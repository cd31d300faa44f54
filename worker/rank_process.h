// RankProcess: one rank of a job, run by the worker as a supervised child process
//   dsv3-train run --spec=DIR/spec.json --threads=T --world_size=W --rank=R
//       --store=coordinator://ADDRESS/JOB_ID/EPOCH --metrics=DIR/metrics-{rank}.jsonl
//       --resume_step=S (the assignment's resume_step: the last committed checkpoint; 0 = the seed)
// so that a crashing rank cannot take the worker down. A monitor thread follows the metrics file
// and hands every line to the caller as a RankReport (step, validation, checkpoint), then one
// "exit" report with the exit code and the tail of the child's error output. It also reads the
// child's --progress file (common/rank_position.h): when the child's work counter has not moved
// for `hang_timeout` while it is not waiting for a peer, the rank is stuck and a "hung" report
// (once) says where. The files of a rank live in DIR: spec.json, metrics-<R>.jsonl,
// progress.json, stdout.log, stderr.log.
#ifndef DSV3_WORKER_RANK_PROCESS_H_
#define DSV3_WORKER_RANK_PROCESS_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "dsv3/v1/worker_service.pb.h"

namespace dsv3::worker {

struct RankProcessOptions {
  std::string train_binary;         // the dsv3-train executable
  std::string coordinator_address;  // HOST:PORT, for the child's rendezvous store
  std::string auth_token;           // passed as DSV3_AUTH_TOKEN; empty: none
  std::string dir;                  // this rank's directory (created)
  int threads = 1;                  // kernel threads of the child
  absl::Duration poll = absl::Milliseconds(100);  // how often the metrics file is read
  // No progress for this long outside a wait for a peer is a hang. Bounded below by the child's
  // progress publishing period (200 ms) in practice; 5 s keeps a report within 10 s.
  absl::Duration hang_timeout = absl::Seconds(5);
};

// The child's last published position (dsv3-train run --progress).
struct RankPositionSnapshot {
  int64_t step = 0;
  int64_t micro_batch = -1;
  int64_t ticks = -1;
  int64_t waiting = 0;
  int64_t collective_seq = -1;   // the last collective entered (-1: none yet) ...
  std::string collective_group;  // ... and its communicator group
  absl::Duration stalled;  // how long ticks have not moved
};

// ", last collective #C of group G" for a snapshot that has one, else "".
std::string CollectiveText(const RankPositionSnapshot& p);

class RankProcess {
 public:
  using ReportFn = std::function<void(const v1::RankReport&)>;

  // Writes the assignment's spec to DIR/spec.json and starts the child; `on_report` is called from
  // the monitor thread for every report, the "exit" report last. Errors: INTERNAL naming what
  // failed (the directory, the spec, the spawn).
  static absl::StatusOr<std::unique_ptr<RankProcess>> Start(const v1::Assignment& assignment,
                                                            const RankProcessOptions& options,
                                                            ReportFn on_report);
  // Stop(absl::Seconds(3)).
  ~RankProcess();

  // Ends the child: SIGTERM, then SIGKILL after `grace` (at once for a zero grace); waits for the
  // monitor thread. No "exit" report is made for a process stopped this way. Safe to call more
  // than once.
  void Stop(absl::Duration grace);

  pid_t pid() const { return pid_; }
  // The latest position read from the progress file (zeros before the first).
  RankPositionSnapshot position() const;
  bool exited() const { return exited_.load(); }
  const v1::Assignment& assignment() const { return assignment_; }

 private:
  RankProcess(v1::Assignment assignment, RankProcessOptions options, ReportFn on_report)
      : assignment_(std::move(assignment)),
        options_(std::move(options)),
        on_report_(std::move(on_report)) {}
  void Monitor();
  // Reads new complete lines of the metrics file and reports them.
  void ReadMetrics();
  // Reads the progress file; reports a hang once.
  void ReadProgress();

  const v1::Assignment assignment_;
  const RankProcessOptions options_;
  const ReportFn on_report_;
  std::string metrics_path_;
  std::string progress_path_;
  mutable absl::Mutex position_mu_;
  RankPositionSnapshot position_ ABSL_GUARDED_BY(position_mu_);
  absl::Time last_tick_change_ = absl::InfinitePast();
  bool hang_reported_ = false;
  std::string stderr_path_;
  int64_t metrics_offset_ = 0;
  std::string partial_line_;
  pid_t pid_ = -1;
  std::atomic<bool> exited_{false};
  std::atomic<bool> stopping_{false};
  absl::Notification stop_;
  std::thread monitor_;
};

}  // namespace dsv3::worker

#endif  // DSV3_WORKER_RANK_PROCESS_H_
