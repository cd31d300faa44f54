// Tests for the checkpoint manifest: JSON round trip, the self-checksum, version and file-set
// validation, and the model config's Hugging Face keys.
#include "engine/train/checkpoint_manifest.h"

#include <functional>
#include <string>

#include "common/model_config.h"
#include "common/status_matchers.h"
#include "engine/train/checksum.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dsv3::train {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

Manifest SampleManifest(int world_size) {
  Manifest m;
  m.step = 1200;
  m.epoch = 7;
  m.world_size = world_size;
  m.layout = {{"pipeline_parallel", 2}, {"expert_parallel", 1}};
  m.model_config = DeepSeekV3Config();
  m.created_at = "2025-01-02T03:04:05Z";
  for (int r = 0; r < world_size; ++r) {
    for (CheckpointFileKind kind :
         {CheckpointFileKind::kModel, CheckpointFileKind::kOptimizer, CheckpointFileKind::kState}) {
      m.files.push_back(CheckpointFile{CheckpointFileName(r, kind), r, kind,
                                       static_cast<uint64_t>(1000 * r + static_cast<int>(kind)),
                                       0xDEADBEEFu + static_cast<uint32_t>(r)});
    }
  }
  return m;
}

// Edits a manifest's JSON and re-signs it, as a buggy or newer writer would.
std::string Edit(const std::string& text, const std::function<void(Json&)>& edit) {
  Json j = Json::parse(text);
  j.erase("manifest_crc32c");
  edit(j);
  j["manifest_crc32c"] = Crc32cToHex(Crc32c(j.dump()));
  return j.dump(2);
}

TEST(CheckpointManifestTest, RoundTripsThroughJson) {
  const Manifest m = SampleManifest(2);
  absl::StatusOr<Manifest> back = ManifestFromJson(ManifestToJson(m), "test");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->step, 1200);
  EXPECT_EQ(back->epoch, 7);
  EXPECT_EQ(back->world_size, 2);
  EXPECT_EQ(back->layout, m.layout);
  EXPECT_TRUE(ModelConfigDifferences(back->model_config, m.model_config).empty());
  EXPECT_EQ(back->created_at, m.created_at);
  EXPECT_EQ(back->files, m.files);
  EXPECT_EQ(back->format_version, kCheckpointFormatVersion);
}

TEST(CheckpointManifestTest, JsonHasTheDocumentedFields) {
  const Json j = Json::parse(ManifestToJson(SampleManifest(1)));
  EXPECT_EQ(j["format"], "dsv3-checkpoint");
  EXPECT_EQ(j["format_version"], 1);
  EXPECT_EQ(j["step"], 1200);
  EXPECT_EQ(j["world_size"], 1);
  EXPECT_EQ(j["model_config"]["kv_lora_rank"], 512);
  EXPECT_EQ(j["model_config"]["routed_scaling_factor"], 2.5);
  ASSERT_EQ(j["files"].size(), 3u);
  EXPECT_EQ(j["files"][1]["name"], "rank-0-optim.safetensors");
  EXPECT_EQ(j["files"][1]["kind"], "optimizer");
  EXPECT_EQ(j["files"][1]["size"], 1);
  EXPECT_EQ(j["files"][1]["crc32c"], "deadbeef");
  EXPECT_TRUE(j["manifest_crc32c"].is_string());
}

TEST(CheckpointManifestTest, AnyEditWithoutResigningIsDataLoss) {
  std::string text = ManifestToJson(SampleManifest(1));
  const size_t at = text.find("deadbeef");
  ASSERT_NE(at, std::string::npos);
  text[at] = 'e';
  EXPECT_THAT(ManifestFromJson(text, "dir/MANIFEST.json"),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("dir/MANIFEST.json"), HasSubstr("checksum mismatch"))));
}

TEST(CheckpointManifestTest, ReformattingTheJsonKeepsItValid) {
  const std::string text = ManifestToJson(SampleManifest(2));
  const std::string compact = Json::parse(text).dump();
  EXPECT_TRUE(ManifestFromJson(compact, "test").ok());
}

TEST(CheckpointManifestTest, ANewerFormatVersionIsAFailedPrecondition) {
  const std::string text =
      Edit(ManifestToJson(SampleManifest(1)), [](Json& j) { j["format_version"] = 2; });
  EXPECT_THAT(ManifestFromJson(text, "test"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("format_version 2")));
}

TEST(CheckpointManifestTest, AForeignFormatIsAFailedPrecondition) {
  const std::string text =
      Edit(ManifestToJson(SampleManifest(1)), [](Json& j) { j["format"] = "something-else"; });
  EXPECT_THAT(ManifestFromJson(text, "test"), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(CheckpointManifestTest, AMissingRankFileIsDataLoss) {
  const std::string text =
      Edit(ManifestToJson(SampleManifest(2)), [](Json& j) { j["files"].erase(4); });
  EXPECT_THAT(ManifestFromJson(text, "test"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank-1-optim.safetensors")));
}

TEST(CheckpointManifestTest, MissingOrMistypedFieldsAreDataLoss) {
  const std::string base = ManifestToJson(SampleManifest(1));
  EXPECT_THAT(ManifestFromJson(Edit(base, [](Json& j) { j.erase("step"); }), "t"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("step")));
  EXPECT_THAT(ManifestFromJson(Edit(base, [](Json& j) { j["world_size"] = 0; }), "t"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("world_size")));
  EXPECT_THAT(ManifestFromJson(Edit(base, [](Json& j) { j["files"][0]["size"] = -1; }), "t"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("size")));
  EXPECT_THAT(
      ManifestFromJson(Edit(base, [](Json& j) { j["model_config"].erase("hidden_size"); }), "t"),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("hidden_size")));
  EXPECT_THAT(ManifestFromJson("{\"a\": 1", "t"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not valid JSON")));
  EXPECT_THAT(ManifestFromJson("{}", "t"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("manifest_crc32c")));
}

TEST(CheckpointManifestTest, CheckFileSetNamesTheFirstProblem) {
  Manifest m = SampleManifest(2);
  EXPECT_OK(CheckFileSet(m.files, 2));
  EXPECT_THAT(CheckFileSet(m.files, 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank-2.safetensors")));
  EXPECT_THAT(CheckFileSet(m.files, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected file")));
  m.files[3].name = "rank-1-model.safetensors";
  EXPECT_THAT(CheckFileSet(m.files, 2),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank-1-model.safetensors")));
}

TEST(ModelConfigJsonTest, UsesTheHuggingFaceKeysAndRoundTrips) {
  const ModelConfig c = DeepSeekV3Config();
  const Json j = Json::parse(ModelConfigToJson(c));
  for (const char* key : {"vocab_size",
                          "hidden_size",
                          "num_hidden_layers",
                          "first_k_dense_replace",
                          "intermediate_size",
                          "moe_intermediate_size",
                          "n_routed_experts",
                          "n_shared_experts",
                          "num_experts_per_tok",
                          "n_group",
                          "topk_group",
                          "routed_scaling_factor",
                          "num_attention_heads",
                          "q_lora_rank",
                          "kv_lora_rank",
                          "qk_nope_head_dim",
                          "qk_rope_head_dim",
                          "v_head_dim",
                          "num_nextn_predict_layers",
                          "rms_norm_eps",
                          "rope_theta"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j.size(), 21u);
  EXPECT_EQ(j["vocab_size"], 129280);
  absl::StatusOr<ModelConfig> back = ModelConfigFromJson(ModelConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(ModelConfigDifferences(*back, c).empty());
}

TEST(ModelConfigJsonTest, KeepsYarnRopeScaling) {
  ModelConfig c = DeepSeekV3Config();
  c.rope_scaling_factor = 40;
  c.rope_original_max_position_embeddings = 4096;
  c.rope_beta_fast = 32;
  c.rope_beta_slow = 1;
  c.rope_mscale = 1.0;
  const Json j = Json::parse(ModelConfigToJson(c));
  EXPECT_EQ(j["rope_scaling"]["type"], "yarn");
  EXPECT_EQ(j["rope_scaling"]["factor"], 40.0);
  absl::StatusOr<ModelConfig> back = ModelConfigFromJson(ModelConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->rope_scaling_factor, 40.0);
  EXPECT_EQ(back->rope_original_max_position_embeddings, 4096);
  EXPECT_EQ(back->rope_beta_fast, 32.0);
  EXPECT_EQ(back->rope_mscale, 1.0);
  EXPECT_FALSE(Json::parse(ModelConfigToJson(DeepSeekV3Config())).contains("rope_scaling"));
}

TEST(ModelConfigJsonTest, DifferencesNameEachChangedField) {
  ModelConfig a = DeepSeekV3Config(), b = a;
  b.hidden_size = 256;
  b.rms_norm_eps = 1e-5;
  EXPECT_THAT(ModelConfigDifferences(a, b),
              ElementsAre("hidden_size: checkpoint 7168, job 256",
                          "rms_norm_eps: checkpoint 1e-06, job 1e-05"));
}

}  // namespace
}  // namespace dsv3::train
