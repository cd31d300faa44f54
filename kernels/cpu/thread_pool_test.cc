// Tests of ThreadPool and the ParallelFor helper of CpuContext.

#include "kernels/cpu/thread_pool.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/context.h"

namespace dsv3::kernels {
namespace {

TEST(ThreadPoolTest, ParallelForVisitsEveryItemExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 7, 100, 1001}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          hits[i]++;
        }
      });
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(hits[i].load(), 1) << "threads=" << threads << " n=" << n << " item " << i;
      }
    }
  }
}

TEST(ThreadPoolTest, ChunksAreNoSmallerThanTheGrainExceptTheLast) {
  ThreadPool pool(4);
  std::atomic<int> chunks{0};
  std::atomic<int> small_chunks{0};
  pool.ParallelFor(1000, 300, [&](int64_t begin, int64_t end) {
    chunks++;
    if (end - begin < 300 && end != 1000) {
      small_chunks++;
    }
  });
  EXPECT_EQ(chunks.load(), 4);  // ceil(1000 / 300) = 4 chunks of 250: the thread count limits
  EXPECT_EQ(small_chunks.load(), 3);
  chunks = 0;
  pool.ParallelFor(1000, 600, [&](int64_t, int64_t) { chunks++; });
  EXPECT_EQ(chunks.load(), 2);
}

TEST(ThreadPoolTest, WorkRunsOnSeveralThreads) {
  ThreadPool pool(2);
  std::atomic<int> arrived{0};
  std::vector<std::thread::id> ids(2);
  pool.ParallelFor(2, 1, [&](int64_t begin, int64_t) {
    ids[begin] = std::this_thread::get_id();
    arrived++;
    while (arrived.load() < 2) {
      std::this_thread::yield();  // Deadlocks unless both run at once.
    }
  });
  EXPECT_NE(ids[0], ids[1]);
}

TEST(ThreadPoolTest, ConcurrentCallersAreSerialisedAndAllComplete) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep) {
        pool.ParallelFor(100, 1, [&](int64_t begin, int64_t end) { total += end - begin; });
      }
    });
  }
  for (std::thread& t : callers) {
    t.join();
  }
  EXPECT_EQ(total.load(), 4 * 50 * 100);
}

// Workers spin for kSpinMicros after a chunk, then block: calls that come while they spin, after
// they blocked, and with fewer chunks than threads (idle workers must still take part) all run
// every item once, and what the chunks wrote (plain stores) is visible to the caller.
TEST(ThreadPoolTest, BackToBackAndLateCallsAllComplete) {
  const auto past_spin = std::chrono::microseconds(3 * ThreadPool::kSpinMicros);
  ThreadPool pool(4);
  for (int rep = 0; rep < 300; ++rep) {
    const int64_t n = 1 + rep % 7;  // 1..7 items: 1 to 4 chunks
    std::vector<int64_t> out(n, 0);
    pool.ParallelFor(n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = i * i + rep;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], i * i + rep) << "rep " << rep;
    if (rep % 10 == 0) std::this_thread::sleep_for(past_spin);  // the workers block
  }
}

TEST(ThreadPoolTest, DestroysWhetherWorkersSpinOrBlock) {
  for (bool blocked : {false, true}) {
    ThreadPool pool(3);
    std::atomic<int64_t> total{0};
    pool.ParallelFor(3, 1, [&](int64_t begin, int64_t end) { total += end - begin; });
    if (blocked) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(total.load(), 3);
  }  // The destructor joins; a hang here fails the test by its timeout.
}

// The caller's chunk throws: the call waits for the worker's chunk, then rethrows, and the pool
// (and the calling thread) can run further calls. Also when the call runs inline.
TEST(ThreadPoolTest, AnExceptionFromTheCallersChunkIsRethrownAfterTheWorkers) {
  ThreadPool pool(2);
  std::atomic<bool> worker_done{false};
  EXPECT_THROW(pool.ParallelFor(2, 1,
                                [&](int64_t begin, int64_t) {
                                  if (begin == 0) throw std::runtime_error("chunk 0");
                                  std::this_thread::sleep_for(std::chrono::milliseconds(20));
                                  worker_done = true;
                                }),
               std::runtime_error);
  EXPECT_TRUE(worker_done.load());
  EXPECT_THROW(pool.ParallelFor(1, 1, [](int64_t, int64_t) { throw std::runtime_error("inline"); }),
               std::runtime_error);
  std::atomic<int64_t> total{0};
  pool.ParallelFor(10, 1, [&](int64_t begin, int64_t end) { total += end - begin; });
  EXPECT_EQ(total.load(), 10);
}

TEST(ThreadPoolTest, ContextWithoutPoolRunsInlineInOneChunk) {
  int calls = 0;
  ParallelFor(CpuContext{}, 10, 1, [&](int64_t begin, int64_t end) {
    calls++;
    EXPECT_EQ(begin, 0);
    EXPECT_EQ(end, 10);
  });
  EXPECT_EQ(calls, 1);
}

TEST(ThreadPoolDeathTest, NestedParallelForAborts) {
  EXPECT_DEATH(
      {
        ThreadPool pool(2);
        pool.ParallelFor(
            4, 1, [&](int64_t, int64_t) { pool.ParallelFor(2, 1, [](int64_t, int64_t) {}); });
      },
      "called from inside its body");
}

TEST(ThreadPoolDeathTest, ZeroThreadsAborts) {
  EXPECT_DEATH(ThreadPool pool(0), "num_threads=0 must be in \\[1, 65535\\]");
}

}  // namespace
}  // namespace dsv3::kernels
