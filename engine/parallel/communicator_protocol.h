// The sequence-number protocol of the CPU communicators: before an operation moves any data, each
// rank sends every peer taking part an OpHeader saying what it is about to do with that peer (op
// kind, sequence number, element type and count), and checks the header it receives against what
// it expects from that peer. Pure functions (encoding, description, the check); no transport here.
#ifndef DSV3_ENGINE_PARALLEL_COMMUNICATOR_PROTOCOL_H_
#define DSV3_ENGINE_PARALLEL_COMMUNICATOR_PROTOCOL_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/parallel/communicator.h"

namespace dsv3::parallel {

enum class OpKind : uint8_t {
  kAllReduce = 1,
  kReduceScatter = 2,
  kAllGather = 3,
  kAllToAll = 4,
  kSendRecv = 5,
  kBarrier = 6,
  kSplit = 7,
};
const char* OpKindName(OpKind kind);  // "all_reduce", ...

// What one rank tells one peer before an operation: the op, its sequence number, and both
// directions of the pair's traffic as this rank sees it, so that a disagreement is seen by both
// ranks of the pair. For the collectives both directions are the op's element count
// (AllReduce: count; ReduceScatter: recv_count; AllGather: send_count; Split: 2; Barrier: 0), equal
// on every rank. For AllToAll they are the elements sent to and expected from that peer; for
// SendRecv the number of messages and their total elements each way, with a signature hashing the
// (type, count) of each message in order. `seq` is the group's collective sequence number, or for
// SendRecv the number of earlier batches between the two ranks.
struct OpHeader {
  OpKind kind = OpKind::kBarrier;
  DataType dtype = DataType::kUint8;
  int64_t seq = 0;
  uint64_t send_count = 0;  // to the peer
  uint32_t send_messages = 0;
  uint64_t send_signature = 0;
  uint64_t recv_count = 0;  // from the peer
  uint32_t recv_messages = 0;
  uint64_t recv_signature = 0;

  friend bool operator==(const OpHeader&, const OpHeader&) = default;
};

// The header a peer should send for this op: `mine` with the two directions swapped.
OpHeader Mirror(const OpHeader& mine);

inline constexpr size_t kOpHeaderBytes = 64;
using EncodedOpHeader = std::array<char, kOpHeaderBytes>;

// Little-endian, with a magic number and a version in front.
EncodedOpHeader EncodeOpHeader(const OpHeader& header);
// INTERNAL for a wrong size, magic or version (the peer is not a dsv3 communicator of this
// version, or the stream is corrupt).
absl::StatusOr<OpHeader> DecodeOpHeader(absl::string_view bytes);

// The op as issued by the sender of this header to `peer`: "all_reduce #7 (float32 x 10)",
// "all_to_all #2 (int64: 5 to rank 1, 3 from it)", "send_recv #3 (2 messages/96 elements to
// rank 1, nothing from it)", "barrier #4".
std::string DescribeOp(const OpHeader& header, int peer);

// The signature of a SendRecv message list: FNV-1a over each message's (dtype, count), in order.
uint64_t MessageSignature(uint64_t signature, DataType dtype, uint64_t count);
inline constexpr uint64_t kEmptySignature = 14695981039346656037ull;

// OK when `received` (the header `peer` sent this rank) equals Mirror(mine) (`mine`: the header
// this rank sent `peer`); otherwise FAILED_PRECONDITION naming the group, both ranks and both ops,
// e.g. "group 'world' rank 0: all_reduce #7 (float32 x 10) does not match rank 2, which issued
// all_gather #7 (float32 x 10) (the ranks' calls are out of sync)".
absl::Status CheckPeerHeader(const OpHeader& mine, const OpHeader& received,
                             absl::string_view group, int rank, int peer);

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_COMMUNICATOR_PROTOCOL_H_
