// The Gloo backend; see gloo_communicator.h. Slots: Gloo's collectives use their own slot
// prefixes with the op's sequence number as tag; our headers use kHeaderSlotPrefix with a per-pair
// counter (both ranks of a pair count the ops they exchange headers in, so a header always meets
// the receive posted for it); batch messages use kSendRecvSlotPrefix with the pair's batch number
// plus the message's index.
#include "engine/parallel/gloo_communicator.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/parallel/communicator_base.h"
#include "engine/parallel/gloo_status.h"
#include "engine/parallel/gloo_store.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/alltoallv.h"
#include "gloo/context.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/transport/device.h"
#include "gloo/transport/tcp/address.h"
#include "gloo/transport/tcp/attr.h"
#include "gloo/transport/tcp/device.h"
#include "gloo/transport/unbound_buffer.h"
#include "gloo/types.h"

namespace dsv3::parallel {
namespace {

using ::gloo::transport::UnboundBuffer;

constexpr uint8_t kHeaderSlotPrefix = 0x40;
constexpr uint8_t kSendRecvSlotPrefix = 0x41;

// What a Gloo wait may use of the time left until `deadline` (at least 1 ms: Gloo treats 0 as
// "no timeout" in places).
std::chrono::milliseconds Remaining(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return std::chrono::milliseconds(std::max<int64_t>(ms, 1));
}

uint32_t Tag(int64_t seq) { return static_cast<uint32_t>(seq & 0xffffffff); }

// Turns a failed wait on (or post to) `peer` into an error that names it.
absl::Status PeerError(const absl::Status& s, int peer, absl::string_view what, absl::Time start) {
  if (absl::IsDeadlineExceeded(s)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "timed out after ", absl::FormatDuration(absl::Now() - start), " waiting for rank ", peer,
        "'s ", what, " (rank ", peer, " is hung, dead, or did not issue this op); ", s.message()));
  }
  if (absl::IsUnavailable(s)) {
    return absl::UnavailableError(absl::StrCat("lost the connection to rank ", peer,
                                               " (it died or aborted) while waiting for its ", what,
                                               "; ", s.message()));
  }
  return absl::Status(s.code(), absl::StrCat("rank ", peer, ": ", s.message()));
}

absl::Status PostRecv(UnboundBuffer* buf, int peer, uint64_t slot, size_t bytes) {
  DSV3_GLOO_CALL(buf->recv(peer, slot, 0, bytes));
  return absl::OkStatus();
}
absl::Status PostSend(UnboundBuffer* buf, int peer, uint64_t slot, size_t bytes) {
  DSV3_GLOO_CALL(buf->send(peer, slot, 0, bytes));
  return absl::OkStatus();
}
absl::Status WaitRecv(UnboundBuffer* buf, absl::Time deadline) {
  DSV3_GLOO_CALL(buf->waitRecv(Remaining(deadline)));
  return absl::OkStatus();
}
absl::Status WaitSend(UnboundBuffer* buf, absl::Time deadline) {
  DSV3_GLOO_CALL(buf->waitSend(Remaining(deadline)));
  return absl::OkStatus();
}

// Gloo writes to its sockets without MSG_NOSIGNAL, so a peer that dies mid-write would kill this
// process with SIGPIPE instead of failing the operation. Ignore SIGPIPE unless the program has
// installed a handler of its own (then that handler decides).
void IgnoreSigpipeUnlessHandled() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current;
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      ::signal(SIGPIPE, SIG_IGN);
    }
  });
}

absl::StatusOr<std::shared_ptr<::gloo::transport::Device>> OpenDevice(
    const CommunicatorOptions& options) {
  IgnoreSigpipeUnlessHandled();
  ::gloo::transport::tcp::attr attr;
  if (!options.interface.empty()) {
    attr.iface = options.interface;
  } else {
    attr.hostname = options.host;
  }
  std::shared_ptr<::gloo::transport::Device> device;
  DSV3_GLOO_CALL(device = ::gloo::transport::tcp::CreateDevice(attr));
  return device;
}

absl::Status ConnectMesh(::gloo::rendezvous::Context& context, Store* store,
                         std::shared_ptr<::gloo::transport::Device>& device,
                         const std::string& name, absl::Duration timeout) {
  GlooStore gloo_store(store, absl::StrCat(name, "/gloo/"), timeout);
  context.setTimeout(std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
  DSV3_GLOO_CALL(context.connectFullMesh(gloo_store, device));
  return absl::OkStatus();
}

// The addresses every rank published for its pairs during the full-mesh connection (the value of
// store key "<name>/gloo/<rank>": one tcp::Address per other rank, in rank order), each mapped to
// the rank at the other end of that pair as seen from `rank`. Best effort: empty if the layout is
// not the expected one (the addresses only improve error messages).
std::vector<std::pair<std::string, int>> PeerAddresses(Store& store, const std::string& name,
                                                       int rank, int size) {
  std::vector<std::pair<std::string, int>> out;
  if (size < 2) return out;
  for (int r = 0; r < size; ++r) {
    absl::StatusOr<std::string> all =
        store.Get(absl::StrCat(name, "/gloo/", r), absl::ZeroDuration());
    if (!all.ok() || all->empty() || all->size() % (size - 1) != 0) return {};
    const size_t each = all->size() / (size - 1);
    for (int k = 0; k < size - 1; ++k) {
      const int other = k < r ? k : k + 1;  // the entry for `other` in r's list
      std::string text;
      try {
        const std::vector<char> bytes(all->begin() + k * each, all->begin() + (k + 1) * each);
        text = ::gloo::transport::tcp::Address(bytes).str();
      } catch (const std::exception&) {
        return {};
      }
      if (const size_t dollar = text.find('$'); dollar != std::string::npos) text.resize(dollar);
      if (r != rank && other == rank) out.emplace_back(text, r);  // the peer's end of our pair
      if (r == rank) out.emplace_back(text, other);               // our end of the pair
    }
  }
  return out;
}

class GlooCommunicator : public CommunicatorBase {
 public:
  static absl::StatusOr<std::unique_ptr<Communicator>> Connect(
      std::shared_ptr<Store> store, std::shared_ptr<::gloo::transport::Device> device,
      const std::string& name, int rank, int size, absl::Duration timeout) {
    RETURN_IF_ERROR(JoinGroup(*store, name, rank, size, timeout));
    auto context = std::make_shared<::gloo::rendezvous::Context>(rank, size);
    if (absl::Status s = ConnectMesh(*context, store.get(), device, name, timeout); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("group '", name, "' rank ", rank,
                                                 ": connecting the Gloo mesh: ", s.message()));
    }
    std::vector<std::pair<std::string, int>> addresses = PeerAddresses(*store, name, rank, size);
    auto comm = std::unique_ptr<GlooCommunicator>(new GlooCommunicator(
        std::move(store), std::move(device), std::move(context), name, rank, size, timeout));
    comm->peer_addresses_ = std::move(addresses);
    comm->StartQueue();
    return std::unique_ptr<Communicator>(std::move(comm));
  }

  ~GlooCommunicator() override {
    StopQueue();
    absl::MutexLock lock(&orphans_mu_);
    orphans_.clear();  // before the context they belong to
  }

  Backend backend() const override { return Backend::kGloo; }

 protected:
  absl::Status ExchangeHeaders(const CommOp& op, std::vector<EncodedOpHeader>* incoming,
                               absl::Time deadline) override {
    const absl::Time start = absl::Now();
    const size_t n = op.peers.size();
    auto sent = std::make_unique<SentHeaders>();
    sent->bytes.resize(n);
    std::vector<std::unique_ptr<UnboundBuffer>> recvs(n);
    absl::Status status = [&]() -> absl::Status {
      for (size_t i = 0; i < n; ++i) {
        const int peer = op.peers[i];
        const uint64_t slot = ::gloo::Slot::build(kHeaderSlotPrefix, control_count_[peer]++);
        sent->bytes[i] = EncodeOpHeader(op.outgoing[i]);
        recvs[i] = context_->createUnboundBuffer((*incoming)[i].data(), kOpHeaderBytes);
        sent->buffers.push_back(
            context_->createUnboundBuffer(sent->bytes[i].data(), kOpHeaderBytes));
        if (absl::Status s = PostRecv(recvs[i].get(), peer, slot, kOpHeaderBytes); !s.ok()) {
          return PeerError(s, peer, "header", start);
        }
        if (absl::Status s = PostSend(sent->buffers[i].get(), peer, slot, kOpHeaderBytes);
            !s.ok()) {
          return PeerError(s, peer, "header", start);
        }
      }
      for (size_t i = 0; i < n; ++i) {
        if (absl::Status s = WaitRecv(recvs[i].get(), deadline); !s.ok()) {
          return PeerError(s, op.peers[i], "header", start);
        }
      }
      for (size_t i = 0; i < n; ++i) {
        if (absl::Status s = WaitSend(sent->buffers[i].get(), deadline); !s.ok()) {
          return PeerError(s, op.peers[i], "header (sending)", start);
        }
      }
      return absl::OkStatus();
    }();
    if (!status.ok()) {
      // Our headers to the other peers may not have left yet (Gloo moves a message once the
      // receiver has posted for it). Keep them alive so that those peers still get them and go on
      // to see the real failure themselves, instead of blaming this rank for leaving.
      absl::MutexLock lock(&orphans_mu_);
      orphans_.push_back(std::move(sent));
    }
    return status;
  }

  absl::Status RunAllReduce(const CommOp& op, absl::Time deadline) override {
    if (op.count == 0) return absl::OkStatus();  // every rank agreed on 0 in the headers
    switch (op.dtype) {
      case DataType::kFloat32:
        return AllReduceTyped<float>(op, deadline);
      case DataType::kFloat64:
        return AllReduceTyped<double>(op, deadline);
      case DataType::kInt32:
        return AllReduceTyped<int32_t>(op, deadline);
      case DataType::kInt64:
        return AllReduceTyped<int64_t>(op, deadline);
      case DataType::kUint8:
        break;
    }
    return absl::InternalError("all_reduce on a type without a sum");  // Validate() rejects it
  }

  absl::Status RunReduceScatter(const CommOp& op, absl::Time deadline) override {
    if (op.count == 0) return absl::OkStatus();
    const size_t block = op.count * DataTypeSize(op.dtype);
    std::vector<char> gathered(block * size());  // [size][block]: block rank() of every rank
    const std::vector<int64_t> bytes(size(), static_cast<int64_t>(block));
    RETURN_IF_ERROR(AllToAllBytes(op.send, bytes, gathered.data(), bytes, op.seq, deadline));
    std::memcpy(op.recv, gathered.data(), block);
    for (int r = 1; r < size(); ++r) SumInto(op.dtype, op.recv, &gathered[r * block], op.count);
    return absl::OkStatus();
  }

  absl::Status RunAllGather(const CommOp& op, absl::Time deadline) override {
    if (op.count == 0) return absl::OkStatus();
    const size_t bytes = op.count * DataTypeSize(op.dtype);
    ::gloo::AllgatherOptions options(context_);
    options.setInput<uint8_t>(const_cast<uint8_t*>(static_cast<const uint8_t*>(op.send)), bytes);
    options.setOutput<uint8_t>(static_cast<uint8_t*>(op.recv), bytes * size());
    options.setTag(Tag(op.seq));
    options.setTimeout(Remaining(deadline));
    DSV3_GLOO_CALL(::gloo::allgather(options));
    return absl::OkStatus();
  }

  absl::Status RunAllToAll(const CommOp& op, absl::Time deadline) override {
    const int64_t esize = static_cast<int64_t>(DataTypeSize(op.dtype));
    std::vector<int64_t> send_bytes(size()), recv_bytes(size());
    for (int r = 0; r < size(); ++r) {
      send_bytes[r] = static_cast<int64_t>(op.send_counts[r]) * esize;
      recv_bytes[r] = static_cast<int64_t>(op.recv_counts[r]) * esize;
    }
    return AllToAllBytes(op.send, send_bytes, op.recv, recv_bytes, op.seq, deadline);
  }

  absl::Status RunSendRecv(const CommOp& op, absl::Time deadline) override {
    const absl::Time start = absl::Now();
    std::vector<int> sent_to(size(), 0), received_from(size(), 0);
    std::vector<std::unique_ptr<UnboundBuffer>> recvs, sends;
    std::vector<int> recv_peers, send_peers;
    for (const PeerRecv& r : op.recvs) {
      const size_t bytes = r.count * DataTypeSize(r.dtype);
      const uint64_t slot = ::gloo::Slot::build(kSendRecvSlotPrefix, Tag(op.pair_seq[r.peer])) +
                            static_cast<uint8_t>(received_from[r.peer]++);
      if (bytes == 0) continue;  // the peer's matching message is empty too (headers agreed)
      recvs.push_back(context_->createUnboundBuffer(r.data, bytes));
      recv_peers.push_back(r.peer);
      if (absl::Status s = PostRecv(recvs.back().get(), r.peer, slot, bytes); !s.ok()) {
        return PeerError(s, r.peer, "data", start);
      }
    }
    for (const PeerSend& snd : op.sends) {
      const size_t bytes = snd.count * DataTypeSize(snd.dtype);
      const uint64_t slot = ::gloo::Slot::build(kSendRecvSlotPrefix, Tag(op.pair_seq[snd.peer])) +
                            static_cast<uint8_t>(sent_to[snd.peer]++);
      if (bytes == 0) continue;
      sends.push_back(context_->createUnboundBuffer(const_cast<void*>(snd.data), bytes));
      send_peers.push_back(snd.peer);
      if (absl::Status s = PostSend(sends.back().get(), snd.peer, slot, bytes); !s.ok()) {
        return PeerError(s, snd.peer, "data", start);
      }
    }
    for (size_t i = 0; i < recvs.size(); ++i) {
      if (absl::Status s = WaitRecv(recvs[i].get(), deadline); !s.ok()) {
        return PeerError(s, recv_peers[i], "data", start);
      }
    }
    for (size_t i = 0; i < sends.size(); ++i) {
      if (absl::Status s = WaitSend(sends[i].get(), deadline); !s.ok()) {
        return PeerError(s, send_peers[i], "data (sending)", start);
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Communicator>> CreateGroup(const std::string& name, int rank,
                                                            int size) override {
    return Connect(store(), device_, name, rank, size, timeout());
  }

  // Gloo's collectives report a broken connection by the peer's socket address; say which rank
  // that is.
  absl::Status NamePeer(const absl::Status& s) const override {
    if (s.ok()) return s;
    const absl::string_view message = s.message();
    for (const auto& [address, peer] : peer_addresses_) {
      const size_t at = message.find(address);
      const size_t end = at + address.size();
      if (at != absl::string_view::npos &&
          (end == message.size() || !absl::ascii_isdigit(message[end]))) {
        if (absl::IsUnavailable(s)) {
          return absl::UnavailableError(absl::StrCat("lost the connection to rank ", peer,
                                                     " (it died or aborted); ", s.message()));
        }
        return absl::Status(s.code(), absl::StrCat("rank ", peer, ": ", s.message()));
      }
    }
    return s;
  }

  // Gloo has no public way to fail the operations pending on a context, except this: a wait that
  // times out on any buffer of the context makes Gloo signal every pair ("Application timeout
  // caused pair closure"), which fails every pending send and receive, ours and the ones inside
  // Gloo's collectives, and closes the sockets, so the peers see the connection go.
  void CloseTransport() override {
    try {
      static char dummy = 0;
      std::unique_ptr<UnboundBuffer> poison = context_->createUnboundBuffer(&dummy, 1);
      poison->waitRecv(std::chrono::milliseconds(1));
    } catch (const std::exception&) {
      // Expected: the timeout.
    }
    try {
      context_->closeConnections();
    } catch (const std::exception&) {
      // Already closed.
    }
  }

 private:
  GlooCommunicator(std::shared_ptr<Store> store, std::shared_ptr<::gloo::transport::Device> device,
                   std::shared_ptr<::gloo::rendezvous::Context> context, std::string name, int rank,
                   int size, absl::Duration timeout)
      : CommunicatorBase(rank, size, std::move(name), timeout, std::move(store)),
        device_(std::move(device)),
        context_(std::move(context)),
        control_count_(size, 0) {}

  template <typename T>
  absl::Status AllReduceTyped(const CommOp& op, absl::Time deadline) {
    ::gloo::AllreduceOptions options(context_);
    if (op.send != op.recv) {
      options.setInput(const_cast<T*>(static_cast<const T*>(op.send)), op.count);
    }
    options.setOutput(static_cast<T*>(op.recv), op.count);
    options.setReduceFunction(
        static_cast<void (*)(void*, const void*, const void*, size_t)>(&::gloo::sum<T>));
    options.setTag(Tag(op.seq));
    options.setTimeout(Remaining(deadline));
    DSV3_GLOO_CALL(::gloo::allreduce(options));
    return absl::OkStatus();
  }

  // Gloo's all-to-all-v on bytes. Every rank takes part even with nothing to send or receive
  // (Gloo exchanges empty messages too), so a null buffer is replaced by a dummy one.
  absl::Status AllToAllBytes(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                             const std::vector<int64_t>& recv_bytes, int64_t seq,
                             absl::Time deadline) {
    static uint8_t dummy = 0;
    ::gloo::AlltoallvOptions options(context_);
    uint8_t* in =
        send != nullptr ? const_cast<uint8_t*>(static_cast<const uint8_t*>(send)) : &dummy;
    uint8_t* out = recv != nullptr ? static_cast<uint8_t*>(recv) : &dummy;
    options.setInput<uint8_t>(in, send_bytes);
    options.setOutput<uint8_t>(out, recv_bytes);
    options.setTag(Tag(seq));
    options.setTimeout(Remaining(deadline));
    DSV3_GLOO_CALL(::gloo::alltoallv(options));
    return absl::OkStatus();
  }

  // Header sends of failed exchanges, kept until the communicator goes (see ExchangeHeaders).
  struct SentHeaders {
    std::vector<EncodedOpHeader> bytes;
    std::vector<std::unique_ptr<UnboundBuffer>> buffers;
  };
  absl::Mutex orphans_mu_;
  std::vector<std::unique_ptr<SentHeaders>> orphans_ ABSL_GUARDED_BY(orphans_mu_);
  // The socket addresses of this rank's pairs as Gloo prints them ("[127.0.0.1]:40123"), with
  // the rank at the other end. Set before the queue starts; read-only afterwards.
  std::vector<std::pair<std::string, int>> peer_addresses_;
  const std::shared_ptr<::gloo::transport::Device> device_;  // shared with split groups
  const std::shared_ptr<::gloo::rendezvous::Context> context_;
  // Headers exchanged with each peer so far; only the queue thread touches it.
  std::vector<uint32_t> control_count_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const CommunicatorOptions& options) {
  absl::StatusOr<std::shared_ptr<::gloo::transport::Device>> device = OpenDevice(options);
  if (!device.ok()) {
    return absl::Status(device.status().code(),
                        absl::StrCat("group '", options.name, "' rank ", options.rank,
                                     ": opening a Gloo TCP device on ",
                                     options.interface.empty() ? options.host : options.interface,
                                     ": ", device.status().message()));
  }
  return GlooCommunicator::Connect(options.store, std::move(*device), options.name, options.rank,
                                   options.world_size, options.timeout);
}

}  // namespace dsv3::parallel
