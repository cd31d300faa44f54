// Tests of the embedding lookup and its scatter-add gradient against PyTorch autograd (repeated
// ids, one token, a one-row vocabulary), accumulation, and thread-count invariance.

#include "kernels/cpu/embedding.h"

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
  std::mt19937_64 rng = set.Rng("embedding");
  struct Shape {
    const char* name;
    int64_t vocab, hidden, tokens;
  };
  const Shape shapes[] = {{"vocab_one", 1, 3, 4},
                          {"one_token", 10, 7, 1},
                          {"repeated_ids", 5, 65, 40},
                          {"odd_vocab", 4099, 16, 23}};
  for (const Shape& s : shapes) {
    std::vector<int32_t> ids(s.tokens);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % s.vocab);
    set.Add("embedding", s.name)
        .Array("table", {s.vocab, s.hidden}, testing::RandomNormal(rng, s.vocab * s.hidden))
        .Array("ids", {s.tokens}, ids)
        .Array("dout", {s.tokens, s.hidden}, testing::RandomNormal(rng, s.tokens * s.hidden))
        .Array("dtable0", {s.vocab, s.hidden}, testing::RandomNormal(rng, s.vocab * s.hidden));
  }
}
DSV3_REGISTER_REF_CASES(BuildCases);

TEST(Embedding, LookupAndScatterAddGradientMatchTorch) {
  ThreadPool pool(2);
  const CpuContext ctx{&pool};
  for (const RefCase& c : testing::RefCases("embedding")) {
    SCOPED_TRACE(c.name());
    const std::vector<int64_t> shape = c.Shape("table");
    const int64_t vocab = shape[0], hidden = shape[1];
    const std::vector<int32_t> ids = c.I32("ids");
    const int64_t tokens = static_cast<int64_t>(ids.size());
    const std::vector<float> table = c.F32("table"), dout = c.F32("dout");
    std::vector<float> out(tokens * hidden), dtable = c.F32("dtable0");
    EmbeddingForward(ctx, table.data(), vocab, hidden, ids.data(), tokens, out.data());
    EmbeddingBackward(ctx, dout.data(), ids.data(), tokens, vocab, hidden, dtable.data());
    EXPECT_TRUE(AllClose("out", out.data(), c.F64("ref_out"), {tokens, hidden}, 0, 0));
    EXPECT_TRUE(AllClose("dtable", dtable.data(), c.F64("ref_dtable"), shape, 1e-6, 1e-6));
  }
}

TEST(Embedding, GradientSumsRepeatedIdsInTokenOrder) {
  // 1e8 + 1 - 1e8 in FP32 depends on the order: token order gives (0 + 1e8) + 1 -> 1e8, - 1e8 -> 0.
  const std::vector<int32_t> ids = {2, 2, 2};
  const std::vector<float> dout = {1e8f, 1.0f, -1e8f};
  std::vector<float> dtable(3, 0.0f);
  EmbeddingBackward(CpuContext{}, dout.data(), ids.data(), 3, 3, 1, dtable.data());
  EXPECT_EQ(dtable, (std::vector<float>{0.0f, 0.0f, 0.0f}));
}

TEST(Embedding, ResultsAreBitIdenticalForAnyThreadCount) {
  std::mt19937_64 rng(testing::TestSeed(61));
  const int64_t vocab = 97, hidden = 300, tokens = 513;
  std::vector<int32_t> ids(tokens);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
  const std::vector<float> dout = testing::RandomNormal(rng, tokens * hidden);
  auto run = [&](ThreadPool* pool) {
    std::vector<float> dtable(vocab * hidden, 0.0f);
    EmbeddingBackward(CpuContext{pool}, dout.data(), ids.data(), tokens, vocab, hidden,
                      dtable.data());
    return dtable;
  };
  const std::vector<float> one = run(nullptr);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    EXPECT_TRUE(SameBits("dtable", one, run(&pool))) << threads << " threads";
  }
}

TEST(EmbeddingDeathTest, AbortsOnATokenIdOutsideTheVocabulary) {
  const std::vector<float> table(8);
  std::vector<float> out(4);
  const int32_t ids[] = {1, 4};
  EXPECT_DEATH(EmbeddingForward(CpuContext{}, table.data(), 4, 2, ids, 2, out.data()),
               "ids\\[1\\]=4 outside \\[0, vocab=4\\)");
}

}  // namespace
}  // namespace dsv3::kernels
