// gRPC services over the Coordinator; see services.h.
#include "coordinator/services.h"

#include <deque>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/grpc_status.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"
#include "spdlog/spdlog.h"

namespace dsv3::coordinator {
namespace {

constexpr int kMaxMessageBytes = 8 << 20;

// A session's outgoing queue: the Coordinator pushes, the RPC's writer drains.
class QueueSink : public SessionSink {
 public:
  void Send(const v1::CoordinatorMessage& message) override {
    absl::MutexLock lock(&mu_);
    if (!closed_) queue_.push_back(message);
  }
  void Close(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    status_ = status;
  }
  // Blocks until a message is queued or the sink is closed (then nullopt).
  std::optional<v1::CoordinatorMessage> Pop() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](QueueSink* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
          return s->closed_ || !s->queue_.empty();
        },
        this));
    if (queue_.empty()) return std::nullopt;
    v1::CoordinatorMessage m = std::move(queue_.front());
    queue_.pop_front();
    return m;
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  absl::Mutex mu_;
  std::deque<v1::CoordinatorMessage> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

bool IsTerminalState(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

}  // namespace

grpc::Status AuthCheck::Check(const grpc::ServerContext* context) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing 'authorization: Bearer <token>' metadata");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  const std::string expected = absl::StrCat("Bearer ", token_);
  // Constant-time comparison: the time taken does not depend on where the strings differ.
  unsigned char diff = value.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i] ^ (i < value.size() ? value[i] : 0));
  }
  if (diff != 0) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token");
  return grpc::Status::OK;
}

#define DSV3_CHECK_AUTH()                                          \
  do {                                                             \
    if (grpc::Status auth = auth_->Check(context); !auth.ok()) return auth; \
  } while (0)

// --- JobService -------------------------------------------------------------------------------------

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* context,
                                       const v1::SubmitJobRequest* request,
                                       v1::SubmitJobResponse* response) {
  DSV3_CHECK_AUTH();
  absl::StatusOr<std::string> id = coordinator_->SubmitJob(request->spec_json(), request->base_dir());
  if (!id.ok()) return ToGrpcStatus(id.status());
  response->set_job_id(*id);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                    v1::JobStatus* response) {
  DSV3_CHECK_AUTH();
  absl::StatusOr<v1::JobStatus> job = coordinator_->GetJob(request->job_id(), request->max_events());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = std::move(*job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* context,
                                      const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  DSV3_CHECK_AUTH();
  for (auto& job : coordinator_->ListJobs()) *response->add_jobs() = std::move(job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* context,
                                      const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobStatus>* writer) {
  DSV3_CHECK_AUTH();
  // An update on every change, and at least every 2 s so the accounting figures stay fresh.
  constexpr absl::Duration kRefresh = absl::Seconds(2);
  int64_t version = 0;
  int64_t sent_version = -1;
  absl::Time sent_at = absl::InfinitePast();
  while (!context->IsCancelled()) {
    absl::StatusOr<v1::JobStatus> job =
        coordinator_->WaitForJobChange(request->job_id(), &version, absl::Milliseconds(500));
    if (!job.ok()) return ToGrpcStatus(job.status());
    if (version == sent_version && absl::Now() - sent_at < kRefresh) continue;
    if (!writer->Write(*job)) break;  // the client went away
    sent_version = version;
    sent_at = absl::Now();
    if (IsTerminalState(job->state())) break;
  }
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context,
                                       const v1::CancelJobRequest* request,
                                       v1::JobStatus* response) {
  DSV3_CHECK_AUTH();
  absl::StatusOr<v1::JobStatus> job = coordinator_->CancelJob(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = std::move(*job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::EstimateCost(grpc::ServerContext* context,
                                          const v1::EstimateCostRequest* request,
                                          v1::EstimateCostResponse* response) {
  DSV3_CHECK_AUTH();
  absl::StatusOr<v1::EstimateCostResponse> estimate = coordinator_->EstimateCost(*request);
  if (!estimate.ok()) return ToGrpcStatus(estimate.status());
  *response = std::move(*estimate);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::ListWorkers(grpc::ServerContext* context,
                                         const v1::ListWorkersRequest* request,
                                         v1::ListWorkersResponse* response) {
  DSV3_CHECK_AUTH();
  for (auto& w : coordinator_->ListWorkers()) *response->add_workers() = std::move(w);
  return grpc::Status::OK;
}

// --- WorkerService ----------------------------------------------------------------------------------

grpc::Status WorkerServiceImpl::Attach(grpc::ServerContext* context,
                                       const v1::AttachRequest* request,
                                       v1::AttachResponse* response) {
  DSV3_CHECK_AUTH();
  absl::StatusOr<v1::AttachResponse> r = coordinator_->Attach(*request, context->peer());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Session(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) {
  DSV3_CHECK_AUTH();
  v1::WorkerMessage first;
  if (!stream->Read(&first)) return grpc::Status(grpc::StatusCode::CANCELLED, "no hello");
  if (!first.has_hello()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first session message must be a hello with the worker id");
  }
  const std::string worker_id = first.hello().worker_id();
  QueueSink sink;
  if (absl::Status s = coordinator_->OpenSession(worker_id, &sink); !s.ok()) {
    return ToGrpcStatus(s);
  }
  std::thread reader([&] {
    v1::WorkerMessage m;
    while (stream->Read(&m)) {
      absl::Status s = coordinator_->HandleWorkerMessage(worker_id, m);
      if (absl::IsNotFound(s)) {
        sink.Close(s);
        return;
      }
      if (!s.ok()) spdlog::warn("worker {}: {}", worker_id, s.ToString());
    }
    sink.Close(absl::CancelledError("the worker closed its session"));
  });
  while (std::optional<v1::CoordinatorMessage> m = sink.Pop()) {
    if (!stream->Write(*m)) {
      sink.Close(absl::CancelledError("the worker went away"));
      break;
    }
  }
  coordinator_->CloseSession(worker_id, &sink);
  context->TryCancel();  // unblocks the reader if it still waits in Read
  reader.join();
  return ToGrpcStatus(sink.status());
}

grpc::Status WorkerServiceImpl::Detach(grpc::ServerContext* context,
                                       const v1::DetachRequest* request,
                                       v1::DetachResponse* response) {
  DSV3_CHECK_AUTH();
  return ToGrpcStatus(coordinator_->Detach(request->worker_id()));
}

// --- StoreService -----------------------------------------------------------------------------------

namespace {
absl::Duration Timeout(int64_t ms) {
  // Bounded so that a hostile request cannot park a server thread for long.
  return absl::Milliseconds(std::clamp<int64_t>(ms, 0, 300'000));
}
}  // namespace

grpc::Status StoreServiceImpl::Set(grpc::ServerContext* context,
                                   const v1::StoreSetRequest* request,
                                   v1::StoreSetResponse* response) {
  DSV3_CHECK_AUTH();
  if (absl::Status s = coordinator_->CheckStoreScope(request->scope()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  return ToGrpcStatus(coordinator_->kv_store().Set(request->scope().job_id(),
                                                   request->scope().epoch(), request->key(),
                                                   request->value()));
}

grpc::Status StoreServiceImpl::Get(grpc::ServerContext* context,
                                   const v1::StoreGetRequest* request,
                                   v1::StoreGetResponse* response) {
  DSV3_CHECK_AUTH();
  if (absl::Status s = coordinator_->CheckStoreScope(request->scope()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  absl::StatusOr<std::string> v =
      coordinator_->kv_store().Get(request->scope().job_id(), request->scope().epoch(),
                                   request->key(), Timeout(request->timeout_ms()));
  if (!v.ok()) return ToGrpcStatus(v.status());
  response->set_value(std::move(*v));
  return grpc::Status::OK;
}

grpc::Status StoreServiceImpl::Wait(grpc::ServerContext* context,
                                    const v1::StoreWaitRequest* request,
                                    v1::StoreWaitResponse* response) {
  DSV3_CHECK_AUTH();
  if (absl::Status s = coordinator_->CheckStoreScope(request->scope()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  std::vector<std::string> keys(request->keys().begin(), request->keys().end());
  return ToGrpcStatus(coordinator_->kv_store().Wait(
      request->scope().job_id(), request->scope().epoch(), keys, Timeout(request->timeout_ms())));
}

grpc::Status StoreServiceImpl::Add(grpc::ServerContext* context,
                                   const v1::StoreAddRequest* request,
                                   v1::StoreAddResponse* response) {
  DSV3_CHECK_AUTH();
  if (absl::Status s = coordinator_->CheckStoreScope(request->scope()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  absl::StatusOr<int64_t> v = coordinator_->kv_store().Add(
      request->scope().job_id(), request->scope().epoch(), request->key(), request->delta());
  if (!v.ok()) return ToGrpcStatus(v.status());
  response->set_value(*v);
  return grpc::Status::OK;
}

// --- Server -----------------------------------------------------------------------------------------

CoordinatorServer::CoordinatorServer(Coordinator* coordinator, const ServerOptions& options)
    : auth_(options.auth_token),
      jobs_(coordinator, &auth_),
      workers_(coordinator, &auth_),
      store_(coordinator, &auth_) {}

CoordinatorServer::~CoordinatorServer() { Shutdown(absl::Seconds(1)); }

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    Coordinator* coordinator, const ServerOptions& options) {
  std::unique_ptr<CoordinatorServer> s(new CoordinatorServer(coordinator, options));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, grpc::InsecureServerCredentials(), &s->port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.RegisterService(&s->jobs_);
  builder.RegisterService(&s->workers_);
  builder.RegisterService(&s->store_);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address));
  }
  return s;
}

void CoordinatorServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  server_.reset();
}

}  // namespace dsv3::coordinator
