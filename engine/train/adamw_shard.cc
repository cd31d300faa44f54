// The AdamW core over a range of the flat parameters (adamw_shard.h).
#include "engine/train/adamw_shard.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "engine/train/str_cat.h"
#include "kernels/cpu/adamw.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/grad_norm.h"

namespace dsv3::train {

DType MomentStorageDType(MomentDType m) {
  return m == MomentDType::kBf16 ? DType::kBF16 : DType::kF32;
}

std::string MomentDTypeName(MomentDType dtype) {
  return std::string(DTypeName(MomentStorageDType(dtype)));
}

absl::StatusOr<OptimizerStepResult> ClipStep(const AdamWConfig& config, double grad_norm,
                                             int64_t step) {
  if (!std::isfinite(grad_norm)) {
    return absl::FailedPreconditionError(StrCat("the gradient norm of optimizer step ", step,
                                                " is ", grad_norm,
                                                " (training diverged); nothing was updated"));
  }
  OptimizerStepResult result;
  result.step = step;
  result.grad_norm = grad_norm;
  result.grad_scale =
      config.grad_clip > 0 ? kernels::ClipCoefficient(grad_norm, config.grad_clip) : 1.0;
  return result;
}

AdamWShard::AdamWShard(const model::ParameterLayout& layout, const AdamWConfig& config,
                       int64_t begin, int64_t end)
    : config_(config), begin_(begin), end_(end) {
  // Trainable tensors intersected with the range, in offset order, adjacent runs merged.
  std::vector<Segment> pieces;
  for (const model::ParamInfo& p : layout.params()) {
    if (!p.trainable) continue;
    const int64_t lo = std::max(begin_, p.offset);
    const int64_t hi = std::min(end_, p.offset + p.size);
    if (lo < hi) pieces.push_back({lo - begin_, hi - lo, p.weight_decay});
  }
  std::sort(pieces.begin(), pieces.end(),
            [](const Segment& a, const Segment& b) { return a.offset < b.offset; });
  for (const Segment& s : pieces) {
    if (!segments_.empty() && segments_.back().offset + segments_.back().size == s.offset &&
        segments_.back().weight_decay == s.weight_decay) {
      segments_.back().size += s.size;
    } else {
      segments_.push_back(s);
    }
  }
  const size_t n = static_cast<size_t>(end_ - begin_);
  if (config_.moments == MomentDType::kBf16) {
    m16_.assign(n, 0);
    v16_.assign(n, 0);
  } else {
    m32_.assign(n, 0.0f);
    v32_.assign(n, 0.0f);
  }
}

double AdamWShard::SumOfSquares(const kernels::CpuContext& ctx, const float* grads) const {
  std::vector<const float*> buffers;
  std::vector<int64_t> sizes;
  for (const Segment& s : segments_) {
    buffers.push_back(grads + s.offset);
    sizes.push_back(s.size);
  }
  return kernels::SumOfSquares(ctx, buffers.data(), sizes.data(),
                               static_cast<int64_t>(buffers.size()));
}

void AdamWShard::Update(const kernels::CpuContext& ctx, double lr,
                        const OptimizerStepResult& result, float* values, const float* grads) {
  kernels::AdamWOptions o;
  o.lr = lr;
  o.beta1 = config_.beta1;
  o.beta2 = config_.beta2;
  o.eps = config_.eps;
  o.weight_decay = config_.weight_decay;
  o.step = result.step;
  o.grad_scale = result.grad_scale;
  for (const Segment& s : segments_) {
    o.apply_weight_decay = s.weight_decay;
    float* p = values + s.offset;
    const float* g = grads + s.offset;
    if (config_.moments == MomentDType::kBf16) {
      kernels::AdamWStepBf16Moments(ctx, o, p, g, m16_.data() + s.offset, v16_.data() + s.offset,
                                    s.size);
    } else {
      kernels::AdamWStep(ctx, o, p, g, m32_.data() + s.offset, v32_.data() + s.offset, s.size);
    }
  }
}

const void* AdamWShard::exp_avg_data(int64_t offset) const {
  return config_.moments == MomentDType::kBf16 ? static_cast<const void*>(m16_.data() + offset)
                                               : static_cast<const void*>(m32_.data() + offset);
}
const void* AdamWShard::exp_avg_sq_data(int64_t offset) const {
  return config_.moments == MomentDType::kBf16 ? static_cast<const void*>(v16_.data() + offset)
                                               : static_cast<const void*>(v32_.data() + offset);
}
void* AdamWShard::mutable_exp_avg_data(int64_t offset) {
  return const_cast<void*>(exp_avg_data(offset));
}
void* AdamWShard::mutable_exp_avg_sq_data(int64_t offset) {
  return const_cast<void*>(exp_avg_sq_data(offset));
}

namespace {

std::vector<float> Decode(MomentDType dtype, const std::vector<float>& f32,
                          const std::vector<uint16_t>& bf16, int64_t offset, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    out[i] = dtype == MomentDType::kBf16 ? kernels::Bf16ToFloat(bf16[offset + i]) : f32[offset + i];
  }
  return out;
}

}  // namespace

std::vector<float> AdamWShard::ExpAvg(int64_t offset, int64_t count) const {
  return Decode(config_.moments, m32_, m16_, offset, count);
}
std::vector<float> AdamWShard::ExpAvgSq(int64_t offset, int64_t count) const {
  return Decode(config_.moments, v32_, v16_, offset, count);
}

AdamWShard AdamWShard::ZeroedCopy() const {
  AdamWShard copy = *this;
  std::fill(copy.m32_.begin(), copy.m32_.end(), 0.0f);
  std::fill(copy.v32_.begin(), copy.v32_.end(), 0.0f);
  std::fill(copy.m16_.begin(), copy.m16_.end(), 0);
  std::fill(copy.v16_.begin(), copy.v16_.end(), 0);
  return copy;
}

}  // namespace dsv3::train
