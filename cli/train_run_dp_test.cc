// Multi-process `dsv3-train run --world_size=2 --rank=R --store=DIR` through the real binary (Gloo
// on 127.0.0.1, a file store): two rank processes against one single-process run of the same spec
// give the same final validation loss and the same checkpointed parameters; the 2-rank job resumes
// from its own checkpoint with the same store dir; every rank writes its checkpoint lines, and
// --resume_step resumes every rank from exactly that step; a rank that dies makes the other exit
// non-zero naming the peer. Every process is killed when a test fails or runs past its time bound.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_matchers.h"
#include "engine/model/checkpoint_export.h"
#include "engine/train/checkpoint.h"
#include "engine/train/trainer_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace dsv3::cli {
namespace {

using ::testing::HasSubstr;
using train::testing::ScratchDir;

// The tiny model of engine/train/trainer_test_util.h; B = 8 rows in 2 micro-batches.
constexpr char kSpecTemplate[] = R"({
  "name": "tiny-dp",
  "model": { "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
             "first_k_dense_replace": 1, "intermediate_size": 64, "moe_intermediate_size": 16,
             "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 2,
             "topk_group": 2, "routed_scaling_factor": 2.5, "num_attention_heads": 2,
             "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
             "v_head_dim": 8, "num_nextn_predict_layers": 1 },
  "parallel": PARALLEL,
  "train": { "seq_len": 16, "global_batch_tokens": 128, "steps": STEPS, "lr": 3e-3,
             "warmup_steps": 1, "val_tokens": 64, "seed": 3, "grad_clip": 0.5 },
  "precision": "fp32",
  "data": { "train": "DIR/train.bin", "val": "DIR/val.bin" },
  "checkpoint": { "dir": "DIR/CKPT", "every_steps": 2, "keep": 2 }
})";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Child processes of one test; the destructor SIGKILLs and reaps any still running.
class Processes {
 public:
  ~Processes() {
    for (pid_t pid : running_) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  // Starts the binary with `args`, stdout and stderr to `out` and `err`. -1 on failure.
  pid_t Start(std::vector<std::string> args, const std::string& out, const std::string& err) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    args.insert(args.begin(), DSV3_TRAIN_BINARY);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    if (posix_spawn(&pid, DSV3_TRAIN_BINARY, &actions, nullptr, argv.data(), environ) != 0) {
      pid = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
    if (pid > 0) running_.push_back(pid);
    return pid;
  }
  // Waits for `pid` until `deadline`; its exit code, or -1 when it did not exit in time or was
  // killed by a signal.
  int Wait(pid_t pid, std::chrono::steady_clock::time_point deadline) {
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      const pid_t got = waitpid(pid, &status, WNOHANG);
      if (got == pid) {
        std::erase(running_, pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }
  void Kill(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    std::erase(running_, pid);
  }

 private:
  std::vector<pid_t> running_;
};

class RunDataParallelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(train::testing::WriteSyntheticShard(dir_.Sub("train.bin"), 20000, 64, 1));
    ASSERT_OK(train::testing::WriteSyntheticShard(dir_.Sub("val.bin"), 2000, 64, 2));
  }
  std::string WriteSpec(int steps, const std::string& ckpt, const std::string& name,
                        const std::string& parallel =
                            R"({ "pipeline_parallel": 1, "micro_batches": 2, "schedule": "1f1b" })") {
    const std::string text =
        absl::StrReplaceAll(kSpecTemplate, {{"STEPS", absl::StrCat(steps)},
                                            {"DIR", dir_.path()},
                                            {"CKPT", ckpt},
                                            {"PARALLEL", parallel}});
    const std::string path = dir_.Sub(name);
    std::ofstream(path) << text;
    return path;
  }
  // Runs ranks 0..world-1 of `spec` (world 1: no multi-process flags) with `extra` flags; returns
  // each rank's exit code, and fills outs/errs. Fails the test past `seconds`.
  std::vector<int> RunJob(const std::string& spec, int world, const std::string& tag,
                          const std::vector<std::string>& extra, int seconds,
                          std::vector<std::string>* outs, std::vector<std::string>* errs) {
    Processes procs;
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      std::vector<std::string> args = {"run", "--spec=" + spec, "--threads=1"};
      if (world > 1) {
        args.push_back(absl::StrCat("--world_size=", world));
        args.push_back(absl::StrCat("--rank=", r));
        args.push_back("--store=" + dir_.Sub("store"));
      }
      args.insert(args.end(), extra.begin(), extra.end());
      pids.push_back(procs.Start(args, dir_.Sub(absl::StrCat(tag, r, ".out")),
                                 dir_.Sub(absl::StrCat(tag, r, ".err"))));
      EXPECT_GT(pids.back(), 0);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    std::vector<int> codes;
    for (pid_t pid : pids) codes.push_back(pid > 0 ? procs.Wait(pid, deadline) : -1);
    for (int r = 0; r < world; ++r) {
      outs->push_back(ReadAll(dir_.Sub(absl::StrCat(tag, r, ".out"))));
      errs->push_back(ReadAll(dir_.Sub(absl::StrCat(tag, r, ".err"))));
    }
    return codes;  // ~Processes kills whatever is still running
  }
  ScratchDir dir_{"train_run_dp_test"};
};

double FinalValLoss(const std::string& out) {
  std::smatch m;
  const std::regex re(R"(final val loss ([0-9.]+) \(main\))");
  return std::regex_search(out, m, re) ? std::stod(m[1]) : NAN;
}

// The largest per-tensor relative difference between the parameters of two checkpoints (and an
// EXPECT that each is within `tolerance`).
double CompareCheckpoints(const std::string& want_dir, const std::string& got_dir,
                          double tolerance) {
  absl::StatusOr<train::CommittedCheckpoint> a = train::LatestCommitted(want_dir);
  absl::StatusOr<train::CommittedCheckpoint> b = train::LatestCommitted(got_dir);
  EXPECT_OK(a);
  EXPECT_OK(b);
  if (!a.ok() || !b.ok()) return INFINITY;
  absl::StatusOr<model::CheckpointModel> want = model::LoadCheckpointModel(a->path);
  absl::StatusOr<model::CheckpointModel> got = model::LoadCheckpointModel(b->path);
  EXPECT_OK(want);
  EXPECT_OK(got);
  if (!want.ok() || !got.ok()) return INFINITY;
  double largest = 0;
  for (const model::ParamInfo& p : want->params.layout.params()) {
    double num = 0, den = 0;
    for (int64_t i = p.offset; i < p.offset + p.size; ++i) {
      const double d = static_cast<double>(got->params.values[i]) - want->params.values[i];
      num += d * d;
      den += static_cast<double>(want->params.values[i]) * want->params.values[i];
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    largest = std::max(largest, rel);
    EXPECT_LE(rel, tolerance) << p.name << " [" << p.size << "]";
  }
  return largest;
}

// Per-step values of `key` from a --metrics file (the "step" events, in order).
std::vector<double> StepMetric(const std::string& path, const std::string& key) {
  std::vector<double> values;
  std::ifstream in(path);
  const std::regex re("\"" + key + "\": ([-+0-9.eE]+)");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (line.find(R"("event": "step")") != std::string::npos && std::regex_search(line, m, re)) {
      values.push_back(std::stod(m[1]));
    }
  }
  return values;
}

// Pipeline- and expert-parallel jobs of real processes (Gloo): DualPipe over 2 ranks, and 2 stages
// x 2 expert shards (4 processes), each against one process on the same global batch: per-step
// loss terms (relative 1e-5, from --metrics) and final parameters (relative 1e-4).
TEST_F(RunDataParallelTest, PipelineRankProcessesMatchOneProcess) {
  constexpr int kSteps = 5;
  const std::string parallel =
      R"({ "pipeline_parallel": 2, "expert_parallel": 2, "micro_batches": 4,
           "schedule": "dualpipe" })";
  std::vector<std::string> outs, errs;
  const std::string single = WriteSpec(kSteps, "pp-one", "pp-one.json", parallel);
  std::vector<int> codes =
      RunJob(single, 1, "ppone", {"--metrics=" + dir_.Sub("ppone.jsonl")}, 120, &outs, &errs);
  ASSERT_EQ(codes[0], 0) << errs[0] << outs[0];
  EXPECT_THAT(outs[0],
              HasSubstr("parallel.pipeline_parallel=2 and expert_parallel=2 are ignored"));
  const double want_val = FinalValLoss(outs[0]);
  ASSERT_FALSE(std::isnan(want_val)) << outs[0];
  for (int world : {2, 4}) {
    SCOPED_TRACE(absl::StrCat(world, " ranks"));
    const std::string ckpt = absl::StrCat("pp", world);
    const std::string spec = WriteSpec(kSteps, ckpt, ckpt + ".json", parallel);
    outs.clear(), errs.clear();
    codes = RunJob(spec, world, ckpt, {"--metrics=" + dir_.Sub(ckpt + ".jsonl")}, 180, &outs,
                   &errs);
    ASSERT_EQ(codes, std::vector<int>(static_cast<size_t>(world), 0)) << errs[0] << outs[0];
    for (const char* key : {"loss", "main_loss", "mtp_loss", "balance_loss", "grad_norm"}) {
      const std::vector<double> want = StepMetric(dir_.Sub("ppone.jsonl"), key);
      const std::vector<double> got = StepMetric(dir_.Sub(ckpt + ".jsonl"), key);
      ASSERT_EQ(want.size(), static_cast<size_t>(kSteps)) << key;
      ASSERT_EQ(got.size(), want.size()) << key;
      for (int s = 0; s < kSteps; ++s) {
        EXPECT_NEAR(got[s], want[s], 1e-5 * std::abs(want[s])) << key << " at step " << s + 1;
      }
    }
    EXPECT_THAT(outs[0], HasSubstr(absl::StrCat(world, " ranks: pipeline 2 (dualpipe, 2 stages) x ",
                                                world / 2, " rank")));
    EXPECT_THAT(outs[0], HasSubstr(absl::StrCat("(expert parallel ", world / 2)));
    const double got_val = FinalValLoss(outs[0]);
    std::cout << "final val loss: 1 process " << want_val << ", " << world << " ranks "
              << got_val << "\n";
    EXPECT_NEAR(got_val, want_val, 1e-4 * want_val + 1e-4);
    std::cout << "largest per-tensor relative parameter difference "
              << CompareCheckpoints(dir_.Sub("pp-one"), dir_.Sub(ckpt), 1e-4) << "\n";
  }
  // A world that does not split into whole pipelines is bad input.
  outs.clear(), errs.clear();
  codes = RunJob(WriteSpec(kSteps, "pp3", "pp3.json", parallel), 3, "pp3", {}, 60, &outs, &errs);
  EXPECT_EQ(codes[0], 2);
  EXPECT_THAT(errs[0], HasSubstr("the planner would use 2 ranks"));
}

TEST_F(RunDataParallelTest, TwoRankProcessesMatchOneProcessAndResume) {
  constexpr int kSteps = 4;
  std::vector<std::string> outs, errs;
  const std::string single = WriteSpec(kSteps, "ckpt1", "single.json");
  std::vector<int> codes = RunJob(single, 1, "single", {}, 120, &outs, &errs);
  ASSERT_EQ(codes[0], 0) << errs[0] << outs[0];
  const double want_val = FinalValLoss(outs[0]);
  ASSERT_FALSE(std::isnan(want_val)) << outs[0];

  // The 2-rank job in two launches with the same store dir: steps 1-2, then 3-4 from its
  // checkpoint.
  const std::string dp = WriteSpec(kSteps, "ckpt2", "dp.json");
  outs.clear(), errs.clear();
  codes = RunJob(dp, 2, "dpa", {"--steps=2"}, 120, &outs, &errs);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << errs[0] << errs[1] << outs[0];
  outs.clear(), errs.clear();
  codes = RunJob(dp, 2, "dpb", {}, 120, &outs, &errs);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << errs[0] << errs[1] << outs[0];
  EXPECT_THAT(outs[0], HasSubstr("2 data-parallel ranks (ZeRO-1"));
  EXPECT_THAT(outs[0], HasSubstr("resume       from " + dir_.Sub("ckpt2/step-00000002")));
  EXPECT_THAT(outs[0], HasSubstr("done  4/4 steps (resumed at 2)"));
  EXPECT_EQ(outs[1], "") << "only rank 0 prints progress";
  EXPECT_EQ(errs[0] + errs[1], "");
  const double got_val = FinalValLoss(outs[0]);
  std::cout << "final val loss: 1 process " << want_val << ", 2 ranks " << got_val << "\n";
  EXPECT_NEAR(got_val, want_val, 1e-4 * want_val + 1e-4);  // + the printed rounding

  // The committed checkpoints hold the same parameters (export's loader also checks that both
  // ranks' model files are identical replicas).
  absl::StatusOr<train::CommittedCheckpoint> a = train::LatestCommitted(dir_.Sub("ckpt1"));
  absl::StatusOr<train::CommittedCheckpoint> b = train::LatestCommitted(dir_.Sub("ckpt2"));
  ASSERT_OK(a);
  ASSERT_OK(b);
  EXPECT_EQ(b->manifest.step, kSteps);
  EXPECT_EQ(b->manifest.world_size, 2);
  ASSERT_OK_AND_ASSIGN(model::CheckpointModel want, model::LoadCheckpointModel(a->path));
  ASSERT_OK_AND_ASSIGN(model::CheckpointModel got, model::LoadCheckpointModel(b->path));
  double largest = 0;
  for (const model::ParamInfo& p : want.params.layout.params()) {
    double num = 0, den = 0;
    for (int64_t i = p.offset; i < p.offset + p.size; ++i) {
      const double d = static_cast<double>(got.params.values[i]) - want.params.values[i];
      num += d * d;
      den += static_cast<double>(want.params.values[i]) * want.params.values[i];
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    largest = std::max(largest, rel);
    EXPECT_LE(rel, 1e-4) << p.name << " [" << p.size << "]";
  }
  std::cout << "largest per-tensor relative parameter difference " << largest << "\n";

  // Resuming the 2-rank checkpoint in one process is refused with a clear error.
  outs.clear(), errs.clear();
  codes = RunJob(dp, 1, "one", {"--steps=6"}, 60, &outs, &errs);
  EXPECT_EQ(codes[0], 2);
  EXPECT_THAT(errs[0], HasSubstr("resuming a multi-rank checkpoint in one process"));
}

// The "checkpoint" events of a --metrics file: the steps, in order.
std::vector<int> CheckpointSteps(const std::string& path) {
  std::vector<int> steps;
  std::ifstream in(path);
  const std::regex re(R"re("event": "checkpoint", "step": ([0-9]+))re");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, re)) steps.push_back(std::stoi(m[1]));
  }
  return steps;
}

// Every rank acknowledges each checkpoint in its own metrics file (the service commits a step
// when all have), and --resume_step resumes every rank from exactly that step, discarding the
// later checkpoint first, on the trajectory of the straight run.
TEST_F(RunDataParallelTest, EveryRankReportsEachCheckpointAndResumeStepResumesExactlyThere) {
  const std::string spec = WriteSpec(6, "rs", "rs.json");  // a checkpoint every 2 steps, keep 2
  std::vector<std::string> outs, errs;
  std::vector<int> codes =
      RunJob(spec, 2, "rsa", {"--metrics=" + dir_.Sub("rsa-{rank}.jsonl")}, 120, &outs, &errs);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << errs[0] << errs[1] << outs[0];
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(CheckpointSteps(dir_.Sub(absl::StrCat("rsa-", r, ".jsonl"))),
              (std::vector<int>{2, 4, 6}))
        << "rank " << r;
  }

  outs.clear(), errs.clear();
  codes = RunJob(spec, 2, "rsb", {"--resume_step=4", "--metrics=" + dir_.Sub("rsb-{rank}.jsonl")},
                 120, &outs, &errs);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << errs[0] << errs[1] << outs[0];
  EXPECT_THAT(outs[0], HasSubstr("resume       from " + dir_.Sub("rs/step-00000004")));
  EXPECT_THAT(outs[0], HasSubstr("note         --resume_step=4: discarded 1 later checkpoint "
                                 "directory (step-00000006); this run trains those steps again"));
  EXPECT_THAT(outs[0], HasSubstr("done  6/6 steps (resumed at 4)"));
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(CheckpointSteps(dir_.Sub(absl::StrCat("rsb-", r, ".jsonl"))),
              (std::vector<int>{6}))
        << "rank " << r;
  }
  for (const char* key : {"loss", "main_loss", "grad_norm"}) {
    const std::vector<double> straight = StepMetric(dir_.Sub("rsa-0.jsonl"), key);
    const std::vector<double> resumed = StepMetric(dir_.Sub("rsb-0.jsonl"), key);
    ASSERT_EQ(straight.size(), 6u);
    ASSERT_EQ(resumed.size(), 2u);
    EXPECT_EQ(resumed[0], straight[4]) << key << " at step 5, bit for bit";
    EXPECT_EQ(resumed[1], straight[5]) << key << " at step 6, bit for bit";
  }
  absl::StatusOr<train::CommittedCheckpoint> latest = train::LatestCommitted(dir_.Sub("rs"));
  ASSERT_OK(latest);
  EXPECT_EQ(latest->manifest.step, 6);

  // A step without a committed checkpoint is refused by every rank, in one line, before they
  // connect; nothing is discarded.
  outs.clear(), errs.clear();
  codes = RunJob(spec, 2, "rsc", {"--resume_step=3"}, 60, &outs, &errs);
  EXPECT_EQ(codes, (std::vector<int>{2, 2}));
  for (int r = 0; r < 2; ++r) {
    EXPECT_THAT(errs[r], HasSubstr("--resume_step=3: there is no checkpoint of step 3 under " +
                                   dir_.Sub("rs") + " (committed steps: 4, 6)"));
    EXPECT_EQ(std::count(errs[r].begin(), errs[r].end(), '\n'), 1) << errs[r];
  }
  latest = train::LatestCommitted(dir_.Sub("rs"));
  ASSERT_OK(latest);
  EXPECT_EQ(latest->manifest.step, 6);
}

TEST_F(RunDataParallelTest, ARankThatDiesMakesTheOtherExitNamingIt) {
  const std::string spec = WriteSpec(100000, "ckpt", "long.json");
  Processes procs;
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    pids.push_back(procs.Start({"run", "--spec=" + spec, "--threads=1", "--world_size=2",
                                absl::StrCat("--rank=", r), "--store=" + dir_.Sub("store")},
                               dir_.Sub(absl::StrCat("r", r, ".out")),
                               dir_.Sub(absl::StrCat("r", r, ".err"))));
    ASSERT_GT(pids.back(), 0);
  }
  // Wait (at most 60 s) for rank 0's third step, then kill rank 1.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (ReadAll(dir_.Sub("r0.out")).find("3/100000") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_THAT(ReadAll(dir_.Sub("r0.out")), HasSubstr("3/100000")) << ReadAll(dir_.Sub("r0.err"));
  procs.Kill(pids[1]);
  // The communicator's timeout is 60 s; a dead peer is noticed sooner (its connection closes).
  const auto killed = std::chrono::steady_clock::now();
  const int code = procs.Wait(pids[0], killed + std::chrono::seconds(75));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  std::cout << "rank 0 exited " << code << " after " << seconds
            << " s; stderr: " << ReadAll(dir_.Sub("r0.err"));
  EXPECT_EQ(code, 1);
  const std::string err = ReadAll(dir_.Sub("r0.err"));
  EXPECT_THAT(err, HasSubstr("training stopped at step"));
  EXPECT_THAT(err, HasSubstr("rank 1")) << err;
}

}  // namespace
}  // namespace dsv3::cli
