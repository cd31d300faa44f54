// Loading committed checkpoints with verification; see checkpoint_reader.h.
#include "engine/train/checkpoint_reader.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/train/checkpoint.h"
#include "engine/train/checksum.h"
#include "engine/train/str_cat.h"

namespace dsv3::train {
namespace {

namespace fs = std::filesystem;

std::string JoinPath(const std::string& dir, std::string_view name) {
  return (fs::path(dir) / std::string(name)).string();
}

absl::Status CheckRank(int rank, int world_size) {
  if (rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        StrCat("rank=", rank, " is outside [0, world_size=", world_size, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CheckpointReader> CheckpointReader::Open(const std::string& dir) {
  fs::path path = fs::path(dir).lexically_normal();
  if (path.filename().empty()) path = path.parent_path();  // "dir/"
  const CheckpointDirName e = ParseCheckpointDirName(path.filename().string());
  if (e.kind == CheckpointDirName::kStaging || e.kind == CheckpointDirName::kTrash) {
    return absl::FailedPreconditionError(
        StrCat(dir, " is a staging or trash directory, not a committed checkpoint"));
  }
  ASSIGN_OR_RETURN(Manifest m, ReadManifest(dir));
  if (e.kind == CheckpointDirName::kCommitted && e.step != m.step) {
    return absl::DataLossError(StrCat("manifest of ", dir, " says step ", m.step));
  }
  return CheckpointReader(dir, std::move(m));
}

absl::Status CheckpointReader::CheckCompatible(const LoadExpectations& expected) const {
  std::vector<std::string> differences;
  if (expected.world_size.has_value() && *expected.world_size != manifest_.world_size) {
    differences.push_back(
        StrCat("world_size: checkpoint ", manifest_.world_size, ", job ", *expected.world_size));
  }
  if (expected.model_config.has_value()) {
    for (const std::string& d :
         ModelConfigDifferences(manifest_.model_config, *expected.model_config)) {
      differences.push_back(StrCat("model_config.", d));
    }
  }
  if (differences.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      StrCat("checkpoint ", dir_, " (step ", manifest_.step,
             ") does not match the job: ", absl::StrJoin(differences, "; ")));
}

absl::StatusOr<ReadOnlyFile> CheckpointReader::OpenVerified(int rank,
                                                            CheckpointFileKind kind) const {
  RETURN_IF_ERROR(CheckRank(rank, manifest_.world_size));
  const CheckpointFile* f = manifest_.FindFile(rank, kind);
  if (f == nullptr) {  // ManifestFromJson guarantees every file; defensive only
    return absl::DataLossError(
        StrCat("manifest of ", dir_, " lists no ", CheckpointFileName(rank, kind)));
  }
  const std::string path = JoinPath(dir_, f->name);
  ASSIGN_OR_RETURN(ReadOnlyFile file, ReadOnlyFile::Open(path));
  if (file.size() != f->size) {
    return absl::DataLossError(StrCat("checkpoint file ", path, " has ", file.size(),
                                      " bytes, the manifest says ", f->size));
  }
  absl::StatusOr<FileDigest> digest = DigestFile(file);
  if (!digest.ok()) {
    return absl::Status(digest.status().code(),
                        StrCat("checkpoint file ", path, ": ", digest.status().message()));
  }
  if (digest->crc32c != f->crc32c) {
    return absl::DataLossError(StrCat("checkpoint file ", path, " is corrupt: CRC32C ",
                                      Crc32cToHex(digest->crc32c), ", the manifest says ",
                                      Crc32cToHex(f->crc32c)));
  }
  return file;
}

absl::StatusOr<SafetensorsReader> CheckpointReader::OpenModel(int rank) const {
  ASSIGN_OR_RETURN(ReadOnlyFile file, OpenVerified(rank, CheckpointFileKind::kModel));
  return SafetensorsReader::Open(std::move(file));
}

absl::StatusOr<SafetensorsReader> CheckpointReader::OpenOptimizer(int rank) const {
  ASSIGN_OR_RETURN(ReadOnlyFile file, OpenVerified(rank, CheckpointFileKind::kOptimizer));
  return SafetensorsReader::Open(std::move(file));
}

absl::StatusOr<RankState> CheckpointReader::ReadState(int rank) const {
  ASSIGN_OR_RETURN(ReadOnlyFile file, OpenVerified(rank, CheckpointFileKind::kState));
  std::string text(file.size(), '\0');
  RETURN_IF_ERROR(file.ReadAt(0, text.data(), text.size()));
  return RankStateFromJson(text, file.path(), manifest_, rank);
}

absl::Status CheckpointReader::VerifyAll() const {
  for (int rank = 0; rank < manifest_.world_size; ++rank) {
    RETURN_IF_ERROR(OpenModel(rank).status());
    RETURN_IF_ERROR(OpenOptimizer(rank).status());
    RETURN_IF_ERROR(ReadState(rank).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedRank> LoadRank(const std::string& dir, int rank,
                                    const LoadExpectations& expected) {
  ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::Open(dir));
  RETURN_IF_ERROR(reader.CheckCompatible(expected));
  ASSIGN_OR_RETURN(SafetensorsReader model, reader.OpenModel(rank));
  ASSIGN_OR_RETURN(SafetensorsReader optimizer, reader.OpenOptimizer(rank));
  ASSIGN_OR_RETURN(RankState state, reader.ReadState(rank));
  return LoadedRank{reader.dir(), reader.manifest(), std::move(model), std::move(optimizer),
                    std::move(state)};
}

}  // namespace dsv3::train
