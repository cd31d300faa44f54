// What a single-process training run puts into a checkpoint and takes back on resume: the model
// (every parameter of the layout as an F32 tensor under its Hugging Face name, router biases
// included -- `dsv3-train export` relies on this), the AdamW state (optimizer.h) and the rank state
// (step, tokens seen, data position = the next step). Written as rank 0 of world size 1 through
// checkpoint.h's protocol (write, commit, prune); read through checkpoint_reader.h with every file
// verified. Not here: when to checkpoint (trainer.h), multi-rank shards and resharding.
#ifndef DSV3_ENGINE_TRAIN_TRAINER_CHECKPOINT_H_
#define DSV3_ENGINE_TRAIN_TRAINER_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "engine/model/parameters.h"
#include "engine/train/checkpoint_manifest.h"
#include "engine/train/optimizer.h"
#include "engine/train/safetensors.h"

namespace dsv3::train {

// Adds every parameter of `params` to `writer` as an F32 tensor named as in the layout, with the
// layout's shape, BORROWED from params->values (keep them unchanged until the writer is done).
absl::Status AddModelTensors(const model::ParameterSet& params, SafetensorsWriter* writer);

// Reads every parameter of params->layout from `reader` into params->values (copied into the
// existing buffer, which stays where it is: a model holds pointers into it), all or nothing.
// DATA_LOSS naming the file and the tensor when a tensor is missing, is not F32, has another
// shape, or is not a parameter of the layout; read errors of the reader.
absl::Status LoadModelTensors(const SafetensorsReader& reader, model::ParameterSet* params);

struct SavedCheckpoint {
  std::string path;                 // the committed directory, <root>/step-<N>
  std::vector<std::string> pruned;  // what retention removed
};

// Writes and commits step `state`'s checkpoint under `root` as rank 0 of a world of 1 (placement
// `epoch`: 0 for a run of its own), then prunes to the newest `keep` checkpoints.
// `state.data_position` and `state.tokens_seen` are the caller's; `step` = completed optimizer
// steps = optimizer.step(). `layout` goes into the manifest (informational). Errors: those of
// WriteRankCheckpoint, CommitCheckpoint and Prune (ALREADY_EXISTS when step `step` is already
// committed by a newer epoch).
absl::StatusOr<SavedCheckpoint> SaveCheckpoint(const std::string& root, int64_t step,
                                               const ModelConfig& config,
                                               const std::map<std::string, int64_t>& layout,
                                               const model::ParameterSet& params,
                                               const AdamW& optimizer, const RankState& state,
                                               int keep, int64_t epoch = 0);

struct RestoredCheckpoint {
  std::string path;
  int64_t step = 0;
  RankState state;
};

// Loads committed checkpoint `dir` into `params` and `optimizer` (both replaced only when every
// file loaded; on error they are unchanged). Checks: world size 1 and `config` equal to the
// checkpoint's model config (FAILED_PRECONDITION listing the differences; a multi-rank checkpoint
// is FAILED_PRECONDITION "not yet supported"); every file's size and CRC32C (DATA_LOSS naming the
// file); the tensors as LoadModelTensors and AdamW::Load; the optimizer's step equal to the
// manifest's (DATA_LOSS otherwise).
absl::StatusOr<RestoredCheckpoint> RestoreCheckpoint(const std::string& dir,
                                                     const ModelConfig& config,
                                                     model::ParameterSet* params, AdamW* optimizer);

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_TRAINER_CHECKPOINT_H_
