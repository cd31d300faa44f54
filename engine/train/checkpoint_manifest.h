// The checkpoint's metadata formats: the manifest (MANIFEST.json: what a committed checkpoint holds
// -- step, epoch, world size, layout, model config, and every file with its size and CRC32C -- with
// a CRC32C of itself) and a rank's state (rank-<r>-state.json: data position, RNG, counters). Pure
// data and JSON; no file I/O: checkpoint.h writes and commits, checkpoint_reader.h loads.
#ifndef DSV3_ENGINE_TRAIN_CHECKPOINT_MANIFEST_H_
#define DSV3_ENGINE_TRAIN_CHECKPOINT_MANIFEST_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"

namespace dsv3::train {

inline constexpr std::string_view kCheckpointFormat = "dsv3-checkpoint";
inline constexpr int kCheckpointFormatVersion = 1;

// The three files each rank writes.
enum class CheckpointFileKind {
  kModel,      // rank-<r>.safetensors: the rank's parameters (HF names)
  kOptimizer,  // rank-<r>-optim.safetensors: its optimizer state (master weights, moments)
  kState,      // rank-<r>-state.json: data position, RNG state, counters (RankState)
};
// "model", "optimizer", "state".
std::string_view CheckpointFileKindName(CheckpointFileKind kind);
// The file name of `kind` for `rank`: "rank-3.safetensors", "rank-3-optim.safetensors",
// "rank-3-state.json".
std::string CheckpointFileName(int rank, CheckpointFileKind kind);

// One file of a checkpoint, as its writer reported it.
struct CheckpointFile {
  std::string name;  // relative to the checkpoint directory; CheckpointFileName(rank, kind)
  int rank = 0;
  CheckpointFileKind kind = CheckpointFileKind::kModel;
  uint64_t size = 0;    // bytes
  uint32_t crc32c = 0;  // of the whole file
  friend bool operator==(const CheckpointFile&, const CheckpointFile&) = default;
};

struct Manifest {
  int format_version = kCheckpointFormatVersion;
  int64_t step = 0;   // optimizer steps completed when the checkpoint was taken
  int64_t epoch = 0;  // the placement epoch whose ranks wrote it
  int world_size = 0;
  // Parallel layout, e.g. {"pipeline_parallel": 2, "expert_parallel": 2, "data_parallel": 1};
  // informational for the resume code, may be empty.
  std::map<std::string, int64_t> layout;
  ModelConfig model_config;
  std::string created_at;  // RFC 3339 UTC, informational
  // Exactly CheckpointFileName(r, kind) for every rank r in [0, world_size) and every kind, ordered
  // by rank, then kind.
  std::vector<CheckpointFile> files;

  // The entry for (rank, kind), or null.
  const CheckpointFile* FindFile(int rank, CheckpointFileKind kind) const;
};

// The manifest as pretty-printed JSON (see docs/checkpoints.md), with "manifest_crc32c": the CRC32C
// of the compact JSON (nlohmann's dump() without indentation, keys sorted) of the object without
// that key.
std::string ManifestToJson(const Manifest& manifest);

// Parses and validates a manifest. `source` (a path) prefixes every message. Errors: DATA_LOSS when
// the text is not JSON, manifest_crc32c is missing or does not match, a field is missing or has the
// wrong type or range, or the file list is not exactly the files of ranks [0, world_size);
// FAILED_PRECONDITION when "format" is not dsv3-checkpoint or format_version is newer than this
// code understands.
absl::StatusOr<Manifest> ManifestFromJson(std::string_view text, std::string_view source);

// Checks that `files` is exactly the set expected of `world_size` ranks (names, ranks and kinds),
// ordered by rank, then kind. INVALID_ARGUMENT naming the first missing, duplicate, misnamed or
// unexpected file.
absl::Status CheckFileSet(const std::vector<CheckpointFile>& files, int world_size);

// What a rank saves besides tensors (rank-<r>-state.json). The data order is global (independent
// of the layout), so the data position is the same on every rank.
struct RankState {
  int64_t tokens_seen = 0;    // training tokens consumed by the whole job so far
  int64_t data_position = 0;  // the data loader's position in the global order (its own units)
  std::string rng_state;      // opaque RNG state (e.g. a serialized std::mt19937_64)
  std::map<std::string, std::string> extra;  // anything else the trainer wants back on resume
  friend bool operator==(const RankState&, const RankState&) = default;
};

// rank-<r>-state.json for `state` of `rank` in checkpoint (step, epoch, world_size).
// INVALID_ARGUMENT when a key or value of `extra` is not valid UTF-8.
absl::StatusOr<std::string> RankStateToJson(const RankState& state, int64_t step, int64_t epoch,
                                            int rank, int world_size);
// Parses rank `rank`'s state file; `path` prefixes every message. Errors: DATA_LOSS when it is not
// a rank state, a field is missing or mistyped, or it names another step, epoch, rank or world size
// than `manifest`; FAILED_PRECONDITION for a newer format_version.
absl::StatusOr<RankState> RankStateFromJson(std::string_view text, std::string_view path,
                                            const Manifest& manifest, int rank);

// The model config with Hugging Face DeepSeek-V3 config.json keys, as JSON text; and back, where
// every key of ModelConfig must be present (INVALID_ARGUMENT naming the first missing or mistyped).
std::string ModelConfigToJson(const ModelConfig& config);
absl::StatusOr<ModelConfig> ModelConfigFromJson(std::string_view text);

// "<key>: checkpoint <a>, job <b>" for every field where `checkpoint` and `job` differ (doubles
// compared exactly); empty when they are equal.
std::vector<std::string> ModelConfigDifferences(const ModelConfig& checkpoint,
                                                const ModelConfig& job);

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_CHECKPOINT_MANIFEST_H_
