// AdamW over the flat parameter set, its clipping, and its checkpoint state (optimizer.h).
#include "engine/train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/train/str_cat.h"
#include "kernels/cpu/adamw.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/grad_norm.h"

namespace dsv3::train {
namespace {

constexpr char kExpAvgSuffix[] = ".exp_avg";
constexpr char kExpAvgSqSuffix[] = ".exp_avg_sq";

DType StorageDType(MomentDType m) { return m == MomentDType::kBf16 ? DType::kBF16 : DType::kF32; }

std::string Metadata(const SafetensorsReader& reader, const std::string& key) {
  auto it = reader.metadata().find(key);
  return it == reader.metadata().end() ? std::string() : it->second;
}

}  // namespace

std::string MomentDTypeName(MomentDType dtype) {
  return std::string(DTypeName(StorageDType(dtype)));
}

absl::StatusOr<AdamW> AdamW::Create(const model::ParameterLayout& layout,
                                    const AdamWConfig& config) {
  auto in_unit = [](double b) { return std::isfinite(b) && b >= 0 && b < 1; };
  auto non_negative = [](double x) { return std::isfinite(x) && x >= 0; };
  if (!in_unit(config.beta1) || !in_unit(config.beta2)) {
    return absl::InvalidArgumentError(
        StrCat("AdamW beta1=", config.beta1, " and beta2=", config.beta2, " must be in [0, 1)"));
  }
  if (!non_negative(config.eps) || !non_negative(config.weight_decay) ||
      !non_negative(config.grad_clip)) {
    return absl::InvalidArgumentError(
        StrCat("AdamW eps=", config.eps, ", weight_decay=", config.weight_decay,
               " and grad_clip=", config.grad_clip, " must be finite and >= 0"));
  }
  return AdamW(layout, config);
}

AdamW::AdamW(const model::ParameterLayout& layout, const AdamWConfig& config)
    : config_(config), total_size_(layout.total_size()) {
  std::vector<Segment> pieces;
  for (const model::ParamInfo& p : layout.params()) {
    if (!p.trainable) continue;
    params_.push_back(p);
    pieces.push_back({p.offset, p.size, p.weight_decay});
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
  const size_t n = static_cast<size_t>(total_size_);
  if (config_.moments == MomentDType::kBf16) {
    m16_.assign(n, 0);
    v16_.assign(n, 0);
  } else {
    m32_.assign(n, 0.0f);
    v32_.assign(n, 0.0f);
  }
}

double AdamW::GradNorm(const kernels::CpuContext& ctx, const model::ParameterSet& params) const {
  std::vector<const float*> buffers;
  std::vector<int64_t> sizes;
  buffers.reserve(segments_.size());
  sizes.reserve(segments_.size());
  for (const Segment& s : segments_) {
    buffers.push_back(params.grads.data() + s.offset);
    sizes.push_back(s.size);
  }
  return std::sqrt(kernels::SumOfSquares(ctx, buffers.data(), sizes.data(),
                                         static_cast<int64_t>(buffers.size())));
}

absl::StatusOr<OptimizerStepResult> AdamW::Step(const kernels::CpuContext& ctx, double lr,
                                                model::ParameterSet* params) {
  if (params == nullptr || params->layout.total_size() != total_size_ ||
      static_cast<int64_t>(params->values.size()) != total_size_ ||
      static_cast<int64_t>(params->grads.size()) != total_size_) {
    std::cerr << "AdamW::Step: the parameter set does not have the optimizer's layout ("
              << total_size_ << " elements)\n";
    std::abort();
  }
  OptimizerStepResult result;
  result.grad_norm = GradNorm(ctx, *params);
  if (!std::isfinite(result.grad_norm)) {
    return absl::FailedPreconditionError(StrCat("the gradient norm of optimizer step ", step_ + 1,
                                                " is ", result.grad_norm,
                                                " (training diverged); nothing was updated"));
  }
  result.grad_scale =
      config_.grad_clip > 0 ? kernels::ClipCoefficient(result.grad_norm, config_.grad_clip) : 1.0;
  result.step = step_ + 1;

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
    float* p = params->values.data() + s.offset;
    const float* g = params->grads.data() + s.offset;
    if (config_.moments == MomentDType::kBf16) {
      kernels::AdamWStepBf16Moments(ctx, o, p, g, m16_.data() + s.offset, v16_.data() + s.offset,
                                    s.size);
    } else {
      kernels::AdamWStep(ctx, o, p, g, m32_.data() + s.offset, v32_.data() + s.offset, s.size);
    }
  }
  step_ = result.step;
  return result;
}

absl::Status AdamW::AddTo(SafetensorsWriter* writer) const {
  const DType dtype = StorageDType(config_.moments);
  const size_t elem = DTypeSize(dtype);
  for (const model::ParamInfo& p : params_) {
    const void* m = config_.moments == MomentDType::kBf16
                        ? static_cast<const void*>(m16_.data() + p.offset)
                        : static_cast<const void*>(m32_.data() + p.offset);
    const void* v = config_.moments == MomentDType::kBf16
                        ? static_cast<const void*>(v16_.data() + p.offset)
                        : static_cast<const void*>(v32_.data() + p.offset);
    const size_t bytes = static_cast<size_t>(p.size) * elem;
    RETURN_IF_ERROR(writer->Add(p.name + kExpAvgSuffix, dtype, p.shape, m, bytes));
    RETURN_IF_ERROR(writer->Add(p.name + kExpAvgSqSuffix, dtype, p.shape, v, bytes));
  }
  writer->SetMetadata("format", kAdamWStateFormat);
  writer->SetMetadata("format_version", "1");
  writer->SetMetadata("step", StrCat(step_));
  writer->SetMetadata("moment_dtype", MomentDTypeName(config_.moments));
  writer->SetMetadata("beta1", StrCat(config_.beta1));
  writer->SetMetadata("beta2", StrCat(config_.beta2));
  writer->SetMetadata("eps", StrCat(config_.eps));
  return absl::OkStatus();
}

absl::Status AdamW::Load(const SafetensorsReader& reader) {
  const std::string& path = reader.path();
  auto data_loss = [&](const std::string& what) {
    return absl::DataLossError(StrCat("optimizer state ", path, ": ", what));
  };
  if (const std::string format = Metadata(reader, "format"); format != kAdamWStateFormat) {
    return data_loss(
        StrCat("metadata format is \"", format, "\", expected \"", kAdamWStateFormat, "\""));
  }
  if (const std::string version = Metadata(reader, "format_version"); version != "1") {
    return data_loss(StrCat("metadata format_version is \"", version, "\", expected \"1\""));
  }
  int64_t step = 0;
  if (const std::string s = Metadata(reader, "step"); !absl::SimpleAtoi(s, &step) || step < 0) {
    return data_loss(StrCat("metadata step is \"", s, "\", expected a count >= 0"));
  }
  const std::string expected_dtype = MomentDTypeName(config_.moments);
  if (const std::string d = Metadata(reader, "moment_dtype"); d != expected_dtype) {
    if (d == "BF16" || d == "F32") {
      return absl::FailedPreconditionError(StrCat(
          "optimizer state ", path, " holds ", d, " moments but this job keeps ", expected_dtype,
          " moments (BF16 for precision bf16/fp8, F32 for fp32): the precision changed"));
    }
    return data_loss(
        StrCat("metadata moment_dtype is \"", d, "\", expected \"", expected_dtype, "\""));
  }

  // Every tensor must be one of ours, and every one of ours must be there.
  std::set<std::string> expected;
  for (const model::ParamInfo& p : params_) {
    expected.insert(p.name + kExpAvgSuffix);
    expected.insert(p.name + kExpAvgSqSuffix);
  }
  for (const TensorInfo& t : reader.tensors()) {
    if (expected.count(t.name) == 0) {
      return data_loss(StrCat("unexpected tensor \"", t.name,
                              "\" (no trainable parameter of this model has that name)"));
    }
  }
  const DType dtype = StorageDType(config_.moments);
  const size_t elem = DTypeSize(dtype);
  std::vector<float> m32, v32;
  std::vector<uint16_t> m16, v16;
  if (config_.moments == MomentDType::kBf16) {
    m16.assign(static_cast<size_t>(total_size_), 0);
    v16.assign(static_cast<size_t>(total_size_), 0);
  } else {
    m32.assign(static_cast<size_t>(total_size_), 0.0f);
    v32.assign(static_cast<size_t>(total_size_), 0.0f);
  }
  for (const model::ParamInfo& p : params_) {
    for (int which = 0; which < 2; ++which) {
      const bool first = which == 0;
      const std::string name = p.name + (first ? kExpAvgSuffix : kExpAvgSqSuffix);
      if (!reader.Contains(name)) return data_loss(StrCat("no tensor \"", name, "\""));
      absl::StatusOr<const TensorInfo*> info = reader.Find(name);
      RETURN_IF_ERROR(info.status());
      if ((*info)->dtype != dtype || (*info)->shape != p.shape) {
        return data_loss(StrCat("tensor \"", name, "\" is ", DTypeName((*info)->dtype), " ",
                                ShapeToString((*info)->shape), ", expected ", DTypeName(dtype), " ",
                                ShapeToString(p.shape)));
      }
      void* dst = config_.moments == MomentDType::kBf16
                      ? static_cast<void*>((first ? m16 : v16).data() + p.offset)
                      : static_cast<void*>((first ? m32 : v32).data() + p.offset);
      RETURN_IF_ERROR(
          reader.ReadInto(name, dtype, p.shape, dst, static_cast<size_t>(p.size) * elem));
    }
  }
  m32_ = std::move(m32);
  v32_ = std::move(v32);
  m16_ = std::move(m16);
  v16_ = std::move(v16);
  step_ = step;
  return absl::OkStatus();
}

std::vector<float> AdamW::ExpAvg(const model::ParamInfo& info) const {
  std::vector<float> out(static_cast<size_t>(info.size));
  for (int64_t i = 0; i < info.size; ++i) {
    out[i] = config_.moments == MomentDType::kBf16 ? kernels::Bf16ToFloat(m16_[info.offset + i])
                                                   : m32_[info.offset + i];
  }
  return out;
}

std::vector<float> AdamW::ExpAvgSq(const model::ParamInfo& info) const {
  std::vector<float> out(static_cast<size_t>(info.size));
  for (int64_t i = 0; i < info.size; ++i) {
    out[i] = config_.moments == MomentDType::kBf16 ? kernels::Bf16ToFloat(v16_[info.offset + i])
                                                   : v32_[info.offset + i];
  }
  return out;
}

}  // namespace dsv3::train
