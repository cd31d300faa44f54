// Tests of the gradient-norm helpers: the sum of squares against NumPy (float64) over buffers of
// awkward sizes, a closed form, thread-count invariance, and torch's clip coefficient.

#include "kernels/cpu/grad_norm.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops_reference.h"
#include "kernels/cpu/test_util.h"
#include "kernels/cpu/thread_pool.h"

namespace dsv3::kernels {
namespace {

using testing::RefCase;

void BuildCases(testing::RefCaseSet& set) {
  std::mt19937_64 rng = set.Rng("grad_norm");
  const std::vector<int64_t> sizes = {0, 1, 4097, 10000, 3, 4096};
  testing::RefCaseWriter w = set.Add("grad_norm", "awkward_sizes");
  w.IntParam("count", static_cast<int64_t>(sizes.size()));
  for (size_t i = 0; i < sizes.size(); ++i) {
    w.Array("b" + std::to_string(i), {sizes[i]}, testing::RandomNormal(rng, sizes[i], 1e-2));
  }
}
DSV3_REGISTER_REF_CASES(BuildCases);

TEST(GradNorm, SumOfSquaresMatchesNumPy) {
  ThreadPool pool(2);
  for (const RefCase& c : testing::RefCases("grad_norm")) {
    SCOPED_TRACE(c.name());
    std::vector<std::vector<float>> bufs;
    for (int64_t i = 0; i < c.IntParam("count"); ++i)
      bufs.push_back(c.F32("b" + std::to_string(i)));
    std::vector<const float*> ptrs;
    std::vector<int64_t> sizes;
    for (const auto& b : bufs) {
      ptrs.push_back(b.data());
      sizes.push_back(static_cast<int64_t>(b.size()));
    }
    const double got = SumOfSquares(CpuContext{&pool}, ptrs.data(), sizes.data(),
                                    static_cast<int64_t>(ptrs.size()));
    const double want = c.F64("ref_sum_sq")[0];
    EXPECT_NEAR(got, want, 1e-13 * want);
  }
}

TEST(GradNorm, SumOfSquaresOfHalvesIsAQuarterOfTheCount) {
  const std::vector<float> a(100000, 0.5f), b(3, -0.5f);
  const float* bufs[] = {a.data(), nullptr, b.data()};
  const int64_t sizes[] = {100000, 0, 3};
  EXPECT_EQ(SumOfSquares(CpuContext{}, bufs, sizes, 3), 100003 * 0.25);
  EXPECT_EQ(SumOfSquares(CpuContext{}, bufs, sizes, 0), 0.0);
}

TEST(GradNorm, ResultsAreBitIdenticalForAnyThreadCount) {
  std::mt19937_64 rng(testing::TestSeed(73));
  std::vector<std::vector<float>> bufs;
  for (int64_t n : {5000, 1, 123457, 0, 4096, 77}) bufs.push_back(testing::RandomNormal(rng, n));
  std::vector<const float*> ptrs;
  std::vector<int64_t> sizes;
  for (const auto& b : bufs) {
    ptrs.push_back(b.data());
    sizes.push_back(static_cast<int64_t>(b.size()));
  }
  const double one = SumOfSquares(CpuContext{}, ptrs.data(), sizes.data(), 6);
  for (int threads : {2, 3, 7}) {
    ThreadPool pool(threads);
    EXPECT_EQ(SumOfSquares(CpuContext{&pool}, ptrs.data(), sizes.data(), 6), one)
        << threads << " threads";
  }
}

TEST(GradNorm, ClipCoefficientFollowsTorch) {
  EXPECT_EQ(ClipCoefficient(2.0, 1.0), 1.0 / (2.0 + 1e-6));
  EXPECT_EQ(ClipCoefficient(0.5, 1.0), 1.0);
  EXPECT_EQ(ClipCoefficient(0.0, 1.0), 1.0);
  EXPECT_TRUE(std::isnan(ClipCoefficient(NAN, 1.0)));
}

}  // namespace
}  // namespace dsv3::kernels
