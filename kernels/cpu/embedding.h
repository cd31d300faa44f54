// Token embedding lookup on the CPU (spec §5.5: kept in FP32/BF16, never FP8) and its gradient, a
// deterministic scatter-add. Not here: the output head (a GEMM) or weight tying.
// The CUDA twin (later) takes a CudaContext and the same arguments; its scatter-add must keep the
// same per-element order (token order) to stay bit-identical.
#ifndef DSV3_KERNELS_CPU_EMBEDDING_H_
#define DSV3_KERNELS_CPU_EMBEDDING_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

// out[t] = table[ids[t]].
//   table: [vocab, hidden] row-major FP32
//   ids:   [tokens] int32, each in [0, vocab) (checked; a bad id aborts with its index)
//   out:   [tokens, hidden] row-major, written; must not overlap table
void EmbeddingForward(const CpuContext& ctx, const float* table, int64_t vocab, int64_t hidden,
                      const int32_t* ids, int64_t tokens, float* out);

// dtable[ids[t]] += dout[t] for every token, each element summing in increasing token order in
// FP32 (bit-identical for any thread count: threads split the hidden columns).
//   dout:   [tokens, hidden] row-major
//   ids:    [tokens] int32 in [0, vocab)
//   dtable: [vocab, hidden] row-major, ACCUMULATED into (the caller zeroes it once per step)
void EmbeddingBackward(const CpuContext& ctx, const float* dout, const int32_t* ids, int64_t tokens,
                       int64_t vocab, int64_t hidden, float* dtable);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_EMBEDDING_H_
