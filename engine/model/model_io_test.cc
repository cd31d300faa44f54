// Tests for Hugging Face model I/O (model_io.h): value and gradient round trips through F32
// safetensors, the exact-layout checks (missing, unexpected, mis-shaped, wrong dtype), BF16 / F16 /
// F64 input, truncated files, and model directories.
#include "engine/model/model_io.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "engine/train/checkpoint_manifest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/fp8.h"
#include "nlohmann/json.hpp"

namespace dsv3::model {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::IsOk;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using train::DType;

// A small valid config: one dense layer, one MoE layer, MTP, q compression, a shared expert.
ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 1;
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
  c.num_nextn_predict_layers = 1;
  return c;
}

std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) /
                       (std::string("model_io_") + info->test_suite_name() + "." + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Values (and grads) that differ in every element, router biases included.
ParameterSet RandomParameters(const ModelConfig& config, uint32_t seed) {
  ParameterSet p(ParameterLayout::Build(config));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : p.values) v = normal(rng);
  for (float& g : p.grads) g = normal(rng);
  return p;
}

// A writer holding `params`' values for every tensor of the layout except `skip`, as F32.
train::SafetensorsWriter ValuesWriter(const ParameterSet& params, const std::string& skip = "") {
  train::SafetensorsWriter w;
  for (const ParamInfo& p : params.layout.params()) {
    if (p.name == skip) continue;
    EXPECT_OK(w.Add(p.name, DType::kF32, p.shape, params.values.data() + p.offset,
                    p.size * sizeof(float)));
  }
  return w;
}

absl::Status WriteTo(const train::SafetensorsWriter& w, const std::string& path) {
  return w.WriteFile(path).status();
}

TEST(ModelIoTest, ValuesRoundTripBitForBitInLayoutOrder) {
  const std::string path = TestDir() + "/model.safetensors";
  const ParameterSet a = RandomParameters(TinyConfig(), 1);
  ASSERT_OK(WriteParameters(a, ParameterBuffer::kValues, path));

  absl::StatusOr<train::SafetensorsReader> reader = train::SafetensorsReader::Open(path);
  ASSERT_OK(reader);
  ASSERT_EQ(reader->tensors().size(), a.layout.params().size());
  for (size_t i = 0; i < a.layout.params().size(); ++i) {
    EXPECT_EQ(reader->tensors()[i].name, a.layout.params()[i].name) << i;
    EXPECT_EQ(reader->tensors()[i].dtype, DType::kF32);
    EXPECT_EQ(reader->tensors()[i].shape, a.layout.params()[i].shape);
  }
  ParameterSet b(ParameterLayout::Build(TinyConfig()));
  ASSERT_OK(LoadWeights(path, &b));
  EXPECT_EQ(b.values, a.values);
}

TEST(ModelIoTest, GradsAreWrittenUnderHfNamesWithZerosForTheRouterBias) {
  const std::string path = TestDir() + "/grads.safetensors";
  const ParameterSet a = RandomParameters(TinyConfig(), 2);
  ASSERT_OK(WriteParameters(a, ParameterBuffer::kGrads, path));
  absl::StatusOr<train::SafetensorsReader> reader = train::SafetensorsReader::Open(path);
  ASSERT_OK(reader);
  int biases = 0;
  for (const ParamInfo& p : a.layout.params()) {
    absl::StatusOr<std::vector<float>> g = reader->Read<float>(p.name, p.shape);
    ASSERT_OK(g);
    if (!p.trainable) {
      ++biases;
      EXPECT_EQ(*g, std::vector<float>(p.size, 0.0f)) << p.name;
    } else {
      EXPECT_EQ(*g,
                std::vector<float>(a.grads.begin() + p.offset, a.grads.begin() + p.offset + p.size))
          << p.name;
    }
  }
  EXPECT_EQ(biases, 2);  // layer 1 and the MTP layer
}

TEST(ModelIoTest, AMissingTensorIsNamedWithTheCount) {
  const std::string path = TestDir() + "/model.safetensors";
  const ParameterSet a = RandomParameters(TinyConfig(), 3);
  const std::string name = "model.layers.1.mlp.experts.2.up_proj.weight";
  ASSERT_OK(WriteTo(ValuesWriter(a, name), path));
  ParameterSet b(ParameterLayout::Build(TinyConfig()));
  EXPECT_THAT(LoadWeights(path, &b),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path),
                             HasSubstr(absl::StrCat("1 of ", a.layout.params().size(),
                                                    " tensors of the layout are missing, the first "
                                                    "\"" +
                                                        name + "\"")))));
}

TEST(ModelIoTest, AnUnexpectedTensorIsNamedWithTheCount) {
  const std::string path = TestDir() + "/model.safetensors";
  const ParameterSet a = RandomParameters(TinyConfig(), 4);
  train::SafetensorsWriter w = ValuesWriter(a);
  const std::vector<float> extra(16 * 40, 0.5f);
  // The released checkpoint's tied MTP copy of the embedding is not part of the layout.
  ASSERT_OK(w.Add<float>("model.layers.2.embed_tokens.weight", {40, 16}, extra));
  ASSERT_OK(w.Add<float>("model.layers.2.shared_head.head.weight", {40, 16}, extra));
  ASSERT_OK(WriteTo(w, path));
  ParameterSet b(ParameterLayout::Build(TinyConfig()));
  EXPECT_THAT(LoadWeights(path, &b),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("2 tensors are not in the layout"),
                             HasSubstr("model.layers.2."), Not(HasSubstr("missing")))));
}

TEST(ModelIoTest, MissingAndUnexpectedTensorsAreReportedTogether) {
  // A file written for another config (no MTP) loaded into a config with MTP and more experts.
  const std::string path = TestDir() + "/model.safetensors";
  ModelConfig other = TinyConfig();
  other.num_nextn_predict_layers = 0;
  other.q_lora_rank = 0;
  ASSERT_OK(WriteParameters(RandomParameters(other, 5), ParameterBuffer::kValues, path));
  ParameterSet b(ParameterLayout::Build(TinyConfig()));
  EXPECT_THAT(LoadWeights(path, &b),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensors of the layout are missing, the first "
                                       "\"model.layers.0.self_attn.q_a_proj.weight\""),
                             HasSubstr("2 tensors are not in the layout of the config, the first "
                                       "\"model.layers.0.self_attn.q_proj.weight\""))));
}

TEST(ModelIoTest, AMisShapedTensorNamesBothShapes) {
  const std::string path = TestDir() + "/model.safetensors";
  const ParameterSet a = RandomParameters(TinyConfig(), 6);
  const std::string name = "model.layers.0.self_attn.o_proj.weight";  // [16, 8]
  train::SafetensorsWriter w = ValuesWriter(a, name);
  ASSERT_OK(w.Add(name, DType::kF32, {8, 16}, a.values.data(), 128 * sizeof(float)));
  ASSERT_OK(WriteTo(w, path));
  ParameterSet b(ParameterLayout::Build(TinyConfig()));
  EXPECT_THAT(LoadWeights(path, &b), StatusIs(absl::StatusCode::kInvalidArgument,
                                              AllOf(HasSubstr(name), HasSubstr("has shape [8, 16]"),
                                                    HasSubstr("the config needs [16, 8]"))));
}

TEST(ModelIoTest, Bf16F16AndF64TensorsAreReadExactly) {
  const std::string path = TestDir() + "/model.safetensors";
  const ParameterSet a = RandomParameters(TinyConfig(), 7);
  const std::string bf16_name = "model.embed_tokens.weight";                       // [40, 16]
  const std::string f16_name = "model.layers.0.input_layernorm.weight";            // [16]
  const std::string f64_name = "model.layers.1.mlp.gate.e_score_correction_bias";  // [4]
  train::SafetensorsWriter w;
  std::vector<uint16_t> bf16(40 * 16);
  std::vector<float> bf16_expected(bf16.size());
  for (size_t i = 0; i < bf16.size(); ++i) {
    bf16[i] = kernels::FloatToBf16(a.values[a.layout.OffsetOf(bf16_name) + i]);
    bf16_expected[i] = kernels::Bf16ToFloat(bf16[i]);
  }
  // F16 bit patterns of 1, -2, 0.5, ...: exponent field e, mantissa 0 -> +-2^(e-15).
  std::vector<uint16_t> f16(16);
  std::vector<float> f16_expected(16);
  for (int i = 0; i < 16; ++i) {
    const int e = 10 + i;
    f16[i] = static_cast<uint16_t>((i % 2 ? 0x8000 : 0) | (e << 10));
    f16_expected[i] = (i % 2 ? -1.0f : 1.0f) * std::ldexp(1.0f, e - 15);
  }
  const std::vector<double> f64 = {0.1, -0.25, 1e-3, 3.0};
  for (const ParamInfo& p : a.layout.params()) {
    if (p.name == bf16_name) {
      ASSERT_OK(w.Add(p.name, DType::kBF16, p.shape, bf16.data(), bf16.size() * 2));
    } else if (p.name == f16_name) {
      ASSERT_OK(w.Add(p.name, DType::kF16, p.shape, f16.data(), f16.size() * 2));
    } else if (p.name == f64_name) {
      ASSERT_OK(w.Add<double>(p.name, p.shape, f64));
    } else {
      ASSERT_OK(w.Add(p.name, DType::kF32, p.shape, a.values.data() + p.offset, p.size * 4));
    }
  }
  ASSERT_OK(WriteTo(w, path));
  ParameterSet b(ParameterLayout::Build(TinyConfig()));
  ASSERT_OK(LoadWeights(path, &b));
  const auto slice = [&](const std::string& name, int64_t n) {
    const float* v = b.value(name);
    return std::vector<float>(v, v + n);
  };
  EXPECT_EQ(slice(bf16_name, 40 * 16), bf16_expected);
  EXPECT_EQ(slice(f16_name, 16), f16_expected);
  EXPECT_EQ(slice(f64_name, 4), (std::vector<float>{0.1f, -0.25f, 1e-3f, 3.0f}));
  const std::string lm = "lm_head.weight";
  EXPECT_EQ(slice(lm, 40 * 16), std::vector<float>(a.values.begin() + a.layout.OffsetOf(lm),
                                                   a.values.begin() + a.layout.OffsetOf(lm) + 640));
}

TEST(ModelIoTest, Fp8AndIntegerTensorsAreRejectedByName) {
  const std::string path = TestDir() + "/model.safetensors";
  const ParameterSet a = RandomParameters(TinyConfig(), 8);
  const std::string name = "model.layers.0.mlp.down_proj.weight";  // [16, 24]
  train::SafetensorsWriter w = ValuesWriter(a, name);
  const std::vector<uint8_t> codes(16 * 24, 0x38);
  ASSERT_OK(w.Add(name, DType::kF8E4M3, {16, 24}, codes.data(), codes.size()));
  ASSERT_OK(WriteTo(w, path));
  ParameterSet b(ParameterLayout::Build(TinyConfig()));
  EXPECT_THAT(LoadWeights(path, &b), StatusIs(absl::StatusCode::kInvalidArgument,
                                              AllOf(HasSubstr(name), HasSubstr("F8_E4M3"))));
}

TEST(ModelIoTest, ATruncatedFileIsDataLoss) {
  const std::string path = TestDir() + "/model.safetensors";
  ASSERT_OK(WriteParameters(RandomParameters(TinyConfig(), 9), ParameterBuffer::kValues, path));
  fs::resize_file(path, fs::file_size(path) - 7);
  ParameterSet b(ParameterLayout::Build(TinyConfig()));
  EXPECT_THAT(LoadWeights(path, &b), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
}

TEST(ModelIoTest, AMissingFileIsNotFound) {
  ParameterSet b(ParameterLayout::Build(TinyConfig()));
  EXPECT_THAT(LoadWeights(TestDir() + "/nothing.safetensors", &b),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(ModelIoTest, AModelDirHoldsTheConfigAndTheWeights) {
  const std::string dir = TestDir() + "/out/model";  // created with its parent
  ModelConfig config = TinyConfig();
  config.rms_norm_eps = 1e-5;
  config.rope_theta = 5e4;
  const ParameterSet a = RandomParameters(config, 10);
  ASSERT_OK(WriteModelDir(dir, config, a));

  std::ifstream in(dir + "/config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("model_type"), "deepseek_v3");
  EXPECT_FALSE(j.contains("rope_scaling"));
  absl::StatusOr<ModelConfig> back = train::ModelConfigFromJson(j.dump());
  ASSERT_OK(back);
  EXPECT_TRUE(train::ModelConfigDifferences(*back, config).empty());

  ParameterSet b(ParameterLayout::Build(config));
  ASSERT_OK(LoadWeights(dir + "/model.safetensors", &b));
  EXPECT_EQ(b.values, a.values);
}

TEST(ModelIoTest, ConfigJsonCarriesYarnWhenTheConfigHasIt) {
  ModelConfig config = TinyConfig();
  config.rope_scaling_factor = 40;
  config.rope_original_max_position_embeddings = 4096;
  config.rope_mscale = 1.0;
  const nlohmann::json j = nlohmann::json::parse(ModelConfigToHfJson(config));
  ASSERT_TRUE(j.contains("rope_scaling"));
  const nlohmann::json& rs = j.at("rope_scaling");
  EXPECT_EQ(rs.at("type"), "yarn");
  EXPECT_EQ(rs.at("factor"), 40.0);
  EXPECT_EQ(rs.at("original_max_position_embeddings"), 4096);
  EXPECT_EQ(rs.at("beta_fast"), 32.0);
  EXPECT_EQ(rs.at("beta_slow"), 1.0);
  EXPECT_EQ(rs.at("mscale"), rs.at("mscale_all_dim"));
}

}  // namespace
}  // namespace dsv3::model
