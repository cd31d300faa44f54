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
#include "gtest/gtest.h"

namespace dsv3::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Spec Appendix A.1, typed from the appendix: DualPipe, N=4 ranks, C=8 micro-batches.
constexpr char kAppendixA1[] =
    "rank 0 : Fa0 {sFa0>1} Fa1 {sFa1>1} Fa2 {rFb0>1} Fb0 {sFa2>1} Bib0 {sBb0>1,rFb1>1} Wb0 Fb1 "
    "Fa3&Bb1 {sFa3>1,sBb1>1,rFb2>1,rBa0>1} Fb2&Ba0 Bb2 {sBb2>1,rFb3>1,rBa1>1} Fb3&Ba1 Bb3 "
    "{sBb3>1,rBa2>1} Bia2 Wa2 {rBa3>1} Bia3 Wa3\n"
    "rank 1 : {rFa0>0} Fa0 {sFa0>2,rFa1>0,rFb0>2} Fb0 {sFb0>0} Fa1 {sFa1>2,rFa2>0,rFb1>2} Fb1 Fa2 "
    "{sFb1>0,rBb0>0} Bb0 {sFa2>2,sBb0>2,rFb2>2,rBa0>2} Fb2&Ba0 {sFb2>0,sBa0>0,rFa3>0,rBb1>0} "
    "Fa3&Bb1 {sFa3>2,sBb1>2,rFb3>2,rBa1>2} Fb3&Ba1 {sFb3>0,sBa1>0,rBb2>0} Bb2 {sBb2>2,rBa2>2} Ba2 "
    "{sBa2>0,rBb3>0} Bib3 {sBb3>2,rBa3>2} Bia3 {sBa3>0} Wb3 Wa3\n"
    "rank 2 : {rFb0>3} Fb0 {sFb0>1,rFb1>3,rFa0>1} Fa0 {sFa0>3} Fb1 {sFb1>1,rFb2>3,rFa1>1} Fa1 Fb2 "
    "{sFa1>3,rBa0>3} Ba0 {sFb2>1,sBa0>1,rFa2>1,rBb0>1} Fa2&Bb0 {sFa2>3,sBb0>3,rFb3>3,rBa1>3} "
    "Fb3&Ba1 {sFb3>1,sBa1>1,rFa3>1,rBb1>1} Fa3&Bb1 {sFa3>3,sBb1>3,rBa2>3} Ba2 {sBa2>1,rBb2>1} Bb2 "
    "{sBb2>3,rBa3>3} Bia3 {sBa3>1,rBb3>1} Bib3 {sBb3>3} Wa3 Wb3\n"
    "rank 3 : Fb0 {sFb0>2} Fb1 {sFb1>2} Fb2 {rFa0>2} Fa0 {sFb2>2} Bia0 {sBa0>2,rFa1>2} Wa0 Fa1 "
    "Fb3&Ba1 {sFb3>2,sBa1>2,rFa2>2,rBb0>2} Fa2&Bb0 Ba2 {sBa2>2,rFa3>2,rBb1>2} Fa3&Bb1 Ba3 "
    "{sBa3>2,rBb2>2} Bib2 Wb2 {rBb3>2} Bib3 Wb3\n";

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
