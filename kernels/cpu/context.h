// CpuContext: the first argument of every CPU kernel, telling it where to run. Its CUDA counterpart
// (kernels/cuda/context.h, later) carries a stream instead, so a CPU kernel and its CUDA twin keep
// one signature apart from this type. It owns nothing; results never depend on its settings.
#ifndef DSV3_KERNELS_CPU_CONTEXT_H_
#define DSV3_KERNELS_CPU_CONTEXT_H_

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace dsv3::kernels {

struct CpuContext {
  // Threads to split work over; not owned. nullptr runs everything on the calling thread.
  ThreadPool* pool = nullptr;
  // false forces the portable scalar code even where AVX-512 is available (tests compare the two).
  bool use_simd = true;
};

// Runs fn(begin, end) over [0, n) on ctx.pool (or inline), in chunks of at least `grain` items.
inline void ParallelFor(const CpuContext& ctx, int64_t n, int64_t grain,
                        const ThreadPool::RangeFn& fn) {
  if (ctx.pool != nullptr) {
    ctx.pool->ParallelFor(n, grain, fn);
  } else if (n > 0) {
    fn(0, n);
  }
}

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_CONTEXT_H_
