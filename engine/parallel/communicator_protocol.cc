// OpHeader encoding and checks; see communicator_protocol.h.
#include "engine/parallel/communicator_protocol.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dsv3::parallel {
namespace {

constexpr uint32_t kMagic = 0x44535633;  // "DSV3"
constexpr uint8_t kVersion = 1;

void PutU64(char* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void PutU32(char* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint64_t GetU64(const char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  return v;
}
uint32_t GetU32(const char* in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  return v;
}

}  // namespace

const char* OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kAllReduce:
      return "all_reduce";
    case OpKind::kReduceScatter:
      return "reduce_scatter";
    case OpKind::kAllGather:
      return "all_gather";
    case OpKind::kAllToAll:
      return "all_to_all";
    case OpKind::kSendRecv:
      return "send_recv";
    case OpKind::kBarrier:
      return "barrier";
    case OpKind::kSplit:
      return "split";
  }
  return "unknown_op";
}

// Layout: magic u32 | version u8 | kind u8 | dtype u8 | pad u8 | seq u64 | send_count u64 |
// send_messages u32 | recv_messages u32 | send_signature u64 | recv_count u64 |
// recv_signature u64 | pad to 64.
EncodedOpHeader EncodeOpHeader(const OpHeader& header) {
  EncodedOpHeader out{};
  PutU32(&out[0], kMagic);
  out[4] = static_cast<char>(kVersion);
  out[5] = static_cast<char>(header.kind);
  out[6] = static_cast<char>(header.dtype);
  PutU64(&out[8], static_cast<uint64_t>(header.seq));
  PutU64(&out[16], header.send_count);
  PutU32(&out[24], header.send_messages);
  PutU32(&out[28], header.recv_messages);
  PutU64(&out[32], header.send_signature);
  PutU64(&out[40], header.recv_count);
  PutU64(&out[48], header.recv_signature);
  return out;
}

absl::StatusOr<OpHeader> DecodeOpHeader(absl::string_view bytes) {
  if (bytes.size() != kOpHeaderBytes) {
    return absl::InternalError(
        absl::StrCat("op header has ", bytes.size(), " bytes, expected ", kOpHeaderBytes));
  }
  const uint32_t magic = GetU32(&bytes[0]);
  if (magic != kMagic || static_cast<uint8_t>(bytes[4]) != kVersion) {
    return absl::InternalError(absl::StrFormat(
        "op header has magic 0x%08x version %d, expected 0x%08x version %d (not a dsv3 "
        "communicator of this version, or a corrupt stream)",
        magic, static_cast<uint8_t>(bytes[4]), kMagic, kVersion));
  }
  OpHeader h;
  h.kind = static_cast<OpKind>(static_cast<uint8_t>(bytes[5]));
  h.dtype = static_cast<DataType>(static_cast<uint8_t>(bytes[6]));
  h.seq = static_cast<int64_t>(GetU64(&bytes[8]));
  h.send_count = GetU64(&bytes[16]);
  h.send_messages = GetU32(&bytes[24]);
  h.recv_messages = GetU32(&bytes[28]);
  h.send_signature = GetU64(&bytes[32]);
  h.recv_count = GetU64(&bytes[40]);
  h.recv_signature = GetU64(&bytes[48]);
  return h;
}

OpHeader Mirror(const OpHeader& mine) {
  OpHeader h = mine;
  std::swap(h.send_count, h.recv_count);
  std::swap(h.send_messages, h.recv_messages);
  std::swap(h.send_signature, h.recv_signature);
  return h;
}

namespace {

std::string Messages(uint32_t messages, uint64_t count) {
  if (messages == 0) return "nothing";
  return absl::StrCat(messages, messages == 1 ? " message/" : " messages/", count, " elements");
}

}  // namespace

std::string DescribeOp(const OpHeader& h, int peer) {
  const std::string op = absl::StrCat(OpKindName(h.kind), " #", h.seq);
  switch (h.kind) {
    case OpKind::kBarrier:
      return op;
    case OpKind::kAllToAll:
      return absl::StrCat(op, " (", DataTypeName(h.dtype), ": ", h.send_count, " to rank ", peer,
                          ", ", h.recv_count, " from it)");
    case OpKind::kSendRecv:
      return absl::StrCat(op, " (", Messages(h.send_messages, h.send_count), " to rank ", peer,
                          ", ", Messages(h.recv_messages, h.recv_count), " from it)");
    default:
      return absl::StrCat(op, " (", DataTypeName(h.dtype), " x ", h.send_count, ")");
  }
}

uint64_t MessageSignature(uint64_t signature, DataType dtype, uint64_t count) {
  constexpr uint64_t kPrime = 1099511628211ull;
  signature = (signature ^ static_cast<uint8_t>(dtype)) * kPrime;
  for (int i = 0; i < 8; ++i) signature = (signature ^ ((count >> (8 * i)) & 0xff)) * kPrime;
  return signature;
}

absl::Status CheckPeerHeader(const OpHeader& mine, const OpHeader& received,
                             absl::string_view group, int rank, int peer) {
  if (Mirror(mine) == received) return absl::OkStatus();
  const char* why = mine.kind == received.kind && mine.seq == received.seq
                        ? " (sizes or types differ)"
                        : " (the ranks' calls are out of sync)";
  return absl::FailedPreconditionError(absl::StrCat(
      "group '", group, "' rank ", rank, ": ", DescribeOp(mine, peer), " does not match rank ",
      peer, ", which issued ", DescribeOp(received, rank), why));
}

}  // namespace dsv3::parallel
