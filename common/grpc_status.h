// The one conversion between absl::Status and grpc::Status (same canonical codes, message kept).
// Used only by the gRPC-facing code (coordinator, worker, cli); the engine never includes it.
#ifndef DSV3_COMMON_GRPC_STATUS_H_
#define DSV3_COMMON_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace dsv3 {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace dsv3

#endif  // DSV3_COMMON_GRPC_STATUS_H_
