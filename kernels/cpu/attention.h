// Causal softmax attention on the CPU, forward and backward, flash-style: the attention core of MLA
// in its training ("naive") form (spec §2.2), o = softmax(q k^T * scale + causal mask) v per head,
// with separate QK and V head dims (192 and 128 in DeepSeek-V3). Keys are tiled with an online
// softmax, so no [T, T] matrix is ever stored. FP32 in and out. Not here: RoPE, the projections,
// the shared rope key's broadcast (callers pass assembled per-head K), document masking, KV caches.
#ifndef DSV3_KERNELS_CPU_ATTENTION_H_
#define DSV3_KERNELS_CPU_ATTENTION_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

// Shapes and the softmax scale of one attention call.
//
// Layout: every per-token tensor is [batch, seq_len, heads, dim] row-major, i.e. the [tokens,
// heads * dim] matrix a projection writes (token = b * seq_len + t); head h of token t is the
// `dim` floats at ((b * seq_len + t) * heads + h) * dim. So q is the q_b_proj output with RoPE
// applied to each head's last qk_rope dims, and o feeds o_proj as-is. K must be assembled per
// head: [k_nope_h ; k_rope] with the shared rope key copied into every head.
// The log-sum-exp is [batch, heads, seq_len] row-major.
struct AttentionParams {
  int64_t batch = 0;    // B >= 0 (rows of the batch; 0 does nothing)
  int64_t seq_len = 0;  // T >= 0 (tokens per row; attention is causal within a row)
  int64_t heads = 0;    // H >= 1
  int64_t qk_dim = 0;   // d_qk >= 1 (qk_nope + qk_rope, 192 for V3)
  int64_t v_dim = 0;    // d_v >= 1 (128 for V3)
  // Multiplies q.k before the softmax: 1/sqrt(d_qk), times mscale^2 under YaRN (spec §2.5). Finite.
  float softmax_scale = 0.0f;
};

// o[b, t, h, :] = sum_{j <= t} p_j v[b, j, h, :], p = softmax_j(softmax_scale * q[b, t, h, :] .
// k[b, j, h, :]), and lse[b, h, t] = log sum_{j <= t} exp(softmax_scale * q . k) (natural log,
// scale included), which AttentionBackward needs.
//   q    [B, T, H, qk_dim] row-major       k [B, T, H, qk_dim] row-major
//   v    [B, T, H, v_dim] row-major
//   o    [B, T, H, v_dim] row-major, written
//   lse  [B, H, T] row-major, written
// The caller owns every buffer; outputs must not overlap inputs or each other. Work is split over
// ctx.pool by (batch, head, block of 64 queries); results are the same bits for any thread count.
// Each thread keeps a scratch buffer of O(64 * (qk_dim + v_dim)) floats for later calls; nothing
// of size O(seq_len^2) is ever allocated. ctx.use_simd = false forces the portable code (also
// vectorised, but slower; it agrees with the AVX-512 code to rounding, not bit for bit).
// Aborts with a message (DSV3_KERNEL_CHECK) on bad shapes, null buffers or overlapping outputs.
void AttentionForward(const CpuContext& ctx, const AttentionParams& params, const float* q,
                      const float* k, const float* v, float* o, float* lse);

// Gradients of the loss through AttentionForward, given dout = dL/do. Recomputes the scores tile by
// tile from q, k and the saved lse; uses D = rowsum(dout * o).
//   q, k, v, o, lse  as in AttentionForward (o and lse as AttentionForward wrote them)
//   dout [B, T, H, v_dim] row-major
//   dq   [B, T, H, qk_dim] row-major, written     dk [B, T, H, qk_dim] row-major, written
//   dv   [B, T, H, v_dim] row-major, written
// Outputs are overwritten (not accumulated) and must not overlap inputs or each other. Same bits
// for any thread count (the split over threads changes, the order of every sum does not). Besides
// the per-thread scratch it allocates D, batch * heads * seq_len floats. Aborts with a message on
// bad shapes, null buffers or overlapping outputs.
void AttentionBackward(const CpuContext& ctx, const AttentionParams& params, const float* q,
                       const float* k, const float* v, const float* o, const float* lse,
                       const float* dout, float* dq, float* dk, float* dv);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_ATTENTION_H_
