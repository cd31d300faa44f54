// Tests of the warm-up + cosine learning-rate schedule against the closed form in lr_schedule.h.
#include "engine/train/lr_schedule.h"

#include <cmath>

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace dsv3::train {
namespace {

using ::dsv3::testing::StatusIs;

TEST(LrScheduleTest, WarmUpIsLinearAndReachesThePeakOnItsLastStep) {
  const LrSchedule s{.lr = 1.0, .min_lr = 0.1, .warmup_steps = 4, .total_steps = 14};
  EXPECT_DOUBLE_EQ(LearningRate(s, 0), 0.25);
  EXPECT_DOUBLE_EQ(LearningRate(s, 1), 0.5);
  EXPECT_DOUBLE_EQ(LearningRate(s, 2), 0.75);
  EXPECT_DOUBLE_EQ(LearningRate(s, 3), 1.0);
}

TEST(LrScheduleTest, CosineDecayStartsAtThePeakAndFollowsTheClosedForm) {
  const LrSchedule s{.lr = 1.0, .min_lr = 0.1, .warmup_steps = 4, .total_steps = 14};
  EXPECT_DOUBLE_EQ(LearningRate(s, 4), 1.0);              // progress 0
  EXPECT_DOUBLE_EQ(LearningRate(s, 9), 0.1 + 0.9 * 0.5);  // progress 1/2: the midpoint
  for (int64_t step = 4; step < 14; ++step) {
    const double p = (step - 4) / 10.0;
    EXPECT_NEAR(LearningRate(s, step), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * p)), 1e-15)
        << "step " << step;
  }
  EXPECT_DOUBLE_EQ(LearningRate(s, 14), 0.1);    // progress 1: min_lr
  EXPECT_DOUBLE_EQ(LearningRate(s, 1000), 0.1);  // past the end it stays at min_lr
}

TEST(LrScheduleTest, WithoutWarmUpTheFirstStepRunsAtThePeak) {
  const LrSchedule s{.lr = 3e-3, .min_lr = 3e-4, .warmup_steps = 0, .total_steps = 100};
  EXPECT_DOUBLE_EQ(LearningRate(s, 0), 3e-3);
  EXPECT_LT(LearningRate(s, 99), LearningRate(s, 98));
  EXPECT_GT(LearningRate(s, 99), 3e-4);
}

TEST(LrScheduleTest, AllWarmUpEndsAtThePeak) {
  const LrSchedule s{.lr = 2.0, .min_lr = 0.0, .warmup_steps = 5, .total_steps = 5};
  EXPECT_DOUBLE_EQ(LearningRate(s, 0), 0.4);
  EXPECT_DOUBLE_EQ(LearningRate(s, 4), 2.0);
  EXPECT_DOUBLE_EQ(LearningRate(s, 5), 2.0);  // decay over max(1, S - W) = 1 step: progress 0
  EXPECT_DOUBLE_EQ(LearningRate(s, 6), 0.0);
}

TEST(LrScheduleTest, RisesDuringWarmUpAndNeverRisesAfter) {
  const LrSchedule s{.lr = 1e-3, .min_lr = 1e-5, .warmup_steps = 20, .total_steps = 300};
  for (int64_t step = 1; step < 20; ++step) {
    EXPECT_GT(LearningRate(s, step), LearningRate(s, step - 1)) << step;
  }
  for (int64_t step = 21; step < 320; ++step) {
    EXPECT_LE(LearningRate(s, step), LearningRate(s, step - 1)) << step;
    EXPECT_GE(LearningRate(s, step), 1e-5) << step;
  }
}

TEST(LrScheduleTest, EqualMinAndPeakGivesAConstantRateAfterWarmUp) {
  const LrSchedule s{.lr = 0.5, .min_lr = 0.5, .warmup_steps = 2, .total_steps = 10};
  for (int64_t step = 2; step < 12; ++step) EXPECT_DOUBLE_EQ(LearningRate(s, step), 0.5);
}

TEST(LrScheduleTest, ValidationNamesTheBadValue) {
  EXPECT_OK(ValidateLrSchedule({.lr = 1, .min_lr = 0, .warmup_steps = 0, .total_steps = 1}));
  EXPECT_THAT(ValidateLrSchedule({.lr = 0, .min_lr = 0, .warmup_steps = 0, .total_steps = 1}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("lr=0")));
  EXPECT_THAT(ValidateLrSchedule({.lr = 1, .min_lr = 2, .warmup_steps = 0, .total_steps = 1}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("min_lr=2")));
  EXPECT_THAT(ValidateLrSchedule({.lr = 1, .min_lr = 0, .warmup_steps = 0, .total_steps = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("total_steps=0")));
  EXPECT_THAT(ValidateLrSchedule({.lr = 1, .min_lr = 0, .warmup_steps = 3, .total_steps = 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("warmup_steps=3")));
  EXPECT_THAT(ValidateLrSchedule({.lr = NAN, .min_lr = 0, .warmup_steps = 0, .total_steps = 1}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dsv3::train
