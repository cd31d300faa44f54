// Membership: the workers the coordinator knows and their leases. Pure bookkeeping with an injected
// time (no threads, no I/O, no gRPC): the Coordinator calls it under its own lock. A worker whose
// last heartbeat is older than `kLeasesBeforeDead` lease periods is declared dead by Expire().
#ifndef DSV3_COORDINATOR_MEMBERSHIP_H_
#define DSV3_COORDINATOR_MEMBERSHIP_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/time/time.h"

namespace dsv3::coordinator {

struct WorkerRecord {
  std::string id;  // changes on every attach
  std::string name;
  std::string node;
  std::string device = "cpu";
  int device_count = 1;
  std::string address;
  bool has_engine = false;
  absl::Time attached;
  absl::Time last_heartbeat;
  bool alive = true;
  std::string dead_reason;  // set when !alive
  // Its session stream ended without a Detach (the process died, or the connection broke) and
  // has not been opened again. Such a worker is alive until its lease expires, but no job is
  // placed on it: a killed worker's reset connection ends its session at once, so a re-plan
  // right after a kill -9 does not pick it again.
  bool session_lost = false;
  std::string job_id;       // the job it serves, empty when idle
  int64_t rank = -1;
};

class Membership {
 public:
  static constexpr int kLeasesBeforeDead = 3;

  explicit Membership(absl::Duration lease) : lease_(lease) {}

  absl::Duration lease() const { return lease_; }

  // Registers a worker and returns its new record. A live worker with the same name is replaced:
  // its old id is marked dead ("re-attached") and returned in `*replaced_id` (empty otherwise).
  const WorkerRecord& Attach(WorkerRecord worker, absl::Time now, std::string* replaced_id);

  // Renews the lease. False when the id is unknown or already dead (the worker must re-attach).
  bool Heartbeat(const std::string& id, absl::Time now);

  // Marks dead every live worker whose lease ran out and returns their ids.
  std::vector<std::string> Expire(absl::Time now);

  // Marks a worker dead at once (it detached, or its session broke for good). False if unknown.
  bool MarkDead(const std::string& id, const std::string& reason);

  // nullptr when unknown. Pointers stay valid until the next Attach.
  WorkerRecord* Find(const std::string& id);
  const WorkerRecord* FindLiveByName(const std::string& name) const;

  // Live workers that serve no job, ordered by name.
  std::vector<const WorkerRecord*> Idle() const;
  // Every known worker, live first, then by name.
  std::vector<const WorkerRecord*> All() const;

  // Forgets dead workers older than `keep` (bounded memory under churn).
  void ForgetDeadBefore(absl::Time cutoff);

 private:
  std::string NewId();

  absl::Duration lease_;
  std::map<std::string, WorkerRecord> by_id_;
  absl::BitGen rng_;
};

}  // namespace dsv3::coordinator

#endif  // DSV3_COORDINATOR_MEMBERSHIP_H_
