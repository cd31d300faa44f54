// Tests of the training loop on a tiny model and synthetic shards: gradient accumulation (1, 2
// and 4 micro-batches give the same steps), bit-exact resume from a checkpoint, the bias update
// once per step from every micro-batch's loads, validation, the checkpoint and validation cadence,
// and the errors (bad options, bad data, a checkpoint of another job, a corrupt checkpoint).
#include "engine/train/trainer.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "engine/train/checkpoint.h"
#include "engine/train/trainer_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::train {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ScratchDir;
using testing::TinyConfig;

constexpr int64_t kSeqLen = 16;

class TrainerTest : public ::testing::Test {
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
    o.val_tokens = 12 * kSeqLen;
    o.train_data = dir_.Sub("train.bin");
    o.val_data = dir_.Sub("val.bin");
    o.threads = 2;
    return o;
  }

  static std::unique_ptr<Trainer> MustCreate(const TrainerOptions& o) {
    absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
    EXPECT_OK(t);
    return t.ok() ? *std::move(t) : nullptr;
  }

  ScratchDir dir_{"trainer_test"};
};

// ||a - b|| / ||a|| per tensor, and the worst element, for failure messages.
struct TensorDiff {
  double relative = 0;
  std::string where;
};
TensorDiff WorstTensor(const model::ParameterSet& a, const model::ParameterSet& b) {
  TensorDiff worst;
  for (const model::ParamInfo& p : a.layout.params()) {
    double num = 0, den = 0, max_err = 0;
    int64_t max_i = 0;
    for (int64_t i = p.offset; i < p.offset + p.size; ++i) {
      const double d = double(a.values[i]) - b.values[i];
      num += d * d;
      den += double(a.values[i]) * a.values[i];
      if (std::abs(d) > max_err) {
        max_err = std::abs(d);
        max_i = i - p.offset;
      }
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    if (rel >= worst.relative) {
      worst.relative = rel;
      worst.where =
          absl::StrCat(p.name, " (shape ", ShapeToString(p.shape), ") element ", max_i, ": ",
                       a.values[p.offset + max_i], " vs ", b.values[p.offset + max_i]);
    }
  }
  return worst;
}

TEST_F(TrainerTest, OneTwoAndFourMicroBatchesGiveTheSameSteps) {
  std::vector<std::vector<model::LossTerms>> losses;
  std::vector<std::unique_ptr<Trainer>> trainers;
  for (int m : {1, 2, 4}) {
    TrainerOptions o = Options();
    o.micro_batches = m;
    o.steps = 2;
    o.warmup_steps = 1;
    o.val_data.clear();
    // Routing counts are integers: a near-tie that one split breaks differently would move a bias
    // by 2 * gamma. The bias update has its own test; here the biases stay at 0.
    o.bias_update_speed = 0;
    trainers.push_back(MustCreate(o));
    ASSERT_NE(trainers.back(), nullptr);
    losses.emplace_back();
    for (int s = 0; s < 2; ++s) {
      absl::StatusOr<StepProgress> p = trainers.back()->Step();
      ASSERT_OK(p);
      losses.back().push_back(p->loss);
    }
  }
  for (size_t k = 1; k < losses.size(); ++k) {
    for (int s = 0; s < 2; ++s) {
      SCOPED_TRACE(absl::StrCat("micro_batches ", k == 1 ? 2 : 4, " step ", s + 1));
      const model::LossTerms& a = losses[0][s];
      const model::LossTerms& b = losses[k][s];
      EXPECT_NEAR(b.loss, a.loss, 1e-6 * std::abs(a.loss));
      EXPECT_NEAR(b.main_loss, a.main_loss, 1e-6 * std::abs(a.main_loss));
      EXPECT_NEAR(b.mtp_loss, a.mtp_loss, 1e-6 * std::abs(a.mtp_loss));
      EXPECT_NEAR(b.balance_loss, a.balance_loss, 1e-6 * std::abs(a.balance_loss) + 1e-12);
    }
    const TensorDiff d =
        WorstTensor(trainers[0]->model().parameters(), trainers[k]->model().parameters());
    EXPECT_LT(d.relative, 1e-5) << "worst tensor: " << d.where;
    std::cout << "micro_batches " << (k == 1 ? 2 : 4) << " vs 1: step-2 loss relative difference "
              << std::abs(losses[k][1].loss - losses[0][1].loss) / losses[0][1].loss
              << ", worst tensor relative difference " << d.relative << " (" << d.where << ")\n";
  }
  // The steps did train: the parameters moved away from the initial ones.
  absl::StatusOr<std::unique_ptr<Trainer>> fresh = Trainer::Create(Options());
  ASSERT_OK(fresh);
  EXPECT_GT(WorstTensor(trainers[0]->model().parameters(), (*fresh)->model().parameters()).relative,
            1e-3);
}

// fp32 is the contract; bf16 (BF16 moments) and fp8 are deterministic on the CPU too.
class TrainerResumeTest : public TrainerTest,
                          public ::testing::WithParamInterface<model::Precision> {};

TEST_P(TrainerResumeTest, ResumingFromACheckpointContinuesBitForBit) {
  TrainerOptions o = Options();
  o.precision = GetParam();
  o.val_every_steps = 4;
  o.checkpoint_every_steps = 0;

  // 20 steps straight.
  o.checkpoint_dir = dir_.Sub("straight");
  std::unique_ptr<Trainer> straight = MustCreate(o);
  ASSERT_NE(straight, nullptr);
  std::vector<model::LossTerms> straight_losses;
  TrainerCallbacks record;
  record.on_step = [&](const StepProgress& p) { straight_losses.push_back(p.loss); };
  ASSERT_OK(straight->Run(record));
  ASSERT_EQ(straight_losses.size(), 20u);

  // 10 steps, stop (a checkpoint at 10), then a new Trainer resumes and does the other 10.
  o.checkpoint_dir = dir_.Sub("split");
  TrainerOptions first_half = o;
  first_half.stop_after_step = 10;
  {
    std::unique_ptr<Trainer> t = MustCreate(first_half);
    ASSERT_NE(t, nullptr);
    absl::StatusOr<TrainSummary> s = t->Run({});
    ASSERT_OK(s);
    EXPECT_EQ(s->last_step, 10);
    ASSERT_TRUE(s->last_checkpoint.has_value());
    EXPECT_EQ(s->last_checkpoint->step, 10);
  }
  std::unique_ptr<Trainer> resumed = MustCreate(o);
  ASSERT_NE(resumed, nullptr);
  EXPECT_EQ(resumed->step(), 10);
  EXPECT_EQ(resumed->tokens_seen(), 10 * o.global_batch_tokens);
  EXPECT_THAT(resumed->resumed_from(), HasSubstr("step-00000010"));
  std::vector<model::LossTerms> resumed_losses;
  record.on_step = [&](const StepProgress& p) { resumed_losses.push_back(p.loss); };
  absl::StatusOr<TrainSummary> s = resumed->Run(record);
  ASSERT_OK(s);
  EXPECT_EQ(s->first_step, 10);
  EXPECT_EQ(s->last_step, 20);
  ASSERT_EQ(resumed_losses.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    SCOPED_TRACE(absl::StrCat("step ", 11 + i));
    const model::LossTerms& a = straight_losses[10 + i];
    const model::LossTerms& b = resumed_losses[i];
    EXPECT_EQ(std::memcmp(&a.loss, &b.loss, sizeof(double)), 0) << a.loss << " vs " << b.loss;
    EXPECT_EQ(std::memcmp(&a.main_loss, &b.main_loss, sizeof(double)), 0);
    EXPECT_EQ(std::memcmp(&a.mtp_loss, &b.mtp_loss, sizeof(double)), 0);
    EXPECT_EQ(std::memcmp(&a.balance_loss, &b.balance_loss, sizeof(double)), 0);
  }
  const model::ParameterSet& pa = straight->model().parameters();
  const model::ParameterSet& pb = resumed->model().parameters();
  ASSERT_EQ(pa.values.size(), pb.values.size());
  int64_t biases = 0;
  for (const model::ParamInfo& p : pa.layout.params()) {
    if (!p.trainable) ++biases;
    for (int64_t i = p.offset; i < p.offset + p.size; ++i) {
      ASSERT_EQ(std::memcmp(&pa.values[i], &pb.values[i], sizeof(float)), 0)
          << p.name << " element " << i - p.offset << ": " << pa.values[i] << " vs "
          << pb.values[i];
    }
  }
  EXPECT_EQ(biases, 2);
  // The router biases did move (the bias update ran), so their equality means something.
  int nonzero = 0;
  for (const char* name : {"model.layers.1.mlp.gate.e_score_correction_bias",
                           "model.layers.2.mlp.gate.e_score_correction_bias"}) {
    const float* bias = pa.values.data() + pa.layout.OffsetOf(name);
    for (int e = 0; e < 4; ++e) nonzero += bias[e] != 0.0f;
  }
  EXPECT_GT(nonzero, 0);
}

INSTANTIATE_TEST_SUITE_P(Precisions, TrainerResumeTest,
                         ::testing::Values(model::Precision::kFp32, model::Precision::kBf16,
                                           model::Precision::kFp8),
                         [](const ::testing::TestParamInfo<model::Precision>& info) {
                           return std::string(model::PrecisionName(info.param));
                         });

TEST_F(TrainerTest, TheBiasUpdateRunsOncePerStepFromTheLoadsOfAllMicroBatches) {
  TrainerOptions o = Options();
  o.micro_batches = 4;
  const float gamma = static_cast<float>(o.bias_update_speed);
  std::unique_ptr<Trainer> t = MustCreate(o);
  ASSERT_NE(t, nullptr);
  model::ParameterSet& params = t->model().parameters();
  const ModelConfig c = o.model;
  const int64_t experts = c.n_routed_experts;
  const int64_t rows = o.global_batch_tokens / o.seq_len;
  const std::vector<std::string> names = {"model.layers.1.mlp.gate.e_score_correction_bias",
                                          "model.layers.2.mlp.gate.e_score_correction_bias"};
  ASSERT_EQ(t->model().num_moe_layers(), 2);
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE(absl::StrCat("step ", step + 1));
    std::vector<std::vector<float>> before;
    for (const std::string& n : names)
      before.emplace_back(params.value(n), params.value(n) + experts);
    absl::StatusOr<StepProgress> p = t->Step();
    ASSERT_OK(p);
    ASSERT_EQ(p->expert_loads.size(), static_cast<size_t>(2 * experts));
    double worst_ratio = 0;
    for (int64_t l = 0; l < 2; ++l) {
      const int64_t* load = p->expert_loads.data() + l * experts;
      int64_t sum = 0, max = 0;
      for (int64_t e = 0; e < experts; ++e) {
        sum += load[e];
        max = std::max(max, load[e]);
      }
      // Every (token, slot) of all four micro-batches is counted once: B*T*K in the main MoE
      // layer, B*(T-1)*K in the MTP layer (its last position has no target).
      const int64_t positions = l == 0 ? o.seq_len : o.seq_len - 1;
      EXPECT_EQ(sum, rows * positions * c.num_experts_per_tok) << "MoE layer " << l;
      worst_ratio = std::max(worst_ratio, static_cast<double>(max) * experts / sum);
      // b += gamma * sign(mean - load), applied once (not once per micro-batch).
      const double mean = static_cast<double>(sum) / experts;
      const float* after = params.value(names[l]);
      for (int64_t e = 0; e < experts; ++e) {
        const float sign = mean > load[e] ? 1.0f : mean < load[e] ? -1.0f : 0.0f;
        EXPECT_FLOAT_EQ(after[e], before[l][e] + gamma * sign)
            << "layer " << l << " expert " << e << " load " << load[e] << " mean " << mean;
      }
    }
    EXPECT_DOUBLE_EQ(p->load_max_over_mean, worst_ratio);
  }
}

TEST_F(TrainerTest, ValidationIsTheMeanOverTheValidationRowsAndChangesNothing) {
  TrainerOptions o = Options();
  std::unique_ptr<Trainer> t = MustCreate(o);
  ASSERT_NE(t, nullptr);
  ASSERT_OK(t->Step());
  const std::vector<float> values = t->model().parameters().values;
  absl::StatusOr<ValidationResult> v = t->Validate();
  ASSERT_OK(v);
  EXPECT_EQ(v->step, 1);
  EXPECT_EQ(v->rows, 12);
  EXPECT_EQ(v->tokens, 12 * kSeqLen);
  EXPECT_EQ(t->model().parameters().values, values);
  for (int64_t x : t->model().expert_loads()) EXPECT_EQ(x, 0);

  // The reference: one Run over the 12 rows (windows 0..11 of the val shard) at once.
  absl::StatusOr<std::unique_ptr<TokenShard>> shard = TokenShard::Open(o.val_data);
  ASSERT_OK(shard);
  std::vector<int32_t> tokens(12 * (kSeqLen + 1));
  for (int64_t r = 0; r < 12; ++r) {
    (*shard)->Read(r * kSeqLen, absl::MakeSpan(tokens).subspan(r * (kSeqLen + 1), kSeqLen + 1));
  }
  model::RunOptions run;
  run.backward = false;
  run.count_loads = false;
  const int64_t v_size = o.model.vocab_size;
  std::vector<float> logits(12 * kSeqLen * v_size), mtp_logits(12 * (kSeqLen - 1) * v_size);
  run.logits = logits.data();
  run.mtp_logits = mtp_logits.data();
  absl::StatusOr<model::LossTerms> ref = t->model().Run({tokens.data(), 12, kSeqLen}, run);
  ASSERT_OK(ref);
  EXPECT_NEAR(v->loss.main_loss, ref->main_loss, 1e-6 * ref->main_loss);
  EXPECT_NEAR(v->loss.loss, ref->loss, 1e-6 * ref->loss);
  EXPECT_EQ(t->model().parameters().values, values);
  // Accuracies: the argmax of each head against its target, counted here independently.
  auto accuracy = [&](const std::vector<float>& lg, int64_t per_row, int64_t shift) {
    int64_t hits = 0;
    for (int64_t r = 0; r < 12; ++r) {
      for (int64_t i = 0; i < per_row; ++i) {
        const float* x = lg.data() + (r * per_row + i) * v_size;
        int64_t best = 0;
        for (int64_t j = 1; j < v_size; ++j) best = x[j] > x[best] ? j : best;
        hits += best == tokens[r * (kSeqLen + 1) + i + shift];
      }
    }
    return double(hits) / (12 * per_row);
  };
  ASSERT_GT(o.model.num_nextn_predict_layers, 0);
  EXPECT_DOUBLE_EQ(v->next_token_accuracy, accuracy(logits, kSeqLen, 1));
  EXPECT_DOUBLE_EQ(v->mtp_next_next_accuracy, accuracy(mtp_logits, kSeqLen - 1, 2));
}

TEST_F(TrainerTest, RunCheckpointsAndValidatesOnItsCadenceAndAtTheEnd) {
  TrainerOptions o = Options();
  o.steps = 7;
  o.checkpoint_dir = dir_.Sub("ckpt");
  o.checkpoint_every_steps = 3;
  o.checkpoint_keep = 2;
  o.val_every_steps = 2;
  std::unique_ptr<Trainer> t = MustCreate(o);
  ASSERT_NE(t, nullptr);
  std::vector<int64_t> steps, validations, checkpoints;
  TrainerCallbacks cb;
  cb.on_step = [&](const StepProgress& p) {
    steps.push_back(p.step);
    EXPECT_EQ(p.steps, 7);
    EXPECT_EQ(p.tokens_seen, p.step * o.global_batch_tokens);
    EXPECT_GT(p.tokens_per_second, 0);
    EXPECT_GT(p.grad_norm, 0);
    EXPECT_GE(p.load_max_over_mean, 1.0);
    EXPECT_DOUBLE_EQ(p.lr, LearningRate({o.lr, o.min_lr, o.warmup_steps, o.steps}, p.step - 1));
  };
  cb.on_validation = [&](const ValidationResult& v) { validations.push_back(v.step); };
  cb.on_checkpoint = [&](const CheckpointEvent& e) { checkpoints.push_back(e.step); };
  absl::StatusOr<TrainSummary> s = t->Run(cb);
  ASSERT_OK(s);
  EXPECT_THAT(steps, ElementsAre(1, 2, 3, 4, 5, 6, 7));
  EXPECT_THAT(validations, ElementsAre(2, 4, 6, 7));
  EXPECT_THAT(checkpoints, ElementsAre(3, 6, 7));
  ASSERT_TRUE(s->final_validation.has_value());
  EXPECT_EQ(s->final_validation->step, 7);
  EXPECT_EQ(s->tokens_seen, 7 * o.global_batch_tokens);
  absl::StatusOr<std::vector<CommittedCheckpoint>> kept = ListCommitted(o.checkpoint_dir);
  ASSERT_OK(kept);
  ASSERT_EQ(kept->size(), 2u);
  EXPECT_EQ((*kept)[0].manifest.step, 6);
  EXPECT_EQ((*kept)[1].manifest.step, 7);

  // Running the finished job again trains nothing and writes nothing.
  std::unique_ptr<Trainer> again = MustCreate(o);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->step(), 7);
  absl::StatusOr<TrainSummary> s2 = again->Run({});
  ASSERT_OK(s2);
  EXPECT_EQ(s2->tokens_this_run, 0);
  EXPECT_FALSE(s2->last_checkpoint.has_value());
}

TEST_F(TrainerTest, TheStopFlagEndsAfterTheCurrentStepWithACheckpoint) {
  TrainerOptions o = Options();
  o.checkpoint_dir = dir_.Sub("ckpt");
  std::unique_ptr<Trainer> t = MustCreate(o);
  ASSERT_NE(t, nullptr);
  std::atomic<bool> stop{false};
  TrainerCallbacks cb;
  cb.on_step = [&](const StepProgress& p) {
    if (p.step == 4) stop = true;
  };
  absl::StatusOr<TrainSummary> s = t->Run(cb, &stop);
  ASSERT_OK(s);
  EXPECT_TRUE(s->stopped);
  EXPECT_EQ(s->last_step, 4);
  ASSERT_TRUE(s->last_checkpoint.has_value());
  EXPECT_EQ(s->last_checkpoint->step, 4);
}

TEST_F(TrainerTest, TrainingLowersTheLossOnALearnableStream) {
  TrainerOptions o = Options();
  o.steps = 30;
  o.lr = 1e-2;
  o.min_lr = 1e-3;
  std::unique_ptr<Trainer> t = MustCreate(o);
  ASSERT_NE(t, nullptr);
  absl::StatusOr<ValidationResult> before = t->Validate();
  ASSERT_OK(before);
  absl::StatusOr<TrainSummary> s = t->Run({});
  ASSERT_OK(s);
  ASSERT_TRUE(s->final_validation.has_value());
  EXPECT_NEAR(before->loss.main_loss, std::log(64.0), 0.1);  // about uniform at initialisation
  EXPECT_LT(s->final_validation->loss.main_loss, before->loss.main_loss - 0.5);
}

// --- errors ------------------------------------------------------------------------------------

TEST_F(TrainerTest, BadOptionsAreRejectedNamingTheField) {
  TrainerOptions o = Options();
  o.global_batch_tokens = 100;
  EXPECT_THAT(Trainer::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("global_batch_tokens=100")));
  o = Options();
  o.warmup_steps = 21;
  EXPECT_THAT(Trainer::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("warmup_steps=21")));
  o = Options();
  o.val_tokens = 100;
  EXPECT_THAT(Trainer::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("val_tokens=100")));
  o = Options();
  o.train_data = dir_.Sub("missing.bin");
  EXPECT_THAT(Trainer::Create(o), StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.bin")));
}

TEST_F(TrainerTest, ATokenOutsideTheVocabularyIsRejectedAtCreate) {
  TrainerOptions o = Options();
  o.model.vocab_size = 32;  // the shard holds ids up to 63
  EXPECT_THAT(Trainer::Create(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocab")));
}

TEST_F(TrainerTest, AValidationShardTooSmallForValTokensIsRejected) {
  TrainerOptions o = Options();
  o.val_tokens = 1000 * kSeqLen;
  EXPECT_THAT(Trainer::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("val_tokens=16000")));
}

// Every file under `dir` with its size and modification time, to show nothing was written.
std::vector<std::string> Snapshot(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    out.push_back(absl::StrCat(e.path().string(), " ",
                               e.is_regular_file() ? fs::file_size(e.path()) : 0, " ",
                               e.last_write_time().time_since_epoch().count()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

class TrainerResumeErrorTest : public TrainerTest {
 protected:
  // A job checkpointed at step 2 under ckpt/.
  TrainerOptions Checkpointed() {
    TrainerOptions o = Options();
    o.checkpoint_dir = dir_.Sub("ckpt");
    o.stop_after_step = 2;
    std::unique_ptr<Trainer> t = MustCreate(o);
    EXPECT_NE(t, nullptr);
    if (t != nullptr) {
      EXPECT_OK(t->Run({}));
    }
    o.stop_after_step = 0;
    return o;
  }
};

TEST_F(TrainerResumeErrorTest, AnotherModelConfigIsRefusedAndNothingIsWritten) {
  TrainerOptions o = Checkpointed();
  const std::vector<std::string> before = Snapshot(o.checkpoint_dir);
  o.model.hidden_size = 48;
  EXPECT_THAT(Trainer::Create(o),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("model_config.hidden_size: checkpoint 32, job 48")));
  EXPECT_EQ(Snapshot(o.checkpoint_dir), before);
}

TEST_F(TrainerResumeErrorTest, AnotherSeedOrBatchIsRefused) {
  TrainerOptions o = Checkpointed();
  TrainerOptions other = o;
  other.seed = 6;
  EXPECT_THAT(Trainer::Create(other),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("seed=5")));
  other = o;
  other.global_batch_tokens = 16 * kSeqLen;
  EXPECT_THAT(Trainer::Create(other), StatusIs(absl::StatusCode::kFailedPrecondition,
                                               HasSubstr("global_batch_tokens=128")));
  // Another precision keeps other moments: fp32 -> bf16 is refused by the optimizer state.
  other = o;
  other.precision = model::Precision::kBf16;
  EXPECT_THAT(Trainer::Create(other),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("the precision changed")));
  // The number of micro-batches is a layout choice: resuming with another one is fine.
  other = o;
  other.micro_batches = 4;
  EXPECT_OK(Trainer::Create(other));
}

TEST_F(TrainerResumeErrorTest, ACorruptCheckpointIsDataLossNamingTheFileAndNothingIsWritten) {
  TrainerOptions o = Checkpointed();
  const std::string file = o.checkpoint_dir + "/step-00000002/rank-0.safetensors";
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(fs::file_size(file)) - 3;
    f.seekg(at);
    char c = 0;
    f.get(c);
    f.seekp(at);
    f.put(static_cast<char>(c ^ 0x40));
  }
  const std::vector<std::string> before = Snapshot(o.checkpoint_dir);
  EXPECT_THAT(Trainer::Create(o),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank-0.safetensors")));
  EXPECT_EQ(Snapshot(o.checkpoint_dir), before);
}

TEST_F(TrainerResumeErrorTest, ADamagedNewestManifestIsNotSilentlySkipped) {
  TrainerOptions o = Checkpointed();
  {
    std::ofstream f(o.checkpoint_dir + "/step-00000002/MANIFEST.json", std::ios::trunc);
    f << "{ not json";
  }
  const std::vector<std::string> before = Snapshot(o.checkpoint_dir);
  EXPECT_THAT(Trainer::Create(o),
              StatusIs(absl::StatusCode::kDataLoss,
                       ::testing::AllOf(HasSubstr("step-00000002"), HasSubstr("is damaged"),
                                        HasSubstr("from scratch"))));
  EXPECT_EQ(Snapshot(o.checkpoint_dir), before);
}

}  // namespace
}  // namespace dsv3::train
