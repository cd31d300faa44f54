// Tests of `dsv3-train schedule` (train_schedule_cmd.h): in-process through RunScheduleCommand, and
// end to end through the dsv3-train binary (its verb dispatch, stdout, stderr and exit codes).
#include "cli/train_schedule_cmd.h"

#include <sys/wait.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "engine/parallel/appendix_a_trace.h"
#include "gtest/gtest.h"

namespace dsv3::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

using ::dsv3::parallel::testdata::kAppendixA1;

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

Result RunSchedule(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  Result r;
  r.code = RunScheduleCommand(args, out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

// Runs a shell command line and returns its exit code and stdout.
Result Shell(const std::string& command) {
  Result r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  size_t n = 0;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) r.out.append(buffer, n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

int Lines(const std::string& text) {
  return static_cast<int>(
      std::vector<std::string>(absl::StrSplit(text, '\n', absl::SkipEmpty())).size());
}

TEST(TrainScheduleCmdTest, PrintsAppendixA1ForFourRanksAndEightMicroBatches) {
  const Result r = RunSchedule({"--kind=dualpipe", "--ranks=4", "--micro_batches=8"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, kAppendixA1);
  EXPECT_EQ(r.err, "");
}

TEST(TrainScheduleCmdTest, AcceptsFlagValuesAsSeparateArguments) {
  const Result r = RunSchedule({"--kind", "dualpipe", "--ranks", "4", "--micro_batches", "8"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, kAppendixA1);
}

TEST(TrainScheduleCmdTest, NocommPrintsComputeOpsOnly) {
  const Result r = RunSchedule({"--kind=dualpipe", "--ranks=4", "--micro_batches=8", "--nocomm"});
  EXPECT_EQ(r.code, 0) << r.err;
  // Appendix A.1 rank 0 without its comm batches (the op order of the A.1 timing block).
  EXPECT_THAT(r.out, StartsWith("rank 0 : Fa0 Fa1 Fa2 Fb0 Bib0 Wb0 Fb1 Fa3&Bb1 Fb2&Ba0 Bb2 Fb3&Ba1 "
                                "Bb3 Bia2 Wa2 Bia3 Wa3\n"));
  EXPECT_EQ(Lines(r.out), 4);
}

TEST(TrainScheduleCmdTest, TimelinePrintsAppendixA1Timing) {
  const Result r = RunSchedule({"--kind=dualpipe", "--ranks=4", "--micro_batches=8", "--timeline"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("rank 3 Fb0@0 Fb1@1 Fb2@2 Fa0@3 Bia0@4 Wa0@5 Fa1@6 Fb3&Ba1@7 "
                               "Fa2&Bb0@11 Ba2@14 Fa3&Bb1@17 Ba3@20 Bib2@22 Wb2@23 Bib3@24 "
                               "Wb3@25\n"));
  EXPECT_THAT(r.out, HasSubstr("makespan 26; busy 24 per rank; idle 2\n"));
}

TEST(TrainScheduleCmdTest, PrintsEveryKind) {
  for (const char* kind : {"dualpipe", "dualpipev", "1f1b"}) {
    const Result r = RunSchedule({std::string("--kind=") + kind, "--ranks=2", "--micro_batches=4"});
    EXPECT_EQ(r.code, 0) << kind << ": " << r.err;
    EXPECT_EQ(Lines(r.out), 2) << kind;
  }
}

TEST(TrainScheduleCmdTest, RejectsAnInvalidShapeWithExitTwoAndTheRule) {
  const Result r = RunSchedule({"--kind=dualpipe", "--ranks=3", "--micro_batches=8"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("N % 2 == 0"));
  EXPECT_EQ(Lines(r.err), 1);
  EXPECT_THAT(RunSchedule({"--kind=dualpipev", "--ranks=4", "--micro_batches=7"}).err,
              HasSubstr("C >= 2N"));
}

TEST(TrainScheduleCmdTest, RejectsBadUsageWithExitTwo) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--kind=zigzag", "--ranks=2", "--micro_batches=4"},
           {"--kind=1f1b", "--micro_batches=4"},
           {"--kind=1f1b", "--ranks=two", "--micro_batches=4"},
           {"--kind=1f1b", "--ranks=2", "--micro_batches=4", "--bogus=1"},
           {"--kind=1f1b", "--ranks=2", "--micro_batches=4", "extra"},
           {"--kind=1f1b", "--ranks=2", "--micro_batches=4", "--costs=1,2"},
           {"--kind=1f1b", "--ranks=2", "--micro_batches"}}) {
    const Result r = RunSchedule(args);
    EXPECT_EQ(r.code, 2) << args.back();
    EXPECT_EQ(Lines(r.err), 1) << r.err;
  }
}

TEST(TrainScheduleCmdTest, HelpPrintsUsageAndExitsZero) {
  const Result r = RunSchedule({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("--kind=dualpipe|dualpipev|1f1b"));
}

TEST(TrainBinaryTest, ScheduleVerbPrintsAppendixA1AndExitsZero) {
  const Result r = Shell(std::string(DSV3_TRAIN_BINARY) +
                         " schedule --kind=dualpipe --ranks=4 --micro_batches=8");
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, kAppendixA1);
}

TEST(TrainBinaryTest, BadShapeExitsTwoWithOneLineOnStderr) {
  const Result r = Shell(std::string(DSV3_TRAIN_BINARY) +
                         " schedule --kind=dualpipe --ranks=4 --micro_batches=6 2>&1 >/dev/null");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("C >= 2N"));
  EXPECT_EQ(Lines(r.out), 1);
}

TEST(TrainBinaryTest, UnknownVerbOrNoVerbExitsTwo) {
  EXPECT_EQ(Shell(std::string(DSV3_TRAIN_BINARY) + " frobnicate 2>/dev/null").code, 2);
  EXPECT_EQ(Shell(std::string(DSV3_TRAIN_BINARY) + " 2>/dev/null").code, 2);
  const Result help = Shell(std::string(DSV3_TRAIN_BINARY) + " help");
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out, HasSubstr("dsv3-train schedule"));
}

}  // namespace
}  // namespace dsv3::cli
