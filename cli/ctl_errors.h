// dsv3ctl's exit codes and its one-line error messages, as DESIGN.md fixes them: 0 success, 1 a
// server-side error, 2 bad usage or bad input (including the coordinator's INVALID_ARGUMENT for a
// bad spec, since the spec is the user's input). Pure functions; printing is the caller's job.
#ifndef DSV3_CLI_CTL_ERRORS_H_
#define DSV3_CLI_CTL_ERRORS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dsv3::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitServerError = 1;
inline constexpr int kExitUsage = 2;

// The exit code for the status of a call to the coordinator: 0 for OK, 2 for INVALID_ARGUMENT,
// 1 for every other code (NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE, DEADLINE_EXCEEDED,
// UNAUTHENTICATED, INTERNAL, ...).
int ExitCodeForServerStatus(absl::StatusCode code);

// Where a call went, to word its error.
struct CallContext {
  std::string verb;         // "submit", "status", ...
  std::string coordinator;  // HOST:PORT
  int timeout_s = 0;        // the call's deadline; 0 = none
};

// The line (no '\n') to print on stderr for a failed call, e.g.
//   "dsv3ctl: submit: parallel.expert_parallel=3 does not divide model.n_routed_experts=16"
//   "dsv3ctl: cannot reach the coordinator at 127.0.0.1:50051 (is dsv3-coordinator running?)"
// UNAVAILABLE, DEADLINE_EXCEEDED, UNAUTHENTICATED, PERMISSION_DENIED and UNIMPLEMENTED get a hint
// at the likely cause; other codes show the server's message (or the code's name when it is empty).
// Precondition: !status.ok().
std::string ServerErrorLine(const CallContext& context, const absl::Status& status);

// "dsv3ctl: VERB: MESSAGE" (or "dsv3ctl: MESSAGE" for an empty verb), for bad usage or bad input.
std::string ErrorLine(absl::string_view verb, absl::string_view message);

// `text` on one line: line breaks (and the spaces around them) become "; ", the ends are trimmed.
std::string OneLine(absl::string_view text);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_CTL_ERRORS_H_
