// Tests of token permutation for expert dispatch: the maps compared EXACTLY with a NumPy stable
// sort (by expert, token, slot), the row copies and the weighted combine with their backwards
// against PyTorch autograd, unused (-1) slots, empty experts, and thread-count invariance.

#include "kernels/cpu/permute.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
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

// Distinct experts per token (as the router gives), some slots -1 when `holes`.
std::vector<int32_t> RandomIds(std::mt19937_64& rng, int64_t tokens, int64_t k, int64_t n,
                               bool holes, bool distinct) {
  std::vector<int32_t> ids(tokens * k);
  std::vector<int32_t> perm(n);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int32_t i = 0; i < n; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t j = 0; j < k; ++j) {
      ids[t * k + j] = distinct ? perm[j] : static_cast<int32_t>(rng() % n);
      if (holes && rng() % 4 == 0) ids[t * k + j] = -1;
    }
  }
  return ids;
}

void BuildCases(testing::RefCaseSet& set) {
  std::mt19937_64 rng = set.Rng("permute");
  struct Shape {
    const char* name;
    int64_t tokens, k, n, hidden;
    bool holes, distinct;
  };
  const Shape shapes[] = {{"one_token_one_expert", 1, 1, 1, 3, false, true},
                          {"k1", 9, 1, 4, 5, false, true},
                          {"unused_slots", 13, 3, 5, 7, true, true},
                          {"v3_like", 40, 4, 16, 16, false, true},
                          {"experts_without_tokens", 3, 2, 32, 4, false, true},
                          {"repeated_experts", 6, 3, 2, 3, false, false}};
  for (const Shape& s : shapes) {
    const std::vector<int32_t> ids = RandomIds(rng, s.tokens, s.k, s.n, s.holes, s.distinct);
    const int64_t rows = std::count_if(ids.begin(), ids.end(), [](int32_t e) { return e >= 0; });
    set.Add("permute", s.name)
        .IntParam("n_experts", s.n)
        .Array("ids", {s.tokens, s.k}, ids)
        .Array("x", {s.tokens, s.hidden}, testing::RandomNormal(rng, s.tokens * s.hidden))
        .Array("dx_perm", {rows, s.hidden}, testing::RandomNormal(rng, rows * s.hidden))
        .Array("expert_out", {rows, s.hidden}, testing::RandomNormal(rng, rows * s.hidden))
        .Array("weights", {s.tokens, s.k}, testing::RandomUniform(rng, s.tokens * s.k, 0, 1))
        .Array("dy", {s.tokens, s.hidden}, testing::RandomNormal(rng, s.tokens * s.hidden));
  }
}
DSV3_REGISTER_REF_CASES(BuildCases);

struct Maps {
  std::vector<int64_t> offsets;
  std::vector<int32_t> row_token, slot_row;
  int64_t rows = 0;
};

Maps Build(const CpuContext& ctx, const std::vector<int32_t>& ids, int64_t tokens, int64_t k,
           int64_t n) {
  Maps m{std::vector<int64_t>(n + 1, -7), std::vector<int32_t>(tokens * k, -7),
         std::vector<int32_t>(tokens * k, -7)};
  m.rows = BuildDispatchMaps(ctx, ids.data(), tokens, k, n, m.offsets.data(), m.row_token.data(),
                             m.slot_row.data());
  return m;
}

TEST(Permute, DispatchMapsMatchAStableSortByExpertTokenSlotExactly) {
  const CpuContext ctx;
  for (const RefCase& c : testing::RefCases("permute")) {
    SCOPED_TRACE(c.name());
    const std::vector<int64_t> shape = c.Shape("ids");
    const Maps m = Build(ctx, c.I32("ids"), shape[0], shape[1], c.IntParam("n_experts"));
    const std::vector<int32_t> offsets = c.I32("ref_offsets");
    EXPECT_EQ(m.offsets, std::vector<int64_t>(offsets.begin(), offsets.end()));
    EXPECT_EQ(m.rows, offsets.back());
    EXPECT_EQ(m.row_token, c.I32("ref_row_token"));
    EXPECT_EQ(m.slot_row, c.I32("ref_slot_row"));
  }
}

TEST(Permute, DispatchCombineAndTheirBackwardsMatchTorch) {
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (const RefCase& c : testing::RefCases("permute")) {
    SCOPED_TRACE(c.name());
    const std::vector<int64_t> shape = c.Shape("ids");
    const int64_t tokens = shape[0], k = shape[1], hidden = c.Shape("x")[1];
    const Maps m = Build(ctx, c.I32("ids"), tokens, k, c.IntParam("n_experts"));
    const int64_t rows = m.rows;
    const std::vector<float> x = c.F32("x"), dx_perm = c.F32("dx_perm"), eo = c.F32("expert_out"),
                             w = c.F32("weights"), dy = c.F32("dy");
    std::vector<float> x_perm(rows * hidden), dx(tokens * hidden, 5.0f), y(tokens * hidden, 5.0f);
    std::vector<float> deo(rows * hidden, 5.0f), dw(tokens * k, 5.0f);
    PermuteForward(ctx, x.data(), tokens, hidden, m.row_token.data(), rows, x_perm.data());
    PermuteBackward(ctx, dx_perm.data(), rows, m.slot_row.data(), tokens, k, hidden, dx.data());
    UnpermuteForward(ctx, eo.data(), rows, w.data(), m.slot_row.data(), tokens, k, hidden,
                     y.data());
    UnpermuteBackward(ctx, dy.data(), eo.data(), rows, w.data(), m.slot_row.data(), tokens, k,
                      hidden, deo.data(), dw.data());
    // Copies are exact; sums of K products are FP32.
    EXPECT_TRUE(AllClose("x_perm", x_perm.data(), c.F64("ref_x_perm"), {rows, hidden}, 0, 0));
    EXPECT_TRUE(AllClose("dx", dx.data(), c.F64("ref_dx"), {tokens, hidden}, 1e-6, 1e-6));
    EXPECT_TRUE(AllClose("y", y.data(), c.F64("ref_y"), {tokens, hidden}, 1e-6, 1e-6));
    EXPECT_TRUE(
        AllClose("d_expert_out", deo.data(), c.F64("ref_d_expert_out"), {rows, hidden}, 1e-6, 0));
    EXPECT_TRUE(AllClose("dweights", dw.data(), c.F64("ref_dweights"), {tokens, k}, 1e-5, 1e-6));
  }
}

TEST(Permute, RowsAreOrderedByExpertThenTokenThenSlot) {
  // Token 0 -> experts {2, 0}, token 1 -> {0, -1}, token 2 -> {2, 2} (a repeat), token 3 -> {1, 0}.
  const std::vector<int32_t> ids = {2, 0, 0, -1, 2, 2, 1, 0};
  const Maps m = Build(CpuContext{}, ids, 4, 2, 4);
  EXPECT_EQ(m.rows, 7);
  EXPECT_EQ(m.offsets, (std::vector<int64_t>{0, 3, 4, 7, 7}));
  // Expert 0: tokens 0, 1, 3; expert 1: token 3; expert 2: token 0, then token 2 slot 0, slot 1.
  EXPECT_EQ(m.row_token, (std::vector<int32_t>{0, 1, 3, 3, 0, 2, 2, -1}));
  EXPECT_EQ(m.slot_row, (std::vector<int32_t>{4, 0, 1, -1, 5, 6, 3, 2}));
}

TEST(Permute, DispatchThenCombineWithUnitWeightsCountsEachCopy) {
  // With expert_out = x_perm and every weight 1, the combine returns (used slots) * x exactly
  // for small integers.
  const CpuContext ctx;
  const std::vector<int32_t> ids = {1, 0, 2, -1, 0, 2};
  const int64_t tokens = 3, k = 2, hidden = 4;
  const Maps m = Build(ctx, ids, tokens, k, 3);
  std::vector<float> x(tokens * hidden);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i + 1);
  std::vector<float> xp(m.rows * hidden), y(tokens * hidden);
  const std::vector<float> w(tokens * k, 1.0f);
  PermuteForward(ctx, x.data(), tokens, hidden, m.row_token.data(), m.rows, xp.data());
  UnpermuteForward(ctx, xp.data(), m.rows, w.data(), m.slot_row.data(), tokens, k, hidden,
                   y.data());
  const int used[] = {2, 1, 2};
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < hidden; ++j) {
      EXPECT_EQ(y[t * hidden + j], used[t] * x[t * hidden + j]) << t << "," << j;
    }
  }
}

TEST(Permute, ResultsAreBitIdenticalForAnyThreadCount) {
  std::mt19937_64 rng(testing::TestSeed(59));
  const int64_t tokens = 301, k = 6, n = 64, hidden = 48;
  const std::vector<int32_t> ids = RandomIds(rng, tokens, k, n, true, true);
  const std::vector<float> x = testing::RandomNormal(rng, tokens * hidden);
  const std::vector<float> w = testing::RandomNormal(rng, tokens * k);
  const std::vector<float> dy = testing::RandomNormal(rng, tokens * hidden);
  auto run = [&](ThreadPool* pool, Maps* m) {
    const CpuContext ctx{pool};
    *m = Build(ctx, ids, tokens, k, n);
    std::vector<float> xp(m->rows * hidden), y(tokens * hidden), dx(tokens * hidden);
    std::vector<float> deo(m->rows * hidden), dw(tokens * k);
    PermuteForward(ctx, x.data(), tokens, hidden, m->row_token.data(), m->rows, xp.data());
    UnpermuteForward(ctx, xp.data(), m->rows, w.data(), m->slot_row.data(), tokens, k, hidden,
                     y.data());
    UnpermuteBackward(ctx, dy.data(), xp.data(), m->rows, w.data(), m->slot_row.data(), tokens, k,
                      hidden, deo.data(), dw.data());
    PermuteBackward(ctx, deo.data(), m->rows, m->slot_row.data(), tokens, k, hidden, dx.data());
    for (const auto* v : {&xp, &dx, &deo, &dw}) y.insert(y.end(), v->begin(), v->end());
    return y;
  };
  Maps one_maps;
  const std::vector<float> one = run(nullptr, &one_maps);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    Maps maps;
    EXPECT_TRUE(SameBits("outputs", one, run(&pool, &maps))) << threads << " threads";
    EXPECT_EQ(maps.offsets, one_maps.offsets);
    EXPECT_EQ(maps.row_token, one_maps.row_token);
    EXPECT_EQ(maps.slot_row, one_maps.slot_row);
  }
}

TEST(PermuteDeathTest, AbortsOnAnExpertIdOutOfRange) {
  const std::vector<int32_t> ids = {0, 4};
  EXPECT_DEATH(Build(CpuContext{}, ids, 1, 2, 4),
               "expert_ids\\[1\\]=4 outside \\[-1, n_experts=4\\)");
}

}  // namespace
}  // namespace dsv3::kernels
