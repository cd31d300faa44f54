// Benchmark binary for one training step of the whole C++ model (engine/model/model.h): forward
// and backward of one batch of random tokens on the demo config (docs/examples/brown-tiny.json),
// timed per precision. The PyTorch baseline is bench/torch_model_step.py; bench/model_speed.sh
// runs both and prints the table with the ratios. Not a test.
//
// Usage: model_step_bench [--batch=16] [--seq=128] [--threads=1] [--precision=fp32,bf16,fp8]
//          [--steps=5] [--warmup=2] [--recompute] [--seed=1]
// Before timing, each precision's first run must give a finite loss near ln(vocab) (the model
// is freshly initialised, so the predictions are almost uniform) and finite, non-zero gradients.
// Prints one line per precision:
//   "precision=<p> tokens_per_s=<median> step_s=<median> min_s=<min> max_s=<max>
//    cpu_tokens_per_s=<median> cpu_s=<median> loss=<first>"
// step_s is wall clock; cpu_s the process's CPU time per step (all threads; steadier on a shared
// machine, and with one thread the step time an idle core would give). Gradients are zeroed
// between runs, outside the timed region.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench/demo_model_config.h"
#include "common/model_config.h"
#include "engine/model/model.h"
#include "engine/model/parameters.h"
#include "kernels/cpu/thread_pool.h"

namespace dsv3::model {
namespace {

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// CPU time of the whole process (all threads).
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The first run's sanity checks (see the file comment). Returns false with a message on stderr.
bool CheckFirstRun(const LossTerms& loss, const ParameterSet& params, int64_t vocab) {
  const double uniform = std::log(static_cast<double>(vocab));
  if (!std::isfinite(loss.loss) || std::abs(loss.main_loss - uniform) > 0.5) {
    std::fprintf(stderr, "first run: loss=%g main_loss=%g, expected about ln(V)=%g\n", loss.loss,
                 loss.main_loss, uniform);
    return false;
  }
  double sum_sq = 0;
  for (float g : params.grads) sum_sq += static_cast<double>(g) * g;
  if (!std::isfinite(sum_sq) || sum_sq <= 0) {
    std::fprintf(stderr, "first run: gradient sum of squares %g\n", sum_sq);
    return false;
  }
  return true;
}

int Main(int argc, char** argv) {
  int64_t batch = 16, seq = 128;
  int threads = 1, steps = 5, warmup = 2;
  uint64_t seed = 1;
  bool recompute = false;
  std::string precisions = "fp32,bf16,fp8";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      const std::string prefix = std::string(flag) + "=";
      return arg.rfind(prefix, 0) == 0 ? arg.c_str() + prefix.size() : nullptr;
    };
    if (const char* x = value("--batch")) {
      batch = std::atoll(x);
    } else if (const char* x = value("--seq")) {
      seq = std::atoll(x);
    } else if (const char* x = value("--threads")) {
      threads = std::atoi(x);
    } else if (const char* x = value("--precision")) {
      precisions = x;
    } else if (const char* x = value("--steps")) {
      steps = std::atoi(x);
    } else if (const char* x = value("--warmup")) {
      warmup = std::atoi(x);
    } else if (const char* x = value("--seed")) {
      seed = std::strtoull(x, nullptr, 10);
    } else if (arg == "--recompute") {
      recompute = true;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--batch=16] [--seq=128] [--threads=1] [--precision=fp32,bf16,fp8] "
                   "[--steps=5] [--warmup=2] [--recompute] [--seed=1]\n",
                   argv[0]);
      return 2;
    }
  }
  if (batch < 1 || seq < 2 || threads < 1 || steps < 1 || warmup < 1) {
    std::fprintf(stderr, "need batch >= 1, seq >= 2, threads >= 1, steps >= 1, warmup >= 1\n");
    return 2;
  }

  const ModelConfig config = bench::DemoModelConfig();
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(config.vocab_size - 1));
  std::vector<int32_t> tokens(static_cast<size_t>(batch * (seq + 1)));  // [B, T+1] row-major
  for (int32_t& t : tokens) t = token(rng);
  const TokenRows rows{tokens.data(), batch, seq};

  kernels::ThreadPool pool(threads);
  std::printf("config=brown-tiny batch=%lld seq=%lld tokens=%lld threads=%d recompute=%d "
              "steps=%d warmup=%d\n",
              static_cast<long long>(batch), static_cast<long long>(seq),
              static_cast<long long>(batch * seq), threads, recompute ? 1 : 0, steps, warmup);
  for (const std::string& name : std::vector<std::string>(absl::StrSplit(precisions, ','))) {
    absl::StatusOr<Precision> precision = ParsePrecision(name);
    if (!precision.ok()) {
      std::fprintf(stderr, "%s\n", precision.status().ToString().c_str());
      return 2;
    }
    ModelOptions options;
    options.precision = *precision;
    options.recompute = recompute;
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config, options, &pool);
    if (!model.ok()) {
      std::fprintf(stderr, "Model::Create: %s\n", model.status().ToString().c_str());
      return 1;
    }
    ParameterSet& params = (*model)->parameters();
    InitParameters(seed, 0.006, &params);
    RunOptions run;  // backward = true, count_loads = true: a training micro-batch

    double first_loss = 0;
    for (int i = 0; i < warmup; ++i) {
      params.ZeroGrads();
      absl::StatusOr<LossTerms> loss = (*model)->Run(rows, run);
      if (!loss.ok()) {
        std::fprintf(stderr, "Run: %s\n", loss.status().ToString().c_str());
        return 1;
      }
      if (i == 0) {
        if (!CheckFirstRun(*loss, params, config.vocab_size)) return 1;
        first_loss = loss->loss;
      }
    }
    std::vector<double> times, cpu_times;
    for (int i = 0; i < steps; ++i) {
      params.ZeroGrads();
      const double t0 = Seconds(), c0 = CpuSeconds();
      absl::StatusOr<LossTerms> loss = (*model)->Run(rows, run);
      cpu_times.push_back(CpuSeconds() - c0);
      times.push_back(Seconds() - t0);
      if (!loss.ok() || !std::isfinite(loss->loss)) {
        std::fprintf(stderr, "Run failed at step %d\n", i);
        return 1;
      }
    }
    const double median = Median(times), cpu = Median(cpu_times);
    const double tokens_per_step = static_cast<double>(batch * seq);
    std::printf(
        "precision=%s tokens_per_s=%.1f step_s=%.5f min_s=%.5f max_s=%.5f cpu_tokens_per_s=%.1f "
        "cpu_s=%.5f loss=%.6f\n",
        name.c_str(), tokens_per_step / median, median,
        *std::min_element(times.begin(), times.end()),
        *std::max_element(times.begin(), times.end()), tokens_per_step / cpu, cpu, first_loss);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace dsv3::model

int main(int argc, char** argv) { return dsv3::model::Main(argc, argv); }
