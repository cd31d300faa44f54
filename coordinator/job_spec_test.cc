// Tests of job spec parsing, defaulting and validation (job_spec.h). The base spec is the DESIGN.md
// example (testdata/brown_tiny.json) with its token shards written into a temp dir; each rule test
// breaks that spec in exactly one way and checks the code and that the message names the field.
#include "coordinator/job_spec.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::coordinator {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::IsOk;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

const fs::path kTestdata = fs::path(__FILE__).parent_path() / "testdata";

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void PutInt32(std::string& bytes, size_t offset, int32_t value) {
  const uint32_t v = static_cast<uint32_t>(value);
  for (int i = 0; i < 4; ++i) {
    bytes[offset + i] = static_cast<char>((v >> (8 * i)) & 0xff);
  }
}

// An llm.c token shard: a 256-int32 little-endian header (magic, version, count) and
// `tokens_written` zero tokens of the version's width (which a test may make disagree with count).
void WriteShard(const fs::path& path, int32_t count, int32_t version = 1, int32_t magic = 20240520,
                int64_t tokens_written = -1) {
  if (tokens_written < 0) {
    tokens_written = count;
  }
  std::string bytes(1024 + tokens_written * (version == 2 ? 4 : 2), '\0');
  PutInt32(bytes, 0, magic);
  PutInt32(bytes, 4, version);
  PutInt32(bytes, 8, count);
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

class JobSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/job_spec_test_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = fs::path(pattern).lexically_normal();
    WriteShard(dir_ / "data/brown/train.bin", 4096);
    WriteShard(dir_ / "data/brown/val.bin", 1024);
    absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(ReadFile(kTestdata / "brown_tiny.json"));
    ASSERT_THAT(spec, IsOk());
    spec_ = *spec;
  }
  void TearDown() override { fs::remove_all(dir_); }

  absl::StatusOr<v1::JobSpec> Validate(const v1::JobSpec& spec) {
    ValidateOptions opts;
    opts.base_dir = dir_.string();
    return ValidateJobSpec(spec, opts);
  }

  // Asserts that `spec` is rejected with INVALID_ARGUMENT and a message holding every piece.
  void ExpectRejected(const v1::JobSpec& spec, const std::vector<std::string>& pieces) {
    absl::StatusOr<v1::JobSpec> result = Validate(spec);
    ASSERT_THAT(result, StatusIs(absl::StatusCode::kInvalidArgument));
    for (const std::string& piece : pieces) {
      EXPECT_THAT(std::string(result.status().message()), HasSubstr(piece));
    }
  }

  fs::path dir_;
  v1::JobSpec spec_;  // the DESIGN.md example, valid in dir_
};

// ---------------------------------------------------------------------------------------------
// Parsing.

TEST_F(JobSpecTest, ParsesTheDesignExample) {
  EXPECT_EQ(spec_.name(), "brown-tiny");
  EXPECT_EQ(spec_.model().hidden_size(), 256);
  EXPECT_EQ(spec_.parallel().schedule(), "dualpipe");
  EXPECT_DOUBLE_EQ(spec_.train().lr(), 3e-3);
  EXPECT_EQ(spec_.data().train(), "data/brown/train.bin");
}

TEST(ParseJobSpecTest, AcceptsLowerCamelCaseNames) {
  absl::StatusOr<v1::JobSpec> spec =
      ParseJobSpec(R"({"name": "x", "model": {"vocabSize": 10, "n_routed_experts": 4}})");
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->model().vocab_size(), 10);
  EXPECT_EQ(spec->model().n_routed_experts(), 4);
}

TEST(ParseJobSpecTest, AcceptsIntegersWrittenAsStrings) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(R"({"train": {"steps": "300"}})");
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->train().steps(), 300);
}

TEST(ParseJobSpecTest, AcceptsNullAsNotSet) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(R"({"model": {"rope_scaling": null}})");
  ASSERT_THAT(spec, IsOk());
  EXPECT_FALSE(spec->model().has_rope_scaling());
}

TEST(ParseJobSpecTest, UnknownNestedFieldIsNamedByItsPath) {
  EXPECT_THAT(ParseJobSpec(R"({"model": {"hiden_size": 256}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("unknown field \"model.hiden_size\""),
                             HasSubstr("did you mean \"hidden_size\""))));
}

TEST(ParseJobSpecTest, UnknownTopLevelFieldIsRejected) {
  EXPECT_THAT(
      ParseJobSpec(R"({"name": "x", "priority": 3})"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown field \"priority\"")));
}

TEST(ParseJobSpecTest, WordForAnIntegerNamesTheFieldAndTheValue) {
  EXPECT_THAT(ParseJobSpec(R"({"train": {"steps": "ten"}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(R"(field "train.steps": expected an integer, got "ten")")));
}

TEST(ParseJobSpecTest, FractionForAnIntegerIsRejected) {
  EXPECT_THAT(
      ParseJobSpec(R"({"parallel": {"micro_batches": 2.5}})"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr(R"(field "parallel.micro_batches": expected an integer, got 2.5)")));
}

TEST(ParseJobSpecTest, StringForANumberIsRejected) {
  EXPECT_THAT(ParseJobSpec(R"({"train": {"lr": "fast"}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(R"(field "train.lr": expected a number, got "fast")")));
}

TEST(ParseJobSpecTest, NumberForABoolIsRejected) {
  EXPECT_THAT(
      ParseJobSpec(R"({"model": {"norm_topk_prob": 1}})"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr(R"(field "model.norm_topk_prob": expected true or false, got 1)")));
}

TEST(ParseJobSpecTest, ScalarForASectionIsRejected) {
  EXPECT_THAT(ParseJobSpec(R"({"model": 5})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(R"(field "model": expected an object, got 5)")));
}

TEST(ParseJobSpecTest, WrongArrayElementIsNamedByIndex) {
  EXPECT_THAT(
      ParseJobSpec(R"({"model": {"quantization_config": {"weight_block_size": [128, "x"]}}})"),
      StatusIs(
          absl::StatusCode::kInvalidArgument,
          HasSubstr(
              R"(field "model.quantization_config.weight_block_size[1]": expected an integer)")));
}

TEST(ParseJobSpecTest, WrongMapValueIsNamedByKey) {
  EXPECT_THAT(
      ParseJobSpec(R"({"model": {"auto_map": {"AutoConfig": 3}}})"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr(R"(field "model.auto_map.AutoConfig": expected a string, got 3)")));
}

TEST(ParseJobSpecTest, RepeatedKeyIsRejectedByItsPath) {
  EXPECT_THAT(ParseJobSpec(R"({"train": {"steps": 1, "lr": 0.1, "steps": 2}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(R"(field "train.steps" is given twice)")));
}

TEST(ParseJobSpecTest, SameFieldUnderBothOfItsNamesIsRejected) {
  EXPECT_THAT(ParseJobSpec(R"({"model": {"vocab_size": 1, "vocabSize": 2}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(R"(field "model.vocab_size" is given twice)")));
}

TEST(ParseJobSpecTest, IntegerStringWithSpacesIsRejected) {
  EXPECT_THAT(ParseJobSpec(R"({"train": {"steps": " 300"}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(R"(field "train.steps": expected an integer, got " 300")")));
}

TEST(ParseJobSpecTest, MalformedJsonGivesLineAndColumn) {
  EXPECT_THAT(ParseJobSpec("{\n  \"name\": \"x\",\n  \"stage\" \"pre_training\"\n}"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("not valid JSON"), HasSubstr("line 3, column"))));
}

TEST(ParseJobSpecTest, EmptyTextIsMalformed) {
  EXPECT_THAT(ParseJobSpec(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid JSON")));
}

TEST(ParseJobSpecTest, TopLevelMustBeAnObject) {
  EXPECT_THAT(ParseJobSpec("[1, 2]"), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("must be a JSON object, got an array")));
}

TEST(ParseJobSpecTest, TextOverOneMebibyteIsRejectedBeforeParsing) {
  std::string huge = R"({"name": ")" + std::string(kMaxJobSpecBytes, 'a') + R"("})";
  EXPECT_THAT(ParseJobSpec(huge),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 1048576 bytes")));
}

// ---------------------------------------------------------------------------------------------
// The accepted spec: defaults and paths.

TEST_F(JobSpecTest, DesignExampleIsAcceptedWithItsOwnValuesKept) {
  absl::StatusOr<v1::JobSpec> resolved = Validate(spec_);
  ASSERT_THAT(resolved, IsOk());
  EXPECT_EQ(resolved->precision(), "fp8");
  EXPECT_EQ(resolved->parallel().max_workers(), 8);
  EXPECT_DOUBLE_EQ(resolved->train().min_lr(), 3e-4);
  EXPECT_EQ(resolved->checkpoint().every_steps(), 50);
}

TEST_F(JobSpecTest, RelativePathsResolveAgainstBaseDir) {
  absl::StatusOr<v1::JobSpec> resolved = Validate(spec_);
  ASSERT_THAT(resolved, IsOk());
  EXPECT_EQ(resolved->data().train(), (dir_ / "data/brown/train.bin").string());
  EXPECT_EQ(resolved->data().val(), (dir_ / "data/brown/val.bin").string());
  EXPECT_EQ(resolved->checkpoint().dir(), (dir_ / "runs/brown-tiny").string());
}

TEST_F(JobSpecTest, AbsolutePathsAreKeptButNormalised) {
  spec_.mutable_data()->set_train((dir_ / "data/./brown/../brown/train.bin").string());
  spec_.mutable_checkpoint()->set_dir("/elsewhere/ckpt/");
  absl::StatusOr<v1::JobSpec> resolved = Validate(spec_);
  ASSERT_THAT(resolved, IsOk());
  EXPECT_EQ(resolved->data().train(), (dir_ / "data/brown/train.bin").string());
  EXPECT_EQ(resolved->checkpoint().dir(), "/elsewhere/ckpt/");
}

TEST_F(JobSpecTest, ValidationLeavesItsInputUnchanged) {
  const v1::JobSpec before = spec_;
  ASSERT_THAT(Validate(spec_), IsOk());
  EXPECT_EQ(spec_.DebugString(), before.DebugString());
}

TEST_F(JobSpecTest, DefaultsAreFilledForEveryOptionalField) {
  v1::JobSpec minimal;
  minimal.set_name("min");
  *minimal.mutable_model() = spec_.model();
  minimal.mutable_model()->clear_rms_norm_eps();
  minimal.mutable_model()->clear_rope_theta();
  minimal.mutable_parallel()->set_pipeline_parallel(2);
  minimal.mutable_parallel()->set_micro_batches(8);
  auto* train = minimal.mutable_train();
  train->set_seq_len(128);
  train->set_global_batch_tokens(16384);
  train->set_steps(10);
  train->set_lr(2e-3);
  minimal.mutable_data()->set_train("data/brown/train.bin");

  absl::StatusOr<v1::JobSpec> r = Validate(minimal);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->stage(), "pre_training");
  EXPECT_EQ(r->precision(), "bf16");
  EXPECT_DOUBLE_EQ(r->model().rms_norm_eps(), 1e-6);
  EXPECT_DOUBLE_EQ(r->model().rope_theta(), 10000);
  EXPECT_EQ(r->parallel().schedule(), "dualpipe");
  EXPECT_EQ(r->parallel().expert_parallel(), 1);
  EXPECT_EQ(r->parallel().min_workers(), 2);
  EXPECT_EQ(r->parallel().max_workers(), 2);  // max(min_workers, P x EP) = max(2, 2 x 1)
  EXPECT_DOUBLE_EQ(r->train().min_lr(), 2e-4);
  EXPECT_EQ(r->train().warmup_steps(), 0);
  EXPECT_DOUBLE_EQ(r->train().weight_decay(), 0.1);
  EXPECT_DOUBLE_EQ(r->train().grad_clip(), 1.0);
  EXPECT_EQ(r->train().seed(), 1);
  EXPECT_DOUBLE_EQ(r->train().mtp_loss_weight(), 0.3);
  EXPECT_DOUBLE_EQ(r->train().bias_update_speed(), 0.001);
  EXPECT_DOUBLE_EQ(r->train().seq_aux_loss_alpha(), 1e-4);
  EXPECT_EQ(r->train().val_every_steps(), 0);
  EXPECT_EQ(r->train().val_tokens(), 16384);
  EXPECT_EQ(r->data().val(), "");
  EXPECT_EQ(r->checkpoint().dir(), (dir_ / "runs/min").string());
  EXPECT_EQ(r->checkpoint().every_steps(), 0);
  EXPECT_EQ(r->checkpoint().keep(), 3);
  EXPECT_DOUBLE_EQ(r->accounting().price_per_device_hour(), 2.0);
  EXPECT_DOUBLE_EQ(r->accounting().device_peak_tflops(), 0);
}

TEST_F(JobSpecTest, DefaultMaxWorkersReachesTheExpertParallelTarget) {
  spec_.mutable_parallel()->clear_min_workers();
  spec_.mutable_parallel()->clear_max_workers();
  spec_.mutable_parallel()->set_expert_parallel(4);
  absl::StatusOr<v1::JobSpec> r = Validate(spec_);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->parallel().min_workers(), 2);
  EXPECT_EQ(r->parallel().max_workers(), 8);
}

TEST_F(JobSpecTest, TheFirstViolationInDocumentedOrderIsReported) {
  spec_.set_name("bad name");                        // rule 1: name
  spec_.mutable_parallel()->set_expert_parallel(3);  // later: parallel
  ExpectRejected(spec_, {"name=\"bad name\""});
}

TEST_F(JobSpecTest, DataFilesAreNotOpenedWhenCheckingIsOff) {
  spec_.mutable_data()->set_train("missing.bin");
  ValidateOptions opts;
  opts.base_dir = dir_.string();
  opts.check_data_files = false;
  EXPECT_THAT(ValidateJobSpec(spec_, opts), IsOk());
}

// ---------------------------------------------------------------------------------------------
// Name, stage, precision.

TEST_F(JobSpecTest, NameIsRequired) {
  spec_.clear_name();
  ExpectRejected(spec_, {"name is required"});
}

TEST_F(JobSpecTest, NameWithASlashIsRejected) {
  spec_.set_name("a/b");
  ExpectRejected(spec_, {"name=\"a/b\"", "A-Z a-z 0-9 . _ -"});
}

TEST_F(JobSpecTest, NameLongerThan128IsRejected) {
  spec_.set_name(std::string(129, 'n'));
  ExpectRejected(spec_, {"name is 129 characters"});
}

TEST_F(JobSpecTest, NameOf128CharactersIsAccepted) {
  spec_.set_name(std::string(128, 'n'));
  EXPECT_THAT(Validate(spec_), IsOk());
}

TEST_F(JobSpecTest, NameDotDotIsRejected) {
  spec_.set_name("..");
  ExpectRejected(spec_, {"name=\"..\""});
}

TEST_F(JobSpecTest, UnknownStageIsRejected) {
  spec_.set_stage("pretraining");
  ExpectRejected(spec_, {"stage=\"pretraining\"", "\"context_extension\""});
}

TEST_F(JobSpecTest, UnknownPrecisionIsRejected) {
  spec_.set_precision("fp16");
  ExpectRejected(spec_, {"precision=\"fp16\"", "\"fp8\""});
}

// ---------------------------------------------------------------------------------------------
// Model.

TEST_F(JobSpecTest, ModelSectionIsRequired) {
  spec_.clear_model();
  ExpectRejected(spec_, {"model is required"});
}

TEST_F(JobSpecTest, EveryModelShapeFieldIsRequired) {
  const google::protobuf::Descriptor* d = v1::ModelSpec::descriptor();
  for (int number = 1; number <= 19; ++number) {
    const google::protobuf::FieldDescriptor* field = d->FindFieldByNumber(number);
    SCOPED_TRACE(field->name());
    v1::JobSpec spec = spec_;
    spec.mutable_model()->GetReflection()->ClearField(spec.mutable_model(), field);
    ExpectRejected(spec, {"model." + field->name() + " is required"});
  }
}

TEST_F(JobSpecTest, RmsNormEpsAndRopeThetaAreOptional) {
  spec_.mutable_model()->clear_rms_norm_eps();
  spec_.mutable_model()->clear_rope_theta();
  EXPECT_THAT(Validate(spec_), IsOk());
}

TEST_F(JobSpecTest, NonPositiveSizesAreRejected) {
  for (const char* name : {"vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
                           "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok",
                           "n_group", "topk_group", "num_attention_heads", "kv_lora_rank",
                           "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"}) {
    SCOPED_TRACE(name);
    v1::JobSpec spec = spec_;
    auto* model = spec.mutable_model();
    model->GetReflection()->SetInt64(model, model->GetDescriptor()->FindFieldByName(name), 0);
    ExpectRejected(spec, {std::string("model.") + name + "=0 must be positive"});
  }
}

TEST_F(JobSpecTest, NegativeCountsAreRejected) {
  for (const char* name :
       {"first_k_dense_replace", "n_shared_experts", "q_lora_rank", "num_nextn_predict_layers"}) {
    SCOPED_TRACE(name);
    v1::JobSpec spec = spec_;
    auto* model = spec.mutable_model();
    model->GetReflection()->SetInt64(model, model->GetDescriptor()->FindFieldByName(name), -1);
    ExpectRejected(spec, {std::string("model.") + name + "=-1 must not be negative"});
  }
}

TEST_F(JobSpecTest, NonPositiveOrNonFiniteFactorsAreRejected) {
  spec_.mutable_model()->set_routed_scaling_factor(0);
  ExpectRejected(spec_, {"model.routed_scaling_factor=0 must be positive"});
  spec_.mutable_model()->set_routed_scaling_factor(2.5);
  spec_.mutable_model()->set_rms_norm_eps(std::numeric_limits<double>::quiet_NaN());
  ExpectRejected(spec_, {"model.rms_norm_eps=nan must be finite"});
}

TEST_F(JobSpecTest, ZeroQLoraRankAndZeroSharedExpertsAreAccepted) {
  spec_.mutable_model()->set_q_lora_rank(0);
  spec_.mutable_model()->set_n_shared_experts(0);
  EXPECT_THAT(Validate(spec_), IsOk());
}

TEST_F(JobSpecTest, FirstKDenseReplaceAboveTheLayerCountIsRejected) {
  spec_.mutable_model()->set_first_k_dense_replace(5);
  ExpectRejected(spec_, {"model.first_k_dense_replace=5", "model.num_hidden_layers=4"});
}

TEST_F(JobSpecTest, OddRopeHeadDimIsRejected) {
  spec_.mutable_model()->set_qk_rope_head_dim(31);
  ExpectRejected(spec_, {"model.qk_rope_head_dim=31 must be even"});
}

TEST_F(JobSpecTest, MtpDepthAboveOneIsRejected) {
  spec_.mutable_model()->set_num_nextn_predict_layers(2);
  ExpectRejected(spec_, {"model.num_nextn_predict_layers=2", "0 or 1"});
}

TEST_F(JobSpecTest, NoMtpIsAccepted) {
  spec_.mutable_model()->set_num_nextn_predict_layers(0);
  EXPECT_THAT(Validate(spec_), IsOk());
}

TEST_F(JobSpecTest, GroupCountNotDividingExpertsIsRejected) {
  spec_.mutable_model()->set_n_group(3);
  ExpectRejected(spec_, {"model.n_group=3 does not divide model.n_routed_experts=16"});
}

TEST_F(JobSpecTest, TopkGroupAboveGroupCountIsRejected) {
  spec_.mutable_model()->set_topk_group(5);
  ExpectRejected(spec_, {"model.topk_group=5 exceeds model.n_group=4"});
}

TEST_F(JobSpecTest, SingleExpertGroupsAreRejected) {
  spec_.mutable_model()->set_n_group(16);
  ExpectRejected(spec_, {"model.n_routed_experts=16 / model.n_group=16", "at least 2"});
}

TEST_F(JobSpecTest, MoreExpertsPerTokenThanTheKeptGroupsHoldIsRejected) {
  spec_.mutable_model()->set_num_experts_per_tok(9);  // 2 groups x 4 experts = 8
  ExpectRejected(spec_, {"model.num_experts_per_tok=9", "model.topk_group=2"});
}

TEST_F(JobSpecTest, ExpertsPerTokenEqualToTheKeptGroupsIsAccepted) {
  spec_.mutable_model()->set_num_experts_per_tok(8);
  EXPECT_THAT(Validate(spec_), IsOk());
}

TEST_F(JobSpecTest, HuggingFaceKeysAcceptOnlyTheDeepSeekV3Values) {
  struct Case {
    const char* json;
    const char* field;
  };
  const Case cases[] = {
      {R"({"model_type": "llama"})", "model.model_type=\"llama\""},
      {R"({"hidden_act": "gelu"})", "model.hidden_act=\"gelu\""},
      {R"({"scoring_func": "softmax"})", "model.scoring_func=\"softmax\""},
      {R"({"topk_method": "greedy"})", "model.topk_method=\"greedy\""},
      {R"({"norm_topk_prob": false})", "model.norm_topk_prob=false"},
      {R"({"tie_word_embeddings": true})", "model.tie_word_embeddings=true"},
      {R"({"attention_bias": true})", "model.attention_bias=true"},
      {R"({"attention_dropout": 0.1})", "model.attention_dropout=0.1"},
      {R"({"moe_layer_freq": 2})", "model.moe_layer_freq=2"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    absl::StatusOr<v1::JobSpec> patch = ParseJobSpec(std::string(R"({"model": )") + c.json + "}");
    ASSERT_THAT(patch, IsOk());
    v1::JobSpec spec = spec_;
    spec.mutable_model()->MergeFrom(patch->model());
    ExpectRejected(spec, {c.field, "not supported"});
  }
}

TEST_F(JobSpecTest, HuggingFaceKeysWithTheDeepSeekV3ValuesAreAccepted) {
  absl::StatusOr<v1::JobSpec> patch = ParseJobSpec(R"({"model": {
      "model_type": "deepseek_v3", "hidden_act": "silu", "scoring_func": "sigmoid",
      "topk_method": "noaux_tc", "norm_topk_prob": true, "tie_word_embeddings": false,
      "attention_bias": false, "attention_dropout": 0.0, "moe_layer_freq": 1, "seq_aux": true}})");
  ASSERT_THAT(patch, IsOk());
  spec_.mutable_model()->MergeFrom(patch->model());
  EXPECT_THAT(Validate(spec_), IsOk());
}

void SetYarn(v1::RopeScaling* rope) {
  rope->set_type("yarn");
  rope->set_factor(40);
  rope->set_original_max_position_embeddings(4096);
  rope->set_mscale(1.0);
  rope->set_mscale_all_dim(1.0);
}

TEST_F(JobSpecTest, RopeScalingIsRejectedForPreTraining) {
  SetYarn(spec_.mutable_model()->mutable_rope_scaling());
  ExpectRejected(spec_, {"remove model.rope_scaling for pre-training (spec §11.7)"});
}

TEST_F(JobSpecTest, RopeScalingIsAcceptedForPostTrainingAfterContextExtension) {
  spec_.set_stage("post_training");
  SetYarn(spec_.mutable_model()->mutable_rope_scaling());
  EXPECT_OK(Validate(spec_));
}

class RopeScalingTest : public JobSpecTest {
 protected:
  void SetUp() override {
    JobSpecTest::SetUp();
    spec_.set_stage("context_extension");
    rope_ = spec_.mutable_model()->mutable_rope_scaling();
    SetYarn(rope_);
  }
  v1::RopeScaling* rope_ = nullptr;
};

TEST_F(RopeScalingTest, YarnIsAcceptedForContextExtensionWithBetaDefaults) {
  absl::StatusOr<v1::JobSpec> r = Validate(spec_);
  ASSERT_THAT(r, IsOk());
  EXPECT_DOUBLE_EQ(r->model().rope_scaling().beta_fast(), 32);
  EXPECT_DOUBLE_EQ(r->model().rope_scaling().beta_slow(), 1);
}

TEST_F(RopeScalingTest, TypeOtherThanYarnIsRejected) {
  rope_->set_type("linear");
  ExpectRejected(spec_, {"model.rope_scaling.type=\"linear\""});
}

TEST_F(RopeScalingTest, MscaleDifferentFromMscaleAllDimIsRejected) {
  rope_->set_mscale(0.707);
  ExpectRejected(spec_, {"model.rope_scaling.mscale=0.707", "mscale_all_dim=1", "§11.7"});
}

TEST_F(RopeScalingTest, MissingMscaleAllDimIsRejected) {
  rope_->clear_mscale_all_dim();
  ExpectRejected(spec_, {"model.rope_scaling.mscale_all_dim is required"});
}

TEST_F(RopeScalingTest, FactorBelowOneIsRejected) {
  rope_->set_factor(0.5);
  ExpectRejected(spec_, {"model.rope_scaling.factor=0.5"});
}

TEST_F(RopeScalingTest, MissingOriginalLengthIsRejected) {
  rope_->clear_original_max_position_embeddings();
  ExpectRejected(spec_, {"model.rope_scaling.original_max_position_embeddings is required"});
}

TEST_F(RopeScalingTest, BetaFastNotAboveBetaSlowIsRejected) {
  rope_->set_beta_fast(1);
  ExpectRejected(spec_, {"model.rope_scaling.beta_fast=1", "beta_slow=1"});
}

// ---------------------------------------------------------------------------------------------
// Parallel.

TEST_F(JobSpecTest, ParallelSectionIsRequired) {
  spec_.clear_parallel();
  ExpectRejected(spec_, {"parallel is required"});
}

TEST_F(JobSpecTest, PipelineParallelIsRequired) {
  spec_.mutable_parallel()->clear_pipeline_parallel();
  ExpectRejected(spec_, {"parallel.pipeline_parallel is required"});
}

TEST_F(JobSpecTest, MicroBatchesIsRequired) {
  spec_.mutable_parallel()->clear_micro_batches();
  ExpectRejected(spec_, {"parallel.micro_batches is required"});
}

TEST_F(JobSpecTest, NonPositivePipelineParallelIsRejected) {
  spec_.mutable_parallel()->set_pipeline_parallel(0);
  ExpectRejected(spec_, {"parallel.pipeline_parallel=0 must be positive"});
}

TEST_F(JobSpecTest, ExpertParallelNotDividingExpertsIsRejected) {
  spec_.mutable_parallel()->set_expert_parallel(3);
  ExpectRejected(spec_, {"parallel.expert_parallel=3 does not divide model.n_routed_experts=16"});
}

TEST_F(JobSpecTest, UnknownScheduleIsRejected) {
  spec_.mutable_parallel()->set_schedule("gpipe");
  ExpectRejected(spec_, {"parallel.schedule=\"gpipe\"", "\"dualpipev\""});
}

TEST_F(JobSpecTest, DualPipeRejectsAnOddPipeline) {
  spec_.mutable_parallel()->set_pipeline_parallel(3);
  ExpectRejected(spec_, {"parallel.pipeline_parallel=3 must be even", "dualpipe"});
}

TEST_F(JobSpecTest, DualPipeRejectsAnOddMicroBatchCount) {
  spec_.mutable_parallel()->set_micro_batches(9);
  spec_.mutable_train()->set_global_batch_tokens(int64_t{128} * 9);
  ExpectRejected(spec_, {"parallel.micro_batches=9 must be even"});
}

TEST_F(JobSpecTest, DualPipeNeedsTwiceAsManyMicroBatchesAsRanks) {
  spec_.mutable_parallel()->set_micro_batches(2);
  ExpectRejected(spec_,
                 {"parallel.micro_batches=2 must be at least 2 x parallel.pipeline_parallel = 4"});
}

TEST_F(JobSpecTest, DualPipeVNeedsTwiceAsManyMicroBatchesAsRanks) {
  spec_.mutable_parallel()->set_schedule("dualpipev");
  spec_.mutable_parallel()->set_micro_batches(3);
  spec_.mutable_train()->set_global_batch_tokens(int64_t{128} * 3);
  ExpectRejected(spec_,
                 {"parallel.micro_batches=3 must be at least 2 x parallel.pipeline_parallel = 4",
                  "dualpipev"});
}

TEST_F(JobSpecTest, DualPipeVAcceptsOddPipelineAndOddMicroBatches) {
  spec_.mutable_parallel()->set_schedule("dualpipev");
  spec_.mutable_parallel()->set_pipeline_parallel(1);
  spec_.mutable_parallel()->set_micro_batches(3);
  spec_.mutable_parallel()->set_min_workers(1);
  spec_.mutable_train()->set_global_batch_tokens(int64_t{128} * 3);
  EXPECT_THAT(Validate(spec_), IsOk());
}

TEST_F(JobSpecTest, OneFOneBAcceptsAnyMicroBatchCount) {
  spec_.mutable_parallel()->set_schedule("1f1b");
  spec_.mutable_parallel()->set_pipeline_parallel(3);
  spec_.mutable_parallel()->set_micro_batches(1);
  spec_.mutable_parallel()->set_min_workers(3);
  spec_.mutable_train()->set_global_batch_tokens(128);
  EXPECT_THAT(Validate(spec_), IsOk());
}

TEST_F(JobSpecTest, DualPipeNeedsALayerPerStage) {
  spec_.mutable_parallel()->set_pipeline_parallel(6);
  spec_.mutable_parallel()->set_micro_batches(12);
  spec_.mutable_parallel()->set_min_workers(6);
  spec_.mutable_train()->set_global_batch_tokens(int64_t{128} * 12);
  ExpectRejected(spec_, {"model.num_hidden_layers=4 is fewer than the 6 pipeline stages"});
}

TEST_F(JobSpecTest, DualPipeVNeedsTwoLayersPerRank) {
  spec_.mutable_parallel()->set_schedule("dualpipev");
  spec_.mutable_parallel()->set_pipeline_parallel(3);
  spec_.mutable_parallel()->set_min_workers(3);
  ExpectRejected(spec_,
                 {"model.num_hidden_layers=4 is fewer than the 6 pipeline stages", "dualpipev"});
}

TEST_F(JobSpecTest, MinWorkersBelowPipelineIsRejected) {
  spec_.mutable_parallel()->set_min_workers(1);
  ExpectRejected(spec_, {"parallel.min_workers=1 is less than parallel.pipeline_parallel=2"});
}

TEST_F(JobSpecTest, MaxWorkersBelowMinWorkersIsRejected) {
  spec_.mutable_parallel()->set_min_workers(4);
  spec_.mutable_parallel()->set_max_workers(3);
  ExpectRejected(spec_, {"parallel.max_workers=3 is less than parallel.min_workers=4"});
}

// ---------------------------------------------------------------------------------------------
// Train.

TEST_F(JobSpecTest, TrainSectionIsRequired) {
  spec_.clear_train();
  ExpectRejected(spec_, {"train is required"});
}

TEST_F(JobSpecTest, RequiredTrainFieldsAreNamedWhenMissing) {
  for (const char* name : {"seq_len", "global_batch_tokens", "steps", "lr"}) {
    SCOPED_TRACE(name);
    v1::JobSpec spec = spec_;
    auto* train = spec.mutable_train();
    train->GetReflection()->ClearField(train, train->GetDescriptor()->FindFieldByName(name));
    ExpectRejected(spec, {std::string("train.") + name + " is required"});
  }
}

TEST_F(JobSpecTest, NonPositiveStepsAreRejected) {
  spec_.mutable_train()->set_steps(0);
  ExpectRejected(spec_, {"train.steps=0 must be positive"});
}

TEST_F(JobSpecTest, NonPositiveLearningRateIsRejected) {
  spec_.mutable_train()->set_lr(-1e-3);
  ExpectRejected(spec_, {"train.lr=-0.001 must be positive"});
}

TEST_F(JobSpecTest, GlobalBatchNotAMultipleOfMicroBatchSequencesIsRejected) {
  spec_.mutable_train()->set_global_batch_tokens(16384 + 128);
  ExpectRejected(spec_, {"train.global_batch_tokens=16512 is not a multiple of train.seq_len x "
                         "parallel.micro_batches = 128 x 8"});
}

TEST_F(JobSpecTest, GlobalBatchSmallerThanOneSequencePerMicroBatchIsRejected) {
  spec_.mutable_train()->set_global_batch_tokens(128);
  ExpectRejected(spec_, {"train.global_batch_tokens=128 is not a multiple"});
}

TEST_F(JobSpecTest, SequenceLongerThanMaxPositionEmbeddingsIsRejected) {
  spec_.mutable_model()->set_max_position_embeddings(64);
  ExpectRejected(spec_, {"train.seq_len=128 exceeds model.max_position_embeddings=64"});
}

TEST_F(JobSpecTest, MtpNeedsAtLeastTwoPositions) {
  spec_.mutable_train()->set_seq_len(1);
  ExpectRejected(spec_, {"train.seq_len=1 must be at least 2"});
}

TEST_F(JobSpecTest, MinLrAboveLrIsRejected) {
  spec_.mutable_train()->set_min_lr(1.0);
  ExpectRejected(spec_, {"train.min_lr=1 exceeds train.lr=0.003"});
}

TEST_F(JobSpecTest, WarmupLongerThanTrainingIsRejected) {
  spec_.mutable_train()->set_warmup_steps(301);
  ExpectRejected(spec_, {"train.warmup_steps=301 exceeds train.steps=300"});
}

TEST_F(JobSpecTest, NegativeRegularisationWeightsAreRejected) {
  for (const char* name : {"weight_decay", "grad_clip", "mtp_loss_weight", "bias_update_speed",
                           "seq_aux_loss_alpha"}) {
    SCOPED_TRACE(name);
    v1::JobSpec spec = spec_;
    auto* train = spec.mutable_train();
    train->GetReflection()->SetDouble(train, train->GetDescriptor()->FindFieldByName(name), -0.5);
    ExpectRejected(spec, {std::string("train.") + name + "=-0.5 must not be negative"});
  }
}

TEST_F(JobSpecTest, ValidationTokensNotWholeSequencesAreRejected) {
  spec_.mutable_train()->set_val_tokens(1000);
  ExpectRejected(spec_, {"train.val_tokens=1000 is not a multiple of train.seq_len=128"});
}

// ---------------------------------------------------------------------------------------------
// Checkpoint and accounting.

TEST_F(JobSpecTest, NegativeCheckpointCadenceIsRejected) {
  spec_.mutable_checkpoint()->set_every_steps(-1);
  ExpectRejected(spec_, {"checkpoint.every_steps=-1 must not be negative"});
}

TEST_F(JobSpecTest, KeepingNoCheckpointIsRejected) {
  spec_.mutable_checkpoint()->set_keep(0);
  ExpectRejected(spec_, {"checkpoint.keep=0 must be positive"});
}

TEST_F(JobSpecTest, NegativePriceIsRejected) {
  spec_.mutable_accounting()->set_price_per_device_hour(-2);
  ExpectRejected(spec_, {"accounting.price_per_device_hour=-2 must not be negative"});
}

// ---------------------------------------------------------------------------------------------
// Data files.

TEST_F(JobSpecTest, DataTrainIsRequired) {
  spec_.mutable_data()->clear_train();
  ExpectRejected(spec_, {"data.train is required"});
}

TEST_F(JobSpecTest, MissingDataFileIsNamedWithItsResolvedPath) {
  spec_.mutable_data()->set_train("data/nope.bin");
  ExpectRejected(spec_, {"data.train: " + (dir_ / "data/nope.bin").string() + " does not exist"});
}

TEST_F(JobSpecTest, DirectoryAsDataFileIsRejected) {
  spec_.mutable_data()->set_val("data/brown");
  ExpectRejected(spec_, {"data.val: ", "is not a regular file"});
}

TEST_F(JobSpecTest, UnreadableDataFileIsRejected) {
  if (geteuid() == 0) {
    GTEST_SKIP() << "root reads files whatever their mode";
  }
  fs::permissions(dir_ / "data/brown/train.bin", fs::perms::none);
  ExpectRejected(spec_, {"data.train: ", "cannot be opened"});
}

TEST_F(JobSpecTest, FileShorterThanTheHeaderIsRejected) {
  std::ofstream(dir_ / "data/brown/train.bin", std::ios::binary) << "short";
  ExpectRejected(spec_, {"data.train: ", "5 bytes, shorter than the 1024-byte", "header"});
}

TEST_F(JobSpecTest, BadMagicIsRejected) {
  WriteShard(dir_ / "data/brown/train.bin", 4096, 1, /*magic=*/12345);
  ExpectRejected(spec_, {"data.train: ", "not an llm.c token shard", "magic 12345"});
}

TEST_F(JobSpecTest, UnknownShardVersionIsRejected) {
  WriteShard(dir_ / "data/brown/val.bin", 4096, /*version=*/3);
  ExpectRejected(spec_, {"data.val: ", "version 3"});
}

TEST_F(JobSpecTest, TruncatedShardIsRejected) {
  WriteShard(dir_ / "data/brown/train.bin", 4096, 1, 20240520, /*tokens_written=*/4000);
  ExpectRejected(spec_, {"data.train: ", "header says 4096 tokens of 2 bytes", "truncated"});
}

TEST_F(JobSpecTest, ShardLongerThanItsHeaderIsRejected) {
  WriteShard(dir_ / "data/brown/train.bin", 4096, 1, 20240520, /*tokens_written=*/5000);
  ExpectRejected(spec_, {"data.train: ", "longer than its header says"});
}

TEST_F(JobSpecTest, ShardWithoutOneFullSequenceIsRejected) {
  WriteShard(dir_ / "data/brown/val.bin", 128);  // needs seq_len + 1 = 129
  ExpectRejected(spec_, {"data.val: ", "holds 128 tokens, fewer than train.seq_len+1 = 129"});
}

TEST_F(JobSpecTest, ShardOfExactlyOneSequencePlusOneIsAccepted) {
  WriteShard(dir_ / "data/brown/val.bin", 129);
  EXPECT_THAT(Validate(spec_), IsOk());
}

TEST_F(JobSpecTest, Uint16ShardCannotHoldALargeVocabulary) {
  spec_.mutable_model()->set_vocab_size(65537);
  ExpectRejected(spec_, {"data.train: ", "uint16 tokens (version 1)", "model.vocab_size=65537"});
}

TEST_F(JobSpecTest, Uint16ShardHoldsAVocabularyOf65536) {
  spec_.mutable_model()->set_vocab_size(65536);
  EXPECT_THAT(Validate(spec_), IsOk());
}

TEST_F(JobSpecTest, Uint32ShardsServeALargeVocabulary) {
  spec_.mutable_model()->set_vocab_size(129280);
  WriteShard(dir_ / "data/brown/train.bin", 4096, /*version=*/2);
  WriteShard(dir_ / "data/brown/val.bin", 4096, /*version=*/2);
  EXPECT_THAT(Validate(spec_), IsOk());
}

// ---------------------------------------------------------------------------------------------
// Estimates and the released DeepSeek-V3 config.json.

absl::StatusOr<v1::JobSpec> ReleasedConfigAsModel() {
  return ParseJobSpec(R"({"model": )" + ReadFile(kTestdata / "deepseek_v3_config.json") + "}");
}

TEST(ValidateForEstimateTest, ReleasedDeepSeekV3ConfigIsAccepted) {
  absl::StatusOr<v1::JobSpec> spec = ReleasedConfigAsModel();
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->model().quantization_config().weight_block_size_size(), 2);
  EXPECT_EQ(spec->model().auto_map().size(), 3u);
  EXPECT_THAT(ValidateForEstimate(*spec), IsOk());
}

TEST(ValidateForEstimateTest, ReleasedConfigMapsToThe671BModelConfig) {
  absl::StatusOr<v1::JobSpec> spec = ReleasedConfigAsModel();
  ASSERT_THAT(spec, IsOk());
  const ModelConfig c = ToModelConfig(spec->model());
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.first_k_dense_replace, 3);
  EXPECT_EQ(c.intermediate_size, 18432);
  EXPECT_EQ(c.moe_intermediate_size, 2048);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.num_experts_per_tok, 8);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.num_attention_heads, 128);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.qk_nope_head_dim, 128);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.v_head_dim, 128);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000);
}

TEST(ValidateForEstimateTest, ToModelConfigKeepsDefaultsForAbsentFields) {
  v1::ModelSpec model;
  model.set_hidden_size(64);
  const ModelConfig c = ToModelConfig(model);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000);
}

TEST_F(JobSpecTest, ReleasedConfigIsRejectedForAPreTrainingJobBecauseOfRopeScaling) {
  absl::StatusOr<v1::JobSpec> released = ReleasedConfigAsModel();
  ASSERT_THAT(released, IsOk());
  *spec_.mutable_model() = released->model();
  spec_.mutable_model()->set_vocab_size(4096);  // fits the uint16 test shards
  ExpectRejected(spec_, {"remove model.rope_scaling for pre-training (spec §11.7)"});
}

TEST_F(JobSpecTest, ReleasedConfigWithoutRopeScalingIsAcceptedForPreTraining) {
  absl::StatusOr<v1::JobSpec> released = ReleasedConfigAsModel();
  ASSERT_THAT(released, IsOk());
  *spec_.mutable_model() = released->model();
  spec_.mutable_model()->clear_rope_scaling();
  WriteShard(dir_ / "data/brown/train.bin", 4096, /*version=*/2);
  WriteShard(dir_ / "data/brown/val.bin", 4096, /*version=*/2);
  EXPECT_THAT(Validate(spec_), IsOk());
}

TEST(ValidateForEstimateTest, NameTrainAndDataAreNotNeeded) {
  absl::StatusOr<v1::JobSpec> spec = ReleasedConfigAsModel();
  ASSERT_THAT(spec, IsOk());
  spec->set_stage("pre_training");  // the stage-vs-rope_scaling rule does not apply
  EXPECT_FALSE(spec->has_train());
  EXPECT_TRUE(spec->name().empty());
  EXPECT_THAT(ValidateForEstimate(*spec), IsOk());
}

TEST(ValidateForEstimateTest, ModelRulesStillApply) {
  absl::StatusOr<v1::JobSpec> spec = ReleasedConfigAsModel();
  ASSERT_THAT(spec, IsOk());
  spec->mutable_model()->set_topk_group(9);
  EXPECT_THAT(ValidateForEstimate(*spec),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("model.topk_group=9 exceeds model.n_group=8")));
}

TEST(ValidateForEstimateTest, ParallelRulesApplyWhenTheSectionIsPresent) {
  absl::StatusOr<v1::JobSpec> spec = ReleasedConfigAsModel();
  ASSERT_THAT(spec, IsOk());
  spec->mutable_parallel()->set_pipeline_parallel(16);
  spec->mutable_parallel()->set_micro_batches(32);
  spec->mutable_parallel()->set_expert_parallel(3);
  EXPECT_THAT(ValidateForEstimate(*spec),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("parallel.expert_parallel=3 does not divide "
                                 "model.n_routed_experts=256")));
}

TEST(ValidateForEstimateTest, UnknownStageIsRejected) {
  absl::StatusOr<v1::JobSpec> spec = ReleasedConfigAsModel();
  ASSERT_THAT(spec, IsOk());
  spec->set_stage("fine_tuning");
  EXPECT_THAT(ValidateForEstimate(*spec),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("stage=\"fine_tuning\"")));
}

TEST(ValidateForEstimateTest, NonPositiveSeqLenIsRejected) {
  absl::StatusOr<v1::JobSpec> spec = ReleasedConfigAsModel();
  ASSERT_THAT(spec, IsOk());
  spec->mutable_train()->set_seq_len(0);
  EXPECT_THAT(ValidateForEstimate(*spec), StatusIs(absl::StatusCode::kInvalidArgument,
                                                   HasSubstr("train.seq_len=0 must be positive")));
}

TEST(ValidateForEstimateTest, MissingModelIsRejected) {
  EXPECT_THAT(ValidateForEstimate(v1::JobSpec()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model is required")));
}

}  // namespace
}  // namespace dsv3::coordinator
