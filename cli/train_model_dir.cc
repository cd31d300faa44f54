// Reading a model directory's config.json with the job spec's validation (train_model_dir.h).
#include "cli/train_model_dir.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "coordinator/job_spec.h"
#include "engine/model/model_io.h"
#include "engine/train/posix_file.h"

namespace dsv3::cli {
namespace {

absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfigJson(std::string_view text, std::string_view source) {
  // No newline before the text, so the parser's line numbers are the file's.
  const std::string wrapped = absl::StrCat(R"({"model": )", AsAbsl(text), "\n}");
  absl::StatusOr<v1::JobSpec> spec = coordinator::ParseJobSpec(wrapped);
  absl::Status status = spec.status();
  if (status.ok()) status = coordinator::ValidateForEstimate(*spec);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(AsAbsl(source), ": ", status.message()));
  }
  return coordinator::ToModelConfig(spec->model());
}

absl::StatusOr<ModelDir> ReadModelDir(const std::string& dir) {
  const std::string config_path = (std::filesystem::path(dir) / model::kConfigFileName).string();
  ModelDir out;
  out.weights_path = (std::filesystem::path(dir) / model::kWeightsFileName).string();
  if (!std::filesystem::is_directory(dir)) {
    return absl::NotFoundError(absl::StrCat("model directory ", dir, " does not exist"));
  }
  ASSIGN_OR_RETURN(const std::string text, train::ReadSmallFile(config_path));
  ASSIGN_OR_RETURN(out.config, ParseModelConfigJson(text, config_path));
  if (!std::filesystem::exists(out.weights_path)) {
    return absl::NotFoundError(absl::StrCat(out.weights_path,
                                            " does not exist (a model directory "
                                            "holds config.json and model.safetensors)"));
  }
  return out;
}

}  // namespace dsv3::cli
