// A data-parallel run's checkpoint: full model, ZeRO-1 optimizer shard, rank state per rank
// (data_parallel_checkpoint.h).
#include "engine/train/data_parallel_checkpoint.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "engine/train/checkpoint.h"
#include "engine/train/checkpoint_reader.h"
#include "engine/train/str_cat.h"

namespace dsv3::train {

absl::StatusOr<SavedCheckpoint> SaveDataParallelCheckpoint(
    const std::string& root, int64_t step, const ModelConfig& config,
    const std::map<std::string, int64_t>& layout, const model::ParameterSet& params,
    const ZeroAdamW& optimizer, const RankState& state, int keep, parallel::Communicator* comm,
    int64_t epoch) {
  const int rank = comm->rank();
  const int world = comm->size();
  CheckpointKey key;
  key.step = step;
  key.epoch = epoch;
  key.world_size = world;

  // Every rank writes; a rank that fails still takes part in the collectives below (with its
  // failure flagged), so the others fail promptly instead of timing out.
  absl::StatusOr<RankFiles> files = [&]() -> absl::StatusOr<RankFiles> {
    SafetensorsWriter model_writer;
    RETURN_IF_ERROR(AddModelTensors(params, &model_writer));
    SafetensorsWriter optimizer_writer;
    RETURN_IF_ERROR(optimizer.AddTo(&optimizer_writer));
    return WriteRankCheckpoint(root, key, rank, model_writer, optimizer_writer, state);
  }();
  // failed[r] = 1 when rank r could not write its files.
  std::vector<int64_t> failed(static_cast<size_t>(world), 0);
  failed[static_cast<size_t>(rank)] = files.ok() ? 0 : 1;
  RETURN_IF_ERROR(WaitFor(
      comm->AllReduce(failed.data(), failed.data(), failed.size(), parallel::DataType::kInt64),
      StrCat("checkpoint step ", step, ": write barrier")));
  if (!files.ok()) return files.status();
  for (int r = 0; r < world; ++r) {
    if (failed[static_cast<size_t>(r)] != 0) {
      return absl::InternalError(StrCat("checkpoint step ", step, ": rank ", r,
                                        " could not write its files (see its log)"));
    }
  }

  // Rank 0 commits; the others' acknowledgements are read back from the staged files.
  SavedCheckpoint saved;
  saved.path = root + "/" + CommittedDirName(step);
  absl::Status commit = absl::OkStatus();
  if (rank == 0) {
    commit = [&]() -> absl::Status {
      CommitRequest request;
      request.key = key;
      request.model_config = config;
      request.layout = layout;
      request.ranks.push_back(*files);
      for (int r = 1; r < world; ++r) {
        ASSIGN_OR_RETURN(RankFiles other, DescribeStagedRank(root, key, r));
        request.ranks.push_back(std::move(other));
      }
      ASSIGN_OR_RETURN(saved.path, CommitCheckpoint(root, request));
      ASSIGN_OR_RETURN(saved.pruned, Prune(root, keep, /*current_epoch=*/epoch));
      return absl::OkStatus();
    }();
  }
  int64_t commit_failed = commit.ok() ? 0 : 1;
  RETURN_IF_ERROR(
      WaitFor(comm->AllReduce(&commit_failed, &commit_failed, 1, parallel::DataType::kInt64),
              StrCat("checkpoint step ", step, ": commit barrier")));
  if (!commit.ok()) return commit;
  if (commit_failed != 0) {
    return absl::InternalError(
        StrCat("checkpoint step ", step, ": rank 0 could not commit it (see its log)"));
  }
  return saved;
}

absl::StatusOr<RestoredCheckpoint> RestoreDataParallelCheckpoint(const std::string& dir,
                                                                 const ModelConfig& config,
                                                                 parallel::Communicator* comm,
                                                                 model::ParameterSet* params,
                                                                 ZeroAdamW* optimizer) {
  ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::Open(dir));
  const int world = comm->size();
  const int written_by = reader.manifest().world_size;
  LoadExpectations expected;
  expected.world_size = written_by;
  expected.model_config = config;
  if (absl::Status s = reader.CheckCompatible(expected); !s.ok()) {
    return absl::FailedPreconditionError(
        StrCat("checkpoint ", dir, " does not match this job's model: ", s.message()));
  }
  // Every rank file holds the full model and the same rank state; the optimizer state is
  // resharded from the writers' shards when the world size changed.
  ASSIGN_OR_RETURN(LoadedRank loaded, LoadRank(dir, std::min(comm->rank(), written_by - 1),
                                               expected));
  ASSIGN_OR_RETURN(std::unique_ptr<ZeroAdamW> restored,
                   ZeroAdamW::Create(params->layout, optimizer->config(), comm));
  if (written_by == world) {
    RETURN_IF_ERROR(restored->Load(loaded.optimizer));
  } else {
    std::vector<SafetensorsReader> shards;
    for (int r = 0; r < written_by; ++r) {
      ASSIGN_OR_RETURN(SafetensorsReader shard, reader.OpenOptimizer(r));
      shards.push_back(std::move(shard));
    }
    std::vector<const SafetensorsReader*> views;
    for (const SafetensorsReader& shard : shards) views.push_back(&shard);
    if (absl::Status s = restored->LoadResharded(views); !s.ok()) {
      return absl::Status(s.code(), StrCat("resharding the optimizer state of ", dir, " from ",
                                           written_by, " to ", world, " ranks: ", s.message()));
    }
  }
  if (restored->step() != loaded.manifest.step) {
    return absl::DataLossError(StrCat("optimizer state ", loaded.optimizer.path(), " is at step ",
                                      restored->step(), " but the checkpoint is step ",
                                      loaded.manifest.step));
  }
  if (loaded.state.data_position != loaded.manifest.step) {
    return absl::DataLossError(StrCat("rank state of ", dir, " has data_position ",
                                      loaded.state.data_position, " but the checkpoint is step ",
                                      loaded.manifest.step));
  }
  RETURN_IF_ERROR(LoadModelTensors(loaded.model, params));
  *optimizer = std::move(*restored);

  RestoredCheckpoint result;
  result.path = loaded.dir;
  result.step = loaded.manifest.step;
  result.state = std::move(loaded.state);
  return result;
}

}  // namespace dsv3::train
