// Job spec parsing, defaulting and validation (see job_spec.h). Parsing is strict_json.h's; this
// file holds the rules of docs/job-spec.md, run in their documented order, stopping at the first
// violation. No placement or storage happens here.
#include "coordinator/job_spec.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "coordinator/strict_json.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace dsv3::coordinator {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Validation helpers. Every rule returns INVALID_ARGUMENT naming "<section>.<field>".

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

std::string LowerBoundText(int64_t min) {
  if (min == 1) {
    return "must be positive";
  }
  if (min == 0) {
    return "must not be negative";
  }
  return absl::StrCat("must be >= ", min);
}

// An int64 field of `message` found by name; `required` fields must be present. Checks value >= min
// when present.
absl::Status CheckInt(const Message& message, std::string_view section, std::string_view name,
                      bool required, int64_t min) {
  const FieldDescriptor* field = message.GetDescriptor()->FindFieldByName(std::string(name));
  const Reflection* reflection = message.GetReflection();
  if (!reflection->HasField(message, field)) {
    if (required) {
      return Invalid(absl::StrFormat("%s.%s is required", section, name));
    }
    return absl::OkStatus();
  }
  const int64_t value = reflection->GetInt64(message, field);
  if (value < min) {
    return Invalid(absl::StrFormat("%s.%s=%d %s", section, name, value, LowerBoundText(min)));
  }
  return absl::OkStatus();
}

enum class Bound { kPositive, kNonNegative };

absl::Status CheckDouble(const Message& message, std::string_view section, std::string_view name,
                         bool required, Bound bound) {
  const FieldDescriptor* field = message.GetDescriptor()->FindFieldByName(std::string(name));
  const Reflection* reflection = message.GetReflection();
  if (!reflection->HasField(message, field)) {
    if (required) {
      return Invalid(absl::StrFormat("%s.%s is required", section, name));
    }
    return absl::OkStatus();
  }
  const double value = reflection->GetDouble(message, field);
  if (!std::isfinite(value)) {
    return Invalid(absl::StrFormat("%s.%s=%g must be finite", section, name, value));
  }
  if (bound == Bound::kPositive && !(value > 0)) {
    return Invalid(absl::StrFormat("%s.%s=%g must be positive", section, name, value));
  }
  if (bound == Bound::kNonNegative && value < 0) {
    return Invalid(absl::StrFormat("%s.%s=%g must not be negative", section, name, value));
  }
  return absl::OkStatus();
}

bool OneOf(std::string_view value, std::initializer_list<std::string_view> allowed) {
  return std::find(allowed.begin(), allowed.end(), value) != allowed.end();
}

std::string Quoted(std::initializer_list<std::string_view> values) {
  std::vector<std::string> quoted;
  for (std::string_view v : values) {
    quoted.push_back(absl::StrFormat("\"%s\"", v));
  }
  return absl::StrJoin(quoted, ", ");
}

// A string field restricted to the DeepSeek-V3 value: empty (absent) or exactly `expected`.
absl::Status CheckFixedString(std::string_view name, const std::string& value,
                              std::string_view expected) {
  if (value.empty() || value == expected) {
    return absl::OkStatus();
  }
  return Invalid(absl::StrFormat(
      "model.%s=\"%s\" is not supported: DeepSeek-V3 models need \"%s\" (or leave it out)", name,
      value, expected));
}

absl::Status CheckFixedBool(std::string_view name, bool present, bool value, bool expected) {
  if (!present || value == expected) {
    return absl::OkStatus();
  }
  return Invalid(
      absl::StrFormat("model.%s=%s is not supported: DeepSeek-V3 models need %s (or leave it out)",
                      name, value ? "true" : "false", expected ? "true" : "false"));
}

// ---------------------------------------------------------------------------------------------
// The sections, in validation order.

constexpr std::string_view kStages[] = {"pre_training", "context_extension", "post_training"};

absl::Status ValidateName(const v1::JobSpec& spec) {
  const std::string& name = spec.name();
  if (name.empty()) {
    return Invalid("name is required");
  }
  if (name.size() > 128) {
    return Invalid(
        absl::StrFormat("name is %d characters long; at most 128 are allowed", name.size()));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return Invalid(absl::StrFormat(
          "name=\"%s\" contains '%c'; a name may use only A-Z a-z 0-9 . _ -", name, c));
    }
  }
  if (name == "." || name == "..") {
    return Invalid(absl::StrFormat("name=\"%s\" is not allowed (it names a directory)", name));
  }
  return absl::OkStatus();
}

absl::Status ResolveStage(std::string& stage) {
  if (stage.empty()) {
    stage = "pre_training";
  }
  if (!OneOf(stage, {kStages[0], kStages[1], kStages[2]})) {
    return Invalid(absl::StrFormat("stage=\"%s\" must be one of %s", stage,
                                   Quoted({kStages[0], kStages[1], kStages[2]})));
  }
  return absl::OkStatus();
}

absl::Status ResolvePrecision(std::string& precision) {
  if (precision.empty()) {
    precision = "bf16";
  }
  if (!OneOf(precision, {"fp32", "bf16", "fp8"})) {
    return Invalid(absl::StrFormat("precision=\"%s\" must be one of %s", precision,
                                   Quoted({"fp32", "bf16", "fp8"})));
  }
  return absl::OkStatus();
}

absl::Status ValidateRopeScaling(v1::RopeScaling& rope) {
  if (rope.type() != "yarn") {
    return Invalid(absl::StrFormat(
        "model.rope_scaling.type=\"%s\" is not supported; only \"yarn\" is", rope.type()));
  }
  if (!rope.has_factor()) {
    return Invalid("model.rope_scaling.factor is required");
  }
  if (!std::isfinite(rope.factor()) || rope.factor() < 1) {
    return Invalid(
        absl::StrFormat("model.rope_scaling.factor=%g must be >= 1 (and finite)", rope.factor()));
  }
  RETURN_IF_ERROR(
      CheckInt(rope, "model.rope_scaling", "original_max_position_embeddings", true, 1));
  if (!rope.has_beta_fast()) {
    rope.set_beta_fast(32);
  }
  if (!rope.has_beta_slow()) {
    rope.set_beta_slow(1);
  }
  RETURN_IF_ERROR(CheckDouble(rope, "model.rope_scaling", "beta_fast", true, Bound::kPositive));
  RETURN_IF_ERROR(CheckDouble(rope, "model.rope_scaling", "beta_slow", true, Bound::kPositive));
  if (!(rope.beta_fast() > rope.beta_slow())) {
    return Invalid(
        absl::StrFormat("model.rope_scaling.beta_fast=%g must be greater than beta_slow=%g",
                        rope.beta_fast(), rope.beta_slow()));
  }
  RETURN_IF_ERROR(CheckDouble(rope, "model.rope_scaling", "mscale", true, Bound::kPositive));
  RETURN_IF_ERROR(
      CheckDouble(rope, "model.rope_scaling", "mscale_all_dim", true, Bound::kPositive));
  if (rope.mscale() != rope.mscale_all_dim()) {
    return Invalid(absl::StrFormat(
        "model.rope_scaling.mscale=%g differs from model.rope_scaling.mscale_all_dim=%g; they "
        "must be equal (spec §11.7)",
        rope.mscale(), rope.mscale_all_dim()));
  }
  return absl::OkStatus();
}

// Shape fields 1-19 are required; `min` is each one's lower bound.
struct IntField {
  std::string_view name;
  int64_t min;
};
constexpr IntField kModelIntFields[] = {
    {"vocab_size", 1},          {"hidden_size", 1},
    {"num_hidden_layers", 1},   {"first_k_dense_replace", 0},
    {"intermediate_size", 1},   {"moe_intermediate_size", 1},
    {"n_routed_experts", 1},    {"n_shared_experts", 0},
    {"num_experts_per_tok", 1}, {"n_group", 1},
    {"topk_group", 1},
};
constexpr IntField kModelAttentionFields[] = {
    {"num_attention_heads", 1},      {"q_lora_rank", 0},      {"kv_lora_rank", 1},
    {"qk_nope_head_dim", 1},         {"qk_rope_head_dim", 1}, {"v_head_dim", 1},
    {"num_nextn_predict_layers", 0},
};

absl::Status ResolveModel(v1::ModelSpec& model) {
  // 1. Presence and bounds, in field-number order.
  for (const IntField& f : kModelIntFields) {
    RETURN_IF_ERROR(CheckInt(model, "model", f.name, /*required=*/true, f.min));
  }
  RETURN_IF_ERROR(
      CheckDouble(model, "model", "routed_scaling_factor", /*required=*/true, Bound::kPositive));
  for (const IntField& f : kModelAttentionFields) {
    RETURN_IF_ERROR(CheckInt(model, "model", f.name, /*required=*/true, f.min));
  }
  if (!model.has_rms_norm_eps()) {
    model.set_rms_norm_eps(1e-6);
  }
  if (!model.has_rope_theta()) {
    model.set_rope_theta(10000);
  }
  RETURN_IF_ERROR(CheckDouble(model, "model", "rms_norm_eps", true, Bound::kPositive));
  RETURN_IF_ERROR(CheckDouble(model, "model", "rope_theta", true, Bound::kPositive));

  // 2. Consistency of the shape.
  if (model.first_k_dense_replace() > model.num_hidden_layers()) {
    return Invalid(
        absl::StrFormat("model.first_k_dense_replace=%d exceeds model.num_hidden_layers=%d",
                        model.first_k_dense_replace(), model.num_hidden_layers()));
  }
  if (model.qk_rope_head_dim() % 2 != 0) {
    return Invalid(
        absl::StrFormat("model.qk_rope_head_dim=%d must be even (RoPE rotates pairs of dimensions)",
                        model.qk_rope_head_dim()));
  }
  if (model.num_nextn_predict_layers() > 1) {
    return Invalid(absl::StrFormat(
        "model.num_nextn_predict_layers=%d is not supported; it must be 0 or 1 (MTP depth)",
        model.num_nextn_predict_layers()));
  }
  if (model.n_routed_experts() % model.n_group() != 0) {
    return Invalid(absl::StrFormat("model.n_group=%d does not divide model.n_routed_experts=%d",
                                   model.n_group(), model.n_routed_experts()));
  }
  if (model.topk_group() > model.n_group()) {
    return Invalid(absl::StrFormat("model.topk_group=%d exceeds model.n_group=%d",
                                   model.topk_group(), model.n_group()));
  }
  const int64_t group_size = model.n_routed_experts() / model.n_group();
  if (group_size < 2) {
    return Invalid(absl::StrFormat(
        "model.n_routed_experts=%d / model.n_group=%d leaves %d expert per group; a group needs "
        "at least 2 (its score is the sum of its top-2 experts, spec §11.5)",
        model.n_routed_experts(), model.n_group(), group_size));
  }
  if (model.num_experts_per_tok() > model.topk_group() * group_size) {
    return Invalid(absl::StrFormat(
        "model.num_experts_per_tok=%d exceeds the %d experts of the model.topk_group=%d kept "
        "groups (%d experts per group)",
        model.num_experts_per_tok(), model.topk_group() * group_size, model.topk_group(),
        group_size));
  }

  // 3. Hugging Face keys that would change the architecture: only the DeepSeek-V3 values.
  RETURN_IF_ERROR(CheckFixedString("model_type", model.model_type(), "deepseek_v3"));
  RETURN_IF_ERROR(CheckFixedString("hidden_act", model.hidden_act(), "silu"));
  RETURN_IF_ERROR(CheckFixedString("scoring_func", model.scoring_func(), "sigmoid"));
  RETURN_IF_ERROR(CheckFixedString("topk_method", model.topk_method(), "noaux_tc"));
  RETURN_IF_ERROR(
      CheckFixedBool("norm_topk_prob", model.has_norm_topk_prob(), model.norm_topk_prob(), true));
  RETURN_IF_ERROR(CheckFixedBool("tie_word_embeddings", model.has_tie_word_embeddings(),
                                 model.tie_word_embeddings(), false));
  RETURN_IF_ERROR(
      CheckFixedBool("attention_bias", model.has_attention_bias(), model.attention_bias(), false));
  if (model.has_attention_dropout() && model.attention_dropout() != 0) {
    return Invalid(absl::StrFormat(
        "model.attention_dropout=%g is not supported: DeepSeek-V3 models need 0 (or leave it out)",
        model.attention_dropout()));
  }
  if (model.has_moe_layer_freq() && model.moe_layer_freq() != 1) {
    return Invalid(absl::StrFormat(
        "model.moe_layer_freq=%d is not supported: DeepSeek-V3 models need 1 (or leave it out)",
        model.moe_layer_freq()));
  }
  RETURN_IF_ERROR(CheckInt(model, "model", "max_position_embeddings", false, 1));
  if (model.has_rope_scaling()) {
    RETURN_IF_ERROR(ValidateRopeScaling(*model.mutable_rope_scaling()));
  }
  return absl::OkStatus();
}

// YaRN belongs to the context-extension phases and to what follows them (DeepSeek-V3 was
// post-trained on the extended model), never to pre-training at the original length.
absl::Status CheckStageAllowsModel(const v1::JobSpec& spec) {
  if (!spec.model().has_rope_scaling() || spec.stage() != "pre_training") {
    return absl::OkStatus();
  }
  return Invalid(
      "model.rope_scaling (YaRN) is used only with stage=\"context_extension\" or "
      "\"post_training\", but stage=\"pre_training\": remove model.rope_scaling for "
      "pre-training (spec §11.7)");
}

absl::Status ResolveParallel(const v1::ModelSpec& model, v1::ParallelSpec& parallel) {
  RETURN_IF_ERROR(CheckInt(parallel, "parallel", "pipeline_parallel", true, 1));
  RETURN_IF_ERROR(CheckInt(parallel, "parallel", "micro_batches", true, 1));
  if (!parallel.has_expert_parallel()) {
    parallel.set_expert_parallel(1);
  }
  RETURN_IF_ERROR(CheckInt(parallel, "parallel", "expert_parallel", true, 1));
  const int64_t pp = parallel.pipeline_parallel();
  const int64_t ep = parallel.expert_parallel();
  const int64_t mb = parallel.micro_batches();
  if (model.n_routed_experts() % ep != 0) {
    return Invalid(
        absl::StrFormat("parallel.expert_parallel=%d does not divide model.n_routed_experts=%d", ep,
                        model.n_routed_experts()));
  }
  if (parallel.schedule().empty()) {
    parallel.set_schedule("dualpipe");
  }
  const std::string& schedule = parallel.schedule();
  if (!OneOf(schedule, {"dualpipe", "dualpipev", "1f1b"})) {
    return Invalid(absl::StrFormat("parallel.schedule=\"%s\" must be one of %s", schedule,
                                   Quoted({"dualpipe", "dualpipev", "1f1b"})));
  }
  if (schedule == "dualpipe") {
    if (pp % 2 != 0) {
      return Invalid(absl::StrFormat(
          "parallel.pipeline_parallel=%d must be even for parallel.schedule=\"dualpipe\" "
          "(spec §6.1)",
          pp));
    }
    if (mb % 2 != 0) {
      return Invalid(absl::StrFormat(
          "parallel.micro_batches=%d must be even for parallel.schedule=\"dualpipe\" (half enter "
          "from each end, spec §6.3)",
          mb));
    }
  }
  if ((schedule == "dualpipe" || schedule == "dualpipev") && mb < 2 * pp) {
    return Invalid(absl::StrFormat(
        "parallel.micro_batches=%d must be at least 2 x parallel.pipeline_parallel = %d for "
        "parallel.schedule=\"%s\" (spec §6.3)",
        mb, 2 * pp, schedule));
  }
  const int64_t stages = schedule == "dualpipev" ? 2 * pp : pp;
  if (model.num_hidden_layers() < stages) {
    return Invalid(absl::StrFormat(
        "model.num_hidden_layers=%d is fewer than the %d pipeline stages that "
        "parallel.schedule=\"%s\" with parallel.pipeline_parallel=%d needs (one layer per stage "
        "at least)",
        model.num_hidden_layers(), stages, schedule, pp));
  }
  if (!parallel.has_min_workers()) {
    parallel.set_min_workers(pp);
  }
  if (parallel.min_workers() < pp) {
    return Invalid(absl::StrFormat(
        "parallel.min_workers=%d is less than parallel.pipeline_parallel=%d (one worker per rank)",
        parallel.min_workers(), pp));
  }
  if (!parallel.has_max_workers()) {
    parallel.set_max_workers(std::max(parallel.min_workers(), pp * ep));
  }
  if (parallel.max_workers() < parallel.min_workers()) {
    return Invalid(absl::StrFormat("parallel.max_workers=%d is less than parallel.min_workers=%d",
                                   parallel.max_workers(), parallel.min_workers()));
  }
  return absl::OkStatus();
}

absl::Status ResolveTrain(const v1::ModelSpec& model, const v1::ParallelSpec& parallel,
                          v1::TrainSpec& train) {
  RETURN_IF_ERROR(CheckInt(train, "train", "seq_len", true, 1));
  RETURN_IF_ERROR(CheckInt(train, "train", "global_batch_tokens", true, 1));
  RETURN_IF_ERROR(CheckInt(train, "train", "steps", true, 1));
  RETURN_IF_ERROR(CheckDouble(train, "train", "lr", true, Bound::kPositive));
  const int64_t seq_len = train.seq_len();
  if (model.num_nextn_predict_layers() > 0 && seq_len < 2) {
    return Invalid(absl::StrFormat(
        "train.seq_len=%d must be at least 2 when model.num_nextn_predict_layers=%d (MTP predicts "
        "the token after next)",
        seq_len, model.num_nextn_predict_layers()));
  }
  if (model.has_max_position_embeddings() && seq_len > model.max_position_embeddings()) {
    return Invalid(absl::StrFormat("train.seq_len=%d exceeds model.max_position_embeddings=%d",
                                   seq_len, model.max_position_embeddings()));
  }
  const int64_t mb = parallel.micro_batches();
  const __int128 per_step = static_cast<__int128>(seq_len) * mb;
  if (per_step > train.global_batch_tokens() || train.global_batch_tokens() % per_step != 0) {
    return Invalid(absl::StrFormat(
        "train.global_batch_tokens=%d is not a multiple of train.seq_len x "
        "parallel.micro_batches = %d x %d (every micro-batch holds whole sequences)",
        train.global_batch_tokens(), seq_len, mb));
  }
  if (!train.has_min_lr()) {
    train.set_min_lr(train.lr() / 10);
  }
  RETURN_IF_ERROR(CheckDouble(train, "train", "min_lr", true, Bound::kNonNegative));
  if (train.min_lr() > train.lr()) {
    return Invalid(
        absl::StrFormat("train.min_lr=%g exceeds train.lr=%g", train.min_lr(), train.lr()));
  }
  if (!train.has_warmup_steps()) {
    train.set_warmup_steps(0);
  }
  RETURN_IF_ERROR(CheckInt(train, "train", "warmup_steps", true, 0));
  if (train.warmup_steps() > train.steps()) {
    return Invalid(absl::StrFormat("train.warmup_steps=%d exceeds train.steps=%d",
                                   train.warmup_steps(), train.steps()));
  }
  if (!train.has_weight_decay()) {
    train.set_weight_decay(0.1);
  }
  if (!train.has_grad_clip()) {
    train.set_grad_clip(1.0);
  }
  if (!train.has_seed()) {
    train.set_seed(1);
  }
  if (!train.has_mtp_loss_weight()) {
    train.set_mtp_loss_weight(0.3);
  }
  if (!train.has_bias_update_speed()) {
    train.set_bias_update_speed(0.001);
  }
  if (!train.has_seq_aux_loss_alpha()) {
    train.set_seq_aux_loss_alpha(1e-4);
  }
  for (std::string_view name : {"weight_decay", "grad_clip", "mtp_loss_weight", "bias_update_speed",
                                "seq_aux_loss_alpha"}) {
    RETURN_IF_ERROR(CheckDouble(train, "train", name, true, Bound::kNonNegative));
  }
  if (!train.has_val_every_steps()) {
    train.set_val_every_steps(0);
  }
  RETURN_IF_ERROR(CheckInt(train, "train", "val_every_steps", true, 0));
  if (!train.has_val_tokens()) {
    train.set_val_tokens(train.global_batch_tokens());
  }
  RETURN_IF_ERROR(CheckInt(train, "train", "val_tokens", true, 1));
  if (train.val_tokens() % seq_len != 0) {
    return Invalid(absl::StrFormat(
        "train.val_tokens=%d is not a multiple of train.seq_len=%d (validation reads whole "
        "sequences)",
        train.val_tokens(), seq_len));
  }
  return absl::OkStatus();
}

// `base` is absolute; the result is absolute and lexically normal.
std::string ResolvePath(const fs::path& base, const std::string& path) {
  fs::path p(path);
  if (p.is_relative()) {
    p = base / p;
  }
  return p.lexically_normal().string();
}

absl::Status ResolveCheckpoint(const std::string& name, const fs::path& base,
                               v1::CheckpointSpec& checkpoint) {
  if (checkpoint.dir().empty()) {
    checkpoint.set_dir((base / "runs" / name).lexically_normal().string());
  } else {
    checkpoint.set_dir(ResolvePath(base, checkpoint.dir()));
  }
  if (!checkpoint.has_every_steps()) {
    checkpoint.set_every_steps(0);
  }
  RETURN_IF_ERROR(CheckInt(checkpoint, "checkpoint", "every_steps", true, 0));
  if (!checkpoint.has_keep()) {
    checkpoint.set_keep(3);
  }
  RETURN_IF_ERROR(CheckInt(checkpoint, "checkpoint", "keep", true, 1));
  return absl::OkStatus();
}

absl::Status ResolveAccounting(v1::AccountingSpec& accounting) {
  if (!accounting.has_price_per_device_hour()) {
    accounting.set_price_per_device_hour(2.0);
  }
  if (!accounting.has_device_peak_tflops()) {
    accounting.set_device_peak_tflops(0);
  }
  RETURN_IF_ERROR(
      CheckDouble(accounting, "accounting", "price_per_device_hour", true, Bound::kNonNegative));
  RETURN_IF_ERROR(
      CheckDouble(accounting, "accounting", "device_peak_tflops", true, Bound::kNonNegative));
  return absl::OkStatus();
}

constexpr int32_t kShardMagic = 20240520;
constexpr int64_t kShardHeaderBytes = int64_t{256} * 4;

int32_t ReadLittleEndianInt32(const unsigned char* p) {
  return static_cast<int32_t>(static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                              static_cast<uint32_t>(p[2]) << 16 |
                              static_cast<uint32_t>(p[3]) << 24);
}

// Checks an llm.c token shard's header against its size, the sequence length and the vocabulary.
absl::Status CheckTokenShard(std::string_view field, const std::string& path,
                             const v1::ModelSpec& model, const v1::TrainSpec& train) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    return Invalid(absl::StrFormat("%s: %s does not exist", field, path));
  }
  if (!fs::is_regular_file(status)) {
    return Invalid(absl::StrFormat("%s: %s is not a regular file", field, path));
  }
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) {
    return Invalid(
        absl::StrFormat("%s: cannot read the size of %s: %s", field, path, ec.message()));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Invalid(absl::StrFormat("%s: %s cannot be opened for reading: %s", field, path,
                                   std::strerror(errno)));
  }
  if (size < static_cast<uintmax_t>(kShardHeaderBytes)) {
    return Invalid(absl::StrFormat(
        "%s: %s is %d bytes, shorter than the %d-byte llm.c token-shard header (truncated?)", field,
        path, size, kShardHeaderBytes));
  }
  std::array<unsigned char, 12> header;
  if (!in.read(reinterpret_cast<char*>(header.data()), header.size())) {
    return Invalid(absl::StrFormat("%s: %s: reading the header failed", field, path));
  }
  const int32_t magic = ReadLittleEndianInt32(&header[0]);
  const int32_t version = ReadLittleEndianInt32(&header[4]);
  const int32_t count = ReadLittleEndianInt32(&header[8]);
  if (magic != kShardMagic) {
    return Invalid(absl::StrFormat(
        "%s: %s is not an llm.c token shard: its header starts with magic %d, expected %d", field,
        path, magic, kShardMagic));
  }
  if (version != 1 && version != 2) {
    return Invalid(absl::StrFormat(
        "%s: %s has token-shard version %d; only 1 (uint16 tokens) and 2 (uint32 tokens) exist",
        field, path, version));
  }
  if (count < 0) {
    return Invalid(
        absl::StrFormat("%s: %s: header token count %d is negative", field, path, count));
  }
  const int64_t token_bytes = version == 1 ? 2 : 4;
  const uintmax_t expected_size = kShardHeaderBytes + static_cast<uintmax_t>(count) * token_bytes;
  if (size != expected_size) {
    return Invalid(absl::StrFormat(
        "%s: %s is %d bytes, but its header says %d tokens of %d bytes (%d bytes with the "
        "header): the file is %s",
        field, path, size, count, token_bytes, expected_size,
        size < expected_size ? "truncated" : "longer than its header says"));
  }
  if (count < train.seq_len() + 1) {
    return Invalid(absl::StrFormat(
        "%s: %s holds %d tokens, fewer than train.seq_len+1 = %d (one sequence and its last "
        "target)",
        field, path, count, train.seq_len() + 1));
  }
  if (version == 1 && model.vocab_size() > 65536) {
    return Invalid(
        absl::StrFormat("%s: %s stores uint16 tokens (version 1), which cannot hold the ids of "
                        "model.vocab_size=%d; write it as version 2 (uint32 tokens)",
                        field, path, model.vocab_size()));
  }
  return absl::OkStatus();
}

absl::Status ResolveData(const fs::path& base, const ValidateOptions& opts,
                         const v1::ModelSpec& model, const v1::TrainSpec& train,
                         v1::DataSpec& data) {
  if (data.train().empty()) {
    return Invalid("data.train is required");
  }
  data.set_train(ResolvePath(base, data.train()));
  if (!data.val().empty()) {
    data.set_val(ResolvePath(base, data.val()));
  }
  if (!opts.check_data_files) {
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(CheckTokenShard("data.train", data.train(), model, train));
  if (!data.val().empty()) {
    RETURN_IF_ERROR(CheckTokenShard("data.val", data.val(), model, train));
  }
  return absl::OkStatus();
}

absl::StatusOr<fs::path> AbsoluteBaseDir(const std::string& base_dir) {
  std::error_code ec;
  fs::path base = base_dir.empty() ? fs::current_path(ec) : fs::absolute(base_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrFormat("base_dir \"%s\" cannot be made absolute: %s", base_dir, ec.message()));
  }
  return base.lexically_normal();
}

}  // namespace

absl::StatusOr<v1::JobSpec> ParseJobSpec(std::string_view text) {
  if (static_cast<int64_t>(text.size()) > kMaxJobSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("job spec is %d bytes; at most %d bytes (1 MiB) are accepted", text.size(),
                        kMaxJobSpecBytes));
  }
  v1::JobSpec spec;
  RETURN_IF_ERROR(ParseProtoJsonStrictly(text, "job spec", &spec));
  return spec;
}

absl::StatusOr<v1::JobSpec> ValidateJobSpec(const v1::JobSpec& spec, const ValidateOptions& opts) {
  v1::JobSpec resolved = spec;
  RETURN_IF_ERROR(ValidateName(resolved));
  RETURN_IF_ERROR(ResolveStage(*resolved.mutable_stage()));
  RETURN_IF_ERROR(ResolvePrecision(*resolved.mutable_precision()));
  if (!resolved.has_model()) {
    return Invalid("model is required");
  }
  RETURN_IF_ERROR(ResolveModel(*resolved.mutable_model()));
  RETURN_IF_ERROR(CheckStageAllowsModel(resolved));
  if (!resolved.has_parallel()) {
    return Invalid("parallel is required");
  }
  RETURN_IF_ERROR(ResolveParallel(resolved.model(), *resolved.mutable_parallel()));
  if (!resolved.has_train()) {
    return Invalid("train is required");
  }
  RETURN_IF_ERROR(ResolveTrain(resolved.model(), resolved.parallel(), *resolved.mutable_train()));
  ASSIGN_OR_RETURN(const fs::path base, AbsoluteBaseDir(opts.base_dir));
  RETURN_IF_ERROR(ResolveCheckpoint(resolved.name(), base, *resolved.mutable_checkpoint()));
  RETURN_IF_ERROR(ResolveAccounting(*resolved.mutable_accounting()));
  if (!resolved.has_data()) {
    return Invalid("data is required (data.train names the token shard)");
  }
  RETURN_IF_ERROR(
      ResolveData(base, opts, resolved.model(), resolved.train(), *resolved.mutable_data()));
  return resolved;
}

absl::Status ValidateForEstimate(const v1::JobSpec& spec) {
  v1::JobSpec resolved = spec;
  if (!resolved.stage().empty()) {
    RETURN_IF_ERROR(ResolveStage(*resolved.mutable_stage()));
  }
  if (!resolved.has_model()) {
    return Invalid("model is required");
  }
  RETURN_IF_ERROR(ResolveModel(*resolved.mutable_model()));
  if (resolved.has_parallel()) {
    RETURN_IF_ERROR(ResolveParallel(resolved.model(), *resolved.mutable_parallel()));
  }
  RETURN_IF_ERROR(CheckInt(resolved.train(), "train", "seq_len", false, 1));
  return absl::OkStatus();
}

ModelConfig ToModelConfig(const v1::ModelSpec& model) {
  ModelConfig config;  // a field the spec leaves out keeps ModelConfig's default
#define DSV3_COPY_IF_SET_(field) \
  if (model.has_##field()) config.field = model.field()
  DSV3_COPY_IF_SET_(vocab_size);
  DSV3_COPY_IF_SET_(hidden_size);
  DSV3_COPY_IF_SET_(num_hidden_layers);
  DSV3_COPY_IF_SET_(first_k_dense_replace);
  DSV3_COPY_IF_SET_(intermediate_size);
  DSV3_COPY_IF_SET_(moe_intermediate_size);
  DSV3_COPY_IF_SET_(n_routed_experts);
  DSV3_COPY_IF_SET_(n_shared_experts);
  DSV3_COPY_IF_SET_(num_experts_per_tok);
  DSV3_COPY_IF_SET_(n_group);
  DSV3_COPY_IF_SET_(topk_group);
  DSV3_COPY_IF_SET_(routed_scaling_factor);
  DSV3_COPY_IF_SET_(num_attention_heads);
  DSV3_COPY_IF_SET_(q_lora_rank);
  DSV3_COPY_IF_SET_(kv_lora_rank);
  DSV3_COPY_IF_SET_(qk_nope_head_dim);
  DSV3_COPY_IF_SET_(qk_rope_head_dim);
  DSV3_COPY_IF_SET_(v_head_dim);
  DSV3_COPY_IF_SET_(num_nextn_predict_layers);
  DSV3_COPY_IF_SET_(rms_norm_eps);  // default 1e-6
  DSV3_COPY_IF_SET_(rope_theta);    // default 10000
#undef DSV3_COPY_IF_SET_
  if (model.has_rope_scaling()) {
    const v1::RopeScaling& rs = model.rope_scaling();
    config.rope_scaling_factor = rs.has_factor() ? rs.factor() : 1.0;
    if (rs.has_original_max_position_embeddings())
      config.rope_original_max_position_embeddings = rs.original_max_position_embeddings();
    if (rs.has_beta_fast()) config.rope_beta_fast = rs.beta_fast();
    if (rs.has_beta_slow()) config.rope_beta_slow = rs.beta_slow();
    if (rs.has_mscale()) config.rope_mscale = rs.mscale();
  }
  return config;
}

}  // namespace dsv3::coordinator
