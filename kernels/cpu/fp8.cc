// Buffer conversions of fp8.h: argument checks, then the span kernels over chunks of the buffer.

#include "kernels/cpu/fp8.h"

#include "kernels/check.h"
#include "kernels/cpu/fp8_span.h"

namespace dsv3::kernels {
namespace {

// Elements per thread chunk: large enough that a chunk costs far more than waking a thread.
constexpr int64_t kGrain = 1 << 16;

void CheckBuffers(const char* op, const void* in, int64_t in_elem_bytes, const void* out,
                  int64_t out_elem_bytes, int64_t n) {
  DSV3_KERNEL_CHECK(n >= 0, "%s: n=%lld must be >= 0", op, static_cast<long long>(n));
  if (n == 0) {
    return;
  }
  DSV3_KERNEL_CHECK(in != nullptr && out != nullptr, "%s: null buffer with n=%lld", op,
                    static_cast<long long>(n));
  DSV3_KERNEL_CHECK(!internal::Overlaps(in, n * in_elem_bytes, out, n * out_elem_bytes),
                    "%s: input and output overlap", op);
}

}  // namespace

void EncodeFp8(const CpuContext& ctx, Fp8Format format, const float* x, int64_t n,
               std::uint8_t* codes) {
  CheckBuffers("EncodeFp8", x, sizeof(float), codes, 1, n);
  const internal::SpanKernels& k = internal::SpanKernelsFor(ctx);
  const auto encode = format == Fp8Format::kE4M3 ? k.encode_e4m3 : k.encode_e5m2;
  ParallelFor(ctx, n, kGrain,
              [&](int64_t begin, int64_t end) { encode(x + begin, end - begin, codes + begin); });
}

void DecodeFp8(const CpuContext& ctx, Fp8Format format, const std::uint8_t* codes, int64_t n,
               float* x) {
  CheckBuffers("DecodeFp8", codes, 1, x, sizeof(float), n);
  const internal::SpanKernels& k = internal::SpanKernelsFor(ctx);
  const auto decode = format == Fp8Format::kE4M3 ? k.decode_e4m3 : k.decode_e5m2;
  ParallelFor(ctx, n, kGrain,
              [&](int64_t begin, int64_t end) { decode(codes + begin, end - begin, x + begin); });
}

void EncodeBf16(const CpuContext& ctx, const float* x, int64_t n, std::uint16_t* bf16) {
  CheckBuffers("EncodeBf16", x, sizeof(float), bf16, sizeof(std::uint16_t), n);
  const internal::SpanKernels& k = internal::SpanKernelsFor(ctx);
  ParallelFor(ctx, n, kGrain, [&](int64_t begin, int64_t end) {
    k.encode_bf16(x + begin, end - begin, bf16 + begin);
  });
}

void DecodeBf16(const CpuContext& ctx, const std::uint16_t* bf16, int64_t n, float* x) {
  CheckBuffers("DecodeBf16", bf16, sizeof(std::uint16_t), x, sizeof(float), n);
  const internal::SpanKernels& k = internal::SpanKernelsFor(ctx);
  ParallelFor(ctx, n, kGrain, [&](int64_t begin, int64_t end) {
    k.decode_bf16(bf16 + begin, end - begin, x + begin);
  });
}

}  // namespace dsv3::kernels
