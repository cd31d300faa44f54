// The single-process training loop (trainer.h).
#include "engine/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "common/rank_position.h"
#include "common/status_macros.h"
#include "engine/parallel/expert_parallel.h"
#include "engine/parallel/schedule_factory.h"
#include "engine/train/checkpoint.h"
#include "engine/train/data_parallel_checkpoint.h"
#include "engine/train/str_cat.h"
#include "engine/train/token_shard.h"
#include "engine/train/trainer_checkpoint.h"

namespace dsv3::train {
namespace {

namespace fs = std::filesystem;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

using parallel::DataType;

void Add(const model::LossTerms& x, model::LossTerms* sum) {
  sum->loss += x.loss;
  sum->main_loss += x.main_loss;
  sum->mtp_loss += x.mtp_loss;
  sum->balance_loss += x.balance_loss;
}

absl::Status NonNegative(const char* field, double value) {
  if (!std::isfinite(value) || value < 0) {
    return absl::InvalidArgumentError(StrCat(field, "=", value, " must be finite and >= 0"));
  }
  return absl::OkStatus();
}

// The RankState.extra keys that must match on resume: they decide the data order.
constexpr const char* kOrderKeys[] = {"seed", "seq_len", "global_batch_tokens"};

std::map<std::string, std::string> OrderExtra(const TrainerOptions& o) {
  return {{"seed", StrCat(o.seed)},
          {"seq_len", StrCat(o.seq_len)},
          {"global_batch_tokens", StrCat(o.global_batch_tokens)}};
}

// A directory named like a committed checkpoint newer than `latest_step` (-1: none) that
// ListCommitted did not accept is a damaged checkpoint: refuse to train past it silently.
absl::Status CheckNoDamagedNewer(const std::string& root, int64_t latest_step) {
  std::error_code ec;
  fs::directory_iterator it(root, ec);
  if (ec) return absl::OkStatus();  // a missing root has nothing damaged in it
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const CheckpointDirName e = ParseCheckpointDirName(it->path().filename().string());
    if (e.kind != CheckpointDirName::kCommitted || e.step <= latest_step) continue;
    absl::StatusOr<Manifest> m = ReadManifest(it->path().string());
    const std::string why = m.ok() ? std::string(
                                         "a file its manifest lists is missing or has "
                                         "another size")
                                   : std::string(m.status().message());
    return absl::DataLossError(
        StrCat("checkpoint ", it->path().string(), " (step ", e.step, ") is damaged: ", why,
               ". Refusing to resume from ",
               latest_step < 0 ? std::string("scratch") : StrCat("step ", latest_step),
               " past it; move it away (or delete it) to resume from the newest valid checkpoint"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTrainerOptions(const TrainerOptions& o) {
  const bool mtp = o.model.num_nextn_predict_layers > 0;
  if (o.seq_len < (mtp ? 2 : 1)) {
    return absl::InvalidArgumentError(
        StrCat("seq_len=", o.seq_len, " must be at least ", mtp ? "2 (MTP is on)" : "1"));
  }
  if (o.micro_batches < 1) {
    return absl::InvalidArgumentError(
        StrCat("micro_batches=", o.micro_batches, " must be at least 1"));
  }
  if (o.global_batch_tokens <= 0 || o.global_batch_tokens % (o.seq_len * o.micro_batches) != 0) {
    return absl::InvalidArgumentError(StrCat("global_batch_tokens=", o.global_batch_tokens,
                                             " must be a positive multiple of seq_len=", o.seq_len,
                                             " x micro_batches=", o.micro_batches));
  }
  if (const int d = o.data_parallel ? o.data_parallel->size() : 1;
      o.global_batch_tokens % (o.seq_len * o.micro_batches * d) != 0) {
    return absl::InvalidArgumentError(StrCat(
        "global_batch_tokens=", o.global_batch_tokens, " must be a multiple of seq_len=", o.seq_len,
        " x micro_batches=", o.micro_batches, " x data-parallel world_size=", d));
  }
  if (const int p = o.pipeline ? o.pipeline->size() : 1; p > 1) {
    if (absl::Status s = parallel::ValidateSchedule(o.schedule, p, o.micro_batches); !s.ok()) {
      return absl::InvalidArgumentError(
          StrCat("pipeline schedule ", parallel::ScheduleKindName(o.schedule), " with ", p,
                 " ranks and micro_batches=", o.micro_batches, ": ", s.message()));
    }
    const int d = o.data_parallel ? o.data_parallel->size() : 1;
    if (o.world == nullptr || o.world->size() != p * d) {
      return absl::InvalidArgumentError(
          StrCat("a pipeline of ", p, " ranks x ", d, " data-parallel replicas needs the world "
                 "group of all ", p * d, " ranks (TrainerOptions::world)"));
    }
  }
  if (const int ep = o.expert_parallel ? o.expert_parallel->size() : 1; ep > 1) {
    const int d = o.data_parallel ? o.data_parallel->size() : 1;
    if (d % ep != 0 || o.model.n_routed_experts % ep != 0) {
      return absl::InvalidArgumentError(
          StrCat("an expert-parallel group of ", ep, " ranks must divide the ", d,
                 " data-parallel ranks and the ", o.model.n_routed_experts, " routed experts"));
    }
  }
  LrSchedule schedule{o.lr, o.min_lr, o.warmup_steps, o.steps};
  if (absl::Status s = ValidateLrSchedule(schedule); !s.ok()) {
    return absl::InvalidArgumentError(StrCat("learning-rate schedule: ", s.message()));
  }
  RETURN_IF_ERROR(NonNegative("weight_decay", o.weight_decay));
  RETURN_IF_ERROR(NonNegative("grad_clip", o.grad_clip));
  RETURN_IF_ERROR(NonNegative("mtp_loss_weight", o.mtp_loss_weight));
  RETURN_IF_ERROR(NonNegative("bias_update_speed", o.bias_update_speed));
  RETURN_IF_ERROR(NonNegative("seq_aux_loss_alpha", o.seq_aux_loss_alpha));
  if (!std::isfinite(o.init_stddev) || o.init_stddev <= 0) {
    return absl::InvalidArgumentError(
        StrCat("init_stddev=", o.init_stddev, " must be positive and finite"));
  }
  if (o.val_every_steps < 0) {
    return absl::InvalidArgumentError(
        StrCat("val_every_steps=", o.val_every_steps, " must be >= 0"));
  }
  if (o.val_tokens < 0 || o.val_tokens % o.seq_len != 0) {
    return absl::InvalidArgumentError(
        StrCat("val_tokens=", o.val_tokens, " must be >= 0 and a multiple of seq_len=", o.seq_len));
  }
  if (o.train_data.empty())
    return absl::InvalidArgumentError("train_data (data.train) is required");
  if (o.checkpoint_every_steps < 0) {
    return absl::InvalidArgumentError(
        StrCat("checkpoint_every_steps=", o.checkpoint_every_steps, " must be >= 0"));
  }
  if (o.checkpoint_keep < 1) {
    return absl::InvalidArgumentError(
        StrCat("checkpoint_keep=", o.checkpoint_keep, " must be at least 1"));
  }
  if (o.threads < 0) {
    return absl::InvalidArgumentError(StrCat("threads=", o.threads, " must be >= 0"));
  }
  if (o.stop_after_step < 0) {
    return absl::InvalidArgumentError(
        StrCat("stop_after_step=", o.stop_after_step, " must be >= 0"));
  }
  return absl::OkStatus();
}

Trainer::Trainer(const TrainerOptions& options, int64_t batch_rows)
    : options_(options),
      batch_rows_(batch_rows),
      schedule_{options.lr, options.min_lr, options.warmup_steps, options.steps} {}

Trainer::~Trainer() = default;

int64_t Trainer::num_parameters() const { return model_->parameters().layout.total_size(); }

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainerOptions& options) {
  RETURN_IF_ERROR(ValidateTrainerOptions(options));
  std::unique_ptr<Trainer> trainer(
      new Trainer(options, options.global_batch_tokens / options.seq_len));
  RETURN_IF_ERROR(trainer->Init());
  return trainer;
}

absl::Status Trainer::Init() {
  const TrainerOptions& o = options_;
  const int64_t vocab = o.model.vocab_size;
  if (o.data_parallel != nullptr) {
    dp_rank_ = o.data_parallel->rank();
    dp_size_ = o.data_parallel->size();
  }
  if (o.pipeline != nullptr) pp_size_ = o.pipeline->size();
  if (pp_size_ > 1) {
    reduce_ = o.world.get();
  } else if (dp_size_ > 1) {
    reduce_ = o.data_parallel.get();
  }
  parallel::Communicator* comm = reduce_;
  const int world_rank = comm != nullptr ? comm->rank() : 0;
  const int world_size = comm != nullptr ? comm->size() : 1;

  // Data.
  {
    ASSIGN_OR_RETURN(std::unique_ptr<TokenShard> shard,
                     TokenShard::Open(o.train_data, {.vocab_size = vocab}));
    absl::StatusOr<std::unique_ptr<DataLoader>> loader = DataLoader::Create(
        std::move(shard), {.seq_len = o.seq_len, .batch_size = batch_rows_, .seed = o.seed});
    if (!loader.ok()) {
      return absl::Status(loader.status().code(),
                          StrCat("training data ", o.train_data, ": ", loader.status().message()));
    }
    train_loader_ = *std::move(loader);
  }
  if (!o.val_data.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<TokenShard> shard,
                     TokenShard::Open(o.val_data, {.vocab_size = vocab}));
    const int64_t val_rows = (o.val_tokens > 0 ? o.val_tokens : o.global_batch_tokens) / o.seq_len;
    absl::StatusOr<std::unique_ptr<ValidationIterator>> val =
        ValidationIterator::Create(std::move(shard), o.seq_len, val_rows, /*max_batches=*/1);
    if (!val.ok()) {
      return absl::Status(val.status().code(), StrCat("validation data ", o.val_data,
                                                      " (val_tokens=", val_rows * o.seq_len,
                                                      "): ", val.status().message()));
    }
    val_batches_ = *std::move(val);
  }

  // Model and optimizer.
  const int threads = o.threads > 0
                          ? o.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  pool_ = std::make_unique<kernels::ThreadPool>(threads);
  model::ModelOptions model_options;
  model_options.precision = o.precision;
  model_options.mtp_loss_weight = o.mtp_loss_weight;
  model_options.seq_aux_loss_alpha = o.seq_aux_loss_alpha;
  model_options.recompute = o.recompute;
  ASSIGN_OR_RETURN(model_, model::Model::Create(o.model, model_options, pool_.get()));
  if (const int ep = o.expert_parallel ? o.expert_parallel->size() : 1; ep > 1) {
    const model::GemmMode mode = o.precision == model::Precision::kFp8    ? model::GemmMode::kFp8
                                 : o.precision == model::Precision::kBf16 ? model::GemmMode::kBf16
                                                                          : model::GemmMode::kFp32;
    // MoE layer l (main layers in order, then MTP) is model layer first_k_dense_replace + l.
    for (int64_t l = 0; l < model_->num_moe_layers(); ++l) {
      const std::string prefix =
          StrCat("model.layers.", o.model.first_k_dense_replace + l, ".mlp.");
      absl::StatusOr<std::shared_ptr<parallel::ExpertParallelExecutor>> executor =
          parallel::ExpertParallelExecutor::Create(o.expert_parallel.get(), o.model,
                                                   &model_->parameters(), prefix, mode,
                                                   o.expert_parallel_backward.get());
      if (!executor.ok()) {
        return absl::InvalidArgumentError(StrCat("expert parallelism over ", ep, " ranks: ",
                                                 executor.status().message()));
      }
      model_->SetExpertExecutor(l, *std::move(executor));
    }
  }
  if (pp_size_ > 1) {
    ASSIGN_OR_RETURN(parallel::Schedule schedule,
                     parallel::BuildSchedule(o.schedule, pp_size_, o.micro_batches));
    parallel::PipelineExecutorOptions pipeline_options;
    // The F&B pairs overlap unless split experts would share one communicator between them.
    pipeline_options.overlap_chunks = o.expert_parallel == nullptr ||
                                      o.expert_parallel->size() == 1 ||
                                      o.expert_parallel_backward != nullptr;
    ASSIGN_OR_RETURN(pipeline_, parallel::PipelineExecutor::Create(
                                    std::move(schedule), model_.get(), o.pipeline.get(),
                                    pipeline_options));
  }
  AdamWConfig adamw;
  adamw.weight_decay = o.weight_decay;
  adamw.grad_clip = o.grad_clip;
  adamw.moments = o.precision == model::Precision::kFp32 ? MomentDType::kF32 : MomentDType::kBf16;
  if (comm != nullptr) {
    ASSIGN_OR_RETURN(zero_, ZeroAdamW::Create(model_->parameters().layout, adamw, comm));
  } else {
    ASSIGN_OR_RETURN(AdamW optimizer, AdamW::Create(model_->parameters().layout, adamw));
    optimizer_ = std::make_unique<AdamW>(std::move(optimizer));
  }

  // Resume or initialise.
  if (!o.checkpoint_dir.empty()) {
    absl::StatusOr<CommittedCheckpoint> latest = LatestCommitted(o.checkpoint_dir);
    if (!latest.ok() && latest.status().code() != absl::StatusCode::kNotFound) {
      return latest.status();
    }
    RETURN_IF_ERROR(
        CheckNoDamagedNewer(o.checkpoint_dir, latest.ok() ? latest->manifest.step : -1));
    if (comm != nullptr) {  // every rank must resume from the same step
      std::vector<int64_t> steps(static_cast<size_t>(world_size), 0);
      const int64_t mine = latest.ok() ? latest->manifest.step : -1;
      RETURN_IF_ERROR(WaitFor(comm->AllGather(&mine, steps.data(), 1, DataType::kInt64),
                              "agreeing on the checkpoint to resume from"));
      for (int r = 0; r < world_size; ++r) {
        if (steps[r] != mine) {
          return absl::FailedPreconditionError(
              StrCat("rank ", world_rank, " sees newest checkpoint step ", mine, " under ",
                     o.checkpoint_dir, " but rank ", r, " sees step ", steps[r],
                     " (-1: none); every rank must see the same checkpoint dir"));
        }
      }
    }
    if (latest.ok()) {
      absl::StatusOr<RestoredCheckpoint> restored_or =
          comm != nullptr
              ? RestoreDataParallelCheckpoint(latest->path, o.model, comm, &model_->parameters(),
                                              zero_.get())
              : RestoreCheckpoint(latest->path, o.model, &model_->parameters(), optimizer_.get());
      RETURN_IF_ERROR(restored_or.status());
      RestoredCheckpoint& restored = *restored_or;
      const std::map<std::string, std::string> want = OrderExtra(o);
      for (const char* key : kOrderKeys) {
        auto it = restored.state.extra.find(key);
        if (it == restored.state.extra.end()) {
          return absl::DataLossError(
              StrCat("checkpoint ", restored.path, ": rank state has no \"", key, "\" entry"));
        }
        if (it->second != want.at(key)) {
          return absl::FailedPreconditionError(StrCat(
              "checkpoint ", restored.path, " was trained with ", key, "=", it->second,
              " but this job has ", key, "=", want.at(key),
              "; the data order would differ, so it cannot be resumed (use another checkpoint "
              "dir to start afresh)"));
        }
      }
      step_ = restored.step;
      tokens_seen_ = restored.state.tokens_seen;
      resumed_from_ = restored.path;
      return absl::OkStatus();
    }
  }
  model::InitParameters(o.seed, o.init_stddev, &model_->parameters());
  return absl::OkStatus();
}

absl::StatusOr<StepProgress> Trainer::Step() {
  const auto start = std::chrono::steady_clock::now();
  const TrainerOptions& o = options_;
  model::ParameterSet& params = model_->parameters();
  params.ZeroGrads();
  model::LossTerms total;
  if (pipeline_ != nullptr) {
    // This replica's micro-batches, each read once, when the schedule first needs it.
    std::vector<std::optional<TokenBatch>> batches(static_cast<size_t>(o.micro_batches));
    auto source = [&](int m) -> absl::StatusOr<model::TokenRows> {
      std::optional<TokenBatch>& b = batches[static_cast<size_t>(m)];
      if (!b.has_value()) {
        absl::StatusOr<TokenBatch> batch =
            train_loader_->Slice(step_, m, o.micro_batches, dp_rank_, dp_size_);
        if (!batch.ok()) return batch.status();
        b = *std::move(batch);
      }
      return model::TokenRows{b->tokens.data(), b->rows, o.seq_len};
    };
    absl::StatusOr<parallel::PipelineStepResult> result = pipeline_->RunStep(source, batch_rows_);
    if (!result.ok()) {
      model_->ResetExpertLoads();
      return absl::Status(result.status().code(),
                          StrCat("step ", step_ + 1, ": ", result.status().message()));
    }
    total = result->loss;
  }
  RankPosition& position = GlobalRankPosition();
  for (int m = 0; m < o.micro_batches && pipeline_ == nullptr; ++m) {
    position.micro_batch.store(m, std::memory_order_relaxed);
    absl::StatusOr<TokenBatch> batch =
        train_loader_->Slice(step_, m, o.micro_batches, dp_rank_, dp_size_);
    if (!batch.ok()) {
      model_->ResetExpertLoads();
      return batch.status();
    }
    model::TokenRows rows;
    rows.tokens = batch->tokens.data();  // [B / M, T + 1]
    rows.rows = batch->rows;
    rows.seq_len = o.seq_len;
    model::RunOptions run;
    run.backward = true;
    run.count_loads = true;
    run.normalizer_rows = batch_rows_;
    absl::StatusOr<model::LossTerms> loss = model_->Run(rows, run);
    if (!loss.ok()) {
      model_->ResetExpertLoads();
      return absl::Status(loss.status().code(), StrCat("step ", step_ + 1, " micro-batch ", m, ": ",
                                                       loss.status().message()));
    }
    Add(*loss, &total);
    position.ticks.fetch_add(1, std::memory_order_relaxed);
  }
  if (zero_ != nullptr) {  // the global batch's loss terms: the sum of every rank's shares
    double terms[4] = {total.loss, total.main_loss, total.mtp_loss, total.balance_loss};
    RETURN_IF_ERROR(WaitFor(reduce_->AllReduce(terms, terms, 4, DataType::kFloat64),
                            StrCat("step ", step_ + 1, ": loss all-reduce")));
    total = {terms[0], terms[1], terms[2], terms[3]};
  }
  if (!std::isfinite(total.loss)) {
    model_->ResetExpertLoads();
    return absl::FailedPreconditionError(StrCat("the loss of step ", step_ + 1, " is ", total.loss,
                                                " (training diverged); nothing was updated"));
  }

  StepProgress p;
  p.lr = LearningRate(schedule_, step_);
  const kernels::CpuContext ctx{pool_.get()};
  absl::StatusOr<OptimizerStepResult> opt =
      zero_ != nullptr ? zero_->Step(ctx, p.lr, &params) : optimizer_->Step(ctx, p.lr, &params);
  if (!opt.ok()) {
    model_->ResetExpertLoads();
    return opt.status();
  }
  if (zero_ != nullptr) {  // every replica applies the bias update of the global batch's loads
    std::vector<int64_t>& loads = model_->expert_loads();
    RETURN_IF_ERROR(WaitFor(
        reduce_->AllReduce(loads.data(), loads.data(), loads.size(), DataType::kInt64),
        StrCat("step ", step_ + 1, ": expert-load all-reduce")));
  }

  // Expert-load balance over the whole global batch, then the bias update from the same loads.
  p.expert_loads = model_->expert_loads();
  const int64_t experts = o.model.n_routed_experts;
  const int64_t layers = model_->num_moe_layers();
  for (int64_t l = 0; l < layers && experts > 0; ++l) {
    const int64_t* row = p.expert_loads.data() + l * experts;
    int64_t sum = 0, max = 0;
    for (int64_t e = 0; e < experts; ++e) {
      sum += row[e];
      max = std::max(max, row[e]);
    }
    const double ratio = sum > 0 ? static_cast<double>(max) * experts / sum : 0.0;
    if (p.load_worst_layer < 0 || ratio > p.load_max_over_mean) {
      p.load_max_over_mean = ratio;
      p.load_worst_layer = l;
    }
  }
  model_->ApplyBiasUpdate(static_cast<float>(o.bias_update_speed));

  ++step_;
  tokens_seen_ += o.global_batch_tokens;
  position.step.store(step_, std::memory_order_relaxed);
  position.micro_batch.store(-1, std::memory_order_relaxed);
  position.ticks.fetch_add(1, std::memory_order_relaxed);
  p.step = step_;
  p.steps = o.steps;
  p.loss = total;
  p.grad_norm = opt->grad_norm;
  p.grad_scale = opt->grad_scale;
  p.tokens_seen = tokens_seen_;
  p.seconds = SecondsSince(start);
  p.tokens_per_second = p.seconds > 0 ? static_cast<double>(o.global_batch_tokens) / p.seconds : 0;
  return p;
}

absl::StatusOr<ValidationResult> Trainer::Validate() {
  if (val_batches_ == nullptr) {
    return absl::FailedPreconditionError("no validation data (data.val) was given");
  }
  const auto start = std::chrono::steady_clock::now();
  const TokenBatch all = val_batches_->Batch(0);  // [val_rows, T + 1]
  const int64_t chunk = batch_rows_ / options_.micro_batches;
  ValidationResult result;
  result.step = step_;
  result.rows = all.rows;
  result.tokens = all.rows * options_.seq_len;
  const int64_t t = options_.seq_len;
  const int64_t v = options_.model.vocab_size;
  const bool has_mtp = options_.model.num_nextn_predict_layers > 0;
  std::vector<float> logits(static_cast<size_t>(chunk * t * v));
  std::vector<float> mtp_logits(has_mtp ? static_cast<size_t>(chunk * (t - 1) * v) : 0);
  // How many rows of `lg` ([count * per_row, v]) predict token `shift` columns ahead correctly.
  auto correct = [&](const float* lg, const int32_t* tokens, int64_t count, int64_t per_row,
                     int64_t shift) {
    int64_t hits = 0;
    for (int64_t r = 0; r < count; ++r) {
      for (int64_t i = 0; i < per_row; ++i) {
        const float* x = lg + (r * per_row + i) * v;
        const int64_t best = std::max_element(x, x + v) - x;
        hits += best == tokens[r * (t + 1) + i + shift];
      }
    }
    return hits;
  };
  int64_t next_hits = 0, mtp_hits = 0;
  for (int64_t begin = 0; begin < all.rows; begin += chunk) {
    model::TokenRows rows;
    rows.tokens = all.tokens.data() + begin * all.row_length;  // [count, T + 1]
    rows.rows = std::min(chunk, all.rows - begin);
    rows.seq_len = options_.seq_len;
    model::RunOptions run;
    run.backward = false;
    run.count_loads = false;
    run.normalizer_rows = all.rows;
    run.logits = logits.data();
    if (has_mtp) run.mtp_logits = mtp_logits.data();
    absl::StatusOr<model::LossTerms> loss = model_->Run(rows, run);
    if (!loss.ok()) {
      return absl::Status(loss.status().code(),
                          StrCat("validation rows ", begin, "..", begin + rows.rows - 1, ": ",
                                 loss.status().message()));
    }
    Add(*loss, &result.loss);
    GlobalRankPosition().ticks.fetch_add(1, std::memory_order_relaxed);
    next_hits += correct(logits.data(), rows.tokens, rows.rows, t, 1);
    if (has_mtp) mtp_hits += correct(mtp_logits.data(), rows.tokens, rows.rows, t - 1, 2);
  }
  result.next_token_accuracy = static_cast<double>(next_hits) / (all.rows * t);
  if (has_mtp) result.mtp_next_next_accuracy = static_cast<double>(mtp_hits) / (all.rows * (t - 1));
  result.seconds = SecondsSince(start);
  return result;
}

absl::StatusOr<CheckpointEvent> Trainer::Checkpoint() {
  if (options_.checkpoint_dir.empty()) {
    return absl::FailedPreconditionError("no checkpoint dir was given");
  }
  const auto start = std::chrono::steady_clock::now();
  RankState state;
  state.tokens_seen = tokens_seen_;
  state.data_position = step_;
  state.extra = OrderExtra(options_);
  state.extra["precision"] = std::string(model::PrecisionName(options_.precision));
  state.extra["micro_batches"] = StrCat(options_.micro_batches);
  const std::map<std::string, int64_t> layout = {{"pipeline_parallel", pp_size_},
                                                 {"expert_parallel", ep_size()},
                                                 {"data_parallel", dp_size_},
                                                 {"micro_batches", options_.micro_batches}};
  ASSIGN_OR_RETURN(
      SavedCheckpoint saved,
      zero_ != nullptr
          ? SaveDataParallelCheckpoint(options_.checkpoint_dir, step_, options_.model, layout,
                                       model_->parameters(), *zero_, state,
                                       options_.checkpoint_keep, reduce_, options_.checkpoint_epoch)
          : SaveCheckpoint(options_.checkpoint_dir, step_, options_.model, layout,
                           model_->parameters(), *optimizer_, state, options_.checkpoint_keep,
                           options_.checkpoint_epoch));
  CheckpointEvent event;
  event.step = step_;
  event.path = saved.path;
  event.pruned = std::move(saved.pruned);
  event.seconds = SecondsSince(start);
  return event;
}

absl::StatusOr<TrainSummary> Trainer::Run(const TrainerCallbacks& callbacks,
                                          const std::atomic<bool>* stop) {
  absl::StatusOr<TrainSummary> summary = RunSteps(callbacks, stop);
  if (!summary.ok() && reduce_ != nullptr) {
    // Let the other ranks fail now rather than at their communicator's timeout.
    const absl::Status reason(summary.status().code(), StrCat("rank ", reduce_->rank(), " failed: ",
                                                              summary.status().message()));
    reduce_->Abort(reason);
    if (options_.pipeline != nullptr) options_.pipeline->Abort(reason);
    if (options_.data_parallel != nullptr) options_.data_parallel->Abort(reason);
    if (options_.expert_parallel != nullptr) options_.expert_parallel->Abort(reason);
  }
  return summary;
}

absl::StatusOr<TrainSummary> Trainer::RunSteps(const TrainerCallbacks& callbacks,
                                               const std::atomic<bool>* stop) {
  const auto start = std::chrono::steady_clock::now();
  const TrainerOptions& o = options_;
  TrainSummary summary;
  summary.first_step = step_;
  const int64_t end = o.stop_after_step > 0 ? std::min(o.steps, o.stop_after_step) : o.steps;
  const bool validate = val_batches_ != nullptr;
  const bool checkpoint = !o.checkpoint_dir.empty();
  int64_t last_checkpoint = resumed_from_.empty() ? -1 : step_;
  int64_t last_validation = -1;

  auto do_checkpoint = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(CheckpointEvent event, Checkpoint());
    last_checkpoint = step_;
    if (callbacks.on_checkpoint) callbacks.on_checkpoint(event);
    summary.last_checkpoint = std::move(event);
    return absl::OkStatus();
  };
  auto do_validation = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(ValidationResult result, Validate());
    last_validation = step_;
    if (callbacks.on_validation) callbacks.on_validation(result);
    summary.final_validation = std::move(result);
    return absl::OkStatus();
  };

  while (step_ < end) {
    ASSIGN_OR_RETURN(StepProgress progress, Step());
    summary.tokens_this_run += o.global_batch_tokens;
    if (callbacks.on_step) callbacks.on_step(progress);
    int64_t stopping = stop != nullptr && stop->load() ? 1 : 0;
    if (zero_ != nullptr) {  // a signal to any rank stops every rank after the same step
      RETURN_IF_ERROR(
          WaitFor(reduce_->AllReduce(&stopping, &stopping, 1, DataType::kInt64),
                  StrCat("step ", step_, ": stop-flag all-reduce")));
    }
    if (stopping != 0) {
      summary.stopped = true;
      break;
    }
    if (step_ == end) break;
    if (checkpoint && o.checkpoint_every_steps > 0 && step_ % o.checkpoint_every_steps == 0) {
      RETURN_IF_ERROR(do_checkpoint());
    }
    if (validate && o.val_every_steps > 0 && step_ % o.val_every_steps == 0) {
      RETURN_IF_ERROR(do_validation());
    }
  }
  // The end of the run (also when stopped early): a checkpoint first (so a failure after it loses
  // nothing), then validation.
  if (checkpoint && last_checkpoint != step_) RETURN_IF_ERROR(do_checkpoint());
  if (validate && last_validation != step_) RETURN_IF_ERROR(do_validation());
  summary.last_step = step_;
  summary.tokens_seen = tokens_seen_;
  summary.seconds = SecondsSince(start);
  return summary;
}

}  // namespace dsv3::train
