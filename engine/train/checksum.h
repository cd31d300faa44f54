// CRC32C (Castagnoli polynomial 0x1EDC6F41, reflected, init and final XOR 0xFFFFFFFF; the checksum
// of iSCSI, ext4 metadata, LevelDB and Google Cloud Storage) of buffers and files, used to detect
// corrupted checkpoint files. It detects accidental damage (bit flips, torn or truncated writes),
// not tampering: it is no cryptographic hash. Uses the SSE4.2 crc32 instruction when the CPU has
// it, a table-driven (slicing-by-8) implementation otherwise; both give identical results.
#ifndef DSV3_ENGINE_TRAIN_CHECKSUM_H_
#define DSV3_ENGINE_TRAIN_CHECKSUM_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace dsv3::train {

// The CRC32C of `n` bytes at `data` continued from `crc`, the CRC32C of the bytes before them
// (0 for none): Crc32cExtend(Crc32c(a), b) == Crc32c(a + b). `data` may be null when n == 0.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }
inline uint32_t Crc32c(std::string_view s) { return Crc32cExtend(0, s.data(), s.size()); }

// The same, always with the portable table-driven code (a reference for tests and benchmarks).
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n);

// True when Crc32cExtend uses the CPU's crc32 instruction.
bool Crc32cIsHardwareAccelerated();

// A checksum as written in manifests: 8 lowercase hex digits ("e3069283").
std::string Crc32cToHex(uint32_t crc);
// Parses Crc32cToHex's form; INVALID_ARGUMENT naming `text` unless it is exactly 8 hex digits.
absl::StatusOr<uint32_t> Crc32cFromHex(std::string_view text);

// The size and CRC32C of a file's whole contents.
struct FileDigest {
  uint64_t size = 0;
  uint32_t crc32c = 0;
  friend bool operator==(const FileDigest&, const FileDigest&) = default;
};

// Reads `path` sequentially in 1 MiB blocks (never the whole file at once) and returns its digest.
// Errors: NOT_FOUND when the file does not exist, PERMISSION_DENIED, or another code from errno,
// each naming the path.
absl::StatusOr<FileDigest> DigestFile(const std::string& path);

class ReadOnlyFile;
// The same for a file already open: its size when opened and the CRC32C of those bytes. DATA_LOSS
// when it has been truncated since; otherwise the errno's code, naming the path.
absl::StatusOr<FileDigest> DigestFile(const ReadOnlyFile& file);

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_CHECKSUM_H_
