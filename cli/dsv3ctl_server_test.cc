// In-process tests of dsv3ctl: a grpc::Server on 127.0.0.1:0 with a small fake JobService, and
// RunCtl called with argv as a user would type it. Checks the contracts of DESIGN.md: submit prints
// the id alone, --json is proto3 JSON with the .proto names, the exit codes, the auth metadata, and
// watch's ending and retrying. Not a test of the real coordinator (tests/ does that).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "cli/ctl.h"
#include "dsv3/v1/job_service.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dsv3::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr char kBadSpecMessage[] =
    "parallel.expert_parallel=3 does not divide model.n_routed_experts=16";

dsv3::v1::JobStatus RunningJob(const std::string& id, int64_t step, dsv3::v1::JobState state) {
  dsv3::v1::JobStatus job;
  job.set_job_id(id);
  job.set_name("brown-tiny");
  job.set_stage("pre_training");
  job.set_state(state);
  job.set_epoch(2);
  job.set_step(step);
  job.set_total_steps(300);
  job.set_last_loss(3.25);
  job.set_last_checkpoint_step(100);
  job.set_message("training on 2 workers");
  auto* acc = job.mutable_accounting();
  acc->set_device_hours(0.5);
  acc->set_productive_device_hours(0.5);
  acc->set_tokens(step * 16384);
  acc->set_tokens_per_second(1234);
  acc->set_cost_usd(1.0);
  acc->set_device_kind("cpu");
  auto* placement = job.mutable_placement();
  placement->set_epoch(2);
  placement->set_world_size(2);
  placement->set_pipeline_parallel(2);
  placement->set_expert_parallel(1);
  placement->set_data_parallel(1);
  for (int r = 0; r < 2; ++r) {
    auto* rank = placement->add_ranks();
    rank->set_rank(r);
    rank->set_worker_id("w" + std::to_string(r));
    rank->set_worker_name("worker-" + std::to_string(r));
    rank->set_node("node-a");
    rank->set_pipeline_stage(r);
    rank->set_expert_begin(0);
    rank->set_expert_end(16);
    rank->set_state(r == 0 ? dsv3::v1::TRAINING : dsv3::v1::WAITING_FOR_ENGINE);
    if (r == 1) rank->set_detail("this worker was built without the training engine");
  }
  auto* event = job.add_events();
  event->set_time_unix_ms(1'700'000'000'000);
  event->set_epoch(2);
  event->set_kind("placed");
  event->set_message("epoch 2 on 2 workers");
  return job;
}

// A JobService with canned answers that records what it was sent.
class FakeJobService final : public dsv3::v1::JobService::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext* context, const dsv3::v1::SubmitJobRequest* request,
                         dsv3::v1::SubmitJobResponse* response) override {
    Record(context);
    absl::MutexLock lock(&mu_);
    last_submit_ = *request;
    if (request->spec_json().find("\"bad\"") != std::string::npos) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, kBadSpecMessage);
    }
    response->set_job_id("j-0001");
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext* context, const dsv3::v1::GetJobRequest* request,
                      dsv3::v1::JobStatus* response) override {
    Record(context);
    if (request->job_id() != "j-0001" && request->job_id() != "j-0002") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + request->job_id());
    }
    *response = RunningJob(request->job_id(), 120, dsv3::v1::RUNNING);
    if (request->job_id() == "j-0002") response->set_stage("context_extension");
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext* context, const dsv3::v1::ListJobsRequest*,
                        dsv3::v1::ListJobsResponse* response) override {
    Record(context);
    *response->add_jobs() = RunningJob("j-0002", 10, dsv3::v1::PENDING);
    *response->add_jobs() = RunningJob("j-0001", 120, dsv3::v1::RUNNING);
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext* context, const dsv3::v1::WatchJobRequest* request,
                        grpc::ServerWriter<dsv3::v1::JobStatus>* writer) override {
    Record(context);
    const std::string& id = request->job_id();
    if (id == "j-0001") {
      writer->Write(RunningJob(id, 100, dsv3::v1::RUNNING));
      dsv3::v1::JobStatus update = RunningJob(id, 200, dsv3::v1::RUNNING);
      writer->Write(update);
      update.mutable_accounting()->set_device_hours(0.75);  // only the figures grew: no new line
      writer->Write(update);
      writer->Write(RunningJob(id, 300, dsv3::v1::SUCCEEDED));
      writer->Write(RunningJob(id, 300, dsv3::v1::SUCCEEDED));  // never read: watch stops before
      return grpc::Status::OK;
    }
    if (id == "j-fail") {
      writer->Write(RunningJob(id, 100, dsv3::v1::RUNNING));
      dsv3::v1::JobStatus failed = RunningJob(id, 100, dsv3::v1::FAILED);
      failed.set_message("fewer than min_workers for 10m");
      writer->Write(failed);
      return grpc::Status::OK;
    }
    if (id == "j-hang") {  // one update, then nothing until the server goes away
      writer->Write(RunningJob(id, 100, dsv3::v1::RUNNING));
      if (!first_update_sent_.HasBeenNotified()) first_update_sent_.Notify();
      while (!context->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
      return grpc::Status::CANCELLED;
    }
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + id);
  }

  grpc::Status CancelJob(grpc::ServerContext* context, const dsv3::v1::CancelJobRequest* request,
                         dsv3::v1::JobStatus* response) override {
    Record(context);
    if (request->job_id() == "j-done") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "job j-done already SUCCEEDED");
    }
    *response = RunningJob(request->job_id(), 120, dsv3::v1::CANCELLED);
    return grpc::Status::OK;
  }

  grpc::Status EstimateCost(grpc::ServerContext* context,
                            const dsv3::v1::EstimateCostRequest* request,
                            dsv3::v1::EstimateCostResponse* response) override {
    Record(context);
    absl::MutexLock lock(&mu_);
    last_estimate_ = *request;
    response->set_flops_per_token_main(2.5e11);
    response->set_flops_per_token_mtp(1.04e10);
    response->set_flops_per_token_total(2.604e11);
    response->set_total_params(671e9);
    response->set_activated_params(37e9);
    response->set_table("            Pre-training  Total\nFAKE TABLE\n");
    response->set_seq_len(4096);
    return grpc::Status::OK;
  }

  grpc::Status ListWorkers(grpc::ServerContext* context, const dsv3::v1::ListWorkersRequest*,
                           dsv3::v1::ListWorkersResponse* response) override {
    Record(context);
    auto* w = response->add_workers();
    w->set_worker_id("w0");
    w->set_name("worker-0");
    w->set_node("node-a");
    w->set_device("cpu");
    w->set_state("busy");
    w->set_job_id("j-0001");
    w->set_rank(0);
    auto* idle = response->add_workers();
    idle->set_worker_id("w1");
    idle->set_name("worker-1");
    idle->set_state("idle");
    idle->set_rank(-1);
    return grpc::Status::OK;
  }

  std::string last_authorization() {
    absl::MutexLock lock(&mu_);
    return last_authorization_;
  }
  dsv3::v1::SubmitJobRequest last_submit() {
    absl::MutexLock lock(&mu_);
    return last_submit_;
  }
  dsv3::v1::EstimateCostRequest last_estimate() {
    absl::MutexLock lock(&mu_);
    return last_estimate_;
  }
  absl::Notification& first_update_sent() { return first_update_sent_; }

 private:
  void Record(grpc::ServerContext* context) {
    const auto& metadata = context->client_metadata();
    const auto it = metadata.find("authorization");
    absl::MutexLock lock(&mu_);
    last_authorization_ =
        it == metadata.end() ? "<none>" : std::string(it->second.data(), it->second.size());
  }

  absl::Mutex mu_;
  std::string last_authorization_ ABSL_GUARDED_BY(mu_);
  dsv3::v1::SubmitJobRequest last_submit_ ABSL_GUARDED_BY(mu_);
  dsv3::v1::EstimateCostRequest last_estimate_ ABSL_GUARDED_BY(mu_);
  absl::Notification first_update_sent_;
};

struct CtlResult {
  int code = -1;
  std::string out;
  std::string err;
};

class CtlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    dir_ = std::filesystem::temp_directory_path() /
           ("dsv3ctl_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    std::filesystem::remove_all(dir_);
  }

  std::string Coordinator() const { return "--coordinator=127.0.0.1:" + std::to_string(port_); }

  // Writes `contents` to a file in the test's directory and returns its path.
  std::string WriteFile(const std::string& name, const std::string& contents) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << contents;
    return path;
  }

  // Runs dsv3ctl with `args`, the coordinator flag appended.
  CtlResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), "dsv3ctl");
    args.push_back(Coordinator());
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    std::ostringstream out, err;
    CtlResult result;
    result.code = RunCtl(static_cast<int>(argv.size()), argv.data(), out, err);
    result.out = out.str();
    result.err = err.str();
    return result;
  }

  FakeJobService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::filesystem::path dir_;
};

TEST_F(CtlServerTest, SubmitPrintsTheJobIdAlone) {
  const std::string spec = R"({"name": "brown-tiny"})";
  const CtlResult r = Ctl({"submit", WriteFile("job.json", spec)});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "j-0001\n");
  EXPECT_THAT(r.err, IsEmpty());
  EXPECT_EQ(service_.last_submit().spec_json(), spec);
  EXPECT_EQ(service_.last_submit().base_dir(), std::filesystem::current_path().string());
}

TEST_F(CtlServerTest, SubmitOfASpecTheServerRejectsExitsTwoWithItsMessage) {
  const CtlResult r = Ctl({"submit", WriteFile("job.json", R"({"name": "bad"})")});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_EQ(r.err, std::string("dsv3ctl: submit: ") + kBadSpecMessage + "\n");
}

TEST_F(CtlServerTest, SubmitOfAMissingFileExitsTwoWithoutCallingTheServer) {
  const CtlResult r = Ctl({"submit", (dir_ / "missing.json").string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("dsv3ctl: submit: cannot read"));
  EXPECT_EQ(service_.last_authorization(), "");  // no call was made
}

TEST_F(CtlServerTest, StatusJsonIsValidJsonWithTheOriginalFieldNames) {
  const CtlResult r = Ctl({"status", "j-0001", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  for (const char* key : {"job_id", "name", "state", "epoch", "step", "total_steps", "last_loss",
                          "last_checkpoint_step", "workers", "accounting"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  for (const char* key :
       {"device_hours", "productive_device_hours", "lost_device_hours", "tokens",
        "tokens_per_second", "mfu", "cost_usd", "device_hours_per_trillion_tokens"}) {
    EXPECT_TRUE(j["accounting"].contains(key)) << key;  // zeros are printed too
  }
  EXPECT_FALSE(j.contains("jobId"));
  EXPECT_EQ(j["job_id"], "j-0001");
  EXPECT_EQ(j["state"], "RUNNING");
  EXPECT_EQ(j["total_steps"], "300");  // proto3 JSON writes int64 as a string
}

TEST_F(CtlServerTest, StatusShowsProgressPlacementRankDetailAndEvents) {
  const CtlResult r = Ctl({"status", "j-0001"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("RUNNING: training on 2 workers"));
  EXPECT_THAT(r.out, HasSubstr("120/300 steps  40.0%"));
  EXPECT_THAT(r.out, HasSubstr("step 100 (last committed)"));
  EXPECT_THAT(r.out, HasSubstr("WAITING_FOR_ENGINE"));
  EXPECT_THAT(r.out, HasSubstr("this worker was built without the training engine"));
  EXPECT_THAT(r.out, HasSubstr("0-15"));
  EXPECT_THAT(r.out, HasSubstr("epoch 2 on 2 workers"));
}

TEST_F(CtlServerTest, StatusOfAnUnknownJobExitsOne) {
  const CtlResult r = Ctl({"status", "j-nope"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dsv3ctl: status: no job j-nope\n");
}

TEST_F(CtlServerTest, TheAuthTokenIsSentAsBearerMetadata) {
  const std::string token_file = WriteFile("token", "  s3cret-token \n");
  const CtlResult r = Ctl({"--auth_token_file=" + token_file, "jobs"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(service_.last_authorization(), "Bearer s3cret-token");
}

TEST_F(CtlServerTest, NoAuthMetadataIsSentWithoutATokenFile) {
  ASSERT_EQ(Ctl({"jobs"}).code, 0);
  EXPECT_EQ(service_.last_authorization(), "<none>");
}

TEST_F(CtlServerTest, AnEmptyTokenFileIsBadInput) {
  const CtlResult r = Ctl({"jobs", "--auth_token_file=" + WriteFile("token", "\n")});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("empty"));
}

TEST_F(CtlServerTest, FlagsDoNotCarryOverBetweenCalls) {
  ASSERT_EQ(Ctl({"status", "j-0001", "--json"}).code, 0);
  const CtlResult r = Ctl({"status", "j-0001"});
  EXPECT_THAT(r.out, Not(HasSubstr("\"job_id\"")));
}

TEST_F(CtlServerTest, JobsPrintsATableOfEveryJob) {
  const CtlResult r = Ctl({"jobs"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("ID"));
  EXPECT_THAT(r.out, HasSubstr("DEVICE-H"));
  EXPECT_THAT(r.out, HasSubstr("j-0001"));
  EXPECT_THAT(r.out, HasSubstr("j-0002"));
  EXPECT_THAT(r.out, HasSubstr("120/300"));
}

TEST_F(CtlServerTest, WorkersPrintsATableAndJson) {
  CtlResult r = Ctl({"workers"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("HEARTBEAT"));
  EXPECT_THAT(r.out, HasSubstr("worker-1"));
  r = Ctl({"workers", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["workers"][0]["worker_id"], "w0");
  EXPECT_TRUE(j["workers"][1].contains("last_heartbeat_unix_ms"));
}

TEST_F(CtlServerTest, CancelPrintsTheResultingState) {
  const CtlResult r = Ctl({"cancel", "j-0001"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "CANCELLED\n");
}

TEST_F(CtlServerTest, CancelOfAnEndedJobExitsOne) {
  const CtlResult r = Ctl({"cancel", "j-done"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dsv3ctl: cancel: job j-done already SUCCEEDED\n");
}

TEST_F(CtlServerTest, EstimateSendsTheSpecsDefaultsAndPrintsTheTableAndFlops) {
  const std::string spec =
      WriteFile("job.json", R"({"parallel": {"max_workers": 8}, "train": {"steps": 300,
                      "global_batch_tokens": 16384}})");
  const CtlResult r = Ctl({"estimate", spec, "--mfu=0.5"});
  ASSERT_EQ(r.code, 0) << r.err;
  const dsv3::v1::EstimateCostRequest sent = service_.last_estimate();
  EXPECT_EQ(sent.tokens(), 300.0 * 16384);
  EXPECT_EQ(sent.devices(), 8);
  EXPECT_EQ(sent.peak_tflops(), 989);
  EXPECT_EQ(sent.mfu(), 0.5);
  EXPECT_EQ(sent.price_per_device_hour(), 2.0);
  EXPECT_THAT(r.out, HasSubstr("FAKE TABLE"));
  EXPECT_THAT(r.out, HasSubstr("main 250 GFLOP, MTP 10.4 GFLOP, total 260 GFLOP"));
  EXPECT_THAT(r.out, HasSubstr("671B total, 37B activated"));
}

TEST_F(CtlServerTest, EstimateWithoutTokensIsBadUsage) {
  const CtlResult r = Ctl({"estimate", WriteFile("job.json", "{}")});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--tokens is required"));
}

TEST_F(CtlServerTest, ReportPrintsTable1OverSeveralJobsWithAProjection) {
  const CtlResult r = Ctl({"report", "j-0001", "j-0002", "--target_tokens=14.8T"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Pre-training"));
  EXPECT_THAT(r.out, HasSubstr("Context extension"));
  EXPECT_THAT(r.out, HasSubstr("CPU device-hours per trillion tokens"));
  EXPECT_THAT(r.out, HasSubstr("Projection to 14.8T tokens"));
  EXPECT_THAT(r.out, HasSubstr("Days on 2 CPU devices"));
}

TEST_F(CtlServerTest, ReportOfAnUnknownJobExitsOne) {
  EXPECT_EQ(Ctl({"report", "j-0001", "j-nope"}).code, 1);
}

TEST_F(CtlServerTest, ReportWithABadTargetIsBadUsage) {
  const CtlResult r = Ctl({"report", "j-0001", "--target_tokens=lots"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--target_tokens"));
}

TEST_F(CtlServerTest, WatchPrintsALinePerChangeAndExitsZeroWhenTheJobSucceeds) {
  const CtlResult r = Ctl({"watch", "j-0001"});
  EXPECT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_THAT(lines[0], HasSubstr("RUNNING step 100/300"));
  EXPECT_THAT(lines[1], HasSubstr("step 200/300"));
  EXPECT_THAT(lines[2], HasSubstr("SUCCEEDED step 300/300 (100.0%)"));
  EXPECT_THAT(lines[2], Not(HasSubstr("ETA")));
}

TEST_F(CtlServerTest, WatchJsonPrintsOneObjectPerLine) {
  const CtlResult r = Ctl({"watch", "j-0001", "--json"});
  EXPECT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u);  // every update, the figures-only one included
  for (const std::string& line : lines) EXPECT_TRUE(nlohmann::json::parse(line).contains("job_id"));
}

TEST_F(CtlServerTest, WatchExitsOneWhenTheJobFails) {
  const CtlResult r = Ctl({"watch", "j-fail"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("FAILED"));
  EXPECT_THAT(r.out, HasSubstr("fewer than min_workers"));
}

TEST_F(CtlServerTest, WatchOfAnUnknownJobExitsOne) {
  const CtlResult r = Ctl({"watch", "j-nope"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dsv3ctl: watch: no job j-nope\n");
}

TEST_F(CtlServerTest, WatchRetriesWhileTheCoordinatorIsGoneThenGivesUp) {
  CtlResult result;
  std::thread watcher([&] { result = Ctl({"watch", "j-hang", "--retry_s=1.5"}); });
  ASSERT_TRUE(service_.first_update_sent().WaitForNotificationWithTimeout(absl::Seconds(10)));
  server_->Shutdown(std::chrono::system_clock::now());
  server_.reset();
  watcher.join();
  EXPECT_EQ(result.code, 1);
  EXPECT_THAT(result.out, HasSubstr("RUNNING step 100/300"));
  EXPECT_THAT(result.err, HasSubstr("dsv3ctl: watch: lost the coordinator at 127.0.0.1:"));
  EXPECT_THAT(result.err, HasSubstr("retrying in"));
  EXPECT_THAT(result.err, HasSubstr("gave up"));
}

// ---- Without a server ----

// Runs dsv3ctl with `args` exactly as given.
CtlResult CtlNoServer(std::vector<std::string> args) {
  args.insert(args.begin(), "dsv3ctl");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  std::ostringstream out, err;
  CtlResult result;
  result.code = RunCtl(static_cast<int>(argv.size()), argv.data(), out, err);
  result.out = out.str();
  result.err = err.str();
  return result;
}

TEST(CtlUsage, HelpPrintsTheUsageAndExitsZero) {
  for (const char* help : {"help", "--help"}) {
    const CtlResult r = CtlNoServer({help});
    EXPECT_EQ(r.code, 0);
    EXPECT_THAT(r.out, HasSubstr("usage: dsv3ctl"));
    EXPECT_THAT(r.out, HasSubstr("estimate"));
  }
}

TEST(CtlUsage, NoVerbPrintsTheUsageOnStderrAndExitsTwo) {
  const CtlResult r = CtlNoServer({});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("usage: dsv3ctl"));
}

TEST(CtlUsage, AnUnknownVerbExitsTwo) {
  const CtlResult r = CtlNoServer({"frobnicate"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("dsv3ctl: unknown verb 'frobnicate'"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);
}

TEST(CtlUsage, AMissingArgumentExitsTwo) {
  const CtlResult r = CtlNoServer({"status"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("dsv3ctl: status: missing JOB"));
}

TEST(CtlUsage, ABadFlagValueExitsTwo) {
  EXPECT_EQ(CtlNoServer({"jobs", "--timeout_s=soon"}).code, 2);
  EXPECT_EQ(CtlNoServer({"jobs", "--timeout_s=-1"}).code, 2);
  EXPECT_EQ(CtlNoServer({"estimate", "x.json", "--devices=many"}).code, 2);
}

TEST(CtlUsage, AnUnreachableCoordinatorExitsOneSayingSo) {
  // A port the kernel chose a moment ago and nobody listens on.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t length = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length), 0);
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const CtlResult r = CtlNoServer({"jobs", "--coordinator=" + address, "--timeout_s=10"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dsv3ctl: cannot reach the coordinator at " + address +
                       " (is dsv3-coordinator running?)\n");
}

}  // namespace
}  // namespace dsv3::cli
