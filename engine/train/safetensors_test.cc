// Tests for the safetensors reader and writer: round trips for every dtype, the byte layout, typed
// reads and their errors, metadata, atomic writes, and a cross-check in both directions against an
// independent Python implementation of the format (tests/reference/safetensors_crosscheck.py, with
// torch's BF16/F16 conversions as the reference for ReadAsFloat).
#include "engine/train/safetensors.h"

#include <sys/wait.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

#ifndef DSV3_CHECKPOINT_PYTHON
#define DSV3_CHECKPOINT_PYTHON "/usr/bin/python3"
#endif
#ifndef DSV3_SOURCE_ROOT
#define DSV3_SOURCE_ROOT "."
#endif

namespace dsv3::train {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::IsOk;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh directory for the running test.
std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) /
                       (std::string("st_") + info->test_suite_name() + "." + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs the Python cross-check script with `args`; the assertion carries its output on failure.
::testing::AssertionResult RunPython(const std::vector<std::string>& args) {
  std::string cmd = std::string(DSV3_CHECKPOINT_PYTHON) + " '" + DSV3_SOURCE_ROOT +
                    "/tests/reference/safetensors_crosscheck.py'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return ::testing::AssertionFailure() << "cannot run " << cmd;
  std::string output;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) output.append(buf.data(), n);
  const int status = pclose(pipe);
  if (status != 0) {
    return ::testing::AssertionFailure()
           << "exit status " << WEXITSTATUS(status) << " from " << cmd << "\n"
           << output;
  }
  std::printf("%s", output.c_str());
  return ::testing::AssertionSuccess();
}

// Deterministic bytes for a tensor of `dtype` (BOOL gets 0/1).
std::vector<uint8_t> PatternBytes(DType dtype, size_t n_bytes, int salt) {
  std::vector<uint8_t> out(n_bytes);
  for (size_t j = 0; j < n_bytes; ++j) {
    out[j] = dtype == DType::kBool ? (j % 3 == 0 ? 1 : 0)
                                   : static_cast<uint8_t>((j * 131 + 17 * salt + 7) & 0xFF);
  }
  return out;
}

TEST(DTypeTest, NamesAndSizesFollowTheFormat) {
  EXPECT_EQ(AllDTypes().size(), 15u);
  for (DType d : AllDTypes()) {
    absl::StatusOr<DType> back = DTypeFromName(DTypeName(d));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, d);
  }
  EXPECT_EQ(DTypeName(DType::kF8E4M3), "F8_E4M3");
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF64), 8u);
  EXPECT_EQ(DTypeSize(DType::kBool), 1u);
  EXPECT_THAT(DTypeFromName("F4"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("F4")));
}

TEST(SafetensorsTest, EveryDtypeRoundTripsByteForByte) {
  const std::string path = TestDir() + "/all.safetensors";
  SafetensorsWriter writer;
  std::vector<std::vector<uint8_t>> data;
  for (DType d : AllDTypes()) {
    data.push_back(PatternBytes(d, 2 * 3 * DTypeSize(d), static_cast<int>(d)));
    ASSERT_OK(writer.Add(std::string("t.") + std::string(DTypeName(d)), d, {2, 3},
                         data.back().data(), data.back().size()));
  }
  ASSERT_OK(writer.WriteFile(path));
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->tensors().size(), AllDTypes().size());
  for (size_t i = 0; i < AllDTypes().size(); ++i) {
    const DType d = AllDTypes()[i];
    const std::string name = std::string("t.") + std::string(DTypeName(d));
    absl::StatusOr<const TensorInfo*> info = reader->Find(name);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ((*info)->dtype, d) << name;
    EXPECT_THAT((*info)->shape, ElementsAre(2, 3)) << name;
    absl::StatusOr<std::vector<uint8_t>> bytes = reader->ReadBytes(name, d);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(*bytes, data[i]) << name;
  }
}

TEST(SafetensorsTest, ScalarsAndEmptyTensorsRoundTrip) {
  const std::string path = TestDir() + "/edge.safetensors";
  const double scalar = -2.75;
  SafetensorsWriter writer;
  ASSERT_OK(writer.Add("scalar", DType::kF64, {}, &scalar, sizeof(scalar)));
  ASSERT_OK(writer.Add("empty", DType::kF32, {0, 4}, nullptr, 0));
  ASSERT_OK(writer.Add("empty2", DType::kI8, {3, 0}, nullptr, 0));
  ASSERT_OK(writer.WriteFile(path));
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  absl::StatusOr<std::vector<double>> s = reader->Read<double>("scalar", {});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(*s, ElementsAre(-2.75));
  absl::StatusOr<std::vector<float>> e = reader->Read<float>("empty", {0, 4});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->empty());
  EXPECT_OK(reader->Find("empty2").status());
}

TEST(SafetensorsTest, AnEmptyFileOfNoTensorsRoundTrips) {
  const std::string path = TestDir() + "/none.safetensors";
  ASSERT_OK(SafetensorsWriter().WriteFile(path));
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE(reader->tensors().empty());
  EXPECT_TRUE(reader->metadata().empty());
}

TEST(SafetensorsTest, MetadataRoundTrips) {
  const std::string path = TestDir() + "/meta.safetensors";
  SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  writer.SetMetadata("note", "quotes \" and \xc3\xbc");
  writer.SetMetadata("format", "dsv3");  // replaces
  ASSERT_OK(writer.WriteFile(path));
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->metadata().size(), 2u);
  EXPECT_EQ(reader->metadata().at("format"), "dsv3");
  EXPECT_EQ(reader->metadata().at("note"), "quotes \" and \xc3\xbc");
}

TEST(SafetensorsTest, TheLayoutIsPaddedAlignedAndContiguous) {
  SafetensorsWriter writer;
  const uint8_t one = 1;
  const std::vector<double> f64 = {1.0, 2.0};
  const std::vector<uint16_t> bf16 = {0x3F80};
  ASSERT_OK(writer.Add("a.byte", DType::kU8, {1}, &one, 1));
  ASSERT_OK(writer.Add("b.bf16", DType::kBF16, {1}, bf16.data(), 2));
  ASSERT_OK(writer.Add<double>("c.f64", {2}, f64));
  const std::string file = writer.Serialize();
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(file[8], '{');
  const std::string header = file.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
  // Largest elements first: the F64 data starts the data section, then BF16, then U8.
  EXPECT_EQ(file.size(), 8 + n + 16 + 2 + 1);
  double first;
  std::memcpy(&first, file.data() + 8 + n, 8);
  EXPECT_EQ(first, 1.0);
  EXPECT_EQ(static_cast<uint8_t>(file[8 + n + 16]), 0x80);  // little-endian 0x3F80
  EXPECT_EQ(static_cast<uint8_t>(file.back()), 1);
  EXPECT_THAT(header,
              HasSubstr("\"c.f64\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}"));
}

TEST(SafetensorsTest, WriteFileReturnsTheDigestOfTheBytesOnDisk) {
  const std::string path = TestDir() + "/digest.safetensors";
  std::vector<float> values(100000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.5f;
  SafetensorsWriter writer;
  ASSERT_OK(writer.Add<float>("w", {100, 1000}, values));
  absl::StatusOr<FileDigest> digest = writer.WriteFile(path);
  ASSERT_TRUE(digest.ok()) << digest.status();
  const std::string bytes = ReadAll(path);
  EXPECT_EQ(digest->size, bytes.size());
  EXPECT_EQ(digest->crc32c, Crc32cExtendPortable(0, bytes.data(), bytes.size()));
  EXPECT_EQ(bytes, writer.Serialize());
}

TEST(SafetensorsTest, WriteFileLeavesNoTemporaryFilesAndReplacesAnOldFile) {
  const std::string dir = TestDir();
  const std::string path = dir + "/x.safetensors";
  std::vector<int32_t> v1 = {1, 2, 3}, v2 = {4, 5};
  SafetensorsWriter w1, w2;
  ASSERT_OK(w1.Add<int32_t>("v", {3}, v1));
  ASSERT_OK(w2.Add<int32_t>("v", {2}, v2));
  ASSERT_OK(w1.WriteFile(path));
  ASSERT_OK(w2.WriteFile(path));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  EXPECT_THAT(names, ElementsAre("x.safetensors"));
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_THAT(reader->Read<int32_t>("v", {2}), ::dsv3::testing::IsOkAndHolds(ElementsAre(4, 5)));
}

TEST(SafetensorsTest, WritingIntoAMissingDirectoryFailsAndNamesIt) {
  SafetensorsWriter writer;
  EXPECT_THAT(writer.WriteFile(TestDir() + "/no/such/dir/x.safetensors"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/no/such/dir/x.safetensors")));
}

TEST(SafetensorsTest, AddCopyOwnsItsBytesAndAddBorrowsThem) {
  std::vector<float> borrowed = {1, 2}, copied = {3, 4};
  SafetensorsWriter writer;
  ASSERT_OK(writer.Add<float>("borrowed", {2}, borrowed));
  ASSERT_OK(writer.AddCopy<float>("copied", {2}, copied));
  borrowed[0] = 10;
  copied[0] = 30;
  SafetensorsWriter moved = std::move(writer);  // moving keeps copied bytes valid
  const std::string path = TestDir() + "/own.safetensors";
  ASSERT_OK(moved.WriteFile(path));
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_THAT(reader->Read<float>("borrowed", {2}),
              ::dsv3::testing::IsOkAndHolds(ElementsAre(10, 2)));
  EXPECT_THAT(reader->Read<float>("copied", {2}), ::dsv3::testing::IsOkAndHolds(ElementsAre(3, 4)));
}

TEST(SafetensorsTest, TheWriterRejectsBadTensorsAndNamesThem) {
  SafetensorsWriter writer;
  const std::vector<float> four = {1, 2, 3, 4};
  ASSERT_OK(writer.Add<float>("w", {2, 2}, four));
  EXPECT_THAT(writer.Add<float>("w", {4}, four),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'w'"), HasSubstr("already added"))));
  EXPECT_THAT(
      writer.Add<float>("x", {3}, four),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("'x'"), HasSubstr("F32 [3] needs 12 bytes"), HasSubstr("has 16"))));
  EXPECT_THAT(writer.Add<float>("y", {-1, -4}, four),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
  EXPECT_THAT(writer.Add<float>("", {4}, four), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(writer.Add<float>("__metadata__", {4}, four),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reserved")));
  EXPECT_EQ(writer.num_tensors(), 1u);
}

class SafetensorsReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = TestDir() + "/r.safetensors";
    SafetensorsWriter writer;
    ASSERT_OK(writer.Add<float>("w", {2, 3}, values_));
    ASSERT_OK(writer.WriteFile(path_));
    absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(path_);
    ASSERT_TRUE(reader.ok()) << reader.status();
    reader_.emplace(*std::move(reader));
  }
  std::string path_;
  std::vector<float> values_ = {0.5f, 1.5f, -2.0f, 3.0f, 4.25f, -0.0f};
  std::optional<SafetensorsReader> reader_;
};

TEST_F(SafetensorsReadTest, ReadIntoFillsTheCallersBuffer) {
  std::vector<float> out(6);
  ASSERT_OK(reader_->ReadInto("w", DType::kF32, {2, 3}, out.data(), 24));
  EXPECT_EQ(out, values_);
}

TEST_F(SafetensorsReadTest, AMissingTensorIsNotFoundAndNamesTensorAndFile) {
  EXPECT_THAT(reader_->Read<float>("nope", {2, 3}),
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr("'nope'"), HasSubstr(path_))));
  EXPECT_FALSE(reader_->Contains("nope"));
  EXPECT_TRUE(reader_->Contains("w"));
}

TEST_F(SafetensorsReadTest, AWrongDtypeNamesTheStoredAndTheRequestedOne) {
  EXPECT_THAT(reader_->Read<int32_t>("w", {2, 3}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'w' is F32 [2, 3]"), HasSubstr("requested I32 [2, 3]"),
                             HasSubstr(path_))));
  EXPECT_THAT(reader_->ReadBytes("w", DType::kBF16),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("requested BF16")));
}

TEST_F(SafetensorsReadTest, AWrongShapeNamesTheStoredAndTheRequestedOne) {
  EXPECT_THAT(reader_->Read<float>("w", {3, 2}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("F32 [2, 3]"), HasSubstr("requested F32 [3, 2]"))));
  std::vector<float> out(6);
  EXPECT_THAT(reader_->ReadInto("w", DType::kF32, {6}, out.data(), 24),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("requested F32 [6]")));
}

TEST_F(SafetensorsReadTest, AWrongDestinationSizeIsRejected) {
  std::vector<float> out(6);
  EXPECT_THAT(reader_->ReadInto("w", DType::kF32, {2, 3}, out.data(), 20),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("24 bytes"), HasSubstr("destination 20"))));
}

TEST_F(SafetensorsReadTest, ReadAsFloatRefusesIntegerTensors) {
  const std::string path = TestDir() + "/int.safetensors";
  SafetensorsWriter writer;
  const std::vector<int32_t> v = {1};
  ASSERT_OK(writer.Add<int32_t>("i", {1}, v));
  ASSERT_OK(writer.WriteFile(path));
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok());
  EXPECT_THAT(reader->ReadAsFloat("i", {1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a floating-point")));
}

TEST_F(SafetensorsReadTest, AFileTruncatedAfterOpeningGivesDataLossNotACrash) {
  fs::resize_file(path_, fs::file_size(path_) - 4);
  EXPECT_THAT(reader_->Read<float>("w", {2, 3}),
              StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr("'w'"), HasSubstr(path_))));
}

TEST(SafetensorsTest, OpeningAMissingFileIsNotFound) {
  EXPECT_THAT(SafetensorsReader::Open(TestDir() + "/missing.safetensors"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.safetensors")));
}

// ---- Cross-check with the Python implementation --------------------------------------------

TEST(SafetensorsCrossCheckTest, PythonReadsAFileWeWrote) {
  const std::string dir = TestDir();
  SafetensorsWriter writer;
  std::vector<std::vector<uint8_t>> data;
  for (DType d : AllDTypes()) {
    data.push_back(PatternBytes(d, 15 * DTypeSize(d), static_cast<int>(d)));
  }
  for (size_t i = 0; i < AllDTypes().size(); ++i) {
    const DType d = AllDTypes()[i];
    ASSERT_OK(writer.Add(std::string("t.") + std::string(DTypeName(d)), d, {3, 5}, data[i].data(),
                         data[i].size()));
  }
  std::vector<float> f32(8);
  for (int k = 0; k < 8; ++k) f32[k] = k * 0.25f - 1;
  std::vector<int64_t> i64(3);
  for (int64_t k = 0; k < 3; ++k) i64[k] = -(k * k) * 1000000007 + 3;
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC020, 0x0000, 0x477F};  // 1, -2.5, 0, 65280
  const double scalar = 3.5;
  const uint8_t answer = 42;
  ASSERT_OK(writer.Add<float>("values.f32", {2, 4}, f32));
  ASSERT_OK(writer.Add<int64_t>("values.i64", {3}, i64));
  ASSERT_OK(writer.Add("values.bf16", DType::kBF16, {4}, bf16.data(), 8));
  ASSERT_OK(writer.Add("scalar", DType::kF64, {}, &scalar, 8));
  ASSERT_OK(writer.Add("empty", DType::kI32, {0, 7}, nullptr, 0));
  ASSERT_OK(writer.Add("\xc3\xbcnicode.weight", DType::kU8, {1}, &answer, 1));
  writer.SetMetadata("step", "42");
  writer.SetMetadata("note", "\xc3\xbc \"quoted\"");
  absl::StatusOr<FileDigest> digest = writer.WriteFile(dir + "/ours.safetensors");
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_TRUE(RunPython({dir, "check", "ours.safetensors", Crc32cToHex(digest->crc32c)}));
}

// Compares bit patterns, treating any two NaNs as equal; reports the first difference.
::testing::AssertionResult SameFloats(const std::string& what, const std::vector<float>& got,
                                      const std::vector<float>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << what << ": " << got.size() << " vs " << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
    if (!both_nan && std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want[i])) {
      return ::testing::AssertionFailure() << what << "[" << i << "]: got " << got[i] << ", want "
                                           << want[i] << " (of " << got.size() << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(SafetensorsCrossCheckTest, WeReadAFilePythonWrote) {
  const std::string dir = TestDir();
  ASSERT_TRUE(RunPython({dir, "write"}));
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(dir + "/python.safetensors");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->tensors().size(), 22u);
  EXPECT_EQ(reader->metadata().at("format"), "pt");

  // Conversions to float against torch (BF16, F16), numpy (F64) and the format definitions (FP8).
  struct Pair {
    const char* name;
    std::vector<int64_t> shape;
  };
  for (const Pair& p : {Pair{"bf16", {64}}, Pair{"f16", {64}}, Pair{"e4m3", {16, 16}},
                        Pair{"e5m2", {256}}, Pair{"f64", {2, 3}}}) {
    absl::StatusOr<std::vector<float>> got = reader->ReadAsFloat(p.name, p.shape);
    ASSERT_TRUE(got.ok()) << got.status();
    absl::StatusOr<std::vector<float>> want =
        reader->Read<float>(std::string(p.name) + ".as_f32", p.shape);
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_TRUE(SameFloats(p.name, *got, *want));
  }
  // The integer tensors hold the formulas of safetensors_crosscheck.py's write_file().
  std::vector<int64_t> i64(6);
  std::vector<int32_t> i32(6);
  std::vector<int16_t> i16(6);
  std::vector<int8_t> i8(6);
  std::vector<uint8_t> u8(6);
  std::vector<uint32_t> u32(6);
  std::vector<uint64_t> u64(6);
  std::vector<float> f32(6);
  for (int k = 0; k < 6; ++k) {
    i64[k] = -3 * k - (int64_t{1} << 40);
    i32[k] = -7 * k;
    i16[k] = static_cast<int16_t>(-300 * k);
    i8[k] = static_cast<int8_t>(-20 * k);
    u8[k] = static_cast<uint8_t>(40 * k);
    u32[k] = 700000000u * k;
    u64[k] = 3000000000000000000ull * k;
    f32[k] = k * 0.5f - 2;
  }
  EXPECT_THAT(reader->Read<int64_t>("i64", {2, 3}), ::dsv3::testing::IsOkAndHolds(i64));
  EXPECT_THAT(reader->Read<int32_t>("i32", {6}), ::dsv3::testing::IsOkAndHolds(i32));
  EXPECT_THAT(reader->Read<int16_t>("i16", {6}), ::dsv3::testing::IsOkAndHolds(i16));
  EXPECT_THAT(reader->Read<int8_t>("i8", {6}), ::dsv3::testing::IsOkAndHolds(i8));
  EXPECT_THAT(reader->Read<uint8_t>("u8", {6}), ::dsv3::testing::IsOkAndHolds(u8));
  EXPECT_THAT(reader->Read<uint32_t>("u32", {6}), ::dsv3::testing::IsOkAndHolds(u32));
  EXPECT_THAT(reader->Read<uint64_t>("u64", {6}), ::dsv3::testing::IsOkAndHolds(u64));
  EXPECT_THAT(reader->Read<float>("f32", {2, 3}), ::dsv3::testing::IsOkAndHolds(f32));
  absl::StatusOr<std::vector<uint8_t>> u16 = reader->ReadBytes("u16", DType::kU16);
  ASSERT_TRUE(u16.ok()) << u16.status();
  for (int k = 0; k < 6; ++k) {
    EXPECT_EQ((*u16)[2 * k] | ((*u16)[2 * k + 1] << 8), 10000 * k) << "u16[" << k << "]";
  }
  EXPECT_THAT(reader->ReadBytes("bool", DType::kBool),
              ::dsv3::testing::IsOkAndHolds(ElementsAre(1, 0, 0, 1, 1, 0)));
  EXPECT_THAT(reader->Read<float>("scalar", {}), ::dsv3::testing::IsOkAndHolds(ElementsAre(3.5f)));
  EXPECT_THAT(reader->Read<float>("empty", {0, 3}), IsOk());
}

}  // namespace
}  // namespace dsv3::train
