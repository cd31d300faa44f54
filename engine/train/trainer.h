// The training loop: the model (engine/model), AdamW with global-norm clipping
// (optimizer.h), the warm-up + cosine schedule (lr_schedule.h), the layout-independent data order
// (data_loader.h), validation, the auxiliary-loss-free bias update once per step, and checkpoints
// with resume (trainer_checkpoint.h) that continue bit-for-bit. Options are a plain struct (the
// fields of a resolved job spec it needs; no protobuf in the engine). Not here: spec parsing
// (coordinator/job_spec.h, used by cli/train_run_cmd.cc).
//
// Pipeline and expert parallelism (docs/pipeline.md): with a pipeline group of size P > 1 the
// micro-batches of step 2 below run as the schedule's op list (engine/parallel/pipeline_executor.h)
// on this rank's stages, and with an expert-parallel group every MoE layer's routed experts are
// split over it; the sums and ZeRO-1 of steps 2-4 then run over the world group of all ranks.
//
// Data parallelism: with TrainerOptions::data_parallel of size D > 1 this object is rank r of D
// replicas (one per process or thread), each calling every method in the same order; optimizer
// state is sharded ZeRO-1 style (zero_optimizer.h) and checkpoints are written by every rank
// (data_parallel_checkpoint.h). A D-rank run gives the losses and parameters of the one-process
// run of the same global batch up to floating-point summation order.
//
// One step s (0-based; s steps are complete before it):
//   1. zero the gradients;
//   2. for each micro-batch m of M: rows DataLoader::Slice(s, m, M, r, D) -> Model::Run with
//      normalizer_rows = B (the global batch's rows), so the micro-batch gradients and loss terms
//      SUM (over micro-batches and ranks) to those of the global batch; with D > 1 the loss
//      terms are all-reduced;
//   3. AdamW at LearningRate(s) with the pre-clip global norm clipped to grad_clip (D > 1:
//      ZeroAdamW -- reduce-scatter, sharded update, all-gather);
//   4. Model::ApplyBiasUpdate(bias_update_speed) from the loads of all M micro-batches (D > 1:
//      all-reduced first, so every replica applies the same update).
// Validation runs every val_every_steps completed steps and at the end; a checkpoint is written
// every checkpoint_every_steps and at the end.
#ifndef DSV3_ENGINE_TRAIN_TRAINER_H_
#define DSV3_ENGINE_TRAIN_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "engine/model/model.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/pipeline_executor.h"
#include "engine/parallel/schedule.h"
#include "engine/train/data_loader.h"
#include "engine/train/lr_schedule.h"
#include "engine/train/optimizer.h"
#include "engine/train/zero_optimizer.h"
#include "kernels/cpu/thread_pool.h"

namespace dsv3::train {

struct TrainerOptions {
  ModelConfig model;
  model::Precision precision = model::Precision::kBf16;
  bool recompute = false;  // spec §2.8 (same results, less memory)

  // The train section of the job spec (docs/job-spec.md; the defaults there are the spec's).
  int64_t seq_len = 0;              // T
  int64_t global_batch_tokens = 0;  // B * T
  int micro_batches = 1;            // M (parallel.micro_batches): gradient accumulation
  int64_t steps = 0;                // S, optimizer steps of the whole job
  double lr = 0;
  double min_lr = 0;
  int64_t warmup_steps = 0;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // 0 = off
  uint64_t seed = 1;
  double mtp_loss_weight = 0.3;
  double bias_update_speed = 0.001;
  double seq_aux_loss_alpha = 1e-4;
  int64_t val_every_steps = 0;  // 0 = validate only at the end
  int64_t val_tokens = 0;       // tokens per validation pass, a multiple of T; 0 = B * T
  double init_stddev = 0.006;   // spec §11.8

  std::string train_data;  // token shard, required
  std::string val_data;    // token shard; empty = no validation

  std::string checkpoint_dir;          // empty = no checkpoints and no resume
  int64_t checkpoint_every_steps = 0;  // 0 = only at the end
  int checkpoint_keep = 3;
  // The placement epoch this run belongs to (the service's; 0 for a run of its own). Checkpoints
  // are staged per epoch, and a commit never replaces a step committed by a newer epoch, so a
  // stale rank of an earlier placement cannot overwrite the current one's (docs/checkpoints.md).
  int64_t checkpoint_epoch = 0;

  int threads = 0;  // kernel threads (the caller's thread included); 0 = all hardware threads
  // > 0: end this run once this many steps are complete (validation and checkpoint as at the
  // end); the LR schedule still spans `steps`. For tests and for splitting a job into sessions.
  int64_t stop_after_step = 0;

  // The data-parallel group this trainer is one rank of (shared with the caller, who keeps it
  // alive as long as the trainer); null or of size 1: a single-process run. Every rank of the group
  // must be given the same options otherwise. With D ranks, global_batch_tokens must be a multiple
  // of seq_len * micro_batches * D.
  std::shared_ptr<parallel::Communicator> data_parallel;

  // Pipeline parallelism (engine/parallel/pipeline_executor.h): the group of the P ranks that one
  // pipeline spans, in stage order (null or of size 1: none), and the schedule they run, with
  // micro_batches as the schedule's C. Each rank keeps a full copy of the parameters and runs
  // only its stages' chunks; the reduction over `world` sums the stage copies.
  std::shared_ptr<parallel::Communicator> pipeline;
  parallel::ScheduleKind schedule = parallel::ScheduleKind::kDualPipe;
  // Expert parallelism (engine/parallel/expert_parallel.h): the group of ranks, all running the
  // same stages, that split the routed experts of every MoE layer (null or of size 1: every rank
  // runs all experts). Its ranks are also data-parallel ranks: each trains its own rows, and its
  // tokens reach the experts' owners by all-to-all. Its size must divide n_routed_experts.
  std::shared_ptr<parallel::Communicator> expert_parallel;
  // A second communicator over the expert-parallel group (same ranks, same order) for the
  // backward's all-to-alls. With it, a pipeline's F&B chunk pairs run overlapped (spec §6.6,
  // pipeline_executor.h); without it (null) they run one after the other when the experts are
  // split. Pipelines without expert parallelism always overlap them.
  std::shared_ptr<parallel::Communicator> expert_parallel_backward;
  // Every rank of the job (P pipeline ranks x D data-parallel replicas): optimizer state is
  // sharded over it (ZeRO-1) and gradients, loss terms and expert loads are summed over it.
  // Required with a pipeline, of size P x D; without one it is data_parallel.
  std::shared_ptr<parallel::Communicator> world;
};

// What one step did. Loss terms are the global batch's (the sum of the micro-batch shares).
struct StepProgress {
  int64_t step = 0;   // steps complete after this one (1-based)
  int64_t steps = 0;  // S
  model::LossTerms loss;
  double lr = 0;
  double grad_norm = 0;   // before clipping
  double grad_scale = 1;  // the clip factor applied
  double seconds = 0;     // wall time of the step
  double tokens_per_second = 0;
  int64_t tokens_seen = 0;  // by the whole job, this step included
  // Expert-load balance of the step over the whole global batch: for each MoE layer max/mean of
  // its experts' loads; the worst (largest) layer is reported. 1 = perfectly balanced; 0 and -1
  // without MoE layers.
  double load_max_over_mean = 0;
  int64_t load_worst_layer = -1;  // index among the MoE layers (main layers in order, then MTP)
  // The loads the bias update used: [num_moe_layers, n_routed_experts] row-major.
  std::vector<int64_t> expert_loads;
};

struct ValidationResult {
  int64_t step = 0;       // steps complete when it ran
  model::LossTerms loss;  // means over the validation rows (main_loss is "the" val loss)
  int64_t rows = 0;
  int64_t tokens = 0;  // rows * T
  // Top-1 accuracy of the main head on t_{i+1} and, with MTP, of the MTP head on t_{i+2} (the
  // acceptance proxy of MTP speculative decoding, spec §4.5); -1 without MTP.
  double next_token_accuracy = 0;
  double mtp_next_next_accuracy = -1;
  double seconds = 0;
};

struct CheckpointEvent {
  int64_t step = 0;
  std::string path;
  double seconds = 0;
  std::vector<std::string> pruned;
};

struct TrainerCallbacks {
  std::function<void(const StepProgress&)> on_step;
  std::function<void(const ValidationResult&)> on_validation;
  std::function<void(const CheckpointEvent&)> on_checkpoint;
};

struct TrainSummary {
  int64_t first_step = 0;       // steps complete when this run started (> 0 after a resume)
  int64_t last_step = 0;        // steps complete at the end
  bool stopped = false;         // ended early by the stop flag
  int64_t tokens_seen = 0;      // by the whole job
  int64_t tokens_this_run = 0;  // trained on by this run
  double seconds = 0;           // wall time of Run
  std::optional<ValidationResult> final_validation;  // absent without validation data
  std::optional<CheckpointEvent> last_checkpoint;    // absent without a checkpoint dir
};

class Trainer {
 public:
  // Checks the options (INVALID_ARGUMENT naming the field), opens the shards (their errors; token
  // ids are checked against vocab_size), builds the model and the optimizer, and then either
  // resumes from the newest committed checkpoint under checkpoint_dir (FAILED_PRECONDITION when it
  // belongs to another model config, seed, seq_len or global batch; DATA_LOSS naming the file
  // when it is corrupt -- nothing is written or removed then) or initialises the parameters from
  // the seed (spec §11.8).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainerOptions& options);
  ~Trainer();

  const TrainerOptions& options() const { return options_; }
  int64_t step() const { return step_; }  // steps complete
  int64_t tokens_seen() const { return tokens_seen_; }
  // The checkpoint resumed from; empty when training started from the seed.
  const std::string& resumed_from() const { return resumed_from_; }
  int64_t batch_rows() const { return batch_rows_; }  // B
  int64_t num_parameters() const;
  model::Model& model() { return *model_; }
  // The single-process optimizer; only when dp_size() == 1.
  const AdamW& optimizer() const { return *optimizer_; }
  // The ZeRO-1 optimizer; null when dp_size() == 1.
  const ZeroAdamW* zero_optimizer() const { return zero_.get(); }
  int dp_rank() const { return dp_rank_; }
  int dp_size() const { return dp_size_; }
  int pp_size() const { return pp_size_; }
  int ep_size() const { return options_.expert_parallel ? options_.expert_parallel->size() : 1; }
  // The model's pipeline stages (DualPipeV: 2 per rank); 1 without a pipeline.
  int num_pipeline_stages() const {
    return pipeline_ ? pipeline_->schedule().layout.num_stages : 1;
  }

  // Trains until `steps` (or stop_after_step) steps are complete, calling back after every step,
  // validation and checkpoint (on this thread). With `stop` set (e.g. by a signal handler) it ends
  // after the current step, with a checkpoint. Errors: those of Step, Validate, Checkpoint; steps
  // completed before an error stay done (and checkpointed where due). With D > 1 an error on this
  // rank aborts the communicator, so the other ranks fail promptly too.
  absl::StatusOr<TrainSummary> Run(const TrainerCallbacks& callbacks,
                                   const std::atomic<bool>* stop = nullptr);

  // One optimizer step (the file comment). Errors: the model's (INVALID_ARGUMENT for a token id
  // out of range) and FAILED_PRECONDITION when the loss or the gradient norm is not finite; the
  // parameters are not updated then.
  absl::StatusOr<StepProgress> Step();

  // The mean loss terms over the val_tokens / T validation rows (ValidationIterator order),
  // evaluated in chunks of B / M rows without gradients or load counting. FAILED_PRECONDITION
  // without validation data.
  absl::StatusOr<ValidationResult> Validate();

  // Writes, commits and prunes a checkpoint of the current step. FAILED_PRECONDITION without a
  // checkpoint dir; otherwise the errors of SaveCheckpoint.
  absl::StatusOr<CheckpointEvent> Checkpoint();

 private:
  Trainer(const TrainerOptions& options, int64_t batch_rows);
  absl::Status Init();
  absl::StatusOr<TrainSummary> RunSteps(const TrainerCallbacks& callbacks,
                                        const std::atomic<bool>* stop);

  TrainerOptions options_;
  int64_t batch_rows_;  // B
  LrSchedule schedule_;
  std::unique_ptr<kernels::ThreadPool> pool_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<AdamW> optimizer_;  // dp_size_ == 1
  std::unique_ptr<ZeroAdamW> zero_;   // dp_size_ > 1
  int dp_rank_ = 0;
  int dp_size_ = 1;
  int pp_size_ = 1;
  // The group reductions and ZeRO-1 run over (world, or data_parallel); null in one process.
  parallel::Communicator* reduce_ = nullptr;
  std::unique_ptr<parallel::PipelineExecutor> pipeline_;  // null without pipeline parallelism
  std::unique_ptr<DataLoader> train_loader_;
  std::unique_ptr<ValidationIterator> val_batches_;  // null without validation data
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  std::string resumed_from_;
};

// INVALID_ARGUMENT naming the field unless the options describe a runnable job (the train-section
// rules of docs/job-spec.md that concern the trainer, and threads >= 0). The model config itself is
// checked by Model::Create.
absl::Status ValidateTrainerOptions(const TrainerOptions& options);

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_TRAINER_H_
