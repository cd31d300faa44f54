// FileStore; see store_file.h. File names in the directory: "k_<escaped key>" holds a value,
// "l_<escaped key>" is the key's lock file for Add, "t_<pid>_<n>" is a value being written.
#include "engine/parallel/store_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace dsv3::parallel {
namespace {

constexpr size_t kMaxFileName = 240;
constexpr absl::Duration kFirstPoll = absl::Milliseconds(1);
constexpr absl::Duration kMaxPoll = absl::Milliseconds(50);

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat("file store: ", what, " ", path, ": ", strerror(errno)));
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Polls `done` with exponential backoff until it returns true or `deadline` passes. Returns
// whether `done` returned true.
template <typename Fn>
bool PollUntil(absl::Time deadline, Fn done) {
  absl::Duration sleep = kFirstPoll;
  while (true) {
    if (done()) return true;
    const absl::Time now = absl::Now();
    if (now >= deadline) return false;
    absl::SleepFor(std::min(sleep, deadline - now));
    sleep = std::min(sleep * 2, kMaxPoll);
  }
}

// Closes a file descriptor on scope exit.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FileStore>> FileStore::Open(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("file store directory is empty");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("file store: cannot create directory ", dir, ": ", ec.message()));
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) return ErrnoError("cannot write to", dir);
  return std::unique_ptr<FileStore>(new FileStore(dir));
}

absl::StatusOr<std::string> FileStore::PathFor(absl::string_view key,
                                               absl::string_view kind) const {
  RETURN_IF_ERROR(CheckStoreKey(key));
  std::string name(kind);
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '_' || c == '-') {
      name.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&name, "%%%02X", c);
    }
  }
  if (name.size() > kMaxFileName) {
    return absl::InvalidArgumentError(absl::StrCat("file store key '", key.substr(0, 64),
                                                   "...' is too long for a file name (",
                                                   name.size(), " bytes escaped)"));
  }
  return absl::StrCat(dir_, "/", name);
}

absl::Status FileStore::WriteAtomically(const std::string& path, absl::string_view value) {
  const std::string temp = absl::StrCat(dir_, "/t_", ::getpid(), "_", temp_counter_++);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", temp);
  {
    FdCloser closer(fd);
    size_t written = 0;
    while (written < value.size()) {
      const ssize_t n = ::write(fd, value.data() + written, value.size() - written);
      if (n < 0) {
        if (errno == EINTR) continue;
        absl::Status s = ErrnoError("cannot write", temp);
        ::unlink(temp.c_str());
        return s;
      }
      written += static_cast<size_t>(n);
    }
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoError("cannot rename into place", path);
    ::unlink(temp.c_str());
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FileStore::ReadFile(const std::string& path) const {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(path);
    return ErrnoError("cannot open", path);
  }
  FdCloser closer(fd);
  std::string out;
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::Status FileStore::Set(absl::string_view key, absl::string_view value) {
  ASSIGN_OR_RETURN(const std::string path, PathFor(key, "k_"));
  RETURN_IF_ERROR(CheckStoreValue(key, value));
  return WriteAtomically(path, value);
}

absl::StatusOr<std::string> FileStore::Get(absl::string_view key, absl::Duration timeout) {
  ASSIGN_OR_RETURN(const std::string path, PathFor(key, "k_"));
  absl::StatusOr<std::string> value = absl::NotFoundError(path);
  PollUntil(absl::Now() + timeout, [&] {
    value = ReadFile(path);
    return !absl::IsNotFound(value.status());
  });
  if (absl::IsNotFound(value.status())) return MissingKeysError({std::string(key)}, timeout);
  return value;
}

absl::Status FileStore::Wait(absl::Span<const std::string> keys, absl::Duration timeout) {
  std::vector<std::string> paths;
  for (const std::string& key : keys) {
    ASSIGN_OR_RETURN(std::string path, PathFor(key, "k_"));
    paths.push_back(std::move(path));
  }
  std::vector<bool> seen(keys.size(), false);
  const bool all = PollUntil(absl::Now() + timeout, [&] {
    bool done = true;
    for (size_t i = 0; i < paths.size(); ++i) {
      if (!seen[i]) seen[i] = Exists(paths[i]);
      done = done && seen[i];
    }
    return done;
  });
  if (all) return absl::OkStatus();
  std::vector<std::string> missing;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!seen[i]) missing.push_back(keys[i]);
  }
  return MissingKeysError(missing, timeout);
}

absl::StatusOr<int64_t> FileStore::Add(absl::string_view key, int64_t delta) {
  ASSIGN_OR_RETURN(const std::string path, PathFor(key, "k_"));
  ASSIGN_OR_RETURN(const std::string lock_path, PathFor(key, "l_"));
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return ErrnoError("cannot open lock file", lock_path);
  FdCloser closer(lock_fd);  // closing the descriptor releases the lock
  while (::flock(lock_fd, LOCK_EX) != 0) {
    if (errno != EINTR) return ErrnoError("cannot lock", lock_path);
  }
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok() && !absl::IsNotFound(text.status())) return text.status();
  ASSIGN_OR_RETURN(const int64_t value, ParseStoreCounter(key, text.ok() ? *text : ""));
  const int64_t updated = value + delta;
  RETURN_IF_ERROR(WriteAtomically(path, std::to_string(updated)));
  return updated;
}

}  // namespace dsv3::parallel
