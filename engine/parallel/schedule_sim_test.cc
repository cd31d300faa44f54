// Tests of the simulator (schedule_sim.h): Appendix A.1's timing, the difference between the two
// timing models, deadlock and pairing diagnostics, dependency checks and activation counting, on
// the DualPipe trace and on small hand-written schedules.
#include "engine/parallel/schedule_sim.h"

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/status_matchers.h"
#include "engine/parallel/dualpipe.h"
#include "engine/parallel/one_f_one_b.h"
#include "engine/parallel/schedule_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Spec Appendix A.1's timing block, typed from the appendix (F=1, B=2, W=1, F&B=3, no latency).
constexpr char kAppendixA1Timing[] =
    "rank 0 Fa0@0 Fa1@1 Fa2@2 Fb0@3 Bib0@4 Wb0@5 Fb1@6 Fa3&Bb1@7 Fb2&Ba0@11 Bb2@14 Fb3&Ba1@17 "
    "Bb3@20 Bia2@22 Wa2@23 Bia3@24 Wa3@25\n"
    "rank 1 Fa0@1 Fb0@2 Fa1@3 Fb1@4 Fa2@5 Bb0@6 Fb2&Ba0@8 Fa3&Bb1@11 Fb3&Ba1@14 Bb2@17 Ba2@19 "
    "Bib3@22 Bia3@23 Wb3@24 Wa3@25\n"
    "rank 2 Fb0@1 Fa0@2 Fb1@3 Fa1@4 Fb2@5 Ba0@6 Fa2&Bb0@8 Fb3&Ba1@11 Fa3&Bb1@14 Ba2@17 Bb2@19 "
    "Bia3@22 Bib3@23 Wa3@24 Wb3@25\n"
    "rank 3 Fb0@0 Fb1@1 Fb2@2 Fa0@3 Bia0@4 Wa0@5 Fa1@6 Fb3&Ba1@7 Fa2&Bb0@11 Ba2@14 Fa3&Bb1@17 "
    "Ba3@20 Bib2@22 Wb2@23 Bib3@24 Wb3@25\n";

Schedule AppendixA1() {
  absl::StatusOr<Schedule> s = BuildDualPipe(4, 8);
  EXPECT_OK(s);
  return s.ok() ? *std::move(s) : Schedule{};
}

// A schedule on `layout` written in the notation ("rank R : OPS" lines).
Schedule Written(PipelineLayout layout, const std::string& text) {
  Schedule s;
  s.kind = ScheduleKind::kOneFOneB;
  s.num_ranks = layout.num_ranks;
  s.layout = std::move(layout);
  absl::StatusOr<std::vector<std::vector<Op>>> ops = ParseScheduleText(text, s.layout);
  EXPECT_OK(ops);
  if (ops.ok()) s.ops = *std::move(ops);
  return s;
}

std::string RankLines(const std::string& timeline) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(timeline, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "rank ")) absl::StrAppend(&out, line, "\n");
  }
  return out;
}

TEST(ScheduleSimTest, ReproducesAppendixA1TimingWithUnitCosts) {
  const Schedule s = AppendixA1();
  absl::StatusOr<SimResult> sim = Simulate(s);
  ASSERT_OK(sim);
  EXPECT_EQ(RankLines(FormatTimeline(s, *sim)), kAppendixA1Timing);
  // "makespan 26; busy 24 per rank; idle 2 = (4/2-1)(3+2-3)"
  EXPECT_EQ(sim->makespan, 26);
  for (const RankTimeline& t : sim->ranks) {
    EXPECT_EQ(t.busy, 24);
    EXPECT_EQ(t.idle, 2);
  }
  EXPECT_THAT(FormatTimeline(s, *sim), HasSubstr("makespan 26; busy 24 per rank; idle 2\n"));
}

// Under commit-and-wait, rank 0's batch {sBb0>1,rFb1>1} before Wb0 (issued at 5) completes only
// when rank 1 posts {sFb1>0,rBb0>0}, after its Fa2 (5..6): W moves from 5 to 6 and Fb1 from 6 to 7.
// The reference's ordering absorbs the delay: the makespan stays 26.
TEST(ScheduleSimTest, RendezvousTimingHoldsASenderUntilTheReceiverPosts) {
  const Schedule s = AppendixA1();
  absl::StatusOr<SimResult> sim = Simulate(s, {.timing = TimingModel::kRendezvous});
  ASSERT_OK(sim);
  EXPECT_THAT(RankLines(FormatTimeline(s, *sim)),
              HasSubstr("rank 0 Fa0@0 Fa1@1 Fa2@2 Fb0@3 Bib0@4 Wb0@6 Fb1@7 Fa3&Bb1@8 Fb2&Ba0@11"));
  EXPECT_EQ(sim->makespan, 26);
  EXPECT_EQ(sim->MaxIdle(), 2);
}

TEST(ScheduleSimTest, CommBatchesTakeNoTimeAndComputeOpsTheirCost) {
  const Schedule s = Written(OneFOneBLayout(1, 2), "rank 0 : Fa0 Fa1 Bia0 Ba1 Wa0");
  absl::StatusOr<SimResult> sim =
      Simulate(s, {.costs = {.forward = 1.5, .backward = 4, .weight = 1, .forward_backward = 3}});
  ASSERT_OK(sim);
  EXPECT_EQ(sim->makespan, 1.5 + 1.5 + 3 + 4 + 1);
  EXPECT_EQ(sim->ranks[0].busy, sim->makespan);
  EXPECT_EQ(sim->ranks[0].idle, 0);
}

TEST(ScheduleSimTest, ReportsADeadlockWithEachBlockedRankAndWhatItWaitsFor) {
  // Rank 0 waits for a gradient before sending the activation that would produce it.
  const Schedule s = Written(OneFOneBLayout(2, 1),
                             "rank 0 : {rBa0>1} Fa0 {sFa0>1} Ba0\n"
                             "rank 1 : {rFa0>0} Fa0 Ba0 {sBa0>0}\n");
  EXPECT_THAT(Simulate(s),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("deadlock"), HasSubstr("rank 0 blocked at op 0 {rBa0>1}"),
                             HasSubstr("rank 1 blocked at op 0 {rFa0>0}"))));
}

TEST(ScheduleSimTest, ADeadlockReportListsOnlyTheUnmatchedElements) {
  // Rank 0 sends Fa0 and, in the same batch, waits for Ba1, which rank 1 sends only at its end.
  const Schedule s = Written(OneFOneBLayout(2, 2),
                             "rank 0 : Fa0 {sFa0>1,rBa1>1} Fa1 {sFa1>1,rBa0>1} Ba0 Ba1\n"
                             "rank 1 : {rFa0>0} Fa0 Ba0 {rFa1>0} Fa1 Ba1 {sBa0>0,sBa1>0}\n");
  EXPECT_THAT(Simulate(s), StatusIs(absl::StatusCode::kFailedPrecondition,
                                    AllOf(HasSubstr("rank 0 blocked at op 1 {sFa0>1,rBa1>1} "
                                                    "waiting for {rBa1>1}"),
                                          HasSubstr("rank 1 blocked at op 3 {rFa1>0} waiting "
                                                    "for {rFa1>0}"))));
}

TEST(ScheduleSimTest, RejectsMessagesPostedInDifferentOrdersOnTheTwoSides) {
  const Schedule s = Written(OneFOneBLayout(2, 2),
                             "rank 0 : Fa0 Fa1 {sFa0>1,sFa1>1,rBa0>1,rBa1>1} Ba0 Ba1\n"
                             "rank 1 : {rFa1>0,rFa0>0} Fa0 Ba0 Fa1 Ba1 {sBa0>0,sBa1>0}\n");
  EXPECT_THAT(Simulate(s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("posted in the same order")));
}

TEST(ScheduleSimTest, RejectsAForwardWhoseInputNeverArrived) {
  const Schedule s = Written(OneFOneBLayout(2, 1),
                             "rank 0 : Fa0 {sFa0>1} {rBa0>1} Ba0\n"
                             "rank 1 : Fa0 {rFa0>0} Ba0 {sBa0>0}\n");
  EXPECT_THAT(Simulate(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                    AllOf(HasSubstr("rank 1 op 0 (Fa0)"),
                                          HasSubstr("input arrived from rank 0"))));
}

TEST(ScheduleSimTest, RejectsASendToARankThatDoesNotHoldTheNextStage) {
  const Schedule s = Written(OneFOneBLayout(3, 1),
                             "rank 0 : Fa0 {sFa0>2} Ba0\n"
                             "rank 1 : Fa0 Ba0\n"
                             "rank 2 : Fa0 Ba0\n");
  EXPECT_THAT(Simulate(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("destination of this message is rank 1")));
}

TEST(ScheduleSimTest, RejectsWeightOpsOutOfFifoOrder) {
  const Schedule s = Written(OneFOneBLayout(1, 2), "rank 0 : Fa0 Fa1 Bia0 Bia1 Wa1 Wa0");
  EXPECT_THAT(Simulate(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("oldest deferred weight part is Wa0")));
}

TEST(ScheduleSimTest, RejectsAChunkThatNeverRuns) {
  const Schedule s = Written(OneFOneBLayout(1, 2), "rank 0 : Fa0 Ba0 Fa1 Bia1");
  EXPECT_THAT(Simulate(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("never ran the weight part (W) of micro-batch 1")));
}

TEST(ScheduleSimTest, RejectsABackwardBeforeItsForward) {
  const Schedule s = Written(OneFOneBLayout(1, 1), "rank 0 : Ba0 Fa0");
  EXPECT_THAT(Simulate(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("backward before the chunk's forward")));
}

// An input-only backward keeps its activation until its W (the weight gradient reads the stored
// inputs); a full backward frees it at once.
TEST(ScheduleSimTest, DeferredBackwardsHoldTheirActivationUntilTheirWeightPart) {
  const PipelineLayout layout = OneFOneBLayout(1, 2);
  absl::StatusOr<SimResult> full = Simulate(Written(layout, "rank 0 : Fa0 Ba0 Fa1 Ba1"));
  absl::StatusOr<SimResult> split = Simulate(Written(layout, "rank 0 : Fa0 Bia0 Fa1 Wa0 Ba1"));
  ASSERT_OK(full);
  ASSERT_OK(split);
  EXPECT_EQ(full->ranks[0].peak_activations, 1);
  EXPECT_EQ(split->ranks[0].peak_activations, 2);
}

// Appendix A.1 rank 0 reaches 5 only inside Fa3&Bb1: 4 live before it, and the pair allocates its
// forward's activation before it frees its backward's.
TEST(ScheduleSimTest, AnOverlappedPairAllocatesBeforeItFrees) {
  absl::StatusOr<SimResult> sim = Simulate(AppendixA1());
  ASSERT_OK(sim);
  EXPECT_EQ(sim->ranks[0].peak_activations, 5);
}

}  // namespace
}  // namespace dsv3::parallel
