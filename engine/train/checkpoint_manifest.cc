// The checkpoint manifest and its JSON form; see checkpoint_manifest.h.
#include "engine/train/checkpoint_manifest.h"

#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "engine/train/checksum.h"
#include "engine/train/str_cat.h"
#include "nlohmann/json.hpp"

namespace dsv3::train {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kSelfChecksumKey = "manifest_crc32c";
constexpr std::string_view kRankStateFormat = "dsv3-rank-state";

constexpr CheckpointFileKind kKinds[] = {CheckpointFileKind::kModel, CheckpointFileKind::kOptimizer,
                                         CheckpointFileKind::kState};

struct IntField {
  const char* key;
  int64_t ModelConfig::*member;
};
struct DoubleField {
  const char* key;
  double ModelConfig::*member;
};

constexpr IntField kIntFields[] = {
    {"vocab_size", &ModelConfig::vocab_size},
    {"hidden_size", &ModelConfig::hidden_size},
    {"num_hidden_layers", &ModelConfig::num_hidden_layers},
    {"first_k_dense_replace", &ModelConfig::first_k_dense_replace},
    {"intermediate_size", &ModelConfig::intermediate_size},
    {"moe_intermediate_size", &ModelConfig::moe_intermediate_size},
    {"n_routed_experts", &ModelConfig::n_routed_experts},
    {"n_shared_experts", &ModelConfig::n_shared_experts},
    {"num_experts_per_tok", &ModelConfig::num_experts_per_tok},
    {"n_group", &ModelConfig::n_group},
    {"topk_group", &ModelConfig::topk_group},
    {"num_attention_heads", &ModelConfig::num_attention_heads},
    {"q_lora_rank", &ModelConfig::q_lora_rank},
    {"kv_lora_rank", &ModelConfig::kv_lora_rank},
    {"qk_nope_head_dim", &ModelConfig::qk_nope_head_dim},
    {"qk_rope_head_dim", &ModelConfig::qk_rope_head_dim},
    {"v_head_dim", &ModelConfig::v_head_dim},
    {"num_nextn_predict_layers", &ModelConfig::num_nextn_predict_layers},
};
constexpr DoubleField kDoubleFields[] = {
    {"routed_scaling_factor", &ModelConfig::routed_scaling_factor},
    {"rms_norm_eps", &ModelConfig::rms_norm_eps},
    {"rope_theta", &ModelConfig::rope_theta},
};

Json ModelConfigJson(const ModelConfig& config) {
  Json j = Json::object();
  for (const IntField& f : kIntFields) j[f.key] = config.*f.member;
  for (const DoubleField& f : kDoubleFields) j[f.key] = config.*f.member;
  if (config.has_yarn()) {  // Hugging Face's rope_scaling object, only when YaRN is on
    j["rope_scaling"] = {{"type", "yarn"},
                         {"factor", config.rope_scaling_factor},
                         {"original_max_position_embeddings",
                          config.rope_original_max_position_embeddings},
                         {"beta_fast", config.rope_beta_fast},
                         {"beta_slow", config.rope_beta_slow},
                         {"mscale", config.rope_mscale},
                         {"mscale_all_dim", config.rope_mscale}};
  }
  return j;
}

absl::StatusOr<ModelConfig> ModelConfigFromJsonValue(const Json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("model_config is not an object");
  ModelConfig config;
  for (const IntField& f : kIntFields) {
    auto it = j.find(f.key);
    if (it == j.end() || !it->is_number_integer()) {
      return absl::InvalidArgumentError(
          StrCat("model_config.", f.key, " is missing or not an integer"));
    }
    config.*f.member = it->get<int64_t>();
  }
  for (const DoubleField& f : kDoubleFields) {
    auto it = j.find(f.key);
    if (it == j.end() || !it->is_number()) {
      return absl::InvalidArgumentError(
          StrCat("model_config.", f.key, " is missing or not a number"));
    }
    config.*f.member = it->get<double>();
  }
  if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
    auto number = [&](const char* key, double* out) -> absl::Status {
      auto it = rs->find(key);
      if (it == rs->end() || !it->is_number()) {
        return absl::InvalidArgumentError(
            StrCat("model_config.rope_scaling.", key, " is missing or not a number"));
      }
      *out = it->get<double>();
      return absl::OkStatus();
    };
    if (!rs->is_object()) {
      return absl::InvalidArgumentError("model_config.rope_scaling is not an object");
    }
    double original = 0;
    for (auto [key, out] : {std::pair<const char*, double*>{"factor", &config.rope_scaling_factor},
                            {"original_max_position_embeddings", &original},
                            {"beta_fast", &config.rope_beta_fast},
                            {"beta_slow", &config.rope_beta_slow},
                            {"mscale", &config.rope_mscale}}) {
      if (absl::Status st = number(key, out); !st.ok()) return st;
    }
    config.rope_original_max_position_embeddings = static_cast<int64_t>(original);
  }
  return config;
}

absl::StatusOr<CheckpointFileKind> KindFromName(std::string_view name) {
  for (CheckpointFileKind kind : kKinds) {
    if (CheckpointFileKindName(kind) == name) return kind;
  }
  return absl::InvalidArgumentError(StrCat("unknown file kind '", name, "'"));
}

// The manifest's JSON object without its self-checksum.
Json ManifestBody(const Manifest& m) {
  Json j = Json::object();
  j["format"] = kCheckpointFormat;
  j["format_version"] = m.format_version;
  j["step"] = m.step;
  j["epoch"] = m.epoch;
  j["world_size"] = m.world_size;
  j["layout"] = Json::object();
  for (const auto& [k, v] : m.layout) j["layout"][k] = v;
  j["model_config"] = ModelConfigJson(m.model_config);
  j["created_at"] = m.created_at;
  j["files"] = Json::array();
  for (const CheckpointFile& f : m.files) {
    j["files"].push_back({{"name", f.name},
                          {"rank", f.rank},
                          {"kind", CheckpointFileKindName(f.kind)},
                          {"size", f.size},
                          {"crc32c", Crc32cToHex(f.crc32c)}});
  }
  return j;
}

// Reads an integer field into `out`, which must be in [lo, hi].
bool GetInt(const Json& j, const char* key, int64_t lo, int64_t hi, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return false;
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return false;
  }
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

}  // namespace

std::string_view CheckpointFileKindName(CheckpointFileKind kind) {
  switch (kind) {
    case CheckpointFileKind::kModel:
      return "model";
    case CheckpointFileKind::kOptimizer:
      return "optimizer";
    case CheckpointFileKind::kState:
      return "state";
  }
  return "?";
}

std::string CheckpointFileName(int rank, CheckpointFileKind kind) {
  switch (kind) {
    case CheckpointFileKind::kModel:
      return StrCat("rank-", rank, ".safetensors");
    case CheckpointFileKind::kOptimizer:
      return StrCat("rank-", rank, "-optim.safetensors");
    case CheckpointFileKind::kState:
      return StrCat("rank-", rank, "-state.json");
  }
  return "?";
}

const CheckpointFile* Manifest::FindFile(int rank, CheckpointFileKind kind) const {
  for (const CheckpointFile& f : files) {
    if (f.rank == rank && f.kind == kind) return &f;
  }
  return nullptr;
}

absl::Status CheckFileSet(const std::vector<CheckpointFile>& files, int world_size) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(StrCat("world_size=", world_size, " is below 1"));
  }
  const size_t expected = static_cast<size_t>(world_size) * std::size(kKinds);
  size_t i = 0;
  for (int rank = 0; rank < world_size; ++rank) {
    for (CheckpointFileKind kind : kKinds) {
      const std::string want = CheckpointFileName(rank, kind);
      if (i >= files.size()) {
        return absl::InvalidArgumentError(
            StrCat("file ", want, " (rank ", rank, ", ", CheckpointFileKindName(kind),
                   ") is missing from the list of ", files.size(), " files"));
      }
      const CheckpointFile& f = files[i++];
      if (f.name != want || f.rank != rank || f.kind != kind) {
        return absl::InvalidArgumentError(StrCat("file #", i - 1, " is ", f.name, " (rank ", f.rank,
                                                 ", ", CheckpointFileKindName(f.kind),
                                                 "), expected ", want, " (rank ", rank, ", ",
                                                 CheckpointFileKindName(kind), ")"));
      }
    }
  }
  if (files.size() != expected) {
    return absl::InvalidArgumentError(StrCat("unexpected file ", files[expected].name,
                                             " beyond the ", expected,
                                             " of world_size=", world_size));
  }
  return absl::OkStatus();
}

std::string ManifestToJson(const Manifest& manifest) {
  Json j = ManifestBody(manifest);
  const uint32_t crc = Crc32c(j.dump());
  j[std::string(kSelfChecksumKey)] = Crc32cToHex(crc);
  return j.dump(2) + "\n";
}

absl::StatusOr<Manifest> ManifestFromJson(std::string_view text, std::string_view source) {
  auto corrupt = [&source](auto&&... parts) {
    return absl::DataLossError(StrCat("manifest ", source, ": ", parts...));
  };
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return corrupt("not valid JSON");
  if (!j.is_object()) return corrupt("not a JSON object");
  auto crc_it = j.find(kSelfChecksumKey);
  if (crc_it == j.end() || !crc_it->is_string()) return corrupt("no \"manifest_crc32c\"");
  absl::StatusOr<uint32_t> stored = Crc32cFromHex(crc_it->get<std::string>());
  if (!stored.ok()) return corrupt(stored.status().message());
  j.erase(std::string(kSelfChecksumKey));
  const uint32_t actual = Crc32c(j.dump());
  if (actual != *stored) {
    return corrupt("checksum mismatch: manifest_crc32c says ", Crc32cToHex(*stored),
                   ", the content has ", Crc32cToHex(actual));
  }

  auto format = j.find("format");
  if (format == j.end() || !format->is_string() ||
      format->get<std::string>() != kCheckpointFormat) {
    return absl::FailedPreconditionError(
        StrCat("manifest ", source, ": \"format\" is not \"", kCheckpointFormat, "\""));
  }
  Manifest m;
  int64_t v;
  if (!GetInt(j, "format_version", 1, INT32_MAX, &v)) return corrupt("bad \"format_version\"");
  if (v > kCheckpointFormatVersion) {
    return absl::FailedPreconditionError(StrCat("manifest ", source, ": format_version ", v,
                                                " is newer than the ", kCheckpointFormatVersion,
                                                " this build reads"));
  }
  m.format_version = static_cast<int>(v);
  if (!GetInt(j, "step", 0, INT64_MAX, &m.step)) return corrupt("bad \"step\"");
  if (!GetInt(j, "epoch", 0, INT64_MAX, &m.epoch)) return corrupt("bad \"epoch\"");
  if (!GetInt(j, "world_size", 1, 1 << 20, &v)) return corrupt("bad \"world_size\"");
  m.world_size = static_cast<int>(v);

  auto layout = j.find("layout");
  if (layout == j.end() || !layout->is_object()) return corrupt("bad \"layout\"");
  for (auto it = layout->begin(); it != layout->end(); ++it) {
    if (!it->is_number_integer()) return corrupt("layout.", it.key(), " is not an integer");
    m.layout[it.key()] = it->get<int64_t>();
  }
  auto config = j.find("model_config");
  if (config == j.end()) return corrupt("no \"model_config\"");
  absl::StatusOr<ModelConfig> model_config = ModelConfigFromJsonValue(*config);
  if (!model_config.ok()) return corrupt(model_config.status().message());
  m.model_config = *model_config;
  auto created = j.find("created_at");
  if (created != j.end() && created->is_string()) m.created_at = created->get<std::string>();

  auto files = j.find("files");
  if (files == j.end() || !files->is_array()) return corrupt("no \"files\" list");
  for (const Json& f : *files) {
    CheckpointFile file;
    if (!f.is_object()) return corrupt("a \"files\" entry is not an object");
    auto name = f.find("name");
    auto kind = f.find("kind");
    auto crc = f.find("crc32c");
    if (name == f.end() || !name->is_string()) return corrupt("a \"files\" entry has no name");
    file.name = name->get<std::string>();
    if (!GetInt(f, "rank", 0, INT32_MAX, &v)) return corrupt("file ", file.name, ": bad \"rank\"");
    file.rank = static_cast<int>(v);
    if (!GetInt(f, "size", 0, INT64_MAX, &v)) return corrupt("file ", file.name, ": bad \"size\"");
    file.size = static_cast<uint64_t>(v);
    if (kind == f.end() || !kind->is_string()) return corrupt("file ", file.name, ": no \"kind\"");
    absl::StatusOr<CheckpointFileKind> k = KindFromName(kind->get<std::string>());
    if (!k.ok()) return corrupt("file ", file.name, ": ", k.status().message());
    file.kind = *k;
    if (crc == f.end() || !crc->is_string()) return corrupt("file ", file.name, ": no \"crc32c\"");
    absl::StatusOr<uint32_t> c = Crc32cFromHex(crc->get<std::string>());
    if (!c.ok()) return corrupt("file ", file.name, ": ", c.status().message());
    file.crc32c = *c;
    m.files.push_back(std::move(file));
  }
  if (absl::Status s = CheckFileSet(m.files, m.world_size); !s.ok()) return corrupt(s.message());
  return m;
}

absl::StatusOr<std::string> RankStateToJson(const RankState& state, int64_t step, int64_t epoch,
                                            int rank, int world_size) {
  Json j = Json::object();
  j["format"] = kRankStateFormat;
  j["format_version"] = 1;
  j["step"] = step;
  j["epoch"] = epoch;
  j["rank"] = rank;
  j["world_size"] = world_size;
  j["tokens_seen"] = state.tokens_seen;
  j["data_position"] = state.data_position;
  j["rng_state_base64"] = absl::Base64Escape(state.rng_state);
  j["extra"] = Json::object();
  for (const auto& [k, v] : state.extra) j["extra"][k] = v;
  try {
    return j.dump(2) + "\n";
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        StrCat("rank ", rank, " state: a key or value of `extra` is not valid UTF-8"));
  }
}

absl::StatusOr<RankState> RankStateFromJson(std::string_view text, std::string_view path,
                                            const Manifest& m, int rank) {
  auto corrupt = [&path](auto&&... parts) {
    return absl::DataLossError(StrCat("rank state ", path, ": ", parts...));
  };
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return corrupt("not a JSON object");
  auto get_int = [&j](const char* key, int64_t* out) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) return false;
    *out = it->get<int64_t>();
    return true;
  };
  auto format = j.find("format");
  if (format == j.end() || *format != kRankStateFormat)
    return corrupt("\"format\" is not ", kRankStateFormat);
  int64_t version, step, epoch, file_rank, world_size;
  RankState state;
  if (!get_int("format_version", &version) || version < 1) return corrupt("bad \"format_version\"");
  if (version > 1) {
    return absl::FailedPreconditionError(StrCat("rank state ", path, ": format_version ", version,
                                                " is newer than the 1 this build reads"));
  }
  if (!get_int("step", &step) || !get_int("epoch", &epoch) || !get_int("rank", &file_rank) ||
      !get_int("world_size", &world_size) || !get_int("tokens_seen", &state.tokens_seen) ||
      !get_int("data_position", &state.data_position)) {
    return corrupt("a counter is missing or not an integer");
  }
  if (step != m.step || epoch != m.epoch || file_rank != rank || world_size != m.world_size) {
    return corrupt("written for step ", step, " epoch ", epoch, " rank ", file_rank, " of ",
                   world_size, ", the manifest says step ", m.step, " epoch ", m.epoch, " rank ",
                   rank, " of ", m.world_size);
  }
  auto rng = j.find("rng_state_base64");
  if (rng == j.end() || !rng->is_string() ||
      !absl::Base64Unescape(rng->get<std::string>(), &state.rng_state)) {
    return corrupt("\"rng_state_base64\" is missing or not base64");
  }
  auto extra = j.find("extra");
  if (extra == j.end() || !extra->is_object()) return corrupt("\"extra\" is not an object");
  for (auto it = extra->begin(); it != extra->end(); ++it) {
    if (!it->is_string()) return corrupt("extra.", it.key(), " is not a string");
    state.extra[it.key()] = it->get<std::string>();
  }
  return state;
}

std::string ModelConfigToJson(const ModelConfig& config) { return ModelConfigJson(config).dump(); }

absl::StatusOr<ModelConfig> ModelConfigFromJson(std::string_view text) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("model_config is not valid JSON");
  return ModelConfigFromJsonValue(j);
}

std::vector<std::string> ModelConfigDifferences(const ModelConfig& checkpoint,
                                                const ModelConfig& job) {
  std::vector<std::string> out;
  for (const IntField& f : kIntFields) {
    if (checkpoint.*f.member != job.*f.member) {
      out.push_back(StrCat(f.key, ": checkpoint ", checkpoint.*f.member, ", job ", job.*f.member));
    }
  }
  for (const DoubleField& f : kDoubleFields) {
    if (checkpoint.*f.member != job.*f.member) {
      out.push_back(StrCat(f.key, ": checkpoint ", checkpoint.*f.member, ", job ", job.*f.member));
    }
  }
  return out;
}

}  // namespace dsv3::train
