// Embedding gather (tokens in parallel) and scatter-add (hidden columns in parallel, tokens in
// order).

#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <cstring>

#include "kernels/check.h"
#include "kernels/cpu/ops_common.h"

namespace dsv3::kernels {
namespace {

void CheckArgs(const char* op, int64_t vocab, int64_t hidden, const int32_t* ids, int64_t tokens) {
  DSV3_KERNEL_CHECK(vocab >= 1 && hidden >= 1 && tokens >= 0,
                    "%s: vocab=%lld and hidden=%lld must be >= 1, tokens=%lld >= 0", op,
                    static_cast<long long>(vocab), static_cast<long long>(hidden),
                    static_cast<long long>(tokens));
  if (tokens == 0) return;
  DSV3_KERNEL_CHECK(ids != nullptr, "%s: null ids", op);
  for (int64_t t = 0; t < tokens; ++t) {
    DSV3_KERNEL_CHECK(ids[t] >= 0 && ids[t] < vocab, "%s: ids[%lld]=%d outside [0, vocab=%lld)", op,
                      static_cast<long long>(t), ids[t], static_cast<long long>(vocab));
  }
}

}  // namespace

void EmbeddingForward(const CpuContext& ctx, const float* table, int64_t vocab, int64_t hidden,
                      const int32_t* ids, int64_t tokens, float* out) {
  CheckArgs("EmbeddingForward", vocab, hidden, ids, tokens);
  if (tokens == 0) return;
  DSV3_KERNEL_CHECK(table != nullptr && out != nullptr, "EmbeddingForward: null table or out");
  DSV3_KERNEL_CHECK(!internal::ViewsOverlap(table, vocab * hidden, out, tokens * hidden),
                    "EmbeddingForward: out overlaps table");
  ParallelFor(ctx, tokens, internal::RowGrain(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      std::memcpy(out + t * hidden, table + static_cast<int64_t>(ids[t]) * hidden,
                  hidden * sizeof(float));
    }
  });
}

void EmbeddingBackward(const CpuContext& ctx, const float* dout, const int32_t* ids, int64_t tokens,
                       int64_t vocab, int64_t hidden, float* dtable) {
  CheckArgs("EmbeddingBackward", vocab, hidden, ids, tokens);
  if (tokens == 0) return;
  DSV3_KERNEL_CHECK(dout != nullptr && dtable != nullptr, "EmbeddingBackward: null dout or dtable");
  DSV3_KERNEL_CHECK(!internal::ViewsOverlap(dtable, vocab * hidden, dout, tokens * hidden),
                    "EmbeddingBackward: dtable overlaps dout");
  constexpr int64_t kColBlock = 64;
  const int64_t blocks = (hidden + kColBlock - 1) / kColBlock;
  ParallelFor(ctx, blocks, std::max<int64_t>(1, 256 / tokens), [&](int64_t begin, int64_t end) {
    const int64_t c0 = begin * kColBlock;
    const int64_t c1 = std::min(hidden, end * kColBlock);
    for (int64_t t = 0; t < tokens; ++t) {
      const float* src = dout + t * hidden;
      float* dst = dtable + static_cast<int64_t>(ids[t]) * hidden;
      for (int64_t j = c0; j < c1; ++j) dst[j] += src[j];
    }
  });
}

}  // namespace dsv3::kernels
