// Checkpoint directories: rank writer, commit, discovery, retention. See checkpoint.h and
// docs/checkpoints.md.
#include "engine/train/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <random>
#include <set>
#include <string_view>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "engine/train/checksum.h"
#include "engine/train/posix_file.h"
#include "engine/train/str_cat.h"
#include "spdlog/spdlog.h"

namespace dsv3::train {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kStepPrefix = "step-";
constexpr std::string_view kStagingInfix = ".tmp-e";
constexpr std::string_view kTrashInfix = ".trash-";
constexpr CheckpointFileKind kKinds[] = {CheckpointFileKind::kModel, CheckpointFileKind::kOptimizer,
                                         CheckpointFileKind::kState};

std::string JoinPath(const std::string& dir, std::string_view name) {
  return (fs::path(dir) / std::string(name)).string();
}

bool ParseDigits(std::string_view text, int64_t* out) {
  if (text.empty() || text.size() > 18) return false;
  int64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  *out = value;
  return true;
}

std::string TrashName(int64_t step) {
  static std::atomic<uint64_t> counter{0};
  static const uint32_t salt = std::random_device{}();
  return StrCat(CommittedDirName(step), kTrashInfix, ::getpid(), "-", salt, "-",
                counter.fetch_add(1));
}

absl::Status MakeDirectory(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return absl::OkStatus();
  const int err = errno;
  struct stat st;
  if (err == EEXIST && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::OkStatus();
  }
  return PosixError(err, "mkdir", path);
}

absl::Status MakeRoot(const std::string& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return PosixError(ec.value(), "create directories", root);
  return absl::OkStatus();
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return PosixError(ec.value(), "remove", path);
  return absl::OkStatus();
}

// Renames `dir` (under `root`) to a trash name, then deletes it. After the rename the directory
// no longer looks like a checkpoint, whatever happens to the deletion.
absl::Status TrashAndRemove(const std::string& root, const std::string& dir, int64_t step) {
  const std::string trash = JoinPath(root, TrashName(step));
  if (::rename(dir.c_str(), trash.c_str()) != 0) {
    return PosixError(errno, StrCat("rename ", dir, " to"), trash);
  }
  RETURN_IF_ERROR(FsyncDirectory(root));
  return RemoveTree(trash);
}

// Puts the complete staging directory `staging` (manifest written) in the place of the committed
// checkpoint `final_dir` of the same step, then deletes the old one. Linux's
// renameat2(RENAME_EXCHANGE) swaps the two directories in one step, so a reader always sees a
// committed checkpoint there; the old one lands at the staging name, which is never read as a
// checkpoint (and which Prune removes, should the process die before deleting it). Where the file
// system cannot exchange, the old one is moved to a trash name first, then the new one renamed in:
// a reader may briefly find no step-<N>, and a crash in between leaves the new one staged for a
// retried commit. False when `final_dir` no longer exists (another process moved it).
absl::StatusOr<bool> ReplaceCommitted(const std::string& root, const std::string& staging,
                                      const std::string& final_dir, int64_t step) {
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    RETURN_IF_ERROR(FsyncDirectory(root));
    spdlog::info("checkpoint commit: replaced the earlier checkpoint at {}", final_dir);
    RETURN_IF_ERROR(TrashAndRemove(root, staging, step));
    return true;
  }
  int err = errno;
  if (err == ENOENT) return false;
  if (err != EINVAL && err != ENOSYS && err != ENOTSUP) {
    return PosixError(err, StrCat("exchange ", staging, " with"), final_dir);
  }
  const std::string trash = JoinPath(root, TrashName(step));
  if (::rename(final_dir.c_str(), trash.c_str()) != 0) {
    err = errno;
    if (err == ENOENT) return false;
    return PosixError(err, StrCat("rename ", final_dir, " to"), trash);
  }
  if (::rename(staging.c_str(), final_dir.c_str()) != 0) {
    return PosixError(errno, StrCat("rename ", staging, " to"), final_dir);
  }
  RETURN_IF_ERROR(FsyncDirectory(root));
  spdlog::info("checkpoint commit: replaced the earlier checkpoint at {}", final_dir);
  RETURN_IF_ERROR(RemoveTree(trash));
  return true;
}

// Removes temporary files ("<name>.tmp-<pid>-...") that a racing or crashed writer left in a
// committed directory; they are not part of the checkpoint.
void RemoveStrayTempFiles(const std::string& dir) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    if (it->path().filename().string().find(".tmp-") != std::string::npos) {
      std::error_code ignored;
      fs::remove(it->path(), ignored);
    }
  }
}

absl::Status CheckKey(const CheckpointKey& key) {
  if (key.step < 0 || key.epoch < 0 || key.world_size < 1) {
    return absl::InvalidArgumentError(StrCat("checkpoint step=", key.step, " epoch=", key.epoch,
                                             " world_size=", key.world_size,
                                             ": step and epoch must be >= 0, world_size >= 1"));
  }
  return absl::OkStatus();
}

absl::Status CheckRank(int rank, int world_size) {
  if (rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        StrCat("rank=", rank, " is outside [0, world_size=", world_size, ")"));
  }
  return absl::OkStatus();
}

// Checks that every file of `m` exists in `dir` with its recorded size (no reading).
absl::Status CheckFilesPresent(const std::string& dir, const Manifest& m) {
  for (const CheckpointFile& f : m.files) {
    const std::string path = JoinPath(dir, f.name);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return PosixError(errno, "stat", path);
    if (static_cast<uint64_t>(st.st_size) != f.size) {
      return absl::DataLossError(
          StrCat(path, " has ", st.st_size, " bytes, the manifest says ", f.size));
    }
  }
  return absl::OkStatus();
}

// The committed checkpoint at `dir`, if it is one (see ListCommitted).
absl::StatusOr<Manifest> ValidateCommitted(const std::string& dir, int64_t step) {
  ASSIGN_OR_RETURN(Manifest m, ReadManifest(dir));
  if (m.step != step) {
    return absl::DataLossError(StrCat("manifest ", dir, "/", kManifestFileName, " says step ",
                                      m.step, ", the directory step ", step));
  }
  RETURN_IF_ERROR(CheckFilesPresent(dir, m));
  return m;
}

}  // namespace

std::string CommittedDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }

CheckpointDirName ParseCheckpointDirName(std::string_view name) {
  CheckpointDirName e;
  if (!name.starts_with(kStepPrefix)) return e;
  std::string_view rest = name.substr(kStepPrefix.size());
  const size_t dot = rest.find('.');
  if (!ParseDigits(rest.substr(0, dot), &e.step)) {
    e.step = -1;
    return e;
  }
  if (dot == std::string_view::npos) {
    e.kind = CheckpointDirName::kCommitted;
    return e;
  }
  std::string_view suffix = rest.substr(dot);
  if (suffix.starts_with(kStagingInfix) &&
      ParseDigits(suffix.substr(kStagingInfix.size()), &e.epoch)) {
    e.kind = CheckpointDirName::kStaging;
  } else if (suffix.starts_with(kTrashInfix)) {
    e.kind = CheckpointDirName::kTrash;
  } else {
    e.step = -1;
    e.epoch = -1;
  }
  return e;
}

std::string StagingDirName(int64_t step, int64_t epoch) {
  return StrCat(CommittedDirName(step), kStagingInfix, epoch);
}

// ---- Rank side ---------------------------------------------------------------------------------

absl::StatusOr<RankFiles> WriteRankCheckpoint(const std::string& root, const CheckpointKey& key,
                                              int rank, const SafetensorsWriter& model,
                                              const SafetensorsWriter& optimizer,
                                              const RankState& state) {
  RETURN_IF_ERROR(CheckKey(key));
  RETURN_IF_ERROR(CheckRank(rank, key.world_size));
  ASSIGN_OR_RETURN(const std::string state_json,
                   RankStateToJson(state, key.step, key.epoch, rank, key.world_size));
  // An older epoch's checkpoint of this step is replaced by the commit; a newer epoch's stands
  // (this rank is a stale one).
  const std::string committed = JoinPath(root, CommittedDirName(key.step));
  if (absl::StatusOr<Manifest> m = ReadManifest(committed); m.ok() && m->epoch > key.epoch) {
    return absl::AlreadyExistsError(StrCat("checkpoint ", committed,
                                           " is already committed by epoch ", m->epoch, "; rank ",
                                           rank, " of epoch ", key.epoch, " wrote nothing"));
  }
  RETURN_IF_ERROR(MakeRoot(root));
  const std::string staging = JoinPath(root, StagingDirName(key.step, key.epoch));
  RETURN_IF_ERROR(MakeDirectory(staging));

  RankFiles out;
  out.rank = rank;
  for (CheckpointFileKind kind : kKinds) {
    const std::string name = CheckpointFileName(rank, kind);
    const std::string path = JoinPath(staging, name);
    FileDigest digest;
    switch (kind) {
      case CheckpointFileKind::kModel: {
        ASSIGN_OR_RETURN(digest, model.WriteFile(path));
        break;
      }
      case CheckpointFileKind::kOptimizer: {
        ASSIGN_OR_RETURN(digest, optimizer.WriteFile(path));
        break;
      }
      case CheckpointFileKind::kState: {
        RETURN_IF_ERROR(WriteFileAtomically(path, state_json));
        digest.size = state_json.size();
        digest.crc32c = Crc32c(state_json);
        break;
      }
    }
    out.files.push_back(CheckpointFile{name, rank, kind, digest.size, digest.crc32c});
  }
  return out;
}

absl::StatusOr<RankFiles> DescribeStagedRank(const std::string& root, const CheckpointKey& key,
                                             int rank) {
  RETURN_IF_ERROR(CheckKey(key));
  RETURN_IF_ERROR(CheckRank(rank, key.world_size));
  const std::string staging = JoinPath(root, StagingDirName(key.step, key.epoch));
  RankFiles out;
  out.rank = rank;
  for (CheckpointFileKind kind : kKinds) {
    const std::string name = CheckpointFileName(rank, kind);
    ASSIGN_OR_RETURN(FileDigest digest, DigestFile(JoinPath(staging, name)));
    out.files.push_back(CheckpointFile{name, rank, kind, digest.size, digest.crc32c});
  }
  return out;
}

// ---- Commit ------------------------------------------------------------------------------------

absl::StatusOr<std::string> CommitCheckpoint(const std::string& root,
                                             const CommitRequest& request) {
  const CheckpointKey& key = request.key;
  RETURN_IF_ERROR(CheckKey(key));
  // The acknowledgements, ordered by rank, must be exactly the expected files.
  std::vector<const RankFiles*> by_rank(key.world_size, nullptr);
  for (const RankFiles& r : request.ranks) {
    RETURN_IF_ERROR(CheckRank(r.rank, key.world_size));
    if (by_rank[r.rank] != nullptr) {
      return absl::InvalidArgumentError(
          StrCat("rank ", r.rank, " acknowledged step ", key.step, " twice"));
    }
    by_rank[r.rank] = &r;
  }
  std::vector<int> missing;
  for (int r = 0; r < key.world_size; ++r) {
    if (by_rank[r] == nullptr) missing.push_back(r);
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(
        StrCat("cannot commit step ", key.step, ": no acknowledgement from rank(s) ",
               absl::StrJoin(missing, ", "), " of world_size=", key.world_size));
  }
  Manifest manifest;
  manifest.step = key.step;
  manifest.epoch = key.epoch;
  manifest.world_size = key.world_size;
  manifest.layout = request.layout;
  manifest.model_config = request.model_config;
  manifest.created_at = absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone());
  for (const RankFiles* r : by_rank) {
    manifest.files.insert(manifest.files.end(), r->files.begin(), r->files.end());
  }
  // Within a rank, acknowledgements may list the files in any order; the manifest orders them.
  std::stable_sort(manifest.files.begin(), manifest.files.end(),
                   [](const CheckpointFile& a, const CheckpointFile& b) {
                     return a.rank != b.rank ? a.rank < b.rank : a.kind < b.kind;
                   });
  if (absl::Status s = CheckFileSet(manifest.files, key.world_size); !s.ok()) {
    return absl::InvalidArgumentError(StrCat("cannot commit step ", key.step, ": ", s.message()));
  }

  const std::string final_dir = JoinPath(root, CommittedDirName(key.step));
  const std::string staging = JoinPath(root, StagingDirName(key.step, key.epoch));
  // This request's checkpoint is committed at `final_dir` already.
  auto is_ours = [&](const absl::StatusOr<Manifest>& m) {
    return m.ok() && m->epoch == key.epoch && m->files == manifest.files;
  };
  // A few rounds, in case another committer is running at the same time.
  for (int attempt = 0; attempt < 4; ++attempt) {
    bool replace = false;  // final_dir holds a committed checkpoint that this commit replaces
    if (IsDirectory(final_dir)) {
      absl::StatusOr<Manifest> existing = ReadManifest(final_dir);
      if (is_ours(existing)) {
        if (IsDirectory(staging)) RETURN_IF_ERROR(RemoveTree(staging));
        RemoveStrayTempFiles(final_dir);
        return final_dir;
      }
      if (existing.ok()) {
        if (existing->epoch > key.epoch) {
          return absl::AlreadyExistsError(
              StrCat("step ", key.step, " is already committed at ", final_dir, " by epoch ",
                     existing->epoch, ", newer than epoch ", key.epoch, "; epoch ", key.epoch,
                     "'s staging directory was not committed"));
        }
        // An older epoch's checkpoint of this step, or this epoch's with other files: left by a
        // run that went on past the checkpoint it was then resumed from. This one replaces it.
        replace = true;
      } else {
        if (existing.status().code() != absl::StatusCode::kNotFound &&
            existing.status().code() != absl::StatusCode::kDataLoss) {
          return existing.status();
        }
        // A directory with the committed name but no valid manifest is not a checkpoint: move it
        // out of the way.
        spdlog::warn("checkpoint commit: {} has no valid manifest ({}); moving it aside",
                     final_dir, existing.status().ToString());
        const std::string trash = JoinPath(root, TrashName(key.step));
        if (::rename(final_dir.c_str(), trash.c_str()) != 0 && errno != ENOENT) {
          return PosixError(errno, StrCat("rename ", final_dir, " to"), trash);
        }
        continue;
      }
    }
    if (!IsDirectory(staging)) {
      // Another committer may just have finished (the next round returns its result).
      if (IsDirectory(final_dir) && (!replace || is_ours(ReadManifest(final_dir)))) continue;
      return absl::FailedPreconditionError(StrCat("cannot commit step ", key.step, " of epoch ",
                                                  key.epoch, ": staging directory ", staging,
                                                  " does not exist"));
    }
    bool raced = false;
    for (const CheckpointFile& f : manifest.files) {
      const std::string path = JoinPath(staging, f.name);
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) {
        const int err = errno;
        if (err == ENOENT && !IsDirectory(staging)) {
          raced = true;
          break;
        }
        if (err == ENOENT) {
          return absl::FailedPreconditionError(StrCat("cannot commit step ", key.step, ": rank ",
                                                      f.rank, "'s file ", path, " is missing"));
        }
        return PosixError(err, "stat", path);
      }
      if (static_cast<uint64_t>(st.st_size) != f.size) {
        return absl::DataLossError(StrCat("cannot commit step ", key.step, ": ", path, " has ",
                                          st.st_size, " bytes, rank ", f.rank, " acknowledged ",
                                          f.size));
      }
      if (request.verify_checksums) {
        absl::StatusOr<FileDigest> digest = DigestFile(path);
        if (!digest.ok()) return digest.status();
        if (digest->crc32c != f.crc32c) {
          return absl::DataLossError(StrCat("cannot commit step ", key.step, ": ", path,
                                            " has CRC32C ", Crc32cToHex(digest->crc32c), ", rank ",
                                            f.rank, " acknowledged ", Crc32cToHex(f.crc32c)));
        }
      }
    }
    if (raced) continue;
    absl::Status wrote =
        WriteFileAtomically(JoinPath(staging, kManifestFileName), ManifestToJson(manifest));
    if (!wrote.ok()) {
      if (wrote.code() == absl::StatusCode::kNotFound && !IsDirectory(staging)) continue;
      return wrote;
    }
    if (replace) {
      ASSIGN_OR_RETURN(const bool replaced, ReplaceCommitted(root, staging, final_dir, key.step));
      if (!replaced) continue;  // final_dir went away meanwhile
      RemoveStrayTempFiles(final_dir);
      return final_dir;
    }
    if (::rename(staging.c_str(), final_dir.c_str()) != 0) {
      const int err = errno;
      if (err == ENOENT || err == EEXIST || err == ENOTEMPTY) continue;  // lost a race
      return PosixError(err, StrCat("rename ", staging, " to"), final_dir);
    }
    RETURN_IF_ERROR(FsyncDirectory(root));
    RemoveStrayTempFiles(final_dir);
    return final_dir;
  }
  return absl::AbortedError(
      StrCat("commit of step ", key.step, " kept racing with other writers of ", final_dir));
}

// ---- Discovery ---------------------------------------------------------------------------------

absl::StatusOr<Manifest> ReadManifest(const std::string& dir) {
  const std::string path = JoinPath(dir, kManifestFileName);
  absl::StatusOr<std::string> text = ReadSmallFile(path);
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(
          StrCat(dir, " has no ", kManifestFileName, ": not a committed checkpoint"));
    }
    return text.status();
  }
  return ManifestFromJson(*text, path);
}

absl::StatusOr<std::vector<CommittedCheckpoint>> ListCommitted(const std::string& root) {
  std::vector<CommittedCheckpoint> out;
  std::error_code ec;
  fs::directory_iterator it(root, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return out;
    return PosixError(ec.value(), "list", root);
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const CheckpointDirName e = ParseCheckpointDirName(name);
    if (e.kind != CheckpointDirName::kCommitted) continue;
    const std::string dir = it->path().string();
    if (!IsDirectory(dir)) continue;
    absl::StatusOr<Manifest> m = ValidateCommitted(dir, e.step);
    if (!m.ok()) {
      spdlog::warn("checkpoint {} is not usable: {}", dir, m.status().ToString());
      continue;
    }
    out.push_back(CommittedCheckpoint{dir, *std::move(m)});
  }
  if (ec) return PosixError(ec.value(), "list", root);
  std::sort(out.begin(), out.end(), [](const CommittedCheckpoint& a, const CommittedCheckpoint& b) {
    return a.manifest.step < b.manifest.step;
  });
  return out;
}

absl::StatusOr<CommittedCheckpoint> LatestCommitted(const std::string& root) {
  ASSIGN_OR_RETURN(std::vector<CommittedCheckpoint> all, ListCommitted(root));
  if (all.empty()) {
    return absl::NotFoundError(StrCat("no committed checkpoint under ", root));
  }
  return std::move(all.back());
}

absl::StatusOr<CommittedCheckpoint> FindCommitted(const std::string& root, int64_t step) {
  const std::string dir = JoinPath(root, CommittedDirName(step));
  if (!IsDirectory(dir)) {
    // Say what there is instead (quietly: ListCommitted logs every unusable directory).
    std::vector<int64_t> steps;
    std::error_code ec;
    for (fs::directory_iterator it(root, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      const CheckpointDirName e = ParseCheckpointDirName(it->path().filename().string());
      if (e.kind == CheckpointDirName::kCommitted &&
          ValidateCommitted(it->path().string(), e.step).ok()) {
        steps.push_back(e.step);
      }
    }
    std::sort(steps.begin(), steps.end());
    return absl::NotFoundError(StrCat(
        "there is no checkpoint of step ", step, " under ", root,
        steps.empty() ? std::string(" (no committed checkpoint at all)")
                      : StrCat(" (committed steps: ", absl::StrJoin(steps, ", "), ")")));
  }
  absl::StatusOr<Manifest> m = ValidateCommitted(dir, step);
  if (!m.ok()) {
    // Without a manifest the message says so ("<dir> has no MANIFEST.json: not a committed
    // checkpoint"); otherwise it says what is wrong with it or with a file it lists.
    const bool no_manifest = ::access(JoinPath(dir, kManifestFileName).c_str(), F_OK) != 0;
    return absl::FailedPreconditionError(
        no_manifest ? std::string(m.status().message())
                    : StrCat(dir, " is not a usable committed checkpoint: ", m.status().message()));
  }
  return CommittedCheckpoint{dir, *std::move(m)};
}

absl::StatusOr<std::vector<std::string>> DiscardAfter(const std::string& root, int64_t step) {
  std::vector<std::pair<std::string, int64_t>> later;  // path, step
  std::error_code ec;
  for (fs::directory_iterator it(root, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const CheckpointDirName e = ParseCheckpointDirName(it->path().filename().string());
    if ((e.kind == CheckpointDirName::kCommitted || e.kind == CheckpointDirName::kStaging) &&
        e.step > step) {
      later.emplace_back(it->path().string(), e.step);
    }
  }
  if (ec && ec != std::errc::no_such_file_or_directory) return PosixError(ec.value(), "list", root);
  std::sort(later.begin(), later.end());
  std::vector<std::string> removed;
  for (const auto& [path, dir_step] : later) {
    // The rename first: from then on the directory is no checkpoint, whatever happens next.
    const std::string trash = JoinPath(root, TrashName(dir_step));
    if (::rename(path.c_str(), trash.c_str()) != 0) {
      if (errno == ENOENT) continue;  // another process discarded it
      return PosixError(errno, StrCat("rename ", path, " to"), trash);
    }
    RETURN_IF_ERROR(FsyncDirectory(root));
    RETURN_IF_ERROR(RemoveTree(trash));
    removed.push_back(path);
  }
  return removed;
}

// ---- Retention ---------------------------------------------------------------------------------

absl::StatusOr<std::vector<std::string>> Prune(const std::string& root, int keep,
                                               int64_t current_epoch) {
  if (keep < 1) {
    return absl::InvalidArgumentError(
        StrCat("Prune keep=", keep, ": at least the newest checkpoint is always kept"));
  }
  ASSIGN_OR_RETURN(std::vector<CommittedCheckpoint> committed, ListCommitted(root));
  std::vector<std::string> removed;
  std::set<std::string> kept;
  int64_t newest_step = -1, newest_epoch = -1;
  if (!committed.empty()) {
    newest_step = committed.back().manifest.step;
    newest_epoch = committed.back().manifest.epoch;
  }
  const size_t n_remove = committed.size() > static_cast<size_t>(keep)
                              ? committed.size() - static_cast<size_t>(keep)
                              : 0;
  for (size_t i = 0; i < committed.size(); ++i) {
    if (i >= n_remove) {
      kept.insert(committed[i].path);
      continue;
    }
    RETURN_IF_ERROR(TrashAndRemove(root, committed[i].path, committed[i].manifest.step));
    removed.push_back(committed[i].path);
  }
  const int64_t live_epoch = std::max(newest_epoch, current_epoch);

  std::vector<std::pair<std::string, CheckpointDirName>> entries;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    entries.emplace_back(it->path().string(),
                         ParseCheckpointDirName(it->path().filename().string()));
  }
  if (ec && ec != std::errc::no_such_file_or_directory) return PosixError(ec.value(), "list", root);
  for (const auto& [path, e] : entries) {
    bool remove = false;
    switch (e.kind) {
      case CheckpointDirName::kTrash:
        remove = true;
        break;
      case CheckpointDirName::kStaging:
        remove = e.step <= newest_step || e.epoch < live_epoch;
        break;
      case CheckpointDirName::kCommitted:
        // Only a step-<N> directory that ListCommitted rejected and that is older than the
        // newest committed checkpoint.
        remove = !kept.count(path) && e.step < newest_step &&
                 std::find(removed.begin(), removed.end(), path) == removed.end() &&
                 IsDirectory(path);
        if (remove) {
          RETURN_IF_ERROR(TrashAndRemove(root, path, e.step));
          removed.push_back(path);
          remove = false;
        }
        break;
      case CheckpointDirName::kOther:
        break;
    }
    if (remove && IsDirectory(path)) {
      RETURN_IF_ERROR(RemoveTree(path));
      removed.push_back(path);
    }
  }
  return removed;
}

}  // namespace dsv3::train
