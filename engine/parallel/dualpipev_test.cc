// Tests of the DualPipeV builder (dualpipev.h) against spec §6.4 and oracles 24-27: equivalence
// with the first half of DualPipe twice as deep, the turn on the last rank, op counts, the (N, C)
// rule, and the simulated properties (completion, bubble with PP = 2N, activation peak 2N + 1).
#include "engine/parallel/dualpipev.h"

#include <algorithm>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "engine/parallel/dualpipe.h"
#include "engine/parallel/schedule_format.h"
#include "engine/parallel/schedule_sim.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;

Schedule BuildV(int n, int c) {
  absl::StatusOr<Schedule> s = BuildDualPipeV(n, c);
  EXPECT_OK(s);
  return s.ok() ? *std::move(s) : Schedule{};
}

Schedule BuildDual(int n, int c) {
  absl::StatusOr<Schedule> s = BuildDualPipe(n, c);
  EXPECT_OK(s);
  return s.ok() ? *std::move(s) : Schedule{};
}

// Shapes to sweep: N = 1..8 and C from the minimum 2N up to 4N (odd C included; no parity rule).
std::vector<std::pair<int, int>> Shapes() {
  std::vector<std::pair<int, int>> out;
  for (int n = 1; n <= 8; ++n) {
    for (int c = 2 * n; c <= 4 * n; ++c) out.push_back({n, c});
  }
  return out;
}

// Oracle 27 / §6.4: DualPipeV(N, C) rank r runs the same compute ops, in the same order, as
// DualPipe(2N, 2C) rank r, reading b as the second leg of the same micro-batch. The ops compare
// equal including their stage (rank r holds stages r and 2N-1-r in both).
TEST(DualPipeVTest, ComputeOpOrderEqualsTheFirstHalfOfDualPipeTwiceAsDeep) {
  for (auto [n, c] : Shapes()) {
    const Schedule v = BuildV(n, c);
    const Schedule d = BuildDual(2 * n, 2 * c);
    for (int r = 0; r < n; ++r) {
      EXPECT_EQ(ComputeOps(v.ops[r]), ComputeOps(d.ops[r]))
          << "N=" << n << " C=" << c << " r=" << r;
    }
  }
}

// The comm batches agree too, except that on rank N-1 DualPipe talks to rank N, which in the V is
// the same rank (the turn): drop those elements (and batches left empty) and the lists are equal.
TEST(DualPipeVTest, CommBatchesEqualDualPipesOnceTheTurnIsMadeLocal) {
  for (auto [n, c] : Shapes()) {
    const Schedule v = BuildV(n, c);
    const Schedule d = BuildDual(2 * n, 2 * c);
    for (int r = 0; r < n; ++r) {
      std::vector<Op> expected;
      for (Op op : d.ops[r]) {
        std::erase_if(op.comm, [n](const P2P& p) { return p.peer == n; });
        if (op.is_compute() || !op.comm.empty()) expected.push_back(op);
      }
      EXPECT_EQ(v.ops[r], expected) << "N=" << n << " C=" << c << " r=" << r << "\n"
                                    << FormatOps(v.ops[r]) << "\n"
                                    << FormatOps(expected);
    }
  }
}

TEST(DualPipeVTest, TheLastRankTurnsMicroBatchesAroundWithoutPointToPoint) {
  const Schedule v = BuildV(4, 8);
  int elements = 0;
  for (const Op& op : v.ops[3]) {
    for (const P2P& p : op.comm) {
      // Only rank 2 is a peer, and only for receiving leg a's input, sending leg b's output,
      // receiving leg b's output gradient and sending leg a's input gradient. Leg a's output and
      // leg b's input gradient never leave the rank.
      const std::string kind = FormatOp(Op::CommBatch({p})).substr(1, 3);
      EXPECT_TRUE(kind == "rFa" || kind == "sFb" || kind == "rBb" || kind == "sBa") << kind;
      EXPECT_EQ(p.peer, 2) << FormatOp(op);
      ++elements;
    }
  }
  EXPECT_EQ(elements, 4 * 8);  // each of the four kinds once per micro-batch
}

TEST(DualPipeVTest, EveryMicroBatchRunsBothLegsOnEveryRank) {
  for (auto [n, c] : Shapes()) {
    const Schedule v = BuildV(n, c);
    for (int r = 0; r < n; ++r) {
      for (Direction d : {Direction::kA, Direction::kB}) {
        EXPECT_EQ(CountOps(v.ops[r], OpKind::kForward, d), c);
        EXPECT_EQ(CountOps(v.ops[r], OpKind::kBackward, d) +
                      CountOps(v.ops[r], OpKind::kBackwardInput, d),
                  c);
      }
    }
  }
}

TEST(DualPipeVTest, RankHoldsStageRAndStageTwoNMinusOneMinusR) {
  const Schedule v = BuildV(3, 6);
  EXPECT_EQ(v.layout.num_stages, 6);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(v.layout.StageOf(r, Direction::kA), r);
    EXPECT_EQ(v.layout.StageOf(r, Direction::kB), 5 - r);
  }
}

TEST(DualPipeVTest, StepLengthsAreSection63WithHBecomingN) {
  absl::StatusOr<std::array<int, 8>> steps = DualPipeVStepLengths(4, 10, 1);
  ASSERT_OK(steps);
  // N=4, C=10, r=1: [2(N-r-1), r+1, N-r-1, C-2N+r+1, N-r-1, r+1, N-r-1, r+1].
  EXPECT_EQ(*steps, (std::array<int, 8>{4, 2, 2, 4, 2, 2, 2, 2}));
}

TEST(DualPipeVTest, RejectsFewerThanTwoNMicroBatches) {
  EXPECT_THAT(BuildDualPipeV(4, 7),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("C >= 2N")));
  EXPECT_OK(BuildDualPipeV(3, 7));  // no parity rule, any N
}

TEST(DualPipeVTest, RejectsZeroRanksAndARankOutsideTheGroup) {
  EXPECT_THAT(BuildDualPipeV(0, 4),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("N >= 1")));
  EXPECT_THAT(BuildDualPipeVRank(2, 4, 2), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DualPipeVTest, CompletesUnderStrictRendezvousForManyShapes) {
  for (auto [n, c] : Shapes()) {
    EXPECT_OK(Simulate(BuildV(n, c), {.timing = TimingModel::kRendezvous}))
        << "N=" << n << " C=" << c;
  }
}

// §6.4: the bubble is §6.2's with PP = 2N, independent of C.
TEST(DualPipeVTest, BubbleIsTheTableFormulaWithPpEqualToTwoN) {
  for (int n = 1; n <= 8; ++n) {
    for (int c : {2 * n, 2 * n + 1, 8 * n}) {
      const Schedule v = BuildV(n, c);
      for (double fb : {3.0, 2.2}) {
        SimOptions options;
        options.costs.forward_backward = fb;
        absl::StatusOr<SimResult> sim = Simulate(v, options);
        ASSERT_OK(sim);
        const double formula = (2.0 * n / 2 - 1) * (fb + 2 - 3 * 1);
        EXPECT_NEAR(sim->MaxIdle(), formula, 1e-9) << "N=" << n << " C=" << c << " F&B=" << fb;
      }
    }
  }
}

// Oracle 26 with PP = 2N: 2N + 1 stage activations (each 1/(2N) of the model) on every rank.
TEST(DualPipeVTest, PeakLiveActivationsAreTwoNPlusOneOnEveryRank) {
  for (int n = 1; n <= 8; ++n) {
    for (int c : {2 * n, 5 * n}) {
      absl::StatusOr<SimResult> sim = Simulate(BuildV(n, c));
      ASSERT_OK(sim);
      for (int r = 0; r < n; ++r) {
        EXPECT_EQ(sim->ranks[r].peak_activations, 2 * n + 1) << "N=" << n << " C=" << c;
      }
    }
  }
}

}  // namespace
}  // namespace dsv3::parallel
