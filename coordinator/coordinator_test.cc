// Tests for the Coordinator class (no gRPC): job lifecycle, placement and acknowledgement, lease
// expiry and recovery, fencing of stale epochs, cancel, restart from the state dir, accounting,
// elastic attach (a job grows at its next checkpoint).
#include "coordinator/coordinator.h"

#include <algorithm>
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
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

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

  // A heartbeat reporting one rank of `job` (placement epoch 1) in `state`.
  static v1::WorkerMessage RankHeartbeat(const std::string& job, int rank, v1::RankState state) {
    v1::WorkerMessage hb;
    v1::RankProgress* r = hb.mutable_heartbeat()->add_ranks();
    r->set_job_id(job);
    r->set_epoch(1);
    r->set_rank(rank);
    r->set_state(state);
    return hb;
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

  // A job placed on two workers whose ranks acknowledged (epoch 1 unless re-planned since).
  struct Placed {
    std::string job;
    std::string worker[2];  // by rank
    FakeSink* sink[2];      // by rank
    std::string name[2];    // by rank
  };
  Placed PlaceOnTwoWorkers() {
    Placed p;
    p.job = Submit();
    FakeSink* sinks[2] = {&NewSink(), &NewSink()};
    const std::string ids[2] = {AddWorker("w1", sinks[0]), AddWorker("w2", sinks[1])};
    coordinator_->Tick();
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(sinks[i]->Assignments().size(), 1u);
      if (sinks[i]->Assignments().empty()) continue;
      const v1::Assignment a = sinks[i]->Assignments().back();
      Ack(ids[i], a);
      const int64_t rank = a.rank().rank();
      p.worker[rank] = ids[i];
      p.sink[rank] = sinks[i];
      p.name[rank] = i == 0 ? "w1" : "w2";
    }
    return p;
  }

  // Re-reads which worker holds which rank after a re-plan (the latest assignment of each).
  void Replaced(Placed& p) {
    Placed old = p;
    for (int i = 0; i < 2; ++i) {
      const int64_t rank = old.sink[i]->Assignments().back().rank().rank();
      p.worker[rank] = old.worker[i];
      p.sink[rank] = old.sink[i];
      p.name[rank] = old.name[i];
    }
  }

  // A report of `rank` of the placed job for its worker's latest assignment (job and epoch).
  v1::RankReport ReportOf(const Placed& p, int rank, const std::string& event) {
    const v1::Assignment a = p.sink[rank]->Assignments().back();
    v1::RankReport r;
    r.set_job_id(a.job_id());
    r.set_epoch(a.epoch());
    r.set_rank(rank);
    r.set_event(event);
    return r;
  }

  void Send(const std::string& worker_id, const v1::RankReport& report) {
    v1::WorkerMessage m;
    *m.mutable_report() = report;
    ASSERT_OK(coordinator_->HandleWorkerMessage(worker_id, m));
  }

  // A step report of `rank` (300 steps; main loss `main_loss`, `seconds` of wall time).
  v1::RankReport StepReport(const Placed& p, int rank, int64_t step, double main_loss,
                            double seconds = 2.0) {
    v1::RankReport r = ReportOf(p, rank, "step");
    r.set_step(step);
    r.set_steps(300);
    r.set_main_loss(main_loss);
    r.set_mtp_loss(main_loss + 1);
    r.set_balance_loss(0.001);
    r.set_loss(main_loss + 0.3 * (main_loss + 1) + 0.001);
    r.set_lr(0.003);
    r.set_grad_norm(0.5);
    r.set_seconds(seconds);
    r.set_tokens_per_second(16384 / seconds);
    r.set_tokens_seen(step * 16384);
    r.set_load_max_over_mean(1.25);
    return r;
  }

  void Steps(const Placed& p, int64_t from, int64_t to) {
    for (int64_t step = from; step <= to; ++step) {
      for (int rank = 0; rank < 2; ++rank) Send(p.worker[rank], StepReport(p, rank, step, 6.0));
    }
  }

  // Rank `rank`'s acknowledgement of the checkpoint of `step`.
  void CheckpointAck(const Placed& p, int rank, int64_t step) {
    v1::RankReport r = ReportOf(p, rank, "checkpoint");
    r.set_step(step);
    r.set_path(absl::StrCat(dir_, "/ckpt/step-", step));
    Send(p.worker[rank], r);
  }

  // Both ranks acknowledge the checkpoint of `step` (rank 1 first): it is committed.
  void Checkpoint(const Placed& p, int64_t step) {
    CheckpointAck(p, 1, step);
    CheckpointAck(p, 0, step);
  }

  // The worker's "hung" report of `rank` after `step` (its detail says where the rank is stuck).
  v1::RankReport HungReport(const Placed& p, int rank, int64_t step) {
    v1::RankReport r = ReportOf(p, rank, "hung");
    r.set_step(step);
    r.set_detail(absl::StrCat("no progress for 5.1s after step ", step,
                              " (op 6), not waiting for a peer: the rank is stuck"));
    return r;
  }

  // The reason of the last stop sent to `sink`; empty when none was.
  static bool LastStopDiscards(const FakeSink& sink) {
    for (auto it = sink.messages.rbegin(); it != sink.messages.rend(); ++it) {
      if (it->has_stop()) return it->stop().discard();
    }
    return false;
  }

  static std::string LastStopReason(const FakeSink& sink) {
    for (auto it = sink.messages.rbegin(); it != sink.messages.rend(); ++it) {
      if (it->has_stop()) return it->stop().reason();
    }
    return "";
  }

  void Exit(const Placed& p, int rank, int32_t code, const std::string& detail = "") {
    v1::RankReport r = ReportOf(p, rank, "exit");
    r.set_exit_code(code);
    r.set_detail(detail);
    Send(p.worker[rank], r);
  }

  // Advances the clock by `d` with both workers heart-beating (so no lease expires).
  void Run(const Placed& p, absl::Duration d) {
    for (absl::Duration t = absl::ZeroDuration(); t < d; t += absl::Milliseconds(500)) {
      clock_.Advance(absl::Milliseconds(500));
      Heartbeat(p.worker[0]);
      Heartbeat(p.worker[1]);
      coordinator_->Tick();
    }
  }

  // Advances the clock by `d` in ticks of 500 ms with every worker of `ids` heart-beating.
  void RunAll(const std::vector<std::string>& ids, absl::Duration d) {
    for (absl::Duration t = absl::ZeroDuration(); t < d; t += absl::Milliseconds(500)) {
      clock_.Advance(absl::Milliseconds(500));
      for (const std::string& id : ids) Heartbeat(id);
      coordinator_->Tick();
    }
  }

  // The spec with a checkpoint every `every` steps (and `max_workers`, when given).
  void CheckpointEvery(int every, int max_workers = 8) {
    spec_ = absl::StrReplaceAll(
        spec_, {{"\"accounting\"",
                 absl::StrCat("\"checkpoint\": { \"every_steps\": ", every, " }, \"accounting\"")},
                {"\"max_workers\": 8", absl::StrCat("\"max_workers\": ", max_workers)}});
  }

  std::vector<v1::JobEvent> EventsOf(const std::string& job, const std::string& kind) {
    std::vector<v1::JobEvent> out;
    const v1::JobStatus status = Job(job);
    for (const auto& e : status.events()) {
      if (e.kind() == kind) out.push_back(e);
    }
    return out;
  }

  // What the state directory holds for `job` now (read through a second connection).
  v1::JobStatus Stored(const std::string& job) {
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(dir_ + "/state");
    EXPECT_OK(store);
    absl::StatusOr<std::vector<v1::JobStatus>> jobs = (*store)->LoadJobs();
    EXPECT_OK(jobs);
    for (const v1::JobStatus& j : *jobs) {
      if (j.job_id() == job) return j;
    }
    ADD_FAILURE() << "no stored job " << job;
    return {};
  }

  std::vector<std::string> EventKinds(const std::string& job) {
    const v1::JobStatus status = Job(job);
    std::vector<std::string> kinds;
    for (const auto& e : status.events()) kinds.push_back(e.kind());
    return kinds;
  }

  std::string dir_;
  std::string spec_;
  ManualClock clock_;
  std::vector<std::unique_ptr<FakeSink>> sinks_;  // outlive coordinator_, which may still call them
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorTest, ABadSpecIsRejectedAndNothingIsCreated) {
  std::string bad =
      absl::StrReplaceAll(spec_, {{"\"expert_parallel\": 2", "\"expert_parallel\": 3"}});
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
  EXPECT_TRUE(LastStopDiscards(s1)) << "at once: its work since the checkpoint is rolled back";
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
  EXPECT_FALSE(LastStopDiscards(s1)) << "a cancel lets the rank stop at a step boundary";
  EXPECT_THAT(coordinator_->CancelJob(job), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(coordinator_->CancelJob("job-999"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(CoordinatorTest, StoreRequestsAreFencedToTheCurrentEpoch) {
  const std::string job = Submit();
  v1::StoreScope scope;
  scope.set_job_id(job);
  scope.set_epoch(1);
  EXPECT_THAT(coordinator_->CheckStoreScope(scope),
              StatusIs(absl::StatusCode::kFailedPrecondition));
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

TEST_F(CoordinatorTest, TheOutageIsChargedToEachWorkerThatReattachesStillRunningItsRank) {
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
  const double before = Job(job).accounting().device_hours();
  ASSERT_NEAR(before, 2 * 1 / 3600.0, 1e-9);

  coordinator_.reset();
  clock_.Advance(absl::Seconds(30));  // the coordinator is down; both ranks keep training
  Open();
  clock_.Advance(absl::Seconds(2));
  coordinator_->Tick();  // nobody re-bound yet: nothing charged
  EXPECT_NEAR(Job(job).accounting().device_hours(), before, 1e-9);

  auto reattach = [&](const std::string& name, const v1::Assignment& assignment) {
    v1::RankProgress running;
    running.set_job_id(job);
    running.set_epoch(assignment.epoch());
    running.set_rank(assignment.rank().rank());
    running.set_state(v1::TRAINING);
    FakeSink& sink = NewSink();
    return AddWorker(name, &sink, "n1", {running});
  };
  const std::string w1b = reattach("w1", s1.Assignments()[0]);
  // w1: the 32 s since the accounting last ran.
  EXPECT_NEAR(Job(job).accounting().device_hours(), before + 32 / 3600.0, 1e-6);
  clock_.Advance(absl::Seconds(3));
  const std::string w2b = reattach("w2", s2.Assignments()[0]);
  // w1 3 s more; w2 the whole 35 s outage.
  EXPECT_NEAR(Job(job).accounting().device_hours(), before + (35 + 35) / 3600.0, 1e-6);
  // A later re-attach of the same worker (a dropped session, not a restart) charges nothing extra.
  clock_.Advance(absl::Seconds(1));
  Heartbeat(w1b);
  Heartbeat(w2b);
  coordinator_->Tick();
  const double settled = Job(job).accounting().device_hours();
  EXPECT_NEAR(settled, before + (36 + 36) / 3600.0, 1e-6);
  reattach("w1", s1.Assignments()[0]);
  EXPECT_NEAR(Job(job).accounting().device_hours(), settled, 1e-6);
  const v1::Accounting acc = Job(job).accounting();
  EXPECT_DOUBLE_EQ(acc.productive_device_hours() + acc.lost_device_hours(), acc.device_hours());
  EXPECT_EQ(acc.lost_device_hours(), 0);
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

// ---- Rank reports ----

TEST_F(CoordinatorTest, StepReportsOfRankZeroSetTheJobsStepLossProgressRateAndMessage) {
  Placed p = PlaceOnTwoWorkers();
  int64_t version = 0;
  ASSERT_OK(coordinator_->WaitForJobChange(p.job, &version, absl::ZeroDuration()));
  const int64_t before = version;
  for (int64_t step = 1; step <= 4; ++step) {
    Send(p.worker[0], StepReport(p, 0, step, 7.0 - 0.5 * step, /*seconds=*/1.0 + step));
  }
  ASSERT_OK(coordinator_->WaitForJobChange(p.job, &version, absl::ZeroDuration()));
  EXPECT_NE(version, before) << "watchers wake up for a step";

  v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.step(), 4);
  EXPECT_EQ(st.total_steps(), 300);
  EXPECT_DOUBLE_EQ(st.last_loss(), 5.0) << "last_loss is the main loss";
  const v1::TrainingProgress& prog = st.progress();
  EXPECT_DOUBLE_EQ(prog.main_loss(), 5.0);
  EXPECT_DOUBLE_EQ(prog.mtp_loss(), 6.0);
  EXPECT_DOUBLE_EQ(prog.balance_loss(), 0.001);
  EXPECT_DOUBLE_EQ(prog.loss(), 5.0 + 0.3 * 6.0 + 0.001);
  EXPECT_DOUBLE_EQ(prog.lr(), 0.003);
  EXPECT_DOUBLE_EQ(prog.grad_norm(), 0.5);
  EXPECT_DOUBLE_EQ(prog.load_max_over_mean(), 1.25);
  EXPECT_DOUBLE_EQ(prog.tokens_per_second(), 16384 / 5.0) << "the last step's own figure";
  EXPECT_EQ(prog.last_report_unix_ms(), absl::ToUnixMillis(clock_.Now()));
  // Steps took 2, 3, 4 and 5 s: 3.5 s per step recently, 296 steps left.
  EXPECT_DOUBLE_EQ(prog.eta_seconds(), 296 * 3.5);
  const v1::Accounting& acc = st.accounting();
  EXPECT_DOUBLE_EQ(acc.tokens_per_second(), 16384 / 3.5);
  // MFU = tokens/s x FLOPs per token / (2 CPU devices x 0.256 TFLOP/s, the CPU default peak).
  EXPECT_NEAR(acc.mfu(), 16384 / 3.5 * acc.flops_per_token() / (2 * 0.256e12), 1e-12);
  EXPECT_EQ(acc.tokens(), 0) << "nothing is committed before a checkpoint";
  EXPECT_EQ(st.message(), "training: step 4/300, loss 5.0000 (epoch 1, 2 workers)");
  EXPECT_EQ(st.workers(0).rank(), 0);
  EXPECT_EQ(st.workers(0).state(), v1::TRAINING);
  EXPECT_EQ(st.workers(0).detail(), "step 4/300");
  EXPECT_EQ(st.workers(1).state(), v1::WAITING_FOR_ENGINE) << "rank 1 has not reported yet";
  EXPECT_THAT(EventKinds(p.job), Contains("training"));

  // Rank 1's report marks it TRAINING; the job's figures stay rank 0's.
  Send(p.worker[1], StepReport(p, 1, 5, 1.0));
  st = Job(p.job);
  EXPECT_EQ(st.workers(1).state(), v1::TRAINING);
  EXPECT_EQ(st.workers(1).detail(), "step 5/300");
  EXPECT_EQ(st.step(), 4);
  EXPECT_DOUBLE_EQ(st.last_loss(), 5.0);

  // Validation figures (the main loss) land in the progress.
  v1::RankReport val = ReportOf(p, 0, "validation");
  val.set_step(4);
  val.set_loss(9.0);
  val.set_main_loss(5.25);
  val.set_next_token_accuracy(0.125);
  val.set_mtp_next_next_accuracy(0.0625);
  Send(p.worker[0], val);
  st = Job(p.job);
  EXPECT_EQ(st.progress().val_step(), 4);
  EXPECT_DOUBLE_EQ(st.progress().val_loss(), 5.25);
  EXPECT_DOUBLE_EQ(st.progress().val_next_token_accuracy(), 0.125);
  EXPECT_DOUBLE_EQ(st.progress().val_mtp_next_next_accuracy(), 0.0625);
}

TEST_F(CoordinatorTest, StepsArePersistedAtTheIntervalButACheckpointAtOnce) {
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 2);
  EXPECT_EQ(Stored(p.job).step(), 0) << "a step alone is not written at once";
  Checkpoint(p, 2);
  v1::JobStatus stored = Stored(p.job);
  EXPECT_EQ(stored.last_checkpoint_step(), 2);
  EXPECT_EQ(stored.step(), 2);
  EXPECT_EQ(stored.accounting().tokens(), 2 * 16384);
  Steps(p, 3, 3);
  EXPECT_EQ(Stored(p.job).step(), 2);
  clock_.Advance(absl::Seconds(2));  // the persist interval
  Heartbeat(p.worker[0]);
  Heartbeat(p.worker[1]);
  coordinator_->Tick();
  EXPECT_EQ(Stored(p.job).step(), 3);
}

TEST_F(CoordinatorTest, ACheckpointCommitsItsTokensAndTheDeviceHoursSpentSoFar) {
  Placed p = PlaceOnTwoWorkers();
  Run(p, absl::Seconds(10));
  Steps(p, 1, 50);
  v1::Accounting acc = Job(p.job).accounting();
  // 2 devices x 10 s, all uncommitted.
  const double hours = 2 * 10 / 3600.0;
  EXPECT_NEAR(acc.uncommitted_device_hours(), hours, 1e-12);
  EXPECT_EQ(acc.tokens(), 0);
  EXPECT_EQ(acc.device_hours_per_trillion_tokens(), 0);

  Checkpoint(p, 50);
  const v1::JobStatus st = Job(p.job);
  acc = st.accounting();
  EXPECT_EQ(st.last_checkpoint_step(), 50);
  EXPECT_EQ(acc.tokens(), 50 * 16384);
  EXPECT_EQ(acc.uncommitted_device_hours(), 0);
  EXPECT_NEAR(acc.device_hours(), hours, 1e-12);
  EXPECT_EQ(acc.lost_device_hours(), 0);
  EXPECT_DOUBLE_EQ(acc.productive_device_hours(), acc.device_hours());
  EXPECT_NEAR(acc.device_hours_per_trillion_tokens(), hours / (50 * 16384 / 1e12), 1e-6);
  const v1::JobEvent& last = st.events(st.events_size() - 1);
  EXPECT_EQ(last.kind(), "checkpoint");
  EXPECT_THAT(last.message(), HasSubstr("step-50"));

  // A repeated or older checkpoint changes nothing.
  Checkpoint(p, 40);
  EXPECT_EQ(Job(p.job).last_checkpoint_step(), 50);
  EXPECT_EQ(Job(p.job).accounting().tokens(), 50 * 16384);
}

TEST_F(CoordinatorTest, ACheckpointIsCommittedOnlyWhenEveryRankHasAcknowledgedIt) {
  Placed p = PlaceOnTwoWorkers();
  Run(p, absl::Seconds(4));
  Steps(p, 1, 20);
  // Rank 0 alone (it committed the files on disk) does not commit the job's checkpoint.
  CheckpointAck(p, 0, 10);
  CheckpointAck(p, 0, 10);  // a repeat counts once
  CheckpointAck(p, 0, 20);
  v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.last_checkpoint_step(), -1);
  EXPECT_EQ(st.accounting().tokens(), 0);
  EXPECT_NEAR(st.accounting().uncommitted_device_hours(), 2 * 4 / 3600.0, 1e-12);
  EXPECT_TRUE(EventsOf(p.job, "checkpoint").empty());
  EXPECT_EQ(Stored(p.job).last_checkpoint_step(), -1);
  // Rank 1's acknowledgement of step 20 commits it (and so everything before it); its late
  // acknowledgement of step 10 then changes nothing.
  CheckpointAck(p, 1, 20);
  st = Job(p.job);
  EXPECT_EQ(st.last_checkpoint_step(), 20);
  EXPECT_EQ(st.accounting().tokens(), 20 * 16384);
  EXPECT_EQ(st.accounting().uncommitted_device_hours(), 0);
  const std::vector<v1::JobEvent> committed = EventsOf(p.job, "checkpoint");
  ASSERT_EQ(committed.size(), 1u);
  EXPECT_EQ(committed[0].message(), absl::StrCat("step 20 committed: acknowledged by all 2 ranks (",
                                                 dir_, "/ckpt/step-20)"));
  EXPECT_EQ(Stored(p.job).last_checkpoint_step(), 20) << "persisted at once";
  CheckpointAck(p, 1, 10);
  EXPECT_EQ(Job(p.job).last_checkpoint_step(), 20);
  EXPECT_EQ(EventsOf(p.job, "checkpoint").size(), 1u);

  // Acknowledgements do not outlive their epoch: rank 1 acknowledged step 30, then rank 0 fails;
  // the re-planned ranks resume from step 20, and epoch 1's acknowledgement does not count.
  Steps(p, 21, 30);
  CheckpointAck(p, 1, 30);
  Exit(p, 0, 1, "peer lost");
  Run(p, absl::Milliseconds(500));
  ASSERT_EQ(Job(p.job).epoch(), 2);
  Replaced(p);
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(p.sink[rank]->Assignments().back().resume_step(), 20);
  }
  Steps(p, 21, 30);
  CheckpointAck(p, 0, 30);
  EXPECT_EQ(Job(p.job).last_checkpoint_step(), 20);
  CheckpointAck(p, 1, 30);
  EXPECT_EQ(Job(p.job).last_checkpoint_step(), 30);
}

TEST_F(CoordinatorTest, WhenEveryRankExitsZeroTheJobSucceedsAndItsWorkersGoIdle) {
  Placed p = PlaceOnTwoWorkers();
  Run(p, absl::Seconds(4));
  Steps(p, 299, 300);
  Checkpoint(p, 300);
  Exit(p, 0, 0);
  v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.workers(0).state(), v1::DONE);
  EXPECT_THAT(st.message(), HasSubstr("1 of 2 ranks done"));
  // A heartbeat the worker sent before its rank's exit does not undo DONE.
  ASSERT_OK(coordinator_->HandleWorkerMessage(p.worker[0], RankHeartbeat(p.job, 0, v1::TRAINING)));
  EXPECT_EQ(Job(p.job).workers(0).state(), v1::DONE);

  Exit(p, 1, 0);
  st = Job(p.job);
  EXPECT_EQ(st.state(), v1::SUCCEEDED);
  EXPECT_EQ(st.step(), 300);
  EXPECT_THAT(st.message(), HasSubstr("completed 300/300 steps; final loss 6.0000"));
  EXPECT_EQ(st.accounting().tokens(), 300 * 16384);
  EXPECT_EQ(st.accounting().uncommitted_device_hours(), 0);
  EXPECT_DOUBLE_EQ(st.accounting().productive_device_hours(), st.accounting().device_hours());
  EXPECT_THAT(EventKinds(p.job), Contains("succeeded"));
  for (const v1::WorkerInfo& w : coordinator_->ListWorkers()) {
    EXPECT_EQ(w.state(), "idle") << w.name();
    EXPECT_EQ(w.job_id(), "") << w.name();
  }
  // Nothing is charged after the end, and nothing is placed again.
  const double hours = st.accounting().device_hours();
  Run(p, absl::Seconds(2));
  st = Job(p.job);
  EXPECT_EQ(st.state(), v1::SUCCEEDED);
  EXPECT_EQ(st.accounting().device_hours(), hours);
  EXPECT_EQ(p.sink[0]->Assignments().size(), 1u);
}

TEST_F(CoordinatorTest, ExitCodeTwoFailsTheJobQuotingTheRankAndItsError) {
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 3);
  Exit(p, 1, 2,
       "dsv3-train: loading the spec\n"
       "INVALID_ARGUMENT: data.train: shard /x/train.bin has magic 7, expected 20240520\n\n");
  const v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::FAILED);
  EXPECT_THAT(st.message(), HasSubstr("rank 1 (worker " + p.name[1] + ") exited with code 2"));
  EXPECT_THAT(st.message(), HasSubstr("has magic 7, expected 20240520"));
  EXPECT_THAT(st.workers(1).detail(), HasSubstr("loading the spec"));
  const v1::JobEvent& last = st.events(st.events_size() - 1);
  EXPECT_EQ(last.kind(), "failed");
  EXPECT_THAT(last.message(), HasSubstr("loading the spec | INVALID_ARGUMENT: data.train"))
      << "the whole error output, on one line";
  for (const v1::WorkerInfo& w : coordinator_->ListWorkers()) EXPECT_EQ(w.state(), "idle");
  EXPECT_EQ(p.sink[0]->Stops(), 1);
  // It stays failed: no re-plan on the next ticks.
  Run(p, absl::Seconds(1));
  EXPECT_EQ(Job(p.job).state(), v1::FAILED);
  EXPECT_EQ(p.sink[0]->Assignments().size(), 1u);
}

TEST_F(CoordinatorTest, AFailedRankRecoversOnTheSameWorkersFromTheLastCommittedCheckpoint) {
  Placed p = PlaceOnTwoWorkers();
  Run(p, absl::Seconds(2));
  Steps(p, 1, 50);
  Checkpoint(p, 50);
  Run(p, absl::Seconds(3));
  Steps(p, 51, 60);
  Exit(p, 1, 1, "peer rank 0 closed the connection\nINTERNAL: gloo recv failed");
  v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RECOVERING);
  EXPECT_THAT(st.message(),
              HasSubstr("rank 1 (worker " + p.name[1] + ") exited with code 1 (training failed)"));
  EXPECT_THAT(st.message(), HasSubstr("gloo recv failed"));
  EXPECT_EQ(st.step(), 50) << "rolled back to the checkpoint";
  EXPECT_EQ(st.workers(1).state(), v1::LOST);
  const v1::JobEvent& event = st.events(st.events_size() - 1);
  EXPECT_EQ(event.kind(), "rank_failed");
  EXPECT_THAT(event.message(),
              HasSubstr("peer rank 0 closed the connection | INTERNAL: gloo recv failed"));
  EXPECT_EQ(p.sink[0]->Stops(), 1) << "the other rank is stopped";
  EXPECT_TRUE(LastStopDiscards(*p.sink[0])) << "its work since the checkpoint is rolled back";
  EXPECT_EQ(p.sink[1]->Stops(), 0) << "the failed rank's process is already gone";
  // The 3 s since the checkpoint are lost; the 2 s before it stay productive.
  const v1::Accounting& acc = st.accounting();
  EXPECT_NEAR(acc.lost_device_hours(), 2 * 3 / 3600.0, 1e-12);
  EXPECT_NEAR(acc.productive_device_hours(), 2 * 2 / 3600.0, 1e-12);
  EXPECT_EQ(acc.tokens(), 50 * 16384);
  for (const v1::WorkerInfo& w : coordinator_->ListWorkers()) {
    EXPECT_EQ(w.state(), "busy") << w.name() << " stays reserved for the job";
  }

  // The next tick re-plans on the same two workers (both alive) at epoch 2, from step 50.
  Run(p, absl::Milliseconds(500));
  st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.epoch(), 2);
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_EQ(p.sink[rank]->Assignments().size(), 2u);
    const v1::Assignment a = p.sink[rank]->Assignments().back();
    EXPECT_EQ(a.epoch(), 2);
    EXPECT_EQ(a.resume_step(), 50);
    EXPECT_EQ(a.store_prefix(), p.job + "/2");
  }
  Replaced(p);
  Ack(p.worker[0], p.sink[0]->Assignments().back());
  Ack(p.worker[1], p.sink[1]->Assignments().back());
  Steps(p, 51, 52);
  st = Job(p.job);
  EXPECT_EQ(st.step(), 52);
  EXPECT_EQ(st.message(), "training: step 52/300, loss 6.0000 (epoch 2, 2 workers)");
}

TEST_F(CoordinatorTest, AWorkerWhoseSessionEndedIsNotPlacedOnUntilItOpensOneAgain) {
  Placed p = PlaceOnTwoWorkers();
  FakeSink& s3 = NewSink();
  const std::string w3 = AddWorker("w3", &s3);  // a spare
  Steps(p, 1, 10);
  Checkpoint(p, 10);
  // Worker 1 is killed: its connection resets and its session ends at once, well before its lease
  // expires; the survivor's rank then fails on the dead peer.
  coordinator_->CloseSession(p.worker[1], p.sink[1]);
  Exit(p, 0, 1, "peer rank 1 closed the connection");
  ASSERT_EQ(Job(p.job).state(), v1::RECOVERING);
  // The re-plan (the lease of worker 1 has not expired: it still counts as alive) leaves it out.
  Heartbeat(p.worker[0]);
  Heartbeat(w3);
  clock_.Advance(absl::Milliseconds(500));
  coordinator_->Tick();
  v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.epoch(), 2);
  EXPECT_EQ(p.sink[1]->Assignments().size(), 1u) << "nothing new for the worker without a session";
  ASSERT_EQ(s3.Assignments().size(), 1u);
  EXPECT_EQ(s3.Assignments()[0].resume_step(), 10);
  for (const auto& r : st.workers()) EXPECT_NE(r.worker_id(), p.worker[1]);

  // A worker whose session opens again (it reconnected) is a candidate again: here the one it
  // takes the place of, w3, lost its session too, and w1's rank fails on it.
  FakeSink& again = NewSink();
  ASSERT_OK(coordinator_->OpenSession(p.worker[1], &again));
  coordinator_->CloseSession(w3, &s3);
  const v1::Assignment a1 = p.sink[0]->Assignments().back();
  v1::RankReport exit;
  exit.set_job_id(a1.job_id());
  exit.set_epoch(a1.epoch());
  exit.set_rank(a1.rank().rank());
  exit.set_event("exit");
  exit.set_exit_code(1);
  exit.set_detail("peer closed the connection");
  Send(p.worker[0], exit);
  ASSERT_EQ(Job(p.job).state(), v1::RECOVERING);
  RunAll({p.worker[0], p.worker[1], w3}, absl::Milliseconds(500));
  st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.epoch(), 3);
  EXPECT_EQ(again.Assignments().size(), 1u);
  EXPECT_EQ(s3.Assignments().size(), 1u);
}

TEST_F(CoordinatorTest, ReportsOfAnOldEpochOrOfARankTheWorkerDoesNotHoldChangeNothing) {
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 10);
  Placed epoch1 = p;
  Exit(p, 0, -9, "");  // killed by SIGKILL: recover
  EXPECT_THAT(Job(p.job).message(), HasSubstr("was killed by signal 9"));
  // While it recovers, epoch 1's reports are fenced off.
  Send(epoch1.worker[1], StepReport(epoch1, 1, 11, 1.0));
  Exit(epoch1, 1, 2, "bad input");
  EXPECT_EQ(Job(p.job).state(), v1::RECOVERING);
  Run(p, absl::Milliseconds(500));
  ASSERT_EQ(Job(p.job).epoch(), 2);
  Replaced(p);
  Steps(p, 1, 3);
  const v1::JobStatus before = Job(p.job);

  // Epoch 1 again, from the workers that held its ranks: a step, a validation, a checkpoint, a
  // bad-input exit and a success.
  v1::RankReport step = StepReport(epoch1, 0, 99, 0.5);
  step.set_epoch(1);
  Send(epoch1.worker[0], step);
  v1::RankReport val = ReportOf(epoch1, 0, "validation");
  val.set_epoch(1);
  val.set_step(99);
  val.set_main_loss(0.5);
  Send(epoch1.worker[0], val);
  v1::RankReport ckpt = ReportOf(epoch1, 0, "checkpoint");
  ckpt.set_epoch(1);
  ckpt.set_step(99);
  Send(epoch1.worker[0], ckpt);
  v1::RankReport bad = ReportOf(epoch1, 1, "exit");
  bad.set_epoch(1);
  bad.set_exit_code(2);
  Send(epoch1.worker[1], bad);
  v1::RankReport done = ReportOf(epoch1, 0, "exit");
  done.set_epoch(1);
  Send(epoch1.worker[0], done);
  // The current epoch, but a rank the sender does not hold, and an unknown job.
  Send(p.worker[1], StepReport(p, 0, 98, 0.25));
  v1::RankReport other = ReportOf(p, 0, "exit");
  other.set_exit_code(2);
  Send(p.worker[1], other);
  v1::RankReport unknown = StepReport(p, 0, 97, 0.25);
  unknown.set_job_id("job-404");
  Send(p.worker[0], unknown);

  const v1::JobStatus after = Job(p.job);
  EXPECT_EQ(after.state(), v1::RUNNING);
  EXPECT_EQ(after.epoch(), 2);
  EXPECT_EQ(after.step(), before.step());
  EXPECT_EQ(after.last_loss(), before.last_loss());
  EXPECT_EQ(after.progress().val_step(), 0);
  EXPECT_EQ(after.last_checkpoint_step(), -1);
  EXPECT_EQ(after.accounting().tokens(), 0);
  EXPECT_EQ(after.message(), before.message());
  for (int i = 0; i < 2; ++i) EXPECT_EQ(after.workers(i).state(), v1::TRAINING);
}

TEST_F(CoordinatorTest, ThreeRankFailuresWithoutANewCheckpointFailTheJob) {
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 10);
  Checkpoint(p, 10);
  for (int failure = 1; failure <= 2; ++failure) {
    Steps(p, 11, 12);
    Exit(p, failure % 2, 1, "diverged");
    ASSERT_EQ(Job(p.job).state(), v1::RECOVERING) << "failure " << failure;
    Run(p, absl::Milliseconds(500));
    ASSERT_EQ(Job(p.job).state(), v1::RUNNING) << "failure " << failure;
    Replaced(p);
  }
  EXPECT_EQ(Job(p.job).epoch(), 3);
  Steps(p, 11, 12);
  Exit(p, 0, 1, "loss is not finite at step 12\nstopping");
  const v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::FAILED);
  EXPECT_EQ(st.message(),
            "rank 0 of epoch 3 failed 3 times without reaching a new checkpoint: stopping");
  for (const v1::WorkerInfo& w : coordinator_->ListWorkers()) EXPECT_EQ(w.state(), "idle");
}

TEST_F(CoordinatorTest, ANewCheckpointResetsTheCountOfFailures) {
  Placed p = PlaceOnTwoWorkers();
  for (int failure = 1; failure <= 4; ++failure) {
    // Every epoch commits a newer checkpoint before a rank fails: never a crash loop.
    Steps(p, failure * 10 - 9, failure * 10);
    Checkpoint(p, failure * 10);
    Exit(p, 1, 1, "peer lost");
    ASSERT_EQ(Job(p.job).state(), v1::RECOVERING) << "failure " << failure;
    Run(p, absl::Milliseconds(500));
    ASSERT_EQ(Job(p.job).state(), v1::RUNNING) << "failure " << failure;
    Replaced(p);
    EXPECT_EQ(p.sink[0]->Assignments().back().resume_step(), failure * 10);
  }
  EXPECT_EQ(Job(p.job).epoch(), 5);
}

TEST_F(CoordinatorTest, AHungRankIsStoppedAndTheJobRecoversWithoutItsWorker) {
  Placed p = PlaceOnTwoWorkers();
  FakeSink& s3 = NewSink();
  const std::string w3 = AddWorker("w3", &s3);  // a spare: 3 workers give pipeline 2 no more ranks
  const std::vector<std::string> ids = {p.worker[0], p.worker[1], w3};
  RunAll(ids, absl::Seconds(2));
  Steps(p, 1, 10);
  Checkpoint(p, 10);
  RunAll(ids, absl::Seconds(3));
  Steps(p, 11, 13);
  Send(p.worker[1], HungReport(p, 1, 13));

  v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RECOVERING);
  EXPECT_EQ(st.step(), 10) << "rolled back to the checkpoint";
  EXPECT_EQ(st.workers(1).state(), v1::HUNG);
  EXPECT_EQ(st.workers(1).detail(),
            "rank 1 hung at step 13: no progress for 5.1s after step 13 (op 6), not waiting for a "
            "peer: the rank is stuck");
  EXPECT_EQ(st.placement().ranks(1).state(), v1::HUNG);
  EXPECT_THAT(st.message(), HasSubstr("rank 1 (worker " + p.name[1] + ") hung at step 13"));
  const v1::JobEvent& event = st.events(st.events_size() - 1);
  EXPECT_EQ(event.kind(), "rank_hung");
  EXPECT_EQ(event.epoch(), 1);
  EXPECT_EQ(event.message(), "rank 1 (worker " + p.name[1] +
                                 ") hung at step 13: no progress for 5.1s after step 13 (op 6), "
                                 "not waiting for a peer: the rank is stuck");
  // Both ranks are stopped: the hung process is alive and holds its device.
  EXPECT_EQ(p.sink[0]->Stops(), 1);
  EXPECT_EQ(p.sink[1]->Stops(), 1);
  EXPECT_EQ(LastStopReason(*p.sink[1]), "rank 1 of the job hung; re-planning");
  EXPECT_TRUE(LastStopDiscards(*p.sink[0])) << "a recovery kills the ranks at once";
  EXPECT_TRUE(LastStopDiscards(*p.sink[1]));
  EXPECT_EQ(s3.Stops(), 0);
  // The 3 s since the checkpoint are lost, like after a failed rank; the idle spare costs nothing.
  const v1::Accounting& acc = st.accounting();
  EXPECT_NEAR(acc.lost_device_hours(), 2 * 3 / 3600.0, 1e-12);
  EXPECT_NEAR(acc.productive_device_hours(), 2 * 2 / 3600.0, 1e-12);
  EXPECT_EQ(acc.tokens(), 10 * 16384);

  // The next tick re-plans on the healthy worker and the spare, from the checkpoint.
  RunAll(ids, absl::Milliseconds(500));
  st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.epoch(), 2);
  ASSERT_EQ(s3.Assignments().size(), 1u);
  EXPECT_EQ(s3.Assignments()[0].resume_step(), 10);
  ASSERT_EQ(p.sink[0]->Assignments().size(), 2u);
  EXPECT_EQ(p.sink[0]->Assignments().back().resume_step(), 10);
  EXPECT_EQ(p.sink[1]->Assignments().size(), 1u) << "no new rank where one hung";
  for (const v1::WorkerInfo& w : coordinator_->ListWorkers()) {
    EXPECT_EQ(w.state(), w.name() == p.name[1] ? "idle" : "busy") << w.name();
  }
  const std::vector<v1::JobEvent> replanned = EventsOf(p.job, "replanned");
  ASSERT_EQ(replanned.size(), 1u);
  EXPECT_THAT(replanned[0].message(),
              HasSubstr("; left out " + p.name[1] + " (a rank hung there)"));

  // A late report of the hung epoch (its hang seen twice, or a step) changes nothing.
  const v1::JobStatus before = Job(p.job);
  v1::RankReport stale = HungReport(p, 1, 13);
  stale.set_epoch(1);
  Send(p.worker[1], stale);
  const v1::JobStatus after = Job(p.job);
  EXPECT_EQ(after.state(), v1::RUNNING);
  EXPECT_EQ(after.epoch(), 2);
  EXPECT_EQ(EventsOf(p.job, "rank_hung").size(), 1u);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(after.workers(i).state(), before.workers(i).state());
}

TEST_F(CoordinatorTest, WithoutASpareAHungRanksWorkerIsUsedAgain) {
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 10);
  Checkpoint(p, 10);
  Send(p.worker[0], HungReport(p, 0, 12));
  EXPECT_EQ(Job(p.job).state(), v1::RECOVERING);
  EXPECT_EQ(Job(p.job).workers(0).state(), v1::HUNG);
  Run(p, absl::Milliseconds(500));
  const v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RUNNING) << "better on the same workers than not at all";
  EXPECT_EQ(st.epoch(), 2);
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_EQ(p.sink[rank]->Assignments().size(), 2u);
    EXPECT_EQ(p.sink[rank]->Assignments().back().resume_step(), 10);
  }
  const std::vector<v1::JobEvent> replanned = EventsOf(p.job, "replanned");
  ASSERT_EQ(replanned.size(), 1u);
  EXPECT_THAT(replanned[0].message(), Not(HasSubstr("left out")));
}

TEST_F(CoordinatorTest, HangsCountLikeFailuresTowardsACrashLoop) {
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 10);
  Checkpoint(p, 10);
  Send(p.worker[1], HungReport(p, 1, 12));
  Run(p, absl::Milliseconds(500));
  Replaced(p);
  Exit(p, 0, 1, "peer lost");
  Run(p, absl::Milliseconds(500));
  Replaced(p);
  ASSERT_EQ(Job(p.job).state(), v1::RUNNING);
  ASSERT_EQ(Job(p.job).epoch(), 3);
  Steps(p, 11, 12);
  Send(p.worker[1], HungReport(p, 1, 12));
  const v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::FAILED);
  EXPECT_EQ(st.message(),
            "rank 1 of epoch 3 failed 3 times without reaching a new checkpoint: no progress for "
            "5.1s after step 12 (op 6), not waiting for a peer: the rank is stuck");
  EXPECT_THAT(st.events(st.events_size() - 1).message(),
              HasSubstr("(the last: rank 1 (worker " + p.name[1] + ") hung at step 12)"));
  EXPECT_EQ(LastStopReason(*p.sink[1]), "job failed") << "the hung process is stopped";
  for (const v1::WorkerInfo& w : coordinator_->ListWorkers()) EXPECT_EQ(w.state(), "idle");
}

TEST_F(CoordinatorTest, OnlyTheExitReportEndsARankNotAHeartbeatSayingSo) {
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 2);
  // The worker's heartbeat may say DONE or LOST before its exit report arrives.
  for (v1::RankState said : {v1::DONE, v1::LOST}) {
    ASSERT_OK(coordinator_->HandleWorkerMessage(p.worker[1], RankHeartbeat(p.job, 1, said)));
    EXPECT_EQ(Job(p.job).workers(1).state(), v1::TRAINING) << v1::RankState_Name(said);
  }
  Exit(p, 1, 1, "peer lost");
  EXPECT_EQ(Job(p.job).state(), v1::RECOVERING);
}

TEST_F(CoordinatorTest, AHeartbeatsDetailOfARankWaitingForAPeerIsShown) {
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 2);
  const std::string waiting =
      "step 2/300; waiting for a peer for 4s (op 6, last collective #25 of group world2-g0)";
  v1::WorkerMessage hb = RankHeartbeat(p.job, 0, v1::TRAINING);
  v1::RankProgress* r = hb.mutable_heartbeat()->mutable_ranks(0);
  r->set_micro_batch(6);
  r->set_collective_seq(25);
  r->set_detail(waiting);
  ASSERT_OK(coordinator_->HandleWorkerMessage(p.worker[0], hb));
  v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.workers(0).state(), v1::TRAINING);
  EXPECT_EQ(st.workers(0).detail(), waiting);
  EXPECT_EQ(st.placement().ranks(0).detail(), waiting);
  // The next step report says where the rank is again.
  Steps(p, 3, 3);
  EXPECT_EQ(Job(p.job).workers(0).detail(), "step 3/300");
}

TEST_F(CoordinatorTest, RanksThatEndedWhileTheCoordinatorWasDownAreDecidedByTheirExitReports) {
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 20);
  Checkpoint(p, 20);
  coordinator_.reset();  // killed; meanwhile the ranks' processes fail (their store is gone)
  Open();
  FakeSink* sinks[2] = {&NewSink(), &NewSink()};
  std::string ids[2];
  for (int rank = 0; rank < 2; ++rank) {
    v1::RankProgress running;
    running.set_job_id(p.job);
    running.set_epoch(1);
    running.set_rank(rank);
    running.set_state(v1::LOST);
    ids[rank] = AddWorker(p.name[rank], sinks[rank], "n1", {running});
    EXPECT_EQ(sinks[rank]->Assignments().size(), 0u) << "not resent: the worker has it";
    EXPECT_EQ(sinks[rank]->Stops(), 0);
  }
  v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.workers(0).state(), v1::ACKNOWLEDGED);
  // The queued exit reports follow on the new sessions.
  v1::RankReport exit;
  exit.set_job_id(p.job);
  exit.set_epoch(1);
  exit.set_rank(0);
  exit.set_event("exit");
  exit.set_exit_code(1);
  exit.set_detail("coordinator store Add: failed to connect");
  Send(ids[0], exit);
  st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RECOVERING);
  EXPECT_THAT(st.message(), HasSubstr("failed to connect"));
  exit.set_rank(1);
  Send(ids[1], exit);  // fenced: the job is recovering
  clock_.Advance(absl::Milliseconds(100));
  coordinator_->Tick();
  st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.epoch(), 2);
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_EQ(sinks[rank]->Assignments().size(), 1u);
    EXPECT_EQ(sinks[rank]->Assignments()[0].resume_step(), 20);
  }
}

TEST_F(CoordinatorTest, ALostWorkerRollsTheStepBackToTheLastCheckpoint) {
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 20);
  Checkpoint(p, 20);
  Steps(p, 21, 25);
  for (int i = 0; i < 4; ++i) {  // rank 1's worker goes silent
    clock_.Advance(kLease);
    Heartbeat(p.worker[0]);
    coordinator_->Tick();
  }
  const v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RECOVERING);
  EXPECT_EQ(st.step(), 20);
  EXPECT_EQ(st.progress().eta_seconds(), 0);
}

// ---- Elastic attach ----

TEST_F(CoordinatorTest, AWorkerAttachingMidRunMakesAGrowPendingButNothingMovesBeforeTheCheckpoint) {
  CheckpointEvery(10);
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 5);
  FakeSink& s3 = NewSink();
  FakeSink& s4 = NewSink();
  const std::string w3 = AddWorker("w3", &s3);
  RunAll({p.worker[0], p.worker[1], w3}, absl::Seconds(1));
  // Three workers give no more ranks (pipeline 2: floor(3 / 2) = 1 rank per stage).
  EXPECT_TRUE(EventsOf(p.job, "grow_pending").empty());
  const std::string w4 = AddWorker("w4", &s4);
  EXPECT_EQ(EventsOf(p.job, "grow_pending").size(), 1u) << "recorded at the attach, not later";
  RunAll({p.worker[0], p.worker[1], w3, w4}, absl::Seconds(2));
  Steps(p, 6, 8);

  v1::JobStatus st = Job(p.job);
  const std::vector<v1::JobEvent> pending = EventsOf(p.job, "grow_pending");
  ASSERT_EQ(pending.size(), 1u) << "recorded once, not on every tick";
  EXPECT_EQ(pending[0].message(),
            "idle workers w3, w4 can join: the job grows from 2 to 4 ranks at its next checkpoint "
            "(step 10)");
  EXPECT_EQ(st.message(),
            "training: step 8/300, loss 6.0000 (epoch 1, 2 workers); grows to 4 ranks at its next "
            "checkpoint");
  EXPECT_EQ(st.epoch(), 1);
  EXPECT_EQ(st.placement().world_size(), 2);
  EXPECT_TRUE(s3.Assignments().empty());
  EXPECT_TRUE(s4.Assignments().empty());
  EXPECT_EQ(p.sink[0]->Stops(), 0);
  EXPECT_EQ(p.sink[1]->Stops(), 0);
  for (const v1::WorkerInfo& w : coordinator_->ListWorkers()) {
    if (w.name() == "w3" || w.name() == "w4") {
      EXPECT_EQ(w.state(), "idle") << w.name() << " is not reserved for the job";
    }
  }
}

TEST_F(CoordinatorTest, AtTheCheckpointAGrowingJobResumesOnMoreRanksOnANewEpoch) {
  CheckpointEvery(10);
  Placed p = PlaceOnTwoWorkers();
  RunAll({p.worker[0], p.worker[1]}, absl::Seconds(2));
  Steps(p, 1, 7);
  FakeSink* sinks[4] = {p.sink[0], p.sink[1], &NewSink(), &NewSink()};
  std::vector<std::string> ids = {p.worker[0], p.worker[1], AddWorker("w3", sinks[2]),
                                  AddWorker("w4", sinks[3])};
  RunAll(ids, absl::Seconds(1));
  Steps(p, 8, 10);
  ASSERT_EQ(Job(p.job).epoch(), 1);
  Checkpoint(p, 10);

  v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.state(), v1::RUNNING);
  EXPECT_EQ(st.epoch(), 2);
  EXPECT_EQ(st.step(), 10);
  EXPECT_EQ(st.last_checkpoint_step(), 10);
  EXPECT_EQ(st.placement().world_size(), 4);
  EXPECT_EQ(st.placement().expert_parallel(), 2);
  EXPECT_EQ(st.placement().data_parallel(), 1);
  EXPECT_THAT(st.message(), HasSubstr("placed on 4 workers (epoch 2)"));
  const v1::JobEvent& last = st.events(st.events_size() - 1);
  EXPECT_EQ(last.kind(), "grew");
  EXPECT_EQ(last.message(),
            "epoch 2: 4 ranks = pipeline 2 x expert-parallel 2 x data-parallel 1; grew from 2 "
            "ranks at the checkpoint at step 10 (w3, w4 joined); the ranks resume from that "
            "checkpoint");
  EXPECT_THAT(EventKinds(p.job), Not(Contains("replanned")));
  EXPECT_THAT(EventKinds(p.job), Not(Contains("rank_failed")));
  // The old ranks are stopped (epoch 1); every worker gets a rank of epoch 2 resuming at step 10.
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(sinks[i]->Stops(), 1) << i;
    EXPECT_EQ(sinks[i]->messages[sinks[i]->messages.size() - 2].stop().epoch(), 1)
        << "the stop comes before the new assignment";
  }
  EXPECT_EQ(sinks[2]->Stops(), 0);
  EXPECT_EQ(sinks[3]->Stops(), 0);
  std::vector<int64_t> ranks;
  for (FakeSink* sink : sinks) {
    ASSERT_FALSE(sink->Assignments().empty());
    const v1::Assignment a = sink->Assignments().back();
    EXPECT_EQ(a.epoch(), 2);
    EXPECT_EQ(a.resume_step(), 10);
    EXPECT_EQ(a.store_prefix(), p.job + "/2");
    ranks.push_back(a.rank().rank());
  }
  std::sort(ranks.begin(), ranks.end());
  EXPECT_EQ(ranks, (std::vector<int64_t>{0, 1, 2, 3}));
  for (const v1::WorkerInfo& w : coordinator_->ListWorkers()) EXPECT_EQ(w.state(), "busy");
  // Committed at the checkpoint: nothing uncommitted, nothing lost.
  v1::Accounting acc = st.accounting();
  EXPECT_EQ(acc.tokens(), 10 * 16384);
  EXPECT_EQ(acc.lost_device_hours(), 0);
  EXPECT_NEAR(acc.device_hours(), 2 * 3 / 3600.0, 1e-12)
      << "the job's 2 workers for 3 s; the idle ones are not charged before they join";
  EXPECT_DOUBLE_EQ(acc.productive_device_hours(), acc.device_hours());

  // Epoch 1's ranks go on until they are stopped: their reports are fenced off.
  v1::RankReport stale = StepReport(p, 0, 11, 0.5);
  stale.set_epoch(1);
  Send(p.worker[0], stale);
  EXPECT_EQ(Job(p.job).step(), 10);

  // The four ranks train: the time after the restart is charged for 4 devices.
  for (int i = 0; i < 4; ++i) Ack(ids[i], sinks[i]->Assignments().back());
  RunAll(ids, absl::Seconds(3));
  st = Job(p.job);
  EXPECT_NEAR(st.accounting().device_hours(), acc.device_hours() + 4 * 3 / 3600.0, 1e-12);
  EXPECT_NEAR(st.accounting().uncommitted_device_hours(), 4 * 3 / 3600.0, 1e-12);
  for (int i = 0; i < 4; ++i) {
    const v1::Assignment a = sinks[i]->Assignments().back();
    v1::RankReport r = StepReport(p, 0, 11, 4.5);
    r.set_epoch(2);
    r.set_rank(a.rank().rank());
    Send(ids[i], r);
  }
  // The checkpoint of step 20 is committed when all 4 ranks have acknowledged it.
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(Job(p.job).last_checkpoint_step(), 10) << i << " of 4 acknowledged";
    v1::RankReport r = ReportOf(p, 0, "checkpoint");
    r.set_epoch(2);
    r.set_rank(sinks[i]->Assignments().back().rank().rank());
    r.set_step(20);
    Send(ids[i], r);
  }
  st = Job(p.job);
  EXPECT_EQ(st.step(), 11);
  EXPECT_EQ(st.message(), "training: step 11/300, loss 4.5000 (epoch 2, 4 workers)");
  EXPECT_EQ(st.last_checkpoint_step(), 20);
  EXPECT_EQ(st.accounting().tokens(), 20 * 16384);
  EXPECT_EQ(st.epoch(), 2) << "at the largest world the planner gives, no further grow";
}

TEST_F(CoordinatorTest, NoGrowWhenThePlannerGivesNoMoreRanks) {
  // A third worker: pipeline 2 takes floor(3 / 2) = 1 rank per stage, so the world stays 2.
  CheckpointEvery(10);
  Placed p = PlaceOnTwoWorkers();
  FakeSink& s3 = NewSink();
  const std::string w3 = AddWorker("w3", &s3);
  RunAll({p.worker[0], p.worker[1], w3}, absl::Seconds(1));
  Steps(p, 1, 10);
  Checkpoint(p, 10);
  v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.epoch(), 1);
  EXPECT_EQ(st.last_checkpoint_step(), 10);
  EXPECT_TRUE(EventsOf(p.job, "grow_pending").empty());
  EXPECT_TRUE(s3.Assignments().empty());
  EXPECT_EQ(p.sink[0]->Stops() + p.sink[1]->Stops(), 0);
  EXPECT_EQ(st.message(), "training: step 10/300, loss 6.0000 (epoch 1, 2 workers)");
}

TEST_F(CoordinatorTest, NoGrowBeyondMaxWorkers) {
  CheckpointEvery(10, /*max_workers=*/2);
  Placed p = PlaceOnTwoWorkers();
  FakeSink& s3 = NewSink();
  FakeSink& s4 = NewSink();
  const std::string w3 = AddWorker("w3", &s3);
  const std::string w4 = AddWorker("w4", &s4);
  RunAll({p.worker[0], p.worker[1], w3, w4}, absl::Seconds(1));
  Steps(p, 1, 10);
  Checkpoint(p, 10);
  EXPECT_EQ(Job(p.job).epoch(), 1);
  EXPECT_TRUE(EventsOf(p.job, "grow_pending").empty());
  EXPECT_TRUE(s3.Assignments().empty());
  EXPECT_TRUE(s4.Assignments().empty());
}

TEST_F(CoordinatorTest, NoGrowAtTheLastStep) {
  CheckpointEvery(10);
  Placed p = PlaceOnTwoWorkers();
  Steps(p, 1, 295);
  FakeSink& s3 = NewSink();
  FakeSink& s4 = NewSink();
  const std::string w3 = AddWorker("w3", &s3);
  const std::string w4 = AddWorker("w4", &s4);
  RunAll({p.worker[0], p.worker[1], w3, w4}, absl::Seconds(1));
  // The next checkpoint is the last step's: nothing is announced.
  EXPECT_TRUE(EventsOf(p.job, "grow_pending").empty());
  Steps(p, 296, 300);
  Checkpoint(p, 300);
  EXPECT_EQ(Job(p.job).epoch(), 1);
  EXPECT_EQ(p.sink[0]->Stops() + p.sink[1]->Stops(), 0);
  Exit(p, 0, 0);
  Exit(p, 1, 0);
  EXPECT_EQ(Job(p.job).state(), v1::SUCCEEDED);
  EXPECT_TRUE(s3.Assignments().empty());
  EXPECT_TRUE(s4.Assignments().empty());
}

TEST_F(CoordinatorTest, NoGrowWhenTheJobHasNoCheckpointBeforeItsLastStep) {
  Placed p = PlaceOnTwoWorkers();  // checkpoint.every_steps 0: only at the end
  FakeSink& s3 = NewSink();
  FakeSink& s4 = NewSink();
  const std::string w3 = AddWorker("w3", &s3);
  const std::string w4 = AddWorker("w4", &s4);
  RunAll({p.worker[0], p.worker[1], w3, w4}, absl::Seconds(1));
  Steps(p, 1, 5);
  EXPECT_TRUE(EventsOf(p.job, "grow_pending").empty());
  EXPECT_THAT(Job(p.job).message(), Not(HasSubstr("grows")));
}

TEST_F(CoordinatorTest, IdleWorkersAreNotReservedAndTheGrowIsDecidedAgainAtTheCheckpoint) {
  CheckpointEvery(10);
  Placed p = PlaceOnTwoWorkers();
  FakeSink& s3 = NewSink();
  FakeSink& s4 = NewSink();
  const std::string w3 = AddWorker("w3", &s3);
  const std::string w4 = AddWorker("w4", &s4);
  RunAll({p.worker[0], p.worker[1], w3, w4}, absl::Seconds(1));
  Steps(p, 1, 5);
  ASSERT_EQ(EventsOf(p.job, "grow_pending").size(), 1u);
  // A second job takes the idle workers first.
  const std::string other = Submit();
  RunAll({p.worker[0], p.worker[1], w3, w4}, absl::Seconds(1));
  ASSERT_EQ(Job(other).state(), v1::RUNNING);
  EXPECT_EQ(s3.Assignments().back().job_id(), other);
  EXPECT_EQ(Job(p.job).message(), "training: step 5/300, loss 6.0000 (epoch 1, 2 workers)");
  Steps(p, 6, 10);
  Checkpoint(p, 10);
  const v1::JobStatus st = Job(p.job);
  EXPECT_EQ(st.epoch(), 1);
  EXPECT_EQ(st.last_checkpoint_step(), 10);
  EXPECT_EQ(p.sink[0]->Stops() + p.sink[1]->Stops(), 0);
  EXPECT_EQ(Job(other).epoch(), 1);
}

}  // namespace
}  // namespace dsv3::coordinator
