// dsv3ctl's command line: the verb table and usage text, splitting argv into flags and positional
// arguments (flags may come before or after the verb), the coordinator address, the auth token
// file, and the defaults `estimate` takes from a job spec. The flags themselves are absl flags
// defined in ctl.cc; this file sets them through absl's flag reflection and never exits the
// process.
#ifndef DSV3_CLI_CTL_ARGS_H_
#define DSV3_CLI_CTL_ARGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dsv3/v1/job.pb.h"
#include "dsv3/v1/job_service.pb.h"

namespace dsv3::cli {

// One verb: its name, what follows it, and the flags that apply to it besides the global ones.
struct VerbInfo {
  absl::string_view name;                // "submit"
  absl::string_view synopsis;            // "SPEC.json [--json]"
  absl::string_view summary;             // one line for the usage text
  int min_args = 0;                      // positional arguments after the verb
  int max_args = 0;                      // -1: no upper bound
  std::vector<absl::string_view> flags;  // verb-specific flag names, e.g. {"json"}
};

// Every verb, in the order the usage text lists them (help is one of them).
const std::vector<VerbInfo>& Verbs();

// The verb called `name`, or nullptr.
const VerbInfo* FindVerb(absl::string_view name);

// Flags every verb accepts: coordinator, auth_token_file, timeout_s.
const std::vector<absl::string_view>& GlobalFlags();

// The usage text for `dsv3ctl help`: synopsis, every verb, the flags with their defaults (including
// estimate's defaults), the exit codes and the DSV3_COORDINATOR variable. Ends in '\n'.
std::string UsageText();

// argv split into flags and positional arguments.
struct CommandLine {
  std::vector<std::string> positional;  // the verb first, then its arguments
  std::vector<std::string> flags_set;   // names of the flags given, in order
  bool help = false;                    // -h, --help, -help or --helpfull was given
};

// Walks argv[1..argc): "--name=value", "--name value" (non-bool flags), "--name"/"--noname" (bool
// flags), single-dash forms likewise, "--" ends the flags. Each flag must be in `known_flags`; its
// value is parsed into the absl flag of that name (so the flags must be defined in the binary).
// INVALID_ARGUMENT for an unknown flag, a missing value or a value the flag cannot parse, naming
// the flag. Does not exit and does not reset flags it was not given (ResetFlags does).
absl::StatusOr<CommandLine> SplitCommandLine(int argc, char** argv,
                                             const std::vector<absl::string_view>& known_flags);

// Sets every flag named in `names` back to its default value. RunCtl calls it first so that each
// call starts from a clean slate (absl::FlagSaver would do it too, but logs every restore on
// stderr).
void ResetFlags(const std::vector<absl::string_view>& names);

// Checks the verb-specific flags given and the positional count against `verb`; INVALID_ARGUMENT
// naming the problem ("status needs JOB", "--tokens applies to estimate only").
absl::Status CheckVerbUsage(const VerbInfo& verb, const CommandLine& command_line);

// The coordinator to call: `flag_value` if set, else `env_value` (DSV3_COORDINATOR) if set, else
// "127.0.0.1:50051".
std::string ResolveCoordinator(absl::string_view flag_value, absl::string_view env_value);

// The token in a token file's `contents`, surrounding whitespace trimmed. INVALID_ARGUMENT when it
// is empty or holds whitespace or control characters inside (one token, one line).
absl::StatusOr<std::string> ParseAuthToken(absl::string_view contents);

// The whole file at `path`. NOT_FOUND / PERMISSION_DENIED / INVALID_ARGUMENT (a directory) naming
// the path.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

// A job spec JSON parsed leniently (unknown fields ignored: the coordinator validates), for the
// client-side defaults below. INVALID_ARGUMENT with the parser's message when it is not JSON of a
// JobSpec's shape.
absl::StatusOr<dsv3::v1::JobSpec> ParseSpecLeniently(const std::string& spec_json);

// What the user gave on the estimate command line; unset = take the default.
struct EstimateOverrides {
  std::optional<double> tokens;
  std::optional<int64_t> devices;
  std::optional<double> peak_tflops;
  std::optional<double> mfu;
  std::optional<double> price_per_device_hour;
};

inline constexpr double kDefaultPeakTflops = 989;          // H800/H100 dense BF16
inline constexpr double kDefaultMfu = 0.3894;              // DeepSeek-V3 (ISCA'25 Table 4)
inline constexpr double kDefaultPricePerDeviceHour = 2.0;  // USD, the report's rental price

// The EstimateCostRequest for `spec_json` with the defaults filled in: tokens = train.steps x
// train.global_batch_tokens, devices = parallel.max_workers or min_workers or 1, peak_tflops 989,
// mfu 0.3894, price = accounting.price_per_device_hour or 2.0. INVALID_ARGUMENT when tokens is
// neither given nor derivable from the spec, or a value is out of range (devices < 1, mfu not in
// (0, 1], peak_tflops <= 0, price < 0), naming the flag.
absl::StatusOr<dsv3::v1::EstimateCostRequest> BuildEstimateRequest(
    const std::string& spec_json, const EstimateOverrides& overrides);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_CTL_ARGS_H_
