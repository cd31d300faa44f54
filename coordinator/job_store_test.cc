// Tests of JobStore: round trips across close and reopen, id allocation, refusal of foreign or
// newer files, atomicity of failed writes, and a writer SIGKILLed mid-stream (fork). Each test
// works in its own temporary state_dir. Failures are injected from outside (SQLite triggers added
// by the test), not through hooks in the store.
#include "coordinator/job_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace dsv3::coordinator {
namespace {

using ::dsv3::testing::IsOkAndHolds;
using ::dsv3::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// True if the messages are equal; otherwise false, with the difference in the failure message.
::testing::AssertionResult ProtoEq(const google::protobuf::Message& expected,
                                   const google::protobuf::Message& actual) {
  std::string diff;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  if (differencer.Compare(expected, actual)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "protos differ:\n" << diff;
}

v1::JobStatus MakeJob(const std::string& name) {
  v1::JobStatus job;
  job.set_name(name);
  job.set_state(v1::PENDING);
  job.set_total_steps(300);
  job.set_last_checkpoint_step(-1);
  job.set_created_unix_ms(1'700'000'000'000);
  job.set_updated_unix_ms(1'700'000'000'000);
  job.set_stage("pre_training");
  job.mutable_spec()->set_name(name);
  job.mutable_spec()->mutable_train()->set_steps(300);
  return job;
}

v1::JobEvent MakeEvent(const std::string& kind, const std::string& message, int64_t epoch = 0) {
  v1::JobEvent event;
  event.set_time_unix_ms(1'700'000'000'000 + epoch);
  event.set_epoch(epoch);
  event.set_kind(kind);
  event.set_message(message);
  return event;
}

std::vector<std::string> Kinds(const std::vector<v1::JobEvent>& events) {
  std::vector<std::string> kinds;
  kinds.reserve(events.size());
  for (const v1::JobEvent& event : events) {
    kinds.push_back(event.kind());
  }
  return kinds;
}

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "job_store_test_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    dir_ = root_;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  std::unique_ptr<JobStore> OpenStore() {
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(dir_);
    EXPECT_OK(store);
    return store.ok() ? std::move(*store) : nullptr;
  }

  std::string DbPath() const { return dir_ + "/state.db"; }

  // Runs SQL on state.db through a separate connection, as an operator (or a fault) would.
  void ExecRaw(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(DbPath().c_str(), &db), SQLITE_OK);
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    EXPECT_EQ(rc, SQLITE_OK) << sql << ": " << (error != nullptr ? error : "");
    sqlite3_free(error);
    sqlite3_close(db);
  }

  // The single integer result of `sql` on state.db.
  int64_t QueryRawInt(const std::string& sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(DbPath().c_str(), &db), SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_ROW) << sql;
    const int64_t value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
  }

  std::string root_;  // the temporary directory, removed after the test
  std::string dir_;   // the state_dir under test: root_ or below it
};

TEST_F(JobStoreTest, OpenCreatesTheStateDirAndItsDatabase) {
  dir_ += "/nested/state";
  ASSERT_NE(OpenStore(), nullptr);
  EXPECT_TRUE(std::filesystem::exists(DbPath()));
}

TEST_F(JobStoreTest, CoordinatorIdIsMadeOnceAndKeptAcrossReopen) {
  std::string id;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    id = store->coordinator_id();
  }
  EXPECT_THAT(id, ::testing::MatchesRegex("[0-9a-f]{16}"));
  auto reopened = OpenStore();
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(reopened->coordinator_id(), id);

  const std::string other_dir = root_ + "/other";
  absl::StatusOr<std::unique_ptr<JobStore>> other = JobStore::Open(other_dir);
  ASSERT_OK(other);
  EXPECT_NE((*other)->coordinator_id(), id);
}

TEST_F(JobStoreTest, CreatedJobsComeBackAfterReopenOldestFirst) {
  v1::JobStatus first = MakeJob("first");
  v1::JobStatus second = MakeJob("second");
  second.set_state(v1::RUNNING);
  second.set_epoch(3);
  second.mutable_accounting()->set_device_hours(1.25);
  second.mutable_placement()->add_ranks()->set_worker_name("w0");
  *second.add_events() = MakeEvent("ignored", "events in the status are not stored");
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    EXPECT_THAT(store->CreateJob(first, MakeEvent("submitted", "first")), IsOkAndHolds("job-1"));
    EXPECT_THAT(store->CreateJob(second, MakeEvent("submitted", "second")), IsOkAndHolds("job-2"));
  }
  first.set_job_id("job-1");
  second.set_job_id("job-2");
  second.clear_events();

  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<v1::JobStatus>> jobs = store->LoadJobs();
  ASSERT_OK(jobs);
  ASSERT_THAT(*jobs, SizeIs(2));
  EXPECT_TRUE(ProtoEq(first, (*jobs)[0]));
  EXPECT_TRUE(ProtoEq(second, (*jobs)[1]));
  absl::StatusOr<std::vector<v1::JobEvent>> events = store->Events("job-2", 10);
  ASSERT_OK(events);
  ASSERT_THAT(*events, SizeIs(1));
  EXPECT_TRUE(ProtoEq(MakeEvent("submitted", "second"), (*events)[0]));
}

TEST_F(JobStoreTest, JobIdsAreNeverReusedAcrossReopen) {
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    EXPECT_THAT(store->CreateJob(MakeJob("a"), MakeEvent("submitted", "")), IsOkAndHolds("job-1"));
    EXPECT_THAT(store->CreateJob(MakeJob("b"), MakeEvent("submitted", "")), IsOkAndHolds("job-2"));
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->CreateJob(MakeJob("c"), MakeEvent("submitted", "")), IsOkAndHolds("job-3"));
}

TEST_F(JobStoreTest, UpdatedStatusAndAppendedEventsComeBackAfterReopen) {
  v1::JobStatus job = MakeJob("j");
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    absl::StatusOr<std::string> id = store->CreateJob(job, MakeEvent("submitted", "s"));
    ASSERT_OK(id);
    job.set_job_id(*id);
    job.set_state(v1::RUNNING);
    job.set_epoch(2);
    job.set_step(40);
    job.set_last_loss(3.5);
    job.mutable_accounting()->set_tokens(655360);
    job.set_updated_unix_ms(1'700'000'100'000);
    ASSERT_OK(
        store->UpdateJob(job, {MakeEvent("placed", "epoch 1", 1), MakeEvent("worker_lost", "w1", 1),
                               MakeEvent("placed", "epoch 2", 2)}));
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<v1::JobStatus>> jobs = store->LoadJobs();
  ASSERT_OK(jobs);
  ASSERT_THAT(*jobs, SizeIs(1));
  EXPECT_TRUE(ProtoEq(job, (*jobs)[0]));
  absl::StatusOr<std::vector<v1::JobEvent>> events = store->Events(job.job_id(), 10);
  ASSERT_OK(events);
  ASSERT_THAT(*events, SizeIs(4));
  EXPECT_TRUE(ProtoEq(MakeEvent("submitted", "s"), (*events)[0]));
  EXPECT_TRUE(ProtoEq(MakeEvent("placed", "epoch 1", 1), (*events)[1]));
  EXPECT_TRUE(ProtoEq(MakeEvent("worker_lost", "w1", 1), (*events)[2]));
  EXPECT_TRUE(ProtoEq(MakeEvent("placed", "epoch 2", 2), (*events)[3]));
}

TEST_F(JobStoreTest, UpdateOfAnUnknownJobIsNotFoundAndWritesNothing) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("known"), MakeEvent("submitted", "")));
  v1::JobStatus unknown = MakeJob("unknown");
  unknown.set_job_id("job-42");
  EXPECT_THAT(store->UpdateJob(unknown, {MakeEvent("placed", "")}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("job-42")));
  EXPECT_EQ(QueryRawInt("SELECT count(*) FROM job_events"), 1);
  EXPECT_EQ(QueryRawInt("SELECT count(*) FROM jobs"), 1);
}

TEST_F(JobStoreTest, AFailedEventWriteRollsBackTheStatusUpdate) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  v1::JobStatus job = MakeJob("j");
  absl::StatusOr<std::string> id = store->CreateJob(job, MakeEvent("submitted", ""));
  ASSERT_OK(id);
  job.set_job_id(*id);
  ExecRaw(
      "CREATE TRIGGER poison BEFORE INSERT ON job_events WHEN NEW.kind = 'poison' "
      "BEGIN SELECT RAISE(ABORT, 'injected event failure'); END");

  v1::JobStatus updated = job;
  updated.set_state(v1::RUNNING);
  updated.set_step(7);
  EXPECT_THAT(store->UpdateJob(updated, {MakeEvent("placed", ""), MakeEvent("poison", "")}),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("injected event failure")));

  absl::StatusOr<std::vector<v1::JobStatus>> jobs = store->LoadJobs();
  ASSERT_OK(jobs);
  ASSERT_THAT(*jobs, SizeIs(1));
  EXPECT_TRUE(ProtoEq(job, (*jobs)[0]));
  absl::StatusOr<std::vector<v1::JobEvent>> events = store->Events(*id, 10);
  ASSERT_OK(events);
  EXPECT_THAT(Kinds(*events), ElementsAre("submitted"));
  // The connection is not left inside the failed transaction.
  EXPECT_OK(store->UpdateJob(updated, {MakeEvent("placed", "")}));
}

TEST_F(JobStoreTest, AFailedCreateJobWritesNothingAndUsesNoId) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ExecRaw(
      "CREATE TRIGGER poison BEFORE INSERT ON job_events WHEN NEW.kind = 'poison' "
      "BEGIN SELECT RAISE(ABORT, 'injected event failure'); END");
  EXPECT_THAT(store->CreateJob(MakeJob("j"), MakeEvent("poison", "")),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("injected event failure")));
  EXPECT_THAT(store->LoadJobs(), IsOkAndHolds(IsEmpty()));
  EXPECT_EQ(QueryRawInt("SELECT count(*) FROM job_events"), 0);
  EXPECT_THAT(store->CreateJob(MakeJob("j"), MakeEvent("submitted", "")), IsOkAndHolds("job-1"));
}

TEST_F(JobStoreTest, EventsReturnsTheMostRecentOnesOldestFirst) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  v1::JobStatus job = MakeJob("j");
  absl::StatusOr<std::string> id = store->CreateJob(job, MakeEvent("e0", ""));
  ASSERT_OK(id);
  job.set_job_id(*id);
  // An interleaved second job's events must not show up in the first one's history.
  absl::StatusOr<std::string> other = store->CreateJob(MakeJob("other"), MakeEvent("x", ""));
  ASSERT_OK(other);
  v1::JobStatus other_job = MakeJob("other");
  other_job.set_job_id(*other);
  ASSERT_OK(store->UpdateJob(job, {MakeEvent("e1", ""), MakeEvent("e2", "")}));
  ASSERT_OK(store->UpdateJob(other_job, {MakeEvent("x", "")}));
  ASSERT_OK(store->UpdateJob(job, {MakeEvent("e3", ""), MakeEvent("e4", "")}));

  absl::StatusOr<std::vector<v1::JobEvent>> last_three = store->Events(*id, 3);
  ASSERT_OK(last_three);
  EXPECT_THAT(Kinds(*last_three), ElementsAre("e2", "e3", "e4"));
  absl::StatusOr<std::vector<v1::JobEvent>> all = store->Events(*id, 100);
  ASSERT_OK(all);
  EXPECT_THAT(Kinds(*all), ElementsAre("e0", "e1", "e2", "e3", "e4"));
  EXPECT_THAT(store->Events(*id, 0), IsOkAndHolds(IsEmpty()));
}

TEST_F(JobStoreTest, EventsOfAnUnknownJobAreNotFound) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->Events("job-9", 10),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("job-9")));
}

TEST_F(JobStoreTest, ANegativeEventLimitIsInvalid) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("j"), MakeEvent("submitted", "")));
  EXPECT_THAT(store->Events("job-1", -1), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(JobStoreTest, WorkersComeBackAfterReopenInTheOrderFirstPut) {
  v1::WorkerInfo w0;
  w0.set_worker_id("id-0");
  w0.set_name("w0");
  w0.set_node("n0");
  w0.set_device("cpu");
  w0.set_state("busy");
  w0.set_job_id("job-1");
  w0.set_rank(0);
  w0.set_last_heartbeat_unix_ms(1'700'000'000'500);
  v1::WorkerInfo w1 = w0;
  w1.set_worker_id("id-1");
  w1.set_name("w1");
  w1.set_rank(1);
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_OK(store->PutWorker(w0));
    ASSERT_OK(store->PutWorker(w1));
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::vector<v1::WorkerInfo>> workers = store->LoadWorkers();
  ASSERT_OK(workers);
  ASSERT_THAT(*workers, SizeIs(2));
  EXPECT_TRUE(ProtoEq(w0, (*workers)[0]));
  EXPECT_TRUE(ProtoEq(w1, (*workers)[1]));
}

TEST_F(JobStoreTest, PutWorkerReplacesTheWorkerOfTheSameName) {
  v1::WorkerInfo w0;
  w0.set_worker_id("id-0");
  w0.set_name("w0");
  w0.set_state("idle");
  v1::WorkerInfo w1 = w0;
  w1.set_worker_id("id-1");
  w1.set_name("w1");
  v1::WorkerInfo w0_again = w0;
  w0_again.set_worker_id("id-2");
  w0_again.set_state("dead");

  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->PutWorker(w0));
  ASSERT_OK(store->PutWorker(w1));
  ASSERT_OK(store->PutWorker(w0_again));
  absl::StatusOr<std::vector<v1::WorkerInfo>> workers = store->LoadWorkers();
  ASSERT_OK(workers);
  ASSERT_THAT(*workers, SizeIs(2));
  EXPECT_TRUE(ProtoEq(w0_again, (*workers)[0]));
  EXPECT_TRUE(ProtoEq(w1, (*workers)[1]));
}

TEST_F(JobStoreTest, AWorkerWithoutANameIsInvalid) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->PutWorker(v1::WorkerInfo()), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(JobStoreTest, ANewerSchemaVersionIsRefused) {
  ASSERT_NE(OpenStore(), nullptr);
  ExecRaw("UPDATE meta SET value = 2 WHERE key = 'schema_version'");
  EXPECT_THAT(JobStore::Open(dir_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("state.db has schema version 2, this coordinator understands "
                                 "up to 1")));
}

TEST_F(JobStoreTest, AGarbageStateDbIsRefusedWithAMessageNamingIt) {
  std::filesystem::create_directories(dir_);
  {
    std::ofstream garbage(DbPath(), std::ios::binary);
    for (int i = 0; i < 512; ++i) {
      garbage << "this is not an SQLite database ";
    }
  }
  EXPECT_THAT(JobStore::Open(dir_),
              StatusIs(absl::StatusCode::kDataLoss,
                       ::testing::AllOf(HasSubstr(DbPath()),
                                        HasSubstr("is not a readable SQLite database"))));
}

TEST_F(JobStoreTest, AnotherProgramsSqliteDatabaseIsRefused) {
  std::filesystem::create_directories(dir_);
  ExecRaw("CREATE TABLE photos (id INTEGER PRIMARY KEY, data BLOB)");
  EXPECT_THAT(JobStore::Open(dir_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr(DbPath()), HasSubstr("no meta table"))));
}

TEST_F(JobStoreTest, ConcurrentCreatesFromManyThreadsGetDistinctIds) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  constexpr int kThreads = 4;
  constexpr int kJobsPerThread = 8;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&store, &ids, t] {
      for (int i = 0; i < kJobsPerThread; ++i) {
        absl::StatusOr<std::string> id =
            store->CreateJob(MakeJob(absl::StrCat("t", t, "-", i)), MakeEvent("submitted", ""));
        ids[t].push_back(id.ok() ? *id : id.status().ToString());
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }

  std::vector<std::string> all;
  for (const auto& some : ids) {
    all.insert(all.end(), some.begin(), some.end());
  }
  std::vector<std::string> expected;
  for (int n = 1; n <= kThreads * kJobsPerThread; ++n) {
    expected.push_back(absl::StrCat("job-", n));
  }
  EXPECT_THAT(all, ::testing::UnorderedElementsAreArray(expected));
  EXPECT_THAT(store->LoadJobs(), IsOkAndHolds(SizeIs(kThreads * kJobsPerThread)));
}

// The child side of the crash test: opens the store and updates `job_id` as fast as it can, each
// time setting step = n and appending the event "step n", until it is killed. Never returns; exits
// with 2 if a write fails (the parent then sees an exit instead of SIGKILL).
[[noreturn]] void WriteStepsUntilKilled(const std::string& dir, const std::string& job_id) {
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(dir);
  if (!store.ok()) {
    _exit(2);
  }
  absl::StatusOr<std::vector<v1::JobStatus>> jobs = (*store)->LoadJobs();
  if (!jobs.ok() || jobs->size() != 1 || (*jobs)[0].job_id() != job_id) {
    _exit(2);
  }
  v1::JobStatus job = (*jobs)[0];
  for (int64_t n = job.step() + 1;; ++n) {
    job.set_step(n);
    if (!(*store)->UpdateJob(job, {MakeEvent("step", absl::StrCat("step ", n))}).ok()) {
      _exit(2);
    }
  }
}

TEST_F(JobStoreTest, AWriterKilledAtARandomMomentLeavesStatusAndEventsInAgreement) {
  const char* seed_env = std::getenv("DSV3_TEST_SEED");
  const unsigned seed =
      seed_env != nullptr ? std::strtoul(seed_env, nullptr, 10) : std::random_device()();
  std::printf("seed %u (rerun with DSV3_TEST_SEED=%u)\n", seed, seed);
  RecordProperty("seed", static_cast<int>(seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> kill_after_ms(20, 200);

  std::string job_id;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    absl::StatusOr<std::string> id =
        store->CreateJob(MakeJob("crashy"), MakeEvent("submitted", ""));
    ASSERT_OK(id);
    job_id = *id;
  }  // closed: the child must not inherit an open connection

  int64_t previous_step = 0;
  constexpr int kRounds = 5;
  for (int round = 0; round < kRounds; ++round) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      WriteStepsUntilKilled(dir_, job_id);
    }
    const int delay_ms = kill_after_ms(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ASSERT_EQ(kill(child, SIGKILL), 0);
    int wait_status = 0;
    ASSERT_EQ(waitpid(child, &wait_status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL)
        << "the writer stopped by itself (exit code "
        << (WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1) << ") in round " << round;

    auto store = OpenStore();
    ASSERT_NE(store, nullptr) << "round " << round;
    absl::StatusOr<std::vector<v1::JobStatus>> jobs = store->LoadJobs();
    ASSERT_OK(jobs);
    ASSERT_THAT(*jobs, SizeIs(1));
    const int64_t step = (*jobs)[0].step();
    absl::StatusOr<std::vector<v1::JobEvent>> events = store->Events(job_id, 1'000'000);
    ASSERT_OK(events);
    // One "submitted" event, then exactly one "step n" per committed status with step n.
    ASSERT_THAT(*events, SizeIs(step + 1))
        << "round " << round << ", killed after " << delay_ms << " ms";
    EXPECT_EQ(events->back().message(), step == 0 ? "" : absl::StrCat("step ", step))
        << "round " << round << ", killed after " << delay_ms << " ms";
    EXPECT_GE(step, previous_step) << "committed steps were lost in round " << round;
    std::printf("round %d: killed after %d ms at step %lld\n", round, delay_ms,
                static_cast<long long>(step));
    previous_step = step;
    store.reset();
    EXPECT_EQ(QueryRawInt("SELECT count(*) FROM pragma_integrity_check WHERE integrity_check "
                          "<> 'ok'"),
              0);
  }
  EXPECT_GT(previous_step, 0) << "no write was ever committed, so nothing was tested";
}

}  // namespace
}  // namespace dsv3::coordinator
