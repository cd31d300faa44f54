// CoordinatorStore; see coordinator_store.h.
#include "worker/coordinator_store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "grpcpp/client_context.h"

namespace dsv3::worker {
namespace {

// The coordinator clamps a Get or Wait to this long; longer waits are split into several calls.
constexpr absl::Duration kMaxServerWait = absl::Seconds(300);
constexpr absl::Duration kRetryBackoff = absl::Milliseconds(100);

}  // namespace

CoordinatorStore::CoordinatorStore(std::shared_ptr<grpc::Channel> channel,
                                   CoordinatorStoreOptions options)
    : stub_(v1::StoreService::NewStub(std::move(channel))), options_(std::move(options)) {}

void CoordinatorStore::Prepare(grpc::ClientContext* context, absl::Time deadline) const {
  context->set_deadline(absl::ToChronoTime(deadline));
  if (!options_.auth_token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.auth_token));
  }
}

v1::StoreScope CoordinatorStore::Scope() const {
  v1::StoreScope scope;
  scope.set_job_id(options_.job_id);
  scope.set_epoch(options_.epoch);
  return scope;
}

absl::Status CoordinatorStore::Error(const grpc::Status& status, absl::string_view call,
                                     absl::string_view key) const {
  const absl::Status s = FromGrpcStatus(status);
  return absl::Status(
      s.code(), absl::StrCat("coordinator store ", call, " '", key, "' (job ", options_.job_id,
                             " epoch ", options_.epoch, "): ", s.message()));
}

template <typename Call>
grpc::Status CoordinatorStore::Retry(absl::Time deadline, Call call) {
  while (true) {
    grpc::Status s = call();
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return s;
    const absl::Time now = absl::Now();
    if (now + kRetryBackoff >= deadline) return s;
    absl::SleepFor(kRetryBackoff);
  }
}

absl::Status CoordinatorStore::Set(absl::string_view key, absl::string_view value) {
  RETURN_IF_ERROR(parallel::CheckStoreKey(key));
  RETURN_IF_ERROR(parallel::CheckStoreValue(key, value));
  v1::StoreSetRequest request;
  *request.mutable_scope() = Scope();
  request.set_key(std::string(key));
  request.set_value(std::string(value));
  const absl::Time deadline = absl::Now() + options_.rpc_timeout;
  grpc::Status s = Retry(deadline, [&] {
    grpc::ClientContext context;
    Prepare(&context, deadline);
    v1::StoreSetResponse response;
    return stub_->Set(&context, request, &response);
  });
  return s.ok() ? absl::OkStatus() : Error(s, "Set", key);
}

absl::StatusOr<std::string> CoordinatorStore::Get(absl::string_view key, absl::Duration timeout) {
  RETURN_IF_ERROR(parallel::CheckStoreKey(key));
  const absl::Time end = absl::Now() + std::max(timeout, absl::ZeroDuration());
  v1::StoreGetRequest request;
  *request.mutable_scope() = Scope();
  request.set_key(std::string(key));
  while (true) {
    const absl::Duration wait = std::clamp(end - absl::Now(), absl::ZeroDuration(), kMaxServerWait);
    request.set_timeout_ms(absl::ToInt64Milliseconds(wait));
    v1::StoreGetResponse response;
    const absl::Time deadline = absl::Now() + wait + options_.rpc_timeout;
    grpc::Status s = Retry(end, [&] {
      grpc::ClientContext context;
      Prepare(&context, deadline);
      return stub_->Get(&context, request, &response);
    });
    if (s.ok()) return std::move(*response.mutable_value());
    // A long wait is several server-side waits: go on while time is left.
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && absl::Now() < end) continue;
    return Error(s, "Get", key);
  }
}

absl::Status CoordinatorStore::Wait(absl::Span<const std::string> keys, absl::Duration timeout) {
  for (const std::string& key : keys) RETURN_IF_ERROR(parallel::CheckStoreKey(key));
  const absl::Time end = absl::Now() + std::max(timeout, absl::ZeroDuration());
  v1::StoreWaitRequest request;
  *request.mutable_scope() = Scope();
  for (const std::string& key : keys) request.add_keys(key);
  while (true) {
    const absl::Duration wait = std::clamp(end - absl::Now(), absl::ZeroDuration(), kMaxServerWait);
    request.set_timeout_ms(absl::ToInt64Milliseconds(wait));
    const absl::Time deadline = absl::Now() + wait + options_.rpc_timeout;
    grpc::Status s = Retry(end, [&] {
      grpc::ClientContext context;
      Prepare(&context, deadline);
      v1::StoreWaitResponse response;
      return stub_->Wait(&context, request, &response);
    });
    if (s.ok()) return absl::OkStatus();
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && absl::Now() < end) continue;
    return Error(s, "Wait", absl::StrJoin(keys, "', '"));
  }
}

absl::StatusOr<int64_t> CoordinatorStore::Add(absl::string_view key, int64_t delta) {
  RETURN_IF_ERROR(parallel::CheckStoreKey(key));
  v1::StoreAddRequest request;
  *request.mutable_scope() = Scope();
  request.set_key(std::string(key));
  request.set_delta(delta);
  grpc::ClientContext context;
  Prepare(&context, absl::Now() + options_.rpc_timeout);
  v1::StoreAddResponse response;
  grpc::Status s = stub_->Add(&context, request, &response);
  if (!s.ok()) return Error(s, "Add", key);
  return response.value();
}

}  // namespace dsv3::worker
