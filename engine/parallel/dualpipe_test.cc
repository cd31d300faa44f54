// Tests of the DualPipe builder (dualpipe.h) against spec §6.3, Appendix A and oracles 22-26: the
// golden trace, op counts, step lengths, mirror symmetry, the (N, C) rules, and the simulated
// properties (completion under rendezvous, bubble formula, activation peak). Not the simulator's
// own mechanics (schedule_sim_test.cc).
#include "engine/parallel/dualpipe.h"

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "engine/parallel/schedule_format.h"
#include "engine/parallel/schedule_sim.h"
#include "gmock/gmock.h"
#include "engine/parallel/appendix_a_trace.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;

using ::dsv3::parallel::testdata::kAppendixA1;

Schedule Build(int n, int c) {
  absl::StatusOr<Schedule> s = BuildDualPipe(n, c);
  EXPECT_OK(s);
  return s.ok() ? *std::move(s) : Schedule{};
}

int HalfRank(int n, int r) { return std::min(r, n - 1 - r); }

TEST(DualPipeTest, ReproducesAppendixA1TraceWithItsCommBatchesExactly) {
  EXPECT_EQ(FormatSchedule(Build(4, 8)), kAppendixA1);
}

TEST(DualPipeTest, PerRankBuilderGivesTheSameListAsTheWholeSchedule) {
  const Schedule s = Build(6, 14);
  for (int r = 0; r < 6; ++r) {
    absl::StatusOr<std::vector<Op>> ops = BuildDualPipeRank(6, 14, r);
    ASSERT_OK(ops);
    EXPECT_EQ(*ops, s.ops[r]) << "rank " << r;
  }
}

TEST(DualPipeTest, EveryRankRunsHalfTheMicroBatchesForwardAndBackwardInEachDirection) {
  for (int n = 2; n <= 16; n += 2) {
    for (int c = 2 * n; c <= 4 * n; c += 2) {
      const Schedule s = Build(n, c);
      for (int r = 0; r < n; ++r) {
        for (Direction d : {Direction::kA, Direction::kB}) {
          const std::vector<Op>& ops = s.ops[r];
          EXPECT_EQ(CountOps(ops, OpKind::kForward, d), c / 2) << n << " " << c << " " << r;
          EXPECT_EQ(CountOps(ops, OpKind::kBackward, d) + CountOps(ops, OpKind::kBackwardInput, d),
                    c / 2)
              << n << " " << c << " " << r;
        }
      }
    }
  }
}

TEST(DualPipeTest, WeightOpsEqualDeferredBackwardsAsOracle22Counts) {
  for (int n = 2; n <= 16; n += 2) {
    const int c = 2 * n + 4;
    const Schedule s = Build(n, c);
    for (int r = 0; r < n; ++r) {
      const int h = HalfRank(n, r), half = n / 2;
      const int expected = 2 * (half - h - 1) + (h + 1);
      int w = 0, bi = 0;
      for (Direction d : {Direction::kA, Direction::kB}) {
        w += CountOps(s.ops[r], OpKind::kWeight, d);
        bi += CountOps(s.ops[r], OpKind::kBackwardInput, d);
      }
      EXPECT_EQ(w, expected) << "N=" << n << " rank " << r;
      EXPECT_EQ(bi, expected) << "N=" << n << " rank " << r;
    }
  }
}

TEST(DualPipeTest, StepLengthsMatchAppendixA4ForSixteenRanks) {
  // Appendix A.4, C = 32, indexed by h = min(r, 15 - r).
  const std::array<std::array<int, 8>, 8> c32 = {{{14, 1, 7, 1, 7, 1, 7, 1},
                                                  {12, 2, 6, 2, 6, 2, 6, 2},
                                                  {10, 3, 5, 3, 5, 3, 5, 3},
                                                  {8, 4, 4, 4, 4, 4, 4, 4},
                                                  {6, 5, 3, 5, 3, 5, 3, 5},
                                                  {4, 6, 2, 6, 2, 6, 2, 6},
                                                  {2, 7, 1, 7, 1, 7, 1, 7},
                                                  {0, 8, 0, 8, 0, 8, 0, 8}}};
  for (int r = 0; r < 16; ++r) {
    const int h = HalfRank(16, r);
    absl::StatusOr<std::array<int, 8>> got = DualPipeStepLengths(16, 32, r);
    ASSERT_OK(got);
    EXPECT_EQ(*got, c32[h]) << "rank " << r;
    // C = 120: step 4 becomes 45..52 for h = 0..7, every other step unchanged.
    std::array<int, 8> c120 = c32[h];
    c120[3] = 45 + h;
    got = DualPipeStepLengths(16, 120, r);
    ASSERT_OK(got);
    EXPECT_EQ(*got, c120) << "rank " << r;
  }
}

TEST(DualPipeTest, ComputeOpsOfEachStepFollowTheStepLengths) {
  // Compute ops per iteration of steps 1..8; the middle ranks' first step-4 iteration runs F and
  // B back to back instead of one F&B, one op more.
  constexpr std::array<int, 8> kOpsPerIteration = {1, 2, 3, 2, 2, 2, 2, 1};
  for (int n = 2; n <= 10; n += 2) {
    const int c = 2 * n + 6;
    const Schedule s = Build(n, c);
    for (int r = 0; r < n; ++r) {
      absl::StatusOr<std::array<int, 8>> steps = DualPipeStepLengths(n, c, r);
      ASSERT_OK(steps);
      std::array<int, 8> counted{};
      for (const Op& op : ComputeOps(s.ops[r])) {
        ASSERT_GE(op.step, 1);
        ASSERT_LE(op.step, 8);
        ++counted[op.step - 1];
      }
      const bool middle = r == n / 2 - 1 || r == n / 2;
      for (int k = 0; k < 8; ++k) {
        const int expected = (*steps)[k] * kOpsPerIteration[k] + (k == 3 && middle ? 1 : 0);
        EXPECT_EQ(counted[k], expected) << "N=" << n << " rank " << r << " step " << k + 1;
      }
    }
  }
}

TEST(DualPipeTest, OverlappedPairsJoinAForwardWithABackwardOfTheOtherDirection) {
  const Schedule s = Build(8, 24);
  for (int r = 0; r < 8; ++r) {
    const Direction phase0 = r < 4 ? Direction::kA : Direction::kB;
    for (const Op& op : s.ops[r]) {
      if (op.kind != OpKind::kForwardBackward) continue;
      EXPECT_NE(op.chunk.direction, op.backward.direction) << FormatOp(op);
      // Steps 4 and 5 only, and step 5 pairs F(phase 1) with B(phase 0).
      EXPECT_TRUE(op.step == 4 || op.step == 5) << FormatOp(op);
      if (op.step == 5) {
        EXPECT_EQ(op.backward.direction, phase0) << FormatOp(op);
      }
    }
  }
}

TEST(DualPipeTest, BackwardsOfStepFiveAreFull) {
  const Schedule s = Build(8, 16);
  for (int r = 0; r < 8; ++r) {
    for (const Op& op : s.ops[r]) {
      if (op.step == 5) {
        EXPECT_NE(op.kind, OpKind::kBackwardInput) << "rank " << r;
      }
    }
  }
}

TEST(DualPipeTest, StepSixDefersExactlyHPlusOneBackwardsStartingWhereSection63Says) {
  for (int n = 2; n <= 16; n += 2) {
    const Schedule s = Build(n, 2 * n);
    for (int r = 0; r < n; ++r) {
      const int h = HalfRank(n, r);
      std::vector<bool> deferred;  // step 6's backwards in order: B(1), B(0), B(1), B(0), ...
      for (const Op& op : s.ops[r]) {
        if (op.step == 6 && op.is_compute()) deferred.push_back(op.kind == OpKind::kBackwardInput);
      }
      ASSERT_EQ(deferred.size(), static_cast<size_t>(2 * (h + 1)));
      // m = floor((h+1)/2): h odd starts at iteration m's B(1), h even at its B(0).
      const size_t first = 2 * ((h + 1) / 2) + (h % 2 == 0 ? 1 : 0);
      for (size_t i = 0; i < deferred.size(); ++i) {
        EXPECT_EQ(deferred[i], i >= first) << "N=" << n << " rank " << r << " backward " << i;
      }
    }
  }
}

// Rank r and rank N-1-r run the same program with a and b exchanged (the phase mapping of §6.3).
TEST(DualPipeTest, MirrorRanksRunTheSameProgramWithDirectionsSwapped) {
  for (int n = 2; n <= 8; n += 2) {
    const Schedule s = Build(n, 3 * n);
    for (int r = 0; r < n; ++r) {
      std::vector<Op> mirrored = s.ops[n - 1 - r];
      for (Op& op : mirrored) {
        op.chunk.direction = Other(op.chunk.direction);
        op.backward.direction = Other(op.backward.direction);
        for (P2P& p : op.comm) {
          p.direction = Other(p.direction);
          p.peer = n - 1 - p.peer;
        }
      }
      ASSERT_EQ(mirrored.size(), s.ops[r].size());
      for (size_t i = 0; i < mirrored.size(); ++i) {
        // Stages differ by construction (a runs stage r, b stage N-1-r); compare the rest.
        mirrored[i].chunk.stage = s.ops[r][i].chunk.stage;
        mirrored[i].backward.stage = s.ops[r][i].backward.stage;
        EXPECT_EQ(FormatOp(mirrored[i]), FormatOp(s.ops[r][i])) << "N=" << n << " rank " << r;
      }
    }
  }
}

TEST(DualPipeTest, ChunksRunTheStageTheirRankHoldsForTheirDirection) {
  const Schedule s = Build(6, 12);
  for (int r = 0; r < 6; ++r) {
    for (const Op& op : ComputeOps(s.ops[r])) {
      EXPECT_EQ(op.chunk.stage, op.chunk.direction == Direction::kA ? r : 5 - r);
      if (op.kind == OpKind::kForwardBackward) {
        EXPECT_EQ(op.backward.stage, op.backward.direction == Direction::kA ? r : 5 - r);
      }
    }
  }
}

TEST(DualPipeTest, RejectsAnOddNumberOfRanks) {
  EXPECT_THAT(BuildDualPipe(3, 12),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("N % 2 == 0")));
  EXPECT_THAT(BuildDualPipe(0, 12), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DualPipeTest, RejectsAnOddNumberOfMicroBatches) {
  EXPECT_THAT(BuildDualPipe(4, 9),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("C % 2 == 0")));
}

TEST(DualPipeTest, RejectsFewerThanTwoNMicroBatches) {
  EXPECT_THAT(BuildDualPipe(4, 6),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("C >= 2N")));
  EXPECT_OK(BuildDualPipe(4, 8));
}

TEST(DualPipeTest, RejectsARankOutsideTheGroup) {
  EXPECT_THAT(BuildDualPipeRank(4, 8, 4),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank 4")));
  EXPECT_THAT(BuildDualPipeRank(4, 8, -1), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DualPipeTest, CompletesUnderStrictRendezvousForManyShapes) {
  for (int n = 2; n <= 8; n += 2) {
    for (int c = 2 * n; c <= 4 * n; c += 2) {
      EXPECT_OK(Simulate(Build(n, c), {.timing = TimingModel::kRendezvous}))
          << "N=" << n << " C=" << c;
    }
  }
}

// Oracle 25 / §6.2: max idle = (PP/2 - 1)(F&B + B - 3W) with PP = N, for F&B = 3 (TR Table 2's
// unit costs) and 2.2 (§6.5), under both timing models, and the same for every C.
TEST(DualPipeTest, BubbleIsTheTableFormulaAndDoesNotGrowWithC) {
  for (int n : {2, 4, 6, 8, 16}) {
    for (int c : {2 * n, 4 * n, 8 * n}) {
      const Schedule s = Build(n, c);
      for (double fb : {3.0, 2.2}) {
        for (TimingModel timing : {TimingModel::kDataflow, TimingModel::kRendezvous}) {
          SimOptions options;
          options.costs.forward_backward = fb;
          options.timing = timing;
          absl::StatusOr<SimResult> sim = Simulate(s, options);
          ASSERT_OK(sim);
          const SimCosts& k = options.costs;
          const double formula = (n / 2.0 - 1) * (k.forward_backward + k.backward - 3 * k.weight);
          EXPECT_NEAR(sim->MaxIdle(), formula, 1e-9) << "N=" << n << " C=" << c << " F&B=" << fb;
        }
      }
    }
  }
}

TEST(DualPipeTest, BubbleForEightAndSixteenRanksIsWhatSection65Reports) {
  SimOptions fast;
  fast.costs.forward_backward = 2.2;
  for (auto [n, slow_idle, fast_idle] : {std::array<double, 3>{8, 6.0, 3.6}, {16, 14.0, 8.4}}) {
    const Schedule s = Build(static_cast<int>(n), static_cast<int>(2 * n));
    absl::StatusOr<SimResult> slow = Simulate(s);
    absl::StatusOr<SimResult> quick = Simulate(s, fast);
    ASSERT_OK(slow);
    ASSERT_OK(quick);
    EXPECT_NEAR(slow->MaxIdle(), slow_idle, 1e-9);
    EXPECT_NEAR(quick->MaxIdle(), fast_idle, 1e-9);
  }
}

// Oracle 26: PP + 1 = N + 1 stage activations at the peak, on every rank, for every C.
TEST(DualPipeTest, PeakLiveActivationsAreNPlusOneOnEveryRank) {
  for (int n = 2; n <= 16; n += 2) {
    for (int c : {2 * n, 6 * n}) {
      absl::StatusOr<SimResult> sim = Simulate(Build(n, c));
      ASSERT_OK(sim);
      for (int r = 0; r < n; ++r) {
        EXPECT_EQ(sim->ranks[r].peak_activations, n + 1) << "N=" << n << " C=" << c << " r=" << r;
      }
    }
  }
}

}  // namespace
}  // namespace dsv3::parallel
