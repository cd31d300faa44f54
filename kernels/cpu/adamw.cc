// AdamW on the CPU: one element-wise kernel, templated on how the moments are stored.

#include "kernels/cpu/adamw.h"

#include <cmath>

#include "kernels/check.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/ops_common.h"

namespace dsv3::kernels {
namespace {

constexpr int64_t kGrain = 1 << 14;

struct Bf16Moment {
  using Storage = std::uint16_t;
  static float Load(Storage s) { return Bf16ToFloat(s); }
  static Storage Store(float x) { return FloatToBf16(x); }
};

struct F32Moment {
  using Storage = float;
  static float Load(Storage s) { return s; }
  static Storage Store(float x) { return x; }
};

template <typename Moment>
void Step(const CpuContext& ctx, const char* op, const AdamWOptions& o, float* param,
          const float* grad, typename Moment::Storage* m, typename Moment::Storage* v, int64_t n) {
  DSV3_KERNEL_CHECK(n >= 0 && o.step >= 1, "%s: n=%lld must be >= 0 and step=%lld >= 1", op,
                    static_cast<long long>(n), static_cast<long long>(o.step));
  DSV3_KERNEL_CHECK(o.lr >= 0.0 && o.beta1 >= 0.0 && o.beta1 < 1.0 && o.beta2 >= 0.0 &&
                        o.beta2 < 1.0 && o.eps >= 0.0,
                    "%s: lr=%g and eps=%g must be >= 0, beta1=%g and beta2=%g in [0, 1)", op, o.lr,
                    o.eps, o.beta1, o.beta2);
  if (n == 0) return;
  DSV3_KERNEL_CHECK(param != nullptr && grad != nullptr && m != nullptr && v != nullptr,
                    "%s: null param, grad, m or v", op);
  const int64_t pb = n * 4;
  const int64_t mb = n * static_cast<int64_t>(sizeof(typename Moment::Storage));
  DSV3_KERNEL_CHECK(
      !internal::Overlaps(param, pb, grad, pb) && !internal::Overlaps(param, pb, m, mb) &&
          !internal::Overlaps(param, pb, v, mb) && !internal::Overlaps(m, mb, v, mb) &&
          !internal::Overlaps(m, mb, grad, pb) && !internal::Overlaps(v, mb, grad, pb),
      "%s: param, grad, m and v must not overlap", op);

  const float grad_scale = static_cast<float>(o.grad_scale);
  const bool decay = o.apply_weight_decay && o.weight_decay != 0.0;
  const float decay_factor = static_cast<float>(1.0 - o.lr * o.weight_decay);
  const float beta1 = static_cast<float>(o.beta1);
  const float beta2 = static_cast<float>(o.beta2);
  const float one_minus_beta1 = static_cast<float>(1.0 - o.beta1);
  const float one_minus_beta2 = static_cast<float>(1.0 - o.beta2);
  const double bias_correction1 = 1.0 - std::pow(o.beta1, static_cast<double>(o.step));
  const double bias_correction2 = 1.0 - std::pow(o.beta2, static_cast<double>(o.step));
  const float step_size = static_cast<float>(o.lr / bias_correction1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float eps = static_cast<float>(o.eps);

  ParallelFor(ctx, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float g = grad[i] * grad_scale;
      float p = param[i];
      if (decay) p = p * decay_factor;
      const float mi = Moment::Load(m[i]) * beta1 + g * one_minus_beta1;
      const float vi = Moment::Load(v[i]) * beta2 + (g * g) * one_minus_beta2;
      const float denom = std::sqrt(vi) / bc2_sqrt + eps;
      p = p - step_size * (mi / denom);
      param[i] = p;
      m[i] = Moment::Store(mi);
      v[i] = Moment::Store(vi);
    }
  });
}

}  // namespace

void AdamWStepBf16Moments(const CpuContext& ctx, const AdamWOptions& options, float* param,
                          const float* grad, std::uint16_t* m, std::uint16_t* v, int64_t n) {
  Step<Bf16Moment>(ctx, "AdamWStepBf16Moments", options, param, grad, m, v, n);
}

void AdamWStep(const CpuContext& ctx, const AdamWOptions& options, float* param, const float* grad,
               float* m, float* v, int64_t n) {
  Step<F32Moment>(ctx, "AdamWStep", options, param, grad, m, v, n);
}

}  // namespace dsv3::kernels
