// Fine-grained FP8 (E4M3) quantisation on the CPU (spec §5.2, §5.4, §11 item 9): activations in
// 1x128 tiles, weights in 128x128 blocks, the 128x1 re-quantisation for the weight-gradient GEMM,
// and dequantisation. The CUDA twins (kernels/cuda/, later) take a CudaContext instead of a
// CpuContext and must give bit-identical codes and scales. Not here: the GEMMs, and other formats.
//
// Exact semantics of one tile (every op IEEE FP32, round to nearest even; no FMA contraction):
//   amax = max |x| over the tile's elements (only the elements that exist: a partial tile at the
//          end of a dimension acts as if zero-padded). NaN-propagating: a NaN in the tile makes
//          amax NaN, hence the scale and every code of the tile NaN. An infinity makes s = inf,
//          inv = 0: the tile's finite elements get code 0 and its infinities NaN.
//   s    = max(amax, 1e-4f) / 448.0f                        (a true division, not * (1/448))
//          ScaleFormat::kUe8m0: s = 2^ceil(log2(s)), computed exactly from the bits of s.
//   inv  = 1.0f / s                                          (CUDA: __frcp_rn(s))
//   q    = FloatToE4M3(x * inv): the product rounded to FP32, then RNE + satfinite to E4M3
//          (CUDA: __nv_cvt_float_to_fp8(__fmul_rn(x, inv), __NV_SATFINITE, __NV_E4M3))
//   dequantised x' = E4M3ToFloat(q) * s                      (CUDA: __fmul_rn)
// Multiplication by the reciprocal, not x / s, is DeepGEMM's definition (deep_gemm/utils/math.py
// per_token_cast_to_fp8, per_channel_cast_to_fp8, per_block_cast_to_fp8: x * (1.0 / sf) with
// sf = amax / 448, and the exact bit-level ceil_to_ue8m0). Spec §5.2 and oracle 15 write
// e4m3(x / s) after V3code inference/kernel.py, but there `x / s` is Triton FP32 division, which
// compiles to the approximate div.full.f32, so it defines no bit pattern to match; two correctly
// rounded ops do, on any CPU or GPU. x * inv can differ from a correctly rounded x / s in the last
// FP32 bits, which changes a code only next to an FP8 rounding boundary; with ue8m0 scales the two
// are identical (inv is then an exact power of two).
//
// Use in the three GEMMs of a Linear Y[M,N] = X[M,K] W[N,K]^T (NT layout, contraction along rows):
//   Fprop  Y  = X . W^T    : Quantize1x128(X [M,K]),  Quantize128x128(W [N,K])
//   Dgrad  dX = dY . W     : Quantize1x128(dY [M,N]); W^T's 128x128 blocks are W's blocks, so
//                            transposing W's codes and its scale matrix needs no re-quantisation
//   Wgrad  dW = dY^T . X   : Quantize128x1Transposed(dY) -> [N,M], Requantize128x1Transposed of
//                            the cached FP8 X -> [K,M]; both tiled 1x128 along the tokens M
//
// Layouts: every matrix is dense row-major with the given [rows, cols], FP8 codes as uint8.
// Arguments are checked once at entry (non-negative sizes, non-null and non-overlapping buffers);
// a violation aborts with a message. Results do not depend on ctx (threads, SIMD).
#ifndef DSV3_KERNELS_CPU_QUANTIZE_H_
#define DSV3_KERNELS_CPU_QUANTIZE_H_

#include <cstdint>

#include "kernels/cpu/context.h"
#include "kernels/fp8_types.h"

namespace dsv3::kernels {

// s = 2^ceil(log2(s)) for s > 0, exact; +inf and NaN are returned unchanged.
float RoundScaleToUe8m0(float s);

// The scale of a tile whose largest magnitude is amax (see the header comment).
float ScaleFromAmax(float amax, ScaleFormat format);

// Activations, 1x128 tiles along cols (the GEMM's K): one scale per row per 128 columns.
//   x:      [rows, cols] row-major FP32
//   q:      [rows, cols] row-major E4M3 codes
//   scales: [rows, NumTiles(cols)] row-major FP32; scales[r, t] covers x[r, 128t .. 128t+127]
void Quantize1x128(const CpuContext& ctx, const QuantOptions& options, const float* x, int64_t rows,
                   int64_t cols, std::uint8_t* q, float* scales);

// Weights, 128x128 blocks (128 output channels x 128 input channels).
//   w:      [rows, cols] row-major FP32 (rows = N output channels, cols = K input channels)
//   q:      [rows, cols] row-major E4M3 codes
//   scales: [NumTiles(rows), NumTiles(cols)] row-major FP32 (the checkpoints' weight_scale_inv)
void Quantize128x128(const CpuContext& ctx, const QuantOptions& options, const float* w,
                     int64_t rows, int64_t cols, std::uint8_t* q, float* scales);

// X in 128x1 tiles (128 consecutive rows of one column), written transposed: the result is X^T
// quantised in 1x128 tiles, the layout the weight-gradient GEMM contracts over (tokens).
// Identical to Quantize1x128 of the transposed matrix.
//   x:        [rows, cols] row-major FP32
//   q_t:      [cols, rows] row-major E4M3 codes of X^T
//   scales_t: [cols, NumTiles(rows)] row-major FP32; scales_t[c, t] covers x[128t .. 128t+127, c]
void Quantize128x1Transposed(const CpuContext& ctx, const QuantOptions& options, const float* x,
                             int64_t rows, int64_t cols, std::uint8_t* q_t, float* scales_t);

// The backward re-quantisation of a cached activation (spec §5.4): dequantises X from its 1x128
// tiles (x' = E4M3ToFloat(q) * s, FP32) and quantises x' as Quantize128x1Transposed does.
//   q:        [rows, cols] row-major E4M3 codes, scales: [rows, NumTiles(cols)] (Quantize1x128)
//   q_t:      [cols, rows] row-major E4M3 codes, scales_t: [cols, NumTiles(rows)]
void Requantize128x1Transposed(const CpuContext& ctx, const QuantOptions& options,
                               const std::uint8_t* q, const float* scales, int64_t rows,
                               int64_t cols, std::uint8_t* q_t, float* scales_t);

// x[r, c] = E4M3ToFloat(q[r, c]) * scales[r, c / 128].
//   q: [rows, cols] E4M3 codes, scales: [rows, NumTiles(cols)], x: [rows, cols] FP32, row-major
void Dequantize1x128(const CpuContext& ctx, const std::uint8_t* q, const float* scales,
                     int64_t rows, int64_t cols, float* x);

// w[r, c] = E4M3ToFloat(q[r, c]) * scales[r / 128, c / 128].
//   q: [rows, cols] E4M3 codes, scales: [NumTiles(rows), NumTiles(cols)], w: [rows, cols] FP32
void Dequantize128x128(const CpuContext& ctx, const std::uint8_t* q, const float* scales,
                       int64_t rows, int64_t cols, float* w);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_QUANTIZE_H_
