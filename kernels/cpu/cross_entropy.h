// Fused softmax cross-entropy on the CPU (spec §11.1, §11.2): the mean loss over a given count and,
// in the same pass, dlogits = (softmax - onehot) * grad_scale / count, numerically stable
// (max-shifted log-sum-exp). Not here: the output head GEMM, the MTP loss weighting (the caller
// passes grad_scale = lambda), or label smoothing.
// The CUDA twin (later) takes a CudaContext and the same arguments.
#ifndef DSV3_KERNELS_CPU_CROSS_ENTROPY_H_
#define DSV3_KERNELS_CPU_CROSS_ENTROPY_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

struct CrossEntropyOptions {
  // Divisor of the mean (e.g. B*T for the main loss, B*(T-1) for MTP). 0 means the number of
  // targets that are not ignore_index (PyTorch's reduction="mean"); if that is 0 too, the loss is 0
  // and dlogits all zero.
  int64_t count = 0;
  // dlogits carry grad_scale / count (the loss's weight in the total, e.g. 1 or lambda).
  double grad_scale = 1.0;
  // Targets equal to this contribute no loss and a zero gradient row (PyTorch's default -100).
  int32_t ignore_index = -100;
};

// Per token t with target y = targets[t] (m = max of the row in FP32; exp in FP32):
//   lse_t = m + log(sum_j exp(x_j - m))           (the sum accumulated in double)
//   loss_t = lse_t - x_y
//   dlogits[t, j] = (exp(x_j - m) / sum - [j == y]) * (grad_scale / count)    (FP32)
// Returns sum_t loss_t / count, summed in token order in double.
// exp: libm's expf, or, with ctx.use_simd on a CPU with AVX-512 (F, DQ), the vector exp of
// avx512_exp.h (within 2 ulp) with the row sum kept in 16 double lane partials added in lane order;
// the two paths agree to rounding, not bit for bit. Either is thread-count invariant.
//   logits:  [tokens, vocab] row-major FP32
//   targets: [tokens] int32, each in [0, vocab) or == ignore_index (else abort)
//   dlogits: [tokens, vocab] row-major, written; nullptr for the loss only; may be logits itself
//            (the gradient replaces the logits in place), must not overlap it otherwise
// Aborts on vocab < 1, tokens < 0, count < 0, null or partially overlapping buffers.
// Thread-count invariant.
double CrossEntropyForwardBackward(const CpuContext& ctx, const float* logits,
                                   const int32_t* targets, int64_t tokens, int64_t vocab,
                                   const CrossEntropyOptions& options, float* dlogits);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_CROSS_ENTROPY_H_
