// Coordinator: the coordinator's logic with no gRPC in it. It owns the job store, the worker
// membership, the rendezvous key-value store and the scheduler; the gRPC services (services.h) only
// convert and forward. Everything is guarded by one mutex; Tick() moves time-driven state (lease
// expiry, placement, accounting, persistence) and runs on a background thread after Start(), or is
// called directly by tests with a ManualClock. The ranks' reports (RankReport) drive a running
// job's progress, its committed tokens and its end: see HandleWorkerMessage.
#ifndef DSV3_COORDINATOR_COORDINATOR_H_
#define DSV3_COORDINATOR_COORDINATOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "coordinator/clock.h"
#include "coordinator/job_store.h"
#include "coordinator/kv_store.h"
#include "coordinator/membership.h"
#include "dsv3/v1/job_service.pb.h"
#include "dsv3/v1/store_service.pb.h"
#include "dsv3/v1/worker_service.pb.h"

namespace dsv3::coordinator {

// Where the coordinator sends messages for one worker's session. Implemented by the Session RPC
// handler (a queue drained by its writer). Send never blocks on the network.
class SessionSink {
 public:
  virtual ~SessionSink() = default;
  virtual void Send(const v1::CoordinatorMessage& message) = 0;
  // Ends the session with `status` (e.g. the lease expired); the worker will re-attach.
  virtual void Close(const absl::Status& status) = 0;
};

struct CoordinatorOptions {
  std::string state_dir;
  absl::Duration lease = absl::Seconds(3);
  absl::Duration tick = absl::Milliseconds(100);
  // A RECOVERING job with fewer than min_workers for this long fails.
  absl::Duration recovery_timeout = absl::Minutes(10);
  // After a restart, how long a running job's workers have to re-attach (at least 3 leases; the
  // workers retry with a backoff capped at 5 s).
  absl::Duration restart_grace = absl::Seconds(10);
  // Accounting-only changes are written at most this often (state changes are written at once).
  absl::Duration persist_interval = absl::Seconds(2);
  Clock* clock = nullptr;  // not owned; nullptr = the real clock
};

class Coordinator {
 public:
  // Opens (or creates) the state in options.state_dir and restores every job. Errors: those of
  // JobStore::Open; FAILED_PRECONDITION when another coordinator already uses the directory.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(const CoordinatorOptions& options);
  ~Coordinator();

  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Starts / stops the background Tick() thread. Stop() also closes every session.
  void Start();
  void Stop();
  // One scheduling round at the clock's current time: leases, accounting, placement of PENDING and
  // RECOVERING jobs, then pending grows. A RUNNING job has a pending grow when re-planning it on
  // its workers plus the idle live ones would give it more ranks (PlanLayout, so never more than
  // max_workers) and it will commit a checkpoint before its last step; event "grow_pending" (once
  // per target world size) and a note in its running message. The idle workers are not reserved:
  // another job may take them first, and the grow is decided again at the checkpoint.
  void Tick();

  const std::string& coordinator_id() const { return coordinator_id_; }

  // --- JobService --------------------------------------------------------------------------------
  // INVALID_ARGUMENT for a bad spec (the message names the field and the rule).
  absl::StatusOr<std::string> SubmitJob(const std::string& spec_json, const std::string& base_dir);
  // NOT_FOUND for an unknown id.
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& job_id, int max_events);
  std::vector<v1::JobStatus> ListJobs();
  // FAILED_PRECONDITION when the job has already ended; NOT_FOUND for an unknown id.
  absl::StatusOr<v1::JobStatus> CancelJob(const std::string& job_id);
  // Waits until the job changes after `*version` (0 = return at once) or `timeout` passes, then
  // returns its status and updates `*version`. NOT_FOUND for an unknown id.
  absl::StatusOr<v1::JobStatus> WaitForJobChange(const std::string& job_id, int64_t* version,
                                                 absl::Duration timeout);
  // INVALID_ARGUMENT for a bad model/parallel section or bad figures.
  absl::StatusOr<v1::EstimateCostResponse> EstimateCost(const v1::EstimateCostRequest& request);
  std::vector<v1::WorkerInfo> ListWorkers();

  // --- WorkerService -----------------------------------------------------------------------------
  // INVALID_ARGUMENT for a bad name or device.
  absl::StatusOr<v1::AttachResponse> Attach(const v1::AttachRequest& request,
                                            const std::string& peer);
  // Binds a session to an attached worker and sends it what it is owed (its assignment, stops).
  // NOT_FOUND when the worker id is unknown or dead (the worker must attach again).
  absl::Status OpenSession(const std::string& worker_id, SessionSink* sink);
  // Unbinds the sink (if it is still the worker's). The lease keeps running.
  void CloseSession(const std::string& worker_id, SessionSink* sink);
  // A message on a worker's session: a heartbeat, an assignment's acknowledgement, or a rank's
  // report. A heartbeat updates its ranks' states but never ends a rank (DONE, LOST): only the
  // rank's exit report does, since that decides the job's fate. Reports are fenced: one for an
  // unknown job, a job that is not RUNNING, another epoch, or a rank this worker does not hold is
  // logged and ignored. Of a current one:
  //  - "step": the rank is TRAINING (detail "step S/T"); rank 0's reports carry the job's figures:
  //    JobStatus.step, total_steps, last_loss (= the main loss, without MTP and balance terms),
  //    progress (loss terms, lr, grad norm, tokens/s, load balance, ETA at the mean step time of
  //    the last kRateWindowSteps steps) and accounting.tokens_per_second (the same recent rate,
  //    global_batch_tokens per mean step time) and mfu. Persisted at the accounting interval.
  //  - "validation" (rank 0): progress.val_* (val_loss is the main loss).
  //  - "checkpoint" (any rank, a step newer than the last committed one): the rank acknowledges
  //    that its shard of the step is written and the checkpoint is durable. When every rank of
  //    the epoch has acknowledged the step, it is committed: last_checkpoint_step,
  //    accounting.tokens = step x global_batch_tokens, uncommitted device-hours become productive,
  //    event "checkpoint" ("acknowledged by all N ranks"). Persisted at once. Acknowledgements are
  //    kept per epoch in memory only (a step half-acknowledged before a coordinator restart is
  //    not committed; the next one is). Assignments carry the committed step as resume_step, so
  //    the ranks of a new epoch resume from exactly that checkpoint. When the job has a pending
  //    grow (see Tick) and the step is not its last, the job then grows at once (an elastic
  //    attach, not a failure): the current ranks are stopped and the job is re-planned on its
  //    workers plus the idle ones, with a new epoch whose assignments resume from this checkpoint
  //    (event "grew"; no failure is counted).
  //  - "exit": code 0 marks the rank DONE; when every rank is DONE the job SUCCEEDED (all its
  //    steps count as committed) and its workers go idle. Code 2 (bad input: retrying cannot help)
  //    fails the job. Any other code stops the other ranks and recovers from the last committed
  //    checkpoint on the same workers (the failed rank's worker is alive and stays a candidate);
  //    the kMaxFailuresWithoutCheckpoint-th such failure without a newer checkpoint fails the job.
  //  - "hung" (the worker saw no progress for its hang timeout outside a wait for a peer): the
  //    rank is HUNG (detail: the rank, its step and where it is stuck), event "rank_hung" naming
  //    the rank, its worker and the position, and the job recovers like after a failed rank
  //    (counted alike for the crash loop), except that the hung rank is stopped too and the
  //    re-plan leaves its worker out when the job can be placed without it.
  // NOT_FOUND when the worker is unknown or dead (its session must end); INVALID_ARGUMENT for an
  // empty message.
  absl::Status HandleWorkerMessage(const std::string& worker_id, const v1::WorkerMessage& message);
  // NOT_FOUND for an unknown worker.
  absl::Status Detach(const std::string& worker_id);

  // --- StoreService ------------------------------------------------------------------------------
  // FAILED_PRECONDITION unless the job is running at exactly this epoch (fencing).
  absl::Status CheckStoreScope(const v1::StoreScope& scope);
  KvStore& kv_store() { return kv_; }

  // Step times averaged for the recent rate (tokens/s, MFU, ETA).
  static constexpr int kRateWindowSteps = 20;
  // A crash loop: when this many rank processes in a row have failed (a non-zero exit other than
  // bad input) without the job committing a newer checkpoint in between, the job FAILS instead of
  // recovering again (with 3: the first two failures recover, the third fails the job).
  static constexpr int kMaxFailuresWithoutCheckpoint = 3;

 private:
  struct Job {
    v1::JobStatus status;  // events are kept in the store, not here
    int64_t version = 1;
    bool dirty = false;           // state change not yet persisted
    bool accounting_dirty = false;  // figures (accounting, progress) not yet persisted
    absl::Time last_persist;
    absl::Time last_accrual;
    absl::Time waiting_since;      // RECOVERING/PENDING below min_workers since
    absl::Time rebind_deadline;    // after a restart: ranks must re-attach before this
    // After a restart: the time the persisted accounting ran to. A worker that re-attaches is
    // charged from here for the outage (its rank kept training). InfinitePast = nothing to charge.
    absl::Time outage_from = absl::InfinitePast();
    std::string recovery_reason;   // why the job is RECOVERING
    std::vector<v1::JobEvent> pending_events;
    // Epoch of rank 0's last step report; 0 = no step reported since placement (or a restart).
    int64_t reported_epoch = 0;
    std::vector<double> step_seconds;  // wall time of rank 0's recent steps, oldest first
    // Rank processes that failed since the last committed checkpoint advanced (not kept across a
    // coordinator restart).
    int failures_without_checkpoint = 0;
    // The world size announced by the last "grow_pending" event; 0 = no grow pending.
    int64_t grow_world = 0;
    // Checkpoint steps of the current epoch not committed yet -> the ranks that acknowledged them.
    std::map<int64_t, std::set<int64_t>> checkpoint_acks;
    // Names of the workers on which a rank of this job hung: placements and grows leave them
    // out while the job can do without them (not kept across a coordinator restart).
    std::set<std::string> hung_workers;
  };

  Coordinator(const CoordinatorOptions& options, std::unique_ptr<JobStore> store);

  absl::Status Restore() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunTicks();

  Job* FindJob(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddEvent(Job& job, const std::string& kind, const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetState(Job& job, v1::JobState state, const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Touch(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Persist(Job& job, bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistWorker(const WorkerRecord& worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void ScheduleJobs(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool TryPlace(Job& job, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts the job on `placement` (a new epoch) and sends the assignments: the job's workers left out
  // go idle, state RUNNING, event `event_kind` describing the layout followed by `event_suffix`.
  void ApplyPlacement(Job& job, const v1::Placement& placement, absl::Time now,
                      const std::string& event_kind, const std::string& event_suffix)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The world size a RUNNING job would get re-planned now on its workers plus the idle live ones,
  // when that is more than it has; 0 otherwise, or when it cannot grow now (a rank has ended, or
  // its workers have not all re-attached after a restart). `idle_names` (optional) receives the
  // names of the idle workers counted.
  int64_t GrowWorld(const Job& job, std::vector<std::string>* idle_names)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records or clears each RUNNING job's pending grow (see Tick).
  void UpdatePendingGrows() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // At the commit of the checkpoint of `step` (every rank acknowledged it): grows the job (stop, re-plan on a new epoch that
  // resumes from `step`) when GrowWorld says it can and `step` is not its last. True if it grew.
  bool MaybeGrow(Job& job, int64_t step, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendAssignment(const Job& job, const v1::RankPlacement& rank)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `discard`: the job recovers from its last committed checkpoint, so the rank is killed at once
  // (StopCommand.discard).
  void SendStop(const std::string& worker_id, const std::string& job_id, int64_t epoch,
                const std::string& reason, bool discard = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A worker serving a job is gone: the job recovers (or, if it was not placed, nothing happens).
  void HandleWorkerLost(const std::string& worker_id, const std::string& reason, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A RankReport from `worker` (see HandleWorkerMessage); fenced here.
  void HandleRankReport(const WorkerRecord& worker, const v1::RankReport& report, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rank 0's "step" report: the job's step, loss, progress and rate.
  void ApplyStepFigures(Job& job, const v1::RankReport& report, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The "exit" report of `rank` (held by `worker`): done, failed or recovering (see above).
  void HandleRankExit(Job& job, v1::RankPlacement& rank, const WorkerRecord& worker,
                      const v1::RankReport& report, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The "hung" report of `rank` (held by `worker`): HUNG, then recovering (see above).
  void HandleRankHung(Job& job, v1::RankPlacement& rank, const WorkerRecord& worker,
                      const v1::RankReport& report, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A rank failed in a way a retry may cure (`what`: which and how; `error`: the gist for the
  // job's message; `detail`: everything, for the event). The kMaxFailuresWithoutCheckpoint-th
  // failure without a newer checkpoint fails the job; otherwise the ranks still running are
  // stopped with `stop_reason` (the failed one too when `stop_failed_rank`: its process is alive),
  // every worker of the job stays reserved for the re-plan, and the job recovers (event
  // `event_kind`).
  void RecoverFromRankFailure(Job& job, const v1::RankPlacement& rank, const WorkerRecord& worker,
                              bool stop_failed_rank, const std::string& event_kind,
                              const std::string& stop_reason, const std::string& what,
                              const std::string& error, const std::string& detail, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The work of steps [0, step) is committed: tokens = step x global_batch_tokens and the
  // uncommitted device-hours become productive.
  void CommitSteps(Job& job, int64_t step) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RUNNING -> SUCCEEDED: every rank finished; all steps count as committed; workers go idle.
  void CompleteJob(Job& job, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // -> FAILED with `message` (event: `event_message`, or `message` when empty); workers go idle.
  void FailJob(Job& job, const std::string& message, const std::string& event_message,
               absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Releases every worker of the job (stop their ranks; they become idle).
  void ReleaseWorkers(Job& job, const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Accrue(Job& job, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds device-hours to the job's accounting (lost while it recovers, uncommitted otherwise) and
  // refreshes the figures derived from them.
  void Charge(Job& job, double hours) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateRunningMessage(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The device-hours not yet committed by a checkpoint become lost (their work is rolled back).
  void RollBackUncommitted(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RUNNING -> RECOVERING: the work since the last committed checkpoint is rolled back (lost) and
  // the job's step goes back to that checkpoint. Records an event of `event_kind` saying
  // `event_message` (`reason` when empty).
  void StartRecovery(Job& job, const std::string& event_kind, const std::string& reason,
                     const std::string& event_message, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::WorkerInfo ToWorkerInfo(const WorkerRecord& w) const;

  const CoordinatorOptions options_;
  RealClock real_clock_;
  Clock* const clock_;
  std::string coordinator_id_;
  KvStore kv_;

  absl::Mutex mu_;
  std::unique_ptr<JobStore> store_ ABSL_GUARDED_BY(mu_);
  Membership membership_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Job> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> job_order_ ABSL_GUARDED_BY(mu_);  // submission order
  std::map<std::string, SessionSink*> sessions_ ABSL_GUARDED_BY(mu_);
  // Stops owed to a worker whose session is not open yet.
  std::map<std::string, std::vector<v1::StopCommand>> pending_stops_ ABSL_GUARDED_BY(mu_);
  // Workers known from the store (before a restart) that have not re-attached, by name.
  std::map<std::string, v1::WorkerInfo> remembered_workers_ ABSL_GUARDED_BY(mu_);

  int lock_fd_ = -1;  // flock on <state_dir>/LOCK: one coordinator per state directory
  std::unique_ptr<std::thread> ticker_;
  absl::Notification stop_;
};

}  // namespace dsv3::coordinator

#endif  // DSV3_COORDINATOR_COORDINATOR_H_
