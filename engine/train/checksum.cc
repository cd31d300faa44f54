// CRC32C; see checksum.h. The portable path is slicing-by-8 over tables built at compile time; the
// fast path feeds 8 bytes at a time to the SSE4.2 crc32 instruction, chosen once at run time.
#include "engine/train/checksum.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/train/posix_file.h"
#include "engine/train/str_cat.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace dsv3::train {
namespace {

constexpr uint32_t kPolyReflected = 0x82F63B78u;  // 0x1EDC6F41 bit-reversed

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables MakeTables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? kPolyReflected : 0u);
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i) {
    for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  }
  return t;
}

constexpr Tables kTables = MakeTables();

uint64_t LoadLe64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // x86-64 and the other targets we build for are little-endian
}

// `state` is the running (pre-inverted) register.
uint32_t PortableUpdate(uint32_t state, const unsigned char* p, size_t n) {
  while (n >= 8) {
    const uint64_t v = LoadLe64(p) ^ state;
    state = kTables[7][v & 0xFF] ^ kTables[6][(v >> 8) & 0xFF] ^ kTables[5][(v >> 16) & 0xFF] ^
            kTables[4][(v >> 24) & 0xFF] ^ kTables[3][(v >> 32) & 0xFF] ^
            kTables[2][(v >> 40) & 0xFF] ^ kTables[1][(v >> 48) & 0xFF] ^ kTables[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) state = (state >> 8) ^ kTables[0][(state ^ *p++) & 0xFFu];
  return state;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t HardwareUpdate(uint32_t state, const unsigned char* p,
                                                          size_t n) {
  uint64_t s = state;
  while (n >= 8) {
    s = _mm_crc32_u64(s, LoadLe64(p));
    p += 8;
    n -= 8;
  }
  uint32_t s32 = static_cast<uint32_t>(s);
  while (n-- > 0) s32 = _mm_crc32_u8(s32, *p++);
  return s32;
}

bool DetectHardware() { return __builtin_cpu_supports("sse4.2"); }
#else
uint32_t HardwareUpdate(uint32_t state, const unsigned char* p, size_t n) {
  return PortableUpdate(state, p, n);
}
bool DetectHardware() { return false; }
#endif

const bool kHaveHardware = DetectHardware();

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  const uint32_t state = ~crc;
  return ~(kHaveHardware ? HardwareUpdate(state, p, n) : PortableUpdate(state, p, n));
}

uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n) {
  return ~PortableUpdate(~crc, static_cast<const unsigned char*>(data), n);
}

bool Crc32cIsHardwareAccelerated() { return kHaveHardware; }

std::string Crc32cToHex(uint32_t crc) { return absl::StrFormat("%08x", crc); }

absl::StatusOr<uint32_t> Crc32cFromHex(std::string_view text) {
  if (text.size() != 8) {
    return absl::InvalidArgumentError(StrCat("checksum '", text, "' is not 8 hex digits"));
  }
  uint32_t value = 0;
  for (char c : text) {
    uint32_t digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return absl::InvalidArgumentError(StrCat("checksum '", text, "' is not 8 hex digits"));
    }
    value = (value << 4) | digit;
  }
  return value;
}

absl::StatusOr<FileDigest> DigestFile(const std::string& path) {
  absl::StatusOr<ReadOnlyFile> file = ReadOnlyFile::Open(path);
  if (!file.ok()) return file.status();
  return DigestFile(*file);
}

absl::StatusOr<FileDigest> DigestFile(const ReadOnlyFile& file) {
  constexpr size_t kBlock = size_t{1} << 20;
  std::vector<unsigned char> buffer(kBlock);
  FileDigest digest;
  digest.size = file.size();
  for (uint64_t offset = 0; offset < digest.size; offset += kBlock) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kBlock, digest.size - offset));
    absl::Status status = file.ReadAt(offset, buffer.data(), n);
    if (!status.ok()) return status;
    digest.crc32c = Crc32cExtend(digest.crc32c, buffer.data(), n);
  }
  return digest;
}

}  // namespace dsv3::train
