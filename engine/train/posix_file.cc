// POSIX file helpers; see posix_file.h.
#include "engine/train/posix_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <utility>

#include "engine/train/str_cat.h"

namespace dsv3::train {
namespace {

std::string TempPathFor(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  static const uint32_t salt = std::random_device{}();
  return StrCat(path, ".tmp-", ::getpid(), "-", salt, "-", counter.fetch_add(1));
}

std::string ParentDir(const std::string& path) {
  std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

absl::Status PosixError(int error_number, std::string_view op, std::string_view path) {
  return absl::Status(absl::ErrnoToStatusCode(error_number),
                      StrCat(op, " ", path, ": ", std::strerror(error_number)));
}

// ---- ReadOnlyFile ---------------------------------------------------------------------------

absl::StatusOr<ReadOnlyFile> ReadOnlyFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PosixError(errno, "open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return PosixError(err, "stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(StrCat(path, " is not a regular file"));
  }
  return ReadOnlyFile(path, fd, static_cast<uint64_t>(st.st_size));
}

ReadOnlyFile::ReadOnlyFile(ReadOnlyFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}

ReadOnlyFile& ReadOnlyFile::operator=(ReadOnlyFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
  }
  return *this;
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status ReadOnlyFile::ReadAt(uint64_t offset, void* dst, size_t n) const {
  auto* out = static_cast<char*>(dst);
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd_, out + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return PosixError(errno, "read", path_);
    }
    if (got == 0) {
      return absl::DataLossError(StrCat("read ", path_, ": the file ends at byte ", offset + done,
                                        ", wanted bytes up to ", offset + n));
    }
    done += static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

// ---- AtomicFileWriter -----------------------------------------------------------------------

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::Create(const std::string& path) {
  std::string temp = TempPathFor(path);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return PosixError(errno, "create", temp);
  return AtomicFileWriter(path, std::move(temp), fd);
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::move(other.temp_path_)),
      fd_(std::exchange(other.fd_, -1)),
      bytes_written_(other.bytes_written_) {}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    temp_path_ = std::move(other.temp_path_);
    fd_ = std::exchange(other.fd_, -1);
    bytes_written_ = other.bytes_written_;
  }
  return *this;
}

AtomicFileWriter::~AtomicFileWriter() { Abandon(); }

void AtomicFileWriter::Abandon() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_path_.c_str());
    fd_ = -1;
  }
}

absl::Status AtomicFileWriter::Append(const void* data, size_t n) {
  if (fd_ < 0) {
    return absl::FailedPreconditionError(
        StrCat("write ", path_, ": the writer was committed or has failed"));
  }
  const auto* in = static_cast<const char*>(data);
  size_t done = 0;
  while (done < n) {
    const ssize_t put = ::write(fd_, in + done, n - done);
    if (put < 0) {
      if (errno == EINTR) continue;
      const absl::Status status = PosixError(errno, "write", temp_path_);
      Abandon();
      return status;
    }
    done += static_cast<size_t>(put);
  }
  bytes_written_ += n;
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (fd_ < 0) {
    return absl::FailedPreconditionError(
        StrCat("commit ", path_, ": the writer was committed or has failed"));
  }
  if (::fsync(fd_) != 0) {
    const absl::Status status = PosixError(errno, "fsync", temp_path_);
    Abandon();
    return status;
  }
  if (::close(fd_) != 0) {
    const int err = errno;
    fd_ = -1;
    ::unlink(temp_path_.c_str());
    return PosixError(err, "close", temp_path_);
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_path_.c_str());
    return PosixError(err, StrCat("rename ", temp_path_, " to"), path_);
  }
  return FsyncDirectory(ParentDir(path_));
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents) {
  absl::StatusOr<AtomicFileWriter> writer = AtomicFileWriter::Create(path);
  if (!writer.ok()) return writer.status();
  absl::Status status = writer->Append(contents);
  if (!status.ok()) return status;
  return writer->Commit();
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_size) {
  absl::StatusOr<ReadOnlyFile> file = ReadOnlyFile::Open(path);
  if (!file.ok()) return file.status();
  if (file->size() > max_size) {
    return absl::FailedPreconditionError(
        StrCat(path, " has ", file->size(), " bytes, more than the ", max_size, " expected"));
  }
  std::string contents(file->size(), '\0');
  absl::Status status = file->ReadAt(0, contents.data(), contents.size());
  if (!status.ok()) return status;
  return contents;
}

absl::Status FsyncDirectory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError(errno, "open directory", path);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems refuse fsync on a directory (EINVAL); there is nothing more to do there.
  if (rc != 0 && err != EINVAL) return PosixError(err, "fsync directory", path);
  return absl::OkStatus();
}

}  // namespace dsv3::train
