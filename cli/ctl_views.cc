// Renders the coordinator's messages for people (see ctl_views.h): tables, the status block and
// watch's views. Formatting of single figures comes from ctl_format.h and engine/accounting/cost.h.
#include "cli/ctl_views.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cli/ctl_format.h"
#include "engine/accounting/cost.h"
#include "google/protobuf/util/json_util.h"

namespace dsv3::cli {
namespace {

using dsv3::v1::JobState;
using dsv3::v1::JobStatus;
using dsv3::v1::RankPlacement;

std::string ClockTime(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  return absl::FormatTime("%H:%M:%S", absl::FromUnixMillis(unix_ms), absl::LocalTimeZone());
}

std::string DateTime(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(unix_ms),
                          absl::LocalTimeZone());
}

std::string Loss(const JobStatus& job) {
  if (job.step() <= 0 && job.last_loss() == 0) return "-";
  return absl::StrFormat("%.4f", job.last_loss());
}

std::string StepOfTotal(const JobStatus& job) {
  return absl::StrCat(job.step(), "/",
                      job.total_steps() > 0 ? absl::StrCat(job.total_steps()) : "?");
}

std::string ExpertRange(const RankPlacement& rank) {
  if (rank.expert_end() <= rank.expert_begin()) return "-";
  if (rank.expert_end() - rank.expert_begin() == 1) return absl::StrCat(rank.expert_begin());
  return absl::StrCat(rank.expert_begin(), "-", rank.expert_end() - 1);
}

// The ranks to show: the placement's when there is one, else the status's worker list.
const google::protobuf::RepeatedPtrField<RankPlacement>& Ranks(const JobStatus& job) {
  return job.placement().ranks_size() > 0 ? job.placement().ranks() : job.workers();
}

std::string StateAndMessage(const JobStatus& job) {
  std::string out = JobStateName(job.state());
  if (!job.message().empty()) absl::StrAppend(&out, ": ", job.message());
  return out;
}

// Whether the job's ranks have reported training figures (JobStatus.progress).
bool HasProgress(const JobStatus& job) { return job.progress().last_report_unix_ms() > 0; }

// The ETA to show: the client's own estimate when it has one, else the coordinator's (from the
// recent step times); none for an ended job.
std::optional<double> SecondsLeft(const JobStatus& job, std::optional<double> observed) {
  if (job.state() != dsv3::v1::RUNNING || observed) return observed;
  if (HasProgress(job) && job.progress().eta_seconds() > 0) return job.progress().eta_seconds();
  return std::nullopt;
}

// The loss terms in dsv3-train's notation: "MTP 5.9012, balance 1.234e-04, total 7.4524"; MTP is
// left out when it is zero (no MTP module).
std::string LossTerms(const dsv3::v1::TrainingProgress& p) {
  std::vector<std::string> parts;
  if (p.mtp_loss() != 0) parts.push_back(absl::StrFormat("MTP %.4f", p.mtp_loss()));
  parts.push_back(absl::StrFormat("balance %.3e", p.balance_loss()));
  parts.push_back(absl::StrFormat("total %.4f", p.loss()));
  return absl::StrJoin(parts, ", ");
}

// "lr 8.56e-04, grad norm 0.634, 999 tokens/s, expert load max/mean 1.31".
std::string TrainingFigures(const dsv3::v1::TrainingProgress& p) {
  return absl::StrFormat("lr %.2e, grad norm %.3f, %s tokens/s, expert load max/mean %.2f", p.lr(),
                         p.grad_norm(), FormatCount(p.tokens_per_second()), p.load_max_over_mean());
}

// "step 100: loss 5.7307, next-token accuracy 23.41%, MTP next-next accuracy 12.10%" (the main
// loss; the MTP accuracy only with an MTP module); "none yet" before the first validation.
std::string Validation(const dsv3::v1::TrainingProgress& p) {
  if (p.val_step() <= 0) return "none yet";
  std::string out = absl::StrFormat("step %d: loss %.4f, next-token accuracy %s", p.val_step(),
                                    p.val_loss(), FormatFraction(p.val_next_token_accuracy()));
  if (p.val_mtp_next_next_accuracy() >= 0) {
    absl::StrAppend(&out, ", MTP next-next accuracy ",
                    FormatFraction(p.val_mtp_next_next_accuracy()));
  }
  return out;
}

}  // namespace

std::string JobStateName(JobState state) {
  const std::string& name = dsv3::v1::JobState_Name(state);
  return name.empty() ? absl::StrCat("UNKNOWN(", static_cast<int>(state), ")") : name;
}

std::string RankStateName(dsv3::v1::RankState state) {
  const std::string& name = dsv3::v1::RankState_Name(state);
  return name.empty() ? absl::StrCat("UNKNOWN(", static_cast<int>(state), ")") : name;
}

bool IsTerminal(JobState state) {
  return state == dsv3::v1::SUCCEEDED || state == dsv3::v1::FAILED || state == dsv3::v1::CANCELLED;
}

int ExitCodeForJobState(JobState state) { return state == dsv3::v1::FAILED ? 1 : 0; }

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.add_whitespace = pretty;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    // Only a message with unresolvable Any fields can fail; ours have none.
    return absl::StrCat("{\"error\": \"cannot print as JSON: ", std::string(status.message()),
                        "\"}\n");
  }
  if (json.empty() || json.back() != '\n') json += '\n';
  return json;
}

std::string DeviceLabel(const std::string& device_kind) {
  if (device_kind == "cuda") return "GPU";
  if (device_kind == "cpu") return "CPU device";
  return "device";
}

std::string RenderJobsTable(const dsv3::v1::ListJobsResponse& jobs, int64_t now_ms) {
  if (jobs.jobs_size() == 0) return "No jobs.\n";
  TextTable table{
      {"ID", "NAME", "STATE", "STEP", "LOSS", "DEVICE-H", "COST", "AGE"}, {}, {3, 4, 5, 6, 7}};
  for (const JobStatus& job : jobs.jobs()) {
    table.rows.push_back({job.job_id(), job.name(), JobStateName(job.state()), StepOfTotal(job),
                          Loss(job), accounting::FormatDeviceHours(job.accounting().device_hours()),
                          accounting::FormatUsd(job.accounting().cost_usd()),
                          job.created_unix_ms() > 0
                              ? FormatDuration((now_ms - job.created_unix_ms()) / 1000.0)
                              : "-"});
  }
  return RenderTable(table);
}

std::string RenderWorkersTable(const dsv3::v1::ListWorkersResponse& workers, int64_t now_ms) {
  if (workers.workers_size() == 0) return "No workers.\n";
  TextTable table{
      {"NAME", "ID", "NODE", "DEVICE", "STATE", "JOB", "RANK", "HEARTBEAT"}, {}, {6, 7}};
  for (const dsv3::v1::WorkerInfo& w : workers.workers()) {
    const bool serving = !w.job_id().empty();
    table.rows.push_back({w.name(), w.worker_id(), w.node().empty() ? "-" : w.node(),
                          w.device().empty() ? "-" : w.device(), w.state(),
                          serving ? w.job_id() : "-",
                          serving && w.rank() >= 0 ? absl::StrCat(w.rank()) : "-",
                          FormatAgo(now_ms, w.last_heartbeat_unix_ms())});
  }
  return RenderTable(table);
}

std::string SummarizeRanks(const JobStatus& job) {
  const auto& ranks = Ranks(job);
  if (ranks.empty()) return "no ranks";
  std::map<int, int> counts;  // by RankState, in enum order
  for (const RankPlacement& rank : ranks) ++counts[rank.state()];
  std::vector<std::string> parts;
  for (const auto& [state, count] : counts) {
    parts.push_back(
        absl::StrCat(count, " ", RankStateName(static_cast<dsv3::v1::RankState>(state))));
  }
  return absl::StrCat(ranks.size(),
                      ranks.size() == 1 ? " rank: " : " ranks: ", absl::StrJoin(parts, ", "));
}

std::string RenderJobStatus(const JobStatus& job, int64_t now_ms) {
  const dsv3::v1::Accounting& acc = job.accounting();
  const std::string label = DeviceLabel(acc.device_kind());
  std::string out;
  auto field = [&out](absl::string_view key, absl::string_view value) {
    absl::StrAppendFormat(&out, "%-12s%s\n", key, value);
  };
  auto sub_field = [&out](absl::string_view key, absl::string_view value) {
    absl::StrAppendFormat(&out, "  %-20s%s\n", key, value);
  };

  field("Job", absl::StrCat(job.job_id(), "  ", job.name(),
                            job.stage().empty() ? "" : absl::StrCat("  (", job.stage(), ")")));
  field("State", StateAndMessage(job));
  field("Epoch", absl::StrCat(job.epoch()));
  const std::optional<double> seconds_left = SecondsLeft(job, std::nullopt);
  field("Progress", absl::StrCat(ProgressBar(job.step(), job.total_steps()), " ", StepOfTotal(job),
                                 " steps  ", ProgressPercent(job.step(), job.total_steps()),
                                 seconds_left ? "  " + FormatEta(seconds_left) : ""));
  if (HasProgress(job)) {
    const dsv3::v1::TrainingProgress& p = job.progress();
    field("Loss", absl::StrCat(Loss(job), " main (", LossTerms(p), ")"));
    field("Training", absl::StrCat(TrainingFigures(p), " (reported ",
                                   FormatAgo(now_ms, p.last_report_unix_ms()), ")"));
    field("Validation", Validation(p));
  } else {
    field("Loss", Loss(job));
  }
  field("Checkpoint", job.last_checkpoint_step() >= 0
                          ? absl::StrCat("step ", job.last_checkpoint_step(), " (last committed)")
                          : "none committed yet");
  field("Created", job.created_unix_ms() > 0
                       ? absl::StrCat(DateTime(job.created_unix_ms()), " (",
                                      FormatAgo(now_ms, job.created_unix_ms()), "), updated ",
                                      FormatAgo(now_ms, job.updated_unix_ms()))
                       : "-");

  out += "Accounting\n";
  sub_field(label + "-hours",
            absl::StrCat(accounting::FormatDeviceHours(acc.device_hours()), " (productive ",
                         accounting::FormatDeviceHours(acc.productive_device_hours()), ", lost ",
                         accounting::FormatDeviceHours(acc.lost_device_hours()), ")"));
  sub_field("tokens", absl::StrCat(FormatCount(acc.tokens()), " (",
                                   FormatCount(acc.tokens_per_second()), " tokens/s)"));
  sub_field("MFU", acc.flops_per_token() > 0
                       ? absl::StrCat(FormatFraction(acc.mfu()), " (",
                                      FormatSi(acc.flops_per_token(), "FLOP"), " per token)")
                       : FormatFraction(acc.mfu()));
  sub_field("cost", accounting::FormatUsd(acc.cost_usd()));
  sub_field(
      "per 1T tokens",
      acc.device_hours_per_trillion_tokens() > 0
          ? absl::StrCat(accounting::FormatDeviceHours(acc.device_hours_per_trillion_tokens()), " ",
                         label, "-hours")
          : "-");

  const auto& ranks = Ranks(job);
  const dsv3::v1::Placement& p = job.placement();
  if (p.world_size() > 0) {
    out += absl::StrFormat(
        "Placement   epoch %d: %d ranks = %d pipeline x %d expert-parallel x %d data-parallel\n",
        p.epoch(), p.world_size(), p.pipeline_parallel(), p.expert_parallel(), p.data_parallel());
  } else {
    out += ranks.empty() ? "Placement   none yet\n" : "Placement\n";
  }
  if (!ranks.empty()) {
    TextTable table{{"RANK", "WORKER", "NODE", "STAGE", "EXPERTS", "REPLICA", "STATE", "DETAIL"},
                    {},
                    {0, 3, 5}};
    for (const RankPlacement& r : ranks) {
      table.rows.push_back(
          {absl::StrCat(r.rank()), r.worker_name().empty() ? r.worker_id() : r.worker_name(),
           r.node().empty() ? "-" : r.node(), absl::StrCat(r.pipeline_stage()), ExpertRange(r),
           absl::StrCat(r.dp_replica()), RankStateName(r.state()), r.detail()});
    }
    for (absl::string_view line : absl::StrSplit(RenderTable(table), '\n', absl::SkipEmpty())) {
      absl::StrAppend(&out, "  ", line, "\n");
    }
  }

  if (job.events_size() > 0) {
    out += "Events (most recent last)\n";
    TextTable table{{"TIME", "EPOCH", "KIND", "MESSAGE"}, {}, {1}};
    for (const dsv3::v1::JobEvent& e : job.events()) {
      table.rows.push_back(
          {ClockTime(e.time_unix_ms()), absl::StrCat(e.epoch()), e.kind(), e.message()});
    }
    for (absl::string_view line : absl::StrSplit(RenderTable(table), '\n', absl::SkipEmpty())) {
      absl::StrAppend(&out, "  ", line, "\n");
    }
  }
  return out;
}

std::string RenderWatchLine(const JobStatus& job, const WatchFigures& figures) {
  const dsv3::v1::Accounting& acc = job.accounting();
  const dsv3::v1::TrainingProgress& p = job.progress();
  std::string line = absl::StrCat(
      ClockTime(figures.now_ms), " ", JobStateName(job.state()), " step ", StepOfTotal(job), " (",
      ProgressPercent(job.step(), job.total_steps()), ") loss ", Loss(job));
  if (HasProgress(job)) absl::StrAppendFormat(&line, " lr %.2e", p.lr());
  if (p.val_step() > 0) absl::StrAppendFormat(&line, " val %.4f", p.val_loss());
  if (job.last_checkpoint_step() > 0) absl::StrAppend(&line, " ckpt ", job.last_checkpoint_step());
  absl::StrAppend(
      &line, " ", FormatCount(acc.tokens_per_second()), " tok/s MFU ", FormatFraction(acc.mfu()),
      " ", accounting::FormatDeviceHours(acc.device_hours()), " device-h ",
      accounting::FormatUsd(acc.cost_usd()),
      IsTerminal(job.state()) ? "" : " " + FormatEta(SecondsLeft(job, figures.seconds_left)));
  if (!job.message().empty()) absl::StrAppend(&line, " | ", job.message());
  return line + "\n";
}

std::string WatchChangeKey(const JobStatus& job) {
  return absl::StrCat(JobStateName(job.state()), "|", job.epoch(), "|", job.step(), "/",
                      job.total_steps(), "|", job.last_loss(), "|", job.progress().val_step(), "|",
                      job.last_checkpoint_step(), "|", job.message(), "|", SummarizeRanks(job));
}

std::string RenderWatchPanel(const JobStatus& job, const WatchFigures& figures) {
  const dsv3::v1::Accounting& acc = job.accounting();
  std::string out;
  absl::StrAppend(&out, job.name(), " (", job.job_id(), ")  ", JobStateName(job.state()),
                  "  epoch ", job.epoch(), "\n");
  absl::StrAppend(
      &out, ProgressBar(job.step(), job.total_steps(), 30), " ", StepOfTotal(job), "  ",
      ProgressPercent(job.step(), job.total_steps()),
      IsTerminal(job.state()) ? "" : "  " + FormatEta(SecondsLeft(job, figures.seconds_left)),
      "\n");
  absl::StrAppend(
      &out, "loss ", Loss(job), "   ", FormatCount(acc.tokens_per_second()), " tok/s   MFU ",
      FormatFraction(acc.mfu()), "   ", accounting::FormatDeviceHours(acc.device_hours()), " ",
      DeviceLabel(acc.device_kind()), "-h   ", accounting::FormatUsd(acc.cost_usd()), "\n");
  if (HasProgress(job)) {
    // Short lines (a wrapped line would spoil the redraw on a narrow terminal).
    const dsv3::v1::TrainingProgress& p = job.progress();
    if (p.mtp_loss() != 0) absl::StrAppendFormat(&out, "MTP %.4f  ", p.mtp_loss());
    absl::StrAppendFormat(&out, "balance %.3e  lr %.2e  gnorm %.3f  load %.2f\n", p.balance_loss(),
                          p.lr(), p.grad_norm(), p.load_max_over_mean());
    if (p.val_step() > 0) {
      absl::StrAppendFormat(&out, "val @%d loss %.4f  acc %s", p.val_step(), p.val_loss(),
                            FormatFraction(p.val_next_token_accuracy()));
      if (p.val_mtp_next_next_accuracy() >= 0) {
        absl::StrAppend(&out, "  MTP acc ", FormatFraction(p.val_mtp_next_next_accuracy()));
      }
    } else {
      out += "val -";
    }
    absl::StrAppend(
        &out, "  ckpt ",
        job.last_checkpoint_step() >= 0 ? absl::StrCat("step ", job.last_checkpoint_step()) : "-",
        "\n");
  }
  absl::StrAppend(&out, job.message().empty() ? "-" : job.message(), "\n");
  absl::StrAppend(&out, SummarizeRanks(job), "\n");
  return out;
}

}  // namespace dsv3::cli
