// Benchmark of the CPU GEMMs (kernels/cpu/gemm.h, grouped_gemm.h): GFLOP/s of our FP32, BF16 and
// block-scaled FP8 GEMMs at DeepSeek-V3-like shapes scaled to this machine, on 1 and 2 threads,
// against the library baselines measured in the same run — oneDNN's FP32 and BF16 matmul called
// directly, OpenBLAS's sgemm with OPENBLAS_CORETYPE=SkylakeX — and against this CPU's peak. Results
// are checked before anything is timed. Not a test.
//
// Usage: kernels_gemm_bench [--threads=1,2] [--quick] [--fma_units=2] [--min_seconds=0.15]
//                           [--shape=M,N,K ...]
// --shape (repeatable) measures only the forward GEMM at the given shapes: no layout or grouped
// tables.
//
// Times come from repeated runs: 1-thread runs the median in thread CPU time (immune to time
// slices lost to other processes on a busy machine), multi-thread runs the best in wall time
// (noisy when other processes compete for the cores; there, run with OMP_WAIT_POLICY=passive, or
// oneDNN's spinning OpenMP threads make its multi-thread baselines collapse).
//
// Peak: cores x GHz x FMA units x 16 FP32 lanes x 2 (FP32), twice that for BF16 (vdpbf16ps does
// two products per lane). GHz is measured (a chain of dependent 1-cycle adds, best of many short
// runs; /proc/cpuinfo shows the hypervisor's nominal 2.1 GHz here); FMA units defaults to 2 (AMD
// Zen 4/5, Intel server cores).
// OpenBLAS is loaded with dlopen after setenv("OPENBLAS_CORETYPE", "SkylakeX"): it reads the
// variable once, when it loads, so it is set before the load (replacing any value the environment
// has: this machine's has Haswell, half the speed; without it 0.3.21 detects Cooperlake, whose
// SGEMM is SkylakeX's).

#include <dlfcn.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/fp8.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/grouped_gemm.h"
#include "kernels/cpu/quantize.h"
#include "kernels/cpu/thread_pool.h"

#ifdef DSV3_BENCH_HAVE_DNNL
#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#endif

namespace dsv3::kernels {
namespace {

double min_seconds = 0.15;
// Single-threaded runs are timed in the calling thread's CPU time, which time slices given to
// other processes on a shared machine do not inflate; multi-threaded runs in wall time.
bool thread_cpu_time = false;

double Now() {
  if (thread_cpu_time) {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Time of one run, from repeated runs (at least 5, and at least min_seconds in all), in seconds:
// the median in thread CPU time (a clean measure; the median guards against the odd clock
// glitch), the best in wall time (the run least disturbed by other processes).
double BestSeconds(const std::function<void()>& fn) {
  fn();  // Warm-up.
  std::vector<double> samples;
  double total = 0;
  while (samples.size() < 5 || total < min_seconds) {
    const double t0 = Now();
    fn();
    samples.push_back(Now() - t0);
    total += samples.back();
  }
  std::sort(samples.begin(), samples.end());
  return thread_cpu_time ? samples[samples.size() / 2] : samples.front();
}

// Core clock in GHz: a chain of dependent 1-cycle adds, 4 per iteration with the loop overhead
// running beside; the best of many short runs, so that time slices lost to other processes on a
// busy machine do not count.
double MeasureGhz() {
  double best = 1e30;
  const int64_t iters = 200'000;
  for (int rep = 0; rep < 300; ++rep) {
    int64_t x = 0, n = iters;
    const auto t0 = std::chrono::steady_clock::now();
#if defined(__x86_64__)
    asm volatile(
        "1:\n"
        "add %0, %0\n add %0, %0\n add %0, %0\n add %0, %0\n"
        "dec %1\n jnz 1b\n"
        : "+r"(x), "+r"(n));
#endif
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
  }
  return 4.0 * iters / best / 1e9;
}

double NominalMhz() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("cpu MHz", 0) == 0) return std::atof(line.substr(line.find(':') + 1).c_str());
  }
  return 0;
}

// ---- Baselines ---------------------------------------------------------------------------------

using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                         float, float*, int);
struct OpenBlas {
  SgemmFn sgemm = nullptr;
  void (*set_threads)(int) = nullptr;
  char* (*corename)() = nullptr;
};

// The environment's OPENBLAS_CORETYPE before the bench replaced it ("" when unset).
std::string previous_coretype;

OpenBlas LoadOpenBlas() {
  if (const char* old = getenv("OPENBLAS_CORETYPE")) previous_coretype = old;
  setenv("OPENBLAS_CORETYPE", "SkylakeX", /*overwrite=*/1);
  OpenBlas ob;
  void* h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) return ob;
  ob.sgemm = reinterpret_cast<SgemmFn>(dlsym(h, "cblas_sgemm"));
  ob.set_threads = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"));
  ob.corename = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_corename"));
  if (ob.sgemm == nullptr || ob.set_threads == nullptr) ob.sgemm = nullptr;
  return ob;
}

#ifdef DSV3_BENCH_HAVE_DNNL
// y[m,n] = x[m,k] w[n,k]^T with oneDNN directly (primitive made once, outside the timing).
struct DnnlMatmul {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  dnnl::memory x_mem, w_mem, y_mem;
  DnnlMatmul(bool bf16, int64_t m, int64_t n, int64_t k, const void* x, const void* w, float* y) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dt t = bf16 ? dt::bf16 : dt::f32;
    const dnnl::memory::desc x_md({m, k}, t, tag::ab), w_md({k, n}, t, tag::ba),
        y_md({m, n}, dt::f32, tag::ab);
    pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(x_md, w_md, y_md), engine);
    prim = dnnl::matmul(pd);
    x_mem = dnnl::memory(x_md, engine, const_cast<void*>(x));
    w_mem = dnnl::memory(w_md, engine, const_cast<void*>(w));
    y_mem = dnnl::memory(y_md, engine, y);
  }
  void Run() {
    prim.execute(stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, y_mem}});
    stream.wait();
  }
};
#endif

double CalcDiff(const std::vector<float>& x, const std::vector<float>& y) {
  double xy = 0, xx_yy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    xy += static_cast<double>(x[i]) * y[i];
    xx_yy += static_cast<double>(x[i]) * x[i] + static_cast<double>(y[i]) * y[i];
  }
  return 1.0 - 2.0 * xy / xx_yy;
}

double MaxRelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return worst / scale;
}

struct Shape {
  int64_t m, n, k;
  const char* what;
};

struct Row {
  Shape s;
  double dnnl_f32 = 0, openblas = 0, ours_f32 = 0, dnnl_bf16 = 0, ours_bf16 = 0, ours_fp8 = 0;
};

// Median wall time of an empty ParallelFor over every thread: the fixed cost each parallel phase
// of a GEMM pays (waking the workers and waiting for them).
double EmptyParallelForMicros(int threads) {
  ThreadPool pool(threads);
  std::vector<double> us;
  for (int i = 0; i < 2000; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.ParallelFor(threads, 1, [](int64_t, int64_t) {});
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
  return us[us.size() / 2];
}

bool failed = false;
void Require(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "CHECK FAILED before timing: %s\n", what.c_str());
    failed = true;
  }
}

Row Measure(const Shape& s, int threads, const OpenBlas& ob) {
  const int64_t m = s.m, n = s.n, k = s.k;
  std::mt19937_64 rng(static_cast<std::uint64_t>(m * 1000003 + n * 1009 + k));
  std::normal_distribution<float> normal;
  std::vector<float> x(m * k), w(n * k);
  for (float& v : x) v = normal(rng);
  for (float& v : w) v = normal(rng);
  std::vector<std::uint16_t> x16(m * k), w16(n * k);
  for (size_t i = 0; i < x.size(); ++i) x16[i] = FloatToBf16(x[i]);
  for (size_t i = 0; i < w.size(); ++i) w16[i] = FloatToBf16(w[i]);
  ThreadPool pool(threads);
  const CpuContext ctx{&pool};
  std::vector<std::uint8_t> xq(m * k), wq(n * k);
  std::vector<float> xs(m * NumTiles(k)), ws(NumTiles(n) * NumTiles(k));
  Quantize1x128(ctx, {}, x.data(), m, k, xq.data(), xs.data());
  Quantize128x128(ctx, {}, w.data(), n, k, wq.data(), ws.data());

  std::vector<float> y_ref(m * n), y(m * n);
  Row row{s};
  const double flops = 2.0 * m * n * k;
  auto gflops = [&](double sec) { return flops / sec / 1e9; };

  // Correctness first.
  GemmFpropFp32(ctx, {}, x.data(), w.data(), m, n, k, y_ref.data());
  GemmFpropBf16(ctx, {}, x16.data(), w16.data(), m, n, k, y.data());
  Require(CalcDiff(y, y_ref) < 1e-4, "BF16 vs FP32 " + std::string(s.what));
  GemmFpropFp8(ctx, {}, xq.data(), xs.data(), wq.data(), ws.data(), m, n, k, y.data());
  Require(CalcDiff(y, y_ref) < 1e-3, "FP8 calc_diff vs FP32 " + std::string(s.what));
#ifdef DSV3_BENCH_HAVE_DNNL
  omp_set_num_threads(threads);
  DnnlMatmul d32(false, m, n, k, x.data(), w.data(), y.data());
  d32.Run();
  Require(MaxRelDiff(y, y_ref) < 1e-5, "oneDNN FP32 vs ours " + std::string(s.what));
  DnnlMatmul d16(true, m, n, k, x16.data(), w16.data(), y.data());
  d16.Run();
  Require(CalcDiff(y, y_ref) < 1e-4, "oneDNN BF16 vs FP32 " + std::string(s.what));
  row.dnnl_f32 = gflops(BestSeconds([&] { d32.Run(); }));
  row.dnnl_bf16 = gflops(BestSeconds([&] { d16.Run(); }));
#endif
  if (ob.sgemm != nullptr) {
    ob.set_threads(threads);
    auto run = [&] {
      ob.sgemm(101 /*row major*/, 111 /*no trans*/, 112 /*trans*/, static_cast<int>(m),
               static_cast<int>(n), static_cast<int>(k), 1.0f, x.data(), static_cast<int>(k),
               w.data(), static_cast<int>(k), 0.0f, y.data(), static_cast<int>(n));
    };
    run();
    Require(MaxRelDiff(y, y_ref) < 1e-5, "OpenBLAS FP32 vs ours " + std::string(s.what));
    row.openblas = gflops(BestSeconds(run));
  }
  row.ours_f32 =
      gflops(BestSeconds([&] { GemmFpropFp32(ctx, {}, x.data(), w.data(), m, n, k, y.data()); }));
  row.ours_bf16 = gflops(
      BestSeconds([&] { GemmFpropBf16(ctx, {}, x16.data(), w16.data(), m, n, k, y.data()); }));
  row.ours_fp8 = gflops(BestSeconds([&] {
    GemmFpropFp8(ctx, {}, xq.data(), xs.data(), wq.data(), ws.data(), m, n, k, y.data());
  }));
  return row;
}

// The three FP8 layouts against the BF16 GEMM (oneDNN) of the same layout.
void LayoutTable(const std::vector<Shape>& shapes, int threads) {
  std::printf(
      "\nFP8 vs BF16 per layout, %d thread(s), GFLOP/s (fp8 includes decoding/packing; "
      "quantisation is done before)\n",
      threads);
  std::printf("%-22s %6s %6s %6s | %8s %8s %6s | %8s %8s %6s | %8s %8s %6s\n", "shape", "M", "N",
              "K", "fprop16", "fprop8", "ratio", "dgrad16", "dgrad8", "ratio", "wgrad16", "wgrad8",
              "ratio");
  ThreadPool pool(threads);
  const CpuContext ctx{&pool};
  for (const Shape& s : shapes) {
    const int64_t m = s.m, n = s.n, k = s.k;
    std::mt19937_64 rng(7);
    std::normal_distribution<float> normal;
    std::vector<float> x(m * k), w(n * k), dy(m * n);
    for (float& v : x) v = normal(rng);
    for (float& v : w) v = normal(rng);
    for (float& v : dy) v = normal(rng);
    std::vector<std::uint16_t> x16(m * k), w16(n * k), dy16(m * n);
    for (size_t i = 0; i < x.size(); ++i) x16[i] = FloatToBf16(x[i]);
    for (size_t i = 0; i < w.size(); ++i) w16[i] = FloatToBf16(w[i]);
    for (size_t i = 0; i < dy.size(); ++i) dy16[i] = FloatToBf16(dy[i]);
    std::vector<std::uint8_t> xq(m * k), wq(n * k), dyq(m * n), dytq(n * m), xtq(k * m);
    std::vector<float> xs(m * NumTiles(k)), ws(NumTiles(n) * NumTiles(k)), dys(m * NumTiles(n)),
        dyts(n * NumTiles(m)), xts(k * NumTiles(m));
    Quantize1x128(ctx, {}, x.data(), m, k, xq.data(), xs.data());
    Quantize128x128(ctx, {}, w.data(), n, k, wq.data(), ws.data());
    Quantize1x128(ctx, {}, dy.data(), m, n, dyq.data(), dys.data());
    Quantize128x1Transposed(ctx, {}, dy.data(), m, n, dytq.data(), dyts.data());
    Quantize128x1Transposed(ctx, {}, x.data(), m, k, xtq.data(), xts.data());
    std::vector<float> out(std::max({m * n, m * k, n * k})), ref(out.size());
    auto check = [&](const char* what, int64_t size) {
      Require(CalcDiff(std::vector<float>(out.begin(), out.begin() + size),
                       std::vector<float>(ref.begin(), ref.begin() + size)) < 1e-3,
              std::string(what) + " " + s.what);
    };
    GemmDgradBf16(ctx, {}, dy16.data(), w16.data(), m, n, k, ref.data());
    GemmDgradFp8(ctx, {}, dyq.data(), dys.data(), wq.data(), ws.data(), m, n, k, out.data());
    check("dgrad", m * k);
    GemmWgradBf16(ctx, {}, dy16.data(), x16.data(), m, n, k, ref.data());
    GemmWgradFp8(ctx, {}, dytq.data(), dyts.data(), xtq.data(), xts.data(), m, n, k, out.data());
    check("wgrad", n * k);
    const double flops = 2.0 * m * n * k / 1e9;
    const double f16 = flops / BestSeconds([&] {
                         GemmFpropBf16(ctx, {}, x16.data(), w16.data(), m, n, k, out.data());
                       });
    const double f8 =
        flops / BestSeconds([&] {
          GemmFpropFp8(ctx, {}, xq.data(), xs.data(), wq.data(), ws.data(), m, n, k, out.data());
        });
    const double d16 = flops / BestSeconds([&] {
                         GemmDgradBf16(ctx, {}, dy16.data(), w16.data(), m, n, k, out.data());
                       });
    const double d8 =
        flops / BestSeconds([&] {
          GemmDgradFp8(ctx, {}, dyq.data(), dys.data(), wq.data(), ws.data(), m, n, k, out.data());
        });
    const double w16g = flops / BestSeconds([&] {
                          GemmWgradBf16(ctx, {}, dy16.data(), x16.data(), m, n, k, out.data());
                        });
    const double w8 = flops / BestSeconds([&] {
                        GemmWgradFp8(ctx, {}, dytq.data(), dyts.data(), xtq.data(), xts.data(), m,
                                     n, k, out.data());
                      });
    std::printf(
        "%-22s %6lld %6lld %6lld | %8.1f %8.1f %5.2fx | %8.1f %8.1f %5.2fx | %8.1f %8.1f "
        "%5.2fx\n",
        s.what, static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
        f16, f8, f8 / f16, d16, d8, d8 / d16, w16g, w8, w8 / w16g);
  }
}

// Grouped Fprop of the demo model's experts: E experts of [n, k], tokens spread unevenly.
void GroupedTable(int threads) {
  const int64_t e = 16, n = 256, k = 256, t = 2048 * 4;  // 2048 tokens x top-4
  std::mt19937_64 rng(3);
  std::vector<int64_t> counts(e);
  std::gamma_distribution<double> gamma(2.0, 1.0);
  std::vector<double> g(e);
  double sum = 0;
  for (double& v : g) sum += (v = gamma(rng));
  int64_t left = t;
  for (int64_t i = 0; i < e; ++i) {
    counts[i] = i + 1 == e ? left : std::min<int64_t>(left, std::llround(t * g[i] / sum));
    left -= counts[i];
  }
  std::normal_distribution<float> normal;
  std::vector<float> x(t * k), w(e * n * k), y(t * n), ref(t * n);
  for (float& v : x) v = normal(rng);
  for (float& v : w) v = normal(rng);
  std::vector<std::uint16_t> x16(x.size()), w16(w.size());
  for (size_t i = 0; i < x.size(); ++i) x16[i] = FloatToBf16(x[i]);
  for (size_t i = 0; i < w.size(); ++i) w16[i] = FloatToBf16(w[i]);
  ThreadPool pool(threads);
  const CpuContext ctx{&pool};
  std::vector<std::uint8_t> xq(x.size()), wq(w.size());
  std::vector<float> xs(t * NumTiles(k)), ws(e * NumTiles(n) * NumTiles(k));
  Quantize1x128(ctx, {}, x.data(), t, k, xq.data(), xs.data());
  for (int64_t i = 0; i < e; ++i) {
    Quantize128x128(ctx, {}, &w[i * n * k], n, k, &wq[i * n * k],
                    &ws[i * NumTiles(n) * NumTiles(k)]);
  }
  GroupedGemmFpropFp32(ctx, {}, x.data(), w.data(), counts.data(), e, n, k, ref.data());
  GroupedGemmFpropFp8(ctx, {}, xq.data(), xs.data(), wq.data(), ws.data(), counts.data(), e, n, k,
                      y.data());
  Require(CalcDiff(y, ref) < 1e-3, "grouped fp8");
  const double flops = 2.0 * t * n * k / 1e9;
  const double f32 =
      flops / BestSeconds([&] {
        GroupedGemmFpropFp32(ctx, {}, x.data(), w.data(), counts.data(), e, n, k, y.data());
      });
  const double b16 =
      flops / BestSeconds([&] {
        GroupedGemmFpropBf16(ctx, {}, x16.data(), w16.data(), counts.data(), e, n, k, y.data());
      });
  const double f8 = flops / BestSeconds([&] {
                      GroupedGemmFpropFp8(ctx, {}, xq.data(), xs.data(), wq.data(), ws.data(),
                                          counts.data(), e, n, k, y.data());
                    });
  std::printf(
      "\nGrouped Fprop, %lld experts of [%lld, %lld], %lld token rows (min %lld, max %lld "
      "per expert), %d thread(s): fp32 %.1f, bf16 %.1f, fp8 %.1f GFLOP/s (fp8/bf16 %.2fx)\n",
      static_cast<long long>(e), static_cast<long long>(n), static_cast<long long>(k),
      static_cast<long long>(t),
      static_cast<long long>(*std::min_element(counts.begin(), counts.end())),
      static_cast<long long>(*std::max_element(counts.begin(), counts.end())), threads, f32, b16,
      f8, f8 / b16);
}

int Main(int argc, char** argv) {
  std::vector<int> thread_counts = {1, 2};
  bool quick = false;
  int fma_units = 2;
  std::vector<Shape> only_shapes;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--threads=", 0) == 0) {
      thread_counts.clear();
      for (const char* p = arg.c_str() + 10; *p != '\0';) {
        thread_counts.push_back(std::atoi(p));
        while (*p != '\0' && *p != ',') ++p;
        if (*p == ',') ++p;
      }
    } else if (arg == "--quick") {
      quick = true;
    } else if (arg.rfind("--fma_units=", 0) == 0) {
      fma_units = std::atoi(arg.c_str() + 12);
    } else if (arg.rfind("--min_seconds=", 0) == 0) {
      min_seconds = std::atof(arg.c_str() + 14);
    } else if (long long m = 0, n = 0, k = 0;
               arg.rfind("--shape=", 0) == 0 &&
               std::sscanf(arg.c_str() + 8, "%lld,%lld,%lld", &m, &n, &k) == 3 && m > 0 && n > 0 &&
               k > 0) {
      only_shapes.push_back(
          {static_cast<int64_t>(m), static_cast<int64_t>(n), static_cast<int64_t>(k), "given"});
    } else {
      std::fprintf(stderr,
                   "usage: %s [--threads=1,2] [--quick] [--fma_units=2] [--min_seconds=0.15] "
                   "[--shape=M,N,K ...]\n",
                   argv[0]);
      return 2;
    }
  }
  const OpenBlas ob = LoadOpenBlas();
  const double ghz = MeasureGhz();
  std::printf(
      "kernels_gemm_bench: GEMM backend %s; OpenBLAS %s (core %s; the environment had "
      "OPENBLAS_CORETYPE=%s)\n",
      GemmBackendName(), ob.sgemm ? "loaded" : "not found", ob.corename ? ob.corename() : "-",
      previous_coretype.c_str());
  std::printf(
      "clock: measured %.2f GHz (/proc/cpuinfo says %.0f MHz); per-core peak = %.2f GHz x "
      "%d FMA units x 16 lanes x 2 = %.0f GFLOP/s FP32, %.0f GFLOP/s BF16\n",
      ghz, NominalMhz(), ghz, fma_units, ghz * fma_units * 32, ghz * fma_units * 64);

  std::vector<Shape> shapes;
  const std::vector<int64_t> ms =
      quick ? std::vector<int64_t>{128, 512} : std::vector<int64_t>{128, 512, 2048};
  const std::vector<Shape> nk = {
      {0, 288, 256, "demo q_a+kv_a"},     {0, 256, 128, "demo expert down"},
      {0, 1536, 256, "V3 q_b /16"},       {0, 256, 512, "demo-like"},
      {0, 512, 2048, "V3 expert down/4"}, {0, 4096, 512, "V3 kv_b /8"},
      {0, 528, 1792, "V3 q_a+kv_a /4"}};
  for (int64_t m : ms) {
    for (Shape s : nk) {
      s.m = m;
      shapes.push_back(s);
    }
  }
  shapes.push_back({128, 2112, 7168, "V3 q_a+kv_a full"});
  if (!only_shapes.empty()) shapes = only_shapes;

  for (int threads : thread_counts) {
    thread_cpu_time = threads == 1;
    const double peak32 = threads * ghz * fma_units * 32, peak16 = 2 * peak32;
    if (threads > 1) {
      std::printf(
          "\nthread pool: an empty ParallelFor on %d threads takes %.1f us (median of 2000)\n",
          threads, EmptyParallelForMicros(threads));
    }
    std::printf(
        "\nFprop y = x w^T, %d thread(s), GFLOP/s. base32 = best of oneDNN f32 and OpenBLAS "
        "sgemm; base16 = oneDNN bf16 matmul (f32 accumulation); %%pk = of the FP32 or BF16 "
        "peak (%.0f / %.0f)\n",
        threads, peak32, peak16);
    std::printf("%-20s %5s %5s %5s | %7s %7s %7s %5s %4s | %7s %7s %5s %4s | %7s %6s %4s\n",
                "shape", "M", "N", "K", "dnnl32", "oblas32", "ours32", "/base", "%pk", "dnnl16",
                "ours16", "/base", "%pk", "fp8", "/b16", "%pk");
    for (const Shape& s : shapes) {
      const Row r = Measure(s, threads, ob);
      if (failed) return 1;
      const double base32 = std::max(r.dnnl_f32, r.openblas);
      std::printf(
          "%-20s %5lld %5lld %5lld | %7.1f %7.1f %7.1f %4.2fx %3.0f%% | %7.1f %7.1f %4.2fx "
          "%3.0f%% | %7.1f %5.2fx %3.0f%%\n",
          s.what, static_cast<long long>(s.m), static_cast<long long>(s.n),
          static_cast<long long>(s.k), r.dnnl_f32, r.openblas, r.ours_f32,
          base32 > 0 ? r.ours_f32 / base32 : 0.0, 100 * r.ours_f32 / peak32, r.dnnl_bf16,
          r.ours_bf16, r.dnnl_bf16 > 0 ? r.ours_bf16 / r.dnnl_bf16 : 0.0,
          100 * r.ours_bf16 / peak16, r.ours_fp8, r.dnnl_bf16 > 0 ? r.ours_fp8 / r.dnnl_bf16 : 0.0,
          100 * r.ours_fp8 / peak16);
      std::fflush(stdout);
    }
    if (!only_shapes.empty()) continue;
    LayoutTable({{128, 288, 256, "demo q_a+kv_a"},
                 {512, 512, 2048, "V3 expert down/4"},
                 {2048, 4096, 512, "V3 kv_b /8"}},
                threads);
    GroupedTable(threads);
    if (failed) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace dsv3::kernels

int main(int argc, char** argv) { return dsv3::kernels::Main(argc, argv); }
