// DSV3_KERNEL_CHECK: aborts the process with a message when a kernel's precondition is broken.
// For programmer errors found while validating arguments at a kernel's public entry (bad shapes,
// null or overlapping buffers). Not for input data problems, which kernels never treat as errors.
// Header-only and dependency-free, so the kernels library builds with nothing but a compiler.
#ifndef DSV3_KERNELS_CHECK_H_
#define DSV3_KERNELS_CHECK_H_

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace dsv3::kernels::internal {

// Prints "file:line: check failed: cond: message" to stderr and aborts. Never returns.
[[noreturn]] __attribute__((format(printf, 4, 5))) inline void CheckFailed(
    const char* file, int line, const char* cond, const char* format, ...) {
  std::fprintf(stderr, "%s:%d: check failed: %s: ", file, line, cond);
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fputc('\n', stderr);
  std::fflush(stderr);
  std::abort();
}

// True when the byte ranges [a, a + a_bytes) and [b, b + b_bytes) share a byte.
inline bool Overlaps(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes) {
  if (a_bytes <= 0 || b_bytes <= 0) return false;
  const auto pa = reinterpret_cast<uintptr_t>(a);
  const auto pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + static_cast<uintptr_t>(b_bytes) && pb < pa + static_cast<uintptr_t>(a_bytes);
}

}  // namespace dsv3::kernels::internal

// DSV3_KERNEL_CHECK(cond, printf-format, args...): the message should name the offending values,
// e.g. DSV3_KERNEL_CHECK(rows >= 0, "Quantize1x128: rows=%lld must be >= 0", (long long)rows).
#define DSV3_KERNEL_CHECK(cond, ...)                                                             \
  do {                                                                                           \
    if (!(cond)) ::dsv3::kernels::internal::CheckFailed(__FILE__, __LINE__, #cond, __VA_ARGS__); \
  } while (0)

#endif  // DSV3_KERNELS_CHECK_H_
