// Tests for CRC32C: published check values (the CRC catalogue's "123456789" and RFC 3720 B.4),
// the hardware path against the portable one, extension, hex form, and file digests.
#include "engine/train/checksum.h"

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::train {
namespace {

using ::dsv3::testing::IsOkAndHolds;
using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;

uint32_t Seed() {
  const uint32_t seed = std::random_device{}();
  std::printf("random seed: %u\n", seed);
  return seed;
}

TEST(Crc32cTest, MatchesTheCatalogueCheckValue) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32cExtendPortable(0, "123456789", 9), 0xE3069283u);
}

TEST(Crc32cTest, MatchesTheRfc3720TestVectors) {
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF), up(32), down(32);
  for (int i = 0; i < 32; ++i) {
    up[i] = static_cast<uint8_t>(i);
    down[i] = static_cast<uint8_t>(31 - i);
  }
  EXPECT_EQ(Crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(Crc32c(up.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(Crc32c(down.data(), 32), 0x113FDB5Cu);
}

TEST(Crc32cTest, OfNothingIsZero) { EXPECT_EQ(Crc32c(nullptr, 0), 0u); }

TEST(Crc32cTest, HardwareAndPortablePathsAgreeAtEveryLengthAndAlignment) {
  std::printf("hardware crc32: %s\n", Crc32cIsHardwareAccelerated() ? "yes" : "no");
  std::mt19937 rng(Seed());
  std::vector<uint8_t> data(1024 + 16);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t n = 0; n <= 1024; n += (n < 64 ? 1 : 37)) {
      ASSERT_EQ(Crc32cExtend(0, data.data() + offset, n),
                Crc32cExtendPortable(0, data.data() + offset, n))
          << "offset " << offset << " length " << n;
    }
  }
}

TEST(Crc32cTest, ExtendingEqualsChecksummingTheConcatenation) {
  std::mt19937 rng(Seed());
  std::string data(5000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  const uint32_t whole = Crc32c(data);
  for (int trial = 0; trial < 100; ++trial) {
    const size_t cut = rng() % (data.size() + 1);
    const uint32_t first = Crc32c(data.data(), cut);
    EXPECT_EQ(Crc32cExtend(first, data.data() + cut, data.size() - cut), whole) << "cut " << cut;
  }
}

TEST(Crc32cTest, DetectsEverySingleBitFlip) {
  std::string data = "a checkpoint shard's bytes, any bytes at all";
  const uint32_t clean = Crc32c(data);
  for (size_t i = 0; i < data.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      data[i] ^= static_cast<char>(1 << bit);
      EXPECT_NE(Crc32c(data), clean) << "byte " << i << " bit " << bit;
      data[i] ^= static_cast<char>(1 << bit);
    }
  }
}

TEST(Crc32cTest, HexFormRoundTripsAndRejectsMalformedText) {
  EXPECT_EQ(Crc32cToHex(0xE3069283u), "e3069283");
  EXPECT_EQ(Crc32cToHex(0x0000002Au), "0000002a");
  EXPECT_THAT(Crc32cFromHex("e3069283"), IsOkAndHolds(0xE3069283u));
  EXPECT_THAT(Crc32cFromHex("E3069283"), IsOkAndHolds(0xE3069283u));
  EXPECT_THAT(Crc32cFromHex("e306928"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("e306928")));
  EXPECT_THAT(Crc32cFromHex("e306928g"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Crc32cFromHex("0xe30692"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DigestFileTest, GivesTheSizeAndChecksumOfTheWholeFile) {
  const std::string path = ::testing::TempDir() + "/digest_file_test.bin";
  std::string data(3 * (1 << 20) + 12345, '\0');  // spans several 1 MiB blocks
  std::mt19937 rng(7);
  for (char& c : data) c = static_cast<char>(rng());
  std::ofstream(path, std::ios::binary).write(data.data(), data.size());
  absl::StatusOr<FileDigest> digest = DigestFile(path);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(digest->size, data.size());
  EXPECT_EQ(digest->crc32c, Crc32cExtendPortable(0, data.data(), data.size()));
  std::filesystem::remove(path);
}

TEST(DigestFileTest, AMissingFileIsNotFoundAndNamed) {
  EXPECT_THAT(DigestFile("/nonexistent/dir/file.bin"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/dir/file.bin")));
}

}  // namespace
}  // namespace dsv3::train
