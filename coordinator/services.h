// The coordinator's gRPC services: JobService, WorkerService and StoreService. Thin: each RPC checks
// the bearer token (when one is configured), converts, and calls the Coordinator. The standard
// health and reflection services are registered beside them by main.cc and stay open without a
// token so probes work.
#ifndef DSV3_COORDINATOR_SERVICES_H_
#define DSV3_COORDINATOR_SERVICES_H_

#include <memory>
#include <string>

#include "coordinator/coordinator.h"
#include "dsv3/v1/job_service.grpc.pb.h"
#include "dsv3/v1/store_service.grpc.pb.h"
#include "dsv3/v1/worker_service.grpc.pb.h"

namespace dsv3::coordinator {

// Checks `authorization: Bearer <token>` metadata; a no-op when the token is empty.
class AuthCheck {
 public:
  explicit AuthCheck(std::string token) : token_(std::move(token)) {}
  grpc::Status Check(const grpc::ServerContext* context) const;

 private:
  std::string token_;
};

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(Coordinator* coordinator, const AuthCheck* auth)
      : coordinator_(coordinator), auth_(auth) {}
  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::JobStatus* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobStatus>* writer) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::JobStatus* response) override;
  grpc::Status EstimateCost(grpc::ServerContext* context, const v1::EstimateCostRequest* request,
                            v1::EstimateCostResponse* response) override;
  grpc::Status ListWorkers(grpc::ServerContext* context, const v1::ListWorkersRequest* request,
                           v1::ListWorkersResponse* response) override;

 private:
  Coordinator* coordinator_;
  const AuthCheck* auth_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(Coordinator* coordinator, const AuthCheck* auth)
      : coordinator_(coordinator), auth_(auth) {}
  grpc::Status Attach(grpc::ServerContext* context, const v1::AttachRequest* request,
                      v1::AttachResponse* response) override;
  grpc::Status Session(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) override;
  grpc::Status Detach(grpc::ServerContext* context, const v1::DetachRequest* request,
                      v1::DetachResponse* response) override;

 private:
  Coordinator* coordinator_;
  const AuthCheck* auth_;
};

class StoreServiceImpl final : public v1::StoreService::Service {
 public:
  StoreServiceImpl(Coordinator* coordinator, const AuthCheck* auth)
      : coordinator_(coordinator), auth_(auth) {}
  grpc::Status Set(grpc::ServerContext* context, const v1::StoreSetRequest* request,
                   v1::StoreSetResponse* response) override;
  grpc::Status Get(grpc::ServerContext* context, const v1::StoreGetRequest* request,
                   v1::StoreGetResponse* response) override;
  grpc::Status Wait(grpc::ServerContext* context, const v1::StoreWaitRequest* request,
                    v1::StoreWaitResponse* response) override;
  grpc::Status Add(grpc::ServerContext* context, const v1::StoreAddRequest* request,
                   v1::StoreAddResponse* response) override;

 private:
  Coordinator* coordinator_;
  const AuthCheck* auth_;
};

// Everything a coordinator server needs, built in one place (main.cc and the in-process tests).
struct ServerOptions {
  std::string address = "127.0.0.1:0";
  std::string auth_token;  // empty: no authentication
};

class CoordinatorServer {
 public:
  // Builds and starts the server. UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(Coordinator* coordinator,
                                                                  const ServerOptions& options);
  ~CoordinatorServer();
  int port() const { return port_; }
  // Stops accepting calls and ends open streams within `grace`.
  void Shutdown(absl::Duration grace);

 private:
  CoordinatorServer(Coordinator* coordinator, const ServerOptions& options);

  AuthCheck auth_;
  JobServiceImpl jobs_;
  WorkerServiceImpl workers_;
  StoreServiceImpl store_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace dsv3::coordinator

#endif  // DSV3_COORDINATOR_SERVICES_H_
