// Tests of the AdamW step against torch.optim.AdamW (float64, one step from given moments, BF16
// storage of the moments emulated in the reference), the RNE rounding of the stored moments,
// decoupled weight decay, and thread-count invariance.

#include "kernels/cpu/adamw.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/ops_reference.h"
#include "kernels/cpu/test_util.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/testing/torch_reference.h"

namespace dsv3::kernels {
namespace {

using testing::AllClose;
using testing::RefCase;
using testing::SameBits;

std::vector<float> RoundToBf16(std::vector<float> v) {
  for (float& x : v) x = Bf16ToFloat(FloatToBf16(x));
  return v;
}

void BuildCases(testing::RefCaseSet& set) {
  std::mt19937_64 rng = set.Rng("adamw");
  struct Shape {
    const char* name;
    int64_t n;
    bool decay;
    double lr;
    int64_t step;
    double grad_std, grad_scale;
    bool fresh;  // zero moments
  };
  const Shape shapes[] = {{"matrix_step1", 37, true, 3e-3, 1, 1e-2, 1.0, true},
                          {"vector_step100_clipped", 64, false, 1e-3, 100, 1e-3, 0.5, false},
                          {"tiny_grads_step3", 16, true, 2.2e-4, 3, 1e-8, 1.0, false},
                          {"one_element", 1, true, 1e-2, 7, 1.0, 1.0, false}};
  for (const Shape& s : shapes) {
    std::vector<float> m(s.n, 0.0f), v(s.n, 0.0f);
    if (!s.fresh) {
      m = RoundToBf16(testing::RandomNormal(rng, s.n, s.grad_std));
      v = testing::RandomNormal(rng, s.n, s.grad_std);
      for (float& x : v) x = x * x;
      v = RoundToBf16(v);
    }
    set.Add("adamw", s.name)
        .Param("lr", s.lr)
        .Param("beta1", 0.9)
        .Param("beta2", 0.95)
        .Param("eps", 1e-8)
        .Param("weight_decay", 0.1)
        .IntParam("decay", s.decay ? 1 : 0)
        .IntParam("step", s.step)
        .Param("grad_scale", s.grad_scale)
        .Array("param", {s.n}, testing::RandomNormal(rng, s.n, 0.02))
        .Array("grad", {s.n}, testing::RandomNormal(rng, s.n, s.grad_std))
        .Array("m", {s.n}, m)
        .Array("v", {s.n}, v);
  }
}
DSV3_REGISTER_REF_CASES(BuildCases);

AdamWOptions OptionsOf(const RefCase& c) {
  AdamWOptions o;
  o.lr = c.Param("lr");
  o.beta1 = c.Param("beta1");
  o.beta2 = c.Param("beta2");
  o.eps = c.Param("eps");
  o.weight_decay = c.Param("weight_decay");
  o.apply_weight_decay = c.IntParam("decay") != 0;
  o.step = c.IntParam("step");
  o.grad_scale = c.Param("grad_scale");
  return o;
}

// The parameter change, compared with the reference's: FP32 parameters carry ~1 ulp of rounding.
void ExpectUpdateClose(const RefCase& c, const std::vector<float>& before,
                       const std::vector<float>& after) {
  const std::vector<double> ref = c.F64("ref_param");
  std::vector<float> got(before.size());
  std::vector<double> want(before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    got[i] = static_cast<float>(static_cast<double>(after[i]) - before[i]);
    want[i] = ref[i] - before[i];
  }
  EXPECT_TRUE(
      AllClose("param update", got.data(), want, {static_cast<int64_t>(got.size())}, 1e-4, 8e-9));
  EXPECT_TRUE(AllClose("param", after.data(), ref, {static_cast<int64_t>(got.size())}, 1e-6, 8e-9));
}

TEST(AdamW, Bf16MomentStepMatchesTorchAdamW) {
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (const RefCase& c : testing::RefCases("adamw")) {
    SCOPED_TRACE(c.name());
    const std::vector<float> p0 = c.F32("param"), grad = c.F32("grad");
    std::vector<float> p = p0;
    std::vector<std::uint16_t> m, v;
    for (float x : c.F32("m")) m.push_back(FloatToBf16(x));
    for (float x : c.F32("v")) v.push_back(FloatToBf16(x));
    AdamWStepBf16Moments(ctx, OptionsOf(c), p.data(), grad.data(), m.data(), v.data(),
                         static_cast<int64_t>(p.size()));
    ExpectUpdateClose(c, p0, p);
    std::vector<float> mf, vf;
    for (std::uint16_t b : m) mf.push_back(Bf16ToFloat(b));
    for (std::uint16_t b : v) vf.push_back(Bf16ToFloat(b));
    const std::vector<int64_t> shape = {static_cast<int64_t>(p.size())};
    // One BF16 ulp: the reference rounds a float64 moment, the kernel an FP32 one.
    EXPECT_TRUE(AllClose("m (bf16)", mf.data(), c.F64("ref_m_bf16"), shape, 0x1p-8, 0));
    EXPECT_TRUE(AllClose("v (bf16)", vf.data(), c.F64("ref_v_bf16"), shape, 0x1p-8, 0));
  }
}

TEST(AdamW, Fp32MomentStepMatchesTorchAdamW) {
  const CpuContext ctx;
  for (const RefCase& c : testing::RefCases("adamw")) {
    SCOPED_TRACE(c.name());
    const std::vector<float> p0 = c.F32("param"), grad = c.F32("grad");
    std::vector<float> p = p0, m = c.F32("m"), v = c.F32("v");
    AdamWStep(ctx, OptionsOf(c), p.data(), grad.data(), m.data(), v.data(),
              static_cast<int64_t>(p.size()));
    ExpectUpdateClose(c, p0, p);
    const std::vector<int64_t> shape = {static_cast<int64_t>(p.size())};
    EXPECT_TRUE(AllClose("m", m.data(), c.F64("ref_m"), shape, 1e-6, 0));
    EXPECT_TRUE(AllClose("v", v.data(), c.F64("ref_v"), shape, 1e-6, 0));
  }
}

TEST(AdamW, StoredMomentsRoundToNearestEven) {
  // beta1 = 0.5 makes m = g / 2 exact; 1 + 2^-8 and 1 + 3 * 2^-8 are halfway between BF16 values
  // and must go to the even neighbour (1 and 1 + 2^-6); 1 + 2^-8 + 2^-20 rounds up (to 1 + 2^-7).
  AdamWOptions o;
  o.lr = 1e-3;
  o.beta1 = 0.5;
  o.step = 1;
  const std::vector<float> grad = {2.0f * (1 + 0x1p-8f), 2.0f * (1 + 3 * 0x1p-8f),
                                   2.0f * (1 + 0x1p-8f + 0x1p-20f)};
  std::vector<float> p(3, 0.0f);
  std::vector<std::uint16_t> m(3, 0), v(3, 0);
  AdamWStepBf16Moments(CpuContext{}, o, p.data(), grad.data(), m.data(), v.data(), 3);
  EXPECT_EQ(Bf16ToFloat(m[0]), 1.0f);
  EXPECT_EQ(Bf16ToFloat(m[1]), 1.0f + 0x1p-6f);
  EXPECT_EQ(Bf16ToFloat(m[2]), 1.0f + 0x1p-7f);
}

TEST(AdamW, DecoupledWeightDecayAppliesOnlyWhenAsked) {
  // A zero gradient leaves m = v = 0 and the Adam term 0, so only the decay moves p.
  AdamWOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.1;
  o.step = 5;
  const std::vector<float> start = {1.0f, -2.5f, 0.125f}, grad(3, 0.0f);
  std::vector<float> p = start;
  std::vector<std::uint16_t> m(3, 0), v(3, 0);
  AdamWStepBf16Moments(CpuContext{}, o, p.data(), grad.data(), m.data(), v.data(), 3);
  EXPECT_EQ(p, start);
  o.apply_weight_decay = true;
  AdamWStepBf16Moments(CpuContext{}, o, p.data(), grad.data(), m.data(), v.data(), 3);
  const float factor = static_cast<float>(1.0 - 0.01 * 0.1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(p[i], start[i] * factor) << i;
}

TEST(AdamW, ResultsAreBitIdenticalForAnyThreadCount) {
  std::mt19937_64 rng(testing::TestSeed(71));
  const int64_t n = 100003;
  const std::vector<float> p0 = testing::RandomNormal(rng, n, 0.02);
  const std::vector<float> grad = testing::RandomNormal(rng, n, 1e-3);
  AdamWOptions o;
  o.lr = 1e-3;
  o.weight_decay = 0.1;
  o.apply_weight_decay = true;
  o.step = 2;
  auto run = [&](ThreadPool* pool) {
    std::vector<float> p = p0;
    std::vector<std::uint16_t> m(n, 0x3A80), v(n, 0x3380);
    AdamWStepBf16Moments(CpuContext{pool}, o, p.data(), grad.data(), m.data(), v.data(), n);
    for (int64_t i = 0; i < n; ++i) p.push_back(Bf16ToFloat(m[i]) + Bf16ToFloat(v[i]));
    return p;
  };
  const std::vector<float> one = run(nullptr);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    EXPECT_TRUE(SameBits("param, moments", one, run(&pool))) << threads << " threads";
  }
}

TEST(AdamWDeathTest, AbortsOnStepZero) {
  std::vector<float> p(2), g(2);
  std::vector<std::uint16_t> m(2), v(2);
  AdamWOptions o;
  o.step = 0;
  EXPECT_DEATH(AdamWStepBf16Moments(CpuContext{}, o, p.data(), g.data(), m.data(), v.data(), 2),
               "step=0 >= 1");
}

}  // namespace
}  // namespace dsv3::kernels
