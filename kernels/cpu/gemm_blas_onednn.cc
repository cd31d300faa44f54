// Internal: BlasGemm (gemm_blas.h) on oneDNN's matmul primitive, FP32 or BF16 operands with FP32
// accumulation and output, transposes expressed as strides, accumulation as a sum post-op.
// Primitives are cached per (type, layout, shape, thread count): creating one costs 5-10 us,
// more than a small expert GEMM. Debian's oneDNN runs on OpenMP threads; each call sets the
// calling thread's OpenMP thread count to ctx.pool's for its duration. Not a public API.

#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/gemm_blas.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace dsv3::kernels::internal {
namespace {

using Key =
    std::tuple<int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int>;

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

struct Entry {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
};

// Primitives by key, shared by all threads. Cleared when it grows past kMaxEntries (shapes of
// a training job are few; grouped GEMMs add one M per expert size seen).
class PrimitiveCache {
 public:
  static constexpr size_t kMaxEntries = 4096;

  std::shared_ptr<const Entry> Get(const Key& key) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    auto primitive = Create(key);
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kMaxEntries) map_.clear();
    map_.emplace(key, primitive);
    return primitive;
  }

 private:
  static std::shared_ptr<const Entry> Create(const Key& key) {
    const auto [type, trans_a, trans_b, m, n, k, lda, ldb, ldc, accumulate, threads] = key;
    using dt = dnnl::memory::data_type;
    const dt op_type = type == static_cast<int>(BlasType::kBf16) ? dt::bf16 : dt::f32;
    const dnnl::memory::desc a_md(
        {m, k}, op_type, trans_a ? dnnl::memory::dims{1, lda} : dnnl::memory::dims{lda, 1});
    const dnnl::memory::desc b_md(
        {k, n}, op_type, trans_b ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
    const dnnl::memory::desc c_md({m, n}, dt::f32, dnnl::memory::dims{ldc, 1});
    dnnl::primitive_attr attr;
    // A user scratchpad (one per calling thread, below) makes executing one primitive from several
    // threads at once safe: the grouped GEMMs run experts of equal shape side by side. With the
    // library's own scratchpad, concurrent runs of a primitive share it and corrupt each other
    // (seen as run-to-run differences in the MoE layers).
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, Engine());
    return std::make_shared<const Entry>(Entry{pd, dnnl::matmul(pd)});
  }

  std::mutex mu_;
  std::map<Key, std::shared_ptr<const Entry>> map_;  // guarded by mu_
};

PrimitiveCache& Cache() {
  static PrimitiveCache* cache = new PrimitiveCache;
  return *cache;
}

// Sets the calling thread's OpenMP thread count for the lifetime of the object.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int threads) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(threads);
  }
  ~ScopedOmpThreads() { omp_set_num_threads(saved_); }

 private:
  const int saved_;
};

}  // namespace

void BlasGemm(const CpuContext& ctx, BlasType type, bool trans_a, bool trans_b, int64_t m,
              int64_t n, int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb,
              bool accumulate, float* c, int64_t ldc) {
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  ScopedOmpThreads scoped_threads(threads);
  try {
    const Key key{
        static_cast<int>(type), trans_a, trans_b, m, n, k, lda, ldb, ldc, accumulate, threads};
    const std::shared_ptr<const Entry> entry = Cache().Get(key);
    const dnnl::matmul::primitive_desc& pd = entry->pd;
    dnnl::memory a_mem(pd.src_desc(), Engine(), const_cast<void*>(a));
    dnnl::memory b_mem(pd.weights_desc(), Engine(), const_cast<void*>(b));
    dnnl::memory c_mem(pd.dst_desc(), Engine(), c);
    thread_local std::vector<uint8_t> scratch;
    const dnnl::memory::desc scratch_md = pd.scratchpad_desc();
    if (scratch.size() < scratch_md.get_size()) scratch.resize(scratch_md.get_size());
    dnnl::memory scratch_mem(scratch_md, Engine(), scratch.data());
    dnnl::stream stream(Engine());
    entry->primitive.execute(stream, {{DNNL_ARG_SRC, a_mem},
                                      {DNNL_ARG_WEIGHTS, b_mem},
                                      {DNNL_ARG_DST, c_mem},
                                      {DNNL_ARG_SCRATCHPAD, scratch_mem}});
    stream.wait();
  } catch (const dnnl::error& e) {
    DSV3_KERNEL_CHECK(false, "oneDNN matmul failed (m=%lld n=%lld k=%lld): %s (status %d)",
                      static_cast<long long>(m), static_cast<long long>(n),
                      static_cast<long long>(k), e.what(), static_cast<int>(e.status));
  }
}

const char* BlasBackendName() { return "onednn"; }

}  // namespace dsv3::kernels::internal
