// Tests for the absl <-> gRPC status conversion.
#include "common/grpc_status.h"

#include "gtest/gtest.h"

namespace dsv3 {
namespace {

TEST(GrpcStatus, KeepsCodeAndMessageBothWays) {
  const absl::Status original = absl::FailedPreconditionError("job j1 has already ended");
  const grpc::Status converted = ToGrpcStatus(original);
  EXPECT_EQ(converted.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(converted.error_message(), "job j1 has already ended");
  EXPECT_EQ(FromGrpcStatus(converted), original);
}

TEST(GrpcStatus, OkMapsToOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(GrpcStatus, EveryCanonicalCodeRoundTrips) {
  for (int code = 1; code <= 16; ++code) {
    const absl::Status s(static_cast<absl::StatusCode>(code), "m");
    EXPECT_EQ(FromGrpcStatus(ToGrpcStatus(s)).code(), s.code()) << code;
  }
}

}  // namespace
}  // namespace dsv3
