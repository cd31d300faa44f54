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

namespace dsv3::train {
namespace {

constexpr char kExpAvgSuffix[] = ".exp_avg";
constexpr char kExpAvgSqSuffix[] = ".exp_avg_sq";

std::string Metadata(const SafetensorsReader& reader, const std::string& key) {
  auto it = reader.metadata().find(key);
  return it == reader.metadata().end() ? std::string() : it->second;
}

}  // namespace

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
    : config_(config),
      total_size_(layout.total_size()),
      shard_(layout, config, 0, layout.total_size()) {
  for (const model::ParamInfo& p : layout.params()) {
    if (p.trainable) params_.push_back(p);
  }
}

double AdamW::GradNorm(const kernels::CpuContext& ctx, const model::ParameterSet& params) const {
  return std::sqrt(shard_.SumOfSquares(ctx, params.grads.data()));
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
  ASSIGN_OR_RETURN(const OptimizerStepResult result,
                   ClipStep(config_, GradNorm(ctx, *params), step_ + 1));
  shard_.Update(ctx, lr, result, params->values.data(), params->grads.data());
  step_ = result.step;
  return result;
}

absl::Status AdamW::AddTo(SafetensorsWriter* writer) const {
  const DType dtype = MomentStorageDType(config_.moments);
  const size_t elem = DTypeSize(dtype);
  for (const model::ParamInfo& p : params_) {
    const void* m = shard_.exp_avg_data(p.offset);
    const void* v = shard_.exp_avg_sq_data(p.offset);
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
  const DType dtype = MomentStorageDType(config_.moments);
  const size_t elem = DTypeSize(dtype);
  AdamWShard loaded = shard_.ZeroedCopy();
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
      void* dst = first ? loaded.mutable_exp_avg_data(p.offset)
                        : loaded.mutable_exp_avg_sq_data(p.offset);
      RETURN_IF_ERROR(
          reader.ReadInto(name, dtype, p.shape, dst, static_cast<size_t>(p.size) * elem));
    }
  }
  shard_ = std::move(loaded);
  step_ = step;
  return absl::OkStatus();
}

std::vector<float> AdamW::ExpAvg(const model::ParamInfo& info) const {
  return shard_.ExpAvg(info.offset, info.size);
}

std::vector<float> AdamW::ExpAvgSq(const model::ParamInfo& info) const {
  return shard_.ExpAvgSq(info.offset, info.size);
}

}  // namespace dsv3::train
