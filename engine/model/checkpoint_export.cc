// Committed checkpoint -> Hugging Face model directory (checkpoint_export.h): the union of the
// ranks' model shards, checked tensor by tensor. No optimizer state, no resharding.
#include "engine/model/checkpoint_export.h"

#include <cstring>
#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "engine/train/checkpoint_reader.h"
#include "engine/train/str_cat.h"

namespace dsv3::model {
namespace {

using train::DType;
using train::StrCat;

absl::Status DataLoss(const std::string& dir, const std::string& what) {
  return absl::DataLossError(StrCat("checkpoint ", dir, ": ", what));
}

}  // namespace

absl::StatusOr<CheckpointModel> LoadCheckpointModel(const std::string& checkpoint_dir) {
  ASSIGN_OR_RETURN(const train::CheckpointReader reader,
                   train::CheckpointReader::Open(checkpoint_dir));
  const train::Manifest& manifest = reader.manifest();
  CheckpointModel out{manifest.step, manifest.world_size, manifest.model_config,
                      ParameterSet(ParameterLayout::Build(manifest.model_config))};
  const std::vector<ParamInfo>& params = out.params.layout.params();
  std::vector<int> holder(params.size(), -1);  // the first rank that held tensor i
  std::vector<float> scratch;
  int64_t unexpected = 0;
  std::string first_unexpected;
  for (int rank = 0; rank < manifest.world_size; ++rank) {
    ASSIGN_OR_RETURN(const train::SafetensorsReader model, reader.OpenModel(rank));
    for (const train::TensorInfo& t : model.tensors()) {
      const ParamInfo* p = out.params.layout.Find(t.name);
      if (p == nullptr) {
        if (unexpected++ == 0) first_unexpected = StrCat(t.name, "\" (rank ", rank, ")");
        continue;
      }
      if (t.dtype != DType::kF32 || t.shape != p->shape) {
        return DataLoss(reader.dir(),
                        StrCat("rank ", rank, " holds tensor \"", t.name, "\" as ",
                               train::DTypeName(t.dtype), " ", train::ShapeToString(t.shape),
                               "; the model config needs F32 ", train::ShapeToString(p->shape)));
      }
      const size_t index = static_cast<size_t>(p - params.data());
      const size_t bytes = static_cast<size_t>(p->size) * sizeof(float);
      float* dst = out.params.values.data() + p->offset;
      if (holder[index] < 0) {
        RETURN_IF_ERROR(model.ReadInto(t.name, DType::kF32, p->shape, dst, bytes));
        holder[index] = rank;
        continue;
      }
      // A replica: its bytes must equal the first holder's.
      scratch.resize(static_cast<size_t>(p->size));
      RETURN_IF_ERROR(model.ReadInto(t.name, DType::kF32, p->shape, scratch.data(), bytes));
      if (std::memcmp(scratch.data(), dst, bytes) != 0) {
        int64_t first_diff = 0;
        while (std::memcmp(&scratch[first_diff], dst + first_diff, sizeof(float)) == 0) {
          ++first_diff;
        }
        return DataLoss(reader.dir(),
                        StrCat("tensor \"", t.name, "\" differs between rank ", holder[index],
                               " and rank ", rank, " (first at flat element ", first_diff, ": ",
                               dst[first_diff], " vs ", scratch[first_diff], ")"));
      }
    }
  }
  int64_t missing = 0;
  std::string first_missing;
  for (size_t i = 0; i < params.size(); ++i) {
    if (holder[i] < 0 && missing++ == 0) first_missing = params[i].name;
  }
  if (missing > 0 || unexpected > 0) {
    std::string message =
        "the ranks' model files do not hold exactly the layout of the manifest's "
        "model_config: ";
    if (missing > 0) {
      absl::StrAppend(&message, missing, " of ", params.size(),
                      " tensors are held by no rank, the first \"", first_missing, "\"");
    }
    if (unexpected > 0) {
      absl::StrAppend(&message, missing > 0 ? "; " : "", unexpected,
                      " tensors are not in the layout, the first \"", first_unexpected);
    }
    return DataLoss(reader.dir(), message);
  }
  return out;
}

}  // namespace dsv3::model
