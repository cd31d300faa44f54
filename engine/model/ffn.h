// The feed-forward halves of a block (spec §3): a SwiGLU FFN (the dense FFN of the first layers
// and the MoE's shared experts) and DeepSeekMoE — router (sigmoid scores, group-limited top-K on
// bias-corrected scores, gate weights from the unbiased scores), token permutation, the routed
// experts as grouped GEMMs, the weighted combine, the shared experts, and the sequence-wise balance
// loss — forward and backward. Inputs are the already-normalised tokens u. Not here: the
// post-attention RMSNorm and the residual add (decoder_layer.h), expert parallelism.
#ifndef DSV3_ENGINE_MODEL_FFN_H_
#define DSV3_ENGINE_MODEL_FFN_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "engine/model/layer_common.h"
#include "engine/model/linear.h"
#include "engine/model/parameters.h"
#include "kernels/cpu/router.h"

namespace dsv3::model {

// y = down_proj(silu(gate_proj u) * up_proj u), gate_proj and up_proj fused as one [2I, d] weight
// (parameters.h keeps them adjacent). `prefix` ends in "mlp." or "mlp.shared_experts.".
class SwiGluFfn {
 public:
  SwiGluFfn(ParameterSet* params, const std::string& prefix, int64_t d, int64_t inter,
            GemmMode mode);

  struct Cache {
    FloatBuffer gu;  // [N, 2I] gate|up projection
    FloatBuffer a;   // [N, I] silu(gate) * up (dropped under recompute)
  };
  // u: [n, d]; y: [n, d] overwritten.
  void Forward(const kernels::CpuContext& ctx, const float* u, int64_t n, float* y, Cache* cache,
               bool recompute) const;
  // du = (or +=, with accumulate_du) the input gradient; weight gradients accumulate.
  void Backward(const kernels::CpuContext& ctx, const float* u, Cache* cache, const float* dy,
                int64_t n, float* du, bool accumulate_du) const;

 private:
  int64_t d_, inter_;
  LinearRef gate_up_, down_;
};

// Runs the routed experts on tokens already sorted by (global) expert: eo = expert_e(u_perm rows of
// e) for every e, and the backward. The default runs every expert in this process (grouped GEMMs);
// engine/parallel's expert-parallel executor sends the rows to the ranks that own the experts
// (dispatch all-to-all), runs its own experts, and sends the outputs back (combine).
class ExpertExecutor {
 public:
  virtual ~ExpertExecutor() = default;
  // What the backward needs; owned by the caller between Forward and Backward.
  struct Cache {
    virtual ~Cache() = default;
  };
  //   u_perm: [rows, d] tokens sorted by expert; rows_per_expert: [E] (global expert ids)
  //   eo:     [rows, d] written: each row's expert output (unweighted), same order
  // (u_perm is handed over: an executor may keep it for the backward.)
  // Errors: those of the executor's communication (a dead or disagreeing peer); the local
  // executor never fails.
  virtual absl::Status Forward(const kernels::CpuContext& ctx, FloatBuffer u_perm,
                               const int64_t* rows_per_expert, int64_t rows, float* eo,
                               std::unique_ptr<Cache>* cache) = 0;
  //   d_eo: [rows, d]; du_perm: [rows, d] written. Expert weight gradients accumulate.
  virtual absl::Status Backward(const kernels::CpuContext& ctx, const float* d_eo,
                                const int64_t* rows_per_expert, int64_t rows, Cache* cache,
                                float* du_perm) = 0;
};

// The routed experts of one MoE layer as grouped Linears over a contiguous range of experts
// [first, first + count) of the layer's stacked weights: the whole layer for a single process, one
// rank's slice under expert parallelism.
class LocalExperts {
 public:
  LocalExperts(const ModelConfig& config, ParameterSet* params, const std::string& prefix,
               GemmMode mode, int64_t first, int64_t count);
  struct Cache {
    FloatBuffer x;   // [rows, d] the input rows
    FloatBuffer gu;  // [rows, 2I]
  };
  int64_t first() const { return first_; }
  int64_t count() const { return count_; }
  //   x: [rows, d] sorted by local expert; rows_per_expert: [count]; y: [rows, d] written
  void Forward(const kernels::CpuContext& ctx, FloatBuffer x, const int64_t* rows_per_expert,
               int64_t rows, float* y, Cache* cache) const;
  //   dy: [rows, d]; dx: [rows, d] written
  void Backward(const kernels::CpuContext& ctx, const float* dy, const int64_t* rows_per_expert,
                int64_t rows, Cache* cache, float* dx) const;

 private:
  int64_t d_, inter_, first_, count_;
  GroupedLinearRef gate_up_, down_;
};

// How the MoE's loss and counts are taken for one call.
struct MoeRunOptions {
  int64_t normalizer_rows = 0;      // rows the balance loss's mean is over (>= shape.rows)
  double alpha = 1e-4;              // seq_aux_loss_alpha
  int64_t* load = nullptr;          // [E] routing counts, incremented (nullable)
  int32_t* experts_out = nullptr;   // [N, K] chosen ids (nullable)
};

class Moe {
 public:
  // `prefix` is "model.layers.{i}.mlp.". The routed experts run in this process unless
  // set_executor() installs another executor.
  Moe(const ModelConfig& config, ParameterSet* params, const std::string& prefix, GemmMode mode);
  Moe(Moe&&) = default;

  // Replaces how the routed experts run (expert parallelism); nullptr restores local execution.
  void set_executor(std::shared_ptr<ExpertExecutor> executor);

  struct Cache {
    FloatBuffer logits;          // [N, E] router logits (FP32)
    std::vector<int32_t> ids;           // [N, K]
    FloatBuffer weights;         // [N, K] gate weights
    std::vector<int64_t> offsets;       // [E + 1]
    std::vector<int64_t> rows_per_expert;  // [E]
    std::vector<int32_t> row_token;     // [N * K]
    std::vector<int32_t> slot_row;      // [N, K]
    FloatBuffer eo;              // [R, d] expert outputs (unweighted), in expert order
    std::unique_ptr<ExpertExecutor::Cache> experts;
    SwiGluFfn::Cache shared;
  };

  // y = sum_k w_k expert_k(u) + shared(u).  u: [N, d]; y: [N, d] overwritten. Returns this call's
  // share of the balance loss (alpha included, mean over normalizer_rows rows). Errors: the
  // expert executor's.
  absl::StatusOr<double> Forward(const kernels::CpuContext& ctx, const SeqShape& shape, const float* u, float* y,
                 Cache* cache, const MoeRunOptions& options, bool recompute) const;
  // du overwritten with the input gradient (routed + shared + router incl. the balance loss).
  absl::Status Backward(const kernels::CpuContext& ctx, const SeqShape& shape, const float* u,
                Cache* cache, const float* dy, const MoeRunOptions& options, float* du) const;

  float* bias() const { return bias_; }
  int64_t n_experts() const { return router_.n_experts; }

 private:
  kernels::BalanceLossConfig Balance(const SeqShape& shape, const MoeRunOptions& o) const;

  int64_t d_, inter_, top_k_;
  kernels::RouterConfig router_;
  const float* gate_w_;
  float* gate_dw_;
  float* bias_;
  std::shared_ptr<ExpertExecutor> local_;     // all experts in this process
  std::shared_ptr<ExpertExecutor> executor_;  // local_ or an installed one
  std::optional<SwiGluFfn> shared_;  // absent when n_shared_experts == 0
};

}  // namespace dsv3::model

#endif  // DSV3_ENGINE_MODEL_FFN_H_
