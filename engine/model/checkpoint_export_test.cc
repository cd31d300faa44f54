// Tests for checkpoint export (checkpoint_export.h): committed checkpoints of one and two ranks
// (written with engine/train/checkpoint.h) assembled, written as a model directory and loaded
// back; replicas that disagree, tensors no rank holds, extra or mistyped tensors, and directories
// that are not committed checkpoints.
#include "engine/model/checkpoint_export.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "engine/model/model_io.h"
#include "engine/train/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::model {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::IsOk;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using train::DType;

ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab_size = 30;
  c.hidden_size = 8;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 1;
  c.intermediate_size = 12;
  c.moe_intermediate_size = 4;
  c.n_routed_experts = 4;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 1;
  c.topk_group = 1;
  c.routed_scaling_factor = 2.5;
  c.num_attention_heads = 2;
  c.q_lora_rank = 0;
  c.kv_lora_rank = 4;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 2;
  c.v_head_dim = 4;
  c.num_nextn_predict_layers = 1;
  return c;
}

std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) /
                       (std::string("export_") + info->test_suite_name() + "." + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

ParameterSet RandomParameters(const ModelConfig& config, uint32_t seed) {
  ParameterSet p(ParameterLayout::Build(config));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  for (float& v : p.values) v = normal(rng);
  return p;
}

// One rank's model file: the named tensors of `params`, each from `params` unless `override`
// holds a buffer of that name (kept alive by the caller).
struct RankShard {
  std::vector<std::string> names;
  std::map<std::string, std::vector<float>> overrides;
  std::vector<std::pair<std::string, std::vector<int64_t>>> extra;  // extra F32 tensors
};

// Writes and commits step 7 of `shards.size()` ranks under `root`; returns the committed dir.
absl::StatusOr<std::string> WriteCheckpoint(const std::string& root, const ModelConfig& config,
                                            const ParameterSet& params,
                                            const std::vector<RankShard>& shards) {
  const train::CheckpointKey key{7, 1, static_cast<int>(shards.size())};
  train::CommitRequest commit;
  commit.key = key;
  commit.model_config = config;
  const std::vector<float> extra_data(1024, 1.0f);
  for (int r = 0; r < static_cast<int>(shards.size()); ++r) {
    train::SafetensorsWriter model, optimizer;
    for (const std::string& name : shards[r].names) {
      const ParamInfo* p = params.layout.Find(name);
      EXPECT_NE(p, nullptr) << name;
      auto it = shards[r].overrides.find(name);
      const float* data =
          it != shards[r].overrides.end() ? it->second.data() : params.values.data() + p->offset;
      EXPECT_OK(model.Add(name, DType::kF32, p->shape, data, p->size * sizeof(float)));
    }
    for (const auto& [name, shape] : shards[r].extra) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      EXPECT_OK(model.Add(name, DType::kF32, shape, extra_data.data(), n * sizeof(float)));
    }
    absl::StatusOr<train::RankFiles> files =
        train::WriteRankCheckpoint(root, key, r, model, optimizer, train::RankState{});
    if (!files.ok()) return files.status();
    commit.ranks.push_back(*files);
  }
  return train::CommitCheckpoint(root, commit);
}

std::vector<std::string> AllNames(const ParameterSet& p) {
  std::vector<std::string> out;
  for (const ParamInfo& info : p.layout.params()) out.push_back(info.name);
  return out;
}

TEST(CheckpointExportTest, OneRankExportsAModelDirThatLoadsBack) {
  const std::string dir = TestDir();
  const ParameterSet params = RandomParameters(TinyConfig(), 1);
  absl::StatusOr<std::string> ckpt =
      WriteCheckpoint(dir + "/ckpt", TinyConfig(), params, {{AllNames(params), {}, {}}});
  ASSERT_OK(ckpt);
  absl::StatusOr<CheckpointModel> m = LoadCheckpointModel(*ckpt);
  ASSERT_OK(m);
  EXPECT_EQ(m->step, 7);
  EXPECT_EQ(m->world_size, 1);
  EXPECT_TRUE(train::ModelConfigDifferences(m->config, TinyConfig()).empty());
  EXPECT_EQ(m->params.values, params.values);

  ASSERT_OK(WriteModelDir(dir + "/hf", m->config, m->params));
  ParameterSet back(ParameterLayout::Build(TinyConfig()));
  ASSERT_OK(LoadWeights(dir + "/hf/" + kWeightsFileName, &back));
  EXPECT_EQ(back.values, params.values);
  EXPECT_TRUE(fs::exists(dir + "/hf/" + kConfigFileName));
}

// Rank 0: the embedding, layer 0 and the final norm/head; rank 1: layer 1 and MTP; both hold the
// embedding and the head (as the first and last pipeline stages of an MTP model do).
std::vector<RankShard> TwoRankShards(const ParameterSet& params) {
  std::vector<RankShard> shards(2);
  for (const std::string& name : AllNames(params)) {
    const bool shared = name == "model.embed_tokens.weight" || name == "lm_head.weight";
    const bool rank0 = name.rfind("model.layers.0.", 0) == 0 || name == "model.norm.weight";
    if (shared || rank0) shards[0].names.push_back(name);
    if (shared || !rank0) shards[1].names.push_back(name);
  }
  return shards;
}

TEST(CheckpointExportTest, TwoRanksAreUnitedAndReplicasAgree) {
  const std::string dir = TestDir();
  const ParameterSet params = RandomParameters(TinyConfig(), 2);
  absl::StatusOr<std::string> ckpt =
      WriteCheckpoint(dir + "/ckpt", TinyConfig(), params, TwoRankShards(params));
  ASSERT_OK(ckpt);
  absl::StatusOr<CheckpointModel> m = LoadCheckpointModel(*ckpt);
  ASSERT_OK(m);
  EXPECT_EQ(m->world_size, 2);
  EXPECT_EQ(m->params.values, params.values);
}

TEST(CheckpointExportTest, ReplicasThatDifferAreDataLossNamingTheTensorAndRanks) {
  const std::string dir = TestDir();
  const ParameterSet params = RandomParameters(TinyConfig(), 3);
  std::vector<RankShard> shards = TwoRankShards(params);
  const std::string name = "lm_head.weight";
  std::vector<float> changed(params.values.begin() + params.layout.OffsetOf(name),
                             params.values.begin() + params.layout.OffsetOf(name) + 30 * 8);
  changed[17] += 1e-6f;
  shards[1].overrides[name] = changed;
  absl::StatusOr<std::string> ckpt = WriteCheckpoint(dir + "/ckpt", TinyConfig(), params, shards);
  ASSERT_OK(ckpt);
  EXPECT_THAT(LoadCheckpointModel(*ckpt),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("\"lm_head.weight\" differs between rank 0 and rank 1"),
                             HasSubstr("flat element 17"))));
}

TEST(CheckpointExportTest, ATensorHeldByNoRankIsNamedWithTheCount) {
  const std::string dir = TestDir();
  const ParameterSet params = RandomParameters(TinyConfig(), 4);
  std::vector<RankShard> shards = TwoRankShards(params);
  const std::string name = "model.layers.2.hnorm.weight";
  std::erase(shards[1].names, name);
  absl::StatusOr<std::string> ckpt = WriteCheckpoint(dir + "/ckpt", TinyConfig(), params, shards);
  ASSERT_OK(ckpt);
  EXPECT_THAT(LoadCheckpointModel(*ckpt),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(absl::StrCat("1 of ", params.layout.params().size(),
                                                    " tensors are held by no rank")),
                             HasSubstr(name))));
}

TEST(CheckpointExportTest, ATensorOutsideTheLayoutIsNamed) {
  const std::string dir = TestDir();
  const ParameterSet params = RandomParameters(TinyConfig(), 5);
  std::vector<RankShard> shards = TwoRankShards(params);
  shards[1].extra.push_back({"model.layers.2.embed_tokens.weight", {30, 8}});
  absl::StatusOr<std::string> ckpt = WriteCheckpoint(dir + "/ckpt", TinyConfig(), params, shards);
  ASSERT_OK(ckpt);
  EXPECT_THAT(LoadCheckpointModel(*ckpt),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("1 tensors are not in the layout"),
                             HasSubstr("\"model.layers.2.embed_tokens.weight\" (rank 1)"))));
}

TEST(CheckpointExportTest, ATensorOfAnotherShapeIsNamed) {
  const std::string dir = TestDir();
  const ParameterSet params = RandomParameters(TinyConfig(), 6);
  std::vector<RankShard> shards = TwoRankShards(params);
  std::erase(shards[0].names, "model.norm.weight");
  shards[0].extra.push_back({"model.norm.weight", {4, 2}});
  absl::StatusOr<std::string> ckpt = WriteCheckpoint(dir + "/ckpt", TinyConfig(), params, shards);
  ASSERT_OK(ckpt);
  EXPECT_THAT(LoadCheckpointModel(*ckpt),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("rank 0 holds tensor \"model.norm.weight\" as F32 [4, 2]"),
                             HasSubstr("needs F32 [8]"))));
}

TEST(CheckpointExportTest, ADirectoryWithoutAManifestIsNotFound) {
  const std::string dir = TestDir() + "/step-00000007";
  fs::create_directories(dir);
  EXPECT_THAT(LoadCheckpointModel(dir), StatusIs(absl::StatusCode::kNotFound));
}

TEST(CheckpointExportTest, ACorruptedShardIsDataLoss) {
  const std::string dir = TestDir();
  const ParameterSet params = RandomParameters(TinyConfig(), 7);
  absl::StatusOr<std::string> ckpt =
      WriteCheckpoint(dir + "/ckpt", TinyConfig(), params, TwoRankShards(params));
  ASSERT_OK(ckpt);
  const std::string shard = *ckpt + "/rank-1.safetensors";
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(shard) - 3));
    f.put('\x7f');
  }
  EXPECT_THAT(LoadCheckpointModel(*ckpt),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank-1.safetensors")));
}

}  // namespace
}  // namespace dsv3::model
