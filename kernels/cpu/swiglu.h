// SwiGLU activation on the CPU (spec §3.1): h = silu(gate) * up, from the output of the FUSED
// gate+up projection (one GEMM with W1 and W3 stacked, DeepGEMM's (2*I, d) shape), and its
// backward. FP32. Not here: the projections themselves (GEMMs) and any FP8 cast of h.
// A model holding separate HF gate_proj / up_proj weights stacks them [W1; W3] into one [2I, d]
// matrix, so the GEMM writes [gate | up] per row. The CUDA twin (later) has the same arguments.
#ifndef DSV3_KERNELS_CPU_SWIGLU_H_
#define DSV3_KERNELS_CPU_SWIGLU_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

// h[t, j] = silu(g) * u with g = gate_up[t, j], u = gate_up[t, inter + j],
// silu(g) = g * sigmoid(g), sigmoid(g) = 1 / (1 + exp(-g)) in FP32.
//   gate_up: [tokens, 2 * inter] row-major: columns [0, inter) gate (W1 x), [inter, 2 inter) up
//   h:       [tokens, inter] row-major, written; must not overlap gate_up
// Aborts on tokens < 0, inter < 1, null or overlapping buffers. Thread-count invariant.
void SwiGluForward(const CpuContext& ctx, const float* gate_up, int64_t tokens, int64_t inter,
                   float* h);

// Backward, FP32, with sig = sigmoid(g):
//   dgate_up[t, j]         = dh * u * sig * (1 + g * (1 - sig))       (d/dgate)
//   dgate_up[t, inter + j] = dh * silu(g)                             (d/dup)
//   gate_up:  [tokens, 2 * inter] row-major (the forward input)
//   dh:       [tokens, inter] row-major
//   dgate_up: [tokens, 2 * inter] row-major, OVERWRITTEN; may be gate_up itself (in place),
//             must not overlap dh
void SwiGluBackward(const CpuContext& ctx, const float* gate_up, const float* dh, int64_t tokens,
                    int64_t inter, float* dgate_up);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_SWIGLU_H_
