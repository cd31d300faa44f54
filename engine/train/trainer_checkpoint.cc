// A single-process run's checkpoint: model tensors, optimizer state, rank state
// (trainer_checkpoint.h).
#include "engine/train/trainer_checkpoint.h"

#include <algorithm>
#include <set>
#include <utility>

#include "common/status_macros.h"
#include "engine/train/checkpoint.h"
#include "engine/train/checkpoint_reader.h"
#include "engine/train/str_cat.h"

namespace dsv3::train {

absl::Status AddModelTensors(const model::ParameterSet& params, SafetensorsWriter* writer) {
  for (const model::ParamInfo& p : params.layout.params()) {
    RETURN_IF_ERROR(writer->Add(p.name, DType::kF32, p.shape, params.values.data() + p.offset,
                                static_cast<size_t>(p.size) * sizeof(float)));
  }
  writer->SetMetadata("format", "pt");  // what Hugging Face's loaders expect of a model file
  return absl::OkStatus();
}

absl::Status LoadModelTensors(const SafetensorsReader& reader, model::ParameterSet* params) {
  auto data_loss = [&](const std::string& what) {
    return absl::DataLossError(StrCat("model tensors ", reader.path(), ": ", what));
  };
  const model::ParameterLayout& layout = params->layout;
  for (const TensorInfo& t : reader.tensors()) {
    if (layout.Find(t.name) == nullptr) {
      return data_loss(
          StrCat("unexpected tensor \"", t.name, "\" (no parameter of this model has that name)"));
    }
  }
  std::vector<float> values(params->values.size(), 0.0f);
  for (const model::ParamInfo& p : layout.params()) {
    if (!reader.Contains(p.name)) return data_loss(StrCat("no tensor \"", p.name, "\""));
    ASSIGN_OR_RETURN(const TensorInfo* info, reader.Find(p.name));
    if (info->dtype != DType::kF32 || info->shape != p.shape) {
      return data_loss(StrCat("tensor \"", p.name, "\" is ", DTypeName(info->dtype), " ",
                              ShapeToString(info->shape), ", expected F32 ",
                              ShapeToString(p.shape)));
    }
    RETURN_IF_ERROR(reader.ReadInto(p.name, DType::kF32, p.shape, values.data() + p.offset,
                                    static_cast<size_t>(p.size) * sizeof(float)));
  }
  // Copy into the existing buffer: the model keeps pointers into it.
  std::copy(values.begin(), values.end(), params->values.begin());
  return absl::OkStatus();
}

absl::StatusOr<SavedCheckpoint> SaveCheckpoint(const std::string& root, int64_t step,
                                               const ModelConfig& config,
                                               const std::map<std::string, int64_t>& layout,
                                               const model::ParameterSet& params,
                                               const AdamW& optimizer, const RankState& state,
                                               int keep, int64_t epoch) {
  SafetensorsWriter model_writer;
  RETURN_IF_ERROR(AddModelTensors(params, &model_writer));
  SafetensorsWriter optimizer_writer;
  RETURN_IF_ERROR(optimizer.AddTo(&optimizer_writer));
  CheckpointKey key;
  key.step = step;
  key.epoch = epoch;
  key.world_size = 1;
  ASSIGN_OR_RETURN(RankFiles files, WriteRankCheckpoint(root, key, /*rank=*/0, model_writer,
                                                        optimizer_writer, state));
  CommitRequest request;
  request.key = key;
  request.model_config = config;
  request.layout = layout;
  request.ranks.push_back(std::move(files));
  SavedCheckpoint saved;
  ASSIGN_OR_RETURN(saved.path, CommitCheckpoint(root, request));
  ASSIGN_OR_RETURN(saved.pruned, Prune(root, keep, /*current_epoch=*/epoch));
  return saved;
}

absl::StatusOr<RestoredCheckpoint> RestoreCheckpoint(const std::string& dir,
                                                     const ModelConfig& config,
                                                     model::ParameterSet* params,
                                                     AdamW* optimizer) {
  ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::Open(dir));
  if (reader.manifest().world_size != 1) {
    return absl::FailedPreconditionError(
        StrCat("checkpoint ", dir, " was written by ", reader.manifest().world_size,
               " ranks; resuming a multi-rank checkpoint in one process is not yet supported"));
  }
  LoadExpectations expected;
  expected.world_size = 1;
  expected.model_config = config;
  if (absl::Status s = reader.CheckCompatible(expected); !s.ok()) {
    return absl::FailedPreconditionError(
        StrCat("checkpoint ", dir, " does not match this job's model: ", s.message()));
  }
  ASSIGN_OR_RETURN(LoadedRank loaded, LoadRank(dir, /*rank=*/0, expected));

  // Everything into temporaries first, so a failure leaves the caller's state as it was.
  ASSIGN_OR_RETURN(AdamW restored_optimizer, AdamW::Create(params->layout, optimizer->config()));
  RETURN_IF_ERROR(restored_optimizer.Load(loaded.optimizer));
  if (restored_optimizer.step() != loaded.manifest.step) {
    return absl::DataLossError(StrCat("optimizer state ", loaded.optimizer.path(), " is at step ",
                                      restored_optimizer.step(), " but the checkpoint is step ",
                                      loaded.manifest.step));
  }
  if (loaded.state.data_position != loaded.manifest.step) {
    return absl::DataLossError(StrCat("rank state of ", dir, " has data_position ",
                                      loaded.state.data_position, " but the checkpoint is step ",
                                      loaded.manifest.step,
                                      " (a single-process run's data position is its next step)"));
  }
  RETURN_IF_ERROR(LoadModelTensors(loaded.model, params));
  *optimizer = std::move(restored_optimizer);

  RestoredCheckpoint result;
  result.path = loaded.dir;
  result.step = loaded.manifest.step;
  result.state = std::move(loaded.state);
  return result;
}

}  // namespace dsv3::train
