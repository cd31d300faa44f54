// ZeRO-1 AdamW over a data-parallel group (zero_optimizer.h).
#include "engine/train/zero_optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <utility>

#include "absl/strings/numbers.h"
#include "common/status_macros.h"
#include "engine/train/str_cat.h"

namespace dsv3::train {
namespace {

using parallel::DataType;

constexpr char kExpAvg[] = "exp_avg";
constexpr char kExpAvgSq[] = "exp_avg_sq";

std::string Metadata(const SafetensorsReader& reader, const std::string& key) {
  auto it = reader.metadata().find(key);
  return it == reader.metadata().end() ? std::string() : it->second;
}

}  // namespace

absl::Status WaitFor(std::unique_ptr<parallel::Work> work, const std::string& what) {
  absl::Status s = work->Wait(absl::InfiniteDuration());
  if (s.ok()) return s;
  return absl::Status(s.code(), StrCat(what, ": ", s.message()));
}

absl::StatusOr<std::unique_ptr<ZeroAdamW>> ZeroAdamW::Create(const model::ParameterLayout& layout,
                                                             const AdamWConfig& config,
                                                             parallel::Communicator* comm) {
  if (comm == nullptr) return absl::InvalidArgumentError("ZeroAdamW needs a communicator");
  // The same checks as the single-process optimizer.
  RETURN_IF_ERROR(AdamW::Create(layout, config).status());
  return std::unique_ptr<ZeroAdamW>(new ZeroAdamW(layout, config, comm));
}

namespace {

// [begin, end) of rank `rank`'s shard of `total` elements over `world` ranks (shards of
// ceil(total / world), the last ones short or empty).
int64_t ShardSize(int64_t total, int world) { return (total + world - 1) / world; }
int64_t ShardBegin(int64_t total, int world, int rank) {
  return std::min(total, rank * ShardSize(total, world));
}
int64_t ShardEnd(int64_t total, int world, int rank) {
  return std::min(total, ShardBegin(total, world, rank) + ShardSize(total, world));
}

}  // namespace

ZeroAdamW::ZeroAdamW(const model::ParameterLayout& layout, const AdamWConfig& config,
                     parallel::Communicator* comm)
    : config_(config),
      comm_(comm),
      total_size_(layout.total_size()),
      shard_size_(ShardSize(total_size_, comm->size())),
      begin_(ShardBegin(total_size_, comm->size(), comm->rank())),
      end_(ShardEnd(total_size_, comm->size(), comm->rank())),
      shard_(layout, config, begin_, end_) {
  padded_.assign(static_cast<size_t>(comm->size() * shard_size_), 0.0f);
  shard_grad_.assign(static_cast<size_t>(shard_size_), 0.0f);
  shard_values_.assign(static_cast<size_t>(shard_size_), 0.0f);
}

absl::StatusOr<OptimizerStepResult> ZeroAdamW::Step(const kernels::CpuContext& ctx, double lr,
                                                    model::ParameterSet* params) {
  if (params == nullptr || params->layout.total_size() != total_size_ ||
      static_cast<int64_t>(params->values.size()) != total_size_ ||
      static_cast<int64_t>(params->grads.size()) != total_size_) {
    std::cerr << "ZeroAdamW::Step: the parameter set does not have the optimizer's layout ("
              << total_size_ << " elements)\n";
    std::abort();
  }
  // 1. Reduce-scatter the padded flat gradient: shard_grad_ = sum over ranks of [r*S, (r+1)*S).
  std::copy(params->grads.begin(), params->grads.end(), padded_.begin());
  std::fill(padded_.begin() + total_size_, padded_.end(), 0.0f);
  RETURN_IF_ERROR(
      WaitFor(comm_->ReduceScatter(padded_.data(), shard_grad_.data(),
                                   static_cast<size_t>(shard_size_), DataType::kFloat32),
              StrCat("ZeRO-1 gradient reduce-scatter of step ", step_ + 1)));

  // 2. The global norm: this shard's trainable sum of squares, summed over the group.
  double sum_sq = shard_.SumOfSquares(ctx, shard_grad_.data());
  RETURN_IF_ERROR(WaitFor(comm_->AllReduce(&sum_sq, &sum_sq, 1, DataType::kFloat64),
                          StrCat("ZeRO-1 gradient-norm all-reduce of step ", step_ + 1)));
  ASSIGN_OR_RETURN(const OptimizerStepResult result,
                   ClipStep(config_, std::sqrt(sum_sq), step_ + 1));

  // 3. AdamW on the owned elements.
  shard_.Update(ctx, lr, result, params->values.data() + begin_, shard_grad_.data());
  step_ = result.step;

  // 4. All-gather the parameters (the owner's values of every element, non-trainable ones too:
  // those are the same on every rank).
  std::fill(shard_values_.begin(), shard_values_.end(), 0.0f);
  std::copy(params->values.begin() + begin_, params->values.begin() + end_, shard_values_.begin());
  RETURN_IF_ERROR(WaitFor(comm_->AllGather(shard_values_.data(), padded_.data(),
                                           static_cast<size_t>(shard_size_), DataType::kFloat32),
                          StrCat("ZeRO-1 parameter all-gather of step ", step_)));
  std::copy(padded_.begin(), padded_.begin() + total_size_, params->values.begin());
  return result;
}

absl::Status ZeroAdamW::AddTo(SafetensorsWriter* writer) const {
  const DType dtype = MomentStorageDType(config_.moments);
  const int64_t n = end_ - begin_;
  const size_t bytes = static_cast<size_t>(n) * DTypeSize(dtype);
  RETURN_IF_ERROR(writer->Add(kExpAvg, dtype, {n}, shard_.exp_avg_data(0), bytes));
  RETURN_IF_ERROR(writer->Add(kExpAvgSq, dtype, {n}, shard_.exp_avg_sq_data(0), bytes));
  writer->SetMetadata("format", kZeroAdamWStateFormat);
  writer->SetMetadata("format_version", "1");
  writer->SetMetadata("step", StrCat(step_));
  writer->SetMetadata("moment_dtype", MomentDTypeName(config_.moments));
  writer->SetMetadata("world_size", StrCat(comm_->size()));
  writer->SetMetadata("rank", StrCat(comm_->rank()));
  writer->SetMetadata("shard_begin", StrCat(begin_));
  writer->SetMetadata("shard_end", StrCat(end_));
  writer->SetMetadata("total_size", StrCat(total_size_));
  return absl::OkStatus();
}

absl::StatusOr<ZeroAdamW::ShardHeader> ZeroAdamW::ReadShardHeader(
    const SafetensorsReader& reader) const {
  const std::string& path = reader.path();
  auto data_loss = [&](const std::string& what) {
    return absl::DataLossError(StrCat("optimizer state ", path, ": ", what));
  };
  if (const std::string f = Metadata(reader, "format"); f != kZeroAdamWStateFormat) {
    return data_loss(
        StrCat("metadata format is \"", f, "\", expected \"", kZeroAdamWStateFormat, "\""));
  }
  if (const std::string v = Metadata(reader, "format_version"); v != "1") {
    return data_loss(StrCat("metadata format_version is \"", v, "\", expected \"1\""));
  }
  auto integer = [&](const char* key, int64_t* out) -> absl::Status {
    const std::string s = Metadata(reader, key);
    if (!absl::SimpleAtoi(s, out) || *out < 0) {
      return data_loss(StrCat("metadata ", key, " is \"", s, "\", expected a count >= 0"));
    }
    return absl::OkStatus();
  };
  ShardHeader h;
  RETURN_IF_ERROR(integer("step", &h.step));
  RETURN_IF_ERROR(integer("world_size", &h.world));
  RETURN_IF_ERROR(integer("rank", &h.rank));
  RETURN_IF_ERROR(integer("shard_begin", &h.begin));
  RETURN_IF_ERROR(integer("shard_end", &h.end));
  RETURN_IF_ERROR(integer("total_size", &h.total));
  if (h.end < h.begin || h.end > h.total) {
    return data_loss(StrCat("shard [", h.begin, ", ", h.end, ") is not within [0, ", h.total, ")"));
  }
  if (h.total != total_size_) {
    return absl::FailedPreconditionError(
        StrCat("optimizer state ", path, " holds elements of a model of ", h.total,
               " but this model has ", total_size_));
  }
  const std::string expected_dtype = MomentDTypeName(config_.moments);
  if (const std::string d = Metadata(reader, "moment_dtype"); d != expected_dtype) {
    return absl::FailedPreconditionError(StrCat("optimizer state ", path, " holds \"", d,
                                                "\" moments but this job keeps ", expected_dtype,
                                                " moments: the precision changed"));
  }
  const DType dtype = MomentStorageDType(config_.moments);
  const std::vector<int64_t> shape = {h.end - h.begin};
  for (const TensorInfo& t : reader.tensors()) {
    if (t.name != kExpAvg && t.name != kExpAvgSq) {
      return data_loss(StrCat("unexpected tensor \"", t.name, "\""));
    }
  }
  for (const char* name : {kExpAvg, kExpAvgSq}) {
    if (!reader.Contains(name)) return data_loss(StrCat("no tensor \"", name, "\""));
    ASSIGN_OR_RETURN(const TensorInfo* info, reader.Find(name));
    if (info->dtype != dtype || info->shape != shape) {
      return data_loss(StrCat("tensor \"", name, "\" is ", DTypeName(info->dtype), " ",
                              ShapeToString(info->shape), ", expected ", DTypeName(dtype), " ",
                              ShapeToString(shape)));
    }
  }
  return h;
}

absl::Status ZeroAdamW::Load(const SafetensorsReader& reader) {
  ASSIGN_OR_RETURN(const ShardHeader h, ReadShardHeader(reader));
  if (h.world != comm_->size() || h.rank != comm_->rank()) {
    return absl::FailedPreconditionError(
        StrCat("optimizer state ", reader.path(), " is the shard of rank ", h.rank, " of ", h.world,
               " data-parallel ranks but this is rank ", comm_->rank(), " of ", comm_->size(),
               " (use LoadResharded to load another world size's shards)"));
  }
  if (h.begin != begin_ || h.end != end_) {
    return absl::FailedPreconditionError(
        StrCat("optimizer state ", reader.path(), " holds elements [", h.begin, ", ", h.end,
               ") but this rank owns [", begin_, ", ", end_, ")"));
  }
  std::vector<const SafetensorsReader*> one = {&reader};
  return LoadResharded(one);
}

absl::Status ZeroAdamW::LoadResharded(const std::vector<const SafetensorsReader*>& shards) {
  const DType dtype = MomentStorageDType(config_.moments);
  const size_t element = DTypeSize(dtype);
  AdamWShard loaded = shard_.ZeroedCopy();
  int64_t covered = 0;
  int64_t step = -1;
  for (const SafetensorsReader* reader : shards) {
    ASSIGN_OR_RETURN(const ShardHeader h, ReadShardHeader(*reader));
    if (step >= 0 && h.step != step) {
      return absl::DataLossError(StrCat("optimizer state ", reader->path(), " is at step ", h.step,
                                        " but the other shards are at step ", step));
    }
    step = h.step;
    const int64_t from = std::max(h.begin, begin_);
    const int64_t to = std::min(h.end, end_);
    if (from >= to) continue;
    const std::vector<int64_t> shape = {h.end - h.begin};
    std::vector<uint8_t> bytes(static_cast<size_t>(h.end - h.begin) * element);
    for (const char* name : {kExpAvg, kExpAvgSq}) {
      RETURN_IF_ERROR(reader->ReadInto(name, dtype, shape, bytes.data(), bytes.size()));
      const bool first = std::strcmp(name, kExpAvg) == 0;
      void* dst = first ? loaded.mutable_exp_avg_data(from - begin_)
                        : loaded.mutable_exp_avg_sq_data(from - begin_);
      std::memcpy(dst, bytes.data() + static_cast<size_t>(from - h.begin) * element,
                  static_cast<size_t>(to - from) * element);
    }
    covered += to - from;
  }
  if (covered != end_ - begin_) {
    return absl::DataLossError(StrCat("the optimizer shards given cover ", covered, " of the ",
                                      end_ - begin_, " elements [", begin_, ", ", end_,
                                      ") this rank owns"));
  }
  shard_ = std::move(loaded);
  step_ = std::max<int64_t>(step, 0);
  return absl::OkStatus();
}

std::vector<float> ZeroAdamW::ExpAvg() const { return shard_.ExpAvg(0, shard_.size()); }

std::vector<float> ZeroAdamW::ExpAvgSq() const { return shard_.ExpAvgSq(0, shard_.size()); }

}  // namespace dsv3::train
