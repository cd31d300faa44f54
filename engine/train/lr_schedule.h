// The learning-rate schedule of a training job (spec §11.10): linear warm-up, then cosine decay
// from `lr` to `min_lr`. A pure function of the step; nothing else (the optimizer takes the value,
// the trainer asks for it once per step).
#ifndef DSV3_ENGINE_TRAIN_LR_SCHEDULE_H_
#define DSV3_ENGINE_TRAIN_LR_SCHEDULE_H_

#include <cstdint>

#include "absl/status/status.h"

namespace dsv3::train {

struct LrSchedule {
  double lr = 0;             // peak rate (train.lr), > 0
  double min_lr = 0;         // end of the decay (train.min_lr), 0 <= min_lr <= lr
  int64_t warmup_steps = 0;  // W (train.warmup_steps), 0 <= W <= total_steps
  int64_t total_steps = 0;   // S (train.steps), >= 1
};

// INVALID_ARGUMENT naming the values unless lr > 0, 0 <= min_lr <= lr (all finite),
// total_steps >= 1 and 0 <= warmup_steps <= total_steps.
absl::Status ValidateLrSchedule(const LrSchedule& schedule);

// The rate of 0-based step s (the step that takes the optimizer from s to s + 1 completed steps):
//   s <  W:  lr * (s + 1) / W                       (the first step already moves: lr / W)
//   s >= W:  min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * p)),
//            p = min(1, (s - W) / max(1, S - W))    (p = 0 at s = W, so step W runs at lr)
// Steps past S keep min_lr. Computed in double. Aborts on s < 0 (a programmer error); the schedule
// is assumed valid (ValidateLrSchedule).
double LearningRate(const LrSchedule& schedule, int64_t step);

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_LR_SCHEDULE_H_
