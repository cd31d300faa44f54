// Turning a committed training checkpoint into a Hugging Face-layout model directory (the engine
// side of `dsv3-train export`): the union of every rank's model shard, checked against the layout
// of the manifest's model config. Not here: optimizer state and rank state (export drops them),
// resharding for a resume (engine/train), flag parsing (cli/train_export_cmd.h).
//
// The checkpoint contract: rank-<r>.safetensors holds F32 tensors under HF names for the
// parameters rank r owns; a tensor may be held by several ranks (replicas), then with identical
// bytes; together the ranks hold exactly ParameterLayout::Build(manifest.model_config).
#ifndef DSV3_ENGINE_MODEL_CHECKPOINT_EXPORT_H_
#define DSV3_ENGINE_MODEL_CHECKPOINT_EXPORT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "engine/model/parameters.h"

namespace dsv3::model {

// A checkpoint's full model.
struct CheckpointModel {
  int64_t step = 0;
  int world_size = 0;
  ModelConfig config;
  ParameterSet params;  // values filled; grads zero
};

// Opens committed checkpoint `checkpoint_dir` (train::CheckpointReader::Open, so every file's size
// and CRC32C are verified before use) and assembles its parameters. Errors: those of
// CheckpointReader::Open / OpenModel (NOT_FOUND without a manifest, DATA_LOSS for a file whose
// checksum or format is wrong, ...); DATA_LOSS naming the tensor and the ranks when a tensor held
// by several ranks differs between them, when a tensor is not F32 or has another shape than the
// layout, or when the union of the ranks' tensors is not exactly the layout (naming the first
// missing / unexpected tensor and the counts).
// Export writes the result with model_io.h's WriteModelDir(out_dir, model.config, model.params).
absl::StatusOr<CheckpointModel> LoadCheckpointModel(const std::string& checkpoint_dir);

}  // namespace dsv3::model

#endif  // DSV3_ENGINE_MODEL_CHECKPOINT_EXPORT_H_
