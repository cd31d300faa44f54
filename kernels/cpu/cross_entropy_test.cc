// Tests of the fused cross-entropy against PyTorch autograd: vocabularies of odd sizes, huge
// logits, ignore_index, an explicit count and grad scale, in place, forward only, thread counts.

#include "kernels/cpu/cross_entropy.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops_reference.h"
#include "kernels/cpu/test_util.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/testing/torch_reference.h"

namespace dsv3::kernels {
namespace {

using testing::AllClose;
using testing::RefCase;
using testing::SameBits;

void BuildCases(testing::RefCaseSet& set) {
  std::mt19937_64 rng = set.Rng("cross_entropy");
  struct Shape {
    const char* name;
    int64_t tokens, vocab;
    double scale;  // of the logits
    int64_t count;
    double grad_scale;
    int ignored;  // every `ignored`-th target is ignore_index (0: none)
    int32_t ignore_index;
  };
  const Shape shapes[] = {{"vocab_one", 3, 1, 1.0, 0, 1.0, 0, -100},
                          {"one_token", 1, 10, 2.0, 0, 1.0, 0, -100},
                          {"odd_vocab", 17, 4099, 3.0, 0, 1.0, 0, -100},
                          {"huge_logits", 5, 33, 1e4, 0, 1.0, 0, -100},
                          {"ignored_mean", 12, 50, 1.0, 0, 1.0, 3, -100},
                          {"mtp_count_scaled", 12, 50, 1.0, 16, 0.3, 4, -1}};
  for (const Shape& s : shapes) {
    std::vector<int32_t> targets(s.tokens);
    for (int64_t t = 0; t < s.tokens; ++t) {
      targets[t] = (s.ignored != 0 && t % s.ignored == 1) ? s.ignore_index
                                                          : static_cast<int32_t>(rng() % s.vocab);
    }
    set.Add("cross_entropy", s.name)
        .IntParam("count", s.count)
        .Param("grad_scale", s.grad_scale)
        .IntParam("ignore_index", s.ignore_index)
        .Array("logits", {s.tokens, s.vocab},
               testing::RandomNormal(rng, s.tokens * s.vocab, s.scale))
        .Array("targets", {s.tokens}, targets);
  }
}
DSV3_REGISTER_REF_CASES(BuildCases);

CrossEntropyOptions OptionsOf(const RefCase& c) {
  CrossEntropyOptions o;
  o.count = c.IntParam("count");
  o.grad_scale = c.Param("grad_scale");
  o.ignore_index = static_cast<int32_t>(c.IntParam("ignore_index"));
  return o;
}

TEST(CrossEntropy, LossAndDlogitsMatchTorch) {
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (const RefCase& c : testing::RefCases("cross_entropy")) {
    SCOPED_TRACE(c.name());
    const std::vector<int64_t> shape = c.Shape("logits");
    const std::vector<float> logits = c.F32("logits");
    const std::vector<int32_t> targets = c.I32("targets");
    std::vector<float> d(logits.size(), 9.0f);
    const double loss = CrossEntropyForwardBackward(ctx, logits.data(), targets.data(), shape[0],
                                                    shape[1], OptionsOf(c), d.data());
    const double want = c.F64("ref_loss")[0];
    EXPECT_NEAR(loss, want, 1e-6 * std::fabs(want) + 1e-7);
    EXPECT_TRUE(AllClose("dlogits", d.data(), c.F64("ref_dlogits"), shape, 1e-5, 1e-8));
  }
}

TEST(CrossEntropy, InPlaceAndLossOnlyAgreeWithOutOfPlace) {
  const CpuContext ctx;
  for (const RefCase& c : testing::RefCases("cross_entropy")) {
    SCOPED_TRACE(c.name());
    const std::vector<int64_t> shape = c.Shape("logits");
    const std::vector<float> logits = c.F32("logits");
    const std::vector<int32_t> targets = c.I32("targets");
    std::vector<float> d(logits.size()), in_place = logits;
    const CrossEntropyOptions o = OptionsOf(c);
    const double a = CrossEntropyForwardBackward(ctx, logits.data(), targets.data(), shape[0],
                                                 shape[1], o, d.data());
    const double b = CrossEntropyForwardBackward(ctx, in_place.data(), targets.data(), shape[0],
                                                 shape[1], o, in_place.data());
    const double only = CrossEntropyForwardBackward(ctx, logits.data(), targets.data(), shape[0],
                                                    shape[1], o, nullptr);
    EXPECT_EQ(a, b);
    EXPECT_EQ(a, only);
    EXPECT_TRUE(SameBits("dlogits", d, in_place));
  }
}

TEST(CrossEntropy, UniformLogitsGiveLogVocab) {
  const std::vector<float> logits(3 * 7, 0.5f);
  const std::vector<int32_t> targets = {0, 6, 3};
  EXPECT_NEAR(
      CrossEntropyForwardBackward(CpuContext{}, logits.data(), targets.data(), 3, 7, {}, nullptr),
      std::log(7.0), 1e-7);
}

TEST(CrossEntropy, AllTargetsIgnoredGiveZeroLossAndZeroGradient) {
  const std::vector<float> logits = {1, 2, 3, 4};
  const std::vector<int32_t> targets = {-100, -100};
  std::vector<float> d(4, 1.0f);
  EXPECT_EQ(
      CrossEntropyForwardBackward(CpuContext{}, logits.data(), targets.data(), 2, 2, {}, d.data()),
      0.0);
  EXPECT_EQ(d, std::vector<float>(4, 0.0f));
}

TEST(CrossEntropy, ResultsAreBitIdenticalForAnyThreadCount) {
  std::mt19937_64 rng(testing::TestSeed(67));
  const int64_t tokens = 200, vocab = 1001;
  const std::vector<float> logits = testing::RandomNormal(rng, tokens * vocab, 3.0);
  std::vector<int32_t> targets(tokens);
  for (auto& t : targets) t = static_cast<int32_t>(rng() % vocab);
  auto run = [&](ThreadPool* pool, double* loss) {
    std::vector<float> d(logits.size());
    *loss = CrossEntropyForwardBackward(CpuContext{pool}, logits.data(), targets.data(), tokens,
                                        vocab, {}, d.data());
    return d;
  };
  double one_loss = 0;
  const std::vector<float> one = run(nullptr, &one_loss);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    double loss = 0;
    EXPECT_TRUE(SameBits("dlogits", one, run(&pool, &loss))) << threads << " threads";
    EXPECT_EQ(loss, one_loss) << threads << " threads";
  }
}

TEST(CrossEntropy, SimdAndPortablePathsAgree) {
  // The AVX-512 row kernels (vector exp, lane-partial sums) against the portable loop (libm expf,
  // one running sum), with row lengths that leave every tail size and a row with -inf entries.
  std::mt19937_64 rng(testing::TestSeed(68));
  for (int64_t vocab : {1, 15, 16, 17, 1001, 4096}) {
    const int64_t tokens = 37;
    std::vector<float> logits = testing::RandomNormal(rng, tokens * vocab, 4.0);
    if (vocab > 3) logits[2] = logits[5] = -std::numeric_limits<float>::infinity();
    std::vector<int32_t> targets(tokens);
    for (auto& t : targets) t = static_cast<int32_t>(rng() % vocab);
    targets[0] = 0;
    std::vector<float> simd(logits.size()), portable(logits.size());
    const double a = CrossEntropyForwardBackward(CpuContext{nullptr, true}, logits.data(),
                                                 targets.data(), tokens, vocab, {}, simd.data());
    const double b = CrossEntropyForwardBackward(CpuContext{nullptr, false}, logits.data(),
                                                 targets.data(), tokens, vocab, {},
                                                 portable.data());
    EXPECT_NEAR(a, b, 1e-6 * std::abs(b)) << "vocab " << vocab;
    for (size_t i = 0; i < simd.size(); ++i) {
      ASSERT_NEAR(simd[i], portable[i], 1e-6f * std::abs(portable[i]) + 1e-12f)
          << "vocab " << vocab << " element " << i;
    }
  }
}

TEST(CrossEntropyDeathTest, AbortsOnATargetOutsideTheVocabulary) {
  const std::vector<float> logits(8);
  const int32_t targets[] = {3, 4};
  EXPECT_DEATH(CrossEntropyForwardBackward(CpuContext{}, logits.data(), targets, 2, 4, {}, nullptr),
               "targets\\[1\\]=4 outside \\[0, vocab=4\\)");
}

}  // namespace
}  // namespace dsv3::kernels
