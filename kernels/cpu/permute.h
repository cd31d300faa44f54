// Token permutation for expert dispatch on the CPU (spec §3.2 output, §3.3 no dropping): group the
// (token, slot) assignments by expert, copy token rows into that order, and combine expert outputs
// back with the gate weights; the backwards of both. FP32 rows. Not here: the expert FFNs, the
// all-to-all between expert-parallel ranks (engine/parallel) and the router (router.h).
//
// Order of the permuted rows (stable, the same on every thread count and on the CUDA twin): by
// expert id, then token index, then slot. An id of -1 marks an unused slot (nothing dispatched).
// Maps, for tokens T, slots K (top_k) and R = number of used slots:
//   expert_offsets [n_experts + 1] int64: expert e's rows are [offsets[e], offsets[e + 1]);
//                                         offsets[n_experts] = R
//   row_token      [T * K] int32: row p < R came from token row_token[p]; entries >= R are -1
//   slot_row       [T, K]  int32: the row of (token t, slot k), or -1 for an unused slot
#ifndef DSV3_KERNELS_CPU_PERMUTE_H_
#define DSV3_KERNELS_CPU_PERMUTE_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

// Builds the maps above (a counting sort; serial, O(T K + n_experts)). Returns R.
//   expert_ids: [tokens, top_k] row-major int32, each in [0, n_experts) or -1
// Aborts on tokens < 0, top_k < 1, n_experts < 1, tokens * top_k >= 2^31, an id outside
// [-1, n_experts), null or overlapping buffers.
int64_t BuildDispatchMaps(const CpuContext& ctx, const int32_t* expert_ids, int64_t tokens,
                          int64_t top_k, int64_t n_experts, int64_t* expert_offsets,
                          int32_t* row_token, int32_t* slot_row);

// Dispatch: x_perm[p] = x[row_token[p]] for p < rows.
//   x:         [tokens, hidden] row-major
//   row_token: [>= rows] from BuildDispatchMaps, each in [0, tokens)
//   x_perm:    [rows, hidden] row-major, written
void PermuteForward(const CpuContext& ctx, const float* x, int64_t tokens, int64_t hidden,
                    const int32_t* row_token, int64_t rows, float* x_perm);

// Backward of the dispatch: dx[t] = sum over the used slots k of token t, in slot order, of
// dx_perm[slot_row[t, k]] (zero for a token with no used slot).
//   dx_perm:  [rows, hidden] row-major
//   slot_row: [tokens, top_k] from BuildDispatchMaps, each in [-1, rows)
//   dx:       [tokens, hidden] row-major, OVERWRITTEN
void PermuteBackward(const CpuContext& ctx, const float* dx_perm, int64_t rows,
                     const int32_t* slot_row, int64_t tokens, int64_t top_k, int64_t hidden,
                     float* dx);

// Combine: y[t] = sum over the used slots k of token t, in slot order, of
// weights[t, k] * expert_out[slot_row[t, k]] (FP32; zero for a token with no used slot).
//   expert_out: [rows, hidden] row-major (the experts' outputs in permuted order)
//   weights:    [tokens, top_k] row-major (the router's gate weights, same slots)
//   slot_row:   [tokens, top_k]
//   y:          [tokens, hidden] row-major, OVERWRITTEN
void UnpermuteForward(const CpuContext& ctx, const float* expert_out, int64_t rows,
                      const float* weights, const int32_t* slot_row, int64_t tokens, int64_t top_k,
                      int64_t hidden, float* y);

// Backward of the combine:
//   d_expert_out[slot_row[t, k]] = weights[t, k] * dy[t]        (every row < rows written once)
//   dweights[t, k] = <dy[t], expert_out[slot_row[t, k]]>         (0 for an unused slot; FP32 dot
//                                                                 with 8 fixed partial sums)
//   dy: [tokens, hidden]; d_expert_out: [rows, hidden], OVERWRITTEN; dweights: [tokens, top_k],
//   OVERWRITTEN. slot_row must come from BuildDispatchMaps (each used row exactly once).
void UnpermuteBackward(const CpuContext& ctx, const float* dy, const float* expert_out,
                       int64_t rows, const float* weights, const int32_t* slot_row, int64_t tokens,
                       int64_t top_k, int64_t hidden, float* d_expert_out, float* dweights);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_PERMUTE_H_
