// Benchmark binary for the pipeline executor (engine/parallel/pipeline_executor.h): N pipeline
// ranks (threads of this process, each with its own model copy and one kernel thread, talking
// over Gloo on loopback TCP) train steps of the demo model deepened to `--layers` layers with
// DualPipe, DualPipeV and 1F1B, with communication overlap on and off. Not a test.
//
// Usage: pipeline_bench [--ranks=4] [--micro_batches=8] [--rows=4] [--seq=128] [--layers=8]
//          [--steps=3] [--precision=fp8] [--schedules=1f1b,dualpipe,dualpipev]
// One line per (schedule, overlap): the median step time (the slowest rank's wall time), the
// measured bubble fraction (1 - compute / wall, averaged over the ranks), the chunk costs F, B, W
// measured in the same steps, and the bubble the spec §6.2 formula gives for those costs:
//   1F1B (PP-1)(F+B); DualPipe (PP/2-1)(F&B+B-3W); DualPipeV the same with PP = 2N;
// as a fraction: formula / (formula + compute per rank). F&B is taken as F + B (one CPU core per
// rank runs the two chunks one after the other).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench/demo_model_config.h"
#include "common/model_config.h"
#include "engine/model/model.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/in_process_store.h"
#include "engine/parallel/pipeline_executor.h"
#include "engine/parallel/schedule_factory.h"

namespace dsv3::parallel {
namespace {

// docs/examples/brown-tiny.json's model with `layers` main layers.
ModelConfig DemoConfig(int64_t layers) {
  ModelConfig c = bench::DemoModelConfig();
  c.num_hidden_layers = layers;
  return c;
}

struct Args {
  int ranks = 4;
  int micro_batches = 8;
  int64_t rows = 4;
  int64_t seq = 128;
  int64_t layers = 8;
  int steps = 3;
  std::string precision = "fp8";
  std::vector<std::string> schedules = {"1f1b", "dualpipe", "dualpipev"};
};

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      const std::string prefix = std::string("--") + name + "=";
      return arg.rfind(prefix, 0) == 0 ? argv[i] + prefix.size() : nullptr;
    };
    if (const char* v = value("ranks")) {
      a.ranks = std::atoi(v);
    } else if (const char* v = value("micro_batches")) {
      a.micro_batches = std::atoi(v);
    } else if (const char* v = value("rows")) {
      a.rows = std::atoll(v);
    } else if (const char* v = value("seq")) {
      a.seq = std::atoll(v);
    } else if (const char* v = value("layers")) {
      a.layers = std::atoll(v);
    } else if (const char* v = value("steps")) {
      a.steps = std::atoi(v);
    } else if (const char* v = value("precision")) {
      a.precision = v;
    } else if (const char* v = value("schedules")) {
      a.schedules = absl::StrSplit(v, ',');
    } else {
      std::fprintf(stderr, "unknown argument %s (see the file comment)\n", argv[i]);
      std::exit(2);
    }
  }
  return a;
}

struct StepStats {
  double wall = 0;         // the slowest rank's step time
  double bubble = 0;       // mean over ranks of 1 - compute / wall
  double compute = 0;      // mean compute seconds per rank
  double op_seconds[5] = {};
  int op_count[5] = {};
};

int Run(const Args& args) {
  absl::StatusOr<model::Precision> precision = model::ParsePrecision(args.precision);
  if (!precision.ok()) {
    std::fprintf(stderr, "%s\n", std::string(precision.status().message()).c_str());
    return 2;
  }
  const ModelConfig config = DemoConfig(args.layers);
  std::mt19937 rng(1);
  std::vector<int32_t> tokens(static_cast<size_t>(args.micro_batches * args.rows * (args.seq + 1)));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % config.vocab_size);
  std::printf("pipeline_bench: %d ranks (threads, Gloo on loopback, 1 kernel thread each), %d "
              "micro-batches of %lld x %lld tokens, demo model with %lld layers, %s\n",
              args.ranks, args.micro_batches, static_cast<long long>(args.rows),
              static_cast<long long>(args.seq), static_cast<long long>(args.layers),
              args.precision.c_str());

  for (const std::string& name : args.schedules) {
    absl::StatusOr<ScheduleKind> kind = ParseScheduleKind(name);
    if (!kind.ok()) {
      std::fprintf(stderr, "%s\n", std::string(kind.status().message()).c_str());
      return 2;
    }
    absl::StatusOr<Schedule> schedule = BuildSchedule(*kind, args.ranks, args.micro_batches);
    if (!schedule.ok()) {
      std::fprintf(stderr, "%s\n", std::string(schedule.status().message()).c_str());
      return 2;
    }
    for (bool overlap : {true, false}) {
      auto store = std::make_shared<InProcessStore>();
      std::vector<std::vector<StepStats>> per_rank(static_cast<size_t>(args.ranks));
      std::vector<std::string> errors(static_cast<size_t>(args.ranks));
      std::vector<std::thread> threads;
      for (int r = 0; r < args.ranks; ++r) {
        threads.emplace_back([&, r] {
          CommunicatorOptions co;
          co.backend = Backend::kGloo;
          co.rank = r;
          co.world_size = args.ranks;
          co.store = store;
          co.timeout = absl::Seconds(300);
          absl::StatusOr<std::unique_ptr<Communicator>> comm = CreateCommunicator(co);
          if (!comm.ok()) {
            errors[r] = std::string(comm.status().message());
            return;
          }
          model::ModelOptions mo;
          mo.precision = *precision;
          absl::StatusOr<std::unique_ptr<model::Model>> m =
              model::Model::Create(config, mo, nullptr);
          if (!m.ok()) {
            errors[r] = std::string(m.status().message());
            return;
          }
          model::InitParameters(1, 0.006, &(*m)->parameters());
          absl::StatusOr<std::unique_ptr<PipelineExecutor>> ex = PipelineExecutor::Create(
              *schedule, m->get(), comm->get(), {.overlap_communication = overlap});
          if (!ex.ok()) {
            errors[r] = std::string(ex.status().message());
            return;
          }
          auto source = [&](int i) -> absl::StatusOr<model::TokenRows> {
            return model::TokenRows{tokens.data() + i * args.rows * (args.seq + 1), args.rows,
                                    args.seq};
          };
          for (int s = 0; s <= args.steps; ++s) {  // step 0 warms up
            (*m)->parameters().ZeroGrads();
            absl::StatusOr<PipelineStepResult> res =
                (*ex)->RunStep(source, args.micro_batches * args.rows);
            if (!res.ok()) {
              errors[r] = std::string(res.status().message());
              return;
            }
            if (s == 0) continue;
            StepStats st;
            st.wall = res->seconds;
            st.compute = res->seconds_compute;
            st.bubble = 1 - res->seconds_compute / res->seconds;
            for (int k = 0; k < 5; ++k) {
              st.op_seconds[k] = res->op_seconds[k];
              st.op_count[k] = res->op_count[k];
            }
            per_rank[r].push_back(st);
          }
        });
      }
      for (std::thread& t : threads) t.join();
      for (int r = 0; r < args.ranks; ++r) {
        if (!errors[r].empty()) {
          std::fprintf(stderr, "%s rank %d: %s\n", name.c_str(), r, errors[r].c_str());
          return 1;
        }
      }
      // Per step: the slowest rank's wall time, the mean bubble and compute over ranks; then the
      // step with the median wall time.
      std::vector<StepStats> steps(static_cast<size_t>(args.steps));
      for (int s = 0; s < args.steps; ++s) {
        StepStats& st = steps[s];
        for (int r = 0; r < args.ranks; ++r) {
          const StepStats& x = per_rank[r][s];
          st.wall = std::max(st.wall, x.wall);
          st.bubble += x.bubble / args.ranks;
          st.compute += x.compute / args.ranks;
          for (int k = 0; k < 5; ++k) {
            st.op_seconds[k] += x.op_seconds[k];
            st.op_count[k] += x.op_count[k];
          }
        }
      }
      std::sort(steps.begin(), steps.end(),
                [](const StepStats& a, const StepStats& b) { return a.wall < b.wall; });
      const StepStats& med = steps[steps.size() / 2];
      auto mean = [&](int k) { return med.op_count[k] > 0 ? med.op_seconds[k] / med.op_count[k] : 0; };
      const double f = mean(0);
      // A full B is Bi + W where the schedule splits it; B and Bi+W chunk costs are pooled.
      const double w = mean(3);
      double b = mean(1);
      if (med.op_count[1] == 0) b = mean(2) + w;
      if (med.op_count[4] > 0 && med.op_count[1] == 0 && med.op_count[2] == 0) b = mean(4) - f;
      const double fb = f + b;
      const int pp = kind.value() == ScheduleKind::kDualPipeV ? 2 * args.ranks : args.ranks;
      const double formula = kind.value() == ScheduleKind::kOneFOneB
                                 ? (pp - 1) * (f + b)
                                 : (pp / 2.0 - 1) * (fb + b - 3 * w);
      std::printf(
          "schedule=%s overlap=%s step_s=%.3f bubble_measured=%.3f bubble_formula=%.3f "
          "compute_per_rank_s=%.3f F_s=%.4f B_s=%.4f W_s=%.4f\n",
          name.c_str(), overlap ? "on" : "off", med.wall, med.bubble,
          formula / (formula + med.compute), med.compute, f, b, w);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace dsv3::parallel

int main(int argc, char** argv) {
  return dsv3::parallel::Run(dsv3::parallel::ParseArgs(argc, argv));
}
