// JobClient (see ctl_client.h): thin wrappers over the generated JobService stub.
#include "cli/ctl_client.h"

#include <chrono>
#include <utility>

#include "common/grpc_status.h"
#include "grpcpp/client_context.h"

namespace dsv3::cli {

JobClient::JobClient(std::shared_ptr<grpc::Channel> channel, std::string auth_token, int timeout_s)
    : stub_(dsv3::v1::JobService::NewStub(std::move(channel))),
      auth_token_(std::move(auth_token)),
      timeout_s_(timeout_s) {}

void JobClient::Prepare(grpc::ClientContext& context, bool with_deadline) const {
  if (!auth_token_.empty()) context.AddMetadata("authorization", "Bearer " + auth_token_);
  if (with_deadline && timeout_s_ > 0) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s_));
  }
}

namespace {

using Stub = dsv3::v1::JobService::Stub;

// One unary call through `method` of the stub, with a context `prepare` sets up.
template <typename Request, typename Response, typename Prepare>
absl::StatusOr<Response> Call(Stub& stub,
                              grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                           Response*),
                              const Request& request, const Prepare& prepare) {
  grpc::ClientContext context;
  prepare(context);
  Response response;
  const grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

}  // namespace

absl::StatusOr<dsv3::v1::SubmitJobResponse> JobClient::SubmitJob(
    const dsv3::v1::SubmitJobRequest& request) {
  return Call(*stub_, &Stub::SubmitJob, request, [this](auto& c) { Prepare(c, true); });
}

absl::StatusOr<dsv3::v1::JobStatus> JobClient::GetJob(const dsv3::v1::GetJobRequest& request) {
  return Call(*stub_, &Stub::GetJob, request, [this](auto& c) { Prepare(c, true); });
}

absl::StatusOr<dsv3::v1::ListJobsResponse> JobClient::ListJobs() {
  return Call(*stub_, &Stub::ListJobs, dsv3::v1::ListJobsRequest(),
              [this](auto& c) { Prepare(c, true); });
}

absl::StatusOr<dsv3::v1::JobStatus> JobClient::CancelJob(const std::string& job_id) {
  dsv3::v1::CancelJobRequest request;
  request.set_job_id(job_id);
  return Call(*stub_, &Stub::CancelJob, request, [this](auto& c) { Prepare(c, true); });
}

absl::StatusOr<dsv3::v1::EstimateCostResponse> JobClient::EstimateCost(
    const dsv3::v1::EstimateCostRequest& request) {
  return Call(*stub_, &Stub::EstimateCost, request, [this](auto& c) { Prepare(c, true); });
}

absl::StatusOr<dsv3::v1::ListWorkersResponse> JobClient::ListWorkers() {
  return Call(*stub_, &Stub::ListWorkers, dsv3::v1::ListWorkersRequest(),
              [this](auto& c) { Prepare(c, true); });
}

absl::Status JobClient::WatchJob(const std::string& job_id,
                                 const std::function<bool(const dsv3::v1::JobStatus&)>& on_update) {
  grpc::ClientContext context;
  Prepare(context, /*with_deadline=*/false);
  dsv3::v1::WatchJobRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<grpc::ClientReader<dsv3::v1::JobStatus>> reader =
      stub_->WatchJob(&context, request);
  dsv3::v1::JobStatus update;
  while (reader->Read(&update)) {
    if (!on_update(update)) {
      context.TryCancel();
      reader->Finish();  // CANCELLED, by us: not an error
      return absl::OkStatus();
    }
  }
  return FromGrpcStatus(reader->Finish());
}

}  // namespace dsv3::cli
