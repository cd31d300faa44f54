// Tests for ReadAuthTokenFile.
#include "common/auth_token.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::IsOkAndHolds;
using ::dsv3::testing::StatusIs;

std::string WriteTemp(const std::string& text) {
  std::string path = ::testing::TempDir() + "/token_" +
                     ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::ofstream(path) << text;
  return path;
}

TEST(AuthToken, SurroundingWhitespaceIsIgnored) {
  EXPECT_THAT(ReadAuthTokenFile(WriteTemp("  s3cret-token\n")), IsOkAndHolds("s3cret-token"));
}

TEST(AuthToken, AMissingFileIsNotFound) {
  EXPECT_THAT(ReadAuthTokenFile("/nonexistent/dsv3/token"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(AuthToken, AnEmptyFileIsRejected) {
  EXPECT_THAT(ReadAuthTokenFile(WriteTemp(" \n\t")), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(AuthToken, InnerWhitespaceIsRejected) {
  EXPECT_THAT(ReadAuthTokenFile(WriteTemp("two words")),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dsv3
