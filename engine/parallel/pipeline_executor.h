// The pipeline executor: runs one rank's op list of any schedule (schedule.h: DualPipe, DualPipeV,
// 1F1B) on the model's stages (model.h ForwardStage / BackwardStage) for one optimizer step.
//
//   F     forward of (direction, micro-batch, stage); at the route's last stage it computes the
//         loss (this rank's share of the global batch's loss terms).
//   B     full backward: the stage's input gradient and its parameter gradients.
//   Bi    backward with the Linears' weight-gradient GEMMs deferred (model/linear.h), queued FIFO.
//   W     runs the oldest deferred weight-gradient work.
//   F&B   the forward chunk, then the backward chunk. Their point-to-point messages travel while
//         the other chunk computes (see below); overlapping the expert all-to-alls of one chunk
//         with the other's computation (spec §6.6) is not done yet.
//   {..}  a batch of sends and receives, issued asynchronously (Communicator::SendRecv runs on
//         the communicator's own thread, so the transfer overlaps the compute ops after it) and
//         waited for only when an op needs a received buffer, or at the end of the step.
//
// Activations and gradients between hops of a route on the same rank (DualPipeV's turn at rank
// N-1) are handed over in memory. DualPipe's two copies of a stage accumulate their gradients into
// the parameters of the rank that runs them; summing the copies (and the stages of the other
// ranks) is the caller's reduction over the ranks (the trainer's ZeRO-1 reduce-scatter).
//
// Micro-batches: the schedule's C micro-batches are numbered globally route by route: DualPipe's
// direction a takes 0..C/2-1 and direction b C/2..C-1; DualPipeV and 1F1B have one route of C.
#ifndef DSV3_ENGINE_PARALLEL_PIPELINE_EXECUTOR_H_
#define DSV3_ENGINE_PARALLEL_PIPELINE_EXECUTOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/model.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/schedule.h"

namespace dsv3::parallel {

// Token rows of global micro-batch `index` (0 <= index < C), [rows, T + 1]. Every micro-batch of a
// step has the same number of rows. The span must stay valid until the step ends.
using MicroBatchSource = std::function<absl::StatusOr<model::TokenRows>(int index)>;

struct PipelineStepResult {
  // This rank's share of the global batch's loss terms: main and MTP from the last stages it runs,
  // balance from every MoE layer of its stages. The sum over the pipeline's ranks (and the data-
  // parallel replicas) is the global batch's loss.
  model::LossTerms loss;
  int forward_chunks = 0;
  int backward_chunks = 0;
  double seconds_waiting = 0;  // blocked on received messages
};

class PipelineExecutor {
 public:
  // `schedule` is the whole schedule (every rank's op list and the layout); this executor runs
  // ops[pipeline->rank()]. The model is cut into schedule.layout.num_stages stages
  // (model::PipelineStage). INVALID_ARGUMENT when the group's size is not the schedule's rank
  // count. `model` and `pipeline` are not owned and must outlive the executor.
  static absl::StatusOr<std::unique_ptr<PipelineExecutor>> Create(Schedule schedule,
                                                                  model::Model* model,
                                                                  Communicator* pipeline);

  const Schedule& schedule() const { return schedule_; }

  // Runs this rank's ops once: forwards with gradients and load counting, normalised over
  // `normalizer_rows` (the global batch's rows), backwards accumulating into the parameters'
  // gradients. Errors: the model's and the communicator's (a dead or disagreeing peer), annotated
  // with the op; the gradients are then partial and the step must be discarded.
  absl::StatusOr<PipelineStepResult> RunStep(const MicroBatchSource& micro_batches,
                                             int64_t normalizer_rows);

 private:
  PipelineExecutor(Schedule schedule, model::Model* model, Communicator* pipeline,
                   std::vector<model::StageSpan> spans);
  struct StepState;

  Schedule schedule_;
  model::Model* model_;
  Communicator* pipeline_;
  std::vector<model::StageSpan> spans_;  // [num_stages]
  std::vector<int> route_offset_;        // first global micro-batch of each route
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_PIPELINE_EXECUTOR_H_
