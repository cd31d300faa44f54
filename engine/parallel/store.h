// Store: the rendezvous key-value interface that communicators bootstrap through (Gloo addresses,
// NCCL unique ids, in-process hub ids, split membership), and PrefixStore, a view of a store under
// a key prefix. Implementations: InProcessStore (threads of one process), FileStore (processes of
// one machine), worker/CoordinatorStore (the coordinator's StoreService). Not a database: values
// are small, there is no delete, and a store lives as long as one job epoch.
#ifndef DSV3_ENGINE_PARALLEL_STORE_H_
#define DSV3_ENGINE_PARALLEL_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace dsv3::parallel {

// Thread-safe in every implementation. Keys are non-empty byte strings of at most kMaxKeyBytes;
// values at most kMaxValueBytes (the limits of the coordinator's StoreService).
class Store {
 public:
  static constexpr size_t kMaxKeyBytes = 1024;
  static constexpr size_t kMaxValueBytes = 1 << 20;

  virtual ~Store() = default;

  // Writes (or overwrites) `key`. INVALID_ARGUMENT for an empty or oversized key or value; an
  // implementation's own I/O or RPC errors otherwise.
  virtual absl::Status Set(absl::string_view key, absl::string_view value) = 0;

  // Waits up to `timeout` for `key` to exist and returns its value (a counter written by Add reads
  // as its decimal value). DEADLINE_EXCEEDED names the key.
  virtual absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) = 0;

  // Waits up to `timeout` for every key to exist. DEADLINE_EXCEEDED names the keys still missing.
  virtual absl::Status Wait(absl::Span<const std::string> keys, absl::Duration timeout) = 0;

  // Adds `delta` to the int64 counter at `key` (a missing key counts as 0) and returns the new
  // value, atomically with respect to every other client of the store. FAILED_PRECONDITION when
  // the key holds a value that is not a decimal integer.
  virtual absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) = 0;
};

// INVALID_ARGUMENT unless 0 < key.size() <= Store::kMaxKeyBytes. For implementations.
absl::Status CheckStoreKey(absl::string_view key);
// INVALID_ARGUMENT unless value.size() <= Store::kMaxValueBytes. For implementations.
absl::Status CheckStoreValue(absl::string_view key, absl::string_view value);
// The DEADLINE_EXCEEDED error every implementation returns from Wait (and Get, with one key):
// "store keys still missing after 2s: a, b".
absl::Status MissingKeysError(absl::Span<const std::string> missing, absl::Duration timeout);
// Parses a counter's stored text (a missing key is the empty string, which reads as 0).
// FAILED_PRECONDITION naming the key when the text is not a decimal int64.
absl::StatusOr<int64_t> ParseStoreCounter(absl::string_view key, absl::string_view text);

// Every key is read and written as `prefix + key` in `base`. Shares ownership of `base`.
class PrefixStore : public Store {
 public:
  PrefixStore(std::shared_ptr<Store> base, std::string prefix)
      : base_(std::move(base)), prefix_(std::move(prefix)) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::Status Wait(absl::Span<const std::string> keys, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;

  const std::string& prefix() const { return prefix_; }

 private:
  std::string Full(absl::string_view key) const;

  const std::shared_ptr<Store> base_;
  const std::string prefix_;
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_STORE_H_
