// The Gloo backend: CPU collectives over TCP (loopback or a given interface) with Gloo's
// algorithms on unbound buffers: ring all-reduce, all-gather, all-to-all-v, and point-to-point
// sends/receives for batches and for the sequence-number headers. Reduce-scatter is an all-to-all-v
// followed by a sum in rank order. The rendezvous goes through our Store; Gloo's exceptions stop at
// DSV3_GLOO_CALL. Not for GPU buffers.
#ifndef DSV3_ENGINE_PARALLEL_GLOO_COMMUNICATOR_H_
#define DSV3_ENGINE_PARALLEL_GLOO_COMMUNICATOR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/parallel/communicator.h"

namespace dsv3::parallel {

// Called through CreateCommunicator (options already validated). Opens a TCP device on
// options.host (or options.interface), joins the group and connects the full mesh through
// options.store under "<name>/gloo/". Errors: DEADLINE_EXCEEDED naming the ranks that did not
// join; UNAVAILABLE/INTERNAL from Gloo (a bad host or interface, a refused connection).
// Side effect: SIGPIPE is set to ignored if it is at its default disposition (Gloo writes to its
// sockets without MSG_NOSIGNAL, so a dying peer would otherwise kill this process).
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const CommunicatorOptions& options);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_GLOO_COMMUNICATOR_H_
