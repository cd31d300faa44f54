// Small POSIX file helpers for checkpoint and safetensors I/O: an errno-to-Status conversion that
// names the operation and the path, a read-only file with positional reads (pread; never loads a
// file whole), an atomic file writer (temporary file in the same directory, fsync, rename, fsync of
// the directory), and directory fsync. Local POSIX file systems only; no buffering or caching.
#ifndef DSV3_ENGINE_TRAIN_POSIX_FILE_H_
#define DSV3_ENGINE_TRAIN_POSIX_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dsv3::train {

// A Status for a failed system call: the code from `error_number` (ENOENT -> NOT_FOUND, EACCES ->
// PERMISSION_DENIED, ENOSPC -> RESOURCE_EXHAUSTED, ...) and the message "<op> <path>: <strerror>".
absl::Status PosixError(int error_number, std::string_view op, std::string_view path);

// A file opened for reading. Move-only; closes its descriptor when destroyed.
class ReadOnlyFile {
 public:
  // Errors: NOT_FOUND when `path` does not exist, FAILED_PRECONDITION when it is not a regular
  // file, otherwise the errno's code; each names the path.
  static absl::StatusOr<ReadOnlyFile> Open(const std::string& path);

  ReadOnlyFile(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile& operator=(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  ~ReadOnlyFile();

  const std::string& path() const { return path_; }
  // The size when the file was opened.
  uint64_t size() const { return size_; }

  // Reads exactly `n` bytes at `offset` into `dst` (retrying short reads and EINTR). DATA_LOSS when
  // the file ends before offset + n (it was truncated since it was opened), otherwise the errno's
  // code.
  absl::Status ReadAt(uint64_t offset, void* dst, size_t n) const;

 private:
  ReadOnlyFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}

  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Writes a file atomically: bytes go to "<path>.tmp-<pid>-<random>" in the same directory; Commit()
// fsyncs it, renames it over `path` and fsyncs the directory, so a reader sees either the old file
// or the complete new one, and a crash never leaves a partial `path`. Destroying an uncommitted
// writer removes the temporary file. Not thread-safe; move-only.
class AtomicFileWriter {
 public:
  // Errors: the errno's code naming the temporary path (NOT_FOUND when the directory is missing).
  static absl::StatusOr<AtomicFileWriter> Create(const std::string& path);

  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  // Appends `n` bytes. Errors: the errno's code (RESOURCE_EXHAUSTED for a full disk), naming the
  // path; FAILED_PRECONDITION after Commit or a failed call.
  absl::Status Append(const void* data, size_t n);
  absl::Status Append(std::string_view data) { return Append(data.data(), data.size()); }

  // fsync, rename into place, fsync the directory. Errors as Append; after an error the temporary
  // file is removed and `path` is untouched (or, if only the directory fsync failed, replaced).
  absl::Status Commit();

  const std::string& path() const { return path_; }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  AtomicFileWriter(std::string path, std::string temp_path, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}
  void Abandon();

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t bytes_written_ = 0;
};

// Writes `contents` to `path` with an AtomicFileWriter. Errors as AtomicFileWriter's.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

// Reads a whole (small) file. NOT_FOUND when missing; FAILED_PRECONDITION when it is larger than
// `max_size` bytes; otherwise the errno's code; each names the path.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_size = 64 << 20);

// fsyncs directory `path` so that renames and creations inside it are durable.
// Errors: the errno's code naming the path.
absl::Status FsyncDirectory(const std::string& path);

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_POSIX_FILE_H_
