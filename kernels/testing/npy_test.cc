// Tests for the .npy helpers and the PyTorch reference runner, against NumPy itself.
#include "kernels/testing/npy.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "kernels/testing/torch_reference.h"

namespace dsv3::kernels {
namespace {

TEST(Npy, ArraysRoundTripThroughNumPyAndTorch) {
  const std::string dir = testing::MakeExchangeDir();
  std::vector<float> x(6);
  for (int i = 0; i < 6; ++i) x[i] = 0.5f * i;
  ASSERT_EQ(WriteNpy(dir + "/in.npy", {2, 3}, x.data()), "");
  ASSERT_TRUE(testing::RunTorchReference("tests/reference/npy_roundtrip.py", dir));
  NpyArray f, i;
  ASSERT_EQ(ReadNpy(dir + "/out_f32.npy", &f), "");
  ASSERT_EQ(ReadNpy(dir + "/out_i32.npy", &i), "");
  EXPECT_EQ(f.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(f.AsFloat32(), (std::vector<float>{-1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 3.5f}));
  EXPECT_EQ(i.shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(i.AsInt32(), (std::vector<int32_t>{0, 7, 14, 21}));
}

TEST(Npy, BrokenFilesAreReportedNotTrusted) {
  const std::string dir = testing::MakeExchangeDir();
  NpyArray a;
  EXPECT_NE(ReadNpy(dir + "/missing.npy", &a).find("cannot read"), std::string::npos);
  std::ofstream(dir + "/junk.npy") << "not numpy at all";
  EXPECT_NE(ReadNpy(dir + "/junk.npy", &a).find("not an .npy"), std::string::npos);
  const std::vector<float> x(100, 1.0f);
  ASSERT_EQ(WriteNpy(dir + "/t.npy", {100}, x.data()), "");
  std::filesystem::resize_file(dir + "/t.npy", 200);
  EXPECT_NE(ReadNpy(dir + "/t.npy", &a).find("truncated"), std::string::npos);
}

TEST(TorchReference, AFailingScriptFailsTheCheckWithItsOutput) {
  const std::string dir = testing::MakeExchangeDir();
  ::testing::AssertionResult r = testing::RunTorchReference("tests/reference/npy_roundtrip.py", dir);
  EXPECT_FALSE(r);  // no in.npy there
  EXPECT_NE(std::string(r.message()).find("No such file"), std::string::npos) << r.message();
}

TEST(TorchReference, AllCloseNamesTheWorstElement) {
  const float got[] = {1.0f, 2.0f, 3.5f, 4.0f};
  const std::vector<double> want = {1.0, 2.0, 3.0, 4.0};
  ::testing::AssertionResult r = testing::AllClose("x", got, want, {2, 2}, 1e-3, 1e-3);
  EXPECT_FALSE(r);
  EXPECT_NE(std::string(r.message()).find("worst at [1, 0]"), std::string::npos) << r.message();
  EXPECT_TRUE(testing::AllClose("x", got, want, {2, 2}, 0.2, 0));
}

}  // namespace
}  // namespace dsv3::kernels
