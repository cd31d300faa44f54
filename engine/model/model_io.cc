// Hugging Face model I/O for a ParameterSet (model_io.h): layout checks, loading, writing F32
// safetensors and model directories. No config validation and no tensor math here.
#include "engine/model/model_io.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <system_error>

#include "common/status_macros.h"
#include "engine/train/checkpoint_manifest.h"
#include "engine/train/posix_file.h"
#include "engine/train/str_cat.h"
#include "nlohmann/json.hpp"

namespace dsv3::model {
namespace {

using train::DType;
using train::StrCat;

bool IsLoadableDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kBF16 ||
         dtype == DType::kF16;
}

}  // namespace

absl::Status CheckWeightsMatchLayout(const train::SafetensorsReader& reader,
                                     const ParameterLayout& layout) {
  const std::string prefix = StrCat(reader.path(), ": ");
  // Missing tensors, in layout order.
  int64_t missing = 0;
  const ParamInfo* first_missing = nullptr;
  for (const ParamInfo& p : layout.params()) {
    if (!reader.Contains(p.name)) {
      if (first_missing == nullptr) first_missing = &p;
      ++missing;
    }
  }
  // Tensors the layout does not have, in file (data) order.
  int64_t unexpected = 0;
  const train::TensorInfo* first_unexpected = nullptr;
  for (const train::TensorInfo& t : reader.tensors()) {
    if (layout.Find(t.name) == nullptr) {
      if (first_unexpected == nullptr) first_unexpected = &t;
      ++unexpected;
    }
  }
  if (missing > 0 || unexpected > 0) {
    std::string message = prefix;
    if (missing > 0) {
      absl::StrAppend(&message, missing, " of ", layout.params().size(),
                      " tensors of the layout are missing, the first \"", first_missing->name,
                      "\"");
    }
    if (unexpected > 0) {
      absl::StrAppend(&message, missing > 0 ? "; " : "", unexpected,
                      " tensors are not in the layout of the config, the first \"",
                      first_unexpected->name, "\"");
    }
    return absl::InvalidArgumentError(message);
  }
  for (const ParamInfo& p : layout.params()) {
    const train::TensorInfo* t = *reader.Find(p.name);
    if (t->shape != p.shape) {
      return absl::InvalidArgumentError(
          StrCat(prefix, "tensor \"", p.name, "\" has shape ", train::ShapeToString(t->shape),
                 ", the config needs ", train::ShapeToString(p.shape)));
    }
    if (!IsLoadableDType(t->dtype)) {
      return absl::InvalidArgumentError(StrCat(prefix, "tensor \"", p.name, "\" has dtype ",
                                               train::DTypeName(t->dtype),
                                               "; weights must be F32, F64, BF16 or F16"));
    }
  }
  return absl::OkStatus();
}

absl::Status LoadWeights(const train::SafetensorsReader& reader, ParameterSet* params) {
  RETURN_IF_ERROR(CheckWeightsMatchLayout(reader, params->layout));
  for (const ParamInfo& p : params->layout.params()) {
    ASSIGN_OR_RETURN(const std::vector<float> data, reader.ReadAsFloat(p.name, p.shape));
    std::copy(data.begin(), data.end(), params->values.begin() + p.offset);
  }
  return absl::OkStatus();
}

absl::Status LoadWeights(const std::string& path, ParameterSet* params) {
  ASSIGN_OR_RETURN(const train::SafetensorsReader reader, train::SafetensorsReader::Open(path));
  return LoadWeights(reader, params);
}

absl::Status WriteParameters(const ParameterSet& params, ParameterBuffer which,
                             const std::string& path) {
  const std::vector<float>& buffer =
      which == ParameterBuffer::kValues ? params.values : params.grads;
  // Zeros for the gradients of non-trainable tensors; borrowed by the writer, so it lives here.
  int64_t zeros_size = 0;
  if (which == ParameterBuffer::kGrads) {
    for (const ParamInfo& p : params.layout.params()) {
      if (!p.trainable) zeros_size = std::max(zeros_size, p.size);
    }
  }
  const std::vector<float> zeros(static_cast<size_t>(zeros_size), 0.0f);
  train::SafetensorsWriter writer;
  for (const ParamInfo& p : params.layout.params()) {
    const float* data =
        which == ParameterBuffer::kGrads && !p.trainable ? zeros.data() : buffer.data() + p.offset;
    RETURN_IF_ERROR(writer.Add(p.name, DType::kF32, p.shape, data,
                               static_cast<size_t>(p.size) * sizeof(float)));
  }
  return writer.WriteFile(path).status();
}

std::string ModelConfigToHfJson(const ModelConfig& config) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(train::ModelConfigToJson(config));
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  out["model_type"] = "deepseek_v3";
  for (auto& [key, value] : j.items()) out[key] = value;
  if (config.has_yarn()) {
    out["rope_scaling"] = {
        {"type", "yarn"},
        {"factor", config.rope_scaling_factor},
        {"original_max_position_embeddings", config.rope_original_max_position_embeddings},
        {"beta_fast", config.rope_beta_fast},
        {"beta_slow", config.rope_beta_slow},
        {"mscale", config.rope_mscale},
        {"mscale_all_dim", config.rope_mscale},
    };
  }
  return out.dump(2) + "\n";
}

absl::Status WriteModelDir(const std::string& dir, const ModelConfig& config,
                           const ParameterSet& params) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return train::PosixError(ec.value(), "cannot create directory", dir);
  }
  RETURN_IF_ERROR(train::WriteFileAtomically(
      (std::filesystem::path(dir) / kConfigFileName).string(), ModelConfigToHfJson(config)));
  return WriteParameters(params, ParameterBuffer::kValues,
                         (std::filesystem::path(dir) / kWeightsFileName).string());
}

}  // namespace dsv3::model
