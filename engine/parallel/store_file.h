// FileStore: a Store in a directory, for the processes of one local multi-process run
// (`dsv3-train run --world_size=N --rank=R --store=DIR`) and multi-process tests. One file per key,
// written to a temporary file and renamed into place (readers never see a partial value); Add holds
// an flock on the key's lock file; Get and Wait poll with backoff. Works across processes on one
// file system; not across machines on NFS (flock), and nothing is ever deleted from the directory.
#ifndef DSV3_ENGINE_PARALLEL_STORE_FILE_H_
#define DSV3_ENGINE_PARALLEL_STORE_FILE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "engine/parallel/store.h"

namespace dsv3::parallel {

class FileStore : public Store {
 public:
  // Creates `dir` (and its parents) when missing. INVALID_ARGUMENT for an empty path; INTERNAL when
  // the directory cannot be created or is not writable.
  static absl::StatusOr<std::unique_ptr<FileStore>> Open(const std::string& dir);

  // Keys map to file names by escaping every byte outside [A-Za-z0-9_-] as %XX; INVALID_ARGUMENT
  // when the escaped name would be longer than a file name may be (about 240 bytes).
  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::Status Wait(absl::Span<const std::string> keys, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;

  const std::string& dir() const { return dir_; }

 private:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {}

  absl::StatusOr<std::string> PathFor(absl::string_view key, absl::string_view kind) const;
  // Writes `value` to `path` atomically (temporary file + rename).
  absl::Status WriteAtomically(const std::string& path, absl::string_view value);
  // NOT_FOUND when the file does not exist.
  absl::StatusOr<std::string> ReadFile(const std::string& path) const;

  const std::string dir_;
  std::atomic<uint64_t> temp_counter_{0};
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_STORE_FILE_H_
