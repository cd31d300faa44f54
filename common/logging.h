// Logging set-up for the daemons and tools: spdlog with the process role and id in every line, e.g.
// "2026-11-23 03:04:05.123 I coordinator[c1] 4242 message". Call InitLogging once in main().
#ifndef DSV3_COMMON_LOGGING_H_
#define DSV3_COMMON_LOGGING_H_

#include <string>

#include "absl/status/status.h"

namespace dsv3 {

struct LoggingOptions {
  std::string role;           // "coordinator", "worker", "dsv3ctl", ...
  std::string id;             // worker name, coordinator id, ...
  std::string level = "info";  // trace, debug, info, warn, error
  std::string file;           // also log to this file when set
};

// Installs the default spdlog logger. INVALID_ARGUMENT for an unknown level.
absl::Status InitLogging(const LoggingOptions& options);

// Changes the id shown in every line (a worker learns its id after attaching).
void SetLogId(const std::string& id);

}  // namespace dsv3

#endif  // DSV3_COMMON_LOGGING_H_
