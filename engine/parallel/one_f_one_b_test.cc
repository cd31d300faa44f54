// Tests of the 1F1B builder (one_f_one_b.h): the warm-up / steady / cool-down shape, op counts, the
// (N, C) rule, completion under rendezvous, and the baseline row of spec §6.2's table (bubble
// (PP-1)(F+B), PP activations on the first rank).
#include "engine/parallel/one_f_one_b.h"

#include <algorithm>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "engine/parallel/schedule_format.h"
#include "engine/parallel/schedule_sim.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;

Schedule Build(int n, int c) {
  absl::StatusOr<Schedule> s = BuildOneFOneB(n, c);
  EXPECT_OK(s);
  return s.ok() ? *std::move(s) : Schedule{};
}

// Written out from the definition: rank r warms up with N-r-1 forwards, alternates F and B, and
// drains the remaining backwards. N=3, C=4.
TEST(OneFOneBTest, RanksWarmUpAlternateAndCoolDown) {
  const Schedule s = Build(3, 4);
  FormatOptions compute_only{.comm = false};
  EXPECT_EQ(FormatOps(s.ops[0], compute_only), "Fa0 Fa1 Fa2 Ba0 Fa3 Ba1 Ba2 Ba3");
  EXPECT_EQ(FormatOps(s.ops[1], compute_only), "Fa0 Fa1 Ba0 Fa2 Ba1 Fa3 Ba2 Ba3");
  EXPECT_EQ(FormatOps(s.ops[2], compute_only), "Fa0 Ba0 Fa1 Ba1 Fa2 Ba2 Fa3 Ba3");
}

// The send of an output goes out with the receive the next compute op waits on (Megatron's
// send_forward_recv_backward / send_backward_recv_forward pairs).
TEST(OneFOneBTest, MiddleRankPairsEachSendWithTheNextReceive) {
  const Schedule s = Build(3, 2);
  EXPECT_EQ(FormatOps(s.ops[1]),
            "{rFa0>0} Fa0 {sFa0>2,rFa1>0} Fa1 {sFa1>2,rBa0>2} Ba0 "
            "{sBa0>0,rBa1>2} Ba1 {sBa1>0}");
}

TEST(OneFOneBTest, EveryRankRunsEachMicroBatchOnceForwardAndOnceFullBackward) {
  for (int n = 1; n <= 8; ++n) {
    for (int c = 1; c <= 4 * n; ++c) {
      const Schedule s = Build(n, c);
      for (int r = 0; r < n; ++r) {
        EXPECT_EQ(CountOps(s.ops[r], OpKind::kForward, Direction::kA), c);
        EXPECT_EQ(CountOps(s.ops[r], OpKind::kBackward, Direction::kA), c);
        EXPECT_EQ(ComputeOps(s.ops[r]).size(), static_cast<size_t>(2 * c));
      }
    }
  }
}

TEST(OneFOneBTest, RejectsZeroRanksOrZeroMicroBatches) {
  EXPECT_THAT(BuildOneFOneB(0, 4),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("N >= 1")));
  EXPECT_THAT(BuildOneFOneB(4, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("C >= 1")));
  EXPECT_THAT(BuildOneFOneBRank(4, 4, 7), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(OneFOneBTest, CompletesUnderStrictRendezvousForManyShapes) {
  for (int n = 1; n <= 8; ++n) {
    for (int c = 1; c <= 4 * n; ++c) {
      EXPECT_OK(Simulate(Build(n, c), {.timing = TimingModel::kRendezvous}))
          << "N=" << n << " C=" << c;
    }
  }
}

// §6.2's 1F1B row: bubble (PP-1)(F+B) on every rank, whatever C.
TEST(OneFOneBTest, EveryRankIdlesPpMinusOneTimesFPlusB) {
  for (int n = 1; n <= 8; ++n) {
    for (int c = 1; c <= 4 * n; ++c) {
      for (TimingModel timing : {TimingModel::kDataflow, TimingModel::kRendezvous}) {
        absl::StatusOr<SimResult> sim = Simulate(Build(n, c), {.timing = timing});
        ASSERT_OK(sim);
        for (int r = 0; r < n; ++r) {
          EXPECT_DOUBLE_EQ(sim->ranks[r].idle, (n - 1) * (1.0 + 2.0)) << n << " " << c << " " << r;
        }
      }
    }
  }
}

// Rank r holds min(N - r, C) activations at the peak: PP on the first rank once C >= PP.
TEST(OneFOneBTest, PeakActivationsArePpOnTheFirstRank) {
  for (int n = 1; n <= 8; ++n) {
    for (int c : {1, n, 3 * n}) {
      absl::StatusOr<SimResult> sim = Simulate(Build(n, c));
      ASSERT_OK(sim);
      for (int r = 0; r < n; ++r) {
        EXPECT_EQ(sim->ranks[r].peak_activations, std::min(n - r, c)) << n << " " << c << " " << r;
      }
    }
  }
}

}  // namespace
}  // namespace dsv3::parallel
