// Small pieces shared by the model's layers: the shape of a batch inside the model, the RoPE
// inputs of one sequence length, references to RMSNorm gains, and vector helpers. Internal to
// engine/model.
#ifndef DSV3_ENGINE_MODEL_LAYER_COMMON_H_
#define DSV3_ENGINE_MODEL_LAYER_COMMON_H_

#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cpu/context.h"
#include "kernels/cpu/rope.h"

namespace dsv3::model {

// rows sequences of seq tokens; token (r, t) is row r * seq + t of every [tokens, ...] tensor.
struct SeqShape {
  int64_t rows = 0;
  int64_t seq = 0;
  int64_t tokens() const { return rows * seq; }
};

// RoPE for one sequence length: the table for positions [0, seq) and each token's position.
struct RopeInputs {
  kernels::RopeTable table;
  const int32_t* positions = nullptr;  // [tokens]: t of token (r, t)
  float softmax_scale = 0;
};

struct NormRef {
  const float* g = nullptr;  // [dim]
  float* dg = nullptr;       // [dim], accumulated into
  int64_t dim = 0;
  float eps = 1e-6f;
};

// An allocator whose value-less construct() default-initialises: a FloatBuffer(n) leaves its
// floats uninitialised, so activation buffers that a kernel overwrites are not zeroed first (that
// memset was ~15% of a step).
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  using std::allocator<T>::allocator;
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using FloatBuffer = std::vector<float, DefaultInitAllocator<float>>;

// n uninitialised floats (for outputs a kernel overwrites completely).
inline FloatBuffer Floats(int64_t n) { return FloatBuffer(static_cast<size_t>(n)); }
// n zeros.
inline FloatBuffer Zeros(int64_t n) { return FloatBuffer(static_cast<size_t>(n), 0.0f); }
// Releases a buffer's memory.
inline void FreeBuffer(FloatBuffer* v) { FloatBuffer().swap(*v); }

// y += x, element-wise over n floats.
inline void AddInto(const kernels::CpuContext& ctx, const float* x, int64_t n, float* y) {
  kernels::ParallelFor(ctx, n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] += x[i];
  });
}

}  // namespace dsv3::model

#endif  // DSV3_ENGINE_MODEL_LAYER_COMMON_H_
