// The DeepSeek-V3 model on the CPU with explicit forward and backward passes (spec §2-§5 with every
// §11 choice; docs/reference-model.md lists them): embedding, pre-norm MLA blocks, dense SwiGLU
// FFNs for the first first_k_dense_replace layers and DeepSeekMoE after, the final norm and head,
// the depth-1 MTP module, and loss = main + lambda * mtp + balance. Precision modes fp32, bf16 and
// fp8 as §11.9 defines them. Gradients ACCUMULATE into parameters().grads, so the trainer can sum
// micro-batches. Not here: the optimizer, the LR schedule, data loading (engine/train), pipeline
// stages and expert parallelism (engine/parallel).
#ifndef DSV3_ENGINE_MODEL_MODEL_H_
#define DSV3_ENGINE_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "engine/model/ffn.h"
#include "engine/model/parameters.h"
#include "kernels/cpu/context.h"
#include "kernels/cpu/thread_pool.h"

namespace dsv3::model {

// Spec §11.9.
enum class Precision { kFp32, kBf16, kFp8 };
// "fp32", "bf16", "fp8".
std::string_view PrecisionName(Precision p);
// INVALID_ARGUMENT naming the value and the accepted names.
absl::StatusOr<Precision> ParsePrecision(std::string_view name);

struct ModelOptions {
  Precision precision = Precision::kFp32;
  double mtp_loss_weight = 0.3;      // lambda (train.mtp_loss_weight)
  double seq_aux_loss_alpha = 1e-4;  // alpha (train.seq_aux_loss_alpha)
  // Spec §2.8: do not keep RMSNorm outputs and the MLA up-projection outputs (q, k, v) between
  // the forward and the backward; recompute them in the backward. Same results, bit for bit.
  bool recompute = false;
};

// The loss terms of one call. With ForwardOptions::normalizer_rows = N the terms are this
// micro-batch's SHARE of the mean over N rows, so the shares of a batch's micro-batches add up to
// the batch's loss (exactly in real arithmetic).
struct LossTerms {
  double loss = 0;
  double main_loss = 0;
  double mtp_loss = 0;
  double balance_loss = 0;
};

// A batch of token rows: tokens[r * (seq_len + 1) + i] is t_i of row r (t_0..t_T; positions
// 0..T-1 predict t_1..t_T).
struct TokenRows {
  const int32_t* tokens = nullptr;  // [rows, seq_len + 1] row-major
  int64_t rows = 0;                 // >= 1
  int64_t seq_len = 0;              // T >= 1 (>= 2 with MTP)
};

struct RunOptions {
  // Run the backward too, accumulating d(loss)/d(param) into parameters().grads.
  bool backward = true;
  // Add the routing counts of this call to expert_loads() (training: yes; validation: no).
  bool count_loads = true;
  // The number of rows the means are taken over (the whole global batch when this is one of
  // several micro-batches); 0 means `rows` of this call. Must be >= rows.
  int64_t normalizer_rows = 0;
  // Optional outputs (DESIGN.md "Model I/O"):
  //   logits:  [rows, T, V] FP32, the main head's logits
  //   experts: [moe layers (main layers in order, then MTP), rows * T, K] int32 chosen ids in slot
  //            order; in the MTP layer row r*T + T-1 is all -1
  //   mtp_logits: [rows, T-1, V] FP32, the MTP head's logits (position i predicts t_{i+2});
  //            ignored without MTP
  float* logits = nullptr;
  int32_t* experts = nullptr;
  float* mtp_logits = nullptr;
};

// Pipeline parallelism (engine/parallel/pipeline_executor.h) runs the model as contiguous stages.
// A stage runs main layers [first_layer, end_layer); the first stage also the embedding, the last
// also the final norm, the head, the MTP module and the losses (the MTP module reads the
// embedding table too, so the last stage uses it as well). A stage with no layers passes its
// input through.
struct StageSpan {
  int64_t first_layer = 0;
  int64_t end_layer = 0;
  bool first = false;
  bool last = false;
};

// Stage `stage` of `num_stages`: the main layers split as evenly as possible, stage s taking
// layers [floor(s*L/S), floor((s+1)*L/S)). INVALID_ARGUMENT unless 0 <= stage < num_stages.
absl::StatusOr<StageSpan> PipelineStage(const ModelConfig& config, int num_stages, int stage);

// What a stage's forward keeps for its backward (opaque; released by BackwardStage).
class StageActivations {
 public:
  virtual ~StageActivations() = default;
};

class Model {
 public:
  // A model with zero-valued parameters (call InitParameters or load weights). `pool` (nullable,
  // not owned) runs the kernels. INVALID_ARGUMENT for configs the kernels cannot run (e.g. an odd
  // qk_rope_head_dim, topk_group > n_group); the message names the field.
  static absl::StatusOr<std::unique_ptr<Model>> Create(const ModelConfig& config,
                                                       const ModelOptions& options,
                                                       kernels::ThreadPool* pool);
  ~Model();

  const ModelConfig& config() const;
  const ModelOptions& options() const;
  // The kernels' context (thread pool) the model runs on; e.g. for deferred weight gradients.
  const kernels::CpuContext& context() const;
  ParameterSet& parameters();
  const ParameterSet& parameters() const;

  // Forward (and backward) of one batch. INVALID_ARGUMENT for bad shapes or a token id outside
  // [0, vocab_size), naming the position; nothing is changed then. With an expert executor that
  // communicates (engine/parallel/expert_parallel.h), its errors (a dead or disagreeing peer);
  // gradients and loads are then partly accumulated and the step must be discarded.
  absl::StatusOr<LossTerms> Run(const TokenRows& batch, const RunOptions& options);

  // One pipeline stage of Run. Run(batch, o) is exactly ForwardStage of the whole model followed
  // by BackwardStage. Sizes: n = batch.rows * batch.seq_len rows of hidden_size floats.
  //   input:  [n, d] the previous stage's output (unused, may be null, for the first stage)
  //   output: [n, d] this stage's output (unused, may be null, for the last stage)
  // Returns this stage's loss terms: main and MTP shares at the last stage, the balance-loss share
  // of the stage's MoE layers, loss = main + lambda * mtp + balance. With options.backward,
  // *saved receives what BackwardStage needs; otherwise it is reset. options.logits and
  // mtp_logits are filled by the last stage only, options.experts for the stage's MoE layers
  // only. Errors as Run.
  absl::StatusOr<LossTerms> ForwardStage(const StageSpan& span, const TokenRows& batch,
                                         const float* input, float* output,
                                         const RunOptions& options,
                                         std::unique_ptr<StageActivations>* saved);
  // Accumulates the stage's parameter gradients and releases `saved`'s buffers.
  //   d_output: [n, d] gradient of the stage's output (unused, may be null, for the last stage)
  //   d_input:  [n, d] gradient of its input, overwritten (unused, may be null, for the first
  //             stage, whose input gradient goes into the embedding's)
  // Under a ScopedWeightGradDeferral (linear.h) the Linears' weight-gradient GEMMs are queued
  // instead of run (the zero-bubble "B-input" half). Errors: the expert executor's.
  absl::Status BackwardStage(StageActivations* saved, const float* d_output, float* d_input);

  // MoE layers, main layers in order then the MTP layer.
  int64_t num_moe_layers() const;
  // Routing counts accumulated by Run since the last ApplyBiasUpdate / ResetExpertLoads:
  // [num_moe_layers, n_routed_experts] row-major ((token, slot) assignments per expert).
  std::vector<int64_t>& expert_loads();
  void ResetExpertLoads();
  // The auxiliary-loss-free update (spec §3.4, §11.6) of every MoE layer's router bias from
  // expert_loads() (which the caller may first replace by the sum over replicas), then
  // ResetExpertLoads().
  void ApplyBiasUpdate(float gamma);

  // How MoE layer `moe_layer` (numbered as expert_loads()) runs its routed experts: an
  // expert-parallel executor, or nullptr for all experts in this process (the default).
  void SetExpertExecutor(int64_t moe_layer, std::shared_ptr<ExpertExecutor> executor);

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv3::model

#endif  // DSV3_ENGINE_MODEL_MODEL_H_
