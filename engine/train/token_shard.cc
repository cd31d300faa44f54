// Reading (mmap) and writing (temporary file + rename) of llm.c-layout token shards. The format and
// the error contract are in token_shard.h; nothing here knows about sampling or tokenizers.
#include "engine/train/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace dsv3::train {
namespace {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian and read by memcpy");

int32_t LoadInt32(const uint8_t* p) {
  int32_t value;
  std::memcpy(&value, p, sizeof(value));
  return value;
}

absl::Status ErrnoStatus(int error, const std::string& what) {
  return absl::ErrnoToStatus(error, what);
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Writes all of `bytes` at the current offset, retrying short writes and EINTR.
absl::Status WriteAll(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrFormat("writing %s failed: %s", path, std::strerror(errno)));
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

int32_t TokenShardVersionForVocab(int64_t vocab_size) { return vocab_size <= 65536 ? 1 : 2; }

int64_t TokenShardBytesPerToken(int32_t version) { return version == 1 ? 2 : version == 2 ? 4 : 0; }

absl::StatusOr<TokenShardInfo> ParseTokenShardHeader(const std::string& path,
                                                     absl::Span<const uint8_t> header,
                                                     int64_t file_bytes) {
  if (file_bytes < kTokenShardHeaderBytes || header.size() < 12) {
    return absl::DataLossError(absl::StrFormat(
        "%s is %d bytes, shorter than the %d-byte llm.c token-shard header (truncated?)", path,
        file_bytes, kTokenShardHeaderBytes));
  }
  const int32_t magic = LoadInt32(&header[0]);
  const int32_t version = LoadInt32(&header[4]);
  const int32_t count = LoadInt32(&header[8]);
  if (magic != kTokenShardMagic) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is not an llm.c token shard: its header starts with magic %d, expected %d", path, magic,
        kTokenShardMagic));
  }
  if (version != 1 && version != 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has token-shard version %d; only 1 (uint16 tokens) and 2 (uint32 tokens) exist", path,
        version));
  }
  if (count < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: header token count %d is negative", path, count));
  }
  const int64_t token_bytes = TokenShardBytesPerToken(version);
  const int64_t expected = kTokenShardHeaderBytes + int64_t{count} * token_bytes;
  if (file_bytes != expected) {
    return absl::DataLossError(absl::StrFormat(
        "%s is %d bytes, but its header says %d tokens of %d bytes (%d bytes with the header): "
        "the file is %s",
        path, file_bytes, count, token_bytes, expected,
        file_bytes < expected ? "truncated" : "longer than its header says"));
  }
  return TokenShardInfo{version, count, file_bytes};
}

absl::StatusOr<TokenShardInfo> ReadTokenShardInfo(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open token shard ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return ErrnoStatus(error, absl::StrCat("cannot stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  std::array<uint8_t, 12> header{};
  size_t got = 0;
  while (got < header.size() && got < static_cast<size_t>(st.st_size)) {
    const ssize_t n = ::pread(fd, header.data() + got, header.size() - got, got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = n < 0 ? errno : EIO;
      ::close(fd);
      return ErrnoStatus(error, absl::StrCat("reading the header of ", path));
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return ParseTokenShardHeader(path, absl::MakeConstSpan(header.data(), got), st.st_size);
}

// ---- TokenShard ----

TokenShard::TokenShard(std::string path, TokenShardInfo info, void* map, size_t map_bytes)
    : path_(std::move(path)),
      info_(info),
      map_(map),
      map_bytes_(map_bytes),
      tokens_(static_cast<const uint8_t*>(map) + kTokenShardHeaderBytes) {}

TokenShard::~TokenShard() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

absl::StatusOr<std::unique_ptr<TokenShard>> TokenShard::Open(const std::string& path,
                                                             const TokenShardOpenOptions& options) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open token shard ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return ErrnoStatus(error, absl::StrCat("cannot stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  if (st.st_size < kTokenShardHeaderBytes) {
    ::close(fd);
    return ParseTokenShardHeader(path, {}, st.st_size).status();
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_error = errno;
  ::close(fd);  // the mapping stays valid
  if (map == MAP_FAILED) return ErrnoStatus(map_error, absl::StrCat("cannot mmap ", path));
  const auto* bytes = static_cast<const uint8_t*>(map);
  absl::StatusOr<TokenShardInfo> info =
      ParseTokenShardHeader(path, absl::MakeConstSpan(bytes, 12), st.st_size);
  if (!info.ok()) {
    ::munmap(map, static_cast<size_t>(st.st_size));
    return info.status();
  }
  std::unique_ptr<TokenShard> shard(
      new TokenShard(path, *info, map, static_cast<size_t>(st.st_size)));
  if (options.vocab_size > 0) {
    for (int64_t i = 0; i < shard->size(); ++i) {
      const uint32_t token = shard->At(i);
      if (token >= static_cast<uint64_t>(options.vocab_size)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: token %d at index %d is not below vocab_size=%d", path, token, i,
                            options.vocab_size));
      }
    }
  }
  return shard;
}

uint32_t TokenShard::At(int64_t index) const {
  if (info_.version == 1) {
    uint16_t value;
    std::memcpy(&value, tokens_ + index * 2, 2);
    return value;
  }
  uint32_t value;
  std::memcpy(&value, tokens_ + index * 4, 4);
  return value;
}

void TokenShard::Read(int64_t begin, absl::Span<int32_t> out) const {
  const int64_t count = static_cast<int64_t>(out.size());
  if (begin < 0 || begin + count > info_.num_tokens) {
    std::fprintf(stderr, "TokenShard::Read: [%ld, %ld) outside %s (%ld tokens)\n",
                 static_cast<long>(begin), static_cast<long>(begin + count), path_.c_str(),
                 static_cast<long>(info_.num_tokens));
    std::abort();
  }
  if (info_.version == 1) {
    const uint8_t* p = tokens_ + begin * 2;
    for (int64_t i = 0; i < count; ++i) {
      uint16_t value;
      std::memcpy(&value, p + i * 2, 2);
      out[i] = value;
    }
  } else {
    std::memcpy(out.data(), tokens_ + begin * 4, static_cast<size_t>(count) * 4);
  }
}

uint32_t TokenShard::MaxToken() const {
  uint32_t max = 0;
  for (int64_t i = 0; i < info_.num_tokens; ++i) max = std::max(max, At(i));
  return max;
}

// ---- TokenShardWriter ----

TokenShardWriter::TokenShardWriter(std::string path, std::string temp_path, int fd, int32_t version)
    : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd), version_(version) {}

TokenShardWriter::~TokenShardWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
}

absl::StatusOr<std::unique_ptr<TokenShardWriter>> TokenShardWriter::Create(const std::string& path,
                                                                           int32_t version) {
  if (version != 1 && version != 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "token-shard version %d for %s: only 1 (uint16 tokens) and 2 (uint32 tokens) exist",
        version, path));
  }
  // Unique per process and writer, so concurrent writers of one path never share a temp file.
  static std::atomic<int> counter{0};
  const std::string temp_path =
      absl::StrFormat("%s.tmp-%d-%d", path, static_cast<int>(::getpid()), counter++);
  const int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot create ", temp_path));
  std::unique_ptr<TokenShardWriter> writer(new TokenShardWriter(path, temp_path, fd, version));
  // A zero header as a placeholder; Finish() fills in the count.
  const std::vector<uint8_t> zeros(kTokenShardHeaderBytes, 0);
  RETURN_IF_ERROR(writer->Fail(WriteAll(fd, zeros.data(), zeros.size(), temp_path)));
  return writer;
}

absl::Status TokenShardWriter::Fail(absl::Status status) {
  if (!status.ok()) {
    done_ = true;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
  return status;
}

absl::Status TokenShardWriter::Append(absl::Span<const uint32_t> tokens) {
  if (done_) {
    return absl::FailedPreconditionError(
        absl::StrCat("TokenShardWriter for ", path_, ": Append after Finish or an error"));
  }
  if (num_tokens_ + static_cast<int64_t>(tokens.size()) > kTokenShardMaxTokens) {
    return Fail(absl::OutOfRangeError(absl::StrFormat(
        "%s: %d tokens exceed the llm.c shard limit of %d (the header count is an int32)", path_,
        num_tokens_ + static_cast<int64_t>(tokens.size()), kTokenShardMaxTokens)));
  }
  if (version_ == 1) {
    std::vector<uint16_t> narrow(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] > 65535) {
        return Fail(absl::InvalidArgumentError(absl::StrFormat(
            "%s: token %d (index %d) does not fit a version-1 shard (uint16); use version 2", path_,
            tokens[i], num_tokens_ + static_cast<int64_t>(i))));
      }
      narrow[i] = static_cast<uint16_t>(tokens[i]);
    }
    RETURN_IF_ERROR(Fail(WriteAll(fd_, narrow.data(), narrow.size() * 2, temp_path_)));
  } else {
    RETURN_IF_ERROR(Fail(WriteAll(fd_, tokens.data(), tokens.size() * 4, temp_path_)));
  }
  num_tokens_ += static_cast<int64_t>(tokens.size());
  return absl::OkStatus();
}

absl::Status TokenShardWriter::Finish() {
  if (done_) {
    return absl::FailedPreconditionError(
        absl::StrCat("TokenShardWriter for ", path_, ": Finish called twice or after an error"));
  }
  std::array<int32_t, 3> header = {kTokenShardMagic, version_, static_cast<int32_t>(num_tokens_)};
  if (::pwrite(fd_, header.data(), sizeof(header), 0) != static_cast<ssize_t>(sizeof(header))) {
    return Fail(absl::InternalError(
        absl::StrFormat("writing the header of %s failed: %s", temp_path_, std::strerror(errno))));
  }
  if (::fsync(fd_) != 0) {
    return Fail(absl::InternalError(
        absl::StrFormat("fsync of %s failed: %s", temp_path_, std::strerror(errno))));
  }
  if (::close(fd_) != 0) {
    fd_ = -1;
    return Fail(absl::InternalError(
        absl::StrFormat("closing %s failed: %s", temp_path_, std::strerror(errno))));
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    return Fail(absl::InternalError(
        absl::StrFormat("renaming %s to %s failed: %s", temp_path_, path_, std::strerror(errno))));
  }
  temp_path_.clear();
  done_ = true;
  // Make the rename durable; failure here does not undo a complete shard, so it is not an error.
  const int dir = ::open(DirectoryOf(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return absl::OkStatus();
}

absl::Status WriteTokenShard(const std::string& path, absl::Span<const uint32_t> tokens,
                             int32_t version) {
  ASSIGN_OR_RETURN(std::unique_ptr<TokenShardWriter> writer,
                   TokenShardWriter::Create(path, version));
  RETURN_IF_ERROR(writer->Append(tokens));
  return writer->Finish();
}

}  // namespace dsv3::train
