// Coordinator: job lifecycle, membership, placement and accounting; see coordinator.h.
#include "coordinator/coordinator.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "coordinator/job_spec.h"
#include "coordinator/planner.h"
#include "engine/accounting/cost.h"
#include "engine/accounting/flops.h"
#include "spdlog/spdlog.h"

namespace dsv3::coordinator {
namespace {

int64_t UnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

bool IsActive(v1::JobState state) { return state == v1::RUNNING || state == v1::RECOVERING; }

// A rank whose process has ended: set by the coordinator from the rank's exit report (or a lost
// worker), never taken from a worker's heartbeat.
bool IsEndedRank(v1::RankState state) { return state == v1::DONE || state == v1::LOST; }

absl::Status CheckWorkerName(const std::string& name) {
  if (name.empty() || name.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker name must have 1 to 128 characters, got ", name.size()));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) {
      return absl::InvalidArgumentError(
          "worker name may contain only letters, digits, '.', '_' and '-'");
    }
  }
  return absl::OkStatus();
}

// Peak FLOP/s of one device of the given kind when the spec gives none: the H800/H100 dense BF16
// figure for CUDA; for CPU the figure of this project's reference machine (2 cores x AVX-512 FMA
// x 2 units x 16 FP32 lanes x 2 FLOP at ~2.0 GHz = 0.256 TFLOP/s).
double DefaultPeakTflops(const std::string& device) { return device == "cuda" ? 989.0 : 0.256; }

// A rank's error output is kept to this many characters (its end, where the error is).
constexpr size_t kMaxDetailChars = 2000;

// The last `max_chars` characters of `text`, not starting inside a UTF-8 sequence.
std::string Tail(const std::string& text, size_t max_chars) {
  if (text.size() <= max_chars) return text;
  size_t begin = text.size() - max_chars;
  while (begin < text.size() && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) ++begin;
  return text.substr(begin);
}

// The last non-blank line of a process's error output (usually the error itself), at most 300
// characters; "no error output" when there is none.
std::string LastLine(const std::string& text) {
  std::string line;
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    l = absl::StripAsciiWhitespace(l);
    if (!l.empty()) line = std::string(l);
  }
  if (line.empty()) return "no error output";
  return line.size() > 300 ? absl::StrCat("...", Tail(line, 300)) : line;
}

// Multi-line error output on one line (for tables and messages): its non-blank lines joined by
// " | ".
std::string OneLine(const std::string& text) {
  std::vector<std::string> lines;
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    l = absl::StripAsciiWhitespace(l);
    if (!l.empty()) lines.emplace_back(l);
  }
  return absl::StrJoin(lines, " | ");
}

// What a rank process's exit code means (RankReport.exit_code).
std::string ExitMeaning(int32_t code) {
  if (code == 0) return "done";
  if (code == 1) return "training failed";
  if (code == 2) return "bad input";
  if (code < 0) return absl::StrCat("killed by signal ", -static_cast<int64_t>(code));
  return "failed";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    const CoordinatorOptions& options) {
  if (options.state_dir.empty()) return absl::InvalidArgumentError("--state_dir is required");
  if (options.lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the lease must be positive");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.state_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the state directory ", options.state_dir, ": ", ec.message()));
  }
  const std::string lock_path = options.state_dir + "/LOCK";
  const int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open ", lock_path, ": ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "another coordinator is using the state directory ", options.state_dir));
  }
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(options.state_dir);
  if (!store.ok()) {
    close(fd);
    return store.status();
  }
  std::unique_ptr<Coordinator> c(new Coordinator(options, std::move(*store)));
  c->lock_fd_ = fd;
  absl::MutexLock lock(&c->mu_);
  RETURN_IF_ERROR(c->Restore());
  return c;
}

Coordinator::Coordinator(const CoordinatorOptions& options, std::unique_ptr<JobStore> store)
    : options_(options),
      clock_(options.clock != nullptr ? options.clock : &real_clock_),
      coordinator_id_(store->coordinator_id()),
      store_(std::move(store)),
      membership_(options.lease) {}

Coordinator::~Coordinator() {
  Stop();
  {
    absl::MutexLock lock(&mu_);
    store_.reset();
  }
  if (lock_fd_ >= 0) close(lock_fd_);  // releases the flock
}

absl::Status Coordinator::Restore() {
  const absl::Time now = clock_->Now();
  ASSIGN_OR_RETURN(std::vector<v1::JobStatus> jobs, store_->LoadJobs());
  for (v1::JobStatus& status : jobs) {
    Job job;
    job.status = std::move(status);
    job.last_persist = now;
    job.last_accrual = now;
    job.waiting_since = now;
    if (IsActive(job.status.state())) {
      if (job.status.accounting().accrued_until_unix_ms() > 0) {
        job.outage_from =
            std::min(now, absl::FromUnixMillis(job.status.accounting().accrued_until_unix_ms()));
      }
      // The ranks' workers must re-attach (they keep running while the coordinator is down).
      job.rebind_deadline =
          now + std::max(options_.restart_grace, Membership::kLeasesBeforeDead * options_.lease);
      for (auto& rank : *job.status.mutable_workers()) {
        rank.set_worker_id("");
        rank.set_state(v1::ASSIGNED);
        rank.set_detail("coordinator restarted; waiting for the worker to re-attach");
      }
      *job.status.mutable_placement()->mutable_ranks() = job.status.workers();
      AddEvent(job, "coordinator_restarted",
               "coordinator restarted; waiting for the job's workers to re-attach");
    }
    const std::string id = job.status.job_id();
    job_order_.push_back(id);
    jobs_.emplace(id, std::move(job));
  }
  ASSIGN_OR_RETURN(std::vector<v1::WorkerInfo> workers, store_->LoadWorkers());
  for (v1::WorkerInfo& w : workers) {
    if (w.state() != "dead" && w.state() != "detached") w.set_state("unknown (not re-attached)");
    w.set_job_id("");
    w.set_rank(-1);
    remembered_workers_[w.name()] = std::move(w);
  }
  for (auto& [id, job] : jobs_) Persist(job, /*force=*/true);
  spdlog::info("state restored from {}: {} jobs, {} known workers", options_.state_dir,
               jobs_.size(), remembered_workers_.size());
  return absl::OkStatus();
}

void Coordinator::Start() {
  if (ticker_ != nullptr) return;
  ticker_ = std::make_unique<std::thread>([this] { RunTicks(); });
}

void Coordinator::Stop() {
  if (ticker_ != nullptr) {
    stop_.Notify();
    ticker_->join();
    ticker_.reset();
  }
  absl::MutexLock lock(&mu_);
  for (auto& [id, job] : jobs_) Persist(job, /*force=*/true);
  for (auto& [id, sink] : sessions_) sink->Close(absl::UnavailableError("coordinator shutting down"));
  sessions_.clear();
}

void Coordinator::RunTicks() {
  while (!stop_.WaitForNotificationWithTimeout(options_.tick)) Tick();
}

// --- Helpers ---------------------------------------------------------------------------------------

Coordinator::Job* Coordinator::FindJob(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second;
}

void Coordinator::AddEvent(Job& job, const std::string& kind, const std::string& message) {
  v1::JobEvent event;
  event.set_time_unix_ms(UnixMs(clock_->Now()));
  event.set_epoch(job.status.epoch());
  event.set_kind(kind);
  event.set_message(message);
  job.pending_events.push_back(std::move(event));
  job.dirty = true;
  Touch(job);
  spdlog::info("{} [{}] {}", job.status.job_id(), kind, message);
}

void Coordinator::Touch(Job& job) {
  ++job.version;
  job.status.set_updated_unix_ms(UnixMs(clock_->Now()));
}

void Coordinator::SetState(Job& job, v1::JobState state, const std::string& message) {
  job.status.set_state(state);
  job.status.set_message(message);
  job.dirty = true;
  Touch(job);
}

void Coordinator::Persist(Job& job, bool force) {
  const absl::Time now = clock_->Now();
  const bool due = job.accounting_dirty && now - job.last_persist >= options_.persist_interval;
  if (!job.dirty && !(force && job.accounting_dirty) && !due) return;
  absl::Status s = store_->UpdateJob(job.status, job.pending_events);
  if (!s.ok()) {
    // Keep the events and retry on the next tick; the in-memory state stays authoritative.
    spdlog::error("cannot persist job {}: {}", job.status.job_id(), s.ToString());
    return;
  }
  job.pending_events.clear();
  job.dirty = false;
  job.accounting_dirty = false;
  job.last_persist = now;
}

void Coordinator::PersistWorker(const WorkerRecord& worker) {
  absl::Status s = store_->PutWorker(ToWorkerInfo(worker));
  if (!s.ok()) spdlog::warn("cannot persist worker {}: {}", worker.name, s.ToString());
}

v1::WorkerInfo Coordinator::ToWorkerInfo(const WorkerRecord& w) const {
  v1::WorkerInfo info;
  info.set_worker_id(w.id);
  info.set_name(w.name);
  info.set_node(w.node);
  info.set_device(w.device);
  info.set_state(!w.alive ? "dead" : (w.job_id.empty() ? "idle" : "busy"));
  info.set_job_id(w.job_id);
  info.set_rank(w.rank);
  info.set_last_heartbeat_unix_ms(UnixMs(w.last_heartbeat));
  info.set_attached_unix_ms(UnixMs(w.attached));
  info.set_address(w.address);
  return info;
}

// --- JobService -------------------------------------------------------------------------------------

absl::StatusOr<std::string> Coordinator::SubmitJob(const std::string& spec_json,
                                                   const std::string& base_dir) {
  ASSIGN_OR_RETURN(v1::JobSpec parsed, ParseJobSpec(spec_json));
  ValidateOptions opts;
  opts.base_dir = base_dir;
  ASSIGN_OR_RETURN(v1::JobSpec spec, ValidateJobSpec(parsed, opts));

  const absl::Time now = clock_->Now();
  v1::JobStatus status;
  status.set_name(spec.name());
  status.set_stage(spec.stage());
  status.set_state(v1::PENDING);
  status.set_epoch(0);
  status.set_step(0);
  status.set_total_steps(spec.train().steps());
  status.set_last_checkpoint_step(-1);
  status.set_created_unix_ms(UnixMs(now));
  status.set_updated_unix_ms(UnixMs(now));
  status.set_message(absl::StrFormat("waiting for %d idle workers", spec.parallel().min_workers()));
  const accounting::TrainingFlops flops =
      accounting::TrainingFlopsPerToken(ToModelConfig(spec.model()), spec.train().seq_len());
  status.mutable_accounting()->set_flops_per_token(flops.MainModel());
  *status.mutable_spec() = spec;

  v1::JobEvent event;
  event.set_time_unix_ms(UnixMs(now));
  event.set_kind("submitted");
  event.set_message(absl::StrFormat("job '%s' accepted: %d steps, pipeline %d (%s), expert "
                                    "parallel %d, %s, workers %d-%d",
                                    spec.name(), spec.train().steps(),
                                    spec.parallel().pipeline_parallel(), spec.parallel().schedule(),
                                    spec.parallel().expert_parallel(), spec.precision(),
                                    spec.parallel().min_workers(), spec.parallel().max_workers()));

  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::string job_id, store_->CreateJob(status, event));
  status.set_job_id(job_id);
  Job job;
  job.status = std::move(status);
  job.last_persist = now;
  job.last_accrual = now;
  job.waiting_since = now;
  job_order_.push_back(job_id);
  jobs_.emplace(job_id, std::move(job));
  spdlog::info("{} submitted: {}", job_id, event.message());
  return job_id;
}

absl::StatusOr<v1::JobStatus> Coordinator::GetJob(const std::string& job_id, int max_events) {
  absl::MutexLock lock(&mu_);
  Job* job = FindJob(job_id);
  if (job == nullptr) return absl::NotFoundError(absl::StrCat("no job '", job_id, "'"));
  Persist(*job, /*force=*/false);
  v1::JobStatus status = job->status;
  ASSIGN_OR_RETURN(std::vector<v1::JobEvent> events,
                   store_->Events(job_id, max_events > 0 ? max_events : 20));
  for (auto& e : events) *status.add_events() = std::move(e);
  for (const auto& e : job->pending_events) *status.add_events() = e;
  return status;
}

std::vector<v1::JobStatus> Coordinator::ListJobs() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::JobStatus> out;
  for (auto it = job_order_.rbegin(); it != job_order_.rend(); ++it) {
    v1::JobStatus status = jobs_.at(*it).status;
    status.clear_spec();
    out.push_back(std::move(status));
  }
  return out;
}

absl::StatusOr<v1::JobStatus> Coordinator::CancelJob(const std::string& job_id) {
  {
    absl::MutexLock lock(&mu_);
    Job* job = FindJob(job_id);
    if (job == nullptr) return absl::NotFoundError(absl::StrCat("no job '", job_id, "'"));
    if (IsTerminal(job->status.state())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " has already ended (",
                       v1::JobState_Name(job->status.state()), ")"));
    }
    Accrue(*job, clock_->Now());
    ReleaseWorkers(*job, "job cancelled");
    SetState(*job, v1::CANCELLED, "cancelled by the user");
    AddEvent(*job, "cancelled", "cancelled by the user");
    Persist(*job, /*force=*/true);
    kv_.Drop(job_id, INT64_MAX);
  }
  return GetJob(job_id, 0);
}

absl::StatusOr<v1::JobStatus> Coordinator::WaitForJobChange(const std::string& job_id,
                                                            int64_t* version,
                                                            absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (FindJob(job_id) == nullptr) return absl::NotFoundError(absl::StrCat("no job '", job_id, "'"));
    const int64_t seen = *version;
    auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return jobs_.at(job_id).version != seen;
    };
    mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
    *version = jobs_.at(job_id).version;
  }
  return GetJob(job_id, 0);
}

absl::StatusOr<v1::EstimateCostResponse> Coordinator::EstimateCost(
    const v1::EstimateCostRequest& request) {
  ASSIGN_OR_RETURN(v1::JobSpec spec, ParseJobSpec(request.spec_json()));
  RETURN_IF_ERROR(ValidateForEstimate(spec));
  const int64_t seq_len = spec.train().has_seq_len() ? spec.train().seq_len() : 4096;
  if (seq_len <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("train.seq_len=", seq_len, " must be positive"));
  }
  const ModelConfig config = ToModelConfig(spec.model());
  const accounting::TrainingFlops flops = accounting::TrainingFlopsPerToken(config, seq_len);
  const accounting::ParameterCounts params = accounting::CountParameters(config);

  accounting::CostInputs in;
  in.flops_per_token = flops.MainModel();
  in.tokens = request.tokens();
  in.devices = request.devices();
  in.peak_tflops = request.peak_tflops();
  in.mfu = request.mfu();
  in.price_per_device_hour = request.price_per_device_hour();
  if (std::string problem = accounting::ValidateCostInputs(in); !problem.empty()) {
    return absl::InvalidArgumentError(problem);
  }
  const accounting::CostEstimate est = accounting::EstimateCost(in);

  v1::EstimateCostResponse out;
  out.set_flops_per_token_main(flops.MainModel());
  out.set_flops_per_token_mtp(flops.mtp);
  out.set_flops_per_token_total(flops.MainModelPlusMtp());
  out.set_total_params(static_cast<double>(params.total + params.mtp_total));
  out.set_activated_params(static_cast<double>(params.activated));
  out.set_device_hours(est.device_hours);
  out.set_days(est.wall_clock_days);
  out.set_cost_usd(est.usd);
  out.set_device_hours_per_trillion_tokens(est.device_hours_per_trillion_tokens);
  out.set_seq_len(seq_len);
  const std::string stage = spec.stage().empty() ? "pre_training" : spec.stage();
  out.set_stage(stage);
  accounting::StageUsage usage;
  usage.stage = stage == "context_extension" ? accounting::kContextExtension
                : stage == "post_training"   ? accounting::kPostTraining
                                             : accounting::kPreTraining;
  usage.device_hours = est.device_hours;
  usage.tokens = request.tokens();
  accounting::CostTableOptions table;
  table.price_per_device_hour = request.price_per_device_hour();
  table.devices = request.devices();
  out.set_table(accounting::RenderCostTable({usage}, table));
  return out;
}

std::vector<v1::WorkerInfo> Coordinator::ListWorkers() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::WorkerInfo> out;
  std::map<std::string, bool> seen;
  for (const WorkerRecord* w : membership_.All()) {
    if (seen[w->name]) continue;  // only the newest record of a name
    seen[w->name] = true;
    out.push_back(ToWorkerInfo(*w));
  }
  for (const auto& [name, info] : remembered_workers_) {
    if (!seen[name]) out.push_back(info);
  }
  return out;
}

// --- WorkerService ----------------------------------------------------------------------------------

absl::StatusOr<v1::AttachResponse> Coordinator::Attach(const v1::AttachRequest& request,
                                                       const std::string& peer) {
  RETURN_IF_ERROR(CheckWorkerName(request.name()));
  const std::string device = request.device().empty() ? "cpu" : request.device();
  if (device != "cpu" && device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("device must be 'cpu' or 'cuda', got '", request.device().substr(0, 64), "'"));
  }
  if (request.device_count() < 0 || request.device_count() > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("device_count=", request.device_count(), " is out of range [0, 1024]"));
  }
  if (request.node().size() > 256) return absl::InvalidArgumentError("node name too long");

  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  WorkerRecord record;
  record.name = request.name();
  record.node = request.node().empty() ? request.hostname().substr(0, 256) : request.node();
  if (record.node.empty()) record.node = request.name();
  record.device = device;
  record.device_count = request.device_count() > 0 ? request.device_count() : 1;
  record.address = peer;
  record.has_engine = request.has_engine();
  std::string replaced_id;
  const WorkerRecord& w = membership_.Attach(std::move(record), now, &replaced_id);
  const std::string worker_id = w.id;
  remembered_workers_.erase(request.name());
  if (!replaced_id.empty()) {
    if (auto it = sessions_.find(replaced_id); it != sessions_.end()) {
      it->second->Close(absl::AbortedError("the worker re-attached under the same name"));
      sessions_.erase(it);
    }
  }

  // Re-bind the ranks the worker is still running, if their job and epoch are current.
  for (const v1::RankProgress& running : request.running()) {
    Job* job = FindJob(running.job_id());
    bool rebound = false;
    if (job != nullptr && job->status.state() == v1::RUNNING &&
        job->status.epoch() == running.epoch()) {
      for (auto& rank : *job->status.mutable_workers()) {
        if (rank.rank() == running.rank() && rank.worker_name() == request.name() &&
            rank.state() != v1::LOST) {
          // Empty only for ranks restored after a coordinator restart and not yet re-bound.
          const bool back_after_restart = rank.worker_id().empty();
          rank.set_worker_id(worker_id);
          if (IsEndedRank(rank.state())) {
            // Already DONE here (its exit report came before the break): nothing to change.
          } else if (IsEndedRank(running.state())) {
            // Its process ended while the coordinator was away: the exit report follows on the
            // new session and decides (see HandleRankReport). Not ASSIGNED: that would resend it.
            rank.set_state(v1::ACKNOWLEDGED);
            rank.set_detail("re-attached after its process ended; waiting for its exit report");
          } else if (running.state() != v1::RANK_STATE_UNSPECIFIED) {
            rank.set_state(running.state());
          }
          // Charge the job's other re-bound workers up to now, then this one for the outage: its
          // rank kept training while the coordinator was down.
          Accrue(*job, now);
          WorkerRecord* rec = membership_.Find(worker_id);
          rec->job_id = job->status.job_id();
          rec->rank = rank.rank();
          if (back_after_restart && job->outage_from < now) {
            Charge(*job, rec->device_count * absl::ToDoubleHours(now - job->outage_from));
          }
          rebound = true;
          AddEvent(*job, "worker_reattached",
                   absl::StrFormat("worker %s re-attached and still runs rank %d", request.name(),
                                   rank.rank()));
          UpdateRunningMessage(*job);
          break;
        }
      }
      // Keep the placement in the status consistent with the ranks list.
      if (rebound) *job->status.mutable_placement()->mutable_ranks() = job->status.workers();
    }
    if (!rebound) {
      v1::StopCommand stop;
      stop.set_job_id(running.job_id());
      stop.set_epoch(running.epoch());
      stop.set_reason("this rank is no longer part of its job's current placement");
      pending_stops_[worker_id].push_back(std::move(stop));
    }
  }
  // Ranks still bound to the replaced id are lost (the worker restarted and dropped them).
  if (!replaced_id.empty()) HandleWorkerLost(replaced_id, "re-attached without its rank", now);

  PersistWorker(*membership_.Find(worker_id));
  spdlog::info("worker {} attached as {} from {} (node {}, {})", request.name(), worker_id, peer,
               w.node, device);
  // An idle worker may let a running job grow: say so now, before its next checkpoint report.
  UpdatePendingGrows();
  v1::AttachResponse response;
  response.set_worker_id(worker_id);
  response.set_lease_ms(absl::ToInt64Milliseconds(options_.lease));
  response.set_coordinator_id(coordinator_id_);
  return response;
}

absl::Status Coordinator::OpenSession(const std::string& worker_id, SessionSink* sink) {
  absl::MutexLock lock(&mu_);
  WorkerRecord* w = membership_.Find(worker_id);
  if (w == nullptr || !w->alive) {
    return absl::NotFoundError(absl::StrCat("worker '", worker_id.substr(0, 64),
                                            "' is not attached; attach again"));
  }
  if (auto it = sessions_.find(worker_id); it != sessions_.end() && it->second != sink) {
    it->second->Close(absl::AbortedError("a newer session replaced this one"));
  }
  sessions_[worker_id] = sink;
  w->session_lost = false;
  membership_.Heartbeat(worker_id, clock_->Now());
  if (auto it = pending_stops_.find(worker_id); it != pending_stops_.end()) {
    for (const auto& stop : it->second) {
      v1::CoordinatorMessage m;
      *m.mutable_stop() = stop;
      sink->Send(m);
    }
    pending_stops_.erase(it);
  }
  // Resend an assignment the worker has not acknowledged yet.
  if (!w->job_id.empty()) {
    if (Job* job = FindJob(w->job_id); job != nullptr) {
      for (const auto& rank : job->status.workers()) {
        if (rank.worker_id() == worker_id && rank.state() == v1::ASSIGNED) {
          SendAssignment(*job, rank);
        }
      }
    }
  }
  return absl::OkStatus();
}

void Coordinator::CloseSession(const std::string& worker_id, SessionSink* sink) {
  absl::MutexLock lock(&mu_);
  if (auto it = sessions_.find(worker_id); it != sessions_.end() && it->second == sink) {
    sessions_.erase(it);
    if (WorkerRecord* w = membership_.Find(worker_id); w != nullptr && w->alive) {
      w->session_lost = true;  // not placed on until it opens a session again
    }
  }
}

absl::Status Coordinator::HandleWorkerMessage(const std::string& worker_id,
                                              const v1::WorkerMessage& message) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  if (!membership_.Heartbeat(worker_id, now)) {
    return absl::NotFoundError(absl::StrCat("worker '", worker_id.substr(0, 64),
                                            "' is not attached (its lease may have expired)"));
  }
  WorkerRecord* w = membership_.Find(worker_id);
  switch (message.kind_case()) {
    case v1::WorkerMessage::kHeartbeat: {
      for (const v1::RankProgress& p : message.heartbeat().ranks()) {
        Job* job = FindJob(p.job_id());
        // Only the running epoch's ranks report; anything older is fenced off.
        if (job == nullptr || job->status.state() != v1::RUNNING ||
            job->status.epoch() != p.epoch()) {
          continue;
        }
        // A rank ends (DONE, LOST) only through its exit report, which also ends the job or
        // starts its recovery: a heartbeat that already says so, or was sent before the exit,
        // must neither pre-empt nor undo that.
        if (IsEndedRank(p.state())) continue;
        for (auto& rank : *job->status.mutable_workers()) {
          if (IsEndedRank(rank.state())) continue;
          if (rank.rank() != p.rank() || rank.worker_id() != worker_id ||
              p.state() == v1::RANK_STATE_UNSPECIFIED) {
            continue;
          }
          if (rank.state() != p.state()) {
            rank.set_state(p.state());
            if (!p.detail().empty()) rank.set_detail(p.detail());
            job->dirty = true;
            Touch(*job);
          } else if (!p.detail().empty() && rank.detail() != p.detail()) {
            // The same state with news, e.g. "step 12/300; waiting for a peer for 4s (op 6,
            // last collective #25 of group world2-g0)": shown, persisted with the next change.
            rank.set_detail(p.detail());
            *job->status.mutable_placement()->mutable_ranks() = job->status.workers();
            Touch(*job);
          }
        }
      }
      return absl::OkStatus();
    }
    case v1::WorkerMessage::kAck: {
      const v1::AssignmentAck& ack = message.ack();
      Job* job = FindJob(ack.job_id());
      if (job == nullptr || job->status.epoch() != ack.epoch() ||
          job->status.state() != v1::RUNNING) {
        spdlog::info("ignoring a stale acknowledgement from {} for {} epoch {}", w->name,
                     ack.job_id().substr(0, 64), ack.epoch());
        return absl::OkStatus();
      }
      for (auto& rank : *job->status.mutable_workers()) {
        if (rank.rank() != ack.rank() || rank.worker_id() != worker_id) continue;
        if (!ack.accepted()) {
          const std::string reason =
              absl::StrCat("worker ", w->name, " refused rank ", ack.rank(), ": ", ack.detail());
          rank.set_detail(ack.detail());
          HandleWorkerLost(worker_id, reason, now);
          return absl::OkStatus();
        }
        rank.set_state(ack.state() == v1::RANK_STATE_UNSPECIFIED ? v1::ACKNOWLEDGED : ack.state());
        rank.set_detail(ack.detail());
        AddEvent(*job, "acknowledged",
                 absl::StrFormat("rank %d acknowledged by %s: %s", rank.rank(), w->name,
                                 ack.detail().empty() ? v1::RankState_Name(rank.state())
                                                      : ack.detail()));
        *job->status.mutable_placement()->mutable_ranks() = job->status.workers();
        UpdateRunningMessage(*job);
        break;
      }
      return absl::OkStatus();
    }
    case v1::WorkerMessage::kReport:
      HandleRankReport(*w, message.report(), now);
      return absl::OkStatus();
    case v1::WorkerMessage::kHello:
      return absl::OkStatus();
    case v1::WorkerMessage::KIND_NOT_SET:
      return absl::InvalidArgumentError("empty worker message");
  }
  return absl::OkStatus();
}

absl::Status Coordinator::Detach(const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  WorkerRecord* w = membership_.Find(worker_id);
  if (w == nullptr) {
    return absl::NotFoundError(absl::StrCat("worker '", worker_id.substr(0, 64), "' is unknown"));
  }
  spdlog::info("worker {} ({}) detached", w->name, worker_id);
  membership_.MarkDead(worker_id, "detached");
  HandleWorkerLost(worker_id, "the worker detached", clock_->Now());
  if (auto it = sessions_.find(worker_id); it != sessions_.end()) {
    it->second->Close(absl::OkStatus());
    sessions_.erase(it);
  }
  v1::WorkerInfo info = ToWorkerInfo(*w);
  info.set_state("detached");
  if (absl::Status s = store_->PutWorker(info); !s.ok()) spdlog::warn("{}", s.ToString());
  return absl::OkStatus();
}

// --- StoreService -----------------------------------------------------------------------------------

absl::Status Coordinator::CheckStoreScope(const v1::StoreScope& scope) {
  absl::MutexLock lock(&mu_);
  Job* job = FindJob(scope.job_id());
  if (job == nullptr) {
    return absl::NotFoundError(absl::StrCat("no job '", scope.job_id().substr(0, 64), "'"));
  }
  if (!IsActive(job->status.state()) || job->status.epoch() != scope.epoch()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "job %s is at epoch %d (%s); store requests for epoch %d are refused",
        scope.job_id(), job->status.epoch(), v1::JobState_Name(job->status.state()),
        scope.epoch()));
  }
  return absl::OkStatus();
}

// --- Scheduling -------------------------------------------------------------------------------------

void Coordinator::Tick() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  // Charge time up to now first: a worker holds its device until it is declared dead.
  for (auto& [id, job] : jobs_) Accrue(job, now);
  for (const std::string& id : membership_.Expire(now)) {
    WorkerRecord* w = membership_.Find(id);
    spdlog::warn("worker {} ({}) is dead: {}", w->name, id, w->dead_reason);
    const std::string reason = w->dead_reason;
    HandleWorkerLost(id, absl::StrCat("worker ", w->name, " lost: ", reason), now);
    if (auto it = sessions_.find(id); it != sessions_.end()) {
      it->second->Close(absl::UnavailableError("lease expired"));
      sessions_.erase(it);
    }
    PersistWorker(*w);
  }
  membership_.ForgetDeadBefore(now - absl::Hours(1));

  // Ranks of restored jobs whose workers did not come back in time are lost.
  for (auto& [id, job] : jobs_) {
    if (!IsActive(job.status.state()) || job.rebind_deadline == absl::Time() ||
        now < job.rebind_deadline) {
      continue;
    }
    job.rebind_deadline = absl::Time();
    std::vector<std::string> missing;
    for (const auto& rank : job.status.workers()) {
      if (rank.worker_id().empty()) missing.push_back(rank.worker_name());
    }
    if (!missing.empty() && job.status.state() == v1::RUNNING) {
      Accrue(job, now);
      ReleaseWorkers(job, "a member did not re-attach after the coordinator restarted");
      StartRecovery(job, "worker_lost",
                    absl::StrCat(missing.size(),
                                 " worker(s) did not re-attach after the "
                                 "coordinator restarted (",
                                 missing.front(), missing.size() > 1 ? ", ..." : "", ")"),
                    "", now);
    }
  }

  ScheduleJobs(now);
  UpdatePendingGrows();
  for (auto& [id, job] : jobs_) Persist(job, /*force=*/false);
}

void Coordinator::ScheduleJobs(absl::Time now) {
  for (const std::string& id : job_order_) {
    Job& job = jobs_.at(id);
    const v1::JobState state = job.status.state();
    if (state != v1::PENDING && state != v1::RECOVERING) continue;
    if (TryPlace(job, now)) continue;
    if (state == v1::RECOVERING && now - job.waiting_since > options_.recovery_timeout) {
      FailJob(
          job,
          absl::StrFormat("fewer than min_workers=%d workers for %s while recovering; giving up",
                          job.status.spec().parallel().min_workers(),
                          absl::FormatDuration(options_.recovery_timeout)),
          "", now);
    }
  }
}

bool Coordinator::TryPlace(Job& job, absl::Time now) {
  const v1::JobSpec& spec = job.status.spec();
  // Candidates: idle workers plus the survivors this job still holds. `trusted` leaves out the
  // workers on which a rank of this job hung.
  std::vector<PlannerWorker> candidates, trusted;
  std::vector<std::string> left_out;
  for (const WorkerRecord* w : membership_.All()) {
    if (!w->alive || w->session_lost) continue;
    if (w->job_id.empty() || (w->job_id == job.status.job_id() && w->rank < 0)) {
      candidates.push_back(PlannerWorker{w->id, w->name, w->node});
      if (job.hung_workers.contains(w->name)) {
        left_out.push_back(w->name);
      } else {
        trusted.push_back(candidates.back());
      }
    }
  }
  const int64_t needed = spec.parallel().min_workers();
  if (static_cast<int64_t>(candidates.size()) < needed) {
    const std::string message =
        job.status.state() == v1::PENDING
            ? absl::StrFormat("waiting for workers: %d of the %d it needs are available",
                              candidates.size(), needed)
            : absl::StrFormat("recovering (%s): %d of the %d workers it needs are available",
                              job.recovery_reason, candidates.size(), needed);
    if (job.status.message() != message) {
      job.status.set_message(message);
      Touch(job);
    }
    return false;
  }
  // Without the workers whose rank hung when the job can do without them (even on fewer ranks:
  // a rank there would likely hang again, and each hang costs the hang timeout plus a recovery);
  // with them rather than not at all.
  absl::StatusOr<v1::Placement> placement = absl::FailedPreconditionError("not planned");
  std::string suffix;
  if (!left_out.empty() && static_cast<int64_t>(trusted.size()) >= needed) {
    placement = PlanPlacement(spec, trusted, job.status.epoch());
    if (placement.ok()) {
      suffix = absl::StrFormat("; left out %s (a rank hung there)", absl::StrJoin(left_out, ", "));
    }
  }
  if (!placement.ok()) placement = PlanPlacement(spec, candidates, job.status.epoch());
  if (!placement.ok()) {
    const std::string message = absl::StrCat("cannot place: ", placement.status().message());
    if (job.status.message() != message) {
      job.status.set_message(message);
      Touch(job);
    }
    return false;
  }
  ApplyPlacement(job, *placement, now,
                 job.status.state() == v1::RECOVERING ? "replanned" : "placed", suffix);
  return true;
}

void Coordinator::ApplyPlacement(Job& job, const v1::Placement& placement, absl::Time now,
                                 const std::string& event_kind, const std::string& event_suffix) {
  // Workers of this job that the new plan leaves out go back to the idle pool.
  for (const WorkerRecord* w : membership_.All()) {
    if (w->alive && w->job_id == job.status.job_id()) {
      WorkerRecord* rec = membership_.Find(w->id);
      rec->job_id.clear();
      rec->rank = -1;
    }
  }
  kv_.Drop(job.status.job_id(), placement.epoch());
  job.status.set_epoch(placement.epoch());
  *job.status.mutable_placement() = placement;
  *job.status.mutable_workers() = placement.ranks();
  for (const auto& rank : placement.ranks()) {
    WorkerRecord* w = membership_.Find(rank.worker_id());
    w->job_id = job.status.job_id();
    w->rank = rank.rank();
    PersistWorker(*w);
  }
  job.last_accrual = now;
  // Steps of the new epoch start a new rate (the layout, and so the speed, may differ).
  job.reported_epoch = 0;
  job.step_seconds.clear();
  job.grow_world = 0;
  job.checkpoint_acks.clear();  // only the new epoch's ranks can commit
  SetState(job, v1::RUNNING,
           absl::StrFormat("placed on %d workers (epoch %d); waiting for the ranks to acknowledge",
                           placement.world_size(), placement.epoch()));
  AddEvent(job, event_kind,
           absl::StrFormat("epoch %d: %d ranks = pipeline %d x expert-parallel %d x data-parallel "
                           "%d%s",
                           placement.epoch(), placement.world_size(), placement.pipeline_parallel(),
                           placement.expert_parallel(), placement.data_parallel(), event_suffix));
  for (const auto& rank : placement.ranks()) SendAssignment(job, rank);
  Persist(job, /*force=*/true);
}

// --- Elastic attach ---------------------------------------------------------------------------------

int64_t Coordinator::GrowWorld(const Job& job, std::vector<std::string>* idle_names) {
  if (job.status.state() != v1::RUNNING || job.rebind_deadline != absl::Time()) return 0;
  for (const auto& rank : job.status.workers()) {
    if (rank.worker_id().empty() || IsEndedRank(rank.state())) return 0;
  }
  int64_t held = 0;
  std::vector<std::string> idle;
  for (const WorkerRecord* w : membership_.All()) {
    if (!w->alive) continue;
    if (w->job_id == job.status.job_id()) ++held;
    if (w->session_lost) continue;
    // A worker on which a rank of this job hung is not grown onto (see TryPlace).
    if (w->job_id.empty() && !job.hung_workers.contains(w->name)) idle.push_back(w->name);
  }
  const int64_t world = job.status.placement().world_size();
  if (idle.empty() || held + static_cast<int64_t>(idle.size()) <= world) return 0;
  absl::StatusOr<PlacementLayout> layout =
      PlanLayout(job.status.spec(), held + static_cast<int64_t>(idle.size()));
  if (!layout.ok() || layout->world_size <= world) return 0;
  if (idle_names != nullptr) *idle_names = std::move(idle);
  return layout->world_size;
}

void Coordinator::UpdatePendingGrows() {
  for (const std::string& id : job_order_) {
    Job& job = jobs_.at(id);
    int64_t target = 0;
    std::vector<std::string> idle;
    if (job.status.state() == v1::RUNNING) {
      // The grow happens at the next checkpoint committed before the last step, if there is one.
      const int64_t every = job.status.spec().checkpoint().every_steps();
      const int64_t after = std::max<int64_t>(
          job.status.step(), std::max<int64_t>(job.status.last_checkpoint_step(), 0) + 1);
      const int64_t next = every > 0 ? (after + every - 1) / every * every : INT64_MAX;
      if (next < job.status.total_steps()) target = GrowWorld(job, &idle);
      if (target > 0 && target != job.grow_world) {
        constexpr size_t kMaxNames = 8;
        std::vector<std::string> names(idle.begin(),
                                       idle.begin() + std::min(idle.size(), kMaxNames));
        if (idle.size() > kMaxNames) names.push_back("...");
        AddEvent(job, "grow_pending",
                 absl::StrFormat("idle worker%s %s can join: the job grows from %d to %d ranks "
                                 "at its next checkpoint (step %d)",
                                 idle.size() > 1 ? "s" : "", absl::StrJoin(names, ", "),
                                 job.status.placement().world_size(), target, next));
      } else if (target == 0 && job.grow_world > 0) {
        spdlog::info("{}: the pending grow to {} ranks is off (the idle workers are gone)", id,
                     job.grow_world);
      }
    }
    if (target != job.grow_world) {
      job.grow_world = target;
      UpdateRunningMessage(job);
    }
  }
}

bool Coordinator::MaybeGrow(Job& job, int64_t step, absl::Time now) {
  if (step >= job.status.total_steps()) return false;  // the job is about to finish
  if (GrowWorld(job, nullptr) == 0) return false;
  std::vector<PlannerWorker> candidates;
  for (const WorkerRecord* w : membership_.All()) {
    if (!w->alive || w->session_lost) continue;
    if (w->job_id == job.status.job_id() ||
        (w->job_id.empty() && !job.hung_workers.contains(w->name))) {
      candidates.push_back(PlannerWorker{w->id, w->name, w->node});
    }
  }
  const int64_t world = job.status.placement().world_size();
  absl::StatusOr<v1::Placement> placement =
      PlanPlacement(job.status.spec(), candidates, job.status.epoch());
  if (!placement.ok() || placement->world_size() <= world) {
    spdlog::warn("{}: no grow at step {}: {}", job.status.job_id(), step,
                 placement.ok() ? "the placement is no larger" : placement.status().ToString());
    return false;
  }
  std::vector<std::string> joined;
  for (const auto& rank : placement->ranks()) {
    const WorkerRecord* w = membership_.Find(rank.worker_id());
    if (w->job_id.empty()) joined.push_back(w->name);
  }
  // The current ranks stop; whatever they did past `step` is rolled back like in a recovery.
  const std::string reason =
      absl::StrFormat("the job grows from %d to %d ranks at the checkpoint at step %d; re-planning",
                      world, placement->world_size(), step);
  for (const auto& rank : job.status.workers()) {
    SendStop(rank.worker_id(), job.status.job_id(), job.status.epoch(), reason);
  }
  Accrue(job, now);
  RollBackUncommitted(job);
  job.status.set_step(step);
  ApplyPlacement(job, *placement, now, "grew",
                 absl::StrFormat("; grew from %d ranks at the checkpoint at step %d (%s joined); "
                                 "the ranks resume from that checkpoint",
                                 world, step, absl::StrJoin(joined, ", ")));
  return true;
}

void Coordinator::SendAssignment(const Job& job, const v1::RankPlacement& rank) {
  auto it = sessions_.find(rank.worker_id());
  if (it == sessions_.end()) return;  // sent when its session opens
  v1::CoordinatorMessage m;
  v1::Assignment* a = m.mutable_assignment();
  a->set_job_id(job.status.job_id());
  a->set_epoch(job.status.epoch());
  *a->mutable_rank() = rank;
  *a->mutable_placement() = job.status.placement();
  *a->mutable_spec() = job.status.spec();
  a->set_resume_step(job.status.last_checkpoint_step());
  a->set_store_prefix(absl::StrCat(job.status.job_id(), "/", job.status.epoch()));
  it->second->Send(m);
}

void Coordinator::SendStop(const std::string& worker_id, const std::string& job_id, int64_t epoch,
                           const std::string& reason, bool discard) {
  v1::CoordinatorMessage m;
  m.mutable_stop()->set_job_id(job_id);
  m.mutable_stop()->set_epoch(epoch);
  m.mutable_stop()->set_reason(reason);
  m.mutable_stop()->set_discard(discard);
  if (auto it = sessions_.find(worker_id); it != sessions_.end()) {
    it->second->Send(m);
  } else {
    pending_stops_[worker_id].push_back(m.stop());
  }
}

void Coordinator::HandleWorkerLost(const std::string& worker_id, const std::string& reason,
                                   absl::Time now) {
  WorkerRecord* w = membership_.Find(worker_id);
  if (w == nullptr || w->job_id.empty()) return;
  Job* job = FindJob(w->job_id);
  w->job_id.clear();
  w->rank = -1;
  if (job == nullptr || !IsActive(job->status.state())) return;
  bool held_rank = false;
  for (auto& rank : *job->status.mutable_workers()) {
    if (rank.worker_id() == worker_id) {
      rank.set_state(v1::LOST);
      rank.set_detail(reason);
      held_rank = true;
    }
  }
  if (!held_rank) return;  // a reserved survivor left; nothing was running there
  Accrue(*job, now);
  *job->status.mutable_placement()->mutable_ranks() = job->status.workers();
  if (job->status.state() == v1::RUNNING) {
    // Stop the survivors' ranks; they stay reserved for this job's re-plan.
    for (const auto& rank : job->status.workers()) {
      if (rank.worker_id() == worker_id || rank.worker_id().empty()) continue;
      SendStop(rank.worker_id(), job->status.job_id(), job->status.epoch(),
               "a member of the job was lost; re-planning", /*discard=*/true);
      if (WorkerRecord* s = membership_.Find(rank.worker_id()); s != nullptr) s->rank = -1;
    }
    StartRecovery(*job, "worker_lost", reason, "", now);
  } else {
    AddEvent(*job, "worker_lost", reason);
  }
}

void Coordinator::StartRecovery(Job& job, const std::string& event_kind, const std::string& reason,
                                const std::string& event_message, absl::Time now) {
  RollBackUncommitted(job);
  job.grow_world = 0;
  // Training resumes from the last committed checkpoint: the steps after it are rolled back.
  job.status.set_step(std::max<int64_t>(job.status.last_checkpoint_step(), 0));
  job.status.mutable_progress()->set_eta_seconds(0);
  job.waiting_since = now;
  job.recovery_reason = reason;
  SetState(job, v1::RECOVERING, absl::StrCat(reason, "; re-planning on the survivors from the "
                                                     "last committed checkpoint"));
  AddEvent(job, event_kind, event_message.empty() ? reason : event_message);
}

// --- Rank reports
// -----------------------------------------------------------------------------------

void Coordinator::HandleRankReport(const WorkerRecord& worker, const v1::RankReport& report,
                                   absl::Time now) {
  Job* job = FindJob(report.job_id());
  // Only the running epoch's ranks report; anything older (or for a job that moved on) is fenced
  // off and changes nothing.
  if (job == nullptr || job->status.state() != v1::RUNNING ||
      job->status.epoch() != report.epoch()) {
    spdlog::info("ignoring a stale '{}' report from {} for {} epoch {} rank {}",
                 report.event().substr(0, 32), worker.name, report.job_id().substr(0, 64),
                 report.epoch(), report.rank());
    return;
  }
  v1::RankPlacement* rank = nullptr;
  for (auto& r : *job->status.mutable_workers()) {
    if (r.rank() == report.rank() && r.worker_id() == worker.id) rank = &r;
  }
  if (rank == nullptr) {
    spdlog::info(
        "ignoring a '{}' report from {} for {} rank {}: the worker does not hold that "
        "rank in epoch {}",
        report.event().substr(0, 32), worker.name, job->status.job_id(), report.rank(),
        report.epoch());
    return;
  }
  if (IsEndedRank(rank->state())) {
    spdlog::info("ignoring a '{}' report from {} for {} rank {}: the rank has already ended ({})",
                 report.event().substr(0, 32), worker.name, job->status.job_id(), report.rank(),
                 v1::RankState_Name(rank->state()));
    return;
  }
  // Rank 0's figures are the job's (losses are all-reduced); every rank acknowledges checkpoints.
  const bool job_figures = report.rank() == 0;
  const std::string& event = report.event();
  if (event == "step") {
    if (rank->state() != v1::TRAINING) {
      rank->set_state(v1::TRAINING);
      job->dirty = true;  // a rank's state change is persisted at once
    }
    rank->set_detail(
        absl::StrFormat("step %d/%d", report.step(),
                        report.steps() > 0 ? report.steps() : job->status.total_steps()));
    *job->status.mutable_placement()->mutable_ranks() = job->status.workers();
    job->accounting_dirty = true;
    if (job_figures) ApplyStepFigures(*job, report, now);
    Touch(*job);
    UpdateRunningMessage(*job);
  } else if (event == "validation") {
    if (!job_figures) return;
    v1::TrainingProgress* p = job->status.mutable_progress();
    p->set_val_step(report.step());
    p->set_val_loss(report.main_loss());
    p->set_val_next_token_accuracy(report.next_token_accuracy());
    p->set_val_mtp_next_next_accuracy(report.mtp_next_next_accuracy());
    p->set_last_report_unix_ms(UnixMs(now));
    job->accounting_dirty = true;
    Touch(*job);
  } else if (event == "checkpoint") {
    // A rank's acknowledgement: its shard of the step is written and the checkpoint is durable.
    // The step is committed once every rank of the epoch has acknowledged it (DESIGN.md "Data
    // flow", step 5); an older or already committed step changes nothing.
    const int64_t step = report.step();
    if (step <= job->status.last_checkpoint_step()) return;
    std::set<int64_t>& acked = job->checkpoint_acks[step];
    acked.insert(report.rank());
    const int world = job->status.workers_size();
    if (static_cast<int>(acked.size()) < world) return;
    // Steps at or below this one need no more acknowledgements.
    job->checkpoint_acks.erase(job->checkpoint_acks.begin(),
                               job->checkpoint_acks.upper_bound(step));
    Accrue(*job, now);  // the time up to this commit belongs to the committed work
    job->status.set_last_checkpoint_step(step);
    CommitSteps(*job, step);
    job->failures_without_checkpoint = 0;
    AddEvent(*job, "checkpoint",
             absl::StrFormat("step %d committed: acknowledged by all %d ranks (%s)", step, world,
                             report.path().substr(0, 1024)));
    if (MaybeGrow(*job, step, now)) return;  // persisted with the new placement
    Persist(*job, /*force=*/true);
  } else if (event == "exit") {
    HandleRankExit(*job, *rank, worker, report, now);
  } else if (event == "hung") {
    HandleRankHung(*job, *rank, worker, report, now);
  } else {
    spdlog::warn("ignoring a report of unknown kind '{}' from {} for {} rank {}",
                 event.substr(0, 32), worker.name, job->status.job_id(), report.rank());
  }
}

void Coordinator::ApplyStepFigures(Job& job, const v1::RankReport& report, absl::Time now) {
  const v1::JobSpec& spec = job.status.spec();
  if (job.reported_epoch != job.status.epoch()) {
    job.reported_epoch = job.status.epoch();
    job.step_seconds.clear();
    AddEvent(job, "training",
             job.status.last_checkpoint_step() > 0
                 ? absl::StrFormat("step %d of %d done (resumed from the checkpoint at step %d)",
                                   report.step(), report.steps(), job.status.last_checkpoint_step())
                 : absl::StrFormat("step %d of %d done", report.step(), report.steps()));
  }
  job.status.set_step(report.step());
  if (report.steps() > 0) job.status.set_total_steps(report.steps());
  job.status.set_last_loss(report.main_loss());

  // The recent rate: the mean wall time of the last kRateWindowSteps steps.
  if (report.seconds() > 0 && std::isfinite(report.seconds())) {
    job.step_seconds.push_back(report.seconds());
    if (job.step_seconds.size() > static_cast<size_t>(kRateWindowSteps)) {
      job.step_seconds.erase(job.step_seconds.begin());
    }
  }
  double seconds_per_step = 0;
  for (double s : job.step_seconds) seconds_per_step += s;
  if (!job.step_seconds.empty()) seconds_per_step /= job.step_seconds.size();

  v1::TrainingProgress* p = job.status.mutable_progress();
  p->set_loss(report.loss());
  p->set_main_loss(report.main_loss());
  p->set_mtp_loss(report.mtp_loss());
  p->set_balance_loss(report.balance_loss());
  p->set_lr(report.lr());
  p->set_grad_norm(report.grad_norm());
  p->set_tokens_per_second(report.tokens_per_second());
  p->set_load_max_over_mean(report.load_max_over_mean());
  p->set_last_report_unix_ms(UnixMs(now));
  const int64_t steps_left = std::max<int64_t>(job.status.total_steps() - report.step(), 0);
  p->set_eta_seconds(steps_left * seconds_per_step);

  v1::Accounting* acc = job.status.mutable_accounting();
  acc->set_tokens_per_second(seconds_per_step > 0
                                 ? spec.train().global_batch_tokens() / seconds_per_step
                                 : report.tokens_per_second());
  // MFU over the devices running the ranks, at the spec's peak or the device kind's default.
  int64_t devices = 0;
  std::string device = "cpu";
  for (const auto& rank : job.status.workers()) {
    const WorkerRecord* w = membership_.Find(rank.worker_id());
    if (w == nullptr || !w->alive) continue;
    devices += w->device_count;
    device = w->device;
  }
  const double peak = spec.accounting().device_peak_tflops() > 0
                          ? spec.accounting().device_peak_tflops()
                          : DefaultPeakTflops(device);
  acc->set_mfu(accounting::Mfu(acc->tokens_per_second(), acc->flops_per_token(), devices, peak));
  job.accounting_dirty = true;
}

void Coordinator::HandleRankExit(Job& job, v1::RankPlacement& rank, const WorkerRecord& worker,
                                 const v1::RankReport& report, absl::Time now) {
  const int32_t code = report.exit_code();
  const std::string tail = Tail(report.detail(), kMaxDetailChars);
  const std::string detail = OneLine(tail);  // the whole tail, for the rank and the event
  const std::string error = LastLine(tail);  // usually the error itself, for the job's message
  if (code == 0) {
    rank.set_state(v1::DONE);
    rank.set_detail(
        absl::StrFormat("finished: %d steps done (exit code 0)", job.status.total_steps()));
    *job.status.mutable_placement()->mutable_ranks() = job.status.workers();
    job.dirty = true;
    Touch(job);
    bool all_done = true;
    for (const auto& r : job.status.workers()) all_done = all_done && r.state() == v1::DONE;
    if (all_done) {
      CompleteJob(job, now);
    } else {
      UpdateRunningMessage(job);
    }
    return;
  }

  Accrue(job, now);
  rank.set_state(v1::LOST);
  rank.set_detail(absl::StrFormat("exit code %d (%s): %s", code, ExitMeaning(code),
                                  detail.empty() ? "no error output" : detail));
  *job.status.mutable_placement()->mutable_ranks() = job.status.workers();
  const std::string what = code < 0
                               ? absl::StrFormat("rank %d (worker %s) was %s", rank.rank(),
                                                 worker.name, ExitMeaning(code))
                               : absl::StrFormat("rank %d (worker %s) exited with code %d (%s)",
                                                 rank.rank(), worker.name, code, ExitMeaning(code));
  if (code == 2) {
    // The spec, the data or the checkpoint is bad: every retry would stop the same way.
    FailJob(job, absl::StrCat(what, "; retrying cannot help: ", error),
            absl::StrCat(what, "; retrying cannot help: ", detail), now);
    return;
  }
  // The failed rank's process is gone: only the others need a stop.
  RecoverFromRankFailure(job, rank, worker, /*stop_failed_rank=*/false, "rank_failed",
                         absl::StrFormat("rank %d of the job failed; re-planning", rank.rank()),
                         what, error, detail.empty() ? "no error output" : detail, now);
}

void Coordinator::HandleRankHung(Job& job, v1::RankPlacement& rank, const WorkerRecord& worker,
                                 const v1::RankReport& report, absl::Time now) {
  // The worker's detail says where the rank is stuck: how long, after which step, at which op.
  std::string where = OneLine(Tail(report.detail(), kMaxDetailChars));
  if (where.empty()) where = "no progress within the hang timeout";
  Accrue(job, now);
  rank.set_state(v1::HUNG);
  rank.set_detail(absl::StrFormat("rank %d hung at step %d: %s", rank.rank(), report.step(), where));
  *job.status.mutable_placement()->mutable_ranks() = job.status.workers();
  // A hang (unlike a crash) often means a sick device or driver on that worker: the re-plan
  // leaves it out when the job can be placed without it (see TryPlace).
  job.hung_workers.insert(worker.name);
  // The hung process is alive and holds its device: it is stopped too (SIGTERM, then SIGKILL).
  RecoverFromRankFailure(job, rank, worker, /*stop_failed_rank=*/true, "rank_hung",
                         absl::StrFormat("rank %d of the job hung; re-planning", rank.rank()),
                         absl::StrFormat("rank %d (worker %s) hung at step %d", rank.rank(),
                                         worker.name, report.step()),
                         where, where, now);
}

void Coordinator::RecoverFromRankFailure(Job& job, const v1::RankPlacement& rank,
                                         const WorkerRecord& worker, bool stop_failed_rank,
                                         const std::string& event_kind,
                                         const std::string& stop_reason, const std::string& what,
                                         const std::string& error, const std::string& detail,
                                         absl::Time now) {
  ++job.failures_without_checkpoint;
  if (job.failures_without_checkpoint >= kMaxFailuresWithoutCheckpoint) {
    FailJob(
        job,
        absl::StrFormat("rank %d of epoch %d failed %d times without reaching a new "
                        "checkpoint: %s",
                        rank.rank(), job.status.epoch(), job.failures_without_checkpoint, error),
        absl::StrFormat("rank %d of epoch %d failed %d times without reaching a new "
                        "checkpoint (the last: %s): %s",
                        rank.rank(), job.status.epoch(), job.failures_without_checkpoint, what,
                        detail),
        now);
    return;
  }
  // Like a lost worker, except that this one is alive: every worker of the job stays reserved
  // (rank -1) and a candidate for the re-plan; the ranks still running are stopped.
  for (const auto& r : job.status.workers()) {
    if (r.worker_id().empty()) continue;
    if (stop_failed_rank || r.worker_id() != worker.id) {
      SendStop(r.worker_id(), job.status.job_id(), job.status.epoch(), stop_reason,
               /*discard=*/true);
    }
    if (WorkerRecord* s = membership_.Find(r.worker_id()); s != nullptr) s->rank = -1;
  }
  StartRecovery(job, event_kind, absl::StrCat(what, ": ", error), absl::StrCat(what, ": ", detail),
                now);
}

void Coordinator::RollBackUncommitted(Job& job) {
  v1::Accounting* acc = job.status.mutable_accounting();
  acc->set_lost_device_hours(acc->lost_device_hours() + acc->uncommitted_device_hours());
  acc->set_uncommitted_device_hours(0);
  acc->set_productive_device_hours(acc->device_hours() - acc->lost_device_hours());
  job.accounting_dirty = true;
}

void Coordinator::CommitSteps(Job& job, int64_t step) {
  v1::Accounting* acc = job.status.mutable_accounting();
  acc->set_tokens(step * job.status.spec().train().global_batch_tokens());
  acc->set_uncommitted_device_hours(0);
  acc->set_productive_device_hours(acc->device_hours() - acc->lost_device_hours());
  acc->set_device_hours_per_trillion_tokens(
      accounting::DeviceHoursPerTrillionTokens(acc->device_hours(), acc->tokens()));
  job.accounting_dirty = true;
}

void Coordinator::CompleteJob(Job& job, absl::Time now) {
  Accrue(job, now);
  const int64_t steps = job.status.total_steps();
  job.status.set_step(steps);
  CommitSteps(job, steps);  // the last step's checkpoint is written before the ranks exit 0
  job.status.mutable_progress()->set_eta_seconds(0);
  ReleaseWorkers(job, "job completed");
  std::string message = absl::StrFormat("completed %d/%d steps; final loss %.4f", steps, steps,
                                        job.status.last_loss());
  const v1::TrainingProgress& p = job.status.progress();
  if (p.val_step() > 0) {
    absl::StrAppendFormat(&message, ", validation loss %.4f at step %d", p.val_loss(),
                          p.val_step());
  }
  SetState(job, v1::SUCCEEDED, message);
  AddEvent(job, "succeeded", message);
  kv_.Drop(job.status.job_id(), INT64_MAX);
  Persist(job, /*force=*/true);
}

void Coordinator::FailJob(Job& job, const std::string& message, const std::string& event_message,
                          absl::Time now) {
  Accrue(job, now);
  ReleaseWorkers(job, "job failed");
  SetState(job, v1::FAILED, message);
  AddEvent(job, "failed", event_message.empty() ? message : event_message);
  kv_.Drop(job.status.job_id(), INT64_MAX);
  Persist(job, /*force=*/true);
}

void Coordinator::ReleaseWorkers(Job& job, const std::string& reason) {
  for (const WorkerRecord* w : membership_.All()) {
    if (w->job_id != job.status.job_id()) continue;
    WorkerRecord* rec = membership_.Find(w->id);
    if (rec->alive) SendStop(rec->id, job.status.job_id(), job.status.epoch(), reason);
    rec->job_id.clear();
    rec->rank = -1;
    if (rec->alive) PersistWorker(*rec);
  }
}

void Coordinator::Accrue(Job& job, absl::Time now) {
  if (!IsActive(job.status.state())) {
    job.last_accrual = now;
    return;
  }
  const absl::Duration dt = now - job.last_accrual;
  job.last_accrual = now;
  // Milliseconds rounded up: a restart charges from here, and must not charge a moment twice.
  job.status.mutable_accounting()->set_accrued_until_unix_ms(
      (absl::ToUnixMicros(now) + 999) / 1000);
  job.accounting_dirty = true;
  if (dt <= absl::ZeroDuration()) return;
  // Devices the job holds: the live workers bound to it (running a rank, or reserved while it
  // recovers). Recovery time counts as lost.
  double devices = 0;
  for (const WorkerRecord* w : membership_.All()) {
    if (w->alive && w->job_id == job.status.job_id()) devices += w->device_count;
  }
  if (devices == 0) return;
  Charge(job, devices * absl::ToDoubleHours(dt));
}

void Coordinator::Charge(Job& job, double hours) {
  v1::Accounting* acc = job.status.mutable_accounting();
  acc->set_device_hours(acc->device_hours() + hours);
  if (job.status.state() == v1::RECOVERING) {
    acc->set_lost_device_hours(acc->lost_device_hours() + hours);
  } else {
    acc->set_uncommitted_device_hours(acc->uncommitted_device_hours() + hours);
  }
  acc->set_productive_device_hours(acc->device_hours() - acc->lost_device_hours());
  double price = job.status.spec().accounting().price_per_device_hour();
  acc->set_cost_usd(accounting::CostUsd(acc->device_hours(), price));
  if (acc->tokens() > 0) {
    acc->set_device_hours_per_trillion_tokens(
        accounting::DeviceHoursPerTrillionTokens(acc->device_hours(), acc->tokens()));
  }
  std::string kind = "cpu";
  for (const WorkerRecord* w : membership_.All()) {
    if (w->alive && w->job_id == job.status.job_id()) kind = w->device;
  }
  acc->set_device_kind(kind);
  // Not a change watchers are woken for: WatchJob refreshes the figures periodically.
  job.accounting_dirty = true;
}

void Coordinator::UpdateRunningMessage(Job& job) {
  if (job.status.state() != v1::RUNNING) return;
  int total = 0, acked = 0, waiting = 0, done = 0;
  for (const auto& rank : job.status.workers()) {
    ++total;
    if (rank.state() != v1::ASSIGNED) ++acked;
    if (rank.state() == v1::WAITING_FOR_ENGINE) ++waiting;
    if (rank.state() == v1::DONE) ++done;
  }
  std::string message;
  bool progress_only = false;  // the message moves with every step
  if (job.reported_epoch == job.status.epoch() && total > 0) {
    progress_only = true;
    message = absl::StrFormat("training: step %d/%d, loss %.4f (epoch %d, %d workers)",
                              job.status.step(), job.status.total_steps(), job.status.last_loss(),
                              job.status.epoch(), total);
    if (done > 0) absl::StrAppendFormat(&message, "; %d of %d ranks done", done, total);
  } else if (waiting == total && total > 0) {
    message = absl::StrFormat(
        "placed on %d workers (epoch %d); every rank acknowledged, but these workers have no "
        "training engine yet, so no steps run",
        total, job.status.epoch());
  } else if (acked < total) {
    message = absl::StrFormat("placed on %d workers (epoch %d); %d of %d ranks acknowledged",
                              total, job.status.epoch(), acked, total);
  } else {
    message = absl::StrFormat("running on %d workers (epoch %d)", total, job.status.epoch());
  }
  if (job.grow_world > 0) {
    absl::StrAppendFormat(&message, "; grows to %d ranks at its next checkpoint", job.grow_world);
  }
  if (message != job.status.message()) {
    job.status.set_message(message);
    // Step progress is written at the accounting interval, not on every step; the rest at once.
    if (progress_only) {
      job.accounting_dirty = true;
    } else {
      job.dirty = true;
    }
    Touch(job);
  }
}

}  // namespace dsv3::coordinator
