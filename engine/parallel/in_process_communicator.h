// The in-process backend: the ranks are threads of one process and exchange messages through a
// shared hub of per-pair queues. For unit tests and single-process multi-rank equivalence runs.
// Reductions add the ranks' contributions in rank order (bit-identical on every rank and to a
// sequential sum in that order). Ranks in different processes cannot meet (use Gloo).
#ifndef DSV3_ENGINE_PARALLEL_IN_PROCESS_COMMUNICATOR_H_
#define DSV3_ENGINE_PARALLEL_IN_PROCESS_COMMUNICATOR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/parallel/communicator.h"

namespace dsv3::parallel {

// Called through CreateCommunicator (options already validated). Rank 0 creates the hub and
// publishes its id under "<name>/in_process/hub"; the others look it up. FAILED_PRECONDITION
// when the hub belongs to another process; DEADLINE_EXCEEDED naming the ranks that did not join.
absl::StatusOr<std::unique_ptr<Communicator>> CreateInProcessCommunicator(
    const CommunicatorOptions& options);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_IN_PROCESS_COMMUNICATOR_H_
