// Rotary position embedding on the CPU (spec §2.3, §2.4, §11.7): adjacent pairs (x[2j], x[2j+1])
// of each rope slice rotate by position * theta_j ("interleaved", as V3code's apply_rotary_emb and
// the released checkpoints), in place on strided slices inside wider q / k rows; the backward is
// the inverse rotation. Also the frequencies theta_j, with the YaRN blend when rope_scaling is
// given, and the cos/sin table. Not here: the attention core and its softmax scale (only
// YarnMscale). The CUDA twin (later) takes a CudaContext and the same arguments (the table in
// device memory).
#ifndef DSV3_KERNELS_CPU_ROPE_H_
#define DSV3_KERNELS_CPU_ROPE_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

// theta_j = rope_theta^(-2j / d_rope) for j = 0 .. d_rope/2 - 1, in double.
//   theta: [d_rope / 2]
// Aborts unless d_rope is even and >= 2 and rope_theta > 0.
void RopeFrequencies(int64_t d_rope, double rope_theta, double* theta);

// The `rope_scaling` section of a Hugging Face DeepSeek-V3 config (type "yarn").
struct YarnScaling {
  double factor = 1.0;                              // s, e.g. 40
  int64_t original_max_position_embeddings = 4096;  // L0
  double beta_fast = 32.0;
  double beta_slow = 1.0;
};

// YaRN-blended frequencies (V3code precompute_freqs_cis; spec §2.4, oracle 5), in double:
//   low  = max(floor(d ln(L0 / (beta_fast 2 pi)) / (2 ln rope_theta)), 0)
//   high = min(ceil (d ln(L0 / (beta_slow 2 pi)) / (2 ln rope_theta)), d - 1)
//   ramp_j = clamp((j - low) / (high - low), 0, 1)   (high += 0.001 when high == low)
//   theta'_j = theta_j / s * ramp_j + theta_j * (1 - ramp_j)
// For d=64, base 1e4, L0 4096, s 40, beta 32/1: low 10, high 23; j <= 10 unchanged, j >= 23
// divided by 40. The caller decides whether YaRN is active (spec §11.7: rope_scaling given).
//   theta: [d_rope / 2]
// Aborts on d_rope odd or < 2, rope_theta <= 0, factor <= 0, L0 < 1 or betas <= 0.
void YarnRopeFrequencies(int64_t d_rope, double rope_theta, const YarnScaling& yarn, double* theta);

// YaRN's attention factor 0.1 * mscale * ln(factor) + 1 for factor > 1, else 1 (V3code
// yarn_get_mscale). The softmax scale is multiplied by its square (spec §2.5, §11.7).
double YarnMscale(double factor, double mscale);

// A cos/sin table: cos[p, j] = cos(p * theta_j), sin[p, j] = sin(p * theta_j) for positions
// p in [0, positions). A view; the caller owns the arrays.
struct RopeTable {
  const float* cos = nullptr;  // [positions, half_dim] row-major
  const float* sin = nullptr;  // [positions, half_dim] row-major
  int64_t positions = 0;
  int64_t half_dim = 0;  // d_rope / 2
};

// Fills a table: the angle p * theta_j, its cosine and sine in double, each rounded once to FP32.
//   theta: [half_dim] (RopeFrequencies or YarnRopeFrequencies)
//   cos, sin: [positions, half_dim] row-major, written
// Aborts on half_dim < 1, positions < 0, null or overlapping buffers.
void BuildRopeTable(const CpuContext& ctx, const double* theta, int64_t half_dim, int64_t positions,
                    float* cos, float* sin);

// Where the rope slices are. Element i of the slice of (token t, head h) is
//   x[t * token_stride + h * head_stride + i],  i in [0, d_rope).
// q (rows [nope | rope] per head): x = q + qk_nope_head_dim, head_stride = nope + rope,
//   token_stride = heads * (nope + rope).  Shared key: x = kv_a + kv_lora_rank, heads = 1,
//   token_stride = kv_lora_rank + rope.
struct RopeLayout {
  int64_t tokens = 0;
  int64_t heads = 1;
  int64_t d_rope = 0;        // even, == 2 * table.half_dim
  int64_t token_stride = 0;  // >= (heads - 1) * head_stride + d_rope when tokens > 1
  int64_t head_stride = 0;   // >= d_rope when heads > 1
};

// Rotates every slice in place: for pair j of token t with c = cos[positions[t], j],
// s = sin[positions[t], j] (FP32):  (a, b) <- (a c - b s, a s + b c).
//   positions: [tokens] int32, each in [0, table.positions)  (spec §11: row position i -> i)
//   x:         the strided slices of `layout`, rotated in place
// Only the slices are touched (the nope parts between them are not read or written). Aborts on a
// bad layout, a layout whose slices overlap, a position outside the table, or null buffers.
// Results do not depend on the thread count.
void RopeForward(const CpuContext& ctx, const RopeTable& table, const int32_t* positions,
                 const RopeLayout& layout, float* x);

// Backward: the inverse rotation, in place on the gradient of the rotated slices,
// (da, db) <- (da c + db s, -da s + db c). Same arguments and checks as RopeForward.
void RopeBackward(const CpuContext& ctx, const RopeTable& table, const int32_t* positions,
                  const RopeLayout& layout, float* dx);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_ROPE_H_
