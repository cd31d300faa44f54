// One AdamW step on the CPU (spec §5.6, §8.2, §11.10): FP32 master weights, decoupled weight decay
// applied only where the caller says so (matrices), bias correction, and the first and second
// moments stored either in BF16 (the V3 recipe; round to nearest even) or in FP32. Element-wise,
// so bit-identical for any thread count. Not here: gradient clipping's norm (grad_norm.h), the LR
// schedule, ZeRO sharding (the caller passes its shard). The CUDA twin takes a CudaContext.
#ifndef DSV3_KERNELS_CPU_ADAMW_H_
#define DSV3_KERNELS_CPU_ADAMW_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

// Hyper-parameters of one step. Scalars are double like torch.optim's Python floats; the derived
// element-wise factors are rounded once to FP32.
struct AdamWOptions {
  double lr = 0.0;  // this step's learning rate (after warm-up / decay)
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;        // used only when apply_weight_decay
  bool apply_weight_decay = false;  // true for matrices; false for norms, biases, the router bias
  int64_t step = 0;                 // 1-based index of this step (bias correction), >= 1
  double grad_scale = 1.0;  // the gradient is multiplied by this first (the clip coefficient)
};

// For each element, in FP32 and in the order of torch.optim.AdamW (single-tensor path):
//   g  = grad * grad_scale
//   p  = p * (1 - lr * weight_decay)                      (only when apply_weight_decay)
//   m  = m * beta1 + g * (1 - beta1)
//   v  = v * beta2 + (g * g) * (1 - beta2)
//   p  = p - (lr / (1 - beta1^step)) * (m / (sqrt(v) / sqrt(1 - beta2^step) + eps))
// The update uses the FP32 m and v of this step; only their storage is rounded to BF16 (RNE,
// FloatToBf16), so the next step reads the rounded values.
//   param: [n] FP32 master weights, updated in place
//   grad:  [n] FP32
//   m, v:  [n] BF16 bits (uint16), updated in place; zero-initialised before step 1
// Aborts on n < 0, step < 1, lr < 0, betas outside [0, 1), eps < 0, null or overlapping buffers.
void AdamWStepBf16Moments(const CpuContext& ctx, const AdamWOptions& options, float* param,
                          const float* grad, std::uint16_t* m, std::uint16_t* v, int64_t n);

// The same step with FP32 moments (the fp32 precision mode). m, v: [n] FP32, updated in place.
void AdamWStep(const CpuContext& ctx, const AdamWOptions& options, float* param, const float* grad,
               float* m, float* v, int64_t n);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_ADAMW_H_
