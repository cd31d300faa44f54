// Tests for the Store implementations in the engine (InProcessStore, FileStore) through the Store
// interface, PrefixStore, and FileStore shared by forked processes. The coordinator-backed store
// is tested in worker/coordinator_store_test.cc.
#include "engine/parallel/store.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_matchers.h"
#include "engine/parallel/in_process_store.h"
#include "engine/parallel/store_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using ::dsv3::testing::IsOkAndHolds;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::string TestDir() {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/store_test_", ::getpid(), "_",
                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  return dir;
}

struct StoreKind {
  std::string name;
  std::function<std::shared_ptr<Store>(const std::string& dir)> make;
};

class StoreTest : public ::testing::TestWithParam<StoreKind> {
 protected:
  void SetUp() override {
    dir_ = TestDir();
    store_ = GetParam().make(dir_);
    ASSERT_NE(store_, nullptr);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  std::shared_ptr<Store> store_;
};

TEST_P(StoreTest, AValueThatWasSetIsReadBack) {
  ASSERT_OK(store_->Set("a/b c", std::string("x\0y", 3)));
  EXPECT_THAT(store_->Get("a/b c", absl::ZeroDuration()), IsOkAndHolds(std::string("x\0y", 3)));
  ASSERT_OK(store_->Set("a/b c", "second"));
  EXPECT_THAT(store_->Get("a/b c", absl::ZeroDuration()), IsOkAndHolds("second"));
}

TEST_P(StoreTest, AnEmptyValueIsAValue) {
  ASSERT_OK(store_->Set("empty", ""));
  EXPECT_THAT(store_->Get("empty", absl::ZeroDuration()), IsOkAndHolds(""));
}

TEST_P(StoreTest, GetOfAMissingKeyTimesOutNamingTheKey) {
  const absl::Time start = absl::Now();
  EXPECT_THAT(store_->Get("never", absl::Milliseconds(100)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("never")));
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(100));
  EXPECT_LT(took, absl::Seconds(2));
}

TEST_P(StoreTest, GetWaitsForAKeySetByAnotherThread) {
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_OK(store_->Set("late", "v"));
  });
  EXPECT_THAT(store_->Get("late", absl::Seconds(10)), IsOkAndHolds("v"));
  setter.join();
}

TEST_P(StoreTest, WaitNamesOnlyTheMissingKeys) {
  ASSERT_OK(store_->Set("k1", "1"));
  ASSERT_OK(store_->Set("k3", "3"));
  absl::Status s = store_->Wait({"k1", "k2", "k3", "k4"}, absl::Milliseconds(50));
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDeadlineExceeded,
                          AllOf(HasSubstr("k2, k4"), Not(HasSubstr("k1")), Not(HasSubstr("k3")))));
  ASSERT_OK(store_->Set("k2", "2"));
  ASSERT_OK(store_->Set("k4", "4"));
  EXPECT_OK(store_->Wait({"k1", "k2", "k3", "k4"}, absl::ZeroDuration()));
}

TEST_P(StoreTest, AddCountsFromZeroAndReadsBackAsDecimal) {
  EXPECT_THAT(store_->Add("n", 5), IsOkAndHolds(5));
  EXPECT_THAT(store_->Add("n", -7), IsOkAndHolds(-2));
  EXPECT_THAT(store_->Get("n", absl::ZeroDuration()), IsOkAndHolds("-2"));
}

TEST_P(StoreTest, AddOnAValueThatIsNotACounterFails) {
  ASSERT_OK(store_->Set("text", "hello"));
  EXPECT_THAT(store_->Add("text", 1),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("text")));
}

TEST_P(StoreTest, ConcurrentAddsFromManyThreadsAreAllCounted) {
  constexpr int kThreads = 4;
  constexpr int kAdds = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kAdds; ++i) ASSERT_OK(store_->Add("count", 1).status());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_THAT(store_->Get("count", absl::ZeroDuration()),
              IsOkAndHolds(std::to_string(kThreads * kAdds)));
}

TEST_P(StoreTest, EmptyAndOversizedKeysAndValuesAreRejected) {
  EXPECT_THAT(store_->Set("", "v"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store_->Set(std::string(Store::kMaxKeyBytes + 1, 'k'), "v"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store_->Set("big", std::string(Store::kMaxValueBytes + 1, 'v')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("big")));
  EXPECT_THAT(store_->Get("", absl::ZeroDuration()), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(StoreTest, APrefixStoreSeesOnlyItsOwnKeys) {
  auto a = std::make_shared<PrefixStore>(store_, "a/");
  auto b = std::make_shared<PrefixStore>(store_, "b/");
  ASSERT_OK(a->Set("k", "from a"));
  ASSERT_OK(b->Set("k", "from b"));
  EXPECT_THAT(a->Get("k", absl::ZeroDuration()), IsOkAndHolds("from a"));
  EXPECT_THAT(store_->Get("b/k", absl::ZeroDuration()), IsOkAndHolds("from b"));
  EXPECT_THAT(a->Add("n", 2), IsOkAndHolds(2));
  EXPECT_THAT(b->Wait({"n"}, absl::ZeroDuration()), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_OK(a->Wait({"k", "n"}, absl::ZeroDuration()));
}

INSTANTIATE_TEST_SUITE_P(
    Stores, StoreTest,
    ::testing::Values(StoreKind{"in_process",
                                [](const std::string&) -> std::shared_ptr<Store> {
                                  return std::make_shared<InProcessStore>();
                                }},
                      StoreKind{"file",
                                [](const std::string& dir) -> std::shared_ptr<Store> {
                                  absl::StatusOr<std::unique_ptr<FileStore>> s =
                                      FileStore::Open(dir);
                                  EXPECT_OK(s);
                                  return s.ok() ? std::shared_ptr<Store>(std::move(*s)) : nullptr;
                                }}),
    [](const ::testing::TestParamInfo<StoreKind>& info) { return info.param.name; });

// --- FileStore specifics
// ---------------------------------------------------------------------------

TEST(FileStoreTest, OpeningAnEmptyPathIsRejected) {
  EXPECT_THAT(FileStore::Open(""), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FileStoreTest, AKeyTooLongForAFileNameIsRejected) {
  const std::string dir = TestDir();
  absl::StatusOr<std::unique_ptr<FileStore>> store = FileStore::Open(dir);
  ASSERT_OK(store);
  // Every '/' escapes to three bytes.
  EXPECT_THAT((*store)->Set(std::string(100, '/'), "v"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too long")));
  std::filesystem::remove_all(dir);
}

TEST(FileStoreTest, NoTemporaryFilesAreLeftBehind) {
  const std::string dir = TestDir();
  absl::StatusOr<std::unique_ptr<FileStore>> store = FileStore::Open(dir);
  ASSERT_OK(store);
  for (int i = 0; i < 10; ++i) ASSERT_OK((*store)->Set(absl::StrCat("k", i), "v"));
  ASSERT_OK((*store)->Add("n", 1).status());
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_FALSE(entry.path().filename().string().starts_with("t_")) << entry.path();
  }
  std::filesystem::remove_all(dir);
}

// Runs `child` in `n` forked processes (index 0..n-1) and returns their exit codes. The children
// touch only the file store (no threads exist in this test process when it forks), and each exits
// with _exit so that nothing of gtest runs twice.
std::vector<int> RunForked(int n, const std::function<int(int)>& child) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(child(i));
    pids.push_back(pid);
  }
  std::vector<int> codes;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  return codes;
}

TEST(FileStoreTest, ProcessesMeetThroughTheDirectoryAndCountWithoutLosingAdds) {
  const std::string dir = TestDir();
  constexpr int kProcs = 4;
  constexpr int kAdds = 25;
  const std::vector<int> codes = RunForked(kProcs, [&](int i) {
    absl::StatusOr<std::unique_ptr<FileStore>> store = FileStore::Open(dir);
    if (!store.ok()) return 10;
    for (int k = 0; k < kAdds; ++k) {
      if (!(*store)->Add("counter", 1).ok()) return 11;
    }
    if (!(*store)->Set(absl::StrCat("done/", i), "1").ok()) return 12;
    // Every process waits for every other: a rendezvous across processes.
    std::vector<std::string> keys;
    for (int j = 0; j < kProcs; ++j) keys.push_back(absl::StrCat("done/", j));
    if (!(*store)->Wait(keys, absl::Seconds(20)).ok()) return 13;
    absl::StatusOr<std::string> total = (*store)->Get("counter", absl::ZeroDuration());
    if (!total.ok() || *total != std::to_string(kProcs * kAdds)) return 14;
    return 0;
  });
  EXPECT_THAT(codes, ::testing::Each(0));
  std::filesystem::remove_all(dir);
}

TEST(FileStoreTest, AValueSetByAnotherProcessIsSeenWhole) {
  const std::string dir = TestDir();
  const std::string big(Store::kMaxValueBytes, 'z');
  const std::vector<int> codes = RunForked(2, [&](int i) {
    absl::StatusOr<std::unique_ptr<FileStore>> store = FileStore::Open(dir);
    if (!store.ok()) return 10;
    if (i == 0) return (*store)->Set("big", big).ok() ? 0 : 11;
    absl::StatusOr<std::string> v = (*store)->Get("big", absl::Seconds(20));
    return v.ok() && *v == big ? 0 : 12;
  });
  EXPECT_THAT(codes, ::testing::Each(0));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dsv3::parallel
