// Tests of the Gloo backend with its ranks as separate processes (this binary re-executes itself
// with DSV3_GLOO_TEST_ROLE set), bootstrapped through a FileStore and talking TCP on 127.0.0.1:
// every operation across processes, and a rank process that exits mid-run. Also the conversion of
// Gloo's exceptions to absl::Status. Rank processes are bounded in time and killed if they overrun.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "common/status_matchers.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/gloo_status.h"
#include "engine/parallel/store_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kRoleEnv[] = "DSV3_GLOO_TEST_ROLE";
constexpr absl::Duration kRankTimeout = absl::Seconds(10);

// ---- The rank side (runs in the child processes) ------------------------------------------------

struct RankEnv {
  std::string role;
  int rank = 0;
  int world = 1;
  int die_rank = -1;
  std::string dir;
};

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int out = fallback;
  return v != nullptr && absl::SimpleAtoi(v, &out) ? out : fallback;
}

// Writes this rank's outcome to the store as "<code>|<milliseconds>|<message>".
void Report(Store& store, int rank, const absl::Status& status, absl::Duration took) {
  (void)store.Set(absl::StrCat("result/", rank),
                  absl::StrCat(static_cast<int>(status.code()), "|",
                               absl::ToInt64Milliseconds(took), "|", status.message()));
}

template <typename T>
absl::Status ExpectEqual(const std::vector<T>& got, const std::vector<T>& want,
                         absl::string_view what) {
  if (got.size() != want.size()) {
    return absl::InternalError(
        absl::StrCat(what, ": ", got.size(), " elements, want ", want.size()));
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return absl::InternalError(absl::StrCat(what, "[", i, "] = ", got[i], ", want ", want[i]));
    }
  }
  return absl::OkStatus();
}

// Every operation once, checked against closed forms (as in communicator_test.cc).
absl::Status RunCollectives(Communicator& c) {
  const int n = c.size(), r = c.rank();
  {
    std::vector<double> x(1000);
    for (size_t j = 0; j < x.size(); ++j) x[j] = r + j;
    RETURN_IF_ERROR(
        c.AllReduce(x.data(), x.data(), x.size(), DataType::kFloat64)->Wait(kRankTimeout));
    std::vector<double> want(x.size());
    for (size_t j = 0; j < x.size(); ++j) want[j] = n * (n - 1) / 2 + n * static_cast<double>(j);
    RETURN_IF_ERROR(ExpectEqual(x, want, "all_reduce"));
  }
  {
    std::vector<float> send(3 * n), recv(3);
    for (int b = 0; b < n; ++b) {
      for (int j = 0; j < 3; ++j) send[3 * b + j] = 100 * r + 10 * b + j;
    }
    RETURN_IF_ERROR(
        c.ReduceScatter(send.data(), recv.data(), 3, DataType::kFloat32)->Wait(kRankTimeout));
    std::vector<float> want(3);
    for (int j = 0; j < 3; ++j) want[j] = 100 * n * (n - 1) / 2 + n * (10 * r + j);
    RETURN_IF_ERROR(ExpectEqual(recv, want, "reduce_scatter"));
  }
  {
    const int64_t mine = r;
    std::vector<int64_t> all(n);
    RETURN_IF_ERROR(c.AllGather(&mine, all.data(), 1, DataType::kInt64)->Wait(kRankTimeout));
    std::vector<int64_t> want(n);
    std::iota(want.begin(), want.end(), 0);
    RETURN_IF_ERROR(ExpectEqual(all, want, "all_gather"));
  }
  {
    std::vector<size_t> counts(n);
    std::vector<int32_t> send, want;
    for (int j = 0; j < n; ++j) {
      counts[j] = r + j;
      for (int k = 0; k < r + j; ++k) send.push_back(1000 * r + j);
      for (int k = 0; k < j + r; ++k) want.push_back(1000 * j + r);
    }
    std::vector<int32_t> recv(want.size());
    RETURN_IF_ERROR(
        c.AllToAll(send.data(), counts, recv.data(), counts, DataType::kInt32)->Wait(kRankTimeout));
    RETURN_IF_ERROR(ExpectEqual(recv, want, "all_to_all"));
  }
  if (n > 1) {
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    std::vector<float> out(4, static_cast<float>(r)), in(4, -1);
    RETURN_IF_ERROR(c.SendRecv({{next, out.data(), 4, DataType::kFloat32}},
                               {{prev, in.data(), 4, DataType::kFloat32}})
                        ->Wait(kRankTimeout));
    RETURN_IF_ERROR(ExpectEqual(in, std::vector<float>(4, static_cast<float>(prev)), "send_recv"));
  }
  return c.Barrier()->Wait(kRankTimeout);
}

int RankMain() {
  RankEnv env;
  env.role = std::getenv(kRoleEnv);
  env.rank = EnvInt("DSV3_RANK", 0);
  env.world = EnvInt("DSV3_WORLD", 1);
  env.die_rank = EnvInt("DSV3_DIE_RANK", -1);
  env.dir = std::getenv("DSV3_STORE_DIR") != nullptr ? std::getenv("DSV3_STORE_DIR") : "";
  absl::StatusOr<std::unique_ptr<FileStore>> opened = FileStore::Open(env.dir);
  if (!opened.ok()) return 2;
  std::shared_ptr<Store> store = std::move(*opened);

  CommunicatorOptions options;
  options.backend = Backend::kGloo;
  options.rank = env.rank;
  options.world_size = env.world;
  options.store = store;
  options.timeout = kRankTimeout;
  absl::StatusOr<std::unique_ptr<Communicator>> comm = CreateCommunicator(options);
  if (!comm.ok()) {
    Report(*store, env.rank, comm.status(), absl::ZeroDuration());
    return 1;
  }
  Communicator& c = **comm;

  if (env.role == "collectives") {
    absl::Status s = RunCollectives(c);
    Report(*store, env.rank, s, absl::ZeroDuration());
    return s.ok() ? 0 : 1;
  }

  // The "die" roles: one warm-up all-reduce, then rank die_rank exits without a word.
  std::vector<float> x(env.role == "die_in_data" ? (8 << 20) : 16, 1.0f);  // 32 MiB or 64 B
  absl::Status warm = c.AllReduce(x.data(), x.data(), 16, DataType::kFloat32)->Wait(kRankTimeout);
  if (!warm.ok()) {
    Report(*store, env.rank, warm, absl::ZeroDuration());
    return 1;
  }
  if (env.rank == env.die_rank) {
    if (env.role == "die_before_op") ::_exit(7);
    // die_in_data: exit while the big all-reduce is moving data.
    std::thread killer([] {
      absl::SleepFor(absl::Milliseconds(20));
      ::_exit(7);
    });
    killer.detach();
  }
  const absl::Time start = absl::Now();
  absl::Status s = c.AllReduce(x.data(), x.data(), x.size(), DataType::kFloat32)
                       ->Wait(kRankTimeout + absl::Seconds(5));
  Report(*store, env.rank, s, absl::Now() - start);
  if (env.rank == env.die_rank) ::_exit(8);  // finished before the killer fired
  return 0;
}

// True when the post-mortem in `message` lists `rank` among the ranks that did not report
// ("post-mortem: rank 1 did not report ..." or "post-mortem: ranks 1, 2 did not report ...").
bool NamedSilent(const std::string& message, int rank) {
  const size_t at = message.find("post-mortem: rank");
  const size_t end = message.find(" did not report", at);
  if (at == std::string::npos || end == std::string::npos) return false;
  std::string list = message.substr(at + 17, end - at - 17);
  if (!list.empty() && list[0] == 's') list.erase(0, 1);
  for (absl::string_view item : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    int r = -1;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(item), &r) && r == rank) return true;
  }
  return false;
}

// ---- The test side ------------------------------------------------------------------------------

struct RankResult {
  int exit_code = -1;
  absl::StatusCode code = absl::StatusCode::kUnknown;
  absl::Duration took;
  std::string message;
};

class MultiProcessGlooTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/gloo_mp_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    absl::StatusOr<std::unique_ptr<FileStore>> store = FileStore::Open(dir_);
    ASSERT_OK(store);
    store_ = std::move(*store);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Starts `world` rank processes of this binary in `role`, waits for them (killing any that run
  // longer than `bound`), and returns what each reported.
  std::vector<RankResult> Run(const std::string& role, int world, int die_rank,
                              absl::Duration bound) {
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::setenv(kRoleEnv, role.c_str(), 1);
        ::setenv("DSV3_RANK", std::to_string(r).c_str(), 1);
        ::setenv("DSV3_WORLD", std::to_string(world).c_str(), 1);
        ::setenv("DSV3_DIE_RANK", std::to_string(die_rank).c_str(), 1);
        ::setenv("DSV3_STORE_DIR", dir_.c_str(), 1);
        char* const argv[] = {const_cast<char*>("/proc/self/exe"), nullptr};
        ::execv("/proc/self/exe", argv);
        ::_exit(127);
      }
      pids.push_back(pid);
    }
    std::vector<RankResult> results(world);
    const absl::Time deadline = absl::Now() + bound;
    for (int r = 0; r < world; ++r) {
      int status = 0;
      while (::waitpid(pids[r], &status, WNOHANG) == 0) {
        if (absl::Now() > deadline) {
          ADD_FAILURE() << "rank " << r << " ran past " << bound << "; killing it";
          ::kill(pids[r], SIGKILL);
          ::waitpid(pids[r], &status, 0);
          break;
        }
        absl::SleepFor(absl::Milliseconds(10));
      }
      results[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      absl::StatusOr<std::string> report =
          store_->Get(absl::StrCat("result/", r), absl::ZeroDuration());
      if (!report.ok()) continue;
      std::vector<std::string> parts = absl::StrSplit(*report, absl::MaxSplits('|', 2));
      int code = 0;
      int64_t ms = 0;
      if (parts.size() == 3 && absl::SimpleAtoi(parts[0], &code) &&
          absl::SimpleAtoi(parts[1], &ms)) {
        results[r].code = static_cast<absl::StatusCode>(code);
        results[r].took = absl::Milliseconds(ms);
        results[r].message = parts[2];
      }
    }
    return results;
  }

  std::string dir_;
  std::unique_ptr<FileStore> store_;
};

TEST_F(MultiProcessGlooTest, EveryOperationWorksAcrossFourProcesses) {
  const std::vector<RankResult> results = Run("collectives", 4, -1, absl::Seconds(40));
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(results[r].exit_code, 0) << "rank " << r << ": " << results[r].message;
    EXPECT_EQ(results[r].code, absl::StatusCode::kOk) << "rank " << r << ": " << results[r].message;
  }
}

TEST_F(MultiProcessGlooTest, ARankProcessThatExitsBeforeAnOpMakesTheOthersFailNamingIt) {
  const std::vector<RankResult> results = Run("die_before_op", 3, 1, absl::Seconds(40));
  EXPECT_EQ(results[1].exit_code, 7);
  for (int r : {0, 2}) {
    EXPECT_EQ(results[r].code, absl::StatusCode::kUnavailable)
        << "rank " << r << " exited with " << results[r].exit_code << ": " << results[r].message;
    EXPECT_THAT(results[r].message, HasSubstr("all_reduce #1"));
    EXPECT_TRUE(NamedSilent(results[r].message, 1)) << results[r].message;
    EXPECT_LT(results[r].took, kRankTimeout / 2) << results[r].message;
  }
}

TEST_F(MultiProcessGlooTest, ARankProcessThatExitsMidCollectiveMakesTheOthersFailNamingIt) {
  const std::vector<RankResult> results = Run("die_in_data", 3, 1, absl::Seconds(40));
  if (results[1].exit_code == 8) GTEST_SKIP() << "the all-reduce finished before the rank died";
  EXPECT_EQ(results[1].exit_code, 7);
  for (int r : {0, 2}) {
    EXPECT_THAT(results[r].code, ::testing::AnyOf(absl::StatusCode::kUnavailable,
                                                  absl::StatusCode::kDeadlineExceeded))
        << "rank " << r << " exited with " << results[r].exit_code << ": " << results[r].message;
    EXPECT_THAT(results[r].message, HasSubstr("all_reduce #1"));
    EXPECT_TRUE(NamedSilent(results[r].message, 1)) << results[r].message;
    EXPECT_LT(results[r].took, kRankTimeout + absl::Seconds(2)) << results[r].message;
  }
}

// ---- Gloo exceptions to Status ----------------------------------------------------------------

absl::Status Throwing(const std::function<void()>& fn) {
  DSV3_GLOO_CALL(fn());
  return absl::OkStatus();
}

TEST(GlooStatusTest, ATimeoutBecomesDeadlineExceededWithGloosMessageAndOurFileAndLine) {
  absl::Status s = Throwing([] { throw ::gloo::IoException("Timed out waiting 5ms for recv"); });
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDeadlineExceeded,
                          AllOf(HasSubstr("gloo: Timed out waiting 5ms"),
                                HasSubstr("gloo_communicator_test.cc:"))));
}

TEST(GlooStatusTest, AClosedConnectionBecomesUnavailable) {
  EXPECT_THAT(Throwing([] { throw ::gloo::IoException("Connection closed by peer [::1]:5"); }),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("Connection closed by peer")));
}

TEST(GlooStatusTest, OtherExceptionsBecomeInternal) {
  EXPECT_THAT(Throwing([] { throw std::runtime_error("enforce failed"); }),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("enforce failed")));
}

TEST(GlooStatusTest, AStatusCarriedThroughGlooComesBackUnchanged) {
  const absl::Status original = absl::DeadlineExceededError("store keys still missing: x");
  EXPECT_EQ(Throwing([&] { throw GlooStatusException(original); }), original);
}

}  // namespace
}  // namespace dsv3::parallel

int main(int argc, char** argv) {
  if (std::getenv(dsv3::parallel::kRoleEnv) != nullptr) return dsv3::parallel::RankMain();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
