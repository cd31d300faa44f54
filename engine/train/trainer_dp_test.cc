// Data parallelism with ZeRO-1 (trainer.h, zero_optimizer.h, data_parallel_checkpoint.h): D ranks
// on threads with the in-process communicator train the same global batch as the single-process
// trainer and must give its per-step losses and final parameters (fp32; only the summation order
// differs); replicas hold bit-identical parameters; a checkpointed and resumed D-rank run equals
// the uninterrupted one bit for bit; a checkpoint resumes on another world size (resharded).
#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/in_process_store.h"
#include "engine/train/checkpoint.h"
#include "engine/train/trainer.h"
#include "engine/train/trainer_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::train {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;
using testing::ScratchDir;
using testing::TinyConfig;

constexpr int64_t kSeqLen = 16;
constexpr int kSteps = 5;

class DataParallelTrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(testing::WriteSyntheticShard(dir_.Sub("train.bin"), 20000, 64, 11));
    ASSERT_OK(testing::WriteSyntheticShard(dir_.Sub("val.bin"), 3000, 64, 12));
  }

  TrainerOptions Options() const {
    TrainerOptions o;
    o.model = TinyConfig();
    o.precision = model::Precision::kFp32;
    o.seq_len = kSeqLen;
    o.global_batch_tokens = 8 * kSeqLen;  // B = 8
    o.micro_batches = 2;
    o.steps = 20;
    o.lr = 3e-3;
    o.min_lr = 3e-4;
    o.warmup_steps = 3;
    o.seed = 5;
    o.bias_update_speed = 0.01;
    o.grad_clip = 0.5;  // clipping on: the global norm must be the global batch's
    o.val_tokens = 8 * kSeqLen;
    o.train_data = dir_.Sub("train.bin");
    o.val_data = dir_.Sub("val.bin");
    o.threads = 1;
    return o;
  }

  ScratchDir dir_{"trainer_dp_test"};
};

// What one rank saw: per-step progress, final parameters, the status of the whole run.
struct RankRun {
  absl::Status status;
  std::vector<StepProgress> steps;
  std::vector<float> values;
  std::unique_ptr<Trainer> trainer;
};

// Runs `world` ranks on threads, each creating an in-process communicator and a Trainer with
// `options` and calling `body` on it; returns every rank's record.
std::vector<RankRun> RunRanks(int world, const TrainerOptions& options,
                              const std::function<absl::Status(Trainer&, RankRun&)>& body) {
  std::vector<RankRun> runs(static_cast<size_t>(world));
  auto store = std::make_shared<parallel::InProcessStore>();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      RankRun& run = runs[static_cast<size_t>(r)];
      parallel::CommunicatorOptions co;
      co.backend = parallel::Backend::kInProcess;
      co.rank = r;
      co.world_size = world;
      co.store = store;
      co.timeout = absl::Seconds(60);
      absl::StatusOr<std::unique_ptr<parallel::Communicator>> comm =
          parallel::CreateCommunicator(co);
      if (!comm.ok()) {
        run.status = comm.status();
        return;
      }
      TrainerOptions o = options;
      o.data_parallel = std::shared_ptr<parallel::Communicator>(std::move(*comm));
      absl::StatusOr<std::unique_ptr<Trainer>> trainer = Trainer::Create(o);
      if (!trainer.ok()) {
        run.status = trainer.status();
        return;
      }
      run.trainer = *std::move(trainer);
      run.status = body(*run.trainer, run);
      run.values = run.trainer->model().parameters().values;
    });
  }
  for (std::thread& t : threads) t.join();
  return runs;
}

absl::Status TrainSteps(Trainer& trainer, RankRun& run) {
  for (int s = 0; s < kSteps; ++s) {
    absl::StatusOr<StepProgress> p = trainer.Step();
    if (!p.ok()) return p.status();
    run.steps.push_back(*p);
  }
  return absl::OkStatus();
}

// Per tensor ||got - want|| / ||want||; fails naming the worst tensor, its worst element and index.
// Returns the largest per-tensor relative error (logged by the caller).
double ExpectParametersNear(const model::ParameterLayout& layout, const std::vector<float>& want,
                            const std::vector<float>& got, double tolerance) {
  EXPECT_EQ(want.size(), got.size());
  if (want.size() != got.size()) return INFINITY;
  double largest = 0;
  for (const model::ParamInfo& p : layout.params()) {
    double num = 0, den = 0, worst = 0;
    int64_t worst_i = 0;
    for (int64_t i = p.offset; i < p.offset + p.size; ++i) {
      const double d = static_cast<double>(got[i]) - want[i];
      num += d * d;
      den += static_cast<double>(want[i]) * want[i];
      if (std::abs(d) > worst) worst = std::abs(d), worst_i = i - p.offset;
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    largest = std::max(largest, rel);
    EXPECT_LE(rel, tolerance) << p.name << " (" << p.size << " elements): relative error " << rel
                              << ", worst element " << worst_i << " off by " << worst << " (want "
                              << want[p.offset + worst_i] << ", got " << got[p.offset + worst_i]
                              << ")";
  }
  return largest;
}

class EquivalenceTest : public DataParallelTrainerTest,
                        public ::testing::WithParamInterface<int> {};

TEST_P(EquivalenceTest, DRanksGiveTheSingleProcessLossesAndParameters) {
  const int world = GetParam();
  const TrainerOptions options = Options();
  std::vector<RankRun> single = RunRanks(1, options, TrainSteps);
  ASSERT_OK(single[0].status);
  std::vector<RankRun> ranks = RunRanks(world, options, TrainSteps);
  for (int r = 0; r < world; ++r) ASSERT_OK(ranks[r].status) << "rank " << r;

  const model::ParameterLayout& layout = single[0].trainer->model().parameters().layout;
  double worst_loss = 0;
  for (int r = 0; r < world; ++r) {
    SCOPED_TRACE(absl::StrCat("rank ", r, " of ", world));
    ASSERT_EQ(ranks[r].steps.size(), static_cast<size_t>(kSteps));
    for (int s = 0; s < kSteps; ++s) {
      const StepProgress& want = single[0].steps[s];
      const StepProgress& got = ranks[r].steps[s];
      worst_loss = std::max(worst_loss, std::abs(got.loss.loss - want.loss.loss) / want.loss.loss);
      EXPECT_NEAR(got.loss.loss, want.loss.loss, 1e-5 * std::abs(want.loss.loss)) << "step " << s;
      EXPECT_NEAR(got.loss.main_loss, want.loss.main_loss, 1e-5 * std::abs(want.loss.main_loss));
      EXPECT_NEAR(got.loss.mtp_loss, want.loss.mtp_loss, 1e-5 * std::abs(want.loss.mtp_loss));
      EXPECT_NEAR(got.grad_norm, want.grad_norm, 1e-4 * want.grad_norm) << "step " << s;
      EXPECT_EQ(got.expert_loads, want.expert_loads) << "step " << s;
    }
    // The replicas are bit-identical (the all-gather hands every rank the owners' values).
    EXPECT_TRUE(ranks[r].values == ranks[0].values);
  }
  const double worst_param = ExpectParametersNear(layout, single[0].values, ranks[0].values, 1e-4);
  std::cout << "D=" << world << ": largest relative loss difference " << worst_loss
            << ", largest per-tensor relative parameter difference " << worst_param << "\n";
  // Optimizer state is sharded: each rank keeps about 1/D of it.
  const int64_t total = layout.total_size();
  for (int r = 0; r < world; ++r) {
    const ZeroAdamW* zero = ranks[r].trainer->zero_optimizer();
    ASSERT_NE(zero, nullptr);
    EXPECT_EQ(zero->shard_size(), (total + world - 1) / world);
    EXPECT_EQ(static_cast<int64_t>(zero->ExpAvg().size()), zero->shard_end() - zero->shard_begin());
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, EquivalenceTest, ::testing::Values(2, 4),
                         [](const auto& info) { return absl::StrCat("D", info.param); });

TEST_F(DataParallelTrainerTest, ValidationIsTheSameOnEveryRankAndMatchesOneProcess) {
  const TrainerOptions options = Options();
  auto validate = [](Trainer& t, RankRun& run) -> absl::Status {
    RETURN_IF_ERROR(TrainSteps(t, run));
    absl::StatusOr<ValidationResult> v = t.Validate();
    if (!v.ok()) return v.status();
    StepProgress p;  // carry the val loss in a StepProgress for the comparison
    p.loss = v->loss;
    run.steps.push_back(p);
    return absl::OkStatus();
  };
  std::vector<RankRun> single = RunRanks(1, options, validate);
  std::vector<RankRun> ranks = RunRanks(2, options, validate);
  ASSERT_OK(single[0].status);
  for (const RankRun& r : ranks) {
    ASSERT_OK(r.status);
    EXPECT_NEAR(r.steps.back().loss.main_loss, single[0].steps.back().loss.main_loss,
                1e-4 * single[0].steps.back().loss.main_loss);
    EXPECT_EQ(r.steps.back().loss.main_loss, ranks[0].steps.back().loss.main_loss);
  }
}

TEST_F(DataParallelTrainerTest, AResumedRunEqualsTheUninterruptedOneBitForBit) {
  TrainerOptions options = Options();
  std::vector<RankRun> straight = RunRanks(2, options, TrainSteps);
  for (const RankRun& r : straight) ASSERT_OK(r.status);

  options.checkpoint_dir = dir_.Sub("ckpt");
  options.val_data.clear();
  options.stop_after_step = 3;
  auto run_to_stop = [](Trainer& t, RankRun&) -> absl::Status {
    return t.Run(TrainerCallbacks{}).status();
  };
  std::vector<RankRun> first = RunRanks(2, options, run_to_stop);
  for (const RankRun& r : first) ASSERT_OK(r.status);
  absl::StatusOr<CommittedCheckpoint> latest = LatestCommitted(options.checkpoint_dir);
  ASSERT_OK(latest);
  EXPECT_EQ(latest->manifest.step, 3);
  EXPECT_EQ(latest->manifest.world_size, 2);
  EXPECT_EQ(latest->manifest.files.size(), 6u);

  options.stop_after_step = kSteps;
  std::vector<RankRun> second = RunRanks(2, options, run_to_stop);
  for (int r = 0; r < 2; ++r) {
    ASSERT_OK(second[r].status);
    EXPECT_EQ(second[r].trainer->resumed_from(), latest->path);
    EXPECT_EQ(second[r].trainer->step(), kSteps);
    EXPECT_TRUE(second[r].values == straight[r].values) << "rank " << r;
    EXPECT_EQ(second[r].trainer->zero_optimizer()->ExpAvgSq(),
              straight[r].trainer->zero_optimizer()->ExpAvgSq());
  }

  // Another world size resumes too: the optimizer state is resharded (2 -> 4 ranks), and the run
  // continues the same trajectory up to summation order.
  options.checkpoint_dir = dir_.Sub("ckpt4");
  options.stop_after_step = 3;
  for (const RankRun& r : RunRanks(2, options, run_to_stop)) ASSERT_OK(r.status);
  options.stop_after_step = kSteps;
  std::vector<RankRun> four = RunRanks(4, options, run_to_stop);
  for (int r = 0; r < 4; ++r) {
    ASSERT_OK(four[r].status) << "rank " << r;
    EXPECT_EQ(four[r].trainer->step(), kSteps);
    EXPECT_TRUE(four[r].values == four[0].values);
  }
  const model::ParameterLayout& layout = straight[0].trainer->model().parameters().layout;
  std::cout << "resumed on 4 ranks from 2: largest per-tensor relative parameter difference "
            << ExpectParametersNear(layout, straight[0].values, four[0].values, 1e-4) << "\n";
  // The resharded moments are the straight run's (the 4 shards concatenated vs the 2).
  std::vector<float> straight_m, four_m;
  for (const RankRun& r : straight) {
    const std::vector<float> m = r.trainer->zero_optimizer()->ExpAvgSq();
    straight_m.insert(straight_m.end(), m.begin(), m.end());
  }
  for (const RankRun& r : four) {
    const std::vector<float> m = r.trainer->zero_optimizer()->ExpAvgSq();
    four_m.insert(four_m.end(), m.begin(), m.end());
  }
  ASSERT_EQ(straight_m.size(), four_m.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < four_m.size(); ++i) {
    num += (double(four_m[i]) - straight_m[i]) * (double(four_m[i]) - straight_m[i]);
    den += double(straight_m[i]) * straight_m[i];
  }
  EXPECT_LT(std::sqrt(num / den), 1e-3);
  // And back down to 2 ranks (a job re-planned on fewer workers) from the 4-rank checkpoint.
  options.stop_after_step = kSteps + 2;
  for (const RankRun& r : RunRanks(2, options, run_to_stop)) {
    ASSERT_OK(r.status);
    EXPECT_EQ(r.trainer->step(), kSteps + 2);
  }
  options.stop_after_step = 0;
  absl::StatusOr<std::unique_ptr<Trainer>> one = Trainer::Create(options);
  EXPECT_THAT(one, StatusIs(absl::StatusCode::kFailedPrecondition,
                            HasSubstr("resuming a multi-rank checkpoint in one process")));
}

TEST_F(DataParallelTrainerTest, ABatchThatDoesNotSplitAcrossRanksIsRejected) {
  TrainerOptions options = Options();
  options.global_batch_tokens = 6 * kSeqLen;  // B = 6, M = 2: not divisible by 2 x 4
  std::vector<RankRun> ranks = RunRanks(4, options, TrainSteps);
  EXPECT_THAT(ranks[0].status, StatusIs(absl::StatusCode::kInvalidArgument,
                                        HasSubstr("x data-parallel world_size=4")));
}

}  // namespace
}  // namespace dsv3::train
