// What a data-parallel (ZeRO-1) run of D ranks puts into a checkpoint and takes back on resume:
// every rank writes the full model (identical on every rank after the parameter all-gather, so
// export's replica check holds), its optimizer shard (zero_optimizer.h) and its rank state, as rank
// r of world size D; rank 0 commits after a barrier and prunes. Resume works with any world size of
// 2 or more: the optimizer state is resharded from the writers' shards (ZeroAdamW::LoadResharded).
// Not here: the single-process checkpoint (trainer_checkpoint.h).
#ifndef DSV3_ENGINE_TRAIN_DATA_PARALLEL_CHECKPOINT_H_
#define DSV3_ENGINE_TRAIN_DATA_PARALLEL_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "engine/model/parameters.h"
#include "engine/parallel/communicator.h"
#include "engine/train/checkpoint_manifest.h"
#include "engine/train/trainer_checkpoint.h"
#include "engine/train/zero_optimizer.h"

namespace dsv3::train {

// A collective of `comm` (the data-parallel group; every rank calls it for the same step): writes
// this rank's files of step `step` under `root` (placement `epoch`, world size comm->size()), then rank 0
// commits and prunes to `keep`; every rank learns whether the commit succeeded. Returns the
// committed path (and, on rank 0, what was pruned). Errors: those of WriteRankCheckpoint,
// CommitCheckpoint and Prune on the rank that hit them; the other ranks get INTERNAL naming the
// failed rank, or the communicator's error.
absl::StatusOr<SavedCheckpoint> SaveDataParallelCheckpoint(
    const std::string& root, int64_t step, const ModelConfig& config,
    const std::map<std::string, int64_t>& layout, const model::ParameterSet& params,
    const ZeroAdamW& optimizer, const RankState& state, int keep, parallel::Communicator* comm,
    int64_t epoch = 0);

// Loads committed checkpoint `dir` into `params` and `optimizer` for rank comm->rank() (replaced
// only when everything loaded): the model and rank state from one writer's files, the optimizer
// shard from the writer of the same rank, or, when the world size changed, resharded from every
// writer's shard. Not a collective. FAILED_PRECONDITION for another model config; DATA_LOSS as
// RestoreCheckpoint; the errors of ZeroAdamW::Load / LoadResharded.
absl::StatusOr<RestoredCheckpoint> RestoreDataParallelCheckpoint(const std::string& dir,
                                                                 const ModelConfig& config,
                                                                 parallel::Communicator* comm,
                                                                 model::ParameterSet* params,
                                                                 ZeroAdamW* optimizer);

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_DATA_PARALLEL_CHECKPOINT_H_
