// Worker; see worker.h.
#include "worker/worker.h"

#include <unistd.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "spdlog/spdlog.h"

namespace dsv3::worker {
namespace {

// Reports kept while no session is open; beyond this the oldest step reports are dropped (the
// checkpoint and exit reports matter more, and later steps supersede earlier ones).
constexpr size_t kMaxOutbox = 10000;

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

}  // namespace

Worker::Worker(std::shared_ptr<grpc::Channel> channel, WorkerOptions options)
    : options_(std::move(options)), stub_(v1::WorkerService::NewStub(channel)) {}

std::string Worker::worker_id() const {
  absl::MutexLock lock(&mu_);
  return worker_id_;
}

int Worker::attach_count() const {
  absl::MutexLock lock(&mu_);
  return attach_count_;
}

void Worker::PrepareContext(grpc::ClientContext* context, absl::Duration deadline) const {
  if (!options_.auth_token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.auth_token));
  }
  if (deadline != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  }
}

bool Worker::SleepOrShutdown(absl::Duration d) { return shutdown_.WaitForNotificationWithTimeout(d); }

void Worker::Shutdown() {
  if (shutdown_.HasBeenNotified()) return;
  shutdown_.Notify();
  absl::MutexLock lock(&mu_);
  if (session_context_ != nullptr) session_context_->TryCancel();
}

absl::Status Worker::AttachOnce() {
  v1::AttachRequest request;
  request.set_name(options_.name);
  request.set_node(options_.node);
  request.set_device(options_.device);
  request.set_device_count(1);
  request.set_hostname(HostName());
  request.set_pid(getpid());
  request.set_version("dsv3 0.1");
  request.set_has_engine(true);
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [job_id, held] : ranks_) {
      v1::RankProgress* p = request.add_running();
      p->set_job_id(job_id);
      p->set_epoch(held.assignment.epoch());
      p->set_rank(held.assignment.rank().rank());
      p->set_state(held.state);
      p->set_detail(held.detail);
      p->set_step(held.step);
    }
  }
  grpc::ClientContext context;
  PrepareContext(&context, absl::Seconds(5));
  v1::AttachResponse response;
  grpc::Status s = stub_->Attach(&context, request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  absl::MutexLock lock(&mu_);
  worker_id_ = response.worker_id();
  lease_ms_ = std::max<int64_t>(response.lease_ms(), 30);
  ++attach_count_;
  return absl::OkStatus();
}

v1::WorkerMessage Worker::MakeHeartbeat() {
  v1::WorkerMessage m;
  absl::MutexLock lock(&mu_);
  v1::Heartbeat* hb = m.mutable_heartbeat();
  for (const auto& [job_id, held] : ranks_) {
    v1::RankProgress* p = hb->add_ranks();
    p->set_job_id(job_id);
    p->set_epoch(held.assignment.epoch());
    p->set_rank(held.assignment.rank().rank());
    p->set_state(held.state);
    p->set_detail(held.detail);
    p->set_step(held.step);
    if (held.process != nullptr) {
      const RankPositionSnapshot pos = held.process->position();
      p->set_micro_batch(pos.micro_batch);
      p->set_collective_seq(pos.collective_seq);
      if (held.state == v1::TRAINING && pos.waiting > 0 && pos.stalled >= absl::Seconds(2)) {
        p->set_detail(absl::StrCat(held.detail, "; waiting for a peer for ",
                                   absl::FormatDuration(absl::Trunc(pos.stalled, absl::Seconds(1))),
                                   " (op ", pos.micro_batch, CollectiveText(pos), ")"));
      }
    }
  }
  return m;
}

void Worker::HandleAssignment(const v1::Assignment& a, v1::WorkerMessage* ack_message) {
  v1::AssignmentAck* ack = ack_message->mutable_ack();
  ack->set_job_id(a.job_id());
  ack->set_epoch(a.epoch());
  ack->set_rank(a.rank().rank());
  // One rank per worker: a newer assignment replaces whatever was running.
  StopAllRanks("a new assignment replaces it");
  {
    absl::MutexLock lock(&mu_);
    HeldRank& held = ranks_[a.job_id()];
    held.assignment = a;
    held.state = v1::STARTING;
    held.detail = "starting";
  }
  RankProcessOptions options;
  options.train_binary = options_.train_binary;
  options.coordinator_address = options_.coordinator_address;
  options.auth_token = options_.auth_token;
  options.threads = options_.threads;
  options.dir = absl::StrCat(options_.work_dir, "/", a.job_id(), "/epoch-", a.epoch(), "-rank-",
                             a.rank().rank());
  absl::StatusOr<std::unique_ptr<RankProcess>> process =
      RankProcess::Start(a, options, [this](const v1::RankReport& r) { OnReport(r); });
  absl::MutexLock lock(&mu_);
  auto it = ranks_.find(a.job_id());
  if (!process.ok()) {
    ack->set_accepted(false);
    ack->set_detail(std::string(process.status().message()));
    spdlog::error("cannot run {} epoch {} rank {}: {}", a.job_id(), a.epoch(), a.rank().rank(),
                  process.status().ToString());
    if (it != ranks_.end()) ranks_.erase(it);
    return;
  }
  const std::string detail = absl::StrCat("started dsv3-train (pid ", (*process)->pid(), ") in ",
                                          options.dir);
  ack->set_accepted(true);
  ack->set_state(v1::STARTING);
  ack->set_detail(detail);
  if (it == ranks_.end() || it->second.assignment.epoch() != a.epoch()) {
    return;  // stopped while starting; ~RankProcess ends the child
  }
  it->second.process = *std::move(process);
  if (it->second.state == v1::STARTING) it->second.detail = detail;
  spdlog::info("assigned {} epoch {} rank {} (stage {}, experts [{}, {}), replica {}): {}",
               a.job_id(), a.epoch(), a.rank().rank(), a.rank().pipeline_stage(),
               a.rank().expert_begin(), a.rank().expert_end(), a.rank().dp_replica(), detail);
}

void Worker::OnReport(const v1::RankReport& r) {
  absl::MutexLock lock(&mu_);
  auto it = ranks_.find(r.job_id());
  if (it == ranks_.end() || it->second.assignment.epoch() != r.epoch()) return;  // replaced
  HeldRank& held = it->second;
  if (r.event() == "step") {
    held.state = v1::TRAINING;
    held.step = r.step();
    held.detail = absl::StrCat("step ", r.step(), "/", r.steps());
  } else if (r.event() == "hung") {
    held.state = v1::HUNG;
    held.detail = r.detail();
  } else if (r.event() == "exit") {
    held.state = r.exit_code() == 0 ? v1::DONE : v1::LOST;
    held.detail = r.exit_code() == 0
                      ? std::string("finished")
                      : absl::StrCat("exited with ", r.exit_code(), ": ", r.detail());
  }
  if (outbox_.size() >= kMaxOutbox) {
    auto step = std::find_if(outbox_.begin(), outbox_.end(), [](const v1::WorkerMessage& m) {
      return m.report().event() == "step";
    });
    outbox_.erase(step != outbox_.end() ? step : outbox_.begin());
  }
  v1::WorkerMessage m;
  *m.mutable_report() = r;
  outbox_.push_back(std::move(m));
}

void Worker::StopAllRanks(const std::string& why) {
  std::vector<std::unique_ptr<RankProcess>> stopping;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [job_id, held] : ranks_) {
      if (held.process != nullptr) stopping.push_back(std::move(held.process));
    }
    ranks_.clear();
  }
  for (auto& p : stopping) {
    spdlog::info("stopping rank {} of {} epoch {} (pid {}): {}", p->assignment().rank().rank(),
                 p->assignment().job_id(), p->assignment().epoch(), p->pid(), why);
    p->Stop(absl::Seconds(3));
  }
}

void Worker::HandleStop(const v1::StopCommand& stop) {
  std::unique_ptr<RankProcess> process;
  {
    absl::MutexLock lock(&mu_);
    auto it = ranks_.find(stop.job_id());
    if (it == ranks_.end() || it->second.assignment.epoch() > stop.epoch()) return;
    spdlog::info("stopping {} epoch {}: {}", stop.job_id(), stop.epoch(), stop.reason());
    process = std::move(it->second.process);
    ranks_.erase(it);
  }
  // A recovery discards the rank's work since the last checkpoint: nothing to finish, and a rank
  // blocked on a dead or hung peer would otherwise hold its device for the whole grace period.
  if (process != nullptr) process->Stop(stop.discard() ? absl::ZeroDuration() : absl::Seconds(3));
}

absl::Status Worker::RunSession() {
  grpc::ClientContext context;
  PrepareContext(&context, absl::InfiniteDuration());
  std::string worker_id;
  absl::Duration heartbeat_every;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_.HasBeenNotified()) return absl::CancelledError("shutting down");
    session_context_ = &context;
    worker_id = worker_id_;
    heartbeat_every = absl::Milliseconds(lease_ms_) / 3;
  }
  auto stream = stub_->Session(&context);
  absl::Mutex write_mu;  // one writer at a time: the heartbeat thread and the reader's acks
  auto write = [&](const v1::WorkerMessage& m) {
    absl::MutexLock lock(&write_mu);
    return stream->Write(m);
  };
  v1::WorkerMessage hello;
  hello.mutable_hello()->set_worker_id(worker_id);
  absl::Notification session_over;
  std::thread heartbeats;
  if (write(hello)) {
    // The writer thread: queued reports as they come, a heartbeat every lease/3. A report that
    // cannot be written goes back to the front of the queue for the next session.
    heartbeats = std::thread([&] {
      absl::Time next_heartbeat = absl::Now();
      while (!session_over.HasBeenNotified()) {
        std::deque<v1::WorkerMessage> batch;
        {
          absl::MutexLock lock(&mu_);
          const absl::Duration wait = std::max(next_heartbeat - absl::Now(), absl::ZeroDuration());
          auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !outbox_.empty(); };
          mu_.AwaitWithTimeout(absl::Condition(&ready), std::min(wait, absl::Milliseconds(50)));
          batch.swap(outbox_);
        }
        bool broken = false;
        while (!batch.empty()) {
          if (!write(batch.front())) {
            broken = true;
            break;
          }
          batch.pop_front();
        }
        if (!batch.empty()) {
          absl::MutexLock lock(&mu_);
          outbox_.insert(outbox_.begin(), batch.begin(), batch.end());
        }
        if (broken) break;
        if (absl::Now() >= next_heartbeat) {
          if (!write(MakeHeartbeat())) break;
          next_heartbeat = absl::Now() + heartbeat_every;
        }
      }
    });
    v1::CoordinatorMessage m;
    while (stream->Read(&m)) {
      if (m.has_assignment()) {
        v1::WorkerMessage ack;
        HandleAssignment(m.assignment(), &ack);
        write(ack);
      } else if (m.has_stop()) {
        HandleStop(m.stop());
      }
    }
  }
  session_over.Notify();
  if (heartbeats.joinable()) heartbeats.join();
  {
    absl::MutexLock lock(&write_mu);
    stream->WritesDone();
  }
  grpc::Status status = stream->Finish();
  absl::MutexLock lock(&mu_);
  session_context_ = nullptr;
  return FromGrpcStatus(status);
}

absl::Status Worker::Run() {
  absl::Duration backoff = options_.min_backoff;
  int failures = 0;
  while (!shutdown_.HasBeenNotified()) {
    absl::Status attached = AttachOnce();
    if (!attached.ok()) {
      if (absl::IsInvalidArgument(attached) || absl::IsUnauthenticated(attached)) {
        return attached;  // retrying cannot help
      }
      if (failures++ % 10 == 0) {
        spdlog::warn("cannot attach to the coordinator ({}); retrying every <= {}",
                     attached.ToString(), absl::FormatDuration(options_.max_backoff));
      }
      if (SleepOrShutdown(backoff)) break;
      backoff = std::min(backoff * 2, options_.max_backoff);
      continue;
    }
    failures = 0;
    backoff = options_.min_backoff;
    const std::string id = worker_id();
    SetLogId(absl::StrCat(options_.name, "/", id));
    spdlog::info("attached as {} (attach #{})", id, attach_count());
    absl::Status ended = RunSession();
    if (shutdown_.HasBeenNotified()) break;
    spdlog::warn("session ended ({}); re-attaching", ended.ToString());
    if (SleepOrShutdown(backoff)) break;
  }
  StopAllRanks("the worker is shutting down");
  // Leave cleanly so the coordinator does not wait for the lease to expire.
  const std::string id = worker_id();
  if (!id.empty()) {
    grpc::ClientContext context;
    PrepareContext(&context, absl::Seconds(2));
    v1::DetachRequest request;
    request.set_worker_id(id);
    v1::DetachResponse response;
    grpc::Status s = stub_->Detach(&context, request, &response);
    if (!s.ok()) spdlog::warn("detach failed: {}", s.error_message());
  }
  return absl::OkStatus();
}

}  // namespace dsv3::worker
