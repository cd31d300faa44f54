// Tests for RETURN_IF_ERROR / ASSIGN_OR_RETURN and the Status matchers.
#include "common/status_macros.h"

#include <string>

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::IsOkAndHolds;
using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;

absl::Status FailIf(bool fail) {
  return fail ? absl::InvalidArgumentError("asked to fail") : absl::OkStatus();
}

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::Status Chain(bool fail, int* calls) {
  RETURN_IF_ERROR(FailIf(fail));
  ++*calls;
  return absl::OkStatus();
}

absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int half, Half(x));
  ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

TEST(StatusMacros, ReturnIfErrorStopsAtTheFirstError) {
  int calls = 0;
  EXPECT_THAT(Chain(true, &calls), StatusIs(absl::StatusCode::kInvalidArgument, "asked to fail"));
  EXPECT_EQ(calls, 0);
  EXPECT_OK(Chain(false, &calls));
  EXPECT_EQ(calls, 1);
}

TEST(StatusMacros, AssignOrReturnPassesValuesAndErrorsThrough) {
  EXPECT_THAT(Quarter(8), IsOkAndHolds(2));
  EXPECT_THAT(Quarter(6), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("odd")));
  EXPECT_THAT(Quarter(3), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(StatusMatchers, IsOkRejectsAnError) {
  EXPECT_THAT(absl::OkStatus(), ::dsv3::testing::IsOk());
  EXPECT_THAT(absl::InternalError("x"), ::testing::Not(::dsv3::testing::IsOk()));
  EXPECT_THAT(absl::StatusOr<int>(absl::NotFoundError("y")),
              ::testing::Not(IsOkAndHolds(1)));
  EXPECT_THAT(absl::StatusOr<int>(2), ::testing::Not(IsOkAndHolds(1)));
}

}  // namespace
}  // namespace dsv3
