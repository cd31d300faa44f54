// dsv3ctl's flags and RunCtl (see ctl.h): flag parsing, usage checks, the token file, the channel,
// then one verb from ctl_commands.h. The flags are defined here and read only in this file.
#include "cli/ctl.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/ctl_args.h"
#include "cli/ctl_client.h"
#include "cli/ctl_commands.h"
#include "cli/ctl_errors.h"
#include "cli/ctl_format.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

ABSL_FLAG(std::string, coordinator, "",
          "coordinator HOST:PORT (default: $DSV3_COORDINATOR, else 127.0.0.1:50051)");
ABSL_FLAG(std::string, auth_token_file, "",
          "file holding a bearer token sent as 'authorization: Bearer <token>'");
ABSL_FLAG(int, timeout_s, 30, "deadline of each call in seconds; 0 = none");
ABSL_FLAG(bool, json, false, "print the response as proto3 JSON with the .proto field names");
ABSL_FLAG(int, events, 10, "status: recent events to show");
ABSL_FLAG(double, retry_s, 60, "watch: seconds to keep retrying an unreachable coordinator");
ABSL_FLAG(std::string, target_tokens, "", "report: project the measured rate to N tokens");
ABSL_FLAG(std::string, tokens, "", "estimate: tokens to train (default: steps x batch tokens)");
ABSL_FLAG(std::optional<int64_t>, devices, std::nullopt,
          "estimate: devices (default: parallel.max_workers, else min_workers, else 1)");
ABSL_FLAG(std::optional<double>, peak_tflops, std::nullopt,
          "estimate: per-device peak TFLOP/s (default 989)");
ABSL_FLAG(std::optional<double>, mfu, std::nullopt, "estimate: MFU in (0, 1] (default 0.3894)");
ABSL_FLAG(std::optional<double>, price, std::nullopt,
          "estimate: USD per device-hour (default: the spec's, else 2.0)");

namespace dsv3::cli {
namespace {

// Every flag name dsv3ctl accepts: the global ones and every verb's.
std::vector<absl::string_view> KnownFlags() {
  std::vector<absl::string_view> names = GlobalFlags();
  for (const VerbInfo& verb : Verbs()) {
    for (absl::string_view flag : verb.flags) {
      if (std::find(names.begin(), names.end(), flag) == names.end()) names.push_back(flag);
    }
  }
  return names;
}

// An optional count flag ("" = not given). INVALID_ARGUMENT naming the flag when it does not parse.
absl::StatusOr<std::optional<double>> CountFlag(absl::string_view name, const std::string& text) {
  if (text.empty()) return std::optional<double>();
  absl::StatusOr<double> value = ParseCount(text);
  if (!value.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", value.status().message()));
  }
  return std::optional<double>(*value);
}

// The verb options from the flags. INVALID_ARGUMENT naming a flag whose value is out of range.
absl::StatusOr<CtlOptions> OptionsFromFlags(std::ostream& out) {
  CtlOptions options;
  const char* env = std::getenv("DSV3_COORDINATOR");
  options.coordinator = ResolveCoordinator(absl::GetFlag(FLAGS_coordinator), env ? env : "");
  options.timeout_s = absl::GetFlag(FLAGS_timeout_s);
  if (options.timeout_s < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--timeout_s=", options.timeout_s, " must be >= 0"));
  }
  options.json = absl::GetFlag(FLAGS_json);
  options.events = absl::GetFlag(FLAGS_events);
  if (options.events < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--events=", options.events, " must be >= 0"));
  }
  options.retry_s = absl::GetFlag(FLAGS_retry_s);
  if (!(options.retry_s >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--retry_s=", options.retry_s, " must be >= 0"));
  }
  auto target = CountFlag("target_tokens", absl::GetFlag(FLAGS_target_tokens));
  if (!target.ok()) return target.status();
  options.target_tokens = *target;
  auto tokens = CountFlag("tokens", absl::GetFlag(FLAGS_tokens));
  if (!tokens.ok()) return tokens.status();
  options.estimate.tokens = *tokens;
  options.estimate.devices = absl::GetFlag(FLAGS_devices);
  options.estimate.peak_tflops = absl::GetFlag(FLAGS_peak_tflops);
  options.estimate.mfu = absl::GetFlag(FLAGS_mfu);
  options.estimate.price_per_device_hour = absl::GetFlag(FLAGS_price);

  const char* term = std::getenv("TERM");
  options.out_is_terminal = &out == &std::cout && isatty(STDOUT_FILENO) == 1 &&
                            !(term != nullptr && absl::string_view(term) == "dumb");
  return options;
}

}  // namespace

int RunCtl(int argc, char** argv, std::ostream& out, std::ostream& err) {
  const std::vector<absl::string_view> known_flags = KnownFlags();
  ResetFlags(known_flags);
  const absl::StatusOr<CommandLine> command_line = SplitCommandLine(argc, argv, known_flags);
  if (!command_line.ok()) {
    err << ErrorLine("", command_line.status().message()) << "\n";
    return kExitUsage;
  }
  if (command_line->help) {
    out << UsageText();
    return kExitOk;
  }
  if (command_line->positional.empty()) {
    err << UsageText();
    return kExitUsage;
  }
  const std::string& verb_name = command_line->positional[0];
  const VerbInfo* verb = FindVerb(verb_name);
  if (verb == nullptr) {
    std::vector<absl::string_view> names;
    for (const VerbInfo& v : Verbs()) names.push_back(v.name);
    err << ErrorLine("", absl::StrCat("unknown verb '", verb_name, "' (verbs: ",
                                      absl::StrJoin(names, ", "), "; see dsv3ctl help)"))
        << "\n";
    return kExitUsage;
  }
  if (verb->name == "help") {
    out << UsageText();
    return kExitOk;
  }
  if (const absl::Status usage = CheckVerbUsage(*verb, *command_line); !usage.ok()) {
    err << ErrorLine(verb->name, usage.message()) << "\n";
    return kExitUsage;
  }
  const absl::StatusOr<CtlOptions> options = OptionsFromFlags(out);
  if (!options.ok()) {
    err << ErrorLine(verb->name, options.status().message()) << "\n";
    return kExitUsage;
  }

  std::string token;
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file); !path.empty()) {
    absl::StatusOr<std::string> contents = ReadTextFile(path);
    absl::StatusOr<std::string> parsed =
        contents.ok() ? ParseAuthToken(*contents) : absl::StatusOr<std::string>(contents.status());
    if (!parsed.ok()) {
      err << ErrorLine(verb->name,
                       absl::StrCat("--auth_token_file=", path, ": ", parsed.status().message()))
          << "\n";
      return kExitUsage;
    }
    token = *std::move(parsed);
  }

  JobClient client(grpc::CreateChannel(options->coordinator, grpc::InsecureChannelCredentials()),
                   token, options->timeout_s);
  const std::vector<std::string> args(command_line->positional.begin() + 1,
                                      command_line->positional.end());
  return RunVerb(*verb, args, *options, client, out, err);
}

}  // namespace dsv3::cli
