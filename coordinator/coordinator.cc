// Coordinator: job lifecycle, membership, placement and accounting; see coordinator.h.
#include "coordinator/coordinator.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
          rank.set_worker_id(worker_id);
          if (running.state() != v1::RANK_STATE_UNSPECIFIED) rank.set_state(running.state());
          WorkerRecord* rec = membership_.Find(worker_id);
          rec->job_id = job->status.job_id();
          rec->rank = rank.rank();
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
        for (auto& rank : *job->status.mutable_workers()) {
          if (rank.rank() == p.rank() && rank.worker_id() == worker_id &&
              p.state() != v1::RANK_STATE_UNSPECIFIED && rank.state() != p.state()) {
            rank.set_state(p.state());
            if (!p.detail().empty()) rank.set_detail(p.detail());
            job->dirty = true;
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
      StartRecovery(job,
                    absl::StrCat(missing.size(), " worker(s) did not re-attach after the "
                                 "coordinator restarted (",
                                 missing.front(), missing.size() > 1 ? ", ..." : "", ")"),
                    now);
    }
  }

  ScheduleJobs(now);
  for (auto& [id, job] : jobs_) Persist(job, /*force=*/false);
}

void Coordinator::ScheduleJobs(absl::Time now) {
  for (const std::string& id : job_order_) {
    Job& job = jobs_.at(id);
    const v1::JobState state = job.status.state();
    if (state != v1::PENDING && state != v1::RECOVERING) continue;
    if (TryPlace(job, now)) continue;
    if (state == v1::RECOVERING && now - job.waiting_since > options_.recovery_timeout) {
      ReleaseWorkers(job, "job failed");
      const std::string why = absl::StrFormat(
          "fewer than min_workers=%d workers for %s while recovering; giving up",
          job.status.spec().parallel().min_workers(),
          absl::FormatDuration(options_.recovery_timeout));
      SetState(job, v1::FAILED, why);
      AddEvent(job, "failed", why);
      kv_.Drop(id, INT64_MAX);
    }
  }
}

bool Coordinator::TryPlace(Job& job, absl::Time now) {
  const v1::JobSpec& spec = job.status.spec();
  // Candidates: idle workers plus the survivors this job still holds.
  std::vector<PlannerWorker> candidates;
  for (const WorkerRecord* w : membership_.All()) {
    if (!w->alive) continue;
    if (w->job_id.empty() || (w->job_id == job.status.job_id() && w->rank < 0)) {
      candidates.push_back(PlannerWorker{w->id, w->name, w->node});
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
  absl::StatusOr<v1::Placement> placement = PlanPlacement(spec, candidates, job.status.epoch());
  if (!placement.ok()) {
    const std::string message = absl::StrCat("cannot place: ", placement.status().message());
    if (job.status.message() != message) {
      job.status.set_message(message);
      Touch(job);
    }
    return false;
  }
  // Workers of this job that the new plan leaves out go back to the idle pool.
  for (const WorkerRecord* w : membership_.All()) {
    if (w->alive && w->job_id == job.status.job_id()) {
      WorkerRecord* rec = membership_.Find(w->id);
      rec->job_id.clear();
      rec->rank = -1;
    }
  }
  const bool recovering = job.status.state() == v1::RECOVERING;
  kv_.Drop(job.status.job_id(), placement->epoch());
  job.status.set_epoch(placement->epoch());
  *job.status.mutable_placement() = *placement;
  *job.status.mutable_workers() = placement->ranks();
  for (const auto& rank : placement->ranks()) {
    WorkerRecord* w = membership_.Find(rank.worker_id());
    w->job_id = job.status.job_id();
    w->rank = rank.rank();
    PersistWorker(*w);
  }
  job.last_accrual = now;
  SetState(job, v1::RUNNING,
           absl::StrFormat("placed on %d workers (epoch %d); waiting for the ranks to acknowledge",
                           placement->world_size(), placement->epoch()));
  AddEvent(job, recovering ? "replanned" : "placed",
           absl::StrFormat("epoch %d: %d ranks = pipeline %d x expert-parallel %d x data-parallel "
                           "%d",
                           placement->epoch(), placement->world_size(),
                           placement->pipeline_parallel(), placement->expert_parallel(),
                           placement->data_parallel()));
  for (const auto& rank : placement->ranks()) SendAssignment(job, rank);
  Persist(job, /*force=*/true);
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
                           const std::string& reason) {
  v1::CoordinatorMessage m;
  m.mutable_stop()->set_job_id(job_id);
  m.mutable_stop()->set_epoch(epoch);
  m.mutable_stop()->set_reason(reason);
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
               "a member of the job was lost; re-planning");
      if (WorkerRecord* s = membership_.Find(rank.worker_id()); s != nullptr) s->rank = -1;
    }
    StartRecovery(*job, reason, now);
  } else {
    AddEvent(*job, "worker_lost", reason);
  }
}

void Coordinator::StartRecovery(Job& job, const std::string& reason, absl::Time now) {
  v1::Accounting* acc = job.status.mutable_accounting();
  acc->set_lost_device_hours(acc->lost_device_hours() + acc->uncommitted_device_hours());
  acc->set_uncommitted_device_hours(0);
  acc->set_productive_device_hours(acc->device_hours() - acc->lost_device_hours());
  job.accounting_dirty = true;
  job.waiting_since = now;
  job.recovery_reason = reason;
  SetState(job, v1::RECOVERING, absl::StrCat(reason, "; re-planning on the survivors from the "
                                                     "last committed checkpoint"));
  AddEvent(job, "worker_lost", reason);
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
  if (dt <= absl::ZeroDuration()) return;
  // Devices the job holds: the live workers bound to it (running a rank, or reserved while it
  // recovers). Recovery time counts as lost.
  double devices = 0;
  for (const WorkerRecord* w : membership_.All()) {
    if (w->alive && w->job_id == job.status.job_id()) devices += w->device_count;
  }
  if (devices == 0) return;
  const double hours = devices * absl::ToDoubleHours(dt);
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
  int total = 0, acked = 0, waiting = 0;
  for (const auto& rank : job.status.workers()) {
    ++total;
    if (rank.state() != v1::ASSIGNED) ++acked;
    if (rank.state() == v1::WAITING_FOR_ENGINE) ++waiting;
  }
  std::string message;
  if (waiting == total && total > 0) {
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
  if (message != job.status.message()) {
    job.status.set_message(message);
    job.dirty = true;
    Touch(job);
  }
}

}  // namespace dsv3::coordinator
