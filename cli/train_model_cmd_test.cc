// In-process tests of dsv3-train's model verbs: config.json parsing with the job spec's rules
// (train_model_dir.h), `eval` (flags, input errors and exit codes, the output files' contract) and
// `export` (a committed checkpoint to a model directory that eval reads). The numbers eval
// produces are checked against the PyTorch reference in tests/integration/model_eval_test.py,
// not here.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/train_eval_cmd.h"
#include "cli/train_export_cmd.h"
#include "cli/train_model_dir.h"
#include "common/status_matchers.h"
#include "engine/model/model_io.h"
#include "engine/model/parameters.h"
#include "engine/train/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/testing/npy.h"
#include "nlohmann/json.hpp"

#ifndef DSV3_SOURCE_ROOT
#define DSV3_SOURCE_ROOT "."
#endif

namespace dsv3::cli {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::IsOk;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) /
                       (std::string("train_model_") + info->test_suite_name() + "." + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// ---- config.json ---------------------------------------------------------------------------

TEST(ModelConfigJsonTest, TheModelSectionOfBrownTinyIsAccepted) {
  // What `deepseek_v3_ref.py init --config=docs/examples/brown-tiny.json` writes as config.json.
  const nlohmann::json spec =
      nlohmann::json::parse(ReadAll(DSV3_SOURCE_ROOT "/docs/examples/brown-tiny.json"));
  absl::StatusOr<ModelConfig> c = ParseModelConfigJson(spec.at("model").dump(2), "config.json");
  ASSERT_OK(c);
  EXPECT_EQ(c->vocab_size, 4096);
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->q_lora_rank, 128);
  EXPECT_EQ(c->n_group, 4);
  EXPECT_EQ(c->topk_group, 2);
  EXPECT_EQ(c->routed_scaling_factor, 2.5);
  EXPECT_EQ(c->num_nextn_predict_layers, 1);
  EXPECT_FALSE(c->has_yarn());
}

TEST(ModelConfigJsonTest, TheReleasedDeepSeekV3ConfigIsAcceptedWithItsYarn) {
  const std::string path = DSV3_SOURCE_ROOT "/coordinator/testdata/deepseek_v3_config.json";
  absl::StatusOr<ModelConfig> c = ParseModelConfigJson(ReadAll(path), path);
  ASSERT_OK(c);
  EXPECT_EQ(c->hidden_size, 7168);
  EXPECT_EQ(c->n_routed_experts, 256);
  EXPECT_EQ(c->rope_scaling_factor, 40);
  EXPECT_EQ(c->rope_original_max_position_embeddings, 4096);
}

TEST(ModelConfigJsonTest, ItRoundTripsThroughModelConfigToHfJson) {
  const std::string path = DSV3_SOURCE_ROOT "/coordinator/testdata/deepseek_v3_config.json";
  absl::StatusOr<ModelConfig> c = ParseModelConfigJson(ReadAll(path), path);
  ASSERT_OK(c);
  absl::StatusOr<ModelConfig> back = ParseModelConfigJson(model::ModelConfigToHfJson(*c), "x");
  ASSERT_OK(back);
  EXPECT_EQ(back->hidden_size, c->hidden_size);
  EXPECT_EQ(back->rope_scaling_factor, c->rope_scaling_factor);
  EXPECT_EQ(back->rope_mscale, c->rope_mscale);
  EXPECT_EQ(back->rms_norm_eps, c->rms_norm_eps);
}

TEST(ModelConfigJsonTest, UnknownKeysAndBrokenRulesAreRejectedByName) {
  EXPECT_THAT(ParseModelConfigJson(R"({"hiden_size": 3})", "/m/config.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("/m/config.json: "), HasSubstr("hiden_size"))));
  const std::string path = DSV3_SOURCE_ROOT "/coordinator/testdata/deepseek_v3_config.json";
  nlohmann::json j = nlohmann::json::parse(ReadAll(path));
  j["topk_group"] = 9;
  EXPECT_THAT(ParseModelConfigJson(j.dump(), "c.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("topk_group=9")));
  j = nlohmann::json::parse(ReadAll(path));
  j.erase("vocab_size");
  EXPECT_THAT(ParseModelConfigJson(j.dump(), "c.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocab_size")));
  EXPECT_THAT(ParseModelConfigJson("[1, 2]", "c.json"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ModelDirTest, MissingFilesAreNotFound) {
  const std::string dir = TestDir();
  EXPECT_THAT(ReadModelDir(dir + "/nothing"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ReadModelDir(dir), StatusIs(absl::StatusCode::kNotFound, HasSubstr("config.json")));
  std::ofstream(dir + "/config.json")
      << ReadAll(DSV3_SOURCE_ROOT "/coordinator/testdata/deepseek_v3_config.json");
  EXPECT_THAT(ReadModelDir(dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("model.safetensors")));
}

// ---- eval ----------------------------------------------------------------------------------

ModelConfig TinyConfig(bool moe = true, bool mtp = true) {
  ModelConfig c;
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = moe ? 1 : 2;
  c.intermediate_size = 24;
  c.moe_intermediate_size = 8;
  c.n_routed_experts = 4;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 2;
  c.topk_group = 1;
  c.routed_scaling_factor = 2.5;
  c.num_attention_heads = 2;
  c.q_lora_rank = 8;
  c.kv_lora_rank = 8;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 4;
  c.num_nextn_predict_layers = mtp ? 1 : 0;
  return c;
}

model::ParameterSet TinyParameters(const ModelConfig& config) {
  model::ParameterSet p(model::ParameterLayout::Build(config));
  model::InitParameters(/*seed=*/5, /*stddev=*/0.1, &p);
  return p;
}

// Token ids (b * 7 + t * 3) % vocab, int32 [rows, cols].
std::string WriteTokens(const std::string& path, int64_t rows, int64_t cols, int64_t vocab) {
  std::vector<int32_t> ids(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) ids[i] = static_cast<int32_t>((i * 7 + 3) % vocab);
  EXPECT_EQ(kernels::WriteNpy(path, {rows, cols}, ids.data()), "");
  return path;
}

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result Eval(std::vector<std::string> args) {
  std::ostringstream out, err;
  const int code = RunEvalCommand(args, out, err);
  return {code, out.str(), err.str()};
}

Result Export(std::vector<std::string> args) {
  std::ostringstream out, err;
  const int code = RunExportCommand(args, out, err);
  return {code, out.str(), err.str()};
}

class EvalCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir();
    ASSERT_OK(model::WriteModelDir(dir_ + "/model", TinyConfig(), TinyParameters(TinyConfig())));
    tokens_ = WriteTokens(dir_ + "/tokens.npy", 2, 6, 37);
  }
  std::string dir_;
  std::string tokens_;
};

TEST_F(EvalCommandTest, HelpExitsZero) {
  const Result r = Eval({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("usage: dsv3-train eval"));
}

TEST_F(EvalCommandTest, BadUsageExitsTwoWithOneLine) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {},
           {"--model=" + dir_ + "/model", "--tokens=" + tokens_},
           {"--model=" + dir_ + "/model", "--tokens=" + tokens_, "--out=x", "--precision=fp16"},
           {"--model=" + dir_ + "/model", "--tokens=" + tokens_, "--out=x", "--threads=0"},
           {"--model=" + dir_ + "/model", "--tokens=" + tokens_, "--out=x", "--bogus=1"},
           {"--model=" + dir_ + "/model", "--tokens=" + tokens_, "--out=x",
            "--mtp_loss_weight=abc"},
           {"positional"}}) {
    const Result r = Eval(args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr("dsv3-train eval: "));
  }
}

TEST_F(EvalCommandTest, TokenFilesOfTheWrongKindExitTwoNamingTheProblem) {
  const std::string model = "--model=" + dir_ + "/model", out = "--out=" + dir_ + "/out";
  const std::vector<float> f(12, 1.0f);
  ASSERT_EQ(kernels::WriteNpy(dir_ + "/f.npy", {2, 6}, f.data()), "");
  Result r = Eval({model, "--tokens=" + dir_ + "/f.npy", out});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("expected int32 [B, T+1], got float32 [2, 6]"));

  const std::vector<int32_t> flat(12, 1);
  ASSERT_EQ(kernels::WriteNpy(dir_ + "/flat.npy", {12}, flat.data()), "");
  r = Eval({model, "--tokens=" + dir_ + "/flat.npy", out});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("got int32 [12]"));

  // MTP needs T >= 2, so 3 columns.
  r = Eval({model, "--tokens=" + WriteTokens(dir_ + "/short.npy", 2, 2, 37), out});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("T+1 >= 3 columns"));

  std::vector<int32_t> ids(12, 1);
  ids[8] = 37;
  ASSERT_EQ(kernels::WriteNpy(dir_ + "/big.npy", {2, 6}, ids.data()), "");
  r = Eval({model, "--tokens=" + dir_ + "/big.npy", out});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("tokens[1, 2]=37 is outside [0, vocab_size=37)"));

  r = Eval({model, "--tokens=" + dir_ + "/missing.npy", out});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("missing.npy"));
  EXPECT_FALSE(fs::exists(dir_ + "/out"));
}

TEST_F(EvalCommandTest, WeightsThatDoNotMatchTheConfigExitTwo) {
  // config.json of a model without MTP next to weights with MTP.
  std::ofstream(dir_ + "/model/config.json") << model::ModelConfigToHfJson(TinyConfig(true, false));
  const Result r =
      Eval({"--model=" + dir_ + "/model", "--tokens=" + tokens_, "--out=" + dir_ + "/out"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("tensors are not in the layout of the config"));
}

TEST_F(EvalCommandTest, ATruncatedWeightsFileExitsTwo) {
  const std::string weights = dir_ + "/model/model.safetensors";
  fs::resize_file(weights, fs::file_size(weights) / 2);
  const Result r =
      Eval({"--model=" + dir_ + "/model", "--tokens=" + tokens_, "--out=" + dir_ + "/out"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("model.safetensors"));
}

// The files of DESIGN.md "Model I/O", with their dtypes and shapes.
void ExpectOutputContract(const std::string& out, const ModelConfig& c, int64_t b, int64_t t,
                          bool grads) {
  const nlohmann::json loss = nlohmann::json::parse(ReadAll(out + "/loss.json"));
  ASSERT_EQ(loss.size(), 4u) << loss.dump();
  for (const char* key : {"loss", "main_loss", "mtp_loss", "balance_loss"}) {
    ASSERT_TRUE(loss.contains(key)) << key;
    EXPECT_TRUE(std::isfinite(loss.at(key).get<double>())) << key;
  }
  EXPECT_NEAR(loss.at("loss").get<double>(),
              loss.at("main_loss").get<double>() + 0.3 * loss.at("mtp_loss").get<double>() +
                  loss.at("balance_loss").get<double>(),
              1e-12);
  kernels::NpyArray logits, experts;
  ASSERT_EQ(kernels::ReadNpy(out + "/logits.npy", &logits), "");
  EXPECT_EQ(logits.dtype, kernels::NpyDtype::kFloat32);
  EXPECT_EQ(logits.shape, (std::vector<int64_t>{b, t, c.vocab_size}));
  ASSERT_EQ(kernels::ReadNpy(out + "/experts.npy", &experts), "");
  EXPECT_EQ(experts.dtype, kernels::NpyDtype::kInt32);
  const int64_t main_moe = c.num_hidden_layers - c.first_k_dense_replace;
  const int64_t layers = main_moe + c.num_nextn_predict_layers;
  const int64_t k = c.num_experts_per_tok;
  EXPECT_EQ(experts.shape, (std::vector<int64_t>{layers, b * t, k}));
  const std::vector<int32_t> ids = experts.AsInt32();
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t row = 0; row < b * t; ++row) {
      const bool mtp_tail = l == layers - 1 && c.num_nextn_predict_layers > 0 && row % t == t - 1;
      for (int64_t s = 0; s < k; ++s) {
        const int32_t id = ids[(l * b * t + row) * k + s];
        if (mtp_tail) {
          EXPECT_EQ(id, -1) << l << " " << row;
        } else {
          EXPECT_TRUE(id >= 0 && id < c.n_routed_experts) << l << " " << row << " " << id;
        }
      }
    }
  }
  EXPECT_EQ(fs::exists(out + "/grads.safetensors"), grads);
  if (grads) {
    absl::StatusOr<train::SafetensorsReader> g =
        train::SafetensorsReader::Open(out + "/grads.safetensors");
    ASSERT_OK(g);
    const model::ParameterLayout layout = model::ParameterLayout::Build(c);
    ASSERT_EQ(g->tensors().size(), layout.params().size());
    for (const model::ParamInfo& p : layout.params()) {
      EXPECT_OK(g->Expect(p.name, train::DType::kF32, p.shape));
    }
  }
}

TEST_F(EvalCommandTest, WritesTheFourFilesOfTheContract) {
  const Result r = Eval({"--model=" + dir_ + "/model", "--tokens=" + tokens_,
                         "--out=" + dir_ + "/out", "--threads=2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, IsEmpty());
  EXPECT_THAT(r.out, HasSubstr("loss "));
  ExpectOutputContract(dir_ + "/out", TinyConfig(), 2, 5, /*grads=*/true);
}

TEST_F(EvalCommandTest, NoGradsWritesEverythingButTheGradients) {
  const Result r = Eval({"--model=" + dir_ + "/model", "--tokens", tokens_, "--out", dir_ + "/out",
                         "--no_grads", "--precision=bf16"});
  ASSERT_EQ(r.code, 0) << r.err;
  ExpectOutputContract(dir_ + "/out", TinyConfig(), 2, 5, /*grads=*/false);
}

TEST_F(EvalCommandTest, ADenseModelWithoutMtpHasNoExpertRows) {
  const ModelConfig c = TinyConfig(/*moe=*/false, /*mtp=*/false);
  ASSERT_OK(model::WriteModelDir(dir_ + "/dense", c, TinyParameters(c)));
  const Result r =
      Eval({"--model=" + dir_ + "/dense", "--tokens=" + WriteTokens(dir_ + "/t2.npy", 3, 2, 37),
            "--out=" + dir_ + "/out"});
  ASSERT_EQ(r.code, 0) << r.err;
  ExpectOutputContract(dir_ + "/out", c, 3, 1, /*grads=*/true);
  const nlohmann::json loss = nlohmann::json::parse(ReadAll(dir_ + "/out/loss.json"));
  EXPECT_EQ(loss.at("mtp_loss").get<double>(), 0.0);
  EXPECT_EQ(loss.at("balance_loss").get<double>(), 0.0);
}

// ---- export --------------------------------------------------------------------------------

TEST(ExportCommandTest, BadUsageAndMissingCheckpointsExitTwo) {
  const std::string dir = TestDir();
  EXPECT_EQ(Export({}).code, 2);
  EXPECT_EQ(Export({"--checkpoint=" + dir}).code, 2);
  const Result r = Export({"--checkpoint=" + dir + "/step-00000001", "--out=" + dir + "/hf"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("step-00000001"));
  EXPECT_FALSE(fs::exists(dir + "/hf"));
  EXPECT_EQ(Export({"--help"}).code, 0);
}

TEST(ExportCommandTest, AnExportedCheckpointEvaluatesLikeTheModelItHolds) {
  const std::string dir = TestDir();
  const ModelConfig c = TinyConfig();
  const model::ParameterSet params = TinyParameters(c);
  // One rank holding everything, written the way the trainer writes checkpoints.
  train::SafetensorsWriter shard, optimizer;
  for (const model::ParamInfo& p : params.layout.params()) {
    ASSERT_OK(shard.Add(p.name, train::DType::kF32, p.shape, params.values.data() + p.offset,
                        p.size * sizeof(float)));
  }
  const train::CheckpointKey key{3, 0, 1};
  absl::StatusOr<train::RankFiles> files =
      train::WriteRankCheckpoint(dir + "/ckpt", key, 0, shard, optimizer, train::RankState{});
  ASSERT_OK(files);
  train::CommitRequest commit;
  commit.key = key;
  commit.model_config = c;
  commit.ranks = {*files};
  absl::StatusOr<std::string> committed = train::CommitCheckpoint(dir + "/ckpt", commit);
  ASSERT_OK(committed);

  Result r = Export({"--checkpoint=" + *committed, "--out=" + dir + "/hf"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("exported step 3 (1 ranks)"));
  absl::StatusOr<ModelDir> md = ReadModelDir(dir + "/hf");
  ASSERT_OK(md);
  EXPECT_EQ(md->config.hidden_size, c.hidden_size);

  ASSERT_OK(model::WriteModelDir(dir + "/direct", c, params));
  const std::string tokens = WriteTokens(dir + "/t.npy", 2, 5, c.vocab_size);
  r = Eval({"--model=" + dir + "/hf", "--tokens=" + tokens, "--out=" + dir + "/a", "--threads=1"});
  ASSERT_EQ(r.code, 0) << r.err;
  r = Eval(
      {"--model=" + dir + "/direct", "--tokens=" + tokens, "--out=" + dir + "/b", "--threads=1"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* f : {"loss.json", "logits.npy", "experts.npy", "grads.safetensors"}) {
    EXPECT_EQ(ReadAll(dir + "/a/" + f), ReadAll(dir + "/b/" + f)) << f;
  }
}

}  // namespace
}  // namespace dsv3::cli
