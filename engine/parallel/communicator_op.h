// CommOp: one collective or point-to-point batch as a backend runs it, and what every backend does
// with one before moving data: the argument checks, the sequence-number headers and description,
// the rank-ordered sum, and the store-based join of a group. Backend-independent; no transport and
// no threads here.
#ifndef DSV3_ENGINE_PARALLEL_COMMUNICATOR_OP_H_
#define DSV3_ENGINE_PARALLEL_COMMUNICATOR_OP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/communicator_protocol.h"
#include "engine/parallel/store.h"

namespace dsv3::parallel {

// One issued operation, as the queue thread runs it. Pointers are the caller's buffers.
struct CommOp {
  OpKind kind = OpKind::kBarrier;
  DataType dtype = DataType::kUint8;
  int64_t seq = 0;  // the group's sequence number (SendRecv: -1; see pair_seq)
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;                 // AllReduce: count; ReduceScatter: recv_count; AllGather,
                                    // Split: send_count
  std::vector<size_t> send_counts;  // AllToAll: [size]
  std::vector<size_t> recv_counts;  // AllToAll: [size]
  std::vector<PeerSend> sends;      // SendRecv
  std::vector<PeerRecv> recvs;      // SendRecv
  // Set at issue. The peers this op exchanges headers with (ascending), the header for each, and
  // for SendRecv the batch number of each pair ([size], -1 for ranks not in the batch).
  std::vector<int> peers;
  std::vector<OpHeader> outgoing;
  std::vector<int64_t> pair_seq;
  std::string description;  // "all_reduce #3 (float32 x 10)" or "send_recv with ranks 1, 2"
};

// The argument checks of every backend: INVALID_ARGUMENT naming the group, the rank and the
// problem. `op` has its kind, type, buffers and counts set.
absl::Status ValidateOp(const CommOp& op, const std::string& group, int rank, int size);

// Fills op.peers, op.outgoing and op.description from the rest of `op` (its numbers assigned).
void FillOpHeaders(CommOp& op, int rank, int size);

// acc[i] += x[i] for i < count, in `dtype` (any type but kUint8). For the backends' reductions,
// which add the ranks' contributions in rank order so that every rank gets the same bits.
void SumInto(DataType dtype, void* acc, const void* x, size_t count);

// Registers `rank` as joined under "<name>/joined/<rank>" and waits up to `timeout` for all
// `size` ranks. DEADLINE_EXCEEDED names the ranks that did not join. Every backend's factory runs
// it before connecting, so a missing rank is reported by number rather than as a transport error.
absl::Status JoinGroup(Store& store, const std::string& name, int rank, int size,
                       absl::Duration timeout);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_COMMUNICATOR_OP_H_
