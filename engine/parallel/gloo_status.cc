// The Gloo exception conversion; see gloo_status.h.
#include "engine/parallel/gloo_status.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dsv3::parallel {

absl::Status GlooExceptionToStatus(const std::exception& e, const char* file, int line) {
  if (const auto* s = dynamic_cast<const GlooStatusException*>(&e)) return s->status();
  absl::string_view base(file);
  if (size_t slash = base.rfind('/'); slash != absl::string_view::npos)
    base.remove_prefix(slash + 1);
  const std::string message = absl::StrCat("gloo: ", e.what(), " [", base, ":", line, "]");
  const absl::string_view what(e.what());
  if (absl::StrContains(what, "Timed out") || absl::StrContains(what, "timed out") ||
      absl::StrContains(what, "Timeout")) {
    return absl::DeadlineExceededError(message);
  }
  if (dynamic_cast<const ::gloo::IoException*>(&e) != nullptr) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

}  // namespace dsv3::parallel
