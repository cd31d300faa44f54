// SwiGLU forward and backward on the CPU: element-wise, rows in parallel.

#include "kernels/cpu/swiglu.h"

#include <cmath>

#include "kernels/check.h"
#include "kernels/cpu/ops_common.h"

namespace dsv3::kernels {
namespace {

void CheckShape(const char* op, int64_t tokens, int64_t inter) {
  DSV3_KERNEL_CHECK(tokens >= 0 && inter >= 1, "%s: tokens=%lld must be >= 0 and inter=%lld >= 1",
                    op, static_cast<long long>(tokens), static_cast<long long>(inter));
}

inline float Sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }

}  // namespace

void SwiGluForward(const CpuContext& ctx, const float* gate_up, int64_t tokens, int64_t inter,
                   float* h) {
  CheckShape("SwiGluForward", tokens, inter);
  if (tokens == 0) return;
  DSV3_KERNEL_CHECK(gate_up != nullptr && h != nullptr, "SwiGluForward: null gate_up or h");
  DSV3_KERNEL_CHECK(!internal::ViewsOverlap(gate_up, tokens * 2 * inter, h, tokens * inter),
                    "SwiGluForward: h overlaps gate_up");
  ParallelFor(ctx, tokens, internal::RowGrain(inter), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* g = gate_up + t * 2 * inter;
      const float* u = g + inter;
      float* ht = h + t * inter;
      for (int64_t j = 0; j < inter; ++j) ht[j] = g[j] * Sigmoid(g[j]) * u[j];
    }
  });
}

void SwiGluBackward(const CpuContext& ctx, const float* gate_up, const float* dh, int64_t tokens,
                    int64_t inter, float* dgate_up) {
  CheckShape("SwiGluBackward", tokens, inter);
  if (tokens == 0) return;
  DSV3_KERNEL_CHECK(gate_up != nullptr && dh != nullptr && dgate_up != nullptr,
                    "SwiGluBackward: null gate_up, dh or dgate_up");
  const int64_t n2 = tokens * 2 * inter;
  DSV3_KERNEL_CHECK(dgate_up == gate_up || !internal::ViewsOverlap(dgate_up, n2, gate_up, n2),
                    "SwiGluBackward: dgate_up overlaps gate_up without being it");
  DSV3_KERNEL_CHECK(!internal::ViewsOverlap(dgate_up, n2, dh, tokens * inter) &&
                        !internal::ViewsOverlap(gate_up, n2, dh, tokens * inter),
                    "SwiGluBackward: dh overlaps gate_up or dgate_up");
  ParallelFor(ctx, tokens, internal::RowGrain(inter), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* g = gate_up + t * 2 * inter;
      const float* u = g + inter;
      const float* d = dh + t * inter;
      float* dg = dgate_up + t * 2 * inter;
      float* du = dg + inter;
      for (int64_t j = 0; j < inter; ++j) {
        const float gj = g[j];
        const float uj = u[j];
        const float sig = Sigmoid(gj);
        const float silu = gj * sig;
        dg[j] = d[j] * uj * (sig * (1.0f + gj * (1.0f - sig)));
        du[j] = d[j] * silu;
      }
    }
  });
}

}  // namespace dsv3::kernels
