// Benchmark of the CPU FP8/BF16 conversions and fine-grained quantisers (kernels/cpu/fp8.h,
// kernels/cpu/quantize.h): each op on the AVX-512 path against the portable scalar path measured in
// the same run (the ratio is the figure to read), plus memcpy of the same bytes as a bandwidth
// yardstick. Outputs of the two paths are compared before anything is timed. Not a test.
//
// Usage: kernels_fp8_bench [--threads=N] [--rows=M] [--cols=K]   (defaults: 1, 4096, 7168)

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/fp8.h"
#include "kernels/cpu/fp8_span.h"
#include "kernels/cpu/quantize.h"

namespace dsv3::kernels {
namespace {

// Best wall time of `reps` runs, in seconds.
double BestSeconds(const std::function<void()>& fn, int reps = 5) {
  fn();  // Warm-up (page faults, caches).
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  return best;
}

struct Row {
  std::string op;
  double bytes;  // Bytes read + written by one run.
  double simd_s;
  double scalar_s;
};

int Main(int argc, char** argv) {
  int threads = 1;
  int64_t rows = 4096, cols = 7168;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--threads=", 0) == 0) {
      threads = std::atoi(arg.c_str() + 10);
    } else if (arg.rfind("--rows=", 0) == 0) {
      rows = std::atoll(arg.c_str() + 7);
    } else if (arg.rfind("--cols=", 0) == 0) {
      cols = std::atoll(arg.c_str() + 7);
    } else {
      std::fprintf(stderr, "usage: %s [--threads=N] [--rows=M] [--cols=K]\n", argv[0]);
      return 2;
    }
  }
  if (internal::Avx512SpanKernels() == nullptr) {
    std::fprintf(stderr, "this CPU has no AVX-512: nothing to compare\n");
    return 1;
  }
  const int64_t n = rows * cols;
  ThreadPool pool(threads);
  const CpuContext simd{&pool, true};
  const CpuContext scalar{&pool, false};

  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(n), f_out(n), f_out2(n);
  for (float& v : x) {
    v = normal(rng);
  }
  std::vector<std::uint8_t> q(n), q2(n), q_t(n);
  std::vector<std::uint16_t> h(n), h2(n);
  std::vector<float> s(rows * NumTiles(cols)), s2(s.size()), s_t(cols * NumTiles(rows));
  std::vector<float> sb(NumTiles(rows) * NumTiles(cols));

  // Correctness first: both paths must agree.
  bool ok = true;
  auto check = [&](bool same, const char* what) {
    if (!same) {
      std::fprintf(stderr, "MISMATCH between the AVX-512 and scalar paths: %s\n", what);
      ok = false;
    }
  };
  EncodeFp8(simd, Fp8Format::kE4M3, x.data(), n, q.data());
  EncodeFp8(scalar, Fp8Format::kE4M3, x.data(), n, q2.data());
  check(q == q2, "EncodeFp8");
  EncodeBf16(simd, x.data(), n, h.data());
  EncodeBf16(scalar, x.data(), n, h2.data());
  check(h == h2, "EncodeBf16");
  Quantize1x128(simd, {}, x.data(), rows, cols, q.data(), s.data());
  Quantize1x128(scalar, {}, x.data(), rows, cols, q2.data(), s2.data());
  check(q == q2 && s == s2, "Quantize1x128");
  if (!ok) {
    return 1;
  }

  const double f4 = 4.0 * n, b1 = 1.0 * n, b2 = 2.0 * n;
  std::vector<Row> table;
  auto add = [&](const std::string& op, double bytes,
                 const std::function<void(const CpuContext&)>& fn) {
    table.push_back({op, bytes, BestSeconds([&] { fn(simd); }), BestSeconds([&] { fn(scalar); })});
  };
  add("EncodeFp8 E4M3", f4 + b1,
      [&](const CpuContext& c) { EncodeFp8(c, Fp8Format::kE4M3, x.data(), n, q.data()); });
  add("EncodeFp8 E5M2", f4 + b1,
      [&](const CpuContext& c) { EncodeFp8(c, Fp8Format::kE5M2, x.data(), n, q.data()); });
  add("DecodeFp8 E4M3", b1 + f4,
      [&](const CpuContext& c) { DecodeFp8(c, Fp8Format::kE4M3, q.data(), n, f_out.data()); });
  add("EncodeBf16", f4 + b2, [&](const CpuContext& c) { EncodeBf16(c, x.data(), n, h.data()); });
  add("DecodeBf16", b2 + f4,
      [&](const CpuContext& c) { DecodeBf16(c, h.data(), n, f_out.data()); });
  add("Quantize1x128", f4 + b1,
      [&](const CpuContext& c) { Quantize1x128(c, {}, x.data(), rows, cols, q.data(), s.data()); });
  add("Quantize128x128", f4 + b1, [&](const CpuContext& c) {
    Quantize128x128(c, {}, x.data(), rows, cols, q2.data(), sb.data());
  });
  add("Quantize128x1Transposed", f4 + b1, [&](const CpuContext& c) {
    Quantize128x1Transposed(c, {}, x.data(), rows, cols, q_t.data(), s_t.data());
  });
  add("Requantize128x1Transposed", b1 + b1, [&](const CpuContext& c) {
    Requantize128x1Transposed(c, {}, q.data(), s.data(), rows, cols, q_t.data(), s_t.data());
  });
  add("Dequantize1x128", b1 + f4, [&](const CpuContext& c) {
    Dequantize1x128(c, q.data(), s.data(), rows, cols, f_out.data());
  });
  const double memcpy_s = BestSeconds([&] { std::memcpy(f_out2.data(), x.data(), n * 4); });

  std::printf("kernels_fp8_bench: [%lld, %lld] FP32 (%lld elements), %d thread(s)\n",
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(n),
              threads);
  std::printf("memcpy of %lld MB (1 thread): %.2f ms, %.1f GB/s\n\n",
              static_cast<long long>(n * 4 >> 20), memcpy_s * 1e3, 2.0 * n * 4 / memcpy_s / 1e9);
  std::printf("%-28s %12s %10s %12s %10s %9s\n", "op", "avx512 ms", "GB/s", "scalar ms", "GB/s",
              "speedup");
  for (const Row& r : table) {
    std::printf("%-28s %12.2f %10.1f %12.2f %10.1f %8.1fx\n", r.op.c_str(), r.simd_s * 1e3,
                r.bytes / r.simd_s / 1e9, r.scalar_s * 1e3, r.bytes / r.scalar_s / 1e9,
                r.scalar_s / r.simd_s);
  }
  return 0;
}

}  // namespace
}  // namespace dsv3::kernels

int main(int argc, char** argv) { return dsv3::kernels::Main(argc, argv); }
