// Tests of SwiGLU (fused [gate | up] input) forward and backward against PyTorch autograd, with
// saturating gates, in place, and for thread-count invariance.

#include "kernels/cpu/swiglu.h"

#include <cmath>
#include <cstdint>
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
  std::mt19937_64 rng = set.Rng("swiglu");
  struct Shape {
    const char* name;
    int64_t tokens, inter;
    double scale;
  };
  const Shape shapes[] = {{"one_by_one", 1, 1, 1.0},
                          {"odd", 7, 13, 2.0},
                          {"expert_like", 33, 128, 1.0},
                          {"saturating", 3, 40, 40.0}};  // gates of +-100: exp overflows safely
  for (const Shape& s : shapes) {
    set.Add("swiglu", s.name)
        .Array("gate_up", {s.tokens, 2 * s.inter},
               testing::RandomNormal(rng, s.tokens * 2 * s.inter, s.scale))
        .Array("dh", {s.tokens, s.inter}, testing::RandomNormal(rng, s.tokens * s.inter));
  }
}
DSV3_REGISTER_REF_CASES(BuildCases);

TEST(SwiGlu, ForwardAndBackwardMatchTorch) {
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (const RefCase& c : testing::RefCases("swiglu")) {
    SCOPED_TRACE(c.name());
    const std::vector<int64_t> shape = c.Shape("gate_up");
    const int64_t tokens = shape[0], inter = shape[1] / 2;
    const std::vector<float> gu = c.F32("gate_up"), dh = c.F32("dh");
    std::vector<float> h(tokens * inter), dgu(gu.size());
    SwiGluForward(ctx, gu.data(), tokens, inter, h.data());
    SwiGluBackward(ctx, gu.data(), dh.data(), tokens, inter, dgu.data());
    EXPECT_TRUE(AllClose("h", h.data(), c.F64("ref_h"), {tokens, inter}, 1e-5, 1e-6));
    EXPECT_TRUE(AllClose("dgate_up", dgu.data(), c.F64("ref_dgate_up"), shape, 1e-5, 1e-6));
    for (float v : dgu) ASSERT_FALSE(std::isnan(v));
  }
}

TEST(SwiGlu, BackwardInPlaceGivesTheSameBits) {
  const CpuContext ctx;
  for (const RefCase& c : testing::RefCases("swiglu")) {
    SCOPED_TRACE(c.name());
    const std::vector<int64_t> shape = c.Shape("gate_up");
    const int64_t tokens = shape[0], inter = shape[1] / 2;
    const std::vector<float> gu = c.F32("gate_up"), dh = c.F32("dh");
    std::vector<float> out(gu.size()), in_place = gu;
    SwiGluBackward(ctx, gu.data(), dh.data(), tokens, inter, out.data());
    SwiGluBackward(ctx, in_place.data(), dh.data(), tokens, inter, in_place.data());
    EXPECT_TRUE(SameBits("dgate_up", out, in_place));
  }
}

TEST(SwiGlu, ResultsAreBitIdenticalForAnyThreadCount) {
  std::mt19937_64 rng(testing::TestSeed(17));
  const int64_t tokens = 129, inter = 257;
  const std::vector<float> gu = testing::RandomNormal(rng, tokens * 2 * inter);
  const std::vector<float> dh = testing::RandomNormal(rng, tokens * inter);
  auto run = [&](ThreadPool* pool) {
    const CpuContext ctx{pool};
    std::vector<float> h(tokens * inter), dgu(gu.size());
    SwiGluForward(ctx, gu.data(), tokens, inter, h.data());
    SwiGluBackward(ctx, gu.data(), dh.data(), tokens, inter, dgu.data());
    h.insert(h.end(), dgu.begin(), dgu.end());
    return h;
  };
  const std::vector<float> one = run(nullptr);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    EXPECT_TRUE(SameBits("h, dgate_up", one, run(&pool))) << threads << " threads";
  }
}

TEST(SwiGluDeathTest, AbortsWhenTheOutputOverlapsTheInput) {
  std::vector<float> gu(16);
  EXPECT_DEATH(SwiGluForward(CpuContext{}, gu.data(), 2, 4, gu.data() + 4), "h overlaps gate_up");
}

}  // namespace
}  // namespace dsv3::kernels
