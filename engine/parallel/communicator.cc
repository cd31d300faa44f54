// The communicator factory and the backend-independent helpers of communicator.h. The only place
// that knows which backends exist; the NCCL one is compiled in only with CUDA (DSV3_HAVE_NCCL).
#include "engine/parallel/communicator.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/parallel/gloo_communicator.h"
#include "engine/parallel/in_process_communicator.h"
#ifdef DSV3_HAVE_NCCL
#include "engine/parallel/nccl_communicator.h"
#endif

namespace dsv3::parallel {

size_t DataTypeSize(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return 4;
    case DataType::kFloat64:
      return 8;
    case DataType::kInt32:
      return 4;
    case DataType::kInt64:
      return 8;
    case DataType::kUint8:
      return 1;
  }
  return 0;
}

const char* DataTypeName(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return "float32";
    case DataType::kFloat64:
      return "float64";
    case DataType::kInt32:
      return "int32";
    case DataType::kInt64:
      return "int64";
    case DataType::kUint8:
      return "uint8";
  }
  return "invalid";
}

const char* BackendName(Backend backend) {
  switch (backend) {
    case Backend::kInProcess:
      return "in_process";
    case Backend::kGloo:
      return "gloo";
    case Backend::kNccl:
      return "nccl";
  }
  return "invalid";
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::NewGroup(absl::Span<const int> ranks) {
  std::vector<bool> seen(size(), false);
  int index = -1;
  for (size_t i = 0; i < ranks.size(); ++i) {
    const int r = ranks[i];
    if (r < 0 || r >= size() || seen[r]) {
      return absl::InvalidArgumentError(
          absl::StrCat("group '", name(), "' NewGroup: the rank list [", absl::StrJoin(ranks, ", "),
                       "] must hold distinct ranks in [0, ", size(), ")"));
    }
    seen[r] = true;
    if (r == rank()) index = static_cast<int>(i);
  }
  return Split(index >= 0 ? 0 : -1, index);
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
    const CommunicatorOptions& options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("communicator rank=", options.rank,
                     " must be in [0, world_size=", options.world_size, ")"));
  }
  if (options.store == nullptr) {
    return absl::InvalidArgumentError("communicator options have no store");
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "communicator timeout=", absl::FormatDuration(options.timeout), " must be positive"));
  }
  if (options.name.empty()) return absl::InvalidArgumentError("communicator name is empty");
  switch (options.backend) {
    case Backend::kInProcess:
      return CreateInProcessCommunicator(options);
    case Backend::kGloo:
      return CreateGlooCommunicator(options);
    case Backend::kNccl:
#ifdef DSV3_HAVE_NCCL
      return CreateNcclCommunicator(options);
#else
      return absl::UnimplementedError("this build has no NCCL backend (built without CUDA)");
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown communicator backend ", static_cast<int>(options.backend)));
}

}  // namespace dsv3::parallel
