// The DeepSeekMoE router on the CPU (spec §3.2, §3.4, §3.5, §11.3, §11.5, §11.6): sigmoid scores,
// group-limited top-K selection on bias-corrected scores, gate weights from the unbiased scores,
// per-expert load counts, the backward of the gate weights, the sequence-wise balance loss with
// its gradient, and the auxiliary-loss-free bias update. Not here: the router GEMM (the caller
// computes logits = h . W_router^T in FP32), token dispatch (permute.h), the all-reduce of loads.
//
// Selection, for one token, with s_i = sigmoid(logit_i) (evaluated in double, rounded once to FP32)
// and the FP32 biased score s'_i = s_i + bias_i:
//   1. experts split into n_groups contiguous groups of n_experts / n_groups;
//   2. group score = sum of the group's top-2 s' (top-1 when a group has one expert), in FP32;
//   3. the topk_groups best groups are kept, the others' s' become -inf (skipped when
//      n_groups == 1);
//   4. the top_k experts by masked s' are chosen, in descending order of s'.
//   Ties (equal FP32 values) go to the LOWER index, for groups and experts alike; a NaN score
//   ranks below every number. Selection depends only on the FP32 values, so it is exact and
//   identical for any thread count (and for the CUDA twin, which must reproduce it bit for bit).
//   5. weights: w_k = (s_k / Z) * routed_scaling_factor, Z = sum of the chosen s in FP32 in slot
//      order (no epsilon, as V3code: the weights sum to the factor up to rounding).
// The CUDA twin (later) takes a CudaContext and the same arguments.
#ifndef DSV3_KERNELS_CPU_ROUTER_H_
#define DSV3_KERNELS_CPU_ROUTER_H_

#include <cstdint>

#include "kernels/cpu/context.h"

namespace dsv3::kernels {

struct RouterConfig {
  int64_t n_experts = 0;    // n_routed_experts, >= 1
  int64_t n_groups = 1;     // n_group, divides n_experts
  int64_t topk_groups = 1;  // topk_group, in [1, n_groups]
  int64_t top_k = 1;        // num_experts_per_tok, in [1, topk_groups * n_experts / n_groups]
  float routed_scaling_factor = 1.0f;
};

// Routes `tokens` tokens (see the file comment for the exact rule).
//   logits:     [tokens, n_experts] row-major FP32
//   bias:       [n_experts] FP32 (e_score_correction_bias)
//   expert_ids: [tokens, top_k] row-major int32, written: slot 0 holds the best expert
//   weights:    [tokens, top_k] row-major FP32, written: the gate weight of each slot
//   load:       [n_experts] int64 (nullable), INCREMENTED by the number of tokens that chose each
//               expert (the caller zeroes it at the start of an optimizer step)
// Aborts on an invalid config, tokens < 0, null or overlapping buffers.
void RouterForward(const CpuContext& ctx, const RouterConfig& config, const float* logits,
                   const float* bias, int64_t tokens, int32_t* expert_ids, float* weights,
                   int64_t* load);

// Backward of the gate weights with respect to the logits (the selection is a constant):
//   dlogits[t, e] = s_e (1 - s_e) * (c / Z) * (dw_e - sum_k dw_k s_k / Z) for chosen e, else 0,
// with s = sigmoid(logits) and Z = sum of the chosen s recomputed in double from the logits, and
// the result rounded once to FP32.
//   logits:     [tokens, n_experts] row-major FP32 (the forward input)
//   expert_ids: [tokens, top_k] int32 from RouterForward (ids must be in range and distinct)
//   dweights:   [tokens, top_k] row-major FP32
//   dlogits:    [tokens, n_experts] row-major FP32, OVERWRITTEN (zeros for unchosen experts);
//               SequenceBalanceLoss can then add its part
void RouterBackward(const CpuContext& ctx, const RouterConfig& config, const float* logits,
                    const int32_t* expert_ids, const float* dweights, int64_t tokens,
                    float* dlogits);

// The complementary sequence-wise balance loss (spec §3.5 with the §11.3 choices). The batch is
// `rows` sequences of `seq_len` tokens (token t of row r is logits row r * seq_len + t). Per row:
//   f_i = n_experts / (top_k * seq_len) * #{t : i in TopK(s_t)}   (UNBIASED s, all experts, no
//          group limit; ties to the lower index; a constant: no gradient)
//   P_i = (1 / seq_len) * sum_t s_{i,t} / sum_j s_{j,t}
//   L_row = sum_i f_i P_i
// loss = alpha / mean_over_rows * sum over rows of L_row   (so perfect balance gives alpha when
// mean_over_rows == rows). All accumulations in double; rows summed in row order.
struct BalanceLossConfig {
  int64_t n_experts = 0;       // >= 1
  int64_t top_k = 1;           // in [1, n_experts]
  int64_t rows = 0;            // sequences, >= 0
  int64_t seq_len = 0;         // tokens per sequence, >= 1
  double alpha = 1e-4;         // seq_aux_loss_alpha
  int64_t mean_over_rows = 0;  // divisor of the mean over rows; 0 means `rows`
  double grad_scale = 1.0;     // the gradient written is grad_scale * d(loss)/d(logits)
};

// Returns the loss. If dlogits is not null, ADDS grad_scale * d(loss)/d(logits) to it:
//   dlogits[t, m] += grad_scale * alpha / (mean_over_rows * seq_len)
//                    * (f_m - sum_i f_i s_i / Z_t) / Z_t * s_m (1 - s_m)
//   logits:  [rows * seq_len, n_experts] row-major FP32
//   dlogits: [rows * seq_len, n_experts] row-major FP32 (nullable), accumulated into
// Aborts on an invalid config or null/overlapping buffers. Thread-count invariant.
double SequenceBalanceLoss(const CpuContext& ctx, const BalanceLossConfig& config,
                           const float* logits, float* dlogits);

// The auxiliary-loss-free bias update (spec §3.4, §11.6), once per optimizer step:
//   bias_i += gamma * sign(mean_load - load_i),  sign(0) = 0, mean_load = sum(load) / n_experts,
// the sign decided exactly in integers (load_i * n_experts against sum(load)); no centering.
//   load: [n_experts] int64 >= 0, the global batch's counts (all micro-batches, all replicas)
//   bias: [n_experts] FP32, updated in place (bias_i + gamma, bias_i - gamma in FP32, or unchanged)
void UpdateRouterBias(const CpuContext& ctx, const int64_t* load, int64_t n_experts, float gamma,
                      float* bias);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_CPU_ROUTER_H_
