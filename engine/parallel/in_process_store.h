// InProcessStore: a Store in memory, shared by the threads of one process (in-process and Gloo
// ranks started as threads in tests, single-process multi-rank runs). Not visible to other
// processes (use FileStore or the coordinator's store for those) and not durable.
#ifndef DSV3_ENGINE_PARALLEL_IN_PROCESS_STORE_H_
#define DSV3_ENGINE_PARALLEL_IN_PROCESS_STORE_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "engine/parallel/store.h"

namespace dsv3::parallel {

class InProcessStore : public Store {
 public:
  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::Status Wait(absl::Span<const std::string> keys, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;

 private:
  absl::Mutex mu_;
  // Counters are stored as their decimal text, so Get reads them like any value.
  std::map<std::string, std::string, std::less<>> values_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_IN_PROCESS_STORE_H_
