// Tests for KvStore: scoping, blocking waits with timeouts, counters, limits.
#include "coordinator/kv_store.h"

#include <thread>

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace dsv3::coordinator {
namespace {

using ::dsv3::testing::IsOkAndHolds;
using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;

TEST(KvStore, ValuesAreScopedByJobAndEpoch) {
  KvStore kv;
  ASSERT_OK(kv.Set("job-1", 1, "rank0", "addr-a"));
  EXPECT_THAT(kv.Get("job-1", 1, "rank0", absl::ZeroDuration()), IsOkAndHolds("addr-a"));
  EXPECT_THAT(kv.Get("job-1", 2, "rank0", absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("rank0")));
  EXPECT_THAT(kv.Get("job-2", 1, "rank0", absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(KvStore, GetWaitsForAKeySetByAnotherThread) {
  KvStore kv;
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_OK(kv.Set("j", 1, "k", "v"));
  });
  EXPECT_THAT(kv.Get("j", 1, "k", absl::Seconds(10)), IsOkAndHolds("v"));
  setter.join();
}

TEST(KvStore, WaitNamesTheMissingKeys) {
  KvStore kv;
  ASSERT_OK(kv.Set("j", 1, "a", "1"));
  EXPECT_THAT(kv.Wait("j", 1, {"a", "b", "c"}, absl::Milliseconds(20)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("b, c")));
  ASSERT_OK(kv.Set("j", 1, "b", "2"));
  ASSERT_OK(kv.Set("j", 1, "c", "3"));
  EXPECT_OK(kv.Wait("j", 1, {"a", "b", "c"}, absl::Milliseconds(20)));
}

TEST(KvStore, AddCountsFromZeroAndSumsConcurrentAdds) {
  KvStore kv;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&kv, t] {
      for (int i = 0; i < 100; ++i) ASSERT_TRUE(kv.Add("j", 1, "n", t + 1).ok());
    });
  }
  for (auto& th : threads) th.join();
  // Thread t adds (t+1) a hundred times: 100 * (1+2+3+4).
  EXPECT_THAT(kv.Add("j", 1, "n", 0), IsOkAndHolds(1000));
  EXPECT_THAT(kv.Get("j", 1, "n", absl::ZeroDuration()), IsOkAndHolds("1000"));
  ASSERT_OK(kv.Set("j", 1, "s", "text"));
  EXPECT_THAT(kv.Add("j", 1, "s", 1), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(KvStore, OversizedKeysAndValuesAreRejected) {
  KvStore kv;
  EXPECT_THAT(kv.Set("j", 1, "", "v"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(kv.Set("j", 1, std::string(KvStore::kMaxKeyBytes + 1, 'k'), "v"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(kv.Set("j", 1, "k", std::string(KvStore::kMaxValueBytes + 1, 'v')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST(KvStore, DropRemovesOlderEpochsOnly) {
  KvStore kv;
  ASSERT_OK(kv.Set("j", 1, "k", "old"));
  ASSERT_OK(kv.Set("j", 2, "k", "new"));
  ASSERT_OK(kv.Set("other", 1, "k", "keep"));
  kv.Drop("j", 2);
  EXPECT_THAT(kv.Get("j", 1, "k", absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(kv.Get("j", 2, "k", absl::ZeroDuration()), IsOkAndHolds("new"));
  EXPECT_THAT(kv.Get("other", 1, "k", absl::ZeroDuration()), IsOkAndHolds("keep"));
}

}  // namespace
}  // namespace dsv3::coordinator
