// Pipeline and expert parallelism in the trainer (trainer.h, engine/parallel/pipeline_executor.h,
// expert_parallel.h): P pipeline ranks x R ranks per stage (EP expert shards x DP replicas), laid
// out as the planner does (rank = stage x R + dp x EP + shard), on threads with the in-process
// communicator, train the same global batch as the single-process trainer and must give its
// per-step losses, gradient norms, expert loads and final parameters (fp32; only the summation
// order differs), for DualPipe, DualPipeV and 1F1B; every rank holds the same parameters; a
// checkpointed and resumed pipeline run equals the uninterrupted one bit for bit.
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
#include "gtest/gtest.h"

namespace dsv3::train {
namespace {

using parallel::ScheduleKind;
using testing::ScratchDir;
using testing::TinyConfig;

constexpr int64_t kSeqLen = 16;
constexpr int kSteps = 5;

struct Layout {
  ScheduleKind kind;
  int pp;
  int dp;
  int ep = 1;
};

class PipelineTrainerTest : public ::testing::TestWithParam<Layout> {
 protected:
  void SetUp() override {
    ASSERT_OK(testing::WriteSyntheticShard(dir_.Sub("train.bin"), 20000, 64, 11));
  }

  TrainerOptions Options() const {
    TrainerOptions o;
    o.model = TinyConfig();
    o.model.num_hidden_layers = 4;
    o.precision = model::Precision::kFp32;
    o.seq_len = kSeqLen;
    o.global_batch_tokens = 32 * kSeqLen;  // B = 32: 1 row per micro-batch and rank at 4 ranks
    o.micro_batches = 8;
    o.steps = 20;
    o.lr = 3e-3;
    o.min_lr = 3e-4;
    o.warmup_steps = 3;
    o.seed = 5;
    o.bias_update_speed = 0.01;
    o.grad_clip = 0.5;  // clipping on: the global norm must be the global batch's
    o.train_data = dir_.Sub("train.bin");
    o.threads = 1;
    return o;
  }

  ScratchDir dir_{"trainer_pp_test"};
};

struct RankRun {
  absl::Status status;
  std::vector<StepProgress> steps;
  std::vector<float> values;
  std::unique_ptr<Trainer> trainer;
};

// Runs pp x dp x ep ranks on threads: world rank r is stage r / R, shard r % ep of replica
// (r % R) / ep, R = dp x ep (the planner's layout).
std::vector<RankRun> RunRanks(const Layout& layout, TrainerOptions options,
                              const std::function<absl::Status(Trainer&, RankRun&)>& body) {
  const int per_stage = layout.dp * layout.ep;
  const int world = layout.pp * per_stage;
  options.schedule = layout.kind;
  std::vector<RankRun> runs(static_cast<size_t>(world));
  auto store = std::make_shared<parallel::InProcessStore>();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      RankRun& run = runs[static_cast<size_t>(r)];
      auto fail = [&](const absl::Status& s) { run.status = s; };
      parallel::CommunicatorOptions co;
      co.backend = parallel::Backend::kInProcess;
      co.rank = r;
      co.world_size = world;
      co.store = store;
      co.timeout = absl::Seconds(60);
      absl::StatusOr<std::unique_ptr<parallel::Communicator>> comm =
          parallel::CreateCommunicator(co);
      if (!comm.ok()) return fail(comm.status());
      TrainerOptions o = options;
      o.world = std::shared_ptr<parallel::Communicator>(std::move(*comm));
      if (world > 1) {
        const int stage = r / per_stage, j = r % per_stage;
        absl::StatusOr<std::unique_ptr<parallel::Communicator>> pipe = o.world->Split(j, stage);
        if (!pipe.ok()) return fail(pipe.status());
        absl::StatusOr<std::unique_ptr<parallel::Communicator>> mates = o.world->Split(stage, j);
        if (!mates.ok()) return fail(mates.status());
        absl::StatusOr<std::unique_ptr<parallel::Communicator>> ep =
            o.world->Split(r / layout.ep, r % layout.ep);
        if (!ep.ok()) return fail(ep.status());
        absl::StatusOr<std::unique_ptr<parallel::Communicator>> ep_backward =
            o.world->Split(r / layout.ep, r % layout.ep);
        if (!ep_backward.ok()) return fail(ep_backward.status());
        o.pipeline = std::move(*pipe);
        o.data_parallel = std::move(*mates);
        o.expert_parallel = std::move(*ep);
        o.expert_parallel_backward = std::move(*ep_backward);
      }
      absl::StatusOr<std::unique_ptr<Trainer>> trainer = Trainer::Create(o);
      if (!trainer.ok()) return fail(trainer.status());
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

double WorstTensorError(const model::ParameterLayout& layout, const std::vector<float>& want,
                        const std::vector<float>& got) {
  double worst = 0;
  for (const model::ParamInfo& p : layout.params()) {
    double num = 0, den = 0;
    for (int64_t i = p.offset; i < p.offset + p.size; ++i) {
      const double d = static_cast<double>(got[i]) - want[i];
      num += d * d;
      den += static_cast<double>(want[i]) * want[i];
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    EXPECT_LE(rel, 1e-4) << p.name;
    worst = std::max(worst, rel);
  }
  return worst;
}

TEST_P(PipelineTrainerTest, GivesTheSingleProcessLossesAndParameters) {
  const Layout layout = GetParam();
  const TrainerOptions options = Options();
  std::vector<RankRun> single = RunRanks({ScheduleKind::kOneFOneB, 1, 1}, options, TrainSteps);
  ASSERT_OK(single[0].status);
  std::vector<RankRun> ranks = RunRanks(layout, options, TrainSteps);
  const int world = layout.pp * layout.dp * layout.ep;
  for (int r = 0; r < world; ++r) ASSERT_OK(ranks[r].status) << "rank " << r;
  ASSERT_EQ(ranks[0].trainer->ep_size(), layout.ep);
  ASSERT_EQ(ranks[0].trainer->pp_size(), layout.pp);

  double worst_loss = 0;
  for (int r = 0; r < world; ++r) {
    SCOPED_TRACE(absl::StrCat("rank ", r));
    ASSERT_EQ(ranks[r].steps.size(), static_cast<size_t>(kSteps));
    for (int s = 0; s < kSteps; ++s) {
      const StepProgress& want = single[0].steps[s];
      const StepProgress& got = ranks[r].steps[s];
      worst_loss = std::max(worst_loss, std::abs(got.loss.loss - want.loss.loss) / want.loss.loss);
      EXPECT_NEAR(got.loss.loss, want.loss.loss, 1e-5 * want.loss.loss) << "step " << s;
      EXPECT_NEAR(got.loss.main_loss, want.loss.main_loss, 1e-5 * want.loss.main_loss);
      EXPECT_NEAR(got.loss.mtp_loss, want.loss.mtp_loss, 1e-5 * want.loss.mtp_loss);
      EXPECT_NEAR(got.loss.balance_loss, want.loss.balance_loss, 1e-5 * want.loss.balance_loss);
      EXPECT_NEAR(got.grad_norm, want.grad_norm, 1e-4 * want.grad_norm) << "step " << s;
      EXPECT_EQ(got.expert_loads, want.expert_loads) << "step " << s;
    }
    EXPECT_TRUE(ranks[r].values == ranks[0].values);  // every rank holds the same parameters
  }
  const double worst_param = WorstTensorError(single[0].trainer->model().parameters().layout,
                                              single[0].values, ranks[0].values);
  std::cout << parallel::ScheduleKindName(layout.kind) << " PP=" << layout.pp
            << " DP=" << layout.dp << " EP=" << layout.ep << ": largest relative loss difference " << worst_loss
            << ", largest per-tensor relative parameter difference " << worst_param << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, PipelineTrainerTest,
    ::testing::Values(Layout{ScheduleKind::kOneFOneB, 2, 1}, Layout{ScheduleKind::kOneFOneB, 4, 1},
                      Layout{ScheduleKind::kDualPipe, 2, 1}, Layout{ScheduleKind::kDualPipe, 4, 1},
                      Layout{ScheduleKind::kDualPipe, 2, 2}, Layout{ScheduleKind::kDualPipeV, 2, 1},
                      Layout{ScheduleKind::kDualPipeV, 4, 1},
                      Layout{ScheduleKind::kDualPipeV, 2, 2},
                      Layout{ScheduleKind::kOneFOneB, 1, 1, 2}, Layout{ScheduleKind::kOneFOneB, 1, 1, 4},
                      Layout{ScheduleKind::kDualPipe, 2, 1, 2},
                      Layout{ScheduleKind::kDualPipeV, 2, 1, 2},
                      Layout{ScheduleKind::kDualPipe, 2, 2, 2}),
    [](const auto& info) {
      const Layout& l = info.param;
      return absl::StrCat(l.kind == ScheduleKind::kOneFOneB   ? "OneFOneB"
                          : l.kind == ScheduleKind::kDualPipe ? "DualPipe"
                                                              : "DualPipeV",
                          "_PP", l.pp, "_DP", l.dp, "_EP", l.ep);
    });

using PipelineResumeTest = PipelineTrainerTest;

TEST_F(PipelineResumeTest, AResumedPipelineRunEqualsTheUninterruptedOneBitForBit) {
  const Layout layout{ScheduleKind::kDualPipe, 2, 1};
  TrainerOptions options = Options();
  std::vector<RankRun> straight = RunRanks(layout, options, TrainSteps);
  for (const RankRun& r : straight) ASSERT_OK(r.status);

  options.checkpoint_dir = dir_.Sub("ckpt");
  options.stop_after_step = 3;
  auto run_to_stop = [](Trainer& t, RankRun&) -> absl::Status {
    return t.Run(TrainerCallbacks{}).status();
  };
  for (const RankRun& r : RunRanks(layout, options, run_to_stop)) ASSERT_OK(r.status);
  absl::StatusOr<CommittedCheckpoint> latest = LatestCommitted(options.checkpoint_dir);
  ASSERT_OK(latest);
  EXPECT_EQ(latest->manifest.step, 3);
  EXPECT_EQ(latest->manifest.world_size, 2);

  options.stop_after_step = kSteps;
  std::vector<RankRun> second = RunRanks(layout, options, run_to_stop);
  for (int r = 0; r < 2; ++r) {
    ASSERT_OK(second[r].status);
    EXPECT_EQ(second[r].trainer->resumed_from(), latest->path);
    EXPECT_TRUE(second[r].values == straight[r].values) << "rank " << r;
  }
}

TEST_F(PipelineResumeTest, AScheduleThatCannotRunIsRejectedWithItsRule) {
  TrainerOptions options = Options();
  options.micro_batches = 2;  // DualPipe on 2 ranks needs C >= 4
  std::vector<RankRun> ranks = RunRanks({ScheduleKind::kDualPipe, 2, 1}, options, TrainSteps);
  EXPECT_EQ(ranks[0].status.code(), absl::StatusCode::kInvalidArgument) << ranks[0].status;
  EXPECT_NE(ranks[0].status.message().find("dualpipe"), std::string::npos) << ranks[0].status;
}

}  // namespace
}  // namespace dsv3::train
