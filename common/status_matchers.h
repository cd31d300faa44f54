// Test helpers for absl::Status: ASSERT_OK, EXPECT_OK, IsOk(), IsOkAndHolds(m), StatusIs(code[, msg]).
// For tests only (links GoogleMock); abseil 20220623 ships no Status matchers.
#ifndef DSV3_COMMON_STATUS_MATCHERS_H_
#define DSV3_COMMON_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::testing {

inline const absl::Status& GetStatus(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& status = ::dsv3::testing::GetStatus(arg);
  if (!status.ok()) *result_listener << "status is " << status;
  return status.ok();
}

MATCHER_P(IsOkAndHolds, matcher, "is OK and holds a matching value") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(matcher, *arg, result_listener);
}

MATCHER_P(StatusIs, code, "has code " + absl::StatusCodeToString(code)) {
  const absl::Status& status = ::dsv3::testing::GetStatus(arg);
  if (status.code() != code) {
    *result_listener << "status is " << status;
    return false;
  }
  return true;
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has code " + absl::StatusCodeToString(code) + " and a message that " +
               ::testing::DescribeMatcher<std::string>(message_matcher)) {
  const absl::Status& status = ::dsv3::testing::GetStatus(arg);
  if (status.code() != code) {
    *result_listener << "status is " << status;
    return false;
  }
  return ::testing::ExplainMatchResult(message_matcher, std::string(status.message()),
                                       result_listener);
}

}  // namespace dsv3::testing

#define ASSERT_OK(expr) ASSERT_THAT((expr), ::dsv3::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::dsv3::testing::IsOk())

// ASSERT_OK_AND_ASSIGN(T var, expr): asserts that the StatusOr `expr` is OK and declares `var`
// (or assigns an existing one) from its value.
#define DSV3_STATUS_CONCAT_INNER_(a, b) a##b
#define DSV3_STATUS_CONCAT_(a, b) DSV3_STATUS_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  DSV3_ASSERT_OK_AND_ASSIGN_IMPL_(DSV3_STATUS_CONCAT_(status_or_, __LINE__), lhs, expr)
#define DSV3_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  ASSERT_TRUE(tmp.ok()) << tmp.status();               \
  lhs = std::move(*tmp)

#endif  // DSV3_COMMON_STATUS_MATCHERS_H_
