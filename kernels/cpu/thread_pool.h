// ThreadPool: a fixed set of worker threads that run one ParallelFor at a time, splitting a range
// of independent items into contiguous chunks. Kernels use it through CpuContext. It is not a task
// queue (no futures, no work stealing) and ParallelFor must not be called from inside its own body.
//
// Waking a blocked thread costs 5-25 us on this kind of machine, as much as a small GEMM. So a
// worker that finishes a chunk spins for a short while (kSpinMicros) watching for the next
// ParallelFor before it blocks, and the caller spins the same way for the workers' chunks before
// it blocks: back-to-back calls, which is how kernels run, pay no wake-up. A pool with more threads
// than the machine has does not spin (a spinning thread would hold a core that a working one
// needs).
#ifndef DSV3_KERNELS_CPU_THREAD_POOL_H_
#define DSV3_KERNELS_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dsv3::kernels {

class ThreadPool {
 public:
  // Body of a ParallelFor: processes items [begin, end).
  using RangeFn = std::function<void(int64_t begin, int64_t end)>;

  // How long an idle thread spins before it blocks, in microseconds.
  static constexpr int64_t kSpinMicros = 100;
  static constexpr int kMaxThreads = 0xFFFF;

  // num_threads >= 1 counts the calling thread, which works too: num_threads - 1 threads are
  // started. Aborts unless 1 <= num_threads <= kMaxThreads.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();  // Joins the workers.

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn on disjoint contiguous chunks that cover [0, n) exactly once, each chunk at least
  // `grain` items (except the last), on up to num_threads() threads, and returns when all are done.
  // Calls from several threads are serialised. Calling it from inside fn aborts (it would
  // deadlock). n <= 0 does nothing; grain < 1 is treated as 1. An exception from the caller's own
  // chunk is rethrown once the workers' chunks are done; one from a worker's chunk terminates the
  // process (kernels report errors by aborting, not by throwing).
  void ParallelFor(int64_t n, int64_t grain, const RangeFn& fn);

 private:
  void WorkerLoop(int index);

  const int num_threads_;
  const bool spin_;  // whether idle threads spin before they block
  std::vector<std::thread> workers_;

  std::mutex call_mu_;  // Serialises ParallelFor calls.

  // A call publishes fn_, n_ and chunk_, sets pending_ to the number of workers with a chunk, then
  // sets generation_ to (call number << 16 | number of chunks), under mu_ so that a worker about to
  // block cannot miss it. A worker that sees a new generation runs its chunk, if the number of
  // chunks gives it one, and then decrements pending_; the fields stay unchanged until pending_ is
  // 0, so every worker that reads them has done so. Workers without a chunk read nothing else.
  std::mutex mu_;
  std::condition_variable work_cv_;  // Signalled when a new generation starts or on shutdown.
  std::condition_variable done_cv_;  // Signalled when pending_ drops to 0.
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> shutdown_{false};
  const RangeFn* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
};

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_THREAD_POOL_H_
