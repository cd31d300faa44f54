// Tests of the schedule notation (schedule_format.h): every op kind prints as in spec Appendix A,
// parsing gives the ops back, and text outside the notation is rejected.
#include "engine/parallel/schedule_format.h"

#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "engine/parallel/dualpipe.h"
#include "engine/parallel/dualpipev.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;

constexpr Direction kA = Direction::kA;
constexpr Direction kB = Direction::kB;

TEST(ScheduleFormatTest, PrintsEveryOpKindInAppendixNotation) {
  EXPECT_EQ(FormatOp(Op::Forward({kA, 3, 0})), "Fa3");
  EXPECT_EQ(FormatOp(Op::Backward({kB, 1, 0})), "Bb1");
  EXPECT_EQ(FormatOp(Op::BackwardInput({kB, 1, 0})), "Bib1");
  EXPECT_EQ(FormatOp(Op::Weight({kB, 1, 0})), "Wb1");
  EXPECT_EQ(FormatOp(Op::ForwardBackward({kA, 3, 0}, {kB, 1, 3})), "Fa3&Bb1");
  EXPECT_EQ(FormatOp(Op::CommBatch({P2P{true, Payload::kActivation, kA, 3, 1},
                                    P2P{false, Payload::kGradient, kA, 0, 1}})),
            "{sFa3>1,rBa0>1}");
}

TEST(ScheduleFormatTest, PrintsOneLinePerRankWithCommBatchesOrWithout) {
  Schedule s;
  s.num_ranks = 2;
  s.ops = {{Op::Forward({kA, 0, 0}), Op::CommBatch({P2P{true, Payload::kActivation, kA, 0, 1}})},
           {Op::CommBatch({P2P{false, Payload::kActivation, kA, 0, 0}}), Op::Forward({kA, 0, 1})}};
  EXPECT_EQ(FormatSchedule(s), "rank 0 : Fa0 {sFa0>1}\nrank 1 : {rFa0>0} Fa0\n");
  EXPECT_EQ(FormatSchedule(s, {.comm = false}), "rank 0 : Fa0\nrank 1 : Fa0\n");
}

TEST(ScheduleFormatTest, ParsingAPrintedScheduleGivesBackTheSameOpsWithTheirStages) {
  for (bool v : {false, true}) {
    absl::StatusOr<Schedule> s = v ? BuildDualPipeV(3, 7) : BuildDualPipe(4, 10);
    ASSERT_OK(s);
    absl::StatusOr<std::vector<std::vector<Op>>> parsed =
        ParseScheduleText(FormatSchedule(*s), s->layout);
    ASSERT_OK(parsed);
    EXPECT_EQ(*parsed, s->ops);  // Op equality includes the stages, filled in from the layout
  }
}

TEST(ScheduleFormatTest, RejectsTokensOutsideTheNotation) {
  const PipelineLayout layout = DualPipeLayout(2, 4);
  for (const char* bad :
       {"Fc0", "X1", "Fa", "Fax", "{sFa0}", "{qFa0>1}", "{sFa0>1", "Fa0&Bx1", "{sXa0>1}", "Wa-1"}) {
    EXPECT_THAT(ParseOps(bad, layout, 0), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

TEST(ScheduleFormatTest, RejectsADirectionTheRankHoldsNoStageOf) {
  Route only_a{1, {Hop{kA, 0, 0}}};
  PipelineLayout layout{1, 1, {only_a}};
  EXPECT_THAT(ParseOps("Fb0", layout, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no stage of direction b")));
}

TEST(ScheduleFormatTest, ScheduleTextMustListEveryRankExactlyOnce) {
  const PipelineLayout layout = DualPipeLayout(2, 4);
  EXPECT_THAT(ParseScheduleText("rank 0 : Fa0\n", layout),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank 1 is missing")));
  EXPECT_THAT(ParseScheduleText("rank 0 : Fa0\nrank 0 : Fa1\nrank 1 : Fa0\n", layout),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("listed twice")));
  EXPECT_THAT(ParseScheduleText("rank zero : Fa0\n", layout),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dsv3::parallel
