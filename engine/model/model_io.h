// Hugging Face model I/O for a ParameterSet (DESIGN.md "Model I/O"): loading weights from a
// safetensors file that must hold exactly the tensors of the layout, writing values or gradients
// as F32 safetensors under the HF names, and writing a model directory (config.json +
// model.safetensors). Not here: parsing config.json into a validated ModelConfig (that reuses the
// job-spec validation, which the engine may not include: cli/train_model_dir.h does it).
#ifndef DSV3_ENGINE_MODEL_MODEL_IO_H_
#define DSV3_ENGINE_MODEL_MODEL_IO_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "engine/model/parameters.h"
#include "engine/train/safetensors.h"

namespace dsv3::model {

// The two files of a model directory.
inline constexpr char kConfigFileName[] = "config.json";
inline constexpr char kWeightsFileName[] = "model.safetensors";

// Checks that `reader` holds exactly the tensors of `layout` (no fewer, no other) with the layout's
// shapes, each a float dtype the loader reads (F32, F64, BF16, F16). Errors, all INVALID_ARGUMENT
// and prefixed with the file's path:
//   - "<m> of <n> tensors of the layout are missing, the first \"<name>\"" and/or
//     "<u> tensors are not in the layout, the first \"<name>\"" (one message when both happen);
//   - the first tensor (in layout order) whose shape differs, naming both shapes;
//   - the first tensor with another dtype (F8, integer, BOOL), naming it.
absl::Status CheckWeightsMatchLayout(const train::SafetensorsReader& reader,
                                     const ParameterLayout& layout);

// CheckWeightsMatchLayout, then reads every tensor (converted exactly to float; F64 rounded to
// nearest) into params->values. Errors: those of CheckWeightsMatchLayout; DATA_LOSS when the file
// is truncated or corrupt (the reader's error); errno codes of the reader. On error
// params->values may be partly overwritten.
absl::Status LoadWeights(const train::SafetensorsReader& reader, ParameterSet* params);
// The same for the file `path` (safetensors Open errors too: NOT_FOUND, DATA_LOSS, ...).
absl::Status LoadWeights(const std::string& path, ParameterSet* params);

// Which buffer of a ParameterSet to write.
enum class ParameterBuffer { kValues, kGrads };

// Writes `params`' values or gradients as one F32 safetensors file at `path` (atomically), every
// tensor of the layout under its HF name, in layout order. For kGrads, tensors that are not
// trainable (the router bias, ParamInfo::trainable == false) are written as zeros. Errors: those
// of SafetensorsWriter::WriteFile (the errno's code naming the path).
absl::Status WriteParameters(const ParameterSet& params, ParameterBuffer which,
                             const std::string& path);

// config.json text for `config`: the Hugging Face DeepSeek-V3 keys of ModelConfig (as
// train::ModelConfigToJson writes them, plus "model_type": "deepseek_v3" and, when
// config.has_yarn(), "rope_scaling" of type yarn), pretty-printed with a final newline.
std::string ModelConfigToHfJson(const ModelConfig& config);

// Writes a model directory: <dir>/config.json (ModelConfigToHfJson(params' config)) and
// <dir>/model.safetensors (WriteParameters of the values), creating `dir` if needed. `config` must
// be the config `params` was built for. Errors: the errno's code naming the path.
absl::Status WriteModelDir(const std::string& dir, const ModelConfig& config,
                           const ParameterSet& params);

}  // namespace dsv3::model

#endif  // DSV3_ENGINE_MODEL_MODEL_IO_H_
