// JobClient: dsv3ctl's calls to the coordinator's JobService over a channel the caller makes (so
// tests run it in-process). It adds the bearer token and the per-call deadline, and turns
// grpc::Status into absl::Status. It prints nothing and retries nothing; `watch` retries above it.
#ifndef DSV3_CLI_CTL_CLIENT_H_
#define DSV3_CLI_CTL_CLIENT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dsv3/v1/job_service.grpc.pb.h"
#include "grpcpp/channel.h"

namespace dsv3::cli {

class JobClient {
 public:
  // `auth_token` empty: no authorization metadata. `timeout_s` <= 0: unary calls have no deadline.
  JobClient(std::shared_ptr<grpc::Channel> channel, std::string auth_token, int timeout_s);

  // Each returns the coordinator's answer or its status (UNAVAILABLE when it cannot be reached,
  // DEADLINE_EXCEEDED past timeout_s, otherwise the code the service chose).
  absl::StatusOr<dsv3::v1::SubmitJobResponse> SubmitJob(const dsv3::v1::SubmitJobRequest& request);
  absl::StatusOr<dsv3::v1::JobStatus> GetJob(const dsv3::v1::GetJobRequest& request);
  absl::StatusOr<dsv3::v1::ListJobsResponse> ListJobs();
  absl::StatusOr<dsv3::v1::JobStatus> CancelJob(const std::string& job_id);
  absl::StatusOr<dsv3::v1::EstimateCostResponse> EstimateCost(
      const dsv3::v1::EstimateCostRequest& request);
  absl::StatusOr<dsv3::v1::ListWorkersResponse> ListWorkers();

  // Streams the job's status, calling `on_update` for each message until it returns false (the
  // stream is then cancelled and OK returned), the server ends the stream (its status is returned),
  // or the connection fails. No deadline.
  absl::Status WatchJob(const std::string& job_id,
                        const std::function<bool(const dsv3::v1::JobStatus&)>& on_update);

 private:
  void Prepare(grpc::ClientContext& context, bool with_deadline) const;

  std::unique_ptr<dsv3::v1::JobService::Stub> stub_;
  std::string auth_token_;
  int timeout_s_;
};

}  // namespace dsv3::cli

#endif  // DSV3_CLI_CTL_CLIENT_H_
