// ThreadPool implementation: chunk i of a ParallelFor runs on worker i - 1 (chunk 0 on the caller).

#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "kernels/check.h"

namespace dsv3::kernels {
namespace {

// Set while a thread runs a ParallelFor body, to catch nested calls.
thread_local bool tls_in_parallel_for = false;

struct InParallelForBody {
  InParallelForBody() { tls_in_parallel_for = true; }
  ~InParallelForBody() { tls_in_parallel_for = false; }
};

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until done() holds or kSpinMicros pass; returns done()'s last value.
template <typename Done>
bool SpinUntil(const Done& done) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::microseconds(ThreadPool::kSpinMicros);
  for (int i = 1;; ++i) {
    if (done()) return true;
    CpuRelax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() >= deadline) return done();
  }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(num_threads),
      spin_(static_cast<unsigned>(num_threads) <=
            std::max(1u, std::thread::hardware_concurrency())) {
  DSV3_KERNEL_CHECK(num_threads >= 1 && num_threads <= kMaxThreads,
                    "ThreadPool: num_threads=%d must be in [1, %d]", num_threads, kMaxThreads);
  workers_.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_.store(true, std::memory_order_relaxed);
    generation_.fetch_add(std::uint64_t{1} << 16, std::memory_order_release);
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
    InParallelForBody body;
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  const int64_t chunk = (n + num_chunks - 1) / num_chunks;
  fn_ = &fn;
  n_ = n;
  chunk_ = chunk;
  pending_.store(num_chunks - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    const std::uint64_t call = (generation_.load(std::memory_order_relaxed) >> 16) + 1;
    generation_.store(call << 16 | static_cast<std::uint64_t>(num_chunks),
                      std::memory_order_release);
  }
  work_cv_.notify_all();  // no system call when every worker is still spinning
  auto all_done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
  auto wait_for_workers = [&] {
    if (!spin_ || !SpinUntil(all_done)) {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, all_done);
    }
    fn_ = nullptr;
  };
  try {
    InParallelForBody body;
    fn(0, std::min(chunk, n));
  } catch (...) {
    wait_for_workers();  // they still use fn and this call's fields
    throw;
  }
  wait_for_workers();
}

void ThreadPool::WorkerLoop(int index) {
  std::uint64_t seen = 0;
  while (true) {
    std::uint64_t generation = seen;
    auto new_generation = [&] {
      generation = generation_.load(std::memory_order_acquire);
      return generation != seen;
    };
    if (!spin_ || !SpinUntil(new_generation)) {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, new_generation);
    }
    seen = generation;
    if (shutdown_.load(std::memory_order_relaxed)) {
      return;
    }
    // A worker without a chunk may miss whole calls; one with a chunk cannot, as the caller waits
    // for it before the next call.
    if (index >= static_cast<int>(generation & 0xFFFF)) {
      continue;
    }
    const int64_t begin = index * chunk_;
    const int64_t end = std::min(begin + chunk_, n_);
    if (begin < end) {
      InParallelForBody body;
      (*fn_)(begin, end);
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);  // the caller is spinning or inside done_cv_.wait
      done_cv_.notify_one();
    }
  }
}

}  // namespace dsv3::kernels
