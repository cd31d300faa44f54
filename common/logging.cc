// spdlog set-up: a stderr sink (and an optional file sink) with role[id] in the pattern.
#include "common/logging.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "spdlog/sinks/basic_file_sink.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace dsv3 {
namespace {

std::string role_;  // set once in InitLogging, before any thread starts

void ApplyPattern(const std::string& id) {
  spdlog::set_pattern(absl::StrCat("%Y-%m-%d %H:%M:%S.%e %L ", role_, "[", id, "] %t %v"));
}

}  // namespace

absl::Status InitLogging(const LoggingOptions& options) {
  const spdlog::level::level_enum level = spdlog::level::from_str(options.level);
  if (level == spdlog::level::off && options.level != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown log level '", options.level, "' (trace, debug, info, warn, error, off)"));
  }
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!options.file.empty()) {
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.file));
    } catch (const spdlog::spdlog_ex& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot open log file ", options.file, ": ", e.what()));
    }
  }
  auto logger = std::make_shared<spdlog::logger>(options.role, sinks.begin(), sinks.end());
  spdlog::set_default_logger(logger);
  spdlog::set_level(level);
  spdlog::flush_on(spdlog::level::info);
  role_ = options.role;
  ApplyPattern(options.id);
  return absl::OkStatus();
}

void SetLogId(const std::string& id) { ApplyPattern(id); }

}  // namespace dsv3
