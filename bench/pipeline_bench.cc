// Benchmark binary for the pipeline executor (engine/parallel/pipeline_executor.h): N pipeline
// ranks, each optionally split into E expert-parallel ranks (N x E threads of this process, each
// with its own model copy and one kernel thread, talking over Gloo on loopback TCP), train steps
// of the demo model deepened to `--layers` layers with DualPipe, DualPipeV and 1F1B. Each
// schedule runs in three overlap modes:
//   on             transfers overlap later ops, and F&B chunk pairs overlap (one chunk's
//                  communication hidden behind the other's compute, spec §6.6)
//   sequential_fb  transfers overlap, but an F&B pair runs its forward, then its backward
//   off            every transfer is waited for at once, F&B sequential
// (1F1B has no F&B pairs: only on and off.) Not a test.
//
// Usage: pipeline_bench [--ranks=4] [--expert_parallel=1] [--micro_batches=8] [--rows=4]
//          [--seq=128] [--layers=8] [--steps=3] [--precision=fp8]
//          [--schedules=1f1b,dualpipe,dualpipev]
// One line per (schedule, mode): the median step time (the slowest rank's wall time), the
// measured bubble fraction (1 - compute / wall, averaged over the ranks), the chunk costs F, B, W
// measured in the same steps, and the bubble the spec §6.2 formula gives for those costs:
//   1F1B (PP-1)(F+B); DualPipe (PP/2-1)(F&B+B-3W); DualPipeV the same with PP = 2N;
// as a fraction: formula / (formula + compute per rank). F&B is taken as F + B (a CPU rank never
// computes both chunks at once; overlap hides communication, not compute). With expert
// parallelism, time blocked in an all-to-all counts as compute except inside overlapped F&B
// pairs, where only the time a chunk computes does.

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
#include "engine/parallel/expert_parallel.h"
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
  int expert_parallel = 1;
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
    } else if (const char* v = value("expert_parallel")) {
      a.expert_parallel = std::atoi(v);
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
  const int ep = args.expert_parallel;
  if (ep < 1 || config.n_routed_experts % ep != 0) {
    std::fprintf(stderr, "--expert_parallel=%d must divide the demo model's %lld experts\n", ep,
                 static_cast<long long>(config.n_routed_experts));
    return 2;
  }
  const int world = args.ranks * ep;
  // Expert shard k trains its own rows: block k of the tokens.
  const size_t per_shard = static_cast<size_t>(args.micro_batches * args.rows * (args.seq + 1));
  std::vector<int32_t> tokens(per_shard * ep);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % config.vocab_size);
  std::printf("pipeline_bench: %d pipeline ranks x %d expert-parallel (threads, Gloo on loopback, "
              "1 kernel thread each), %d micro-batches of %lld x %lld tokens per expert shard, "
              "demo model with %lld layers, %s\n",
              args.ranks, ep, args.micro_batches, static_cast<long long>(args.rows),
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
    std::vector<std::string> modes = {"on", "sequential_fb", "off"};
    if (*kind == ScheduleKind::kOneFOneB) modes = {"on", "off"};
    for (const std::string& mode : modes) {
      auto store = std::make_shared<InProcessStore>();
      std::vector<std::vector<StepStats>> per_rank(static_cast<size_t>(world));
      std::vector<std::string> errors(static_cast<size_t>(world));
      std::vector<std::thread> threads;
      for (int r = 0; r < world; ++r) {
        threads.emplace_back([&, r] {
          auto fail = [&](const absl::Status& s) { errors[r] = std::string(s.message()); };
          CommunicatorOptions co;
          co.backend = Backend::kGloo;
          co.rank = r;
          co.world_size = world;
          co.store = store;
          co.timeout = absl::Seconds(300);
          absl::StatusOr<std::unique_ptr<Communicator>> comm = CreateCommunicator(co);
          if (!comm.ok()) return fail(comm.status());
          // Rank r = stage x E + shard: the pipeline joins one shard's stages, the expert
          // groups (one for the forward's all-to-alls, one for the backward's) a stage's shards.
          const int stage = r / ep, shard = r % ep;
          absl::StatusOr<std::unique_ptr<Communicator>> pipe = (*comm)->Split(shard, stage);
          if (!pipe.ok()) return fail(pipe.status());
          absl::StatusOr<std::unique_ptr<Communicator>> experts = (*comm)->Split(stage, shard);
          if (!experts.ok()) return fail(experts.status());
          absl::StatusOr<std::unique_ptr<Communicator>> experts_b = (*comm)->Split(stage, shard);
          if (!experts_b.ok()) return fail(experts_b.status());
          model::ModelOptions mo;
          mo.precision = *precision;
          absl::StatusOr<std::unique_ptr<model::Model>> m =
              model::Model::Create(config, mo, nullptr);
          if (!m.ok()) return fail(m.status());
          model::InitParameters(1, 0.006, &(*m)->parameters());
          if (ep > 1) {
            const model::GemmMode gemm = *precision == model::Precision::kFp8
                                             ? model::GemmMode::kFp8
                                         : *precision == model::Precision::kBf16
                                             ? model::GemmMode::kBf16
                                             : model::GemmMode::kFp32;
            for (int64_t l = 0; l < (*m)->num_moe_layers(); ++l) {
              absl::StatusOr<std::shared_ptr<ExpertParallelExecutor>> x =
                  ExpertParallelExecutor::Create(
                      experts->get(), config, &(*m)->parameters(),
                      "model.layers." + std::to_string(config.first_k_dense_replace + l) +
                          ".mlp.",
                      gemm, experts_b->get());
              if (!x.ok()) return fail(x.status());
              (*m)->SetExpertExecutor(l, *x);
            }
          }
          absl::StatusOr<std::unique_ptr<PipelineExecutor>> ex = PipelineExecutor::Create(
              *schedule, m->get(), pipe->get(),
              {.overlap_communication = mode != "off", .overlap_chunks = mode == "on"});
          if (!ex.ok()) return fail(ex.status());
          const int32_t* mine = tokens.data() + shard * per_shard;
          auto source = [&, mine](int i) -> absl::StatusOr<model::TokenRows> {
            return model::TokenRows{mine + i * args.rows * (args.seq + 1), args.rows, args.seq};
          };
          for (int s = 0; s <= args.steps; ++s) {  // step 0 warms up
            (*m)->parameters().ZeroGrads();
            absl::StatusOr<PipelineStepResult> res =
                (*ex)->RunStep(source, args.micro_batches * args.rows * ep);
            if (!res.ok()) return fail(res.status());
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
      for (int r = 0; r < world; ++r) {
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
        for (int r = 0; r < world; ++r) {
          const StepStats& x = per_rank[r][s];
          st.wall = std::max(st.wall, x.wall);
          st.bubble += x.bubble / world;
          st.compute += x.compute / world;
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
          name.c_str(), mode.c_str(), med.wall, med.bubble,
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
