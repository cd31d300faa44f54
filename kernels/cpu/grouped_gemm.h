// Grouped GEMMs for the routed experts of an MoE layer: one call runs every expert's Linear product
// over its own group of tokens (DeepGEMM's "contiguous" layout), in FP32, BF16 and block-scaled
// FP8 E4M3, for Fprop, Dgrad and Wgrad. Each expert's result is exactly what the dense GEMM of
// gemm.h (same precision) computes on that expert's rows, with the thread and backend caveats of
// gemm.h. Not here: routing, token permutation (dispatch/combine), gate weights.
//
// Layout. Tokens are sorted by expert: expert e owns rows [offset(e), offset(e) +
// rows_per_expert[e]) of the token-major tensors, offset(e) = sum of rows_per_expert[e'] for e' <
// e, and T (total rows) = the sum over all experts. Counts may be zero. Weights are stacked: w[E,
// n, k]. M, N, K are each expert's Linear's (tokens, output features, input features); every matrix
// is dense row-major, BF16 as uint16 bits, FP8 as E4M3 codes, outputs FP32. options.accumulate adds
// to the outputs (an expert with no tokens then leaves its dw alone; without accumulate its dw is
// zeroed). Arguments are checked at entry (num_experts >= 0, counts >= 0, sizes >= 0, non-null
// buffers where needed, outputs overlapping no input); a violation aborts with a message.
//
// Threads: FP32 and BF16 run one BLAS call per expert, the experts side by side on ctx's threads
// (one thread each) when there are at least twice as many non-empty experts as threads, else one
// after another on all threads; their bits may depend on the thread count (gemm.h). FP8 runs all
// experts' tiles in one parallel pass and depends only on the inputs.
#ifndef DSV3_KERNELS_CPU_GROUPED_GEMM_H_
#define DSV3_KERNELS_CPU_GROUPED_GEMM_H_

#include <cstdint>

#include "kernels/cpu/context.h"
#include "kernels/cpu/gemm.h"

namespace dsv3::kernels {

// Sum over experts of NumTiles(rows_per_expert[e]): the rows of the per-expert 128x1 scale blocks
// of a grouped FP8 Wgrad operand (see GroupedGemmWgradFp8).
int64_t GroupedNumTiles(const int64_t* rows_per_expert, int64_t num_experts);

// ---- FP32 -------------------------------------------------------------------------------------

// y[rows of e] = x[rows of e] · w[e]^T.
//   x: [T, k]   w: [E, n, k]   rows_per_expert: [E]   y: [T, n]
void GroupedGemmFpropFp32(const CpuContext& ctx, const GemmOptions& options, const float* x,
                          const float* w, const int64_t* rows_per_expert, int64_t num_experts,
                          int64_t n, int64_t k, float* y);

// dx[rows of e] = dy[rows of e] · w[e].
//   dy: [T, n]   w: [E, n, k]   dx: [T, k]
void GroupedGemmDgradFp32(const CpuContext& ctx, const GemmOptions& options, const float* dy,
                          const float* w, const int64_t* rows_per_expert, int64_t num_experts,
                          int64_t n, int64_t k, float* dx);

// dw[e] = dy[rows of e]^T · x[rows of e].
//   dy: [T, n]   x: [T, k]   dw: [E, n, k]
void GroupedGemmWgradFp32(const CpuContext& ctx, const GemmOptions& options, const float* dy,
                          const float* x, const int64_t* rows_per_expert, int64_t num_experts,
                          int64_t n, int64_t k, float* dw);

// ---- BF16 operands, FP32 accumulation and output (shapes as for FP32)
// ----------------------------

void GroupedGemmFpropBf16(const CpuContext& ctx, const GemmOptions& options, const std::uint16_t* x,
                          const std::uint16_t* w, const int64_t* rows_per_expert,
                          int64_t num_experts, int64_t n, int64_t k, float* y);

void GroupedGemmDgradBf16(const CpuContext& ctx, const GemmOptions& options,
                          const std::uint16_t* dy, const std::uint16_t* w,
                          const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                          float* dx);

void GroupedGemmWgradBf16(const CpuContext& ctx, const GemmOptions& options,
                          const std::uint16_t* dy, const std::uint16_t* x,
                          const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                          float* dw);

// ---- Block-scaled FP8 (exact arithmetic as in gemm.h) -------------------------------------------

// Fprop, per expert as GemmFpropFp8. x's 1x128 scales are per row, so one Quantize1x128 of all T
// rows serves every expert.
//   x_q: [T, k], x_scales: [T, NumTiles(k)]
//   w_q: [E, n, k], w_scales: [E, NumTiles(n), NumTiles(k)] (Quantize128x128 of each w[e])
//   y: [T, n]
void GroupedGemmFpropFp8(const CpuContext& ctx, const GemmOptions& options, const std::uint8_t* x_q,
                         const float* x_scales, const std::uint8_t* w_q, const float* w_scales,
                         const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                         float* y);

// Dgrad, per expert as GemmDgradFp8.
//   dy_q: [T, n], dy_scales: [T, NumTiles(n)]   w_q, w_scales: as for Fprop   dx: [T, k]
void GroupedGemmDgradFp8(const CpuContext& ctx, const GemmOptions& options,
                         const std::uint8_t* dy_q, const float* dy_scales, const std::uint8_t* w_q,
                         const float* w_scales, const int64_t* rows_per_expert, int64_t num_experts,
                         int64_t n, int64_t k, float* dx);

// Wgrad, per expert as GemmWgradFp8, with each expert's operands transposed and tiled 128x1 along
// its own tokens (tiles restart at every expert's first row, as Quantize128x1Transposed /
// Requantize128x1Transposed of that expert's rows write them). Expert e's blocks, back to back:
//   dy_t_q: [n, M_e] codes at offset n·offset(e) of an [n·T] buffer
//   dy_t_scales: [n, NumTiles(M_e)] at offset n·tile_offset(e) of an [n·GroupedNumTiles] buffer,
//                tile_offset(e) = sum of NumTiles(rows_per_expert[e']) for e' < e
//   x_t_q: [k, M_e] at k·offset(e);  x_t_scales: [k, NumTiles(M_e)] at k·tile_offset(e)
//   dw: [E, n, k]
void GroupedGemmWgradFp8(const CpuContext& ctx, const GemmOptions& options,
                         const std::uint8_t* dy_t_q, const float* dy_t_scales,
                         const std::uint8_t* x_t_q, const float* x_t_scales,
                         const int64_t* rows_per_expert, int64_t num_experts, int64_t n, int64_t k,
                         float* dw);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_GROUPED_GEMM_H_
