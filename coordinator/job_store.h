// JobStore: the coordinator's durable state (jobs, their event history, workers) in one SQLite
// file, <state_dir>/state.db, so that every job comes back after a crash and restart. Each call is
// one transaction, committed to disk before it returns. It is not a cache and holds no jobs in
// memory: the Coordinator keeps the live state and writes every change through this store.
#ifndef DSV3_COORDINATOR_JOB_STORE_H_
#define DSV3_COORDINATOR_JOB_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "dsv3/v1/job.pb.h"
#include "dsv3/v1/job_service.pb.h"

struct sqlite3;

namespace dsv3::coordinator {

// Thread-safe: every method may be called from any thread (calls are serialised on one connection).
// Errors from SQLite carry the database path, the SQLite code and message, and the file:line that
// saw them; their canonical code is DATA_LOSS for a corrupt or non-SQLite file, UNAVAILABLE when
// the database stays locked by another process, RESOURCE_EXHAUSTED when the disk is full, and
// INTERNAL for other I/O failures.
class JobStore {
 public:
  // The schema this build writes and the newest it can read.
  static constexpr int kSchemaVersion = 1;

  // Opens (creating if needed) `state_dir` and `<state_dir>/state.db`, and the schema in it.
  // Errors: FAILED_PRECONDITION if the directory cannot be created or the file cannot be opened,
  // if state.db was written by a newer coordinator ("... has schema version N, this coordinator
  // understands up to 1"), or if it is an SQLite database of something else; DATA_LOSS if it is
  // not an SQLite database or is corrupt. Every message names the path.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& state_dir);

  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // A random id made when state.db was created and kept for its lifetime (16 hex digits).
  const std::string& coordinator_id() const { return coordinator_id_; }
  // The database file, "<state_dir>/state.db".
  const std::string& path() const { return path_; }

  // Assigns the next job id ("job-1", "job-2", ...; never reused, across restarts too), and writes
  // `job` under that id (its job_id replaced, its events dropped) together with `submitted_event`,
  // in one transaction. Returns the id. Errors: the SQLite ones above; nothing is written then,
  // and the id is not used up.
  absl::StatusOr<std::string> CreateJob(v1::JobStatus job, const v1::JobEvent& submitted_event);

  // Replaces the stored status of job `job.job_id()` (its events field is ignored) and appends
  // `new_events` to its history, in one transaction. Errors: NOT_FOUND for an unknown job id; the
  // SQLite ones above. On any error nothing is changed.
  absl::Status UpdateJob(const v1::JobStatus& job, const std::vector<v1::JobEvent>& new_events);

  // Every job, oldest (lowest id number) first, with its events field empty. Errors: DATA_LOSS if
  // a stored status cannot be parsed; the SQLite ones above.
  absl::StatusOr<std::vector<v1::JobStatus>> LoadJobs();

  // The most recent `limit` events of `job_id`, the oldest of them first. Errors: INVALID_ARGUMENT
  // for a negative limit (0 gives none); NOT_FOUND for an unknown job id; the SQLite ones above.
  absl::StatusOr<std::vector<v1::JobEvent>> Events(const std::string& job_id, int limit);

  // Inserts the worker, or replaces the stored one of the same name. Errors: INVALID_ARGUMENT for
  // an empty name; the SQLite ones above.
  absl::Status PutWorker(const v1::WorkerInfo& worker);

  // Every stored worker, in the order they were first put. Errors: DATA_LOSS if a stored worker
  // cannot be parsed; the SQLite ones above.
  absl::StatusOr<std::vector<v1::WorkerInfo>> LoadWorkers();

 private:
  JobStore(sqlite3* db, std::string path, std::string coordinator_id);

  absl::Mutex mu_;
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);  // owned; closed by the destructor
  const std::string path_;
  const std::string coordinator_id_;
};

}  // namespace dsv3::coordinator

#endif  // DSV3_COORDINATOR_JOB_STORE_H_
