// InProcessStore; see in_process_store.h.
#include "engine/parallel/in_process_store.h"

#include <vector>

#include "common/status_macros.h"

namespace dsv3::parallel {

absl::Status InProcessStore::Set(absl::string_view key, absl::string_view value) {
  RETURN_IF_ERROR(CheckStoreKey(key));
  RETURN_IF_ERROR(CheckStoreValue(key, value));
  absl::MutexLock lock(&mu_);
  values_.insert_or_assign(std::string(key), std::string(value));
  return absl::OkStatus();
}

absl::StatusOr<std::string> InProcessStore::Get(absl::string_view key, absl::Duration timeout) {
  RETURN_IF_ERROR(CheckStoreKey(key));
  auto present = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return values_.contains(key); };
  absl::MutexLock lock(&mu_);
  if (!mu_.AwaitWithTimeout(absl::Condition(&present), timeout)) {
    return MissingKeysError({std::string(key)}, timeout);
  }
  return values_.find(key)->second;
}

absl::Status InProcessStore::Wait(absl::Span<const std::string> keys, absl::Duration timeout) {
  for (const std::string& key : keys) RETURN_IF_ERROR(CheckStoreKey(key));
  auto missing = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<std::string> out;
    for (const std::string& key : keys) {
      if (!values_.contains(key)) out.push_back(key);
    }
    return out;
  };
  auto all_present = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return missing().empty(); };
  absl::MutexLock lock(&mu_);
  if (!mu_.AwaitWithTimeout(absl::Condition(&all_present), timeout)) {
    return MissingKeysError(missing(), timeout);
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> InProcessStore::Add(absl::string_view key, int64_t delta) {
  RETURN_IF_ERROR(CheckStoreKey(key));
  absl::MutexLock lock(&mu_);
  std::string& text = values_[std::string(key)];
  absl::StatusOr<int64_t> value = ParseStoreCounter(key, text);
  if (!value.ok()) return value.status();
  const int64_t updated = *value + delta;
  text = std::to_string(updated);
  return updated;
}

}  // namespace dsv3::parallel
