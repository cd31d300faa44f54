// Dense GEMMs on the CPU for the three products of a Linear layer Y[M,N] = X[M,K]·W[N,K]^T —
// Fprop Y = X·W^T, Dgrad dX = dY·W, Wgrad dW = dY^T·X — in FP32, BF16 (FP32 accumulation) and
// block-scaled FP8 E4M3 (spec §5.2-5.4, §11 item 9). The CUDA twins (kernels/cuda/, later) take a
// CudaContext in place of the CpuContext and keep every other argument. Not here: the MoE grouped
// GEMMs (grouped_gemm.h), quantisation (quantize.h), BF16 or FP8 outputs.
//
// Everywhere M, N, K are the Linear's: M rows (tokens), N output features, K input features.
// Every matrix is dense row-major with the given [rows, cols]; BF16 values are their 16 bits
// (std::uint16_t, kernels/cpu/fp8.h), FP8 values E4M3 codes (std::uint8_t). Outputs are FP32.
// options.accumulate adds the product to the output's old contents (beta = 1, for gradient
// accumulation); otherwise the output is overwritten (its old contents, NaN included, are ignored).
// A zero K gives a zero product. Arguments are checked at entry: sizes >= 0, non-null buffers
// where a size is non-zero, the output overlapping no input; a violation aborts with a message.
//
// Backends and threads. FP32 and BF16 run on the CPU BLAS compiled in (GemmBackendName()):
// oneDNN's matmul (libdnnl-dev; AVX-512 BF16 kernels) or, where oneDNN is missing, OpenBLAS's
// sgemm (BF16 decoded to FP32 first). Both use ctx.pool's thread count (1 without a pool) through
// their own threads (OpenMP for Debian's oneDNN). Their results are repeatable for a given shape,
// thread count, backend and machine, but may change in the last bits with the thread count (the
// libraries split reductions differently): acceptable for GEMMs, unlike routing or quantisation.
// Debian's oneDNN runs on OpenMP (libgomp), whose threads spin while they wait: where other busy
// processes share the cores, its multi-threaded calls can collapse (measured on the 2-core dev
// machine: a 2-thread BF16 GEMM at 1-30 GFLOP/s instead of 350-700). Start such processes with
// OMP_WAIT_POLICY=passive (libgomp reads it once, when it loads) or pass a 1-thread context.
// OpenBLAS only: it picks its kernels once, in its load-time constructor, from OPENBLAS_CORETYPE
// or its own detection, so a setting must be in the environment before the process starts
// (setenv() in main() is too late when OpenBLAS is linked in). On AMD Zen 5, Debian's 0.3.21
// detects Cooperlake (SGEMM as fast as SkylakeX); OPENBLAS_CORETYPE=Haswell, which this dev
// machine's environment sets, halves its speed: unset it or set SkylakeX.
//
// The FP8 GEMMs run on this library's own kernels (AVX-512 BF16 where the CPU has it and
// ctx.use_simd, else a portable path with the same bits), and their results depend on nothing but
// the inputs: not on ctx's threads or use_simd, nor on the CPU (vdpbf16ps follows Intel's
// definition; checked on AMD Zen 5 too). Their exact arithmetic, for each output (m, n):
//   C = 0 (or the old output with accumulate); then for each K block kb = 0, 1, ... in order
//   (128 elements of K; the last block is zero-padded when K is not a multiple of 128):
//     P = +0; for pairs p = 0..63 in order:  P = P + a[2p+1]·b[2p+1];  P = P + a[2p]·b[2p]
//         (a, b: the decoded E4M3 values of the block's elements k = 128kb + 2p (+1) of the row
//         of A and of B that meet at (m, n), zero past the end of K; every product is exact in
//         FP32, every sum rounds to nearest even in FP32 — the order of AVX-512 vdpbf16ps)
//     C = fma(P, s_a · s_b, C)      (s_a · s_b rounded to FP32, then one fused multiply-add)
//   where s_a is A's scale of (m, kb) and s_b B's scale of (kb, n), as each function says.
//   (vdpbf16ps flushes subnormals, but P never is one: every product is a multiple of 2^-18.)
// This is spec §5.2's C = Σ_kb (Σ_k q·Q) · s · S with FP32 accumulation inside each 128-block and
// FP32 promotion across blocks (§5.3, DeepGEMM's two-level accumulation), fixed to one order.
// Memory: the FP8 GEMMs decode their operands to BF16 in a scratch buffer of the calling thread
// (2 bytes per element of the row operand, and of the other one when several row tiles share it,
// i.e. for larger M), kept between calls and grown to the largest size seen. ctx.use_simd
// matters to the FP8 GEMMs only. No call may be made from inside a ParallelFor body of ctx.pool
// (ThreadPool forbids nesting).
#ifndef DSV3_KERNELS_CPU_GEMM_H_
#define DSV3_KERNELS_CPU_GEMM_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

struct GemmOptions {
  // false: out = product. true: out += product (beta = 1).
  bool accumulate = false;
};

// "onednn" or "openblas": the BLAS the FP32 and BF16 GEMMs run on.
const char* GemmBackendName();

// ---- FP32 -------------------------------------------------------------------------------------

// Fprop: y = x · w^T.
//   x: [m, k]   w: [n, k]   y: [m, n]
void GemmFpropFp32(const CpuContext& ctx, const GemmOptions& options, const float* x,
                   const float* w, int64_t m, int64_t n, int64_t k, float* y);

// Dgrad: dx = dy · w.
//   dy: [m, n]   w: [n, k]   dx: [m, k]
void GemmDgradFp32(const CpuContext& ctx, const GemmOptions& options, const float* dy,
                   const float* w, int64_t m, int64_t n, int64_t k, float* dx);

// Wgrad: dw = dy^T · x (a sum over the m rows).
//   dy: [m, n]   x: [m, k]   dw: [n, k]
void GemmWgradFp32(const CpuContext& ctx, const GemmOptions& options, const float* dy,
                   const float* x, int64_t m, int64_t n, int64_t k, float* dw);

// ---- BF16 operands, FP32 products, sums and output ----------------------------------------------

// Fprop: y = x · w^T.     x: [m, k] BF16   w: [n, k] BF16   y: [m, n] FP32
void GemmFpropBf16(const CpuContext& ctx, const GemmOptions& options, const std::uint16_t* x,
                   const std::uint16_t* w, int64_t m, int64_t n, int64_t k, float* y);

// Dgrad: dx = dy · w.     dy: [m, n] BF16   w: [n, k] BF16   dx: [m, k] FP32
void GemmDgradBf16(const CpuContext& ctx, const GemmOptions& options, const std::uint16_t* dy,
                   const std::uint16_t* w, int64_t m, int64_t n, int64_t k, float* dx);

// Wgrad: dw = dy^T · x.   dy: [m, n] BF16   x: [m, k] BF16   dw: [n, k] FP32
void GemmWgradBf16(const CpuContext& ctx, const GemmOptions& options, const std::uint16_t* dy,
                   const std::uint16_t* x, int64_t m, int64_t n, int64_t k, float* dw);

// ---- Block-scaled FP8 (E4M3 codes and FP32 scales from quantize.h)
// ------------------------------- Scale tensors are row-major; NumTiles(d) = ceil(d / 128)
// (kernels/fp8_types.h).

// Fprop: y = x · w^T, x from Quantize1x128, w from Quantize128x128. K blocks run along k.
//   x_q: [m, k] codes, x_scales: [m, NumTiles(k)]                 s_a = x_scales[m, kb]
//   w_q: [n, k] codes, w_scales: [NumTiles(n), NumTiles(k)]       s_b = w_scales[n / 128, kb]
//   y: [m, n]
void GemmFpropFp8(const CpuContext& ctx, const GemmOptions& options, const std::uint8_t* x_q,
                  const float* x_scales, const std::uint8_t* w_q, const float* w_scales, int64_t m,
                  int64_t n, int64_t k, float* y);

// Dgrad: dx = dy · w, dy from Quantize1x128 (tiles along n, the contraction), w as for Fprop (its
// 128x128 blocks serve transposed; no re-quantisation). K blocks run along n.
//   dy_q: [m, n] codes, dy_scales: [m, NumTiles(n)]               s_a = dy_scales[m, kb]
//   w_q: [n, k] codes, w_scales: [NumTiles(n), NumTiles(k)]       s_b = w_scales[kb, k / 128]
//   dx: [m, k]
void GemmDgradFp8(const CpuContext& ctx, const GemmOptions& options, const std::uint8_t* dy_q,
                  const float* dy_scales, const std::uint8_t* w_q, const float* w_scales, int64_t m,
                  int64_t n, int64_t k, float* dx);

// Wgrad: dw = dy^T · x, both operands transposed and tiled 128x1 along the tokens m (the
// contraction), as Quantize128x1Transposed / Requantize128x1Transposed write them. K blocks run
// along m.
//   dy_t_q: [n, m] codes, dy_t_scales: [n, NumTiles(m)]           s_a = dy_t_scales[n, kb]
//   x_t_q:  [k, m] codes, x_t_scales:  [k, NumTiles(m)]           s_b = x_t_scales[k, kb]
//   dw: [n, k]
void GemmWgradFp8(const CpuContext& ctx, const GemmOptions& options, const std::uint8_t* dy_t_q,
                  const float* dy_t_scales, const std::uint8_t* x_t_q, const float* x_t_scales,
                  int64_t m, int64_t n, int64_t k, float* dw);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_GEMM_H_
