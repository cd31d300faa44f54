// CommunicatorBase; see communicator_base.h.
#include "engine/parallel/communicator_base.h"

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/rank_position.h"
#include "common/status_macros.h"

namespace dsv3::parallel {
namespace {

// How much longer than the op's own bound an internal wait for a Work lasts, so that the op's own
// (more precise) error is seen rather than the wait's.
constexpr absl::Duration kWaitSlack = absl::Seconds(5);

// How long (at most; never longer than the communicator's timeout) a rank whose collective failed
// on a lost or silent peer waits for the other ranks to report the same failure through the
// store; those that do not are named as dead or hung.
constexpr absl::Duration kPostMortemWindow = absl::Seconds(2);

// Prefixes a status's message, keeping its code.
absl::Status Annotate(const absl::Status& status, absl::string_view prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, ": ", status.message()));
}

}  // namespace

CommunicatorBase::CommunicatorBase(int rank, int size, std::string name, absl::Duration timeout,
                                   std::shared_ptr<Store> store)
    : rank_(rank),
      size_(size),
      name_(std::move(name)),
      group_id_(CollectiveGroupId(name_)),
      timeout_(timeout),
      store_(std::move(store)),
      next_pair_seq_(size, 0) {}

CommunicatorBase::~CommunicatorBase() {
  // The derived class's destructor has stopped the queue (it runs the derived class's methods);
  // this only catches a derived class that forgot to, before the thread outlives its object.
  if (thread_.joinable()) StopQueue();
}

void CommunicatorBase::StartQueue() {
  thread_ = std::thread([this] { RunQueue(); });
}

void CommunicatorBase::StopQueue() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

std::unique_ptr<Work> CommunicatorBase::Issue(CommOp op, int64_t* seq_out) {
  if (absl::Status s = ValidateOp(op, name_, rank_, size_); !s.ok()) return CompletedWork(s);
  auto state = std::make_shared<WorkState>();
  absl::MutexLock lock(&mu_);
  if (op.kind == OpKind::kSendRecv) {
    op.seq = -1;
    op.pair_seq.assign(size_, -1);
    std::vector<bool> involved(size_, false);
    for (const PeerSend& s : op.sends) involved[s.peer] = true;
    for (const PeerRecv& r : op.recvs) involved[r.peer] = true;
    for (int p = 0; p < size_; ++p) {
      if (involved[p]) op.pair_seq[p] = next_pair_seq_[p]++;
    }
  } else {
    op.seq = next_seq_++;
    // Where this rank is, for the worker's heartbeats and hang reports.
    RankPosition& position = GlobalRankPosition();
    position.collective_group.store(group_id_, std::memory_order_relaxed);
    position.collective_seq.store(op.seq, std::memory_order_relaxed);
  }
  if (seq_out != nullptr) *seq_out = op.seq;
  FillOpHeaders(op, rank_, size_);
  if (!broken_.ok()) return CompletedWork(BrokenError(op));
  if (stopping_) {
    return CompletedWork(
        absl::CancelledError(absl::StrCat("group '", name_, "' rank ", rank_, ": ", op.description,
                                          ": the communicator is shutting down")));
  }
  queue_.push_back(Queued{std::move(op), state});
  return std::make_unique<StateWork>(std::move(state));
}

absl::Status CommunicatorBase::BrokenError(const CommOp& op) {
  return absl::FailedPreconditionError(absl::StrCat(
      "group '", name_, "' rank ", rank_, ": ", op.description, " not run: the communicator is ",
      "broken since ", broken_by_, ": ", broken_.message()));
}

void CommunicatorBase::Latch(const absl::Status& status, const std::string& by) {
  absl::MutexLock lock(&mu_);
  if (!broken_.ok()) return;
  broken_ = status;
  broken_by_ = by;
}

absl::Status CommunicatorBase::Fail(const CommOp& op, absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    if (!broken_.ok()) {
      // Aborted while the op was in flight: say so, the op's own error is only a consequence.
      return absl::Status(status.code(),
                          absl::StrCat(status.message(), " (the communicator is ", "broken since ",
                                       broken_by_, ": ", broken_.message(), ")"));
    }
    broken_ = status;
    broken_by_ = absl::StrCat(op.description, " failed");
  }
  // A disagreement is seen only by the ranks of the disagreeing pairs; the others may already be
  // moving data with them. Closing the connections makes those fail at once instead of at their
  // timeout. (A timeout or a lost peer is seen by every rank on its own, so nothing to do.)
  if (absl::IsFailedPrecondition(status)) CloseTransport();
  return status;
}

void CommunicatorBase::RunQueue() {
  while (true) {
    Queued item;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](CommunicatorBase* c)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) { return c->stopping_ || !c->queue_.empty(); },
          this));
      if (queue_.empty()) return;  // stopping, nothing left
      item = std::move(queue_.front());
      queue_.pop_front();
      if (stopping_) {
        // Fail what is queued; only the operation in flight is waited for.
        item.state->Complete(absl::CancelledError(
            absl::StrCat("group '", name_, "' rank ", rank_, ": ", item.op.description,
                         ": the communicator was destroyed before it ran")));
        continue;
      }
      if (!broken_.ok()) {
        item.state->Complete(BrokenError(item.op));
        continue;
      }
    }
    absl::Status s = Execute(item.op);
    if (!s.ok()) s = Fail(item.op, std::move(s));
    item.state->Complete(std::move(s));
  }
}

absl::Status CommunicatorBase::Execute(const CommOp& op) {
  const absl::Time deadline = absl::Now() + timeout_;
  const std::string where = absl::StrCat("group '", name_, "' rank ", rank_, ": ", op.description);
  if (!op.peers.empty()) {
    std::vector<EncodedOpHeader> incoming(op.peers.size());
    if (absl::Status s = ExchangeHeaders(op, &incoming, deadline); !s.ok()) {
      return Annotate(WithPostMortem(op, s), where);
    }
    for (size_t i = 0; i < op.peers.size(); ++i) {
      absl::StatusOr<OpHeader> h =
          DecodeOpHeader(absl::string_view(incoming[i].data(), incoming[i].size()));
      if (!h.ok()) return Annotate(h.status(), absl::StrCat(where, ": from rank ", op.peers[i]));
      RETURN_IF_ERROR(CheckPeerHeader(op.outgoing[i], *h, name_, rank_, op.peers[i]));
    }
  }
  absl::Status s;
  switch (op.kind) {
    case OpKind::kAllReduce:
      s = RunAllReduce(op, deadline);
      break;
    case OpKind::kReduceScatter:
      s = RunReduceScatter(op, deadline);
      break;
    case OpKind::kAllGather:
    case OpKind::kSplit:
      s = RunAllGather(op, deadline);
      break;
    case OpKind::kAllToAll:
      s = RunAllToAll(op, deadline);
      break;
    case OpKind::kSendRecv:
      s = RunSendRecv(op, deadline);
      break;
    case OpKind::kBarrier:
      break;  // the header exchange is the barrier
  }
  if (!s.ok()) {
    return Annotate(WithPostMortem(op, NamePeer(s)), absl::StrCat(where, " (data phase)"));
  }
  return absl::OkStatus();
}

absl::Status CommunicatorBase::WithPostMortem(const CommOp& op, const absl::Status& failure) {
  if (op.kind == OpKind::kSendRecv ||
      !(absl::IsUnavailable(failure) || absl::IsDeadlineExceeded(failure))) {
    return failure;
  }
  {
    absl::MutexLock lock(&mu_);
    if (!broken_.ok()) return failure;  // aborted here: nobody else is to blame
  }
  return absl::Status(failure.code(),
                      absl::StrCat(failure.message(), "; ", PostMortem(op, failure)));
}

std::string CommunicatorBase::PostMortem(const CommOp& op, const absl::Status& failure) {
  const std::string prefix = absl::StrCat(name_, "/postmortem/", op.seq, "/");
  if (!store_->Set(absl::StrCat(prefix, rank_), failure.message().substr(0, 1000)).ok()) {
    return "post-mortem: the store is unavailable";
  }
  std::vector<std::string> keys;
  for (int p : op.peers) keys.push_back(absl::StrCat(prefix, p));
  const absl::Duration window = std::min(kPostMortemWindow, timeout_);
  if (store_->Wait(keys, window).ok()) {
    return "post-mortem: every rank saw this op fail";
  }
  std::vector<int> silent;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!store_->Wait({keys[i]}, absl::ZeroDuration()).ok()) silent.push_back(op.peers[i]);
  }
  return absl::StrCat("post-mortem: rank", silent.size() == 1 ? " " : "s ",
                      absl::StrJoin(silent, ", "), " did not report this failure within ",
                      absl::FormatDuration(window), " (dead or hung)");
}

std::unique_ptr<Work> CommunicatorBase::AllReduce(const void* send, void* recv, size_t count,
                                                  DataType dtype) {
  CommOp op;
  op.kind = OpKind::kAllReduce;
  op.dtype = dtype;
  op.send = send;
  op.recv = recv;
  op.count = count;
  return Issue(std::move(op));
}

std::unique_ptr<Work> CommunicatorBase::ReduceScatter(const void* send, void* recv,
                                                      size_t recv_count, DataType dtype) {
  CommOp op;
  op.kind = OpKind::kReduceScatter;
  op.dtype = dtype;
  op.send = send;
  op.recv = recv;
  op.count = recv_count;
  return Issue(std::move(op));
}

std::unique_ptr<Work> CommunicatorBase::AllGather(const void* send, void* recv, size_t send_count,
                                                  DataType dtype) {
  CommOp op;
  op.kind = OpKind::kAllGather;
  op.dtype = dtype;
  op.send = send;
  op.recv = recv;
  op.count = send_count;
  return Issue(std::move(op));
}

std::unique_ptr<Work> CommunicatorBase::AllToAll(const void* send,
                                                 absl::Span<const size_t> send_counts, void* recv,
                                                 absl::Span<const size_t> recv_counts,
                                                 DataType dtype) {
  CommOp op;
  op.kind = OpKind::kAllToAll;
  op.dtype = dtype;
  op.send = send;
  op.recv = recv;
  op.send_counts.assign(send_counts.begin(), send_counts.end());
  op.recv_counts.assign(recv_counts.begin(), recv_counts.end());
  return Issue(std::move(op));
}

std::unique_ptr<Work> CommunicatorBase::SendRecv(std::vector<PeerSend> sends,
                                                 std::vector<PeerRecv> recvs) {
  CommOp op;
  op.kind = OpKind::kSendRecv;
  op.sends = std::move(sends);
  op.recvs = std::move(recvs);
  return Issue(std::move(op));
}

std::unique_ptr<Work> CommunicatorBase::Barrier() {
  CommOp op;
  op.kind = OpKind::kBarrier;
  return Issue(std::move(op));
}

absl::StatusOr<std::unique_ptr<Communicator>> CommunicatorBase::Split(int color, int key) {
  const int64_t mine[2] = {color, key};
  std::vector<int64_t> all(2 * static_cast<size_t>(size_));
  CommOp op;
  op.kind = OpKind::kSplit;
  op.dtype = DataType::kInt64;
  op.send = mine;
  op.recv = all.data();
  op.count = 2;
  int64_t seq = -1;
  std::unique_ptr<Work> work = Issue(std::move(op), &seq);
  RETURN_IF_ERROR(work->Wait(timeout_ + kWaitSlack));
  if (color < 0) return std::unique_ptr<Communicator>();
  std::vector<std::pair<int64_t, int>> members;  // (key, parent rank)
  for (int r = 0; r < size_; ++r) {
    if (all[2 * r] == color) members.emplace_back(all[2 * r + 1], r);
  }
  std::sort(members.begin(), members.end());
  int new_rank = -1;
  for (size_t i = 0; i < members.size(); ++i) {
    if (members[i].second == rank_) new_rank = static_cast<int>(i);
  }
  const std::string child = absl::StrCat(name_, "/split", seq, ".color", color);
  return CreateGroup(child, new_rank, static_cast<int>(members.size()));
}

void CommunicatorBase::Abort(const absl::Status& reason) {
  Latch(reason.ok() ? absl::AbortedError("aborted") : reason, "Abort() was called");
  CloseTransport();
}

}  // namespace dsv3::parallel
