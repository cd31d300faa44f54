// The pipeline executor: runs one rank's op list of any schedule (schedule.h: DualPipe, DualPipeV,
// 1F1B) on the model's stages (model.h ForwardStage / BackwardStage) for one optimizer step.
//
//   F     forward of (direction, micro-batch, stage); at the route's last stage it computes the
//         loss (this rank's share of the global batch's loss terms).
//   B     full backward: the stage's input gradient and its parameter gradients.
//   Bi    backward with the Linears' weight-gradient GEMMs deferred (model/linear.h), queued FIFO.
//   W     runs the oldest deferred weight-gradient work.
//   F&B   the forward chunk and the backward chunk of a pair (spec §6.6). With overlap_chunks
//         each runs on its own thread and they take turns computing (compute_token.h): when one
//         blocks on communication (an expert all-to-all, a pipeline transfer) the other computes,
//         so one chunk's all-to-alls are hidden behind the other's attention and MLP, in the
//         order the data dependencies allow. Without it: the forward chunk, then the backward.
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
  double seconds = 0;          // wall time of the step on this rank
  double seconds_compute = 0;  // in F, B, Bi, W and F&B ops
  double seconds_waiting = 0;  // blocked on messages (received buffers, or sends without overlap)
  // Compute seconds (waits excluded) and op counts per compute kind, indexed by OpKind (F, B, Bi,
  // W, F&B): the chunk costs the bubble formulas take.
  double op_seconds[5] = {};
  int op_count[5] = {};
};

struct PipelineExecutorOptions {
  // true: a send/recv batch is waited for only when an op needs what it receives (or at the end
  // of the step), so transfers overlap the compute ops issued after them. false: every batch is
  // waited for as soon as it is issued (for measuring what the overlap buys).
  bool overlap_communication = true;
  // true: the two chunks of an F&B op overlap (see the top of this file). Only when the chunks'
  // collectives cannot interleave differently on different ranks: the model has no expert-
  // parallel layers, or their forward and backward all-to-alls use separate communicators
  // (ExpertParallelExecutor::Create's backward_comm). With it, time in which neither chunk
  // computes counts as waiting.
  bool overlap_chunks = false;
};

class PipelineExecutor {
 public:
  // `schedule` is the whole schedule (every rank's op list and the layout); this executor runs
  // ops[pipeline->rank()]. The model is cut into schedule.layout.num_stages stages
  // (model::PipelineStage). INVALID_ARGUMENT when the group's size is not the schedule's rank
  // count. `model` and `pipeline` are not owned and must outlive the executor.
  static absl::StatusOr<std::unique_ptr<PipelineExecutor>> Create(
      Schedule schedule, model::Model* model, Communicator* pipeline,
      PipelineExecutorOptions options = {});

  const Schedule& schedule() const { return schedule_; }

  // Runs this rank's ops once: forwards with gradients and load counting, normalised over
  // `normalizer_rows` (the global batch's rows), backwards accumulating into the parameters'
  // gradients. Errors: the model's and the communicator's (a dead or disagreeing peer), annotated
  // with the op; the gradients are then partial and the step must be discarded.
  absl::StatusOr<PipelineStepResult> RunStep(const MicroBatchSource& micro_batches,
                                             int64_t normalizer_rows);

 private:
  PipelineExecutor(Schedule schedule, model::Model* model, Communicator* pipeline,
                   std::vector<model::StageSpan> spans, PipelineExecutorOptions options);
  struct StepState;

  Schedule schedule_;
  model::Model* model_;
  Communicator* pipeline_;
  PipelineExecutorOptions options_;
  std::vector<model::StageSpan> spans_;  // [num_stages]
  std::vector<int> route_offset_;        // first global micro-batch of each route
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_PIPELINE_EXECUTOR_H_
