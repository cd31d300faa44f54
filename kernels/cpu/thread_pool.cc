// ThreadPool implementation: chunk i of a ParallelFor runs on worker i - 1 (chunk 0 on the caller).

#include "kernels/cpu/thread_pool.h"

#include <algorithm>

#include "kernels/check.h"

namespace dsv3::kernels {
namespace {

// Set while a thread runs a ParallelFor body, to catch nested calls.
thread_local bool tls_in_parallel_for = false;

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(num_threads) {
  DSV3_KERNEL_CHECK(num_threads >= 1, "ThreadPool: num_threads=%d must be >= 1", num_threads);
  workers_.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) {
    t.join();
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain, const RangeFn& fn) {
  DSV3_KERNEL_CHECK(!tls_in_parallel_for, "ThreadPool::ParallelFor called from inside its body");
  if (n <= 0) {
    return;
  }
  grain = std::max<int64_t>(grain, 1);
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int num_chunks = static_cast<int>(std::min<int64_t>(num_threads_, max_chunks));
  if (num_chunks <= 1) {
    tls_in_parallel_for = true;
    fn(0, n);
    tls_in_parallel_for = false;
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  const int64_t chunk = (n + num_chunks - 1) / num_chunks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    chunk_ = chunk;
    num_chunks_ = num_chunks;
    pending_ = num_chunks - 1;
    ++generation_;
  }
  work_cv_.notify_all();
  tls_in_parallel_for = true;
  fn(0, std::min(chunk, n));
  tls_in_parallel_for = false;
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
  fn_ = nullptr;
}

void ThreadPool::WorkerLoop(int index) {
  int64_t seen_generation = 0;
  while (true) {
    const RangeFn* fn = nullptr;
    int64_t begin = 0;
    int64_t end = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return shutdown_ || generation_ != seen_generation; });
      if (shutdown_) {
        return;
      }
      seen_generation = generation_;
      if (index >= num_chunks_) {
        continue;  // This generation has fewer chunks than threads.
      }
      fn = fn_;
      begin = index * chunk_;
      end = std::min(begin + chunk_, n_);
    }
    tls_in_parallel_for = true;
    if (begin < end) {
      (*fn)(begin, end);
    }
    tls_in_parallel_for = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) {
        done_cv_.notify_one();
      }
    }
  }
}

}  // namespace dsv3::kernels
