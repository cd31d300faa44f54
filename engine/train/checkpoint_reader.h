// Loading a committed checkpoint: open it by its manifest, check it against the job (world size,
// model config), and hand out each rank's model shard, optimizer state and rank state only after
// the file's size and CRC32C match the manifest. Any rank's files can be read, so resume code can
// reshard onto another world size. Not here: writing, committing, discovery (checkpoint.h), and the
// resharding itself.
#ifndef DSV3_ENGINE_TRAIN_CHECKPOINT_READER_H_
#define DSV3_ENGINE_TRAIN_CHECKPOINT_READER_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "engine/train/checkpoint_manifest.h"
#include "engine/train/posix_file.h"
#include "engine/train/safetensors.h"

namespace dsv3::train {

// What the loading job is, for LoadRank's compatibility check. Unset fields are not checked.
struct LoadExpectations {
  std::optional<int> world_size;
  std::optional<ModelConfig> model_config;
};

// A committed checkpoint opened for loading. Every accessor verifies the file's size and CRC32C
// against the manifest before handing out anything from it. Move-only; const methods may be
// called from several threads.
class CheckpointReader {
 public:
  // Opens committed checkpoint directory `dir` (e.g. LatestCommitted(root)->path; a copy under
  // another name works too). Errors: FAILED_PRECONDITION when `dir` is named like a staging or
  // trash directory; those of ReadManifest; DATA_LOSS when the manifest's step does not match a
  // step-<N> directory name.
  static absl::StatusOr<CheckpointReader> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const Manifest& manifest() const { return manifest_; }

  // OK when the checkpoint matches; otherwise FAILED_PRECONDITION listing every difference
  // ("world_size: checkpoint 4, job 2; model_config.hidden_size: checkpoint 256, job 512"). The
  // resume code decides what to do about it (reshard across world sizes, or refuse).
  absl::Status CheckCompatible(const LoadExpectations& expected) const;

  // The model shard / optimizer state of `rank`, checksummed and then opened from the same file
  // descriptor. Errors: INVALID_ARGUMENT for a rank outside [0, world_size); DATA_LOSS naming the
  // file when its size or CRC32C differs from the manifest or it is not valid safetensors;
  // NOT_FOUND naming it when it is missing.
  absl::StatusOr<SafetensorsReader> OpenModel(int rank) const;
  absl::StatusOr<SafetensorsReader> OpenOptimizer(int rank) const;
  // `rank`'s state. Errors as OpenModel; DATA_LOSS also when the JSON is malformed or names another
  // step, epoch, rank or world size than the manifest.
  absl::StatusOr<RankState> ReadState(int rank) const;

  // Verifies every file of every rank (reads them all). The first error, as OpenModel's.
  absl::Status VerifyAll() const;

 private:
  CheckpointReader(std::string dir, Manifest manifest)
      : dir_(std::move(dir)), manifest_(std::move(manifest)) {}
  absl::StatusOr<ReadOnlyFile> OpenVerified(int rank, CheckpointFileKind kind) const;

  std::string dir_;
  Manifest manifest_;
};

// Everything one rank needs to resume with the same layout.
struct LoadedRank {
  std::string dir;
  Manifest manifest;
  SafetensorsReader model;
  SafetensorsReader optimizer;
  RankState state;
};

// Opens `dir`, checks it against `expected`, and loads `rank`'s files, each verified.
// Errors: those of CheckpointReader::Open, CheckCompatible (FAILED_PRECONDITION), and the
// accessors (DATA_LOSS naming a corrupt file).
absl::StatusOr<LoadedRank> LoadRank(const std::string& dir, int rank,
                                    const LoadExpectations& expected);

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_CHECKPOINT_READER_H_
