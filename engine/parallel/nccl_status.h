// The conversions from CUDA runtime and NCCL error codes to absl::Status, one macro per family,
// each carrying the failed expression, file:line, the mapped code and the library's own message.
// Only the NCCL backend and its test include this (it pulls in cuda_runtime_api.h and nccl.h);
// built only with CUDA.
#ifndef DSV3_ENGINE_PARALLEL_NCCL_STATUS_H_
#define DSV3_ENGINE_PARALLEL_NCCL_STATUS_H_

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "absl/status/status.h"

namespace dsv3::parallel {

// cudaErrorNoDevice/cudaErrorInsufficientDriver -> FAILED_PRECONDITION, cudaErrorMemoryAllocation
// -> RESOURCE_EXHAUSTED, cudaErrorInvalidValue -> INVALID_ARGUMENT, others -> INTERNAL.
absl::Status CudaErrorToStatus(cudaError_t error, const char* expr, const char* file, int line);
// ncclSystemError/ncclRemoteError -> UNAVAILABLE (a peer or the network failed),
// ncclInvalidArgument -> INVALID_ARGUMENT, ncclInvalidUsage -> FAILED_PRECONDITION, others ->
// INTERNAL. `comm` (may be null) adds ncclGetLastError's detail.
absl::Status NcclErrorToStatus(ncclResult_t result, ncclComm_t comm, const char* expr,
                               const char* file, int line);

}  // namespace dsv3::parallel

#define DSV3_CUDA_RETURN_IF_ERROR(expr)                                                        \
  do {                                                                                         \
    const cudaError_t dsv3_cuda_error_ = (expr);                                               \
    if (dsv3_cuda_error_ != cudaSuccess) {                                                     \
      return ::dsv3::parallel::CudaErrorToStatus(dsv3_cuda_error_, #expr, __FILE__, __LINE__); \
    }                                                                                          \
  } while (0)

// ncclInProgress (a non-blocking communicator still working) is not an error here; callers wait
// for the communicator to become ready.
#define DSV3_NCCL_RETURN_IF_ERROR(comm, expr)                                                \
  do {                                                                                       \
    const ncclResult_t dsv3_nccl_result_ = (expr);                                           \
    if (dsv3_nccl_result_ != ncclSuccess && dsv3_nccl_result_ != ncclInProgress) {           \
      return ::dsv3::parallel::NcclErrorToStatus(dsv3_nccl_result_, (comm), #expr, __FILE__, \
                                                 __LINE__);                                  \
    }                                                                                        \
  } while (0)

#endif  // DSV3_ENGINE_PARALLEL_NCCL_STATUS_H_
