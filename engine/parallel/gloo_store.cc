// GlooStore; see gloo_store.h.
#include "engine/parallel/gloo_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/parallel/gloo_status.h"

namespace dsv3::parallel {

void GlooStore::set(const std::string& key, const std::vector<char>& data) {
  absl::Status s =
      store_->Set(absl::StrCat(prefix_, key), absl::string_view(data.data(), data.size()));
  if (!s.ok()) throw GlooStatusException(std::move(s));
}

std::vector<char> GlooStore::get(const std::string& key) {
  absl::StatusOr<std::string> v = store_->Get(absl::StrCat(prefix_, key), timeout_);
  if (!v.ok()) throw GlooStatusException(v.status());
  return std::vector<char>(v->begin(), v->end());
}

void GlooStore::wait(const std::vector<std::string>& keys) {
  wait(keys, std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout_)));
}

void GlooStore::wait(const std::vector<std::string>& keys,
                     const std::chrono::milliseconds& timeout) {
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (const std::string& key : keys) full.push_back(absl::StrCat(prefix_, key));
  const absl::Duration bound = std::min(timeout_, absl::Milliseconds(timeout.count()));
  absl::Status s = store_->Wait(full, timeout.count() > 0 ? bound : timeout_);
  if (!s.ok()) throw GlooStatusException(std::move(s));
}

}  // namespace dsv3::parallel
