// Tests of `dsv3-train run`: usage and spec errors with their exit codes, a tiny job run
// in-process (progress, validation and checkpoint lines, the summary), resuming it, resuming from
// exactly --resume_step, refusing a checkpoint of another model, and the binary stopping cleanly
// with a checkpoint on SIGINT.
#include "cli/train_run_cmd.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_matchers.h"
#include "engine/train/checkpoint.h"
#include "engine/train/trainer_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace dsv3::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using train::testing::ScratchDir;

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result RunVerb(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = RunTrainCommand(args, out, err);
  return {code, out.str(), err.str()};
}

// The tiny model of engine/train/trainer_test_util.h as a job spec.
constexpr char kSpecTemplate[] = R"({
  "name": "tiny",
  "model": { "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
             "first_k_dense_replace": 1, "intermediate_size": 64, "moe_intermediate_size": 16,
             "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 2,
             "topk_group": 2, "routed_scaling_factor": 2.5, "num_attention_heads": 2,
             "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
             "v_head_dim": 8, "num_nextn_predict_layers": 1 },
  "parallel": { "pipeline_parallel": 1, "micro_batches": 2, "schedule": "1f1b" },
  "train": { "seq_len": 16, "global_batch_tokens": 128, "steps": STEPS, "lr": 3e-3,
             "warmup_steps": 1, "val_tokens": 64, "seed": 3 },
  "precision": "fp32",
  "data": { "train": "DIR/train.bin", "val": "DIR/val.bin" },
  "checkpoint": { "dir": "DIR/ckpt", "every_steps": 2, "keep": 2 }
})";

class RunCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(train::testing::WriteSyntheticShard(dir_.Sub("train.bin"), 20000, 64, 1));
    ASSERT_OK(train::testing::WriteSyntheticShard(dir_.Sub("val.bin"), 2000, 64, 2));
  }
  std::string WriteSpec(int steps, const std::string& name = "job.json",
                        const std::string& replace_from = "", const std::string& replace_to = "") {
    std::string text =
        absl::StrReplaceAll(kSpecTemplate, {{"STEPS", absl::StrCat(steps)}, {"DIR", dir_.path()}});
    if (!replace_from.empty()) text = absl::StrReplaceAll(text, {{replace_from, replace_to}});
    const std::string path = dir_.Sub(name);
    std::ofstream(path) << text;
    return path;
  }
  ScratchDir dir_{"train_run_cmd_test"};
};

TEST_F(RunCommandTest, HelpPrintsTheUsageAndTheColumns) {
  const Result r = RunVerb({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("usage: dsv3-train run --spec=SPEC.json"));
  EXPECT_THAT(r.out, HasSubstr("load max/mean"));
}

TEST_F(RunCommandTest, BadUsageExitsTwoWithOneLine) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::string spec = WriteSpec(2);
  const std::vector<Case> cases = {
      {{}, "--spec is required"},
      {{"--spec=" + spec, "--bogus=1"}, "unknown flag --bogus"},
      {{"--spec=" + spec, "--threads=0"}, "--threads needs a positive integer"},
      {{"--spec=" + spec, "--steps=x"}, "--steps needs a positive integer"},
      {{"--spec=" + spec, "--world_size=2", "--store=/tmp/x"}, "--world_size=2 needs --rank=R"},
      {{"--spec=" + spec, "--world_size=2", "--rank=2", "--store=/tmp/x"},
       "--rank=2 must be in [0, --world_size=2)"},
      {{"--spec=" + spec, "--world_size=2", "--rank=1"}, "--world_size=2 needs --store=DIR"},
      {{"--spec=" + spec, "--rank=1"}, "the only rank is 0"},
      {{"--spec=" + dir_.Sub("nope.json")}, "cannot read --spec="},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::PrintToString(c.args));
    const Result r = RunVerb(c.args);
    EXPECT_EQ(r.code, 2);
    EXPECT_THAT(r.err, HasSubstr(c.message));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST_F(RunCommandTest, AMalformedOrInvalidSpecExitsTwoNamingTheProblem) {
  const std::string bad_json = dir_.Sub("bad.json");
  std::ofstream(bad_json) << "{ \"name\": ";
  Result r = RunVerb({"--spec=" + bad_json});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("not valid JSON"));

  const std::string invalid =
      WriteSpec(2, "invalid.json", "\"topk_group\": 2", "\"topk_group\": 3");
  r = RunVerb({"--spec=" + invalid});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("topk_group"));
  EXPECT_FALSE(fs::exists(dir_.Sub("ckpt")));
}

TEST_F(RunCommandTest, ATinyJobTrainsCheckpointsAndResumes) {
  const std::string spec = WriteSpec(6);
  Result r = RunVerb({"--spec=" + spec, "--threads=2", "--steps=4"});
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_THAT(r.out, HasSubstr("dsv3-train run: job tiny"));
  EXPECT_THAT(r.out, HasSubstr("--steps=4 overrides train.steps=6"));
  EXPECT_THAT(r.out, HasSubstr("start        from seed 3"));
  // One fixed-column line per step.
  const std::regex step_line(
      R"(^ +([0-9]+)/4 +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.e+-]+ +[0-9.e+-]+ +[0-9.]+ +[0-9]+  )"
      R"([0-9.]+ \((layer 1|MTP)\)$)");
  std::istringstream lines(r.out);
  std::vector<int> steps;
  std::vector<std::string> ckpts, vals;
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_match(line, m, step_line)) steps.push_back(std::stoi(m[1]));
    if (line.rfind("ckpt  ", 0) == 0) ckpts.push_back(line);
    if (line.rfind("val   ", 0) == 0) vals.push_back(line);
  }
  EXPECT_THAT(steps, ::testing::ElementsAre(1, 2, 3, 4)) << r.out;
  ASSERT_EQ(ckpts.size(), 2u) << r.out;
  EXPECT_THAT(ckpts[0], HasSubstr("step 2/4: " + dir_.Sub("ckpt/step-00000002")));
  EXPECT_THAT(ckpts[1], HasSubstr("step 4/4"));
  ASSERT_EQ(vals.size(), 1u) << r.out;
  EXPECT_THAT(vals[0], HasSubstr("val   step 4/4: loss "));
  EXPECT_THAT(vals[0], HasSubstr("(4 rows, 64 tokens"));
  EXPECT_THAT(r.out, HasSubstr("done  4/4 steps: 512 tokens this run"));
  EXPECT_THAT(r.out, HasSubstr("final val loss"));

  // The full 6 steps resume from step 4.
  r = RunVerb({"--spec=" + spec, "--threads=2"});
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_THAT(r.out, HasSubstr("resume       from " + dir_.Sub("ckpt/step-00000004") +
                               " (step 4, 512 tokens seen)"));
  EXPECT_THAT(r.out, Not(HasSubstr("   4/6 ")));
  EXPECT_THAT(r.out, HasSubstr("   5/6 "));
  EXPECT_THAT(r.out, HasSubstr("done  6/6 steps (resumed at 4): 256 tokens this run"));
  EXPECT_THAT(r.out, HasSubstr("removed step-00000002"));  // keep 2: steps 4 and 6 stay
  absl::StatusOr<train::CommittedCheckpoint> latest = train::LatestCommitted(dir_.Sub("ckpt"));
  ASSERT_OK(latest);
  EXPECT_EQ(latest->manifest.step, 6);

  // A spec whose model differs from the checkpoint's is refused; nothing is trained.
  const std::string other =
      WriteSpec(8, "other.json", "\"hidden_size\": 32", "\"hidden_size\": 48");
  r = RunVerb({"--spec=" + other, "--threads=2"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("model_config.hidden_size: checkpoint 32, job 48"));
  latest = train::LatestCommitted(dir_.Sub("ckpt"));
  ASSERT_OK(latest);
  EXPECT_EQ(latest->manifest.step, 6);
}

TEST_F(RunCommandTest, ResumeStepResumesFromExactlyThatCheckpointOrTheSeed) {
  const std::string spec = WriteSpec(6, "job.json", "\"keep\": 2", "\"keep\": 5");
  const std::string straight = dir_.Sub("straight.jsonl");
  Result r = RunVerb({"--spec=" + spec, "--threads=2", "--metrics=" + straight});
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  // Checkpoints at steps 2, 4 and 6, and a damaged step-8 left by some other run.
  fs::create_directories(dir_.Sub("ckpt/step-00000008"));

  // Errors: one line, exit 2, nothing trained or removed.
  struct Case {
    std::string flag;
    std::string message;
  };
  fs::create_directories(dir_.Sub("ckpt/step-00000005"));  // a directory without a manifest
  const std::vector<Case> cases = {
      {"--resume_step=-1", "--resume_step needs a step >= 0 (0: from the seed), got \"-1\""},
      {"--resume_step=x", "--resume_step needs a step >= 0"},
      {"--resume_step=3", "--resume_step=3: there is no checkpoint of step 3 under " +
                              dir_.Sub("ckpt") + " (committed steps: 2, 4, 6)"},
      {"--resume_step=5",
       "--resume_step=5: " + dir_.Sub("ckpt/step-00000005") +
           " has no MANIFEST.json: not a committed checkpoint"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.flag);
    r = RunVerb({"--spec=" + spec, "--threads=2", c.flag});
    EXPECT_EQ(r.code, 2);
    EXPECT_THAT(r.err, HasSubstr(c.message));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(fs::exists(dir_.Sub("ckpt/step-00000006")));
  }

  // From step 2: the later directories (committed, damaged or not) go first; steps 3-6 are
  // trained again on the same trajectory, bit for bit.
  const std::string resumed = dir_.Sub("resumed.jsonl");
  r = RunVerb({"--spec=" + spec, "--threads=2", "--resume_step=2", "--metrics=" + resumed});
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_THAT(r.out, HasSubstr("resume       from " + dir_.Sub("ckpt/step-00000002") +
                               " (step 2, 256 tokens seen)"));
  EXPECT_THAT(r.out, HasSubstr("note         --resume_step=2: discarded 4 later checkpoint "
                               "directories (step-00000004, step-00000005, step-00000006, "
                               "step-00000008); this run trains those steps again"));
  EXPECT_THAT(r.out, HasSubstr("done  6/6 steps (resumed at 2)"));
  auto step_lines = [](const std::string& path) {
    std::vector<std::string> lines;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      // The wall-time fields differ from run to run; everything before them must not.
      if (line.find(R"("event": "step")") != std::string::npos) {
        lines.push_back(line.substr(0, line.find(R"("seconds")")));
      }
    }
    return lines;
  };
  const std::vector<std::string> want = step_lines(straight);
  ASSERT_EQ(want.size(), 6u);
  EXPECT_EQ(step_lines(resumed), std::vector<std::string>(want.begin() + 2, want.end()));
  absl::StatusOr<std::vector<train::CommittedCheckpoint>> all =
      train::ListCommitted(dir_.Sub("ckpt"));
  ASSERT_OK(all);
  std::vector<int64_t> steps;
  for (const auto& c : *all) steps.push_back(c.manifest.step);
  EXPECT_THAT(steps, ::testing::ElementsAre(2, 4, 6));

  // 0: from the seed, every checkpoint discarded.
  r = RunVerb({"--spec=" + spec, "--threads=2", "--steps=2", "--resume_step=0"});
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_THAT(r.out, HasSubstr("start        from seed 3 (--resume_step=0)"));
  EXPECT_THAT(r.out, HasSubstr("--resume_step=0: discarded 3 later checkpoint directories"));
  all = train::ListCommitted(dir_.Sub("ckpt"));
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].manifest.step, 2);
}

TEST_F(RunCommandTest, TheBinaryStopsOnSigintAfterAStepWithACheckpoint) {
  const std::string spec = WriteSpec(100000);
  const std::string out_path = dir_.Sub("out.txt");
  const std::string err_path = dir_.Sub("err.txt");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  std::vector<std::string> args = {DSV3_TRAIN_BINARY, "run", "--spec=" + spec, "--threads=1"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, DSV3_TRAIN_BINARY, &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);

  // Wait (at most 60 s) for the third step line, then interrupt.
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (read(out_path).find("3/100000") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(kill(pid, SIGINT), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string out = read(out_path);
  const std::string err = read(err_path);
  EXPECT_THAT(err, HasSubstr("stopped by a signal at step"));
  EXPECT_THAT(out, HasSubstr("stopped  "));
  absl::StatusOr<train::CommittedCheckpoint> latest = train::LatestCommitted(dir_.Sub("ckpt"));
  ASSERT_OK(latest);
  EXPECT_GE(latest->manifest.step, 3);
  EXPECT_THAT(out, HasSubstr(absl::StrCat("ckpt  step ", latest->manifest.step, "/100000")));
}

}  // namespace
}  // namespace dsv3::cli
