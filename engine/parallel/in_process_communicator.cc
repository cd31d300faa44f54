// The in-process backend; see in_process_communicator.h. A hub holds one FIFO of messages per
// ordered pair of ranks; every op first sends its headers, then its data, so the two never mix up.
// A rank that closes (Abort, destruction) makes the peers' waits on it fail with UNAVAILABLE, like
// a closed TCP connection.
#include "engine/parallel/in_process_communicator.h"

#include <unistd.h>

#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "engine/parallel/communicator_base.h"

namespace dsv3::parallel {
namespace {

class InProcessHub {
 public:
  explicit InProcessHub(int size) : size_(size), queues_(size * size), closed_(size, false) {}

  void Send(int src, int dst, std::string bytes) {
    absl::MutexLock lock(&mu_);
    queues_[src * size_ + dst].push_back(std::move(bytes));
  }

  // Takes the oldest message from `src` to `dst`. UNAVAILABLE when `src` closed and sent nothing
  // more; ABORTED when `dst` itself closed; DEADLINE_EXCEEDED at `deadline`. `what` names the
  // awaited message in errors ("header", "data").
  absl::StatusOr<std::string> Recv(int dst, int src, absl::Time deadline, absl::string_view what) {
    const absl::Time start = absl::Now();
    absl::MutexLock lock(&mu_);
    std::deque<std::string>& q = queues_[src * size_ + dst];
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !q.empty() || closed_[src] || closed_[dst];
    };
    mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
    if (!q.empty()) {
      std::string out = std::move(q.front());
      q.pop_front();
      return out;
    }
    if (closed_[dst]) {
      return absl::AbortedError(
          absl::StrCat("this rank was aborted while waiting for rank ", src, "'s ", what));
    }
    if (closed_[src]) {
      return absl::UnavailableError(absl::StrCat("rank ", src, " closed its connection (it died ",
                                                 "or aborted) before sending its ", what));
    }
    return absl::DeadlineExceededError(absl::StrCat(
        "timed out after ", absl::FormatDuration(absl::Now() - start), " waiting for rank ", src,
        "'s ", what, " (rank ", src, " is hung, dead, or did not issue this op)"));
  }

  void Close(int rank) {
    absl::MutexLock lock(&mu_);
    closed_[rank] = true;
  }

 private:
  const int size_;
  absl::Mutex mu_;
  std::vector<std::deque<std::string>> queues_ ABSL_GUARDED_BY(mu_);  // [src * size + dst]
  std::vector<bool> closed_ ABSL_GUARDED_BY(mu_);
};

// Process-wide directory of live hubs, so that ranks find rank 0's hub from the id it published.
class HubRegistry {
 public:
  static HubRegistry& Get() {
    static HubRegistry* registry = new HubRegistry();  // never destroyed
    return *registry;
  }

  std::string Register(const std::shared_ptr<InProcessHub>& hub) {
    absl::MutexLock lock(&mu_);
    for (auto it = hubs_.begin(); it != hubs_.end();) {
      it = it->second.expired() ? hubs_.erase(it) : std::next(it);
    }
    std::string id = absl::StrCat("pid", ::getpid(), "-hub", next_id_++);
    hubs_[id] = hub;
    return id;
  }

  std::shared_ptr<InProcessHub> Find(const std::string& id) {
    absl::MutexLock lock(&mu_);
    auto it = hubs_.find(id);
    return it == hubs_.end() ? nullptr : it->second.lock();
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::weak_ptr<InProcessHub>> hubs_ ABSL_GUARDED_BY(mu_);
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
};

absl::string_view Bytes(const void* p, size_t n) {
  return n == 0 ? absl::string_view() : absl::string_view(static_cast<const char*>(p), n);
}

absl::Status CheckSize(const std::string& got, size_t want, int peer) {
  if (got.size() != want) {
    return absl::InternalError(
        absl::StrCat("rank ", peer, " sent ", got.size(), " bytes where ", want, " were expected"));
  }
  return absl::OkStatus();
}

class InProcessCommunicator : public CommunicatorBase {
 public:
  static absl::StatusOr<std::unique_ptr<Communicator>> Connect(std::shared_ptr<Store> store,
                                                               const std::string& name, int rank,
                                                               int size, absl::Duration timeout) {
    const std::string key = absl::StrCat(name, "/in_process/hub");
    std::shared_ptr<InProcessHub> hub;
    if (rank == 0) {
      hub = std::make_shared<InProcessHub>(size);
      RETURN_IF_ERROR(store->Set(key, HubRegistry::Get().Register(hub)));
    } else {
      absl::StatusOr<std::string> id = store->Get(key, timeout);
      if (!id.ok()) {
        return absl::Status(id.status().code(),
                            absl::StrCat("group '", name, "' rank ", rank, ": rank 0 did not ",
                                         "publish its hub: ", id.status().message()));
      }
      hub = HubRegistry::Get().Find(*id);
      if (hub == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "group '", name, "' rank ", rank, ": in-process hub '", *id, "' is not in this ",
            "process (in-process ranks must be threads of one process) or is gone"));
      }
    }
    RETURN_IF_ERROR(JoinGroup(*store, name, rank, size, timeout));
    auto comm = std::unique_ptr<InProcessCommunicator>(
        new InProcessCommunicator(std::move(store), name, rank, size, timeout, std::move(hub)));
    comm->StartQueue();
    return std::unique_ptr<Communicator>(std::move(comm));
  }

  ~InProcessCommunicator() override {
    StopQueue();
    hub_->Close(rank());
  }

  Backend backend() const override { return Backend::kInProcess; }

 protected:
  absl::Status ExchangeHeaders(const CommOp& op, std::vector<EncodedOpHeader>* incoming,
                               absl::Time deadline) override {
    for (size_t i = 0; i < op.peers.size(); ++i) {
      const EncodedOpHeader h = EncodeOpHeader(op.outgoing[i]);
      hub_->Send(rank(), op.peers[i], std::string(h.data(), h.size()));
    }
    for (size_t i = 0; i < op.peers.size(); ++i) {
      ASSIGN_OR_RETURN(std::string got, hub_->Recv(rank(), op.peers[i], deadline, "header"));
      RETURN_IF_ERROR(CheckSize(got, kOpHeaderBytes, op.peers[i]));
      std::memcpy((*incoming)[i].data(), got.data(), kOpHeaderBytes);
    }
    return absl::OkStatus();
  }

  absl::Status RunAllReduce(const CommOp& op, absl::Time deadline) override {
    const size_t bytes = op.count * DataTypeSize(op.dtype);
    for (int p : op.peers) hub_->Send(rank(), p, std::string(Bytes(op.send, bytes)));
    std::string acc;
    for (int r = 0; r < size(); ++r) {
      std::string contribution;
      if (r == rank()) {
        contribution = std::string(Bytes(op.send, bytes));
      } else {
        ASSIGN_OR_RETURN(contribution, hub_->Recv(rank(), r, deadline, "data"));
        RETURN_IF_ERROR(CheckSize(contribution, bytes, r));
      }
      if (r == 0) {
        acc = std::move(contribution);
      } else {
        SumInto(op.dtype, acc.data(), contribution.data(), op.count);
      }
    }
    if (bytes > 0) std::memcpy(op.recv, acc.data(), bytes);
    return absl::OkStatus();
  }

  absl::Status RunReduceScatter(const CommOp& op, absl::Time deadline) override {
    const size_t block = op.count * DataTypeSize(op.dtype);
    const char* send = static_cast<const char*>(op.send);
    for (int p : op.peers) hub_->Send(rank(), p, std::string(Bytes(send + p * block, block)));
    std::string acc;
    for (int r = 0; r < size(); ++r) {
      std::string contribution;
      if (r == rank()) {
        contribution = std::string(Bytes(send + rank() * block, block));
      } else {
        ASSIGN_OR_RETURN(contribution, hub_->Recv(rank(), r, deadline, "data"));
        RETURN_IF_ERROR(CheckSize(contribution, block, r));
      }
      if (r == 0) {
        acc = std::move(contribution);
      } else {
        SumInto(op.dtype, acc.data(), contribution.data(), op.count);
      }
    }
    if (block > 0) std::memcpy(op.recv, acc.data(), block);
    return absl::OkStatus();
  }

  absl::Status RunAllGather(const CommOp& op, absl::Time deadline) override {
    const size_t block = op.count * DataTypeSize(op.dtype);
    char* recv = static_cast<char*>(op.recv);
    for (int p : op.peers) hub_->Send(rank(), p, std::string(Bytes(op.send, block)));
    if (block > 0) std::memcpy(recv + rank() * block, op.send, block);
    for (int p : op.peers) {
      ASSIGN_OR_RETURN(std::string got, hub_->Recv(rank(), p, deadline, "data"));
      RETURN_IF_ERROR(CheckSize(got, block, p));
      if (block > 0) std::memcpy(recv + p * block, got.data(), block);
    }
    return absl::OkStatus();
  }

  absl::Status RunAllToAll(const CommOp& op, absl::Time deadline) override {
    const size_t esize = DataTypeSize(op.dtype);
    std::vector<size_t> send_offset(size() + 1, 0), recv_offset(size() + 1, 0);
    for (int r = 0; r < size(); ++r) {
      send_offset[r + 1] = send_offset[r] + op.send_counts[r] * esize;
      recv_offset[r + 1] = recv_offset[r] + op.recv_counts[r] * esize;
    }
    const char* send = static_cast<const char*>(op.send);
    char* recv = static_cast<char*>(op.recv);
    for (int p : op.peers) {
      hub_->Send(rank(), p,
                 std::string(Bytes(send + send_offset[p], send_offset[p + 1] - send_offset[p])));
    }
    const size_t own = recv_offset[rank() + 1] - recv_offset[rank()];
    if (own > 0) std::memcpy(recv + recv_offset[rank()], send + send_offset[rank()], own);
    for (int p : op.peers) {
      ASSIGN_OR_RETURN(std::string got, hub_->Recv(rank(), p, deadline, "data"));
      const size_t want = recv_offset[p + 1] - recv_offset[p];
      RETURN_IF_ERROR(CheckSize(got, want, p));
      if (want > 0) std::memcpy(recv + recv_offset[p], got.data(), want);
    }
    return absl::OkStatus();
  }

  absl::Status RunSendRecv(const CommOp& op, absl::Time deadline) override {
    for (const PeerSend& s : op.sends) {
      hub_->Send(rank(), s.peer, std::string(Bytes(s.data, s.count * DataTypeSize(s.dtype))));
    }
    for (const PeerRecv& r : op.recvs) {
      ASSIGN_OR_RETURN(std::string got, hub_->Recv(rank(), r.peer, deadline, "data"));
      const size_t want = r.count * DataTypeSize(r.dtype);
      RETURN_IF_ERROR(CheckSize(got, want, r.peer));
      if (want > 0) std::memcpy(r.data, got.data(), want);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Communicator>> CreateGroup(const std::string& name, int rank,
                                                            int size) override {
    return Connect(store(), name, rank, size, timeout());
  }

  void CloseTransport() override { hub_->Close(rank()); }

 private:
  InProcessCommunicator(std::shared_ptr<Store> store, std::string name, int rank, int size,
                        absl::Duration timeout, std::shared_ptr<InProcessHub> hub)
      : CommunicatorBase(rank, size, std::move(name), timeout, std::move(store)),
        hub_(std::move(hub)) {}

  const std::shared_ptr<InProcessHub> hub_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateInProcessCommunicator(
    const CommunicatorOptions& options) {
  return InProcessCommunicator::Connect(options.store, options.name, options.rank,
                                        options.world_size, options.timeout);
}

}  // namespace dsv3::parallel
