// CoordinatorStore: the engine's rendezvous Store (engine/parallel/store.h) implemented as a gRPC
// client of the coordinator's StoreService, scoped by (job id, epoch). A worker hands one to the
// communicators of the rank it runs. It lives in worker/ because the engine never includes gRPC.
// Not a cache: every call is an RPC; the coordinator refuses calls for any epoch but the job's
// current one (fencing).
#ifndef DSV3_WORKER_COORDINATOR_STORE_H_
#define DSV3_WORKER_COORDINATOR_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "dsv3/v1/store_service.grpc.pb.h"
#include "engine/parallel/store.h"
#include "grpcpp/channel.h"

namespace dsv3::worker {

struct CoordinatorStoreOptions {
  std::string job_id;
  int64_t epoch = 0;
  std::string auth_token;  // empty: no authorization metadata
  // The deadline of a Set or Add, and the slack added to a Get or Wait's own timeout.
  absl::Duration rpc_timeout = absl::Seconds(10);
};

class CoordinatorStore : public parallel::Store {
 public:
  // `channel` is shared (the worker's channel to the coordinator).
  CoordinatorStore(std::shared_ptr<grpc::Channel> channel, CoordinatorStoreOptions options);

  // Errors: INVALID_ARGUMENT for bad keys or values (checked here, before any RPC); the
  // coordinator's own (FAILED_PRECONDITION when the job is not running at this epoch, NOT_FOUND for
  // an unknown job, UNAUTHENTICATED without the right token); UNAVAILABLE or DEADLINE_EXCEEDED when
  // the coordinator cannot be reached. Set, Get and Wait are retried while the coordinator is
  // unreachable, until their deadline; Add is never retried (it is not idempotent). Messages start
  // with "coordinator store <call> '<key>' (job <id> epoch <n>)".
  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::Status Wait(absl::Span<const std::string> keys, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;

 private:
  // Runs `call` (one RPC with the given deadline) until it succeeds, fails with anything but
  // UNAVAILABLE, or `deadline` passes.
  template <typename Call>
  grpc::Status Retry(absl::Time deadline, Call call);
  void Prepare(grpc::ClientContext* context, absl::Time deadline) const;
  v1::StoreScope Scope() const;
  absl::Status Error(const grpc::Status& status, absl::string_view call,
                     absl::string_view key) const;

  const std::unique_ptr<v1::StoreService::Stub> stub_;
  const CoordinatorStoreOptions options_;
};

}  // namespace dsv3::worker

#endif  // DSV3_WORKER_COORDINATOR_STORE_H_
