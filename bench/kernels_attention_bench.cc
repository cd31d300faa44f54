// Benchmark binary for the CPU flash-style attention (kernels/cpu/attention.h): times forward and
// backward on random inputs of one shape, or, with --check_dir, runs them once on the .npy inputs
// found there and writes the outputs back so a driver can check them against PyTorch. The table
// with the PyTorch baseline comes from bench/kernels_attention_bench.py, which runs this. Not a
// test.
//
// Usage: kernels_attention_bench --batch=B --seq=T --heads=H --qk_dim=D --v_dim=E [--threads=N]
//          [--reps=R] [--portable] [--cpu_time] [--check_dir=DIR]
// Prints one line: "forward_s=<best> backward_s=<best> kernels=<name>" (best of R runs each; wall
// time, or with --cpu_time the process's CPU time, steadier on a busy machine).
// --check_dir reads DIR/{q,k,v,dout}.npy (float32 [B, T, H, d]) and writes
// DIR/{o,lse,dq,dk,dv}.npy.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/testing/npy.h"

namespace dsv3::kernels {
namespace {

// Wall time, or (cpu_time) CPU time of the whole process: on a shared machine the latter leaves
// out the time other processes had the cores, though not their effect on the caches.
double Now(bool cpu_time) {
  if (!cpu_time) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double BestSeconds(const std::function<void()>& fn, int reps, bool cpu_time) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const double t0 = Now(cpu_time);
    fn();
    best = std::min(best, Now(cpu_time) - t0);
  }
  return best;
}

bool Load(const std::string& path, int64_t n, std::vector<float>* out) {
  NpyArray a;
  const std::string err = ReadNpy(path, &a);
  if (!err.empty() || a.size() != n) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), err.empty() ? "wrong size" : err.c_str());
    return false;
  }
  *out = a.AsFloat32();
  return true;
}

int Main(int argc, char** argv) {
  AttentionParams p{.batch = 1, .seq_len = 512, .heads = 4, .qk_dim = 192, .v_dim = 128};
  int threads = 1, reps = 3;
  bool portable = false, cpu_time = false;
  std::string check_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      const std::string prefix = std::string(flag) + "=";
      return arg.rfind(prefix, 0) == 0 ? arg.c_str() + prefix.size() : nullptr;
    };
    if (const char* x = value("--batch")) {
      p.batch = std::atoll(x);
    } else if (const char* x = value("--seq")) {
      p.seq_len = std::atoll(x);
    } else if (const char* x = value("--heads")) {
      p.heads = std::atoll(x);
    } else if (const char* x = value("--qk_dim")) {
      p.qk_dim = std::atoll(x);
    } else if (const char* x = value("--v_dim")) {
      p.v_dim = std::atoll(x);
    } else if (const char* x = value("--threads")) {
      threads = std::atoi(x);
    } else if (const char* x = value("--reps")) {
      reps = std::atoi(x);
    } else if (const char* x = value("--check_dir")) {
      check_dir = x;
    } else if (arg == "--portable") {
      portable = true;
    } else if (arg == "--cpu_time") {
      cpu_time = true;
    } else {
      std::fprintf(stderr,
                   "usage: %s --batch=B --seq=T --heads=H --qk_dim=D --v_dim=E [--threads=N] "
                   "[--reps=R] [--portable] [--cpu_time] [--check_dir=DIR]\n",
                   argv[0]);
      return 2;
    }
  }
  if (threads < 1 || reps < 1 || p.batch < 1 || p.seq_len < 1 || p.heads < 1 || p.qk_dim < 1 ||
      p.v_dim < 1) {
    std::fprintf(stderr, "all sizes, --threads and --reps must be >= 1\n");
    return 2;
  }
  p.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.qk_dim)));
  const int64_t tokens = p.batch * p.seq_len;
  const int64_t nqk = tokens * p.heads * p.qk_dim, nv = tokens * p.heads * p.v_dim;
  std::vector<float> q(nqk), k(nqk), v(nv), dout(nv);
  std::vector<float> o(nv), lse(tokens * p.heads), dq(nqk), dk(nqk), dv(nv);
  if (!check_dir.empty()) {
    if (!Load(check_dir + "/q.npy", nqk, &q) || !Load(check_dir + "/k.npy", nqk, &k) ||
        !Load(check_dir + "/v.npy", nv, &v) || !Load(check_dir + "/dout.npy", nv, &dout)) {
      return 1;
    }
  } else {
    std::mt19937_64 rng(1);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (auto* x : {&q, &k, &v, &dout}) {
      for (float& e : *x) e = dist(rng);
    }
  }
  std::unique_ptr<ThreadPool> pool;
  if (threads > 1) pool = std::make_unique<ThreadPool>(threads);
  const CpuContext ctx{.pool = pool.get(), .use_simd = !portable};
  auto forward = [&] {
    AttentionForward(ctx, p, q.data(), k.data(), v.data(), o.data(), lse.data());
  };
  auto backward = [&] {
    AttentionBackward(ctx, p, q.data(), k.data(), v.data(), o.data(), lse.data(), dout.data(),
                      dq.data(), dk.data(), dv.data());
  };
  if (!check_dir.empty()) {
    forward();
    backward();
    const std::vector<int64_t> qk_shape = {p.batch, p.seq_len, p.heads, p.qk_dim};
    const std::vector<int64_t> v_shape = {p.batch, p.seq_len, p.heads, p.v_dim};
    for (const std::string& err :
         {WriteNpy(check_dir + "/o.npy", v_shape, o.data()),
          WriteNpy(check_dir + "/lse.npy", {p.batch, p.heads, p.seq_len}, lse.data()),
          WriteNpy(check_dir + "/dq.npy", qk_shape, dq.data()),
          WriteNpy(check_dir + "/dk.npy", qk_shape, dk.data()),
          WriteNpy(check_dir + "/dv.npy", v_shape, dv.data())}) {
      if (!err.empty()) {
        std::fprintf(stderr, "%s\n", err.c_str());
        return 1;
      }
    }
    return 0;
  }
  forward();  // Warm-up (page faults, caches).
  backward();
  const double forward_s = BestSeconds(forward, reps, cpu_time);
  const double backward_s = BestSeconds(backward, reps, cpu_time);
  std::printf("forward_s=%.6f backward_s=%.6f kernels=%s\n", forward_s, backward_s,
              internal::AttentionKernelsFor(ctx).name);
  return 0;
}

}  // namespace
}  // namespace dsv3::kernels

int main(int argc, char** argv) { return dsv3::kernels::Main(argc, argv); }
