// The NCCL backend; see nccl_communicator.h. One NcclState per communicator, shared with its
// Works: the NCCL communicator (non-blocking mode, so that nothing waits without a bound), the
// stream, the sequence numbers and the failure latch. Issuing is serialised (NCCL forbids
// concurrent calls on one communicator); completion is polled on CUDA events.
#include "engine/parallel/nccl_communicator.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "engine/parallel/communicator_op.h"
#include "engine/parallel/communicator_work.h"
#include "engine/parallel/nccl_status.h"

namespace dsv3::parallel {

namespace {

constexpr absl::Duration kPostMortemWindow = absl::Seconds(2);
constexpr absl::Duration kWaitSlack = absl::Seconds(5);

ncclDataType_t NcclType(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kInt32:
      return ncclInt32;
    case DataType::kInt64:
      return ncclInt64;
    case DataType::kUint8:
      break;
  }
  return ncclUint8;
}

// Polls a non-blocking communicator until its pending call has finished (or failed), at most
// until `deadline`.
absl::Status WaitReady(ncclComm_t comm, absl::Time deadline) {
  absl::Duration sleep = absl::Microseconds(20);
  while (true) {
    ncclResult_t state = ncclSuccess;
    DSV3_NCCL_RETURN_IF_ERROR(comm, ncclCommGetAsyncError(comm, &state));
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) {
      return NcclErrorToStatus(state, comm, "ncclCommGetAsyncError", __FILE__, __LINE__);
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError("the NCCL communicator did not become ready in time");
    }
    absl::SleepFor(sleep);
    sleep = std::min(sleep * 2, absl::Milliseconds(1));
  }
}

// What a communicator and its Works share.
class NcclState {
 public:
  NcclState(ncclComm_t comm, cudaStream_t stream, void* scratch, int device, int rank, int size,
            std::string name, absl::Duration timeout, std::shared_ptr<Store> store)
      : comm_(comm),
        stream_(stream),
        scratch_(scratch),
        device_(device),
        rank_(rank),
        size_(size),
        name_(std::move(name)),
        timeout_(timeout),
        store_(std::move(store)),
        next_pair_seq_(size, 0) {}

  ~NcclState() {
    cudaSetDevice(device_);
    if (!aborted_.load()) {
      // Flush and free; abort if a peer keeps the flush from finishing.
      const ncclResult_t r = ncclCommFinalize(comm_);
      if ((r != ncclSuccess && r != ncclInProgress) ||
          !WaitReady(comm_, absl::Now() + timeout_).ok()) {
        ncclCommAbort(comm_);
      } else {
        ncclCommDestroy(comm_);
      }
    }
    cudaFree(scratch_);
    cudaStreamDestroy(stream_);
  }

  ncclComm_t comm() const { return comm_; }
  cudaStream_t stream() const { return stream_; }
  void* scratch() const { return scratch_; }
  int device() const { return device_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }
  absl::Duration timeout() const { return timeout_; }
  const std::shared_ptr<Store>& store() const { return store_; }
  bool aborted() const { return aborted_.load(); }

  // Numbers `op` and fills its description; FAILED_PRECONDITION once the communicator is broken.
  absl::Status Number(CommOp& op) {
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
    }
    FillOpHeaders(op, rank_, size_);
    if (!broken_.ok()) return BrokenError(op.description);
    return absl::OkStatus();
  }

  absl::Status BrokenError(const std::string& description) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "group '", name_, "' rank ", rank_, ": ", description, " not run: the communicator is ",
        "broken since ", broken_by_, ": ", broken_.message()));
  }

  // Latches the first failure and aborts the NCCL communicator (once; any thread).
  void Fail(const absl::Status& status, const std::string& by) {
    {
      absl::MutexLock lock(&mu_);
      if (broken_.ok()) {
        broken_ = status;
        broken_by_ = by;
      }
    }
    std::call_once(abort_once_, [this] {
      aborted_.store(true);
      ncclCommAbort(comm_);
    });
  }

  absl::Status broken() {
    absl::MutexLock lock(&mu_);
    return broken_;
  }

  // After `description` (sequence number `seq`) did not complete in time: records it under
  // "<name>/nccl_postmortem/<rank>", waits briefly for the other ranks' records, and returns a
  // sentence naming the ranks at another op or silent (dead or hung).
  std::string PostMortem(int64_t seq, const std::string& description) {
    const std::string prefix = absl::StrCat(name_, "/nccl_postmortem/");
    if (!store_->Set(absl::StrCat(prefix, rank_), absl::StrCat(seq, "|", description)).ok()) {
      return "post-mortem: the store is unavailable";
    }
    std::vector<std::string> keys;
    for (int p = 0; p < size_; ++p) {
      if (p != rank_) keys.push_back(absl::StrCat(prefix, p));
    }
    (void)store_->Wait(keys, kPostMortemWindow);
    std::vector<std::string> findings;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      absl::StatusOr<std::string> v = store_->Get(absl::StrCat(prefix, p), absl::ZeroDuration());
      if (!v.ok()) {
        findings.push_back(absl::StrCat("rank ", p, " did not report (dead or hung)"));
        continue;
      }
      std::vector<std::string> parts = absl::StrSplit(*v, absl::MaxSplits('|', 1));
      if (parts.size() == 2 && parts[1] != description) {
        findings.push_back(absl::StrCat("rank ", p, " is at ", parts[1]));
      }
    }
    if (findings.empty()) return "post-mortem: every rank is stuck at this op";
    return absl::StrCat("post-mortem: ", absl::StrJoin(findings, "; "));
  }

  absl::Mutex issue_mu;  // serialises NCCL calls on comm_

 private:
  const ncclComm_t comm_;
  const cudaStream_t stream_;
  void* const scratch_;  // one int32 on the device, for Barrier
  const int device_;
  const int rank_;
  const int size_;
  const std::string name_;
  const absl::Duration timeout_;
  const std::shared_ptr<Store> store_;

  std::once_flag abort_once_;
  std::atomic<bool> aborted_{false};
  absl::Mutex mu_;
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> next_pair_seq_ ABSL_GUARDED_BY(mu_);
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
  std::string broken_by_ ABSL_GUARDED_BY(mu_);
};

class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<NcclState> state, cudaEvent_t event, absl::Time deadline, int64_t seq,
           std::string where, std::string description)
      : state_(std::move(state)),
        event_(event),
        deadline_(deadline),
        seq_(seq),
        where_(std::move(where)),
        description_(std::move(description)) {}

  ~NcclWork() override {
    (void)Wait(std::max(deadline_ - absl::Now(), absl::ZeroDuration()) + kWaitSlack);
    cudaEventDestroy(event_);
  }

  absl::Status Wait(absl::Duration timeout) override {
    absl::MutexLock lock(&mu_);
    const absl::Time wait_end = absl::Now() + timeout;
    absl::Duration sleep = absl::Microseconds(20);
    while (!done_) {
      Poll();
      if (done_) break;
      if (absl::Now() >= wait_end) {
        return absl::DeadlineExceededError(
            absl::StrCat("operation not completed within ", absl::FormatDuration(timeout)));
      }
      absl::SleepFor(sleep);
      sleep = std::min(sleep * 2, absl::Milliseconds(1));
    }
    return status_;
  }

  bool IsCompleted() override {
    absl::MutexLock lock(&mu_);
    if (!done_) Poll();
    return done_;
  }

 private:
  void Finish(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    done_ = true;
    status_ = std::move(status);
  }

  void Poll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    cudaSetDevice(state_->device());
    const cudaError_t q = cudaEventQuery(event_);
    if (q == cudaSuccess) return Finish(absl::OkStatus());
    if (q != cudaErrorNotReady) {
      absl::Status s = CudaErrorToStatus(q, "cudaEventQuery", __FILE__, __LINE__);
      state_->Fail(s, absl::StrCat(description_, " failed"));
      return Finish(Annotate(s));
    }
    if (state_->aborted()) {
      const absl::Status broken = state_->broken();
      return Finish(
          absl::Status(broken.code(), absl::StrCat(where_, ": aborted: ", broken.message())));
    }
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(state_->comm(), &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      absl::Status s =
          NcclErrorToStatus(async, state_->comm(), "ncclCommGetAsyncError", __FILE__, __LINE__);
      state_->Fail(s, absl::StrCat(description_, " failed"));
      return Finish(Annotate(s));
    }
    if (absl::Now() >= deadline_) {
      absl::Status s = absl::DeadlineExceededError(
          absl::StrCat("did not complete within ", absl::FormatDuration(state_->timeout()), "; ",
                       state_->PostMortem(seq_, description_)));
      state_->Fail(s, absl::StrCat(description_, " timed out"));
      return Finish(Annotate(s));
    }
  }

  absl::Status Annotate(const absl::Status& s) const {
    return absl::Status(s.code(), absl::StrCat(where_, ": ", s.message()));
  }

  const std::shared_ptr<NcclState> state_;
  const cudaEvent_t event_;
  const absl::Time deadline_;
  const int64_t seq_;
  const std::string where_;        // "group 'world' rank 0: all_reduce #3 (float32 x 10)"
  const std::string description_;  // "all_reduce #3 (float32 x 10)"
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(std::shared_ptr<NcclState> state) : state_(std::move(state)) {}

  int rank() const override { return state_->rank(); }
  int size() const override { return state_->size(); }
  Backend backend() const override { return Backend::kNccl; }
  const std::string& name() const override { return state_->name(); }
  absl::Duration timeout() const override { return state_->timeout(); }

  std::unique_ptr<Work> AllReduce(const void* send, void* recv, size_t count,
                                  DataType dtype) override {
    CommOp op;
    op.kind = OpKind::kAllReduce;
    op.dtype = dtype;
    op.send = send;
    op.recv = recv;
    op.count = count;
    return Issue(std::move(op), [&](const CommOp& o) -> absl::Status {
      DSV3_NCCL_RETURN_IF_ERROR(comm(), ncclAllReduce(o.send, o.recv, o.count, NcclType(o.dtype),
                                                      ncclSum, comm(), stream()));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> ReduceScatter(const void* send, void* recv, size_t recv_count,
                                      DataType dtype) override {
    CommOp op;
    op.kind = OpKind::kReduceScatter;
    op.dtype = dtype;
    op.send = send;
    op.recv = recv;
    op.count = recv_count;
    return Issue(std::move(op), [&](const CommOp& o) -> absl::Status {
      DSV3_NCCL_RETURN_IF_ERROR(
          comm(),
          ncclReduceScatter(o.send, o.recv, o.count, NcclType(o.dtype), ncclSum, comm(), stream()));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> AllGather(const void* send, void* recv, size_t send_count,
                                  DataType dtype) override {
    CommOp op;
    op.kind = OpKind::kAllGather;
    op.dtype = dtype;
    op.send = send;
    op.recv = recv;
    op.count = send_count;
    return Issue(std::move(op), [&](const CommOp& o) -> absl::Status {
      DSV3_NCCL_RETURN_IF_ERROR(
          comm(), ncclAllGather(o.send, o.recv, o.count * DataTypeSize(o.dtype), ncclUint8, comm(),
                                stream()));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> AllToAll(const void* send, absl::Span<const size_t> send_counts, void* recv,
                                 absl::Span<const size_t> recv_counts, DataType dtype) override {
    CommOp op;
    op.kind = OpKind::kAllToAll;
    op.dtype = dtype;
    op.send = send;
    op.recv = recv;
    op.send_counts.assign(send_counts.begin(), send_counts.end());
    op.recv_counts.assign(recv_counts.begin(), recv_counts.end());
    return Issue(std::move(op), [&](const CommOp& o) -> absl::Status {
      const size_t esize = DataTypeSize(o.dtype);
      const char* in = static_cast<const char*>(o.send);
      char* out = static_cast<char*>(o.recv);
      size_t send_offset = 0, recv_offset = 0;
      DSV3_NCCL_RETURN_IF_ERROR(comm(), ncclGroupStart());
      for (int p = 0; p < size(); ++p) {
        const size_t send_bytes = o.send_counts[p] * esize;
        const size_t recv_bytes = o.recv_counts[p] * esize;
        if (p == rank()) {
          if (send_bytes > 0) {
            DSV3_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out + recv_offset, in + send_offset,
                                                      send_bytes, cudaMemcpyDeviceToDevice,
                                                      stream()));
          }
        } else {
          if (send_bytes > 0) {
            DSV3_NCCL_RETURN_IF_ERROR(
                comm(), ncclSend(in + send_offset, send_bytes, ncclUint8, p, comm(), stream()));
          }
          if (recv_bytes > 0) {
            DSV3_NCCL_RETURN_IF_ERROR(
                comm(), ncclRecv(out + recv_offset, recv_bytes, ncclUint8, p, comm(), stream()));
          }
        }
        send_offset += send_bytes;
        recv_offset += recv_bytes;
      }
      DSV3_NCCL_RETURN_IF_ERROR(comm(), ncclGroupEnd());
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> SendRecv(std::vector<PeerSend> sends,
                                 std::vector<PeerRecv> recvs) override {
    CommOp op;
    op.kind = OpKind::kSendRecv;
    op.sends = std::move(sends);
    op.recvs = std::move(recvs);
    return Issue(std::move(op), [&](const CommOp& o) -> absl::Status {
      DSV3_NCCL_RETURN_IF_ERROR(comm(), ncclGroupStart());
      for (const PeerSend& s : o.sends) {
        if (s.count == 0) continue;
        DSV3_NCCL_RETURN_IF_ERROR(comm(), ncclSend(s.data, s.count * DataTypeSize(s.dtype),
                                                   ncclUint8, s.peer, comm(), stream()));
      }
      for (const PeerRecv& r : o.recvs) {
        if (r.count == 0) continue;
        DSV3_NCCL_RETURN_IF_ERROR(comm(), ncclRecv(r.data, r.count * DataTypeSize(r.dtype),
                                                   ncclUint8, r.peer, comm(), stream()));
      }
      DSV3_NCCL_RETURN_IF_ERROR(comm(), ncclGroupEnd());
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> Barrier() override {
    CommOp op;
    op.kind = OpKind::kBarrier;
    return Issue(std::move(op), [&](const CommOp&) -> absl::Status {
      DSV3_NCCL_RETURN_IF_ERROR(comm(), ncclAllReduce(state_->scratch(), state_->scratch(), 1,
                                                      ncclInt32, ncclSum, comm(), stream()));
      return absl::OkStatus();
    });
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    CommOp op;
    op.kind = OpKind::kSplit;
    op.dtype = DataType::kInt64;
    absl::MutexLock issue(&state_->issue_mu);
    RETURN_IF_ERROR(state_->Number(op));
    const std::string where =
        absl::StrCat("group '", name(), "' rank ", rank(), ": ", op.description);
    auto annotate = [&](const absl::Status& s) {
      state_->Fail(s, absl::StrCat(op.description, " failed"));
      return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
    };
    if (cudaError_t e = cudaSetDevice(state_->device()); e != cudaSuccess) {
      return annotate(CudaErrorToStatus(e, "cudaSetDevice", __FILE__, __LINE__));
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t child = nullptr;
    const ncclResult_t r =
        ncclCommSplit(comm(), color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      return annotate(NcclErrorToStatus(r, comm(), "ncclCommSplit", __FILE__, __LINE__));
    }
    const absl::Time deadline = absl::Now() + timeout();
    if (absl::Status s = WaitReady(comm(), deadline); !s.ok()) return annotate(s);
    if (color < 0) return std::unique_ptr<Communicator>();
    if (child == nullptr)
      return annotate(absl::InternalError("ncclCommSplit gave no communicator"));
    if (absl::Status s = WaitReady(child, deadline); !s.ok()) {
      ncclCommAbort(child);
      return annotate(s);
    }
    int child_rank = 0, child_size = 0;
    ncclCommUserRank(child, &child_rank);
    ncclCommCount(child, &child_size);
    return Wrap(child, state_->device(), child_rank, child_size,
                absl::StrCat(name(), "/split", op.seq, ".color", color), timeout(),
                state_->store());
  }

  void Abort(const absl::Status& reason) override {
    state_->Fail(reason.ok() ? absl::AbortedError("aborted") : reason, "Abort() was called");
  }

  // Takes ownership of a ready NCCL communicator and gives it a stream and a scratch buffer.
  static absl::StatusOr<std::unique_ptr<Communicator>> Wrap(ncclComm_t comm, int device, int rank,
                                                            int size, std::string name,
                                                            absl::Duration timeout,
                                                            std::shared_ptr<Store> store) {
    cudaStream_t stream = nullptr;
    void* scratch = nullptr;
    absl::Status s = [&]() -> absl::Status {
      DSV3_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      DSV3_CUDA_RETURN_IF_ERROR(cudaMalloc(&scratch, sizeof(int32_t)));
      DSV3_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(scratch, 0, sizeof(int32_t), stream));
      return absl::OkStatus();
    }();
    if (!s.ok()) {
      ncclCommAbort(comm);
      if (scratch != nullptr) cudaFree(scratch);
      if (stream != nullptr) cudaStreamDestroy(stream);
      return s;
    }
    return std::unique_ptr<Communicator>(new NcclCommunicator(std::make_shared<NcclState>(
        comm, stream, scratch, device, rank, size, std::move(name), timeout, std::move(store))));
  }

 private:
  ncclComm_t comm() const { return state_->comm(); }
  cudaStream_t stream() const { return state_->stream(); }

  template <typename Enqueue>
  std::unique_ptr<Work> Issue(CommOp op, Enqueue enqueue) {
    if (absl::Status s = ValidateOp(op, name(), rank(), size()); !s.ok()) return CompletedWork(s);
    absl::MutexLock issue(&state_->issue_mu);
    if (absl::Status s = state_->Number(op); !s.ok()) return CompletedWork(s);
    const std::string where =
        absl::StrCat("group '", name(), "' rank ", rank(), ": ", op.description);
    const absl::Time deadline = absl::Now() + timeout();
    cudaEvent_t event = nullptr;
    absl::Status s = [&]() -> absl::Status {
      DSV3_CUDA_RETURN_IF_ERROR(cudaSetDevice(state_->device()));
      RETURN_IF_ERROR(enqueue(op));
      RETURN_IF_ERROR(WaitReady(comm(), deadline));
      DSV3_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
      DSV3_CUDA_RETURN_IF_ERROR(cudaEventRecord(event, stream()));
      return absl::OkStatus();
    }();
    if (!s.ok()) {
      if (event != nullptr) cudaEventDestroy(event);
      state_->Fail(s, absl::StrCat(op.description, " failed"));
      return CompletedWork(absl::Status(s.code(), absl::StrCat(where, ": ", s.message())));
    }
    return std::make_unique<NcclWork>(state_, event, deadline, op.seq, where, op.description);
  }

  const std::shared_ptr<NcclState> state_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const CommunicatorOptions& options) {
  const std::string who = absl::StrCat("group '", options.name, "' rank ", options.rank);
  int devices = 0;
  if (cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, ": the NCCL backend needs a CUDA device; ",
                     e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found none"));
  }
  const int device = options.cuda_device >= 0 ? options.cuda_device : options.rank % devices;
  if (device >= devices) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": cuda_device=", device, " but only ", devices, " devices exist"));
  }
  DSV3_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));

  const std::string key = absl::StrCat(options.name, "/nccl/id");
  ncclUniqueId id;
  if (options.rank == 0) {
    DSV3_NCCL_RETURN_IF_ERROR(nullptr, ncclGetUniqueId(&id));
    RETURN_IF_ERROR(options.store->Set(key, absl::string_view(id.internal, sizeof(id.internal))));
  } else {
    absl::StatusOr<std::string> bytes = options.store->Get(key, options.timeout);
    if (!bytes.ok()) {
      return absl::Status(
          bytes.status().code(),
          absl::StrCat(who, ": rank 0 did not publish the NCCL id: ", bytes.status().message()));
    }
    if (bytes->size() != sizeof(id.internal)) {
      return absl::InternalError(
          absl::StrCat(who, ": the NCCL id in the store has ", bytes->size(), " bytes"));
    }
    std::memcpy(id.internal, bytes->data(), sizeof(id.internal));
  }
  RETURN_IF_ERROR(
      JoinGroup(*options.store, options.name, options.rank, options.world_size, options.timeout));

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  DSV3_NCCL_RETURN_IF_ERROR(
      nullptr, ncclCommInitRankConfig(&comm, options.world_size, id, options.rank, &config));
  if (absl::Status s = WaitReady(comm, absl::Now() + options.timeout); !s.ok()) {
    ncclCommAbort(comm);
    return absl::Status(s.code(), absl::StrCat(who, ": initialising NCCL: ", s.message()));
  }
  return NcclCommunicator::Wrap(comm, device, options.rank, options.world_size, options.name,
                                options.timeout, options.store);
}

}  // namespace dsv3::parallel
