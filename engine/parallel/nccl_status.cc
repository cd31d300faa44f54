// The CUDA and NCCL error conversions; see nccl_status.h.
#include "engine/parallel/nccl_status.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dsv3::parallel {

namespace {

absl::string_view BaseName(absl::string_view file) {
  if (size_t slash = file.rfind('/'); slash != absl::string_view::npos) {
    file.remove_prefix(slash + 1);
  }
  return file;
}

}  // namespace

absl::Status CudaErrorToStatus(cudaError_t error, const char* expr, const char* file, int line) {
  const std::string message =
      absl::StrCat("cuda: ", cudaGetErrorName(error), ": ", cudaGetErrorString(error), " in ", expr,
                   " [", BaseName(file), ":", line, "]");
  switch (error) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
      return absl::FailedPreconditionError(message);
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorInvalidValue:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status NcclErrorToStatus(ncclResult_t result, ncclComm_t comm, const char* expr,
                               const char* file, int line) {
  const char* detail = comm != nullptr ? ncclGetLastError(comm) : "";
  const std::string message =
      absl::StrCat("nccl: ", ncclGetErrorString(result), detail != nullptr && *detail ? " (" : "",
                   detail != nullptr ? detail : "", detail != nullptr && *detail ? ")" : "", " in ",
                   expr, " [", BaseName(file), ":", line, "]");
  switch (result) {
    case ncclSystemError:
    case ncclRemoteError:
      return absl::UnavailableError(message);
    case ncclInvalidArgument:
      return absl::InvalidArgumentError(message);
    case ncclInvalidUsage:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace dsv3::parallel
