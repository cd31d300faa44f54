// Reading a Hugging Face-layout model directory for dsv3-train's verbs: config.json parsed and
// validated with the job spec's rules (coordinator/job_spec.h, so config.json accepts exactly what
// a job spec's "model" section accepts, a released DeepSeek-V3 config.json included), and the path
// of its weights. The weights themselves are loaded by engine/model/model_io.h. Not here: writing
// model directories (model_io.h), running the model.
#ifndef DSV3_CLI_TRAIN_MODEL_DIR_H_
#define DSV3_CLI_TRAIN_MODEL_DIR_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/model_config.h"

namespace dsv3::cli {

// Parses the text of a config.json (an object of Hugging Face DeepSeek-V3 keys) by wrapping it as
// {"model": <text>} and running coordinator::ParseJobSpec + ValidateForEstimate + ToModelConfig.
// `source` (a path) prefixes every message. Errors: INVALID_ARGUMENT naming the key and the rule
// (malformed JSON, an unknown key, a missing required key, an inconsistent value, ...).
absl::StatusOr<ModelConfig> ParseModelConfigJson(std::string_view text, std::string_view source);

// A model directory: <dir>/config.json and <dir>/model.safetensors.
struct ModelDir {
  ModelConfig config;
  std::string weights_path;  // <dir>/model.safetensors (not opened here)
};

// Reads and validates <dir>/config.json. Errors: NOT_FOUND naming the file when config.json or
// model.safetensors is missing; INVALID_ARGUMENT as ParseModelConfigJson; the errno's code when
// config.json cannot be read.
absl::StatusOr<ModelDir> ReadModelDir(const std::string& dir);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_TRAIN_MODEL_DIR_H_
