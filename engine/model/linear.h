// The three GEMMs of a bias-free Linear y = x W^T (Fprop, Dgrad, Wgrad) in the precision a layer
// runs at (spec §11.9): FP32, BF16 operands with FP32 accumulation, or block-scaled FP8 E4M3 with
// 1x128 activation tiles and 128x128 weight blocks (kernels/cpu/quantize.h, gemm.h), for a dense
// Linear and for the routed experts' grouped Linear. Stateless: the backward takes the forward's
// input again and re-derives its BF16 / FP8 form, which gives the same bits as caching it (the
// conversions are deterministic). Not here: layers, activation caching policy.
#ifndef DSV3_ENGINE_MODEL_LINEAR_H_
#define DSV3_ENGINE_MODEL_LINEAR_H_

#include <cstdint>

#include <functional>
#include <vector>

#include "kernels/cpu/context.h"
#include "kernels/fp8_types.h"

namespace dsv3::model {

enum class GemmMode { kFp32, kBf16, kFp8 };

// One weight and its gradient inside the model's flat buffers.
struct LinearRef {
  const float* w = nullptr;  // [n, k] row-major (n output features, k input features)
  float* dw = nullptr;       // [n, k] row-major, ACCUMULATED into by the backward
  int64_t n = 0;
  int64_t k = 0;
  GemmMode mode = GemmMode::kFp32;
};

// y = x W^T.   x: [m, k]   y: [m, n] (overwritten)
void LinearForward(const kernels::CpuContext& ctx, const LinearRef& lin, const float* x, int64_t m,
                   float* y);

// dW += dy^T x, and (when dx is not null) dx = dy W (or dx += dy W with accumulate_dx).
//   x: [m, k] (the forward input)   dy: [m, n]   dx: [m, k]
// FP8: dy is quantised in 1x128 tiles for Dgrad and in 128x1 tiles for Wgrad, x re-quantised from
// its 1x128 codes as 128x1 tiles (spec §5.4; docs/reference-model.md).
void LinearBackward(const kernels::CpuContext& ctx, const LinearRef& lin, const float* x,
                    const float* dy, int64_t m, float* dx, bool accumulate_dx);

// The routed experts' Linear over tokens sorted by expert (kernels/cpu/grouped_gemm.h layout):
// expert e owns rows [offset(e), offset(e) + rows_per_expert[e]).
struct GroupedLinearRef {
  const float* w = nullptr;  // [experts, n, k] row-major
  float* dw = nullptr;       // [experts, n, k], ACCUMULATED into (experts without rows untouched)
  int64_t experts = 0;
  int64_t n = 0;
  int64_t k = 0;
  GemmMode mode = GemmMode::kFp32;
  // FP8 only: the scale format of x's 1x128 tiles (Fprop, and the Wgrad's re-quantisation source)
  // and of dy's 1x128 tiles (Dgrad). The routed experts use power-of-two (UE8M0) scales where
  // their rows cross the expert-parallel all-to-all (spec §5.7; LocalExperts).
  kernels::ScaleFormat x_scales = kernels::ScaleFormat::kFp32;
  kernels::ScaleFormat dy_scales = kernels::ScaleFormat::kFp32;
};

// x <- its FP8 value: quantised in 1x128 tiles with `format` scales and dequantised, in place.
// With kUe8m0, doing it twice gives the first result again, bit for bit (a tile's largest code is
// at least 224, so the second scale is the first or half of it and every code is exact), and an
// FP8 GEMM quantising the result with UE8M0 scales sees exactly the first pass's values.
//   x: [rows, cols] row-major
void RoundThroughE4M3(const kernels::CpuContext& ctx, kernels::ScaleFormat format, float* x,
                      int64_t rows, int64_t cols);

//   x: [rows, k]   rows_per_expert: [experts]   y: [rows, n] (overwritten); rows = sum of counts
void GroupedLinearForward(const kernels::CpuContext& ctx, const GroupedLinearRef& lin,
                          const float* x, const int64_t* rows_per_expert, int64_t rows, float* y);

//   x: [rows, k] (forward input)   dy: [rows, n]   dx: [rows, k] (overwritten; nullable)
void GroupedLinearBackward(const kernels::CpuContext& ctx, const GroupedLinearRef& lin,
                           const float* x, const float* dy, const int64_t* rows_per_expert,
                           int64_t rows, float* dx);

// Zero-bubble weight-gradient deferral (the "W" of spec §6.1): while a ScopedWeightGradDeferral is
// alive on a thread, LinearBackward and GroupedLinearBackward called on that thread compute dx at
// once and queue their weight-gradient GEMM, with copies of x and dy, instead of running it. Run
// later computes exactly what the immediate call would have added to dW. Only the GEMM weight
// gradients are deferred; the cheap ones (norm gains, router, embedding) are not Linears.
class DeferredWeightGrads {
 public:
  // Runs the queued GEMMs in the order they were queued, then empties the queue.
  void Run(const kernels::CpuContext& ctx);
  bool empty() const { return tasks_.empty(); }
  size_t size() const { return tasks_.size(); }
  void Add(std::function<void(const kernels::CpuContext&)> task) {
    tasks_.push_back(std::move(task));
  }

 private:
  std::vector<std::function<void(const kernels::CpuContext&)>> tasks_;
};

class ScopedWeightGradDeferral {
 public:
  // Defers into `sink` (not owned; outlives this object) on the calling thread. Nests: the
  // previous sink is restored on destruction.
  explicit ScopedWeightGradDeferral(DeferredWeightGrads* sink);
  ~ScopedWeightGradDeferral();
  ScopedWeightGradDeferral(const ScopedWeightGradDeferral&) = delete;
  ScopedWeightGradDeferral& operator=(const ScopedWeightGradDeferral&) = delete;

 private:
  DeferredWeightGrads* previous_;
};

}  // namespace dsv3::model

#endif  // DSV3_ENGINE_MODEL_LINEAR_H_
