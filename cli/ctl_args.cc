// dsv3ctl's command line (see ctl_args.h): verbs, usage text, argv splitting over absl flag
// reflection, the coordinator address, the token file and estimate's defaults. No network calls.
#include "cli/ctl_args.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"

namespace dsv3::cli {
namespace {

constexpr char kDefaultCoordinator[] = "127.0.0.1:50051";

bool Contains(const std::vector<absl::string_view>& names, absl::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// The first word of a synopsis ("SPEC.json [--json]" -> "SPEC.json"): what a missing argument is.
absl::string_view FirstWord(absl::string_view synopsis) {
  return synopsis.substr(0, synopsis.find(' '));
}

}  // namespace

const std::vector<VerbInfo>& Verbs() {
  static const auto* const verbs = new std::vector<VerbInfo>{
      {"submit",
       "SPEC.json [--json]",
       "submit a job; prints the new job id alone (base dir: the current directory)",
       1,
       1,
       {"json"}},
      {"jobs", "[--json]", "list every job, newest first", 0, 0, {"json"}},
      {"status",
       "JOB [--json] [--events=N]",
       "one job: state, progress, losses, checkpoint, accounting, placement, recent events",
       1,
       1,
       {"json", "events"}},
      {"watch",
       "JOB [--json] [--retry_s=S]",
       "follow a job live until it ends (exit 0 SUCCEEDED/CANCELLED, 1 FAILED)",
       1,
       1,
       {"json", "retry_s"}},
      {"workers",
       "[--json]",
       "list every worker the coordinator knows, live and dead",
       0,
       0,
       {"json"}},
      {"cancel", "JOB [--json]", "stop a job at once; prints the resulting state", 1, 1, {"json"}},
      {"report",
       "JOB... [--json] [--target_tokens=N]",
       "cost table in the shape of the DeepSeek-V3 report's Table 1, per stage, with a projection",
       1,
       -1,
       {"json", "target_tokens"}},
      {"estimate",
       "SPEC.json [--tokens=N] [--devices=N] [--peak_tflops=X] [--mfu=F] [--price=USD] [--json]",
       "projected FLOPs, device-hours, days and USD of training a spec",
       1,
       1,
       {"json", "tokens", "devices", "peak_tflops", "mfu", "price"}},
      {"help", "", "print this text", 0, 1, {}},
  };
  return *verbs;
}

const VerbInfo* FindVerb(absl::string_view name) {
  for (const VerbInfo& verb : Verbs()) {
    if (verb.name == name) return &verb;
  }
  return nullptr;
}

const std::vector<absl::string_view>& GlobalFlags() {
  static const auto* const flags =
      new std::vector<absl::string_view>{"coordinator", "auth_token_file", "timeout_s"};
  return *flags;
}

std::string UsageText() {
  std::string out =
      "usage: dsv3ctl [--coordinator=HOST:PORT] [--auth_token_file=F] [--timeout_s=N] VERB "
      "ARGS...\n"
      "\n"
      "dsv3ctl talks to dsv3-coordinator's JobService. Flags may come before or after the verb.\n"
      "\n"
      "Verbs:\n";
  size_t width = 0;
  for (const VerbInfo& verb : Verbs()) width = std::max(width, verb.name.size());
  for (const VerbInfo& verb : Verbs()) {
    out += absl::StrCat(absl::StrFormat("  %-*s", static_cast<int>(width), verb.name),
                        verb.synopsis.empty() ? "" : "  ", verb.synopsis, "\n");
    absl::StrAppendFormat(&out, "  %-*s    %s\n", static_cast<int>(width), "", verb.summary);
  }
  absl::StrAppend(
      &out,
      "\n"
      "Global flags:\n"
      "  --coordinator=HOST:PORT  the coordinator (default: $DSV3_COORDINATOR, else ",
      kDefaultCoordinator,
      ")\n"
      "  --auth_token_file=F      send 'authorization: Bearer <token in F>' on every call\n"
      "  --timeout_s=N            deadline of each call in seconds (default 30; 0 = none;\n"
      "                           watch's stream has none)\n"
      "\n"
      "Verb flags:\n"
      "  --json                   print the response in proto3 JSON with the .proto field names\n"
      "                           (watch: one JSON object per line per update)\n"
      "  --events=N               status: recent events to show (default 10)\n"
      "  --retry_s=S              watch: how long to keep retrying an unreachable coordinator\n"
      "                           (default 60)\n"
      "  --target_tokens=N        report: project the measured rate to N tokens (e.g. 14.8T)\n"
      "  --tokens=N               estimate: tokens to train (default: train.steps x\n"
      "                           train.global_batch_tokens of the spec; required otherwise)\n"
      "  --devices=N              estimate: devices (default: parallel.max_workers, else\n"
      "                           parallel.min_workers, else 1)\n",
      absl::StrFormat("  --peak_tflops=X          estimate: per-device peak TFLOP/s (default %g, "
                      "H800/H100 dense BF16)\n",
                      kDefaultPeakTflops),
      absl::StrFormat("  --mfu=F                  estimate: model FLOPs utilisation in (0, 1] "
                      "(default %g, DeepSeek-V3's)\n",
                      kDefaultMfu),
      absl::StrFormat("  --price=USD              estimate: USD per device-hour (default: "
                      "accounting.price_per_device_hour, else %g)\n",
                      kDefaultPricePerDeviceHour),
      "  Counts (--tokens, --target_tokens) accept suffixes: 14.8T, 500B, 20K, or 14.8e12.\n"
      "\n"
      "Exit codes: 0 success; 1 server-side error (message on stderr); 2 bad usage or bad input\n"
      "(including a spec the coordinator rejects with INVALID_ARGUMENT).\n"
      "See docs/dsv3ctl.md.\n");
  return out;
}

absl::StatusOr<CommandLine> SplitCommandLine(int argc, char** argv,
                                             const std::vector<absl::string_view>& known_flags) {
  CommandLine result;
  bool flags_ended = false;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (flags_ended || arg.size() < 2 || arg[0] != '-') {
      result.positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_ended = true;
      continue;
    }
    absl::string_view body = arg.substr(arg[1] == '-' ? 2 : 1);
    const size_t equals = body.find('=');
    std::string name(body.substr(0, equals));
    const bool has_value = equals != absl::string_view::npos;
    std::string value(has_value ? body.substr(equals + 1) : "");
    if (name == "help" || name == "h" || name == "helpfull" || name == "helpshort") {
      result.help = true;
      continue;
    }
    absl::CommandLineFlag* flag =
        Contains(known_flags, name) ? absl::FindCommandLineFlag(name) : nullptr;
    if (flag == nullptr && absl::StartsWith(name, "no") && !has_value &&
        Contains(known_flags, absl::string_view(name).substr(2))) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) {
        flag = negated;
        name = name.substr(2);
        value = "false";
      }
    } else if (flag != nullptr && flag->IsOfType<bool>()) {
      if (!has_value) value = "true";
    } else if (flag != nullptr && !has_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = argv[++i];
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (see dsv3ctl help)"));
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value for --", name, ": '", value, "' (", error, ")"));
    }
    result.flags_set.push_back(name);
  }
  return result;
}

void ResetFlags(const std::vector<absl::string_view>& names) {
  for (absl::string_view name : names) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;
    std::string error;
    // A default always parses back: absl checks that round trip for every flag.
    flag->ParseFrom(flag->DefaultValue(), &error);
  }
}

absl::Status CheckVerbUsage(const VerbInfo& verb, const CommandLine& command_line) {
  for (const std::string& name : command_line.flags_set) {
    if (Contains(GlobalFlags(), name) || Contains(verb.flags, name)) continue;
    std::vector<absl::string_view> users;
    for (const VerbInfo& other : Verbs()) {
      if (Contains(other.flags, name)) users.push_back(other.name);
    }
    return absl::InvalidArgumentError(absl::StrCat("--", name, " does not apply to ", verb.name,
                                                   " (it applies to: ", absl::StrJoin(users, ", "),
                                                   ")"));
  }
  const int args = static_cast<int>(command_line.positional.size()) - 1;
  const std::string usage =
      absl::StrCat("usage: dsv3ctl ", verb.name, verb.synopsis.empty() ? "" : " ", verb.synopsis);
  if (args < verb.min_args) {
    return absl::InvalidArgumentError(
        absl::StrCat("missing ", FirstWord(verb.synopsis), " (", usage, ")"));
  }
  if (verb.max_args >= 0 && args > verb.max_args) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument '", command_line.positional[verb.max_args + 1], "' (", usage, ")"));
  }
  return absl::OkStatus();
}

std::string ResolveCoordinator(absl::string_view flag_value, absl::string_view env_value) {
  if (!flag_value.empty()) return std::string(flag_value);
  if (!env_value.empty()) return std::string(env_value);
  return kDefaultCoordinator;
}

absl::StatusOr<std::string> ParseAuthToken(absl::string_view contents) {
  const absl::string_view token = absl::StripAsciiWhitespace(contents);
  if (token.empty()) return absl::InvalidArgumentError("the token file is empty");
  for (unsigned char c : token) {
    if (c <= 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          "the token file must hold one token (no spaces or line breaks inside)");
    }
  }
  return std::string(token);
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": no such file"));
  }
  if (std::filesystem::is_directory(status)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", path, ": it is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error while reading ", path));
  return contents.str();
}

absl::StatusOr<dsv3::v1::JobSpec> ParseSpecLeniently(const std::string& spec_json) {
  dsv3::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status = google::protobuf::util::JsonStringToMessage(spec_json, &spec, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a job spec: ", std::string(status.message())));
  }
  return spec;
}

absl::StatusOr<dsv3::v1::EstimateCostRequest> BuildEstimateRequest(
    const std::string& spec_json, const EstimateOverrides& overrides) {
  ASSIGN_OR_RETURN(const dsv3::v1::JobSpec spec, ParseSpecLeniently(spec_json));
  dsv3::v1::EstimateCostRequest request;
  request.set_spec_json(spec_json);

  if (overrides.tokens) {
    request.set_tokens(*overrides.tokens);
  } else if (spec.train().steps() > 0 && spec.train().global_batch_tokens() > 0) {
    request.set_tokens(static_cast<double>(spec.train().steps()) *
                       static_cast<double>(spec.train().global_batch_tokens()));
  } else {
    return absl::InvalidArgumentError(
        "--tokens is required: the spec has no train.steps x train.global_batch_tokens");
  }

  if (overrides.devices) {
    if (*overrides.devices < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices=", *overrides.devices, " must be >= 1"));
    }
    request.set_devices(*overrides.devices);
  } else if (spec.parallel().max_workers() > 0) {
    request.set_devices(spec.parallel().max_workers());
  } else if (spec.parallel().min_workers() > 0) {
    request.set_devices(spec.parallel().min_workers());
  } else {
    request.set_devices(1);
  }

  const double peak = overrides.peak_tflops.value_or(kDefaultPeakTflops);
  if (!(peak > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--peak_tflops=", peak, " must be > 0"));
  }
  request.set_peak_tflops(peak);

  const double mfu = overrides.mfu.value_or(kDefaultMfu);
  if (!(mfu > 0 && mfu <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--mfu=", mfu, " must be in (0, 1]"));
  }
  request.set_mfu(mfu);

  // A bad price in the spec is the coordinator's to reject, by its field name.
  double price = kDefaultPricePerDeviceHour;
  if (overrides.price_per_device_hour) {
    price = *overrides.price_per_device_hour;
    if (!(price >= 0)) {
      return absl::InvalidArgumentError(absl::StrCat("--price=", price, " must be >= 0"));
    }
  } else if (spec.accounting().has_price_per_device_hour()) {
    price = spec.accounting().price_per_device_hour();
  }
  request.set_price_per_device_hour(price);
  return request;
}

}  // namespace dsv3::cli
