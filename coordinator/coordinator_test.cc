// Tests for the Coordinator class (no gRPC): job lifecycle, placement and acknowledgement, lease
// expiry and recovery, fencing of stale epochs, cancel, restart from the state dir, accounting.
#include "coordinator/coordinator.h"

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace dsv3::coordinator {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;

const absl::Duration kLease = absl::Seconds(1);

class FakeSink : public SessionSink {
 public:
  void Send(const v1::CoordinatorMessage& m) override { messages.push_back(m); }
  void Close(const absl::Status& s) override {
    closed = true;
    close_status = s;
  }
  std::vector<v1::Assignment> Assignments() const {
    std::vector<v1::Assignment> out;
    for (const auto& m : messages) {
      if (m.has_assignment()) out.push_back(m.assignment());
    }
    return out;
  }
  int Stops() const {
    int n = 0;
    for (const auto& m : messages) n += m.has_stop();
    return n;
  }
  std::vector<v1::CoordinatorMessage> messages;
  bool closed = false;
  absl::Status close_status;
};

void WriteShard(const std::string& path, int64_t tokens) {
  std::vector<int32_t> header(256, 0);
  header[0] = 20240520;
  header[1] = 1;
  header[2] = static_cast<int32_t>(tokens);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), header.size() * sizeof(int32_t));
  std::vector<uint16_t> data(tokens);
  for (int64_t i = 0; i < tokens; ++i) data[i] = static_cast<uint16_t>(i % 4096);
  out.write(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(uint16_t));
}

// The DESIGN.md example job with its data in `dir`.
std::string ExampleSpec(const std::string& dir) {
  WriteShard(dir + "/train.bin", 20000);
  WriteShard(dir + "/val.bin", 5000);
  return R"({
    "name": "brown-tiny", "stage": "pre_training",
    "model": { "vocab_size": 4096, "hidden_size": 256, "num_hidden_layers": 4,
      "first_k_dense_replace": 1, "intermediate_size": 512, "moe_intermediate_size": 128,
      "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4,
      "topk_group": 2, "routed_scaling_factor": 2.5, "num_attention_heads": 4,
      "q_lora_rank": 128, "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32,
      "v_head_dim": 64, "num_nextn_predict_layers": 1, "rms_norm_eps": 1e-6,
      "rope_theta": 10000 },
    "parallel": { "pipeline_parallel": 2, "expert_parallel": 2, "schedule": "dualpipe",
      "micro_batches": 8, "min_workers": 2, "max_workers": 8 },
    "train": { "seq_len": 128, "global_batch_tokens": 16384, "steps": 300, "lr": 3e-3 },
    "precision": "fp8",
    "data": { "train": "train.bin", "val": "val.bin" },
    "accounting": { "price_per_device_hour": 2.0 }
  })";
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/coord_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    spec_ = ExampleSpec(dir_);
    Open();
  }

  void Open() {
    CoordinatorOptions options;
    options.state_dir = dir_ + "/state";
    options.lease = kLease;
    options.clock = &clock_;
    options.recovery_timeout = absl::Minutes(1);
    options.restart_grace = absl::ZeroDuration();  // 3 leases
    absl::StatusOr<std::unique_ptr<Coordinator>> c = Coordinator::Create(options);
    ASSERT_OK(c);
    coordinator_ = std::move(*c);
  }

  // Attaches a worker and opens its session; returns its id.
  std::string AddWorker(const std::string& name, FakeSink* sink, const std::string& node = "n1",
                        std::vector<v1::RankProgress> running = {}) {
    v1::AttachRequest req;
    req.set_name(name);
    req.set_node(node);
    req.set_device("cpu");
    for (auto& r : running) *req.add_running() = r;
    absl::StatusOr<v1::AttachResponse> r = coordinator_->Attach(req, "ipv4:127.0.0.1:1");
    EXPECT_OK(r);
    EXPECT_OK(coordinator_->OpenSession(r->worker_id(), sink));
    return r->worker_id();
  }

  void Ack(const std::string& worker_id, const v1::Assignment& a, bool accepted = true) {
    v1::WorkerMessage m;
    m.mutable_ack()->set_job_id(a.job_id());
    m.mutable_ack()->set_epoch(a.epoch());
    m.mutable_ack()->set_rank(a.rank().rank());
    m.mutable_ack()->set_accepted(accepted);
    m.mutable_ack()->set_state(v1::WAITING_FOR_ENGINE);
    m.mutable_ack()->set_detail("no engine");
    ASSERT_OK(coordinator_->HandleWorkerMessage(worker_id, m));
  }

  void Heartbeat(const std::string& worker_id) {
    v1::WorkerMessage m;
    m.mutable_heartbeat();
    ASSERT_OK(coordinator_->HandleWorkerMessage(worker_id, m));
  }

  v1::JobStatus Job(const std::string& id) {
    absl::StatusOr<v1::JobStatus> s = coordinator_->GetJob(id, 100);
    EXPECT_OK(s);
    return *s;
  }

  std::string Submit() {
    absl::StatusOr<std::string> id = coordinator_->SubmitJob(spec_, dir_);
    EXPECT_OK(id);
    return *id;
  }

  FakeSink& NewSink() { return *sinks_.emplace_back(std::make_unique<FakeSink>()); }

  std::string dir_;
  std::string spec_;
  ManualClock clock_;
  std::vector<std::unique_ptr<FakeSink>> sinks_;  // outlive coordinator_, which may still call them
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorTest, ABadSpecIsRejectedAndNothingIsCreated) {
  std::string bad = absl::StrReplaceAll(spec_, {{"\"expert_parallel\": 2", "\"expert_parallel\": 3"}});
  EXPECT_THAT(coordinator_->SubmitJob(bad, dir_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expert_parallel")));
  EXPECT_THAT(coordinator_->SubmitJob("{", dir_), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(coordinator_->ListJobs().empty());
}

TEST_F(CoordinatorTest, AJobWaitsForMinWorkersThenIsPlacedAndAcknowledged) {
  const std::string job = Submit();
  EXPECT_EQ(Job(job).state(), v1::PENDING);
  FakeSink& s1 = NewSink();
  FakeSink& s2 = NewSink();
  const std::string w1 = AddWorker("w1", &s1);
  coordinator_->Tick();
  EXPECT_EQ(Job(job).state(), v1::PENDING);
  EXPECT_THAT(Job(job).message(), HasSubstr("1 of the 2"));
  const std::string w2 = AddWorker("w2", &s2);
  coordinator_->Tick();
  v1::JobStatus st = Job(job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.epoch(), 1);
  ASSERT_EQ(s1.Assignments().size(), 1u);
  ASSERT_EQ(s2.Assignments().size(), 1u);
  EXPECT_EQ(s1.Assignments()[0].store_prefix(), job + "/1");
  EXPECT_EQ(s1.Assignments()[0].resume_step(), -1);
  Ack(w1, s1.Assignments()[0]);
  EXPECT_THAT(Job(job).message(), HasSubstr("1 of 2 ranks acknowledged"));
  Ack(w2, s2.Assignments()[0]);
  st = Job(job);
  EXPECT_THAT(st.message(), HasSubstr("no training engine"));
  for (const auto& r : st.workers()) EXPECT_EQ(r.state(), v1::WAITING_FOR_ENGINE);
}

TEST_F(CoordinatorTest, AWorkerSilentForThreeLeasesIsLostAndTheJobRecoversOnANewEpoch) {
  const std::string job = Submit();
  FakeSink& s1 = NewSink();
  FakeSink& s2 = NewSink();
  FakeSink& s3 = NewSink();
  const std::string w1 = AddWorker("w1", &s1);
  const std::string w2 = AddWorker("w2", &s2);
  coordinator_->Tick();
  Ack(w1, s1.Assignments()[0]);
  Ack(w2, s2.Assignments()[0]);
  // w1 keeps heart-beating, w2 goes silent.
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(kLease);
    Heartbeat(w1);
    coordinator_->Tick();
  }
  v1::JobStatus st = Job(job);
  EXPECT_EQ(st.state(), v1::RECOVERING);
  EXPECT_THAT(st.message(), HasSubstr("w2"));
  EXPECT_TRUE(s2.closed);
  EXPECT_EQ(s1.Stops(), 1) << "the survivor's rank is stopped";
  // A stale acknowledgement from the survivor for epoch 1 changes nothing.
  Ack(w1, s1.Assignments()[0]);
  EXPECT_EQ(Job(job).state(), v1::RECOVERING);
  clock_.Advance(kLease);  // time spent recovering
  Heartbeat(w1);
  coordinator_->Tick();
  // A new worker arrives: re-plan on w1 + w3 at epoch 2.
  const std::string w3 = AddWorker("w3", &s3);
  coordinator_->Tick();
  st = Job(job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.epoch(), 2);
  ASSERT_EQ(s3.Assignments().size(), 1u);
  ASSERT_EQ(s1.Assignments().size(), 2u);
  EXPECT_EQ(s1.Assignments()[1].epoch(), 2);
  // Nothing was committed, so epoch 1's work (2 devices x 4 leases) and the recovery time (1
  // device x 1 lease) are lost; the books balance.
  const v1::Accounting& acc = st.accounting();
  EXPECT_NEAR(acc.lost_device_hours(), (2 * 4 + 1) * absl::ToDoubleHours(kLease), 1e-12);
  EXPECT_NEAR(acc.device_hours(), acc.lost_device_hours(), 1e-12);
  EXPECT_DOUBLE_EQ(acc.productive_device_hours() + acc.lost_device_hours(), acc.device_hours());
}

TEST_F(CoordinatorTest, ARecoveringJobFailsAfterTheTimeoutWithoutEnoughWorkers) {
  const std::string job = Submit();
  FakeSink& s1 = NewSink();
  FakeSink& s2 = NewSink();
  const std::string w1 = AddWorker("w1", &s1);
  AddWorker("w2", &s2);
  coordinator_->Tick();
  for (int i = 0; i < 70; ++i) {
    clock_.Advance(absl::Seconds(1));
    Heartbeat(w1);
    coordinator_->Tick();
  }
  v1::JobStatus st = Job(job);
  EXPECT_EQ(st.state(), v1::FAILED);
  EXPECT_THAT(st.message(), HasSubstr("min_workers=2"));
}

TEST_F(CoordinatorTest, DeviceHoursAreWorkersTimesWallTimeAndCostIsHoursTimesPrice) {
  const std::string job = Submit();
  FakeSink& s1 = NewSink();
  FakeSink& s2 = NewSink();
  const std::string w1 = AddWorker("w1", &s1);
  const std::string w2 = AddWorker("w2", &s2);
  coordinator_->Tick();
  for (int i = 0; i < 36; ++i) {
    clock_.Advance(absl::Milliseconds(100));
    Heartbeat(w1);
    Heartbeat(w2);
    coordinator_->Tick();
  }
  // 2 devices x 3.6 s = 7.2 device-seconds = 0.002 device-hours; $2 per device-hour.
  const v1::Accounting acc = Job(job).accounting();
  EXPECT_NEAR(acc.device_hours(), 0.002, 1e-12);
  EXPECT_NEAR(acc.cost_usd(), 0.004, 1e-12);
  EXPECT_DOUBLE_EQ(acc.lost_device_hours(), 0);
  EXPECT_DOUBLE_EQ(acc.productive_device_hours(), acc.device_hours());
  EXPECT_GT(acc.flops_per_token(), 0);
}

TEST_F(CoordinatorTest, CancelStopsTheRanksAndASecondCancelIsRefused) {
  const std::string job = Submit();
  FakeSink& s1 = NewSink();
  FakeSink& s2 = NewSink();
  AddWorker("w1", &s1);
  AddWorker("w2", &s2);
  coordinator_->Tick();
  absl::StatusOr<v1::JobStatus> st = coordinator_->CancelJob(job);
  ASSERT_OK(st);
  EXPECT_EQ(st->state(), v1::CANCELLED);
  EXPECT_EQ(s1.Stops(), 1);
  EXPECT_EQ(s2.Stops(), 1);
  EXPECT_EQ(coordinator_->ListWorkers()[0].state(), "idle");
  EXPECT_THAT(coordinator_->CancelJob(job), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(coordinator_->CancelJob("job-999"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(CoordinatorTest, StoreRequestsAreFencedToTheCurrentEpoch) {
  const std::string job = Submit();
  v1::StoreScope scope;
  scope.set_job_id(job);
  scope.set_epoch(1);
  EXPECT_THAT(coordinator_->CheckStoreScope(scope), StatusIs(absl::StatusCode::kFailedPrecondition));
  FakeSink& s1 = NewSink();
  FakeSink& s2 = NewSink();
  AddWorker("w1", &s1);
  AddWorker("w2", &s2);
  coordinator_->Tick();
  EXPECT_OK(coordinator_->CheckStoreScope(scope));
  scope.set_epoch(0);
  EXPECT_THAT(coordinator_->CheckStoreScope(scope),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("epoch 1")));
  scope.set_job_id("job-404");
  EXPECT_THAT(coordinator_->CheckStoreScope(scope), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(CoordinatorTest, ARestartKeepsJobsAndHistoryAndRebindsReattachingWorkers) {
  const std::string job = Submit();
  FakeSink& s1 = NewSink();
  FakeSink& s2 = NewSink();
  const std::string w1 = AddWorker("w1", &s1);
  const std::string w2 = AddWorker("w2", &s2);
  coordinator_->Tick();
  Ack(w1, s1.Assignments()[0]);
  Ack(w2, s2.Assignments()[0]);
  clock_.Advance(absl::Seconds(1));
  Heartbeat(w1);
  Heartbeat(w2);
  coordinator_->Tick();
  const v1::JobStatus before = Job(job);
  ASSERT_GT(before.accounting().device_hours(), 0);

  coordinator_.reset();  // as if killed: only what the store holds survives
  Open();
  v1::JobStatus after = Job(job);
  EXPECT_EQ(after.state(), v1::RUNNING);
  EXPECT_EQ(after.epoch(), before.epoch());
  EXPECT_EQ(after.accounting().device_hours(), before.accounting().device_hours());
  std::vector<std::string> kinds;
  for (const auto& e : after.events()) kinds.push_back(e.kind());
  EXPECT_EQ(kinds.front(), "submitted");
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "coordinator_restarted"), kinds.end());

  // w1 re-attaches still running its rank; w2 never comes back.
  v1::RankProgress running;
  running.set_job_id(job);
  running.set_epoch(before.epoch());
  running.set_rank(s1.Assignments()[0].rank().rank());
  running.set_state(v1::WAITING_FOR_ENGINE);
  FakeSink& r1 = NewSink();
  const std::string w1b = AddWorker("w1", &r1, "n1", {running});
  EXPECT_EQ(r1.Stops(), 0);
  after = Job(job);
  int rebound = 0;
  for (const auto& r : after.workers()) rebound += r.worker_id() == w1b;
  EXPECT_EQ(rebound, 1);
  EXPECT_EQ(after.state(), v1::RUNNING);
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(kLease);
    Heartbeat(w1b);
    coordinator_->Tick();
  }
  after = Job(job);
  EXPECT_EQ(after.state(), v1::RECOVERING);
  EXPECT_THAT(after.message(), HasSubstr("did not re-attach"));
}

TEST_F(CoordinatorTest, ASecondCoordinatorOnTheSameStateDirIsRefused) {
  CoordinatorOptions options;
  options.state_dir = dir_ + "/state";
  options.clock = &clock_;
  EXPECT_THAT(Coordinator::Create(options),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("another coordinator")));
  coordinator_.reset();
  EXPECT_OK(Coordinator::Create(options));
}

TEST_F(CoordinatorTest, AReattachingWorkerWithAStaleRankIsToldToStopIt) {
  v1::RankProgress running;
  running.set_job_id("job-77");
  running.set_epoch(3);
  running.set_rank(0);
  FakeSink& sink = NewSink();
  AddWorker("w1", &sink, "n1", {running});
  ASSERT_EQ(sink.Stops(), 1);
  EXPECT_EQ(sink.messages[0].stop().job_id(), "job-77");
}

TEST_F(CoordinatorTest, AttachRejectsBadNamesAndDevices) {
  v1::AttachRequest req;
  req.set_name("bad name!");
  EXPECT_THAT(coordinator_->Attach(req, ""), StatusIs(absl::StatusCode::kInvalidArgument));
  req.set_name(std::string(1000, 'a'));
  EXPECT_THAT(coordinator_->Attach(req, ""), StatusIs(absl::StatusCode::kInvalidArgument));
  req.set_name("ok");
  req.set_device("tpu");
  EXPECT_THAT(coordinator_->Attach(req, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tpu")));
}

TEST_F(CoordinatorTest, AnUnknownWorkerIsToldToAttachAgain) {
  FakeSink& sink = NewSink();
  EXPECT_THAT(coordinator_->OpenSession("w-nope", &sink), StatusIs(absl::StatusCode::kNotFound));
  v1::WorkerMessage m;
  m.mutable_heartbeat();
  EXPECT_THAT(coordinator_->HandleWorkerMessage("w-nope", m),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace dsv3::coordinator
