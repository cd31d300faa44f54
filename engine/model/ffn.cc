// SwiGLU FFN and DeepSeekMoE forward and backward (see ffn.h).
#include "engine/model/ffn.h"

#include <algorithm>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/permute.h"
#include "kernels/cpu/swiglu.h"

namespace dsv3::model {
namespace {

using kernels::CpuContext;

void Free(FloatBuffer* v) { FloatBuffer().swap(*v); }

}  // namespace

SwiGluFfn::SwiGluFfn(ParameterSet* params, const std::string& prefix, int64_t d, int64_t inter,
                     GemmMode mode)
    : d_(d), inter_(inter) {
  // gate_proj and up_proj are adjacent (parameters.h): one [2I, d] weight.
  const std::string gate = prefix + "gate_proj.weight";
  gate_up_ = LinearRef{params->value(gate), params->grad(gate), 2 * inter, d, mode};
  const std::string down = prefix + "down_proj.weight";
  down_ = LinearRef{params->value(down), params->grad(down), d, inter, mode};
}

void SwiGluFfn::Forward(const CpuContext& ctx, const float* u, int64_t n, float* y, Cache* c,
                        bool recompute) const {
  c->gu = Floats(n * 2 * inter_);
  LinearForward(ctx, gate_up_, u, n, c->gu.data());
  c->a = Floats(n * inter_);
  kernels::SwiGluForward(ctx, c->gu.data(), n, inter_, c->a.data());
  LinearForward(ctx, down_, c->a.data(), n, y);
  if (recompute) Free(&c->a);
}

void SwiGluFfn::Backward(const CpuContext& ctx, const float* u, Cache* c, const float* dy,
                         int64_t n, float* du, bool accumulate_du) const {
  if (c->a.empty()) {
    c->a = Floats(n * inter_);
    kernels::SwiGluForward(ctx, c->gu.data(), n, inter_, c->a.data());
  }
  FloatBuffer da = Floats(n * inter_);
  LinearBackward(ctx, down_, c->a.data(), dy, n, da.data(), false);
  Free(&c->a);
  FloatBuffer dgu = Floats(n * 2 * inter_);
  kernels::SwiGluBackward(ctx, c->gu.data(), da.data(), n, inter_, dgu.data());
  LinearBackward(ctx, gate_up_, u, dgu.data(), n, du, accumulate_du);
}

LocalExperts::LocalExperts(const ModelConfig& c, ParameterSet* params, const std::string& prefix,
                           GemmMode mode, int64_t first, int64_t count)
    : d_(c.hidden_size), inter_(c.moe_intermediate_size), first_(first), count_(count) {
  // Expert j's gate|up and down weights sit at j * 2I * d and j * d * I of the layer's stacked
  // blocks (parameters.h), so a contiguous range of experts is a contiguous range of weights.
  const std::string e0 = prefix + "experts.0.";
  const int64_t gu_size = 2 * inter_ * d_;
  const int64_t down_size = d_ * inter_;
  gate_up_ = GroupedLinearRef{params->value(e0 + "gate_proj.weight") + first * gu_size,
                              params->grad(e0 + "gate_proj.weight") + first * gu_size, count,
                              2 * inter_, d_, mode};
  down_ = GroupedLinearRef{params->value(e0 + "down_proj.weight") + first * down_size,
                           params->grad(e0 + "down_proj.weight") + first * down_size, count, d_,
                           inter_, mode};
  // FP8 (spec §5.7, docs/decisions.md): the rows an expert-parallel dispatch carries, the input of
  // gate|up forward and the output gradient of down backward, are FP8 with power-of-two scales.
  // The same quantisation runs with or without expert parallelism, so both give the same bits.
  if (mode == GemmMode::kFp8) {
    gate_up_.x_scales = kernels::ScaleFormat::kUe8m0;
    down_.dy_scales = kernels::ScaleFormat::kUe8m0;
  }
}

void LocalExperts::Forward(const CpuContext& ctx, FloatBuffer x, const int64_t* rows_per_expert,
                           int64_t rows, float* y, Cache* c) const {
  c->x = std::move(x);
  c->gu = Floats(rows * 2 * inter_);
  GroupedLinearForward(ctx, gate_up_, c->x.data(), rows_per_expert, rows, c->gu.data());
  FloatBuffer a = Floats(rows * inter_);
  kernels::SwiGluForward(ctx, c->gu.data(), rows, inter_, a.data());
  GroupedLinearForward(ctx, down_, a.data(), rows_per_expert, rows, y);
}

void LocalExperts::Backward(const CpuContext& ctx, const float* dy, const int64_t* rows_per_expert,
                            int64_t rows, Cache* c, float* dx) const {
  // FP8: the output gradient is what the backward dispatch carries, dy rounded to FP8 with
  // power-of-two scales; the Dgrad quantises it losslessly again and the Wgrad re-tiles it 128x1.
  // Rounding again what already came through the dispatch changes nothing (RoundThroughE4M3).
  FloatBuffer dy8;
  if (down_.mode == GemmMode::kFp8) {
    dy8 = Floats(rows * d_);
    std::copy_n(dy, rows * d_, dy8.data());
    RoundThroughE4M3(ctx, kernels::ScaleFormat::kUe8m0, dy8.data(), rows, d_);
    dy = dy8.data();
  }
  // The SwiGLU output is recomputed rather than kept (spec §5.7).
  FloatBuffer a = Floats(rows * inter_);
  kernels::SwiGluForward(ctx, c->gu.data(), rows, inter_, a.data());
  FloatBuffer da = Floats(rows * inter_);
  GroupedLinearBackward(ctx, down_, a.data(), dy, rows_per_expert, rows, da.data());
  Free(&a);
  FloatBuffer dgu = Floats(rows * 2 * inter_);
  kernels::SwiGluBackward(ctx, c->gu.data(), da.data(), rows, inter_, dgu.data());
  Free(&da);
  GroupedLinearBackward(ctx, gate_up_, c->x.data(), dgu.data(), rows_per_expert, rows, dx);
}

namespace {

// Every expert of the layer, in this process.
class LocalExecutor : public ExpertExecutor {
 public:
  explicit LocalExecutor(LocalExperts experts) : experts_(std::move(experts)) {}
  struct LocalCache : Cache {
    LocalExperts::Cache c;
  };
  absl::Status Forward(const CpuContext& ctx, FloatBuffer u_perm, const int64_t* rows_per_expert,
                       int64_t rows, float* eo, std::unique_ptr<Cache>* cache) override {
    auto c = std::make_unique<LocalCache>();
    experts_.Forward(ctx, std::move(u_perm), rows_per_expert, rows, eo, &c->c);
    *cache = std::move(c);
    return absl::OkStatus();
  }
  absl::Status Backward(const CpuContext& ctx, const float* d_eo, const int64_t* rows_per_expert,
                        int64_t rows, Cache* cache, float* du_perm) override {
    experts_.Backward(ctx, d_eo, rows_per_expert, rows, &static_cast<LocalCache*>(cache)->c,
                      du_perm);
    return absl::OkStatus();
  }

 private:
  LocalExperts experts_;
};

}  // namespace

Moe::Moe(const ModelConfig& c, ParameterSet* params, const std::string& prefix, GemmMode mode)
    : d_(c.hidden_size), inter_(c.moe_intermediate_size), top_k_(c.num_experts_per_tok) {
  router_.n_experts = c.n_routed_experts;
  router_.n_groups = c.n_group;
  router_.topk_groups = c.topk_group;
  router_.top_k = c.num_experts_per_tok;
  router_.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
  gate_w_ = params->value(prefix + "gate.weight");
  gate_dw_ = params->grad(prefix + "gate.weight");
  bias_ = params->value(prefix + "gate.e_score_correction_bias");
  local_ = std::make_shared<LocalExecutor>(
      LocalExperts(c, params, prefix, mode, 0, c.n_routed_experts));
  executor_ = local_;
  if (c.n_shared_experts > 0) {
    shared_.emplace(params, prefix + "shared_experts.", d_, c.n_shared_experts * inter_, mode);
  }
}

void Moe::set_executor(std::shared_ptr<ExpertExecutor> executor) {
  executor_ = executor != nullptr ? std::move(executor) : local_;
}

kernels::BalanceLossConfig Moe::Balance(const SeqShape& shape, const MoeRunOptions& o) const {
  kernels::BalanceLossConfig b;
  b.n_experts = router_.n_experts;
  b.top_k = top_k_;
  b.rows = shape.rows;
  b.seq_len = shape.seq;
  b.alpha = o.alpha;
  b.mean_over_rows = o.normalizer_rows;
  b.grad_scale = 1.0;
  return b;
}

absl::StatusOr<double> Moe::Forward(const CpuContext& ctx, const SeqShape& shape, const float* u,
                                    float* y, Cache* c, const MoeRunOptions& o,
                                    bool recompute) const {
  const int64_t n = shape.tokens();
  const int64_t e = router_.n_experts;
  // Router: FP32 GEMM, then selection and gate weights.
  c->logits = Floats(n * e);
  kernels::GemmFpropFp32(ctx, {}, u, gate_w_, n, e, d_, c->logits.data());
  c->ids.assign(static_cast<size_t>(n * top_k_), 0);
  c->weights = Floats(n * top_k_);
  kernels::RouterForward(ctx, router_, c->logits.data(), bias_, n, c->ids.data(),
                         c->weights.data(), o.load);
  if (o.experts_out != nullptr) std::copy(c->ids.begin(), c->ids.end(), o.experts_out);
  const double balance =
      kernels::SequenceBalanceLoss(ctx, Balance(shape, o), c->logits.data(), nullptr);

  // Dispatch: tokens sorted by expert.
  c->offsets.assign(static_cast<size_t>(e + 1), 0);
  c->row_token.assign(static_cast<size_t>(n * top_k_), 0);
  c->slot_row.assign(static_cast<size_t>(n * top_k_), 0);
  const int64_t rows = kernels::BuildDispatchMaps(ctx, c->ids.data(), n, top_k_, e,
                                                  c->offsets.data(), c->row_token.data(),
                                                  c->slot_row.data());
  c->rows_per_expert.resize(static_cast<size_t>(e));
  for (int64_t j = 0; j < e; ++j) c->rows_per_expert[j] = c->offsets[j + 1] - c->offsets[j];
  FloatBuffer u_perm = Floats(rows * d_);
  kernels::PermuteForward(ctx, u, n, d_, c->row_token.data(), rows, u_perm.data());

  // Routed experts (here, or on their expert-parallel ranks).
  c->eo = Floats(rows * d_);
  if (absl::Status s = executor_->Forward(ctx, std::move(u_perm), c->rows_per_expert.data(), rows,
                                         c->eo.data(), &c->experts);
      !s.ok()) {
    return s;
  }

  // Combine with the gate weights, then the shared experts.
  kernels::UnpermuteForward(ctx, c->eo.data(), rows, c->weights.data(), c->slot_row.data(), n,
                            top_k_, d_, y);
  if (shared_) {
    FloatBuffer ys = Floats(n * d_);
    shared_->Forward(ctx, u, n, ys.data(), &c->shared, recompute);
    AddInto(ctx, ys.data(), n * d_, y);
  }
  return balance;
}

absl::Status Moe::Backward(const CpuContext& ctx, const SeqShape& shape, const float* u, Cache* c,
                           const float* dy, const MoeRunOptions& o, float* du) const {
  const int64_t n = shape.tokens();
  const int64_t e = router_.n_experts;
  const int64_t rows = c->offsets[e];
  if (shared_) {
    shared_->Backward(ctx, u, &c->shared, dy, n, du, /*accumulate_du=*/false);
  } else {
    std::fill(du, du + n * d_, 0.0f);
  }

  FloatBuffer d_eo = Floats(rows * d_);
  FloatBuffer dw = Floats(n * top_k_);
  kernels::UnpermuteBackward(ctx, dy, c->eo.data(), rows, c->weights.data(), c->slot_row.data(),
                             n, top_k_, d_, d_eo.data(), dw.data());
  FloatBuffer du_perm = Floats(rows * d_);
  if (absl::Status s = executor_->Backward(ctx, d_eo.data(), c->rows_per_expert.data(), rows,
                                          c->experts.get(), du_perm.data());
      !s.ok()) {
    return s;
  }
  Free(&d_eo);
  c->experts.reset();
  FloatBuffer du_routed = Floats(n * d_);
  kernels::PermuteBackward(ctx, du_perm.data(), rows, c->slot_row.data(), n, top_k_, d_,
                           du_routed.data());
  AddInto(ctx, du_routed.data(), n * d_, du);

  // Router: gate weights and the balance loss, then the FP32 router GEMM's gradients.
  FloatBuffer dlogits = Floats(n * e);
  kernels::RouterBackward(ctx, router_, c->logits.data(), c->ids.data(), dw.data(), n,
                          dlogits.data());
  kernels::SequenceBalanceLoss(ctx, Balance(shape, o), c->logits.data(), dlogits.data());
  kernels::GemmWgradFp32(ctx, {.accumulate = true}, dlogits.data(), u, n, e, d_, gate_dw_);
  kernels::GemmDgradFp32(ctx, {.accumulate = true}, dlogits.data(), gate_w_, n, e, d_, du);
  return absl::OkStatus();
}

}  // namespace dsv3::model
