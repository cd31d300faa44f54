// KvStore: the in-memory key-value store behind StoreService, scoped by (job id, epoch). Ranks of one
// job epoch use it to bootstrap their communicators. Not durable: after a coordinator restart the
// ranks of the current epoch publish their keys again. Thread-safe; Get/Wait block with a timeout.
#ifndef DSV3_COORDINATOR_KV_STORE_H_
#define DSV3_COORDINATOR_KV_STORE_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dsv3::coordinator {

class KvStore {
 public:
  static constexpr size_t kMaxValueBytes = 1 << 20;
  static constexpr size_t kMaxKeyBytes = 1024;
  static constexpr size_t kMaxKeysPerScope = 65536;

  // INVALID_ARGUMENT for an empty or oversized key or value; RESOURCE_EXHAUSTED when the scope is full.
  absl::Status Set(const std::string& job_id, int64_t epoch, const std::string& key,
                   std::string value);
  // Waits up to `timeout` for the key. DEADLINE_EXCEEDED names the key.
  absl::StatusOr<std::string> Get(const std::string& job_id, int64_t epoch, const std::string& key,
                                  absl::Duration timeout);
  // Waits up to `timeout` for all keys. DEADLINE_EXCEEDED names the missing ones.
  absl::Status Wait(const std::string& job_id, int64_t epoch, const std::vector<std::string>& keys,
                    absl::Duration timeout);
  // Adds `delta` to an int64 counter (missing = 0) and returns the new value. FAILED_PRECONDITION if
  // the key holds a value that Set wrote.
  absl::StatusOr<int64_t> Add(const std::string& job_id, int64_t epoch, const std::string& key,
                              int64_t delta);
  // Drops every scope of the job with an epoch below `min_epoch` (INT64_MAX: all of them).
  void Drop(const std::string& job_id, int64_t min_epoch);

 private:
  using Scope = std::pair<std::string, int64_t>;
  struct Entry {
    std::string value;
    bool is_counter = false;
    int64_t counter = 0;
  };

  absl::Mutex mu_;
  std::map<Scope, std::map<std::string, Entry>> scopes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dsv3::coordinator

#endif  // DSV3_COORDINATOR_KV_STORE_H_
