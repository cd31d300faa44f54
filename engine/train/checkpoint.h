// Training checkpoints on a (shared) file system: the directory format, the per-rank writer, the
// commit, discovery and retention (loading is checkpoint_reader.h). Under a job's checkpoint root:
//   step-<N:08>/           committed: MANIFEST.json and, for every rank r, rank-<r>.safetensors,
//                          rank-<r>-optim.safetensors, rank-<r>-state.json
//   step-<N:08>.tmp-e<E>/  staging for step N by the ranks of epoch E (never read as a checkpoint)
//   step-<N:08>.trash-*/   a directory being deleted
// A checkpoint exists only once its directory has its final name and a valid manifest; the commit
// makes that happen with one rename. Not here: what goes into the tensors (the trainer and the
// optimizer decide), resharding, and when to checkpoint (the coordinator). See docs/checkpoints.md.
#ifndef DSV3_ENGINE_TRAIN_CHECKPOINT_H_
#define DSV3_ENGINE_TRAIN_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "engine/train/checkpoint_manifest.h"
#include "engine/train/safetensors.h"

namespace dsv3::train {

inline constexpr char kManifestFileName[] = "MANIFEST.json";

// "step-00000100".
std::string CommittedDirName(int64_t step);
// "step-00000100.tmp-e3".
std::string StagingDirName(int64_t step, int64_t epoch);

// What a directory name under a checkpoint root denotes.
struct CheckpointDirName {
  enum Kind { kOther, kCommitted, kStaging, kTrash } kind = kOther;
  int64_t step = -1;   // for kCommitted, kStaging, kTrash
  int64_t epoch = -1;  // for kStaging
};
// Parses "step-<digits>", "step-<digits>.tmp-e<digits>" and "step-<digits>.trash-<anything>";
// anything else is kOther.
CheckpointDirName ParseCheckpointDirName(std::string_view name);

// Which checkpoint a rank writes: the step it completed, its placement epoch, the world size.
struct CheckpointKey {
  int64_t step = 0;
  int64_t epoch = 0;
  int world_size = 1;
};

// A rank's acknowledgement: the files it wrote, with sizes and checksums. The service carries it
// to whoever commits.
struct RankFiles {
  int rank = 0;
  std::vector<CheckpointFile> files;  // model, optimizer, state
};

// Rank side. Writes rank `rank`'s three files into <root>/StagingDirName(key.step, key.epoch)
// (creating the root and the staging directory if needed; several processes may do so at once),
// each atomically, and returns their sizes and checksums (computed from the bytes written).
// Rewriting the same rank's files replaces them. A step already committed by this epoch or an
// older one may be written again: its commit replaces the committed checkpoint (CommitCheckpoint).
// `model` and `optimizer` must hold the tensors (their borrowed buffers stay valid for the call).
// Errors: INVALID_ARGUMENT for a negative step or epoch, world_size < 1 or rank outside
// [0, world_size), or an `extra` string that is not valid UTF-8; ALREADY_EXISTS when <root>/step-<N>
// is already committed by a newer epoch (nothing is written); otherwise the errno's code naming the
// path.
absl::StatusOr<RankFiles> WriteRankCheckpoint(const std::string& root, const CheckpointKey& key,
                                              int rank, const SafetensorsWriter& model,
                                              const SafetensorsWriter& optimizer,
                                              const RankState& state);

// Computes a rank's acknowledgement from the files on disk in the staging directory (for a
// committer that has lost the acknowledgements; reads every byte). Errors: NOT_FOUND naming a
// missing file; otherwise the errno's code.
absl::StatusOr<RankFiles> DescribeStagedRank(const std::string& root, const CheckpointKey& key,
                                             int rank);

struct CommitRequest {
  CheckpointKey key;
  ModelConfig model_config;
  std::map<std::string, int64_t> layout;  // optional, informational
  std::vector<RankFiles> ranks;           // one acknowledgement per rank, any order
  // Re-read every staged file and compare its CRC32C with the acknowledgement (otherwise only the
  // sizes are checked).
  bool verify_checksums = false;
};

// The committer's step (the coordinator's decision, executed by a process that can reach the
// file system: rank 0 when told, or the local runner). When every rank has acknowledged, writes
// MANIFEST.json into the staging directory (atomically) and renames the directory to
// <root>/step-<N>. Returns the committed directory. Idempotent and crash-safe: calling it again,
// concurrently, or after a crash at any point converges on the same committed checkpoint; OK when
// step N is already committed by this epoch with the same files.
// A step-<N> committed by an older epoch, or by this one with other files, is what a run that went
// on past the checkpoint it was then resumed from left behind (e.g. ranks that trained on until
// their stop took effect): it is replaced, with one atomic exchange of the two directories (a
// reader sees the old or the new checkpoint, never none; where the file system cannot exchange,
// the old one is moved aside first), then the old one is deleted. So a checkpoint always holds
// what the run that last wrote it computed, whatever its world size. Replacing commits of one step
// must not run concurrently (each step has one committer: rank 0, or the single process).
// Errors: INVALID_ARGUMENT when the acknowledgements are not exactly the three files of every rank
// in [0, world_size); ALREADY_EXISTS when step N was committed by a newer epoch (that checkpoint
// stands); FAILED_PRECONDITION when the staging directory or a file in it is missing (the ranks
// have not written); DATA_LOSS naming the file whose size (or, with verify_checksums, CRC32C)
// differs from its acknowledgement; otherwise the errno's code.
absl::StatusOr<std::string> CommitCheckpoint(const std::string& root, const CommitRequest& request);

struct CommittedCheckpoint {
  std::string path;  // <root>/step-<N>
  Manifest manifest;
};

// The committed checkpoints under `root`, oldest first: directories named step-<N> whose manifest
// is valid, says step N, and lists files that exist with their recorded sizes (checksums are not
// read here; Load does). Staging and trash directories and anything else are ignored. An empty
// list when `root` does not exist. Errors: the errno's code when `root` cannot be listed.
absl::StatusOr<std::vector<CommittedCheckpoint>> ListCommitted(const std::string& root);

// The newest of ListCommitted. NOT_FOUND when there is none; errors as ListCommitted.
absl::StatusOr<CommittedCheckpoint> LatestCommitted(const std::string& root);

// The committed checkpoint of exactly step `step` under `root`, checked as ListCommitted checks
// (checksums are not read). Errors: NOT_FOUND when <root>/step-<N> does not exist (the message
// names the committed steps there); FAILED_PRECONDITION when it exists but is not a committed
// checkpoint (no valid manifest, or a file it lists is missing or has another size), saying why.
absl::StatusOr<CommittedCheckpoint> FindCommitted(const std::string& root, int64_t step);

// Rolls `root` back to step `step` for a run that resumes from it (0: from the seed): removes the
// directories of every later step -- committed checkpoints, damaged ones and staging directories --
// each first renamed to a trash name (as Prune does), so that the newest committed checkpoint left
// is at most `step` and the run writes those steps again. Several processes may run it at once (a
// directory another one removed is skipped); nothing may be writing a later step meanwhile.
// Returns the removed paths, in name order. Errors: the errno's code naming the path.
absl::StatusOr<std::vector<std::string>> DiscardAfter(const std::string& root, int64_t step);

// Reads and validates <dir>/MANIFEST.json. Errors: NOT_FOUND when there is no manifest (the
// directory is not a committed checkpoint); those of ManifestFromJson.
absl::StatusOr<Manifest> ReadManifest(const std::string& dir);

// Retention. Keeps the newest `keep` committed checkpoints and removes: older committed ones;
// staging directories of a step at or below the newest committed step, or of an epoch older than
// the newest committed checkpoint's epoch or than `current_epoch` (when >= 0); directories named
// step-<N> without a valid manifest whose N is below the newest committed step; and trash
// directories. A committed checkpoint is first renamed to a trash name, so a crash mid-deletion
// never leaves a half-deleted directory that looks committed. Never removes the newest committed
// checkpoint or anything not named like a checkpoint. Returns the removed paths.
// Errors: INVALID_ARGUMENT when keep < 1; otherwise the errno's code naming the path.
absl::StatusOr<std::vector<std::string>> Prune(const std::string& root, int keep,
                                               int64_t current_epoch = -1);

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_CHECKPOINT_H_
