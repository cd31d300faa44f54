// Exit codes and one-line error messages of dsv3ctl (see ctl_errors.h). No I/O.
#include "cli/ctl_errors.h"

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace dsv3::cli {

int ExitCodeForServerStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
      return kExitUsage;
    default:
      return kExitServerError;
  }
}

std::string OneLine(absl::string_view text) {
  std::vector<std::string> parts;
  for (absl::string_view part :
       absl::StrSplit(text, absl::ByAnyChar("\r\n"), absl::SkipWhitespace())) {
    parts.emplace_back(absl::StripAsciiWhitespace(part));
  }
  return absl::StrJoin(parts, "; ");
}

std::string ErrorLine(absl::string_view verb, absl::string_view message) {
  if (verb.empty()) return absl::StrCat("dsv3ctl: ", OneLine(message));
  return absl::StrCat("dsv3ctl: ", verb, ": ", OneLine(message));
}

std::string ServerErrorLine(const CallContext& context, const absl::Status& status) {
  const std::string message = status.message().empty() ? absl::StatusCodeToString(status.code())
                                                       : OneLine(status.message());
  const std::string prefix =
      context.verb.empty() ? "dsv3ctl: " : absl::StrCat("dsv3ctl: ", context.verb, ": ");
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return absl::StrCat("dsv3ctl: cannot reach the coordinator at ", context.coordinator,
                          " (is dsv3-coordinator running?)");
    case absl::StatusCode::kDeadlineExceeded:
      if (context.timeout_s > 0) {
        return absl::StrCat(prefix, "no answer from the coordinator at ", context.coordinator,
                            " within ", context.timeout_s, "s (raise --timeout_s?)");
      }
      return absl::StrCat(prefix, message);
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return absl::StrCat(prefix, message, " (check --auth_token_file)");
    case absl::StatusCode::kUnimplemented:
      return absl::StrCat(prefix, "the coordinator at ", context.coordinator,
                          " does not support this call (", message,
                          "); are dsv3ctl and dsv3-coordinator the same version?");
    default:
      return prefix + message;
  }
}

}  // namespace dsv3::cli
