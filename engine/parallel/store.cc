// Store helpers and PrefixStore; see store.h.
#include "engine/parallel/store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dsv3::parallel {

absl::Status CheckStoreKey(absl::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("store key is empty");
  if (key.size() > Store::kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "store key of ", key.size(), " bytes exceeds the limit of ", Store::kMaxKeyBytes));
  }
  return absl::OkStatus();
}

absl::Status CheckStoreValue(absl::string_view key, absl::string_view value) {
  if (value.size() > Store::kMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("store value for '", key, "' has ", value.size(),
                                                   " bytes; the limit is ", Store::kMaxValueBytes));
  }
  return absl::OkStatus();
}

absl::Status MissingKeysError(absl::Span<const std::string> missing, absl::Duration timeout) {
  return absl::DeadlineExceededError(absl::StrCat("store keys still missing after ",
                                                  absl::FormatDuration(timeout), ": ",
                                                  absl::StrJoin(missing, ", ")));
}

absl::StatusOr<int64_t> ParseStoreCounter(absl::string_view key, absl::string_view text) {
  if (text.empty()) return 0;
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::FailedPreconditionError(
        absl::StrCat("store key '", key, "' holds a value, not a counter"));
  }
  return value;
}

std::string PrefixStore::Full(absl::string_view key) const { return absl::StrCat(prefix_, key); }

absl::Status PrefixStore::Set(absl::string_view key, absl::string_view value) {
  return base_->Set(Full(key), value);
}

absl::StatusOr<std::string> PrefixStore::Get(absl::string_view key, absl::Duration timeout) {
  return base_->Get(Full(key), timeout);
}

absl::Status PrefixStore::Wait(absl::Span<const std::string> keys, absl::Duration timeout) {
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (const std::string& key : keys) full.push_back(Full(key));
  return base_->Wait(full, timeout);
}

absl::StatusOr<int64_t> PrefixStore::Add(absl::string_view key, int64_t delta) {
  return base_->Add(Full(key), delta);
}

}  // namespace dsv3::parallel
