// CommOp helpers; see communicator_op.h.
#include "engine/parallel/communicator_op.h"

#include <cstdlib>
#include <numeric>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace dsv3::parallel {
namespace {

template <typename T>
void SumTyped(void* acc, const void* x, size_t count) {
  T* a = static_cast<T*>(acc);
  const T* b = static_cast<const T*>(x);
  if constexpr (std::is_integral_v<T>) {
    // Two's-complement wrap-around, like the GPU, rather than undefined behaviour.
    using U = std::make_unsigned_t<T>;
    for (size_t i = 0; i < count; ++i) {
      a[i] = static_cast<T>(static_cast<U>(a[i]) + static_cast<U>(b[i]));
    }
  } else {
    for (size_t i = 0; i < count; ++i) a[i] += b[i];
  }
}

}  // namespace

void SumInto(DataType dtype, void* acc, const void* x, size_t count) {
  switch (dtype) {
    case DataType::kFloat32:
      return SumTyped<float>(acc, x, count);
    case DataType::kFloat64:
      return SumTyped<double>(acc, x, count);
    case DataType::kInt32:
      return SumTyped<int32_t>(acc, x, count);
    case DataType::kInt64:
      return SumTyped<int64_t>(acc, x, count);
    case DataType::kUint8:
      break;
  }
  std::abort();  // Validate() rejects every other type before an op is issued
}

absl::Status JoinGroup(Store& store, const std::string& name, int rank, int size,
                       absl::Duration timeout) {
  RETURN_IF_ERROR(store.Set(absl::StrCat(name, "/joined/", rank), "1"));
  std::vector<std::string> keys;
  for (int r = 0; r < size; ++r) keys.push_back(absl::StrCat(name, "/joined/", r));
  absl::Status s = store.Wait(keys, timeout);
  if (absl::IsDeadlineExceeded(s)) {
    // Name the ranks rather than the keys.
    std::vector<int> missing;
    for (int r = 0; r < size; ++r) {
      if (!store.Wait({keys[r]}, absl::ZeroDuration()).ok()) missing.push_back(r);
    }
    return absl::DeadlineExceededError(
        absl::StrCat("group '", name, "' rank ", rank, ": rank", missing.size() == 1 ? " " : "s ",
                     absl::StrJoin(missing, ", "), " of ", size, " did not join within ",
                     absl::FormatDuration(timeout)));
  }
  return s;
}

absl::Status ValidateOp(const CommOp& op, const std::string& group, int rank, int size) {
  const std::string what =
      absl::StrCat("group '", group, "' rank ", rank, ": ", OpKindName(op.kind));
  const size_t esize = DataTypeSize(op.dtype);
  if (esize == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": invalid data type ", static_cast<int>(op.dtype)));
  }
  auto need = [&](const void* p, size_t count, absl::string_view which) -> absl::Status {
    if (p == nullptr && count > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": ", which, " buffer is null for ", count, " elements"));
    }
    return absl::OkStatus();
  };
  switch (op.kind) {
    case OpKind::kAllReduce:
      if (op.dtype == DataType::kUint8) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": uint8 cannot be summed"));
      }
      RETURN_IF_ERROR(need(op.send, op.count, "send"));
      return need(op.recv, op.count, "recv");
    case OpKind::kReduceScatter:
      if (op.dtype == DataType::kUint8) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": uint8 cannot be summed"));
      }
      [[fallthrough]];
    case OpKind::kAllGather:
    case OpKind::kSplit: {
      RETURN_IF_ERROR(need(op.send, op.count, "send"));
      RETURN_IF_ERROR(need(op.recv, op.count, "recv"));
      const size_t big = op.count * size * esize;
      const char* s = static_cast<const char*>(op.send);
      const char* r = static_cast<const char*>(op.recv);
      const size_t send_bytes = op.kind == OpKind::kReduceScatter ? big : op.count * esize;
      const size_t recv_bytes = op.kind == OpKind::kReduceScatter ? op.count * esize : big;
      if (op.count > 0 && s < r + recv_bytes && r < s + send_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": send and recv buffers overlap (not supported in place)"));
      }
      return absl::OkStatus();
    }
    case OpKind::kAllToAll: {
      if (op.send_counts.size() != static_cast<size_t>(size) ||
          op.recv_counts.size() != static_cast<size_t>(size)) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": send_counts has ", op.send_counts.size(), " entries and recv_counts ",
            op.recv_counts.size(), "; the group has ", size, " ranks"));
      }
      const size_t total_send =
          std::accumulate(op.send_counts.begin(), op.send_counts.end(), size_t{0});
      const size_t total_recv =
          std::accumulate(op.recv_counts.begin(), op.recv_counts.end(), size_t{0});
      RETURN_IF_ERROR(need(op.send, total_send, "send"));
      return need(op.recv, total_recv, "recv");
    }
    case OpKind::kSendRecv: {
      std::vector<int> sends_to(size, 0);
      std::vector<int> recvs_from(size, 0);
      auto check_peer = [&](int peer, absl::string_view dir) -> absl::Status {
        if (peer < 0 || peer >= size || peer == rank) {
          return absl::InvalidArgumentError(absl::StrCat(what, ": ", dir, " peer ", peer,
                                                         " is not another rank of the ", size,
                                                         "-rank group"));
        }
        return absl::OkStatus();
      };
      for (const PeerSend& s : op.sends) {
        RETURN_IF_ERROR(check_peer(s.peer, "send"));
        RETURN_IF_ERROR(need(s.data, s.count, "send"));
        if (DataTypeSize(s.dtype) == 0) {
          return absl::InvalidArgumentError(absl::StrCat(what, ": invalid data type"));
        }
        if (++sends_to[s.peer] > 255) {
          return absl::InvalidArgumentError(
              absl::StrCat(what, ": more than 255 sends to rank ", s.peer, " in one batch"));
        }
      }
      for (const PeerRecv& r : op.recvs) {
        RETURN_IF_ERROR(check_peer(r.peer, "recv"));
        RETURN_IF_ERROR(need(r.data, r.count, "recv"));
        if (DataTypeSize(r.dtype) == 0) {
          return absl::InvalidArgumentError(absl::StrCat(what, ": invalid data type"));
        }
        if (++recvs_from[r.peer] > 255) {
          return absl::InvalidArgumentError(
              absl::StrCat(what, ": more than 255 receives from rank ", r.peer, " in one batch"));
        }
      }
      return absl::OkStatus();
    }
    case OpKind::kBarrier:
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(what, ": unknown op"));
}

void FillOpHeaders(CommOp& op, int rank, int size) {
  if (op.kind == OpKind::kSendRecv) {
    // A header for every peer of the batch, describing both directions of that pair.
    std::vector<OpHeader> h(size);
    std::vector<bool> involved(size, false);
    for (int p = 0; p < size; ++p) {
      h[p].kind = OpKind::kSendRecv;
      h[p].seq = op.pair_seq[p];
      h[p].send_signature = h[p].recv_signature = kEmptySignature;
    }
    for (const PeerSend& s : op.sends) {
      OpHeader& x = h[s.peer];
      x.send_count += s.count;
      x.send_messages += 1;
      x.send_signature = MessageSignature(x.send_signature, s.dtype, s.count);
      involved[s.peer] = true;
    }
    for (const PeerRecv& r : op.recvs) {
      OpHeader& x = h[r.peer];
      x.recv_count += r.count;
      x.recv_messages += 1;
      x.recv_signature = MessageSignature(x.recv_signature, r.dtype, r.count);
      involved[r.peer] = true;
    }
    std::vector<std::string> names;
    for (int p = 0; p < size; ++p) {
      if (!involved[p]) continue;
      op.peers.push_back(p);
      op.outgoing.push_back(h[p]);
      names.push_back(absl::StrCat(p, " (#", op.pair_seq[p], ")"));
    }
    op.description = absl::StrCat("send_recv with rank", names.size() == 1 ? " " : "s ",
                                  absl::StrJoin(names, ", "));
    return;
  }
  OpHeader h;
  h.kind = op.kind;
  h.dtype = op.kind == OpKind::kBarrier ? DataType::kUint8 : op.dtype;
  h.seq = op.seq;
  h.send_count = h.recv_count = op.count;
  for (int p = 0; p < size; ++p) {
    if (p == rank) continue;
    op.peers.push_back(p);
    if (op.kind == OpKind::kAllToAll) {
      h.send_count = op.send_counts[p];
      h.recv_count = op.recv_counts[p];
    }
    op.outgoing.push_back(h);
  }
  if (op.kind == OpKind::kAllToAll) {
    op.description = absl::StrCat("all_to_all #", op.seq, " (", DataTypeName(op.dtype), ")");
  } else {
    op.description = DescribeOp(h, -1);
  }
}

}  // namespace dsv3::parallel
