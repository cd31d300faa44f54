// The verbs of dsv3ctl (see ctl_commands.h): one function per verb, each a call or a stream to the
// coordinator and a view of the answer. Formatting lives in ctl_views / ctl_report.
#include "cli/ctl_commands.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/ctl_errors.h"
#include "cli/ctl_format.h"
#include "cli/ctl_report.h"
#include "cli/ctl_views.h"
#include "engine/accounting/cost.h"

namespace dsv3::cli {
namespace {

using dsv3::v1::JobStatus;

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// "1 device", "8 devices".
std::string Devices(int64_t n) { return absl::StrCat(n, n == 1 ? " device" : " devices"); }

// The shared state of one verb's run.
struct Run {
  const VerbInfo& verb;
  const CtlOptions& options;
  JobClient& client;
  std::ostream& out;
  std::ostream& err;

  // Prints the line for a failed call and returns its exit code.
  int ServerError(const absl::Status& status) const {
    err << ServerErrorLine({std::string(verb.name), options.coordinator, options.timeout_s}, status)
        << "\n";
    return ExitCodeForServerStatus(status.code());
  }
  // Prints the line for bad usage or input and returns 2.
  int UsageError(absl::string_view message) const {
    err << ErrorLine(verb.name, message) << "\n";
    return kExitUsage;
  }
};

int RunSubmit(const Run& run, const std::string& spec_path) {
  const absl::StatusOr<std::string> spec_json = ReadTextFile(spec_path);
  if (!spec_json.ok()) return run.UsageError(spec_json.status().message());
  std::error_code ec;
  const std::filesystem::path cwd = std::filesystem::current_path(ec);
  if (ec) return run.UsageError(absl::StrCat("cannot get the current directory: ", ec.message()));

  dsv3::v1::SubmitJobRequest request;
  request.set_spec_json(*spec_json);
  request.set_base_dir(cwd.string());
  const absl::StatusOr<dsv3::v1::SubmitJobResponse> response = run.client.SubmitJob(request);
  if (!response.ok()) return run.ServerError(response.status());
  if (run.options.json) {
    run.out << ToJson(*response, /*pretty=*/true);
  } else {
    run.out << response->job_id() << "\n";
  }
  return kExitOk;
}

int RunJobs(const Run& run) {
  const absl::StatusOr<dsv3::v1::ListJobsResponse> response = run.client.ListJobs();
  if (!response.ok()) return run.ServerError(response.status());
  run.out << (run.options.json ? ToJson(*response, /*pretty=*/true)
                               : RenderJobsTable(*response, NowMs()));
  return kExitOk;
}

int RunStatus(const Run& run, const std::string& job_id) {
  dsv3::v1::GetJobRequest request;
  request.set_job_id(job_id);
  request.set_max_events(run.options.events);
  const absl::StatusOr<JobStatus> job = run.client.GetJob(request);
  if (!job.ok()) return run.ServerError(job.status());
  run.out << (run.options.json ? ToJson(*job, /*pretty=*/true) : RenderJobStatus(*job, NowMs()));
  return kExitOk;
}

int RunWorkers(const Run& run) {
  const absl::StatusOr<dsv3::v1::ListWorkersResponse> response = run.client.ListWorkers();
  if (!response.ok()) return run.ServerError(response.status());
  run.out << (run.options.json ? ToJson(*response, /*pretty=*/true)
                               : RenderWorkersTable(*response, NowMs()));
  return kExitOk;
}

int RunCancel(const Run& run, const std::string& job_id) {
  const absl::StatusOr<JobStatus> job = run.client.CancelJob(job_id);
  if (!job.ok()) return run.ServerError(job.status());
  run.out << (run.options.json ? ToJson(*job, /*pretty=*/true) : JobStateName(job->state()) + "\n");
  return kExitOk;
}

int RunReport(const Run& run, const std::vector<std::string>& job_ids) {
  std::vector<JobStatus> jobs;
  for (const std::string& job_id : job_ids) {
    dsv3::v1::GetJobRequest request;
    request.set_job_id(job_id);
    request.set_max_events(1);
    absl::StatusOr<JobStatus> job = run.client.GetJob(request);
    if (!job.ok()) return run.ServerError(job.status());
    jobs.push_back(*std::move(job));
  }
  const Report report = BuildReport(jobs);
  run.out << (run.options.json ? ReportToJson(report, run.options.target_tokens)
                               : RenderReport(report, run.options.target_tokens));
  return kExitOk;
}

int RunEstimate(const Run& run, const std::string& spec_path) {
  const absl::StatusOr<std::string> spec_json = ReadTextFile(spec_path);
  if (!spec_json.ok()) return run.UsageError(spec_json.status().message());
  const absl::StatusOr<dsv3::v1::EstimateCostRequest> request =
      BuildEstimateRequest(*spec_json, run.options.estimate);
  if (!request.ok()) return run.UsageError(request.status().message());
  const absl::StatusOr<dsv3::v1::EstimateCostResponse> response = run.client.EstimateCost(*request);
  if (!response.ok()) return run.ServerError(response.status());
  if (run.options.json) {
    run.out << ToJson(*response, /*pretty=*/true);
    return kExitOk;
  }
  const dsv3::v1::EstimateCostResponse& r = *response;
  run.out << r.table();
  if (!r.table().empty() && r.table().back() != '\n') run.out << "\n";
  run.out << "\n"
          << absl::StrFormat(
                 "Inputs: %s tokens on %s at %g TFLOP/s peak, MFU %s, %s/device-hour%s\n",
                 FormatCount(request->tokens()), Devices(request->devices()),
                 request->peak_tflops(), FormatFraction(request->mfu()),
                 FormatPrice(request->price_per_device_hour()),
                 r.stage().empty() ? "" : absl::StrCat(" (stage ", r.stage(), ")"))
          << absl::StrFormat(
                 "FLOPs per token (training, forward + backward, seq_len %d): main %s, MTP %s, "
                 "total %s\n",
                 r.seq_len(), FormatSi(r.flops_per_token_main(), "FLOP"),
                 FormatSi(r.flops_per_token_mtp(), "FLOP"),
                 FormatSi(r.flops_per_token_total(), "FLOP"))
          << absl::StrFormat("Parameters: %s total, %s activated per token\n",
                             FormatCount(r.total_params()), FormatCount(r.activated_params()))
          << absl::StrFormat("Estimate: %s device-hours, %s on %s, %s\n",
                             accounting::FormatDeviceHours(r.device_hours()),
                             r.days() >= 1 ? absl::StrFormat("%.1f days", r.days())
                                           : FormatDuration(r.days() * 86400),
                             Devices(request->devices()), accounting::FormatUsd(r.cost_usd()));
  return kExitOk;
}

// watch: follows the job until it ends; reconnects for a while when the coordinator goes away
// after the stream has started (it may be restarting).
int RunWatch(const Run& run, const std::string& job_id) {
  EtaEstimator eta;
  dsv3::v1::JobState last_state = dsv3::v1::JOB_STATE_UNSPECIFIED;
  bool got_any = false;
  bool ended = false;
  int panel_lines = 0;
  std::string last_line_key;  // line mode: WatchChangeKey of the last line printed
  absl::Time last_line_time;
  constexpr absl::Duration kFirstBackoff = absl::Milliseconds(500);
  constexpr absl::Duration kMaxBackoff = absl::Seconds(5);
  absl::Duration backoff = kFirstBackoff;
  std::optional<absl::Time> failing_since;

  auto on_update = [&](const JobStatus& job) {
    got_any = true;
    failing_since.reset();
    backoff = kFirstBackoff;
    const absl::Time now = absl::Now();
    eta.Observe(absl::ToDoubleSeconds(now - absl::UnixEpoch()), job.step());
    const WatchFigures figures{eta.SecondsLeft(job.total_steps()), absl::ToUnixMillis(now)};
    if (run.options.json) {
      run.out << ToJson(job, /*pretty=*/false);
    } else if (run.options.out_is_terminal) {
      if (panel_lines > 0) run.out << "\x1b[" << panel_lines << "A\x1b[J";
      const std::string panel = RenderWatchPanel(job, figures);
      panel_lines = static_cast<int>(std::count(panel.begin(), panel.end(), '\n'));
      run.out << panel;
    } else if (const std::string key = WatchChangeKey(job);
               key != last_line_key || IsTerminal(job.state()) ||
               now - last_line_time >= absl::Seconds(kWatchLineEveryS)) {
      run.out << RenderWatchLine(job, figures);
      last_line_key = key;
      last_line_time = now;
    }
    run.out.flush();
    last_state = job.state();
    ended = IsTerminal(job.state());
    return !ended;
  };

  while (true) {
    const absl::Status status = run.client.WatchJob(job_id, on_update);
    if (ended) return ExitCodeForJobState(last_state);
    if (status.ok()) {
      if (got_any) {
        run.err << ErrorLine(run.verb.name, absl::StrCat("the coordinator ended the stream while ",
                                                         job_id, " is ", JobStateName(last_state)))
                << "\n";
      }
      return ExitCodeForJobState(last_state);
    }
    const bool retryable = status.code() == absl::StatusCode::kUnavailable ||
                           status.code() == absl::StatusCode::kCancelled;
    if (!retryable || !got_any) return run.ServerError(status);
    const absl::Time now = absl::Now();
    if (!failing_since) failing_since = now;
    const absl::Duration failing_for = now - *failing_since;
    if (failing_for >= absl::Seconds(run.options.retry_s)) {
      run.err << "dsv3ctl: watch: gave up: the coordinator at " << run.options.coordinator
              << " has been unreachable for " << FormatDuration(absl::ToDoubleSeconds(failing_for))
              << "\n";
      return kExitServerError;
    }
    const absl::Duration wait = std::min(backoff, absl::Seconds(run.options.retry_s) - failing_for);
    run.err << "dsv3ctl: watch: lost the coordinator at " << run.options.coordinator << " ("
            << OneLine(status.message()) << "); retrying in "
            << absl::StrFormat("%.1fs", absl::ToDoubleSeconds(wait)) << "\n";
    panel_lines = 0;  // the message moved the cursor; draw the next panel below it
    absl::SleepFor(wait);
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

}  // namespace

int RunVerb(const VerbInfo& verb, const std::vector<std::string>& args, const CtlOptions& options,
            JobClient& client, std::ostream& out, std::ostream& err) {
  const Run run{verb, options, client, out, err};
  const absl::string_view name = verb.name;
  if (name == "submit") return RunSubmit(run, args.at(0));
  if (name == "jobs") return RunJobs(run);
  if (name == "status") return RunStatus(run, args.at(0));
  if (name == "watch") return RunWatch(run, args.at(0));
  if (name == "workers") return RunWorkers(run);
  if (name == "cancel") return RunCancel(run, args.at(0));
  if (name == "report") return RunReport(run, args);
  if (name == "estimate") return RunEstimate(run, args.at(0));
  return run.UsageError(absl::StrCat("unknown verb '", name, "'"));
}

}  // namespace dsv3::cli
