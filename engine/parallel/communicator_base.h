// CommunicatorBase: the part of the CPU communicators (in-process, Gloo) that does not depend on
// the transport: sequence numbers, the operation queue (one thread per communicator running
// operations in issue order), the OpHeader exchange check, the failure latch, the post-mortem,
// Abort and Split. A backend supplies only the transport: moving headers, moving each op's data,
// creating a split group, closing its connections. Not used by NCCL (its ops run on a CUDA stream).
#ifndef DSV3_ENGINE_PARALLEL_COMMUNICATOR_BASE_H_
#define DSV3_ENGINE_PARALLEL_COMMUNICATOR_BASE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/communicator_op.h"
#include "engine/parallel/communicator_protocol.h"
#include "engine/parallel/communicator_work.h"
#include "engine/parallel/store.h"

namespace dsv3::parallel {

class CommunicatorBase : public Communicator {
 public:
  ~CommunicatorBase() override;

  int rank() const final { return rank_; }
  int size() const final { return size_; }
  const std::string& name() const final { return name_; }
  absl::Duration timeout() const final { return timeout_; }

  std::unique_ptr<Work> AllReduce(const void* send, void* recv, size_t count, DataType dtype) final;
  std::unique_ptr<Work> ReduceScatter(const void* send, void* recv, size_t recv_count,
                                      DataType dtype) final;
  std::unique_ptr<Work> AllGather(const void* send, void* recv, size_t send_count,
                                  DataType dtype) final;
  std::unique_ptr<Work> AllToAll(const void* send, absl::Span<const size_t> send_counts, void* recv,
                                 absl::Span<const size_t> recv_counts, DataType dtype) final;
  std::unique_ptr<Work> SendRecv(std::vector<PeerSend> sends, std::vector<PeerRecv> recvs) final;
  std::unique_ptr<Work> Barrier() final;
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) final;
  void Abort(const absl::Status& reason) final;

 protected:
  CommunicatorBase(int rank, int size, std::string name, absl::Duration timeout,
                   std::shared_ptr<Store> store);

  // The derived class's constructor (or factory) calls StartQueue() once it is ready to run
  // operations; its destructor calls StopQueue() before tearing anything down. StopQueue waits for
  // the operation in flight and fails the queued ones with CANCELLED.
  void StartQueue();
  void StopQueue();

  // --- The transport (called on the queue thread, one operation at a time) ---------------------
  // Sends op.outgoing[i] to op.peers[i] and receives one encoded header from each peer into
  // (*incoming)[i], waiting at most until `deadline`. Errors name the peer ("rank 2: ...").
  virtual absl::Status ExchangeHeaders(const CommOp& op, std::vector<EncodedOpHeader>* incoming,
                                       absl::Time deadline) = 0;
  // Move the data of an op whose headers matched. Split ops run through RunAllGather.
  virtual absl::Status RunAllReduce(const CommOp& op, absl::Time deadline) = 0;
  virtual absl::Status RunReduceScatter(const CommOp& op, absl::Time deadline) = 0;
  virtual absl::Status RunAllGather(const CommOp& op, absl::Time deadline) = 0;
  virtual absl::Status RunAllToAll(const CommOp& op, absl::Time deadline) = 0;
  virtual absl::Status RunSendRecv(const CommOp& op, absl::Time deadline) = 0;
  // Creates and connects the communicator of a split group (called on the caller's thread of
  // Split, by every member of the new group).
  virtual absl::StatusOr<std::unique_ptr<Communicator>> CreateGroup(const std::string& name,
                                                                    int rank, int size) = 0;
  // Rewrites a data-phase error so that it names the peer it concerns, when the backend can tell
  // (Gloo's messages name socket addresses). The default returns `status` unchanged.
  virtual absl::Status NamePeer(const absl::Status& status) const { return status; }
  // Closes the connections so that this rank's waits and its peers' waits on it fail promptly.
  // Called from any thread (Abort); must be safe while an operation is in flight.
  virtual void CloseTransport() = 0;

  const std::shared_ptr<Store>& store() const { return store_; }

 private:
  struct Queued {
    CommOp op;
    std::shared_ptr<WorkState> state;
  };

  // Validates, numbers and queues `op`. `seq_out`, when given, receives its sequence number.
  std::unique_ptr<Work> Issue(CommOp op, int64_t* seq_out = nullptr);
  void RunQueue();
  absl::Status Execute(const CommOp& op);
  // After a collective failed on a lost or silent peer (UNAVAILABLE, DEADLINE_EXCEEDED): records
  // this rank's failure under "<name>/postmortem/<seq>/<rank>", waits briefly for the other
  // ranks' records, and names the ranks that did not report (the dead or hung ones). This keeps
  // the blame on the rank that failed first even when the failure cascades (a survivor that exits
  // after its own failure also closes its connections). Other failures are returned unchanged.
  absl::Status WithPostMortem(const CommOp& op, const absl::Status& failure);
  std::string PostMortem(const CommOp& op, const absl::Status& failure);
  // The error later operations get once the communicator is broken.
  absl::Status BrokenError(const CommOp& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Latch(const absl::Status& status, const std::string& by) ABSL_LOCKS_EXCLUDED(mu_);
  // Latches the failure of `op` (closing the transport after a disagreement) and returns the
  // status its Work completes with.
  absl::Status Fail(const CommOp& op, absl::Status status) ABSL_LOCKS_EXCLUDED(mu_);

  const int rank_;
  const int size_;
  const std::string name_;
  const int32_t group_id_;  // CollectiveGroupId(name_), for the process's RankPosition
  const absl::Duration timeout_;
  const std::shared_ptr<Store> store_;

  absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> next_pair_seq_ ABSL_GUARDED_BY(mu_);  // [size]
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
  std::string broken_by_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_COMMUNICATOR_BASE_H_
