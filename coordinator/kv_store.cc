// KvStore; see kv_store.h.
#include "coordinator/kv_store.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dsv3::coordinator {
namespace {

absl::Status CheckKey(const std::string& key) {
  if (key.empty()) return absl::InvalidArgumentError("store key is empty");
  if (key.size() > KvStore::kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("store key of ", key.size(),
                                                   " bytes exceeds the limit of ",
                                                   KvStore::kMaxKeyBytes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status KvStore::Set(const std::string& job_id, int64_t epoch, const std::string& key,
                          std::string value) {
  if (absl::Status s = CheckKey(key); !s.ok()) return s;
  if (value.size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("store value for '", key, "' has ",
                                                   value.size(), " bytes; the limit is ",
                                                   kMaxValueBytes));
  }
  absl::MutexLock lock(&mu_);
  auto& scope = scopes_[{job_id, epoch}];
  if (!scope.contains(key) && scope.size() >= kMaxKeysPerScope) {
    return absl::ResourceExhaustedError(
        absl::StrCat("store scope ", job_id, "/", epoch, " holds ", kMaxKeysPerScope, " keys"));
  }
  scope[key] = Entry{std::move(value), false, 0};
  return absl::OkStatus();
}

absl::StatusOr<std::string> KvStore::Get(const std::string& job_id, int64_t epoch,
                                         const std::string& key, absl::Duration timeout) {
  if (absl::Status s = CheckKey(key); !s.ok()) return s;
  const Scope scope{job_id, epoch};
  auto present = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = scopes_.find(scope);
    return it != scopes_.end() && it->second.contains(key);
  };
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&present), timeout);
  if (!present()) {
    return absl::DeadlineExceededError(absl::StrCat("store key '", key, "' of ", job_id, "/",
                                                    epoch, " did not appear within ",
                                                    absl::FormatDuration(timeout)));
  }
  const Entry& e = scopes_[scope][key];
  return e.is_counter ? std::to_string(e.counter) : e.value;
}

absl::Status KvStore::Wait(const std::string& job_id, int64_t epoch,
                           const std::vector<std::string>& keys, absl::Duration timeout) {
  for (const auto& key : keys) {
    if (absl::Status s = CheckKey(key); !s.ok()) return s;
  }
  const Scope scope{job_id, epoch};
  auto missing = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<std::string> out;
    auto it = scopes_.find(scope);
    for (const auto& key : keys) {
      if (it == scopes_.end() || !it->second.contains(key)) out.push_back(key);
    }
    return out;
  };
  auto all_present = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return missing().empty(); };
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&all_present), timeout);
  if (std::vector<std::string> m = missing(); !m.empty()) {
    return absl::DeadlineExceededError(absl::StrCat("store keys still missing after ",
                                                    absl::FormatDuration(timeout), " in ", job_id,
                                                    "/", epoch, ": ", absl::StrJoin(m, ", ")));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> KvStore::Add(const std::string& job_id, int64_t epoch,
                                     const std::string& key, int64_t delta) {
  if (absl::Status s = CheckKey(key); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto& scope = scopes_[{job_id, epoch}];
  auto it = scope.find(key);
  if (it == scope.end()) {
    if (scope.size() >= kMaxKeysPerScope) {
      return absl::ResourceExhaustedError(
          absl::StrCat("store scope ", job_id, "/", epoch, " holds ", kMaxKeysPerScope, " keys"));
    }
    it = scope.emplace(key, Entry{"", true, 0}).first;
  } else if (!it->second.is_counter) {
    return absl::FailedPreconditionError(
        absl::StrCat("store key '", key, "' holds a value, not a counter"));
  }
  it->second.counter += delta;
  return it->second.counter;
}

void KvStore::Drop(const std::string& job_id, int64_t min_epoch) {
  absl::MutexLock lock(&mu_);
  for (auto it = scopes_.lower_bound({job_id, std::numeric_limits<int64_t>::min()});
       it != scopes_.end() && it->first.first == job_id;) {
    if (it->first.second < min_epoch) {
      it = scopes_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace dsv3::coordinator
