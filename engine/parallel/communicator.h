// Communicator: the collectives and point-to-point transfers that training uses (gradient
// all-reduce, ZeRO-1 reduce-scatter/all-gather, expert all-to-all, pipeline send/recv batches),
// asynchronous with a Work handle, every call sequence-numbered so that ranks that disagree fail
// with an error naming the op, the sequence number and the peer instead of hanging. Knows nothing
// of any backend: in-process, Gloo and NCCL appear only through CreateCommunicator().
#ifndef DSV3_ENGINE_PARALLEL_COMMUNICATOR_H_
#define DSV3_ENGINE_PARALLEL_COMMUNICATOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/parallel/store.h"

namespace dsv3::parallel {

// Element types. Reductions (sum) exist for every type but kUint8, which carries raw bytes (FP8
// codes, packed BF16) through the data-movement ops only.
enum class DataType : uint8_t { kFloat32 = 1, kFloat64 = 2, kInt32 = 3, kInt64 = 4, kUint8 = 5 };
size_t DataTypeSize(DataType dtype);
const char* DataTypeName(DataType dtype);  // "float32", ...; "invalid" for an unknown value

enum class Backend { kInProcess, kGloo, kNccl };
const char* BackendName(Backend backend);  // "in_process", "gloo", "nccl"

// The handle of an issued operation. Thread-compatible (one waiter at a time).
class Work {
 public:
  // Blocks until the operation completed (bounded by the communicator's timeout, since every wait
  // inside an operation has one); the caller's buffers are in use until then.
  virtual ~Work() = default;

  // Waits up to `timeout` for completion and returns the operation's status (the same status on
  // every later call). DEADLINE_EXCEEDED when it has not completed within `timeout`; the operation
  // keeps running and Wait may be called again. The operation's own errors: DEADLINE_EXCEEDED
  // (a peer did not answer within the communicator's timeout; the message names it),
  // UNAVAILABLE (a peer closed its connection: died or aborted), FAILED_PRECONDITION (the ranks
  // disagree about the op, its sequence number or its sizes; or the communicator was already
  // broken by an earlier error), INVALID_ARGUMENT (rejected before anything was sent),
  // CANCELLED (the communicator was destroyed before the operation ran).
  virtual absl::Status Wait(absl::Duration timeout) = 0;

  // True once Wait would return without blocking.
  virtual bool IsCompleted() = 0;
};

// One message of a point-to-point batch. `data` holds `count` elements of `dtype` (host memory for
// the CPU backends, device memory for NCCL) and must stay valid until the batch's Work completes.
struct PeerSend {
  int peer = -1;  // a rank of this communicator's group, not this rank
  const void* data = nullptr;
  size_t count = 0;
  DataType dtype = DataType::kFloat32;
};
struct PeerRecv {
  int peer = -1;
  void* data = nullptr;
  size_t count = 0;
  DataType dtype = DataType::kFloat32;
};

// The common contract of every operation below:
// - Asynchronous: the call returns at once with a Work; operations of one communicator run one at
//   a time in the order they were issued. Buffers stay in use until the Work completes. Buffers are
//   host memory for the in-process and Gloo backends and device memory for NCCL.
// - Every rank of the group issues the same collectives (AllReduce ... Barrier, Split) in the same
//   order with the same element counts and types. Each collective carries the next sequence number
//   of the group (0, 1, 2, ...); each SendRecv batch carries, per peer, the number of batches
//   exchanged with that peer before it. The CPU backends exchange (op, sequence number, sizes)
//   with every peer taking part before moving data, so a disagreement fails at once, on both ranks
//   of every disagreeing pair, with FAILED_PRECONDITION naming the op, the sequence number and the
//   peer; NCCL finds out when its timeout fires (see nccl_communicator.h).
// - Every wait inside an operation is bounded by the communicator's timeout. A peer that hangs
//   makes the others fail with DEADLINE_EXCEEDED, a peer that dies with UNAVAILABLE; the message
//   names the peer, and for collectives ends with a post-mortem through the store ("post-mortem:
//   rank 2 did not report this failure within 2s (dead or hung)") that names the culprit even
//   when the failure has cascaded. The post-mortem adds at most min(2 s, timeout) to a failure.
// - After the first failure the communicator is broken: every later operation fails at once with
//   FAILED_PRECONDITION quoting that first error (a group that disagreed once cannot be trusted to
//   agree again), and after a disagreement its connections are closed so that ranks still moving
//   data with it fail promptly. Recovery is a new communicator (the trainer re-plans on a new
//   store scope).
// - Invalid arguments (null buffers with a non-zero count, a peer out of range, counts of the
//   wrong length, overlapping buffers where not allowed) complete the Work with INVALID_ARGUMENT at
//   once; such an operation is not issued at all and uses no sequence number.
// - Thread-safe: operations may be issued from several threads; their order is the issue order.
class Communicator {
 public:
  // Destroying a communicator waits for the operation in flight (bounded by the timeout) and fails
  // the queued ones with CANCELLED; it closes the connections, so peers waiting on it fail too.
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual Backend backend() const = 0;
  // The group's name: "world", or the parent's name plus the split ("world/split3.color1").
  virtual const std::string& name() const = 0;
  // The bound on every wait inside an operation.
  virtual absl::Duration timeout() const = 0;

  // Sum over the group, element-wise. send and recv: [count]; recv == send is in place.
  // Results are identical on every rank.
  virtual std::unique_ptr<Work> AllReduce(const void* send, void* recv, size_t count,
                                          DataType dtype) = 0;

  // Sum over the group, scattered: send is [size() * recv_count] (block r for rank r), recv is
  // [recv_count] and receives the sum of every rank's block rank(). Not in place.
  virtual std::unique_ptr<Work> ReduceScatter(const void* send, void* recv, size_t recv_count,
                                              DataType dtype) = 0;

  // send: [send_count]; recv: [size() * send_count], block r from rank r. Not in place.
  virtual std::unique_ptr<Work> AllGather(const void* send, void* recv, size_t send_count,
                                          DataType dtype) = 0;

  // Personalised exchange with per-peer sizes (expert dispatch/combine). send: the blocks for ranks
  // 0..size()-1 back to back, send_counts[r] elements for rank r; recv: the blocks from ranks
  // 0..size()-1 back to back, recv_counts[r] elements from rank r. Both spans have size() entries;
  // send_counts[r] on this rank must equal recv_counts[this rank] on rank r. Not in place.
  virtual std::unique_ptr<Work> AllToAll(const void* send, absl::Span<const size_t> send_counts,
                                         void* recv, absl::Span<const size_t> recv_counts,
                                         DataType dtype) = 0;

  // A batch of sends and receives issued together and completing together (a pipeline schedule's
  // communication step). Only the ranks named in the batch take part. Messages between two ranks
  // match in order: the i-th send to rank p pairs with p's i-th receive from this rank, and their
  // counts and types must agree. At most 255 messages per peer and direction in one batch.
  virtual std::unique_ptr<Work> SendRecv(std::vector<PeerSend> sends,
                                         std::vector<PeerRecv> recvs) = 0;

  // Completes once every rank of the group has issued it.
  virtual std::unique_ptr<Work> Barrier() = 0;

  // Splits the group like MPI_Comm_split: a collective over this group that returns, to every rank
  // with the same `color` >= 0, a communicator of those ranks ordered by (key, rank in this group);
  // a negative color returns nullptr (the rank joins no group). The new group bootstraps through
  // this communicator's store under a prefix of its own and has the same backend and timeout.
  // Blocks until the new group is connected. Errors: those of the operations above; the
  // communicator's timeout bounds the bootstrap of the new group.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) = 0;

  // Split by membership: ranks listed in `ranks` (ranks of this group, no duplicates) form a group
  // in the listed order; the others get nullptr. A collective: every rank of this group calls it
  // with the same list. INVALID_ARGUMENT for a bad list.
  absl::StatusOr<std::unique_ptr<Communicator>> NewGroup(absl::Span<const int> ranks);

  // Breaks the communicator on purpose (the job is being re-planned, a peer is known dead):
  // operations in flight and later ones fail with `reason` (or their own earlier error), and the
  // connections are closed so that peers fail promptly too. Safe to call from any thread, more
  // than once.
  virtual void Abort(const absl::Status& reason) = 0;
};

struct CommunicatorOptions {
  Backend backend = Backend::kGloo;
  int rank = 0;
  int world_size = 1;
  // The rendezvous store; the communicator keeps a reference and uses its keys under "<name>/".
  std::shared_ptr<Store> store;
  // Bounds every wait: rendezvous, each operation, and the bootstrap of split groups.
  absl::Duration timeout = absl::Seconds(60);
  // The group's name: the store prefix of its keys. Groups that share a store need distinct names.
  std::string name = "world";
  // Gloo: the address to listen on and advertise (a host name or IP), or, when `interface` is set,
  // the network interface to take the address from.
  std::string host = "127.0.0.1";
  std::string interface;
  // NCCL: the CUDA device of this rank; -1 picks rank % device count.
  int cuda_device = -1;
};

// Creates this rank's communicator and connects it to the rest of the group through the store.
// Blocks until every rank of the group has joined. Errors: INVALID_ARGUMENT for bad options
// (rank outside [0, world_size), no store, a non-positive timeout); UNIMPLEMENTED for the NCCL
// backend in a build without CUDA; DEADLINE_EXCEEDED naming the ranks that did not join within
// the timeout; UNAVAILABLE or INTERNAL from the backend's transport.
absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
    const CommunicatorOptions& options);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_COMMUNICATOR_H_
