// Internal: the argument checks shared by the public GEMM entries (gemm.cc, grouped_gemm.cc):
// non-negative sizes, non-null buffers where bytes are needed, and an output that overlaps no
// input (inputs may share memory). Violations abort with a message naming the op and values.
#ifndef DSV3_KERNELS_CPU_GEMM_CHECK_H_
#define DSV3_KERNELS_CPU_GEMM_CHECK_H_

#include <cstdint>
#include <initializer_list>

#include "kernels/check.h"

namespace dsv3::kernels::internal {

// One buffer argument: its name, pointer and size in bytes.
struct GemmBuffer {
  const char* name;
  const void* data;
  int64_t bytes;
};

inline void CheckGemmSizes(const char* op, int64_t m, int64_t n, int64_t k) {
  DSV3_KERNEL_CHECK(m >= 0 && n >= 0 && k >= 0, "%s: m=%lld, n=%lld and k=%lld must be >= 0", op,
                    static_cast<long long>(m), static_cast<long long>(n),
                    static_cast<long long>(k));
}

inline void CheckGemmBuffers(const char* op, std::initializer_list<GemmBuffer> inputs,
                             const GemmBuffer& output) {
  for (const GemmBuffer& b : inputs) {
    DSV3_KERNEL_CHECK(b.bytes == 0 || b.data != nullptr, "%s: %s is null but needs %lld bytes", op,
                      b.name, static_cast<long long>(b.bytes));
  }
  DSV3_KERNEL_CHECK(output.bytes == 0 || output.data != nullptr,
                    "%s: %s is null but needs %lld bytes", op, output.name,
                    static_cast<long long>(output.bytes));
  for (const GemmBuffer& b : inputs) {
    DSV3_KERNEL_CHECK(!Overlaps(b.data, b.bytes, output.data, output.bytes),
                      "%s: output %s overlaps input %s", op, output.name, b.name);
  }
}

}  // namespace dsv3::kernels::internal

#endif  // DSV3_KERNELS_CPU_GEMM_CHECK_H_
