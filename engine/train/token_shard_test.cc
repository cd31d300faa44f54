// Tests of token_shard: the bytes written are checked against the llm.c layout built by hand (not
// against our own reader), round trips in both versions, atomic writes, and every corruption case
// with its status code and message.
#include "engine/train/token_shard.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::train {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

void PutInt32(std::vector<uint8_t>& bytes, int32_t v) {
  const uint32_t u = static_cast<uint32_t>(v);
  for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<uint8_t>(u >> (8 * i)));
}

// The llm.c layout, little-endian, built byte by byte.
std::vector<uint8_t> ShardBytes(int32_t magic, int32_t version, int32_t count,
                                const std::vector<uint32_t>& tokens) {
  std::vector<uint8_t> bytes;
  PutInt32(bytes, magic);
  PutInt32(bytes, version);
  PutInt32(bytes, count);
  bytes.resize(1024, 0);
  for (uint32_t t : tokens) {
    const int width = version == 1 ? 2 : 4;
    for (int i = 0; i < width; ++i) bytes.push_back(static_cast<uint8_t>(t >> (8 * i)));
  }
  return bytes;
}

class TokenShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/token_shard_test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  static std::vector<uint8_t> ReadBytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
  }
  static void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
  // The names in the directory (to see leftover temporary files).
  std::vector<std::string> Entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename());
    return names;
  }

  std::string dir_;
};

TEST_F(TokenShardTest, VersionOneWritesTheLlmcLayoutWithUint16Tokens) {
  const std::vector<uint32_t> tokens = {0, 1, 2, 65535, 300, 7};
  ASSERT_OK(WriteTokenShard(Path("a.bin"), tokens, 1));
  EXPECT_EQ(ReadBytes(Path("a.bin")), ShardBytes(20240520, 1, 6, tokens));
}

TEST_F(TokenShardTest, VersionTwoWritesTheLlmcLayoutWithUint32Tokens) {
  const std::vector<uint32_t> tokens = {0, 65536, 100000, 4000000000u};
  ASSERT_OK(WriteTokenShard(Path("b.bin"), tokens, 2));
  EXPECT_EQ(ReadBytes(Path("b.bin")), ShardBytes(20240520, 2, 4, tokens));
}

TEST_F(TokenShardTest, VersionOneRoundTrips) {
  std::vector<uint32_t> tokens;
  for (uint32_t i = 0; i < 5000; ++i) tokens.push_back((i * 7919u) % 65536u);
  ASSERT_OK(WriteTokenShard(Path("a.bin"), tokens, 1));
  absl::StatusOr<std::unique_ptr<TokenShard>> shard = TokenShard::Open(Path("a.bin"));
  ASSERT_OK(shard);
  EXPECT_EQ((*shard)->version(), 1);
  EXPECT_EQ((*shard)->size(), 5000);
  EXPECT_EQ((*shard)->info().file_bytes, 1024 + 2 * 5000);
  for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ((*shard)->At(i), tokens[i]) << "index " << i;
  std::vector<int32_t> window(5);
  (*shard)->Read(4995, absl::MakeSpan(window));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(window[i], static_cast<int32_t>(tokens[4995 + i]));
  EXPECT_EQ((*shard)->MaxToken(), *std::max_element(tokens.begin(), tokens.end()));
}

TEST_F(TokenShardTest, VersionTwoRoundTripsIdsAbove65535) {
  const std::vector<uint32_t> tokens = {70000, 3, 65536, 129279};
  ASSERT_OK(WriteTokenShard(Path("b.bin"), tokens, 2));
  absl::StatusOr<std::unique_ptr<TokenShard>> shard = TokenShard::Open(Path("b.bin"));
  ASSERT_OK(shard);
  EXPECT_EQ((*shard)->version(), 2);
  std::vector<int32_t> all(4);
  (*shard)->Read(0, absl::MakeSpan(all));
  EXPECT_THAT(all, ElementsAre(70000, 3, 65536, 129279));
  EXPECT_EQ((*shard)->MaxToken(), 129279u);
}

TEST_F(TokenShardTest, AnEmptyShardIsValid) {
  ASSERT_OK(WriteTokenShard(Path("e.bin"), {}, 1));
  absl::StatusOr<std::unique_ptr<TokenShard>> shard = TokenShard::Open(Path("e.bin"));
  ASSERT_OK(shard);
  EXPECT_EQ((*shard)->size(), 0);
  EXPECT_EQ((*shard)->MaxToken(), 0u);
}

TEST_F(TokenShardTest, StreamingAppendsMatchOneWrite) {
  absl::StatusOr<std::unique_ptr<TokenShardWriter>> writer =
      TokenShardWriter::Create(Path("s.bin"), 1);
  ASSERT_OK(writer);
  const std::vector<uint32_t> a = {5, 6, 7}, b = {8}, c = {9, 10};
  ASSERT_OK((*writer)->Append(a));
  ASSERT_OK((*writer)->Append(b));
  ASSERT_OK((*writer)->Append(c));
  EXPECT_EQ((*writer)->num_tokens(), 6);
  ASSERT_OK((*writer)->Finish());
  EXPECT_EQ(ReadBytes(Path("s.bin")), ShardBytes(20240520, 1, 6, {5, 6, 7, 8, 9, 10}));
  EXPECT_THAT((*writer)->Finish(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(TokenShardTest, VersionForVocabSwitchesAbove65536) {
  EXPECT_EQ(TokenShardVersionForVocab(4096), 1);
  EXPECT_EQ(TokenShardVersionForVocab(65536), 1);
  EXPECT_EQ(TokenShardVersionForVocab(65537), 2);
  EXPECT_EQ(TokenShardVersionForVocab(129280), 2);
}

TEST_F(TokenShardTest, VersionOneRejectsATokenAbove65535AndLeavesNoFile) {
  const std::vector<uint32_t> tokens = {1, 2, 65536};
  EXPECT_THAT(WriteTokenShard(Path("a.bin"), tokens, 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("65536"), HasSubstr("index 2"), HasSubstr("version 2"))));
  EXPECT_THAT(Entries(), ::testing::IsEmpty());
}

TEST_F(TokenShardTest, AnUnfinishedWriterLeavesNeitherTheShardNorATemporaryFile) {
  {
    absl::StatusOr<std::unique_ptr<TokenShardWriter>> writer =
        TokenShardWriter::Create(Path("a.bin"), 1);
    ASSERT_OK(writer);
    const std::vector<uint32_t> tokens = {1, 2, 3};
    ASSERT_OK((*writer)->Append(tokens));
    EXPECT_EQ(Entries().size(), 1u);  // the temporary file only
    EXPECT_FALSE(fs::exists(Path("a.bin")));
  }
  EXPECT_THAT(Entries(), ::testing::IsEmpty());
}

TEST_F(TokenShardTest, AnOldShardStaysWholeUntilTheNewOneIsFinished) {
  const std::vector<uint32_t> old_tokens = {1, 2, 3}, new_tokens = {4, 5};
  ASSERT_OK(WriteTokenShard(Path("a.bin"), old_tokens, 1));
  absl::StatusOr<std::unique_ptr<TokenShardWriter>> writer =
      TokenShardWriter::Create(Path("a.bin"), 1);
  ASSERT_OK(writer);
  ASSERT_OK((*writer)->Append(new_tokens));
  EXPECT_EQ(ReadBytes(Path("a.bin")), ShardBytes(20240520, 1, 3, old_tokens));
  ASSERT_OK((*writer)->Finish());
  EXPECT_EQ(ReadBytes(Path("a.bin")), ShardBytes(20240520, 1, 2, new_tokens));
  EXPECT_EQ(Entries().size(), 1u);
}

TEST_F(TokenShardTest, CreatingInAMissingDirectoryIsNotFound) {
  EXPECT_THAT(TokenShardWriter::Create(Path("no/such/dir/a.bin"), 1).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no/such/dir/a.bin")));
}

TEST_F(TokenShardTest, AnUnknownWriteVersionIsRejected) {
  EXPECT_THAT(TokenShardWriter::Create(Path("a.bin"), 3).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version 3")));
}

// ---- Corruption: every case through both Open and ReadTokenShardInfo ----

void ExpectBoth(const std::string& path, absl::StatusCode code, const std::string& substring) {
  EXPECT_THAT(TokenShard::Open(path).status(), StatusIs(code, HasSubstr(substring)));
  EXPECT_THAT(ReadTokenShardInfo(path).status(), StatusIs(code, HasSubstr(substring)));
}

TEST_F(TokenShardTest, AMissingFileIsNotFound) {
  ExpectBoth(Path("none.bin"), absl::StatusCode::kNotFound, "none.bin");
}

TEST_F(TokenShardTest, ADirectoryIsNotAShard) {
  ExpectBoth(dir_, absl::StatusCode::kInvalidArgument, "not a regular file");
}

TEST_F(TokenShardTest, AnEmptyFileIsTruncated) {
  WriteBytes(Path("z.bin"), {});
  ExpectBoth(Path("z.bin"), absl::StatusCode::kDataLoss, "0 bytes, shorter than the 1024-byte");
}

TEST_F(TokenShardTest, AFileShorterThanTheHeaderIsTruncated) {
  std::vector<uint8_t> bytes = ShardBytes(20240520, 1, 0, {});
  bytes.resize(1000);
  WriteBytes(Path("t.bin"), bytes);
  ExpectBoth(Path("t.bin"), absl::StatusCode::kDataLoss, "1000 bytes, shorter than the 1024-byte");
}

TEST_F(TokenShardTest, AWrongMagicIsNotAShard) {
  WriteBytes(Path("m.bin"), ShardBytes(20240521, 1, 2, {1, 2}));
  ExpectBoth(Path("m.bin"), absl::StatusCode::kInvalidArgument,
             "not an llm.c token shard: its header starts with magic 20240521, expected 20240520");
}

TEST_F(TokenShardTest, AnUnknownVersionIsRejected) {
  WriteBytes(Path("v.bin"), ShardBytes(20240520, 3, 0, {}));
  ExpectBoth(Path("v.bin"), absl::StatusCode::kInvalidArgument, "token-shard version 3");
  WriteBytes(Path("v0.bin"), ShardBytes(20240520, 0, 0, {}));
  ExpectBoth(Path("v0.bin"), absl::StatusCode::kInvalidArgument, "token-shard version 0");
}

TEST_F(TokenShardTest, ANegativeCountIsRejected) {
  WriteBytes(Path("n.bin"), ShardBytes(20240520, 1, -5, {}));
  ExpectBoth(Path("n.bin"), absl::StatusCode::kInvalidArgument, "count -5 is negative");
}

TEST_F(TokenShardTest, FewerTokensThanTheHeaderSaysIsTruncated) {
  WriteBytes(Path("s.bin"), ShardBytes(20240520, 1, 4, {1, 2, 3}));
  ExpectBoth(Path("s.bin"), absl::StatusCode::kDataLoss,
             "1030 bytes, but its header says 4 tokens of 2 bytes (1032 bytes with the header): "
             "the file is truncated");
}

TEST_F(TokenShardTest, MoreBytesThanTheHeaderSaysIsRejected) {
  WriteBytes(Path("l.bin"), ShardBytes(20240520, 2, 1, {1, 2}));
  ExpectBoth(Path("l.bin"), absl::StatusCode::kDataLoss, "longer than its header says");
}

TEST_F(TokenShardTest, AVersionOneFileReadAsIfVersionTwoIsASizeMismatch) {
  // The header claims uint32 tokens but the body holds uint16 ones.
  std::vector<uint8_t> bytes = ShardBytes(20240520, 1, 4, {1, 2, 3, 4});
  bytes[4] = 2;
  WriteBytes(Path("x.bin"), bytes);
  ExpectBoth(Path("x.bin"), absl::StatusCode::kDataLoss, "4 tokens of 4 bytes");
}

TEST_F(TokenShardTest, TheVocabularyCheckNamesTheFirstTokenOutOfRange) {
  const std::vector<uint32_t> tokens = {1, 4095, 4096, 5000};
  ASSERT_OK(WriteTokenShard(Path("a.bin"), tokens, 1));
  EXPECT_OK(TokenShard::Open(Path("a.bin"), {.vocab_size = 5001}));
  EXPECT_THAT(TokenShard::Open(Path("a.bin"), {.vocab_size = 4096}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("token 4096 at index 2 is not below vocab_size=4096")));
  // Without a vocab_size nothing is scanned.
  EXPECT_OK(TokenShard::Open(Path("a.bin")));
}

TEST_F(TokenShardTest, AnUnreadableFileIsPermissionDenied) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads any file";
  ASSERT_OK(WriteTokenShard(Path("p.bin"), {}, 1));
  ASSERT_EQ(::chmod(Path("p.bin").c_str(), 0), 0);
  ExpectBoth(Path("p.bin"), absl::StatusCode::kPermissionDenied, "p.bin");
}

TEST_F(TokenShardTest, ParseTokenShardHeaderChecksOnlyTheHeaderAndSize) {
  const std::vector<uint8_t> bytes = ShardBytes(20240520, 2, 10, {});
  absl::StatusOr<TokenShardInfo> info = ParseTokenShardHeader("x", bytes, 1024 + 40);
  ASSERT_OK(info);
  EXPECT_EQ(info->version, 2);
  EXPECT_EQ(info->num_tokens, 10);
  EXPECT_EQ(info->file_bytes, 1064);
}

}  // namespace
}  // namespace dsv3::train
