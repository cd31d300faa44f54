// The NCCL backend (GPU buffers; built only with CUDA). Operations are enqueued on the
// communicator's own CUDA stream in issue order; a Work completes when its CUDA event does. The
// NCCL unique id travels through the Store. NCCL cannot check the ranks' calls against each other
// before moving data, so its desync detection is the timeout plus a post-mortem through the store:
// a rank whose op does not complete within the timeout aborts the communicator and names the
// ranks that are at a different op or did not report at all. Not usable without a GPU.
#ifndef DSV3_ENGINE_PARALLEL_NCCL_COMMUNICATOR_H_
#define DSV3_ENGINE_PARALLEL_NCCL_COMMUNICATOR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/parallel/communicator.h"

namespace dsv3::parallel {

// Called through CreateCommunicator (options already validated). Selects the CUDA device
// (options.cuda_device, or rank % device count), exchanges the unique id under "<name>/nccl/id"
// and initialises a non-blocking NCCL communicator within the timeout. FAILED_PRECONDITION when
// there is no CUDA device; DEADLINE_EXCEEDED naming the ranks that did not join.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const CommunicatorOptions& options);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_NCCL_COMMUNICATOR_H_
