// The whole model: embedding, main blocks, final norm and head, the MTP module and the loss of
// spec §11 (see model.h). The blocks live in decoder_layer.cc, mla.cc and ffn.cc.
#include "engine/model/model.h"

#include <malloc.h>

#include <cmath>
#include <cstring>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/decoder_layer.h"
#include "engine/model/layer_common.h"
#include "engine/model/linear.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/router.h"

namespace dsv3::model {

std::string_view PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp8:
      return "fp8";
  }
  return "?";
}

absl::StatusOr<Precision> ParsePrecision(std::string_view name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  if (name == "fp8") return Precision::kFp8;
  return absl::InvalidArgumentError(
      absl::StrCat("precision \"", std::string(name), "\" must be fp32, bf16 or fp8"));
}

namespace {

using kernels::CpuContext;

absl::Status CheckConfig(const ModelConfig& c) {
  auto positive = [](const char* name, int64_t v) -> absl::Status {
    if (v >= 1) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("model.", name, "=", v, " must be >= 1"));
  };
  for (auto [name, v] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size},
                         {"hidden_size", c.hidden_size},
                         {"num_hidden_layers", c.num_hidden_layers},
                         {"num_attention_heads", c.num_attention_heads},
                         {"kv_lora_rank", c.kv_lora_rank},
                         {"qk_nope_head_dim", c.qk_nope_head_dim},
                         {"qk_rope_head_dim", c.qk_rope_head_dim},
                         {"v_head_dim", c.v_head_dim}}) {
    if (absl::Status s = positive(name, v); !s.ok()) return s;
  }
  if (c.qk_rope_head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.qk_rope_head_dim=", c.qk_rope_head_dim, " must be even"));
  }
  if (c.q_lora_rank < 0 || c.first_k_dense_replace < 0 || c.n_shared_experts < 0) {
    return absl::InvalidArgumentError(
        "model.q_lora_rank, first_k_dense_replace and n_shared_experts must be >= 0");
  }
  if (c.num_nextn_predict_layers < 0 || c.num_nextn_predict_layers > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.num_nextn_predict_layers=", c.num_nextn_predict_layers,
        " is not supported: the model implements MTP depth 0 or 1 (DeepSeek-V3 uses 1)"));
  }
  const bool any_dense = c.first_k_dense_replace > 0 || c.n_routed_experts == 0;
  if (any_dense && c.intermediate_size < 1) {
    return absl::InvalidArgumentError("model.intermediate_size must be >= 1 for dense layers");
  }
  const bool any_moe = c.n_routed_experts > 0 &&
                       (c.first_k_dense_replace < c.num_hidden_layers ||
                        c.num_nextn_predict_layers > 0);
  if (any_moe) {
    if (c.moe_intermediate_size < 1 || c.num_experts_per_tok < 1 || c.n_group < 1 ||
        c.topk_group < 1) {
      return absl::InvalidArgumentError(
          "model.moe_intermediate_size, num_experts_per_tok, n_group, topk_group must be >= 1");
    }
    if (c.n_routed_experts % c.n_group != 0) {
      return absl::InvalidArgumentError(absl::StrCat("model.n_group=", c.n_group,
                                                     " does not divide n_routed_experts=",
                                                     c.n_routed_experts));
    }
    if (c.topk_group > c.n_group) {
      return absl::InvalidArgumentError(absl::StrCat("model.topk_group=", c.topk_group,
                                                     " exceeds n_group=", c.n_group));
    }
    const int64_t reachable = c.topk_group * (c.n_routed_experts / c.n_group);
    if (c.num_experts_per_tok > reachable) {
      return absl::InvalidArgumentError(absl::StrCat("model.num_experts_per_tok=",
                                                     c.num_experts_per_tok,
                                                     " exceeds topk_group x group size = ",
                                                     reachable));
    }
    if (!(c.routed_scaling_factor > 0)) {
      return absl::InvalidArgumentError("model.routed_scaling_factor must be > 0");
    }
  }
  if (!(c.rms_norm_eps > 0) || !(c.rope_theta > 0)) {
    return absl::InvalidArgumentError("model.rms_norm_eps and model.rope_theta must be > 0");
  }
  return absl::OkStatus();
}

// A training step allocates and frees hundreds of MB of activations. glibc serves large blocks
// with mmap and returns them on free, so every step would page-fault all of them in again
// (measured: ~40% of a brown-tiny step). Keep them on the heap and keep the heap: a process-wide
// allocator setting, made once by the first model of the process.
void KeepActivationMemory() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  });
}

}  // namespace

struct Model::Impl {
  ModelConfig config;
  ModelOptions options;
  CpuContext ctx;
  ParameterSet params;
  std::vector<DecoderLayer> layers;  // main layers
  std::optional<DecoderLayer> mtp;   // the MTP module's block (layer index num_hidden_layers)
  std::vector<Moe*> moes;            // MoE layers, main then MTP
  std::vector<int64_t> moe_of_layer; // main layer -> index in moes (-1: dense)
  std::vector<int64_t> loads;        // [moes, E]
  std::vector<double> theta;         // RoPE frequencies [d_rope / 2]
  float softmax_scale = 0;
  GemmMode block_mode = GemmMode::kFp32;
  GemmMode head_mode = GemmMode::kFp32;

  Impl(const ModelConfig& c, const ModelOptions& o, kernels::ThreadPool* pool)
      : config(c), options(o), ctx{pool, true}, params(ParameterLayout::Build(c)) {}

  LinearRef Head() {
    return LinearRef{params.value("lm_head.weight"), params.grad("lm_head.weight"),
                     config.vocab_size, config.hidden_size, head_mode};
  }
  NormRef Norm(const std::string& name) {
    return NormRef{params.value(name), params.grad(name), config.hidden_size,
                   static_cast<float>(config.rms_norm_eps)};
  }

  struct Saved;
  absl::StatusOr<LossTerms> Forward(const StageSpan& span, const TokenRows& batch,
                                    const float* input, float* output, const RunOptions& opts,
                                    std::unique_ptr<StageActivations>* saved);
  absl::Status Backward(StageActivations* saved, const float* d_output, float* d_input);
};

absl::StatusOr<std::unique_ptr<Model>> Model::Create(const ModelConfig& config,
                                                     const ModelOptions& options,
                                                     kernels::ThreadPool* pool) {
  if (absl::Status s = CheckConfig(config); !s.ok()) return s;
  KeepActivationMemory();
  auto impl = std::make_unique<Impl>(config, options, pool);
  Impl& m = *impl;
  switch (options.precision) {
    case Precision::kFp32:
      break;
    case Precision::kBf16:
      m.block_mode = GemmMode::kBf16;
      m.head_mode = GemmMode::kBf16;
      break;
    case Precision::kFp8:
      m.block_mode = GemmMode::kFp8;
      break;
  }
  m.layers.reserve(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    m.layers.emplace_back(config, &m.params, i, m.block_mode);
  }
  for (DecoderLayer& layer : m.layers) {
    m.moe_of_layer.push_back(layer.is_moe() ? static_cast<int64_t>(m.moes.size()) : -1);
    if (layer.is_moe()) m.moes.push_back(layer.mutable_moe());
  }
  if (config.num_nextn_predict_layers > 0) {
    m.mtp.emplace(config, &m.params, config.num_hidden_layers, m.block_mode);
    if (m.mtp->is_moe()) m.moes.push_back(m.mtp->mutable_moe());
  }
  m.loads.assign(m.moes.size() * static_cast<size_t>(config.n_routed_experts), 0);

  const int64_t dr = config.qk_rope_head_dim;
  m.theta.resize(static_cast<size_t>(dr / 2));
  double scale = 1.0 / std::sqrt(static_cast<double>(config.qk_head_dim()));
  if (config.has_yarn()) {
    kernels::YarnScaling yarn;
    yarn.factor = config.rope_scaling_factor;
    yarn.original_max_position_embeddings = config.rope_original_max_position_embeddings;
    yarn.beta_fast = config.rope_beta_fast;
    yarn.beta_slow = config.rope_beta_slow;
    kernels::YarnRopeFrequencies(dr, config.rope_theta, yarn, m.theta.data());
    const double mscale = kernels::YarnMscale(config.rope_scaling_factor, config.rope_mscale);
    scale *= mscale * mscale;
  } else {
    kernels::RopeFrequencies(dr, config.rope_theta, m.theta.data());
  }
  m.softmax_scale = static_cast<float>(scale);
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

const ModelConfig& Model::config() const { return impl_->config; }
const ModelOptions& Model::options() const { return impl_->options; }
const kernels::CpuContext& Model::context() const { return impl_->ctx; }
ParameterSet& Model::parameters() { return impl_->params; }
const ParameterSet& Model::parameters() const { return impl_->params; }
int64_t Model::num_moe_layers() const { return static_cast<int64_t>(impl_->moes.size()); }
std::vector<int64_t>& Model::expert_loads() { return impl_->loads; }
void Model::ResetExpertLoads() { std::fill(impl_->loads.begin(), impl_->loads.end(), 0); }

void Model::ApplyBiasUpdate(float gamma) {
  const int64_t e = impl_->config.n_routed_experts;
  for (size_t m = 0; m < impl_->moes.size(); ++m) {
    kernels::UpdateRouterBias(impl_->ctx, impl_->loads.data() + m * e, e, gamma,
                              impl_->moes[m]->bias());
  }
  ResetExpertLoads();
}

void Model::SetExpertExecutor(int64_t moe_layer, std::shared_ptr<ExpertExecutor> executor) {
  impl_->moes[static_cast<size_t>(moe_layer)]->set_executor(std::move(executor));
}

absl::StatusOr<StageSpan> PipelineStage(const ModelConfig& config, int num_stages, int stage) {
  if (num_stages < 1 || stage < 0 || stage >= num_stages) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pipeline stage %d of %d: need 0 <= stage < stages", stage, num_stages));
  }
  const int64_t layers = config.num_hidden_layers;
  StageSpan span;
  span.first_layer = layers * stage / num_stages;
  span.end_layer = layers * (stage + 1) / num_stages;
  span.first = stage == 0;
  span.last = stage == num_stages - 1;
  return span;
}

// Everything a stage's forward keeps for its backward.
struct Model::Impl::Saved : StageActivations {
  StageSpan span;
  int64_t b = 0, t = 0, nr = 0;
  RunOptions opts;
  std::vector<int32_t> inputs, targets, positions;
  FloatBuffer cos, sin;
  RopeInputs rope;
  std::vector<FloatBuffer> xs;  // xs[j]: input of main layer first_layer + j; back(): output
  std::vector<DecoderLayer::Cache> caches;
  std::vector<MoeRunOptions> layer_moe;
  // Last stage: the final norm's output and the main head's logits (their gradient after the
  // fused cross-entropy).
  FloatBuffer hn, logits;
  // Last stage with MTP.
  std::vector<int32_t> next_ids, mtp_targets, mtp_positions;
  FloatBuffer emb_next, h_prev, cat, xm0, xm1, hm, mlogits;
  DecoderLayer::Cache mcache;
  MoeRunOptions mtp_moe;
  RopeInputs mrope;
  bool consumed = false;  // the backward ran
};

absl::StatusOr<LossTerms> Model::Run(const TokenRows& batch, const RunOptions& options) {
  StageSpan whole;
  whole.first_layer = 0;
  whole.end_layer = impl_->config.num_hidden_layers;
  whole.first = whole.last = true;
  std::unique_ptr<StageActivations> saved;
  absl::StatusOr<LossTerms> loss = impl_->Forward(whole, batch, nullptr, nullptr, options, &saved);
  if (!loss.ok() || !options.backward) return loss;
  if (absl::Status s = impl_->Backward(saved.get(), nullptr, nullptr); !s.ok()) return s;
  return loss;
}

absl::StatusOr<LossTerms> Model::ForwardStage(const StageSpan& span, const TokenRows& batch,
                                              const float* input, float* output,
                                              const RunOptions& options,
                                              std::unique_ptr<StageActivations>* saved) {
  return impl_->Forward(span, batch, input, output, options, saved);
}

absl::Status Model::BackwardStage(StageActivations* saved, const float* d_output,
                                  float* d_input) {
  return impl_->Backward(saved, d_output, d_input);
}

absl::StatusOr<LossTerms> Model::Impl::Forward(const StageSpan& span, const TokenRows& batch,
                                               const float* input, float* output,
                                               const RunOptions& opts,
                                               std::unique_ptr<StageActivations>* saved_out) {
  saved_out->reset();
  const ModelConfig& c = config;
  const bool has_mtp = mtp.has_value();
  const int64_t b = batch.rows;
  const int64_t t = batch.seq_len;
  if (batch.tokens == nullptr || b < 1 || t < 1 || (has_mtp && t < 2)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "token batch [%d, %d]: need at least 1 row and %d columns (T+1 with T >= %d%s)", b, t + 1,
        has_mtp ? 3 : 2, has_mtp ? 2 : 1, has_mtp ? " with MTP" : ""));
  }
  if (span.first_layer < 0 || span.end_layer < span.first_layer ||
      span.end_layer > c.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "stage layers [%d, %d) are not within the model's %d layers", span.first_layer,
        span.end_layer, c.num_hidden_layers));
  }
  const int64_t d = c.hidden_size;
  const int64_t n = b * t;
  if ((!span.first && input == nullptr) || (!span.last && output == nullptr)) {
    return absl::InvalidArgumentError("a stage that is not first needs an input, one that is "
                                      "not last an output");
  }
  const int64_t nr = opts.normalizer_rows == 0 ? b : opts.normalizer_rows;
  if (nr < b) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "normalizer_rows=%d is smaller than the batch's %d rows", opts.normalizer_rows, b));
  }
  const int64_t row_len = t + 1;
  for (int64_t i = 0; i < b * row_len; ++i) {
    const int32_t id = batch.tokens[i];
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("token id %d at row %d, column %d is outside [0, vocab_size=%d)", id,
                          i / row_len, i % row_len, c.vocab_size));
    }
  }
  const int64_t v = c.vocab_size;
  const int64_t k = c.num_experts_per_tok;
  const int64_t e = c.n_routed_experts;
  const double lambda = options.mtp_loss_weight;
  const bool recompute = options.recompute;
  const bool backward = opts.backward;

  auto owned = std::make_unique<Saved>();
  Saved& sv = *owned;
  sv.span = span;
  sv.b = b;
  sv.t = t;
  sv.nr = nr;
  sv.opts = opts;

  // Token ids and targets, RoPE table and positions.
  sv.inputs.resize(static_cast<size_t>(n));
  sv.targets.resize(static_cast<size_t>(n));
  sv.positions.resize(static_cast<size_t>(n));
  for (int64_t r = 0; r < b; ++r) {
    for (int64_t i = 0; i < t; ++i) {
      sv.inputs[r * t + i] = batch.tokens[r * row_len + i];
      sv.targets[r * t + i] = batch.tokens[r * row_len + i + 1];
      sv.positions[r * t + i] = static_cast<int32_t>(i);
    }
  }
  const int64_t half = c.qk_rope_head_dim / 2;
  sv.cos = Floats(t * half);
  sv.sin = Floats(t * half);
  kernels::BuildRopeTable(ctx, theta.data(), half, t, sv.cos.data(), sv.sin.data());
  sv.rope = RopeInputs{{sv.cos.data(), sv.sin.data(), t, half}, sv.positions.data(), softmax_scale};

  auto moe_options = [&](int64_t moe, int32_t* experts_out) {
    MoeRunOptions m;
    m.normalizer_rows = nr;
    m.alpha = options.seq_aux_loss_alpha;
    m.load = opts.count_loads ? loads.data() + moe * e : nullptr;
    m.experts_out = experts_out;
    return m;
  };

  // ---- Forward: embedding (first stage) and this stage's main blocks ----
  const float* embed = params.value("model.embed_tokens.weight");
  const SeqShape shape{b, t};
  const size_t count = static_cast<size_t>(span.end_layer - span.first_layer);
  sv.xs.resize(count + 1);
  sv.xs[0] = Floats(n * d);
  if (span.first) {
    kernels::EmbeddingForward(ctx, embed, v, d, sv.inputs.data(), n, sv.xs[0].data());
  } else {
    std::memcpy(sv.xs[0].data(), input, n * d * sizeof(float));
  }
  sv.caches.resize(count);
  sv.layer_moe.resize(count);
  LossTerms out;
  for (size_t j = 0; j < count; ++j) {
    const size_t i = static_cast<size_t>(span.first_layer) + j;
    if (layers[i].is_moe()) {
      const int64_t moe = moe_of_layer[i];
      int32_t* ex = opts.experts != nullptr ? opts.experts + moe * n * k : nullptr;
      sv.layer_moe[j] = moe_options(moe, ex);
    }
    sv.xs[j + 1] = Floats(n * d);
    absl::StatusOr<double> balance =
        layers[i].Forward(ctx, shape, sv.rope, sv.xs[j].data(), sv.xs[j + 1].data(),
                          &sv.caches[j], sv.layer_moe[j], recompute);
    if (!balance.ok()) return balance.status();
    out.balance_loss += *balance;
  }
  if (!span.last) {
    out.loss = out.balance_loss;
    std::memcpy(output, sv.xs.back().data(), n * d * sizeof(float));
    if (backward) *saved_out = std::move(owned);
    return out;
  }
  const FloatBuffer& h_last = sv.xs.back();

  // ---- Head and main loss ----
  const NormRef final_norm = Norm("model.norm.weight");
  sv.hn = Floats(n * d);
  kernels::RmsNormForward(ctx, {n, d, 0, 0}, h_last.data(), final_norm.g, final_norm.eps,
                          sv.hn.data(), nullptr);
  const LinearRef head = Head();
  sv.logits = Floats(n * v);
  LinearForward(ctx, head, sv.hn.data(), n, sv.logits.data());
  if (opts.logits != nullptr) std::memcpy(opts.logits, sv.logits.data(), n * v * sizeof(float));
  kernels::CrossEntropyOptions ce;
  ce.count = nr * t;
  ce.grad_scale = 1.0;
  out.main_loss = kernels::CrossEntropyForwardBackward(
      ctx, sv.logits.data(), sv.targets.data(), n, v, ce, backward ? sv.logits.data() : nullptr);

  // ---- MTP (depth 1, spec §11.2) ----
  if (has_mtp) {
    const int64_t tm = t - 1;
    const int64_t nm = b * tm;
    const SeqShape mshape{b, tm};
    const std::string mp = absl::StrCat("model.layers.", c.num_hidden_layers, ".");
    sv.next_ids.resize(static_cast<size_t>(nm));
    sv.mtp_targets.resize(static_cast<size_t>(nm));
    sv.mtp_positions.resize(static_cast<size_t>(nm));
    sv.h_prev = Floats(nm * d);
    for (int64_t r = 0; r < b; ++r) {
      for (int64_t i = 0; i < tm; ++i) {
        sv.next_ids[r * tm + i] = batch.tokens[r * row_len + i + 1];
        sv.mtp_targets[r * tm + i] = batch.tokens[r * row_len + i + 2];
        sv.mtp_positions[r * tm + i] = static_cast<int32_t>(i);
      }
      std::memcpy(sv.h_prev.data() + r * tm * d, h_last.data() + r * t * d,
                  tm * d * sizeof(float));
    }
    sv.mrope = sv.rope;
    sv.mrope.positions = sv.mtp_positions.data();
    sv.emb_next = Floats(nm * d);
    kernels::EmbeddingForward(ctx, embed, v, d, sv.next_ids.data(), nm, sv.emb_next.data());
    // [enorm(Emb(t_{i+1})) ; hnorm(h_i)], embedding first.
    sv.cat = Floats(nm * 2 * d);
    const NormRef enorm = Norm(mp + "enorm.weight");
    const NormRef hnorm = Norm(mp + "hnorm.weight");
    kernels::RmsNormForward(ctx, {nm, d, d, 2 * d}, sv.emb_next.data(), enorm.g, enorm.eps,
                            sv.cat.data(), nullptr);
    kernels::RmsNormForward(ctx, {nm, d, d, 2 * d}, sv.h_prev.data(), hnorm.g, hnorm.eps,
                            sv.cat.data() + d, nullptr);
    const LinearRef eh{params.value(mp + "eh_proj.weight"), params.grad(mp + "eh_proj.weight"), d,
                       2 * d, block_mode};
    sv.xm0 = Floats(nm * d);
    LinearForward(ctx, eh, sv.cat.data(), nm, sv.xm0.data());
    std::vector<int32_t> mtp_experts;
    const int64_t mtp_moe_index = static_cast<int64_t>(moes.size()) - 1;
    if (mtp->is_moe()) {
      if (opts.experts != nullptr) mtp_experts.resize(static_cast<size_t>(nm * k));
      sv.mtp_moe =
          moe_options(mtp_moe_index, opts.experts != nullptr ? mtp_experts.data() : nullptr);
    }
    sv.xm1 = Floats(nm * d);
    absl::StatusOr<double> balance = mtp->Forward(ctx, mshape, sv.mrope, sv.xm0.data(),
                                                  sv.xm1.data(), &sv.mcache, sv.mtp_moe, recompute);
    if (!balance.ok()) return balance.status();
    out.balance_loss += *balance;
    if (mtp->is_moe() && opts.experts != nullptr) {
      int32_t* dst = opts.experts + mtp_moe_index * n * k;
      for (int64_t r = 0; r < b; ++r) {
        std::memcpy(dst + r * t * k, mtp_experts.data() + r * tm * k, tm * k * sizeof(int32_t));
        std::fill(dst + (r * t + tm) * k, dst + (r * t + t) * k, -1);
      }
    }
    const NormRef shn = Norm(mp + "shared_head.norm.weight");
    sv.hm = Floats(nm * d);
    kernels::RmsNormForward(ctx, {nm, d, 0, 0}, sv.xm1.data(), shn.g, shn.eps, sv.hm.data(),
                            nullptr);
    sv.mlogits = Floats(nm * v);
    LinearForward(ctx, head, sv.hm.data(), nm, sv.mlogits.data());
    if (opts.mtp_logits != nullptr) {
      std::memcpy(opts.mtp_logits, sv.mlogits.data(), nm * v * sizeof(float));
    }
    kernels::CrossEntropyOptions mce;
    mce.count = nr * tm;
    mce.grad_scale = lambda;
    out.mtp_loss = kernels::CrossEntropyForwardBackward(ctx, sv.mlogits.data(),
                                                        sv.mtp_targets.data(), nm, v, mce,
                                                        backward ? sv.mlogits.data() : nullptr);
  }
  out.loss = out.main_loss + lambda * out.mtp_loss + out.balance_loss;
  if (backward) *saved_out = std::move(owned);
  return out;
}

absl::Status Model::Impl::Backward(StageActivations* saved, const float* d_output,
                                   float* d_input) {
  if (saved == nullptr) {
    return absl::FailedPreconditionError("BackwardStage: no saved activations (the forward ran "
                                         "without backward, or this backward already ran)");
  }
  Saved& sv = static_cast<Saved&>(*saved);
  if (sv.consumed) {
    return absl::FailedPreconditionError("BackwardStage: these activations were already used");
  }
  const ModelConfig& c = config;
  const StageSpan& span = sv.span;
  if ((!span.last && d_output == nullptr) || (!span.first && d_input == nullptr)) {
    return absl::InvalidArgumentError("a stage that is not last needs d_output, one that is "
                                      "not first d_input");
  }
  const int64_t b = sv.b;
  const int64_t t = sv.t;
  const int64_t n = b * t;
  const int64_t d = c.hidden_size;
  const int64_t v = c.vocab_size;
  const SeqShape shape{b, t};
  float* d_embed = params.grad("model.embed_tokens.weight");

  // ---- Backward: MTP and head (last stage) ----
  FloatBuffer grad;
  if (span.last) {
    const FloatBuffer& h_last = sv.xs.back();
    const LinearRef head = Head();
    FloatBuffer d_hlast = Zeros(n * d);  // MTP fills rows 0..T-2 of each sequence, not T-1
    if (mtp.has_value()) {
      const int64_t tm = t - 1;
      const int64_t nm = b * tm;
      const SeqShape mshape{b, tm};
      const std::string mp = absl::StrCat("model.layers.", c.num_hidden_layers, ".");
      const NormRef shn = Norm(mp + "shared_head.norm.weight");
      FloatBuffer d_hm = Floats(nm * d);
      LinearBackward(ctx, head, sv.hm.data(), sv.mlogits.data(), nm, d_hm.data(), false);
      FreeBuffer(&sv.mlogits);
      FloatBuffer d_xm1 = Floats(nm * d);
      kernels::RmsNormBackward(ctx, {nm, d, 0, 0}, sv.xm1.data(), shn.g, nullptr, d_hm.data(),
                               shn.eps, d_xm1.data(), shn.dg);
      FloatBuffer d_xm0 = Floats(nm * d);
      if (absl::Status s = mtp->Backward(ctx, mshape, sv.mrope, sv.xm0.data(), &sv.mcache,
                                         d_xm1.data(), sv.mtp_moe, d_xm0.data());
          !s.ok()) {
        return s;
      }
      const LinearRef eh{params.value(mp + "eh_proj.weight"), params.grad(mp + "eh_proj.weight"),
                         d, 2 * d, block_mode};
      FloatBuffer d_cat = Floats(nm * 2 * d);
      LinearBackward(ctx, eh, sv.cat.data(), d_xm0.data(), nm, d_cat.data(), false);
      const NormRef enorm = Norm(mp + "enorm.weight");
      const NormRef hnorm = Norm(mp + "hnorm.weight");
      FloatBuffer d_emb = Floats(nm * d);
      kernels::RmsNormBackward(ctx, {nm, d, d, 2 * d}, sv.emb_next.data(), enorm.g, nullptr,
                               d_cat.data(), enorm.eps, d_emb.data(), enorm.dg);
      kernels::EmbeddingBackward(ctx, d_emb.data(), sv.next_ids.data(), nm, v, d, d_embed);
      FloatBuffer d_hprev = Floats(nm * d);
      kernels::RmsNormBackward(ctx, {nm, d, d, 2 * d}, sv.h_prev.data(), hnorm.g, nullptr,
                               d_cat.data() + d, hnorm.eps, d_hprev.data(), hnorm.dg);
      for (int64_t r = 0; r < b; ++r) {
        std::memcpy(d_hlast.data() + r * t * d, d_hprev.data() + r * tm * d,
                    tm * d * sizeof(float));
      }
    }
    {
      const NormRef final_norm = Norm("model.norm.weight");
      FloatBuffer d_hn = Floats(n * d);
      LinearBackward(ctx, head, sv.hn.data(), sv.logits.data(), n, d_hn.data(), false);
      FreeBuffer(&sv.logits);
      FloatBuffer d_h = Floats(n * d);
      kernels::RmsNormBackward(ctx, {n, d, 0, 0}, h_last.data(), final_norm.g, nullptr,
                               d_hn.data(), final_norm.eps, d_h.data(), final_norm.dg);
      AddInto(ctx, d_h.data(), n * d, d_hlast.data());
    }
    grad = std::move(d_hlast);
  } else {
    grad = Floats(n * d);
    std::memcpy(grad.data(), d_output, n * d * sizeof(float));
  }

  // ---- This stage's blocks in reverse, then the embedding (first stage) ----
  FloatBuffer grad_in = Floats(n * d);
  for (size_t j = sv.caches.size(); j-- > 0;) {
    const size_t i = static_cast<size_t>(span.first_layer) + j;
    if (absl::Status s = layers[i].Backward(ctx, shape, sv.rope, sv.xs[j].data(), &sv.caches[j],
                                            grad.data(), sv.layer_moe[j], grad_in.data());
        !s.ok()) {
      return s;
    }
    sv.caches[j] = DecoderLayer::Cache();  // release this layer's activations
    std::swap(grad, grad_in);
  }
  if (span.first) {
    kernels::EmbeddingBackward(ctx, grad.data(), sv.inputs.data(), n, v, d, d_embed);
  } else {
    std::memcpy(d_input, grad.data(), n * d * sizeof(float));
  }
  // Release everything else; a second backward of the same activations is an error.
  sv = Saved();
  sv.consumed = true;
  return absl::OkStatus();
}

}  // namespace dsv3::model
