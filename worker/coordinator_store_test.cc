// Tests of CoordinatorStore against a real coordinator served in-process on 127.0.0.1 (a job made
// RUNNING at epoch 1 by attaching two fake workers): the Store contract, fencing of other epochs
// and jobs, the bearer token, an unreachable coordinator, and Gloo ranks bootstrapping through it.
#include "worker/coordinator_store.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_matchers.h"
#include "coordinator/clock.h"
#include "coordinator/coordinator.h"
#include "coordinator/services.h"
#include "engine/parallel/communicator.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"

namespace dsv3::worker {
namespace {

using ::dsv3::testing::IsOkAndHolds;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

class NullSink : public coordinator::SessionSink {
 public:
  void Send(const v1::CoordinatorMessage&) override {}
  void Close(const absl::Status&) override {}
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

constexpr char kSpec[] = R"({
  "name": "store-test", "stage": "pre_training",
  "model": { "vocab_size": 4096, "hidden_size": 256, "num_hidden_layers": 4,
    "first_k_dense_replace": 1, "intermediate_size": 512, "moe_intermediate_size": 128,
    "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4,
    "topk_group": 2, "routed_scaling_factor": 2.5, "num_attention_heads": 4,
    "q_lora_rank": 128, "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32,
    "v_head_dim": 64, "num_nextn_predict_layers": 1, "rms_norm_eps": 1e-6, "rope_theta": 10000 },
  "parallel": { "pipeline_parallel": 2, "expert_parallel": 2, "schedule": "dualpipe",
    "micro_batches": 8, "min_workers": 2, "max_workers": 2 },
  "train": { "seq_len": 128, "global_batch_tokens": 16384, "steps": 300, "lr": 3e-3 },
  "precision": "fp8",
  "data": { "train": "train.bin", "val": "val.bin" },
  "accounting": { "price_per_device_hour": 2.0 }
})";

class CoordinatorStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/coordinator_store_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    WriteShard(dir_ + "/train.bin", 20000);
    WriteShard(dir_ + "/val.bin", 5000);
    coordinator::CoordinatorOptions options;
    options.state_dir = dir_ + "/state";
    options.clock = &clock_;  // frozen: leases never expire during a test
    absl::StatusOr<std::unique_ptr<coordinator::Coordinator>> c =
        coordinator::Coordinator::Create(options);
    ASSERT_OK(c);
    coordinator_ = std::move(*c);
    absl::StatusOr<std::string> job = coordinator_->SubmitJob(kSpec, dir_);
    ASSERT_OK(job);
    job_ = *job;
    for (const char* name : {"w1", "w2"}) {
      v1::AttachRequest attach;
      attach.set_name(name);
      attach.set_node("n1");
      attach.set_device("cpu");
      absl::StatusOr<v1::AttachResponse> r = coordinator_->Attach(attach, "ipv4:127.0.0.1:1");
      ASSERT_OK(r);
      ASSERT_OK(coordinator_->OpenSession(r->worker_id(), &sink_));
    }
    coordinator_->Tick();
    absl::StatusOr<v1::JobStatus> status = coordinator_->GetJob(job_, 0);
    ASSERT_OK(status);
    ASSERT_EQ(status->state(), v1::RUNNING);
    ASSERT_EQ(status->epoch(), 1);
    StartServer("");
  }

  void TearDown() override {
    server_.reset();
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
  }

  void StartServer(const std::string& token) {
    server_.reset();
    coordinator::ServerOptions options;
    options.auth_token = token;
    absl::StatusOr<std::unique_ptr<coordinator::CoordinatorServer>> s =
        coordinator::CoordinatorServer::Start(coordinator_.get(), options);
    ASSERT_OK(s);
    server_ = std::move(*s);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
  }

  std::shared_ptr<CoordinatorStore> Store(int64_t epoch = 1, const std::string& token = "") {
    CoordinatorStoreOptions options;
    options.job_id = job_;
    options.epoch = epoch;
    options.auth_token = token;
    options.rpc_timeout = absl::Seconds(5);
    return std::make_shared<CoordinatorStore>(channel_, options);
  }

  std::string dir_;
  std::string job_;
  coordinator::ManualClock clock_;
  NullSink sink_;
  std::unique_ptr<coordinator::Coordinator> coordinator_;
  std::unique_ptr<coordinator::CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(CoordinatorStoreTest, AValueThatWasSetIsReadBackByteForByte) {
  auto store = Store();
  const std::string value("a\0b\xff", 4);
  ASSERT_OK(store->Set("k", value));
  EXPECT_THAT(store->Get("k", absl::ZeroDuration()), IsOkAndHolds(value));
}

TEST_F(CoordinatorStoreTest, GetWaitsForAKeySetLater) {
  auto store = Store();
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(100));
    ASSERT_OK(Store()->Set("late", "v"));
  });
  EXPECT_THAT(store->Get("late", absl::Seconds(10)), IsOkAndHolds("v"));
  setter.join();
}

TEST_F(CoordinatorStoreTest, GetOfAMissingKeyTimesOutNamingIt) {
  const absl::Time start = absl::Now();
  EXPECT_THAT(Store()->Get("never", absl::Milliseconds(200)),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       AllOf(HasSubstr("coordinator store Get 'never'"), HasSubstr("never"))));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST_F(CoordinatorStoreTest, WaitNamesTheMissingKeys) {
  auto store = Store();
  ASSERT_OK(store->Set("a", "1"));
  EXPECT_THAT(store->Wait({"a", "b", "c"}, absl::Milliseconds(100)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("b, c")));
  ASSERT_OK(store->Set("b", "1"));
  ASSERT_OK(store->Set("c", "1"));
  EXPECT_OK(store->Wait({"a", "b", "c"}, absl::ZeroDuration()));
}

TEST_F(CoordinatorStoreTest, AddCountsAndReadsBackAsDecimal) {
  auto store = Store();
  EXPECT_THAT(store->Add("n", 3), IsOkAndHolds(3));
  EXPECT_THAT(store->Add("n", 4), IsOkAndHolds(7));
  EXPECT_THAT(store->Get("n", absl::ZeroDuration()), IsOkAndHolds("7"));
}

TEST_F(CoordinatorStoreTest, AnotherEpochIsRefused) {
  EXPECT_THAT(Store(/*epoch=*/2)->Set("k", "v"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("epoch 2")));
}

TEST_F(CoordinatorStoreTest, AnUnknownJobIsNotFound) {
  CoordinatorStoreOptions options;
  options.job_id = "no-such-job";
  options.epoch = 1;
  CoordinatorStore store(channel_, options);
  EXPECT_THAT(store.Get("k", absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no-such-job")));
}

TEST_F(CoordinatorStoreTest, BadKeysAreRejectedBeforeAnyCall) {
  EXPECT_THAT(Store()->Set("", "v"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Store()->Set("k", std::string(parallel::Store::kMaxValueBytes + 1, 'x')),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(CoordinatorStoreTest, TheBearerTokenIsSentWhenTheCoordinatorWantsOne) {
  StartServer("s3cret");
  EXPECT_THAT(Store()->Set("k", "v"), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_OK(Store(1, "s3cret")->Set("k", "v"));
}

TEST_F(CoordinatorStoreTest, AnUnreachableCoordinatorFailsWithinTheTimeout) {
  const int port = server_->port();
  server_.reset();  // nothing listens there now
  CoordinatorStoreOptions options;
  options.job_id = job_;
  options.epoch = 1;
  options.rpc_timeout = absl::Milliseconds(500);
  CoordinatorStore store(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()),
      options);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> got = store.Get("k", absl::Milliseconds(300));
  EXPECT_THAT(got.status().code(),
              ::testing::AnyOf(absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded))
      << got.status();
  EXPECT_THAT(store.Set("k", "v").code(), ::testing::AnyOf(absl::StatusCode::kUnavailable,
                                                           absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST_F(CoordinatorStoreTest, GlooRanksBootstrapThroughTheCoordinatorAndAllReduce) {
  constexpr int kRanks = 2;
  std::vector<int64_t> sums(kRanks, -1);
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      parallel::CommunicatorOptions options;
      options.backend = parallel::Backend::kGloo;
      options.rank = r;
      options.world_size = kRanks;
      options.store = Store();
      options.timeout = absl::Seconds(20);
      absl::StatusOr<std::unique_ptr<parallel::Communicator>> comm =
          parallel::CreateCommunicator(options);
      ASSERT_OK(comm);
      int64_t x = r + 1;
      ASSERT_OK((*comm)->AllReduce(&x, &x, 1, parallel::DataType::kInt64)->Wait(absl::Seconds(30)));
      sums[r] = x;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_THAT(sums, ::testing::Each(3));
}

}  // namespace
}  // namespace dsv3::worker
