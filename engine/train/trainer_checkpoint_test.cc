// Tests of what a single-process run checkpoints: model tensors under Hugging Face names (router
// biases included), the optimizer state, the rank state, retention, and the errors of restoring
// (another model config, a corrupt file, malformed tensors) -- each leaving the caller's state
// unchanged. No model forward or backward runs here.
#include "engine/train/trainer_checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "engine/train/checkpoint.h"
#include "engine/train/checkpoint_manifest.h"
#include "engine/train/data_loader.h"
#include "engine/train/trainer_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::train {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;
using testing::ScratchDir;
using testing::TinyConfig;

model::ParameterSet MakeParams(uint64_t seed) {
  model::ParameterSet params(model::ParameterLayout::Build(TinyConfig()));
  model::InitParameters(seed, 0.02, &params);
  for (const model::ParamInfo& p : params.layout.params()) {
    if (!p.trainable) {
      for (int64_t i = 0; i < p.size; ++i) params.values[p.offset + i] = -0.003f * (i + 1);
    }
  }
  return params;
}

AdamW TrainedOptimizer(model::ParameterSet* params, int steps) {
  AdamWConfig config;
  config.moments = MomentDType::kF32;
  absl::StatusOr<AdamW> adamw = AdamW::Create(params->layout, config);
  EXPECT_OK(adamw);
  SplitMix64 rng(3);
  for (int t = 0; t < steps; ++t) {
    for (float& g : params->grads) g = static_cast<float>(rng.Next() % 1000) * 1e-4f - 0.05f;
    EXPECT_OK(adamw->Step(kernels::CpuContext{}, 1e-3, params));
  }
  return *std::move(adamw);
}

RankState StateFor(int64_t step) {
  RankState s;
  s.tokens_seen = step * 256;
  s.data_position = step;
  s.extra = {{"seed", "1"}};
  return s;
}

void FlipByte(const std::string& path, int64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c = 0;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x40));
}

TEST(TrainerCheckpointTest, ModelTensorsRoundTripUnderHuggingFaceNamesAsF32) {
  ScratchDir dir("trainer_ckpt");
  const model::ParameterSet a = MakeParams(1);
  SafetensorsWriter writer;
  ASSERT_OK(AddModelTensors(a, &writer));
  ASSERT_OK(writer.WriteFile(dir.Sub("m.safetensors")));
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(dir.Sub("m.safetensors"));
  ASSERT_OK(reader);
  EXPECT_EQ(reader->tensors().size(), a.layout.params().size());
  ASSERT_OK(reader->Expect("model.layers.1.mlp.gate.e_score_correction_bias", DType::kF32, {4}));
  ASSERT_OK(reader->Expect("model.layers.2.mlp.gate.e_score_correction_bias", DType::kF32, {4}));
  ASSERT_OK(reader->Expect("lm_head.weight", DType::kF32, {64, 32}));
  model::ParameterSet b = MakeParams(2);
  const float* buffer = b.values.data();
  ASSERT_OK(LoadModelTensors(*reader, &b));
  EXPECT_EQ(a.values, b.values);
  EXPECT_EQ(b.values.data(), buffer) << "the values must be loaded into the model's own buffer";
}

TEST(TrainerCheckpointTest, MalformedModelTensorsAreDataLossAndChangeNothing) {
  ScratchDir dir("trainer_ckpt");
  const model::ParameterSet a = MakeParams(1);
  model::ParameterSet b = MakeParams(2);
  const std::vector<float> before = b.values;
  struct Case {
    std::string what;
    std::function<absl::Status(SafetensorsWriter*)> fill;
    std::string message;
  };
  const std::vector<float> zeros(64 * 32, 0.0f);
  const std::vector<Case> cases = {
      {"missing lm_head",
       [&](SafetensorsWriter* w) {
         for (const model::ParamInfo& p : a.layout.params()) {
           if (p.name == "lm_head.weight") continue;
           RETURN_IF_ERROR(
               w->Add(p.name, DType::kF32, p.shape, a.values.data() + p.offset, p.size * 4));
         }
         return absl::OkStatus();
       },
       "no tensor \"lm_head.weight\""},
      {"an extra tensor",
       [&](SafetensorsWriter* w) {
         RETURN_IF_ERROR(AddModelTensors(a, w));
         return w->Add("model.layers.9.mlp.gate.weight", DType::kF32, {4}, zeros.data(), 16);
       },
       "unexpected tensor \"model.layers.9.mlp.gate.weight\""},
      {"lm_head in BF16",
       [&](SafetensorsWriter* w) {
         for (const model::ParamInfo& p : a.layout.params()) {
           if (p.name == "lm_head.weight") {
             RETURN_IF_ERROR(w->Add(p.name, DType::kBF16, p.shape, zeros.data(), p.size * 2));
           } else {
             RETURN_IF_ERROR(
                 w->Add(p.name, DType::kF32, p.shape, a.values.data() + p.offset, p.size * 4));
           }
         }
         return absl::OkStatus();
       },
       "tensor \"lm_head.weight\" is BF16 [64, 32], expected F32 [64, 32]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    SafetensorsWriter writer;
    ASSERT_OK(c.fill(&writer));
    ASSERT_OK(writer.WriteFile(dir.Sub("bad.safetensors")));
    absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(dir.Sub("bad.safetensors"));
    ASSERT_OK(reader);
    EXPECT_THAT(LoadModelTensors(*reader, &b),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr(c.message)));
    EXPECT_EQ(b.values, before);
  }
}

TEST(TrainerCheckpointTest, SaveThenRestoreGivesBackParametersOptimizerAndState) {
  ScratchDir dir("trainer_ckpt");
  model::ParameterSet a = MakeParams(1);
  AdamW saved = TrainedOptimizer(&a, 3);
  absl::StatusOr<SavedCheckpoint> ck =
      SaveCheckpoint(dir.path(), 3, TinyConfig(), {{"micro_batches", 2}}, a, saved, StateFor(3),
                     /*keep=*/3);
  ASSERT_OK(ck);
  EXPECT_EQ(ck->path, dir.path() + "/step-00000003");
  absl::StatusOr<CommittedCheckpoint> latest = LatestCommitted(dir.path());
  ASSERT_OK(latest);
  EXPECT_EQ(latest->manifest.step, 3);
  EXPECT_EQ(latest->manifest.world_size, 1);
  EXPECT_EQ(latest->manifest.layout.at("micro_batches"), 2);

  model::ParameterSet b = MakeParams(2);
  absl::StatusOr<AdamW> restored = AdamW::Create(b.layout, saved.config());
  ASSERT_OK(restored);
  absl::StatusOr<RestoredCheckpoint> r =
      RestoreCheckpoint(latest->path, TinyConfig(), &b, &*restored);
  ASSERT_OK(r);
  EXPECT_EQ(r->step, 3);
  EXPECT_EQ(r->state, StateFor(3));
  EXPECT_EQ(b.values, a.values);
  EXPECT_EQ(restored->step(), 3);
  for (const model::ParamInfo& p : a.layout.params()) {
    if (!p.trainable) continue;
    ASSERT_EQ(restored->ExpAvg(p), saved.ExpAvg(p)) << p.name;
    ASSERT_EQ(restored->ExpAvgSq(p), saved.ExpAvgSq(p)) << p.name;
  }
}

TEST(TrainerCheckpointTest, RetentionKeepsTheNewestCheckpoints) {
  ScratchDir dir("trainer_ckpt");
  model::ParameterSet a = MakeParams(1);
  AdamW adamw = TrainedOptimizer(&a, 0);
  for (int64_t step : {1, 2, 3}) {
    ASSERT_OK(SaveCheckpoint(dir.path(), step, TinyConfig(), {}, a, adamw, StateFor(step), 2));
  }
  absl::StatusOr<std::vector<CommittedCheckpoint>> all = ListCommitted(dir.path());
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].manifest.step, 2);
  EXPECT_EQ((*all)[1].manifest.step, 3);
}

TEST(TrainerCheckpointTest, RestoringIntoAnotherModelConfigIsRefusedNamingTheField) {
  ScratchDir dir("trainer_ckpt");
  model::ParameterSet a = MakeParams(1);
  AdamW adamw = TrainedOptimizer(&a, 1);
  ASSERT_OK(SaveCheckpoint(dir.path(), 1, TinyConfig(), {}, a, adamw, StateFor(1), 3));
  ModelConfig other = TinyConfig();
  other.hidden_size = 48;
  model::ParameterSet b(model::ParameterLayout::Build(other));
  absl::StatusOr<AdamW> fresh = AdamW::Create(b.layout, adamw.config());
  ASSERT_OK(fresh);
  EXPECT_THAT(RestoreCheckpoint(dir.path() + "/step-00000001", other, &b, &*fresh),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("model_config.hidden_size: checkpoint 32, job 48")));
  EXPECT_EQ(fresh->step(), 0);
}

TEST(TrainerCheckpointTest, ACorruptFileIsDataLossNamingItAndNothingIsLoaded) {
  for (const std::string file : {"rank-0.safetensors", "rank-0-optim.safetensors"}) {
    SCOPED_TRACE(file);
    ScratchDir dir("trainer_ckpt");
    model::ParameterSet a = MakeParams(1);
    AdamW adamw = TrainedOptimizer(&a, 2);
    ASSERT_OK(SaveCheckpoint(dir.path(), 2, TinyConfig(), {}, a, adamw, StateFor(2), 3));
    const std::string ckpt = dir.path() + "/step-00000002";
    FlipByte(ckpt + "/" + file, static_cast<int64_t>(fs::file_size(ckpt + "/" + file)) - 5);
    model::ParameterSet b = MakeParams(2);
    const std::vector<float> before = b.values;
    absl::StatusOr<AdamW> fresh = AdamW::Create(b.layout, adamw.config());
    ASSERT_OK(fresh);
    EXPECT_THAT(RestoreCheckpoint(ckpt, TinyConfig(), &b, &*fresh),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr(file)));
    EXPECT_EQ(b.values, before);
    EXPECT_EQ(fresh->step(), 0);
  }
}

TEST(TrainerCheckpointTest, AnOptimizerStepThatDisagreesWithTheManifestIsDataLoss) {
  ScratchDir dir("trainer_ckpt");
  model::ParameterSet a = MakeParams(1);
  AdamW adamw = TrainedOptimizer(&a, 2);  // optimizer at step 2, checkpoint says 5
  ASSERT_OK(SaveCheckpoint(dir.path(), 5, TinyConfig(), {}, a, adamw, StateFor(5), 3));
  model::ParameterSet b = MakeParams(2);
  absl::StatusOr<AdamW> fresh = AdamW::Create(b.layout, adamw.config());
  ASSERT_OK(fresh);
  EXPECT_THAT(RestoreCheckpoint(dir.path() + "/step-00000005", TinyConfig(), &b, &*fresh),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("is at step 2")));
}

TEST(TrainerCheckpointTest, SavingACommittedStepAgainReplacesIt) {
  // A run resumed from an earlier checkpoint writes its own state of the step, not the state the
  // run before it left there.
  ScratchDir dir("trainer_ckpt");
  model::ParameterSet a = MakeParams(1);
  AdamW adamw = TrainedOptimizer(&a, 1);
  ASSERT_OK(SaveCheckpoint(dir.path(), 1, TinyConfig(), {}, a, adamw, StateFor(1), 3));
  model::ParameterSet b = MakeParams(2);
  AdamW b_adamw = TrainedOptimizer(&b, 1);
  ASSERT_OK(SaveCheckpoint(dir.path(), 1, TinyConfig(), {}, b, b_adamw, StateFor(1), 3));
  model::ParameterSet c = MakeParams(3);
  absl::StatusOr<AdamW> fresh = AdamW::Create(c.layout, adamw.config());
  ASSERT_OK(fresh);
  ASSERT_OK(RestoreCheckpoint(dir.path() + "/step-00000001", TinyConfig(), &c, &*fresh).status());
  EXPECT_EQ(c.values, b.values);
}

TEST(TrainerCheckpointTest, AStaleEpochCannotReplaceTheStepANewerEpochCommitted) {
  // The service's ranks save under their placement's epoch: a rank of epoch 1 still running after
  // the job was re-planned (epoch 2) cannot overwrite what epoch 2 committed; the reverse replaces.
  ScratchDir dir("trainer_ckpt");
  model::ParameterSet a = MakeParams(1);
  AdamW adamw = TrainedOptimizer(&a, 1);
  ASSERT_OK(SaveCheckpoint(dir.path(), 1, TinyConfig(), {}, a, adamw, StateFor(1), 3,
                           /*epoch=*/2));
  model::ParameterSet stale = MakeParams(2);
  AdamW stale_adamw = TrainedOptimizer(&stale, 1);
  EXPECT_THAT(SaveCheckpoint(dir.path(), 1, TinyConfig(), {}, stale, stale_adamw, StateFor(1), 3,
                             /*epoch=*/1),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("by epoch 2")));
  model::ParameterSet c = MakeParams(3);
  absl::StatusOr<AdamW> fresh = AdamW::Create(c.layout, adamw.config());
  ASSERT_OK(fresh);
  ASSERT_OK(RestoreCheckpoint(dir.path() + "/step-00000001", TinyConfig(), &c, &*fresh).status());
  EXPECT_EQ(c.values, a.values) << "epoch 2's checkpoint stands";

  ASSERT_OK(SaveCheckpoint(dir.path(), 1, TinyConfig(), {}, stale, stale_adamw, StateFor(1), 3,
                           /*epoch=*/3));
  ASSERT_OK(RestoreCheckpoint(dir.path() + "/step-00000001", TinyConfig(), &c, &*fresh).status());
  EXPECT_EQ(c.values, stale.values) << "a newer epoch replaces it";
}

}  // namespace
}  // namespace dsv3::train
