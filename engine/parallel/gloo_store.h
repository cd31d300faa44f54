// GlooStore: Gloo's rendezvous store interface (gloo::rendezvous::Store) on top of ours, under a
// key prefix, so that Gloo's full-mesh connection bootstraps through whatever Store the job uses.
// Errors are thrown as GlooStatusException (Gloo's interface has no other channel) and turned
// back into the original Status by DSV3_GLOO_CALL. Used only by the Gloo backend.
#ifndef DSV3_ENGINE_PARALLEL_GLOO_STORE_H_
#define DSV3_ENGINE_PARALLEL_GLOO_STORE_H_

#include <chrono>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "engine/parallel/store.h"
#include "gloo/rendezvous/store.h"

namespace dsv3::parallel {

class GlooStore : public ::gloo::rendezvous::Store {
 public:
  // `store` is not owned and must outlive this object. Every wait is bounded by `timeout`.
  GlooStore(dsv3::parallel::Store* store, std::string prefix, absl::Duration timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  dsv3::parallel::Store* const store_;
  const std::string prefix_;
  const absl::Duration timeout_;
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_GLOO_STORE_H_
