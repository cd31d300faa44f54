// llm.c-layout token shards: a header of 256 little-endian int32 (magic 20240520, version, token
// count, the rest zero) followed by the tokens, uint16 for version 1 and uint32 for version 2.
// Reading memory-maps the file and validates it once at Open; writing goes to a temporary file that
// is renamed into place, so a shard is either complete or absent. Not the sampling order (that is
// data_loader.h) and not tokenization (that is dsv3-data's).
#ifndef DSV3_ENGINE_TRAIN_TOKEN_SHARD_H_
#define DSV3_ENGINE_TRAIN_TOKEN_SHARD_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace dsv3::train {

inline constexpr int32_t kTokenShardMagic = 20240520;
inline constexpr int64_t kTokenShardHeaderInts = 256;
inline constexpr int64_t kTokenShardHeaderBytes = kTokenShardHeaderInts * 4;
// The header's count is an int32, so a shard holds at most this many tokens.
inline constexpr int64_t kTokenShardMaxTokens = 2147483647;

// The shard version for a vocabulary: 1 (uint16 tokens) when every id fits in 16 bits
// (vocab_size <= 65536), else 2 (uint32 tokens).
int32_t TokenShardVersionForVocab(int64_t vocab_size);

// Bytes per token of a shard version (2 for version 1, 4 for version 2); 0 for any other version.
int64_t TokenShardBytesPerToken(int32_t version);

// What a valid header says.
struct TokenShardInfo {
  int32_t version = 0;     // 1 or 2
  int64_t num_tokens = 0;  // the header's count; the file holds exactly this many
  int64_t file_bytes = 0;  // kTokenShardHeaderBytes + num_tokens * bytes per token
};

// Parses and checks a header against the file's size. `header` is the file's first bytes (at least
// 12 of them; the header's unused 253 ints are not checked) and `file_bytes` its full size.
// Errors, each naming `path` and the offending values:
//   DATA_LOSS         the file is shorter than the 1024-byte header, or its size differs from what
//                     the header's count implies (truncated, or longer than it says);
//   INVALID_ARGUMENT  the magic is not 20240520 (not a token shard), the version is not 1 or 2,
//                     or the count is negative.
absl::StatusOr<TokenShardInfo> ParseTokenShardHeader(const std::string& path,
                                                     absl::Span<const uint8_t> header,
                                                     int64_t file_bytes);

// Reads and checks only the header of the shard at `path` (cheap; for validation at submit).
// Errors: those of ParseTokenShardHeader; INVALID_ARGUMENT if it is not a regular file; NOT_FOUND
// if it does not exist, PERMISSION_DENIED if it may not be read, and absl::ErrnoToStatus's code for
// any other failure to open or read it.
absl::StatusOr<TokenShardInfo> ReadTokenShardInfo(const std::string& path);

struct TokenShardOpenOptions {
  // > 0: every token must be < vocab_size (checked once, a full scan, at Open). 0: no check.
  int64_t vocab_size = 0;
};

// A read-only, memory-mapped token shard. Immutable after Open, so safe to share between threads.
class TokenShard {
 public:
  // Maps the shard at `path` and validates it. Errors: those of ReadTokenShardInfo; and, with
  // options.vocab_size > 0, INVALID_ARGUMENT naming the first token >= vocab_size and its index.
  static absl::StatusOr<std::unique_ptr<TokenShard>> Open(
      const std::string& path, const TokenShardOpenOptions& options = {});

  ~TokenShard();
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  int32_t version() const { return info_.version; }
  int64_t size() const { return info_.num_tokens; }
  const TokenShardInfo& info() const { return info_; }

  // Token `index`, 0 <= index < size() (checked only in debug builds).
  uint32_t At(int64_t index) const;

  // Copies tokens [begin, begin + out.size()) into `out`, widening to int32. The range must lie
  // inside the shard (a programmer error otherwise: aborts). Ids >= 2^31 cannot occur in practice
  // (no vocabulary is that large) and are not checked here; use TokenShardOpenOptions::vocab_size.
  void Read(int64_t begin, absl::Span<int32_t> out) const;

  // The largest token id in the shard (a full scan); 0 for an empty shard.
  uint32_t MaxToken() const;

 private:
  TokenShard(std::string path, TokenShardInfo info, void* map, size_t map_bytes);

  std::string path_;
  TokenShardInfo info_;
  void* map_ = nullptr;  // the whole file, mmap'ed read-only; owned
  size_t map_bytes_ = 0;
  const uint8_t* tokens_ = nullptr;  // map_ + header
};

// Streams tokens into a new shard. Tokens go to a temporary file beside `path`; Finish() writes
// the header, flushes to disk and renames the file to `path` (replacing an older one). If Finish()
// is never reached, the destructor removes the temporary file: a shard at `path` is always whole.
// Not thread-safe.
class TokenShardWriter {
 public:
  // Creates the temporary file. INVALID_ARGUMENT for a version other than 1 or 2; NOT_FOUND if the
  // directory does not exist; PERMISSION_DENIED or INTERNAL if the file cannot be created.
  static absl::StatusOr<std::unique_ptr<TokenShardWriter>> Create(const std::string& path,
                                                                  int32_t version);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Appends tokens. INVALID_ARGUMENT (nothing appended) if a token does not fit the version (>
  // 65535 in version 1), naming it; OUT_OF_RANGE past kTokenShardMaxTokens; INTERNAL on a write
  // error. After an error the writer only accepts destruction.
  absl::Status Append(absl::Span<const uint32_t> tokens);

  // Writes the header, fsyncs, renames to the final path and fsyncs the directory. INTERNAL on an
  // I/O error (the temporary file is removed). FAILED_PRECONDITION if called twice or after an
  // error.
  absl::Status Finish();

  int64_t num_tokens() const { return num_tokens_; }

 private:
  TokenShardWriter(std::string path, std::string temp_path, int fd, int32_t version);
  absl::Status Fail(absl::Status status);

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  int32_t version_ = 1;
  int64_t num_tokens_ = 0;
  bool done_ = false;  // finished or failed
};

// Writes `tokens` as a whole shard at `path` (TokenShardWriter in one call). Errors as there.
absl::Status WriteTokenShard(const std::string& path, absl::Span<const uint32_t> tokens,
                             int32_t version);

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_TOKEN_SHARD_H_
