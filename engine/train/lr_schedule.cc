// Warm-up + cosine learning-rate schedule (lr_schedule.h).
#include "engine/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"

namespace dsv3::train {

absl::Status ValidateLrSchedule(const LrSchedule& s) {
  if (!std::isfinite(s.lr) || !(s.lr > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("lr=", s.lr, " must be positive and finite"));
  }
  if (!std::isfinite(s.min_lr) || s.min_lr < 0 || s.min_lr > s.lr) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_lr=", s.min_lr, " must be in [0, lr=", s.lr, "]"));
  }
  if (s.total_steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("total_steps=", s.total_steps, " must be at least 1"));
  }
  if (s.warmup_steps < 0 || s.warmup_steps > s.total_steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "warmup_steps=", s.warmup_steps, " must be in [0, total_steps=", s.total_steps, "]"));
  }
  return absl::OkStatus();
}

double LearningRate(const LrSchedule& s, int64_t step) {
  if (step < 0) {
    std::cerr << "LearningRate: step=" << step << " must be >= 0\n";
    std::abort();
  }
  if (step < s.warmup_steps) {
    return s.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  }
  const double decay_steps =
      static_cast<double>(std::max<int64_t>(1, s.total_steps - s.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - s.warmup_steps) / decay_steps);
  return s.min_lr + (s.lr - s.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace dsv3::train
