// `dsv3-train schedule` (train_schedule_cmd.h): flag parsing, then build, simulate and print with
// engine/parallel. No schedule logic here.
#include "cli/train_schedule_cmd.h"

#include <map>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/parallel/schedule.h"
#include "engine/parallel/schedule_factory.h"
#include "engine/parallel/schedule_format.h"
#include "engine/parallel/schedule_sim.h"

namespace dsv3::cli {

const char kScheduleSynopsis[] =
    "schedule --kind=dualpipe|dualpipev|1f1b --ranks=N --micro_batches=C [--nocomm] [--timeline] "
    "[--costs=F,B,W,FB] [--timing=dataflow|rendezvous]";

namespace {

constexpr char kUsage[] =
    "usage: dsv3-train schedule --kind=dualpipe|dualpipev|1f1b --ranks=N --micro_batches=C\n"
    "                           [--nocomm] [--timeline] [--costs=F,B,W,FB]\n"
    "                           [--timing=dataflow|rendezvous]\n"
    "Prints each rank's op list, one line per rank, in the notation of spec Appendix A:\n"
    "  Fa3 forward of direction-a micro-batch 3, Bb1 full backward, Bib1 input-only backward,\n"
    "  Wb1 deferred weight gradient, Fa3&Bb1 overlapped pair, {sFa0>1,rBb2>1} one comm batch\n"
    "  (s send / r receive, F activation / B gradient, direction, micro-batch, >peer rank).\n"
    "  --nocomm      compute ops only\n"
    "  --timeline    also simulate with the costs below and print each op's start time,\n"
    "                the makespan, idle time and peak live activations per rank\n"
    "  --costs       F,B,W,FB durations (default 1,2,1,3; an input-only backward costs B-W)\n"
    "  --timing      dataflow (default; an op starts once its rank is free and its inputs\n"
    "                exist, as in spec Appendix A.1) or rendezvous (a rank also waits at each\n"
    "                comm batch until every peer has posted its side)\n"
    "Exit codes: 0 success, 1 internal error, 2 bad usage or (ranks, micro_batches).\n";

struct Options {
  std::string kind;
  std::optional<int> ranks;
  std::optional<int> micro_batches;
  bool comm = true;
  bool timeline = false;
  parallel::SimOptions sim;
  bool help = false;
};

absl::Status ParseInt(absl::string_view name, absl::string_view value, std::optional<int>* out) {
  int v = 0;
  if (!absl::SimpleAtoi(value, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " needs an integer, got \"", value, "\""));
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ParseBool(absl::string_view name, absl::string_view value, bool* out) {
  if (value == "true" || value == "1") {
    *out = true;
  } else if (value == "false" || value == "0") {
    *out = false;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " needs true or false, got \"", value, "\""));
  }
  return absl::OkStatus();
}

absl::Status ParseCosts(absl::string_view value, parallel::SimCosts* costs) {
  const std::vector<absl::string_view> parts = absl::StrSplit(value, ',');
  double v[4];
  bool ok = parts.size() == 4;
  for (size_t i = 0; ok && i < 4; ++i) ok = absl::SimpleAtod(parts[i], &v[i]) && v[i] >= 0;
  if (!ok || v[1] < v[2]) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--costs needs four non-negative numbers F,B,W,FB with B >= W, got \"", value, "\""));
  }
  *costs = parallel::SimCosts{v[0], v[1], v[2], v[3]};
  return absl::OkStatus();
}

absl::StatusOr<Options> ParseArgs(const std::vector<std::string>& args) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
    }
    std::string name(arg);
    std::optional<std::string> value;
    if (const size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
    }
    const bool is_bool = name == "comm" || name == "nocomm" || name == "timeline" ||
                         name == "notimeline" || name == "help" || name == "h";
    if (!value && !is_bool) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    absl::Status s;
    if (name == "kind") {
      o.kind = *value;
    } else if (name == "ranks") {
      s = ParseInt(name, *value, &o.ranks);
    } else if (name == "micro_batches") {
      s = ParseInt(name, *value, &o.micro_batches);
    } else if (name == "costs") {
      s = ParseCosts(*value, &o.sim.costs);
    } else if (name == "timing") {
      if (*value == "dataflow") {
        o.sim.timing = parallel::TimingModel::kDataflow;
      } else if (*value == "rendezvous") {
        o.sim.timing = parallel::TimingModel::kRendezvous;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--timing needs dataflow or rendezvous, got \"", *value, "\""));
      }
    } else if (name == "comm" || name == "timeline") {
      bool& flag = name == "comm" ? o.comm : o.timeline;
      flag = true;
      if (value) s = ParseBool(name, *value, &flag);
    } else if ((name == "nocomm" || name == "notimeline") && !value) {
      (name == "nocomm" ? o.comm : o.timeline) = false;
    } else if ((name == "help" || name == "h") && !value) {
      o.help = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!s.ok()) return s;
  }
  return o;
}

}  // namespace

int RunScheduleCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<Options> options = ParseArgs(args);
  if (!options.ok()) {
    err << "dsv3-train schedule: " << options.status().message() << " (see --help)\n";
    return 2;
  }
  if (options->help) {
    out << kUsage;
    return 0;
  }
  if (options->kind.empty() || !options->ranks || !options->micro_batches) {
    err << "dsv3-train schedule: --kind, --ranks and --micro_batches are required (see --help)\n";
    return 2;
  }
  absl::StatusOr<parallel::ScheduleKind> kind = parallel::ParseScheduleKind(options->kind);
  if (!kind.ok()) {
    err << "dsv3-train schedule: " << kind.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<parallel::Schedule> schedule =
      parallel::BuildSchedule(*kind, *options->ranks, *options->micro_batches);
  if (!schedule.ok()) {
    err << "dsv3-train schedule: " << schedule.status().message() << "\n";
    return 2;
  }
  // Every printed schedule is first run through the rendezvous simulator.
  absl::StatusOr<parallel::SimResult> sim = parallel::Simulate(*schedule, options->sim);
  if (!sim.ok()) {
    err << "dsv3-train schedule: the built schedule fails its simulation: " << sim.status() << "\n";
    return 1;
  }
  out << parallel::FormatSchedule(*schedule, parallel::FormatOptions{options->comm});
  if (options->timeline) out << parallel::FormatTimeline(*schedule, *sim);
  return 0;
}

}  // namespace dsv3::cli
