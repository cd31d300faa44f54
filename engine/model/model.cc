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

  absl::StatusOr<LossTerms> Run(const TokenRows& batch, const RunOptions& opts);
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

absl::StatusOr<LossTerms> Model::Run(const TokenRows& batch, const RunOptions& options) {
  return impl_->Run(batch, options);
}

absl::StatusOr<LossTerms> Model::Impl::Run(const TokenRows& batch, const RunOptions& opts) {
  const ModelConfig& c = config;
  const bool has_mtp = mtp.has_value();
  const int64_t b = batch.rows;
  const int64_t t = batch.seq_len;
  if (batch.tokens == nullptr || b < 1 || t < 1 || (has_mtp && t < 2)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "token batch [%d, %d]: need at least 1 row and %d columns (T+1 with T >= %d%s)", b, t + 1,
        has_mtp ? 3 : 2, has_mtp ? 2 : 1, has_mtp ? " with MTP" : ""));
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
  const int64_t d = c.hidden_size;
  const int64_t v = c.vocab_size;
  const int64_t n = b * t;
  const int64_t k = c.num_experts_per_tok;
  const int64_t e = c.n_routed_experts;
  const double lambda = options.mtp_loss_weight;
  const bool recompute = options.recompute;
  const bool backward = opts.backward;

  // Token ids and targets, RoPE table and positions.
  std::vector<int32_t> inputs(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
  std::vector<int32_t> positions(static_cast<size_t>(n));
  for (int64_t r = 0; r < b; ++r) {
    for (int64_t i = 0; i < t; ++i) {
      inputs[r * t + i] = batch.tokens[r * row_len + i];
      targets[r * t + i] = batch.tokens[r * row_len + i + 1];
      positions[r * t + i] = static_cast<int32_t>(i);
    }
  }
  const int64_t half = c.qk_rope_head_dim / 2;
  FloatBuffer cos = Floats(t * half), sin = Floats(t * half);
  kernels::BuildRopeTable(ctx, theta.data(), half, t, cos.data(), sin.data());
  const RopeInputs rope{{cos.data(), sin.data(), t, half}, positions.data(), softmax_scale};

  auto moe_options = [&](size_t moe_index, int32_t* experts_out) {
    MoeRunOptions m;
    m.normalizer_rows = nr;
    m.alpha = options.seq_aux_loss_alpha;
    m.load = opts.count_loads ? loads.data() + moe_index * e : nullptr;
    m.experts_out = experts_out;
    return m;
  };

  // ---- Forward: embedding and main blocks ----
  const float* embed = params.value("model.embed_tokens.weight");
  float* d_embed = params.grad("model.embed_tokens.weight");
  const SeqShape shape{b, t};
  std::vector<FloatBuffer> xs(layers.size() + 1);  // xs[i]: input of layer i
  xs[0] = Floats(n * d);
  kernels::EmbeddingForward(ctx, embed, v, d, inputs.data(), n, xs[0].data());
  std::vector<DecoderLayer::Cache> caches(layers.size());
  std::vector<MoeRunOptions> layer_moe(layers.size());
  LossTerms out;
  size_t moe_index = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].is_moe()) {
      int32_t* ex = opts.experts != nullptr ? opts.experts + moe_index * n * k : nullptr;
      layer_moe[i] = moe_options(moe_index, ex);
      ++moe_index;
    }
    xs[i + 1] = Floats(n * d);
    absl::StatusOr<double> balance = layers[i].Forward(ctx, shape, rope, xs[i].data(),
                                                       xs[i + 1].data(), &caches[i], layer_moe[i],
                                                       recompute);
    if (!balance.ok()) return balance.status();
    out.balance_loss += *balance;
  }
  const FloatBuffer& h_last = xs.back();

  // ---- Head and main loss ----
  const NormRef final_norm = Norm("model.norm.weight");
  FloatBuffer hn = Floats(n * d);
  kernels::RmsNormForward(ctx, {n, d, 0, 0}, h_last.data(), final_norm.g, final_norm.eps,
                          hn.data(), nullptr);
  const LinearRef head = Head();
  FloatBuffer logits = Floats(n * v);
  LinearForward(ctx, head, hn.data(), n, logits.data());
  if (opts.logits != nullptr) std::memcpy(opts.logits, logits.data(), n * v * sizeof(float));
  kernels::CrossEntropyOptions ce;
  ce.count = nr * t;
  ce.grad_scale = 1.0;
  out.main_loss = kernels::CrossEntropyForwardBackward(ctx, logits.data(), targets.data(), n, v,
                                                       ce, backward ? logits.data() : nullptr);

  // ---- MTP (depth 1, spec §11.2) ----
  const int64_t tm = t - 1;
  const int64_t nm = b * tm;
  const SeqShape mshape{b, tm};
  const std::string mp = absl::StrCat("model.layers.", c.num_hidden_layers, ".");
  std::vector<int32_t> next_ids, mtp_targets, mtp_positions;
  FloatBuffer emb_next, h_prev, cat, xm0, xm1, hm, mlogits;
  DecoderLayer::Cache mcache;
  MoeRunOptions mtp_moe;
  RopeInputs mrope = rope;
  if (has_mtp) {
    next_ids.resize(static_cast<size_t>(nm));
    mtp_targets.resize(static_cast<size_t>(nm));
    mtp_positions.resize(static_cast<size_t>(nm));
    h_prev = Floats(nm * d);
    for (int64_t r = 0; r < b; ++r) {
      for (int64_t i = 0; i < tm; ++i) {
        next_ids[r * tm + i] = batch.tokens[r * row_len + i + 1];
        mtp_targets[r * tm + i] = batch.tokens[r * row_len + i + 2];
        mtp_positions[r * tm + i] = static_cast<int32_t>(i);
      }
      std::memcpy(h_prev.data() + r * tm * d, h_last.data() + r * t * d, tm * d * sizeof(float));
    }
    mrope.positions = mtp_positions.data();
    emb_next = Floats(nm * d);
    kernels::EmbeddingForward(ctx, embed, v, d, next_ids.data(), nm, emb_next.data());
    // [enorm(Emb(t_{i+1})) ; hnorm(h_i)], embedding first.
    cat = Floats(nm * 2 * d);
    const NormRef enorm = Norm(mp + "enorm.weight");
    const NormRef hnorm = Norm(mp + "hnorm.weight");
    kernels::RmsNormForward(ctx, {nm, d, d, 2 * d}, emb_next.data(), enorm.g, enorm.eps,
                            cat.data(), nullptr);
    kernels::RmsNormForward(ctx, {nm, d, d, 2 * d}, h_prev.data(), hnorm.g, hnorm.eps,
                            cat.data() + d, nullptr);
    const LinearRef eh{params.value(mp + "eh_proj.weight"), params.grad(mp + "eh_proj.weight"), d,
                       2 * d, block_mode};
    xm0 = Floats(nm * d);
    LinearForward(ctx, eh, cat.data(), nm, xm0.data());
    std::vector<int32_t> mtp_experts;
    if (mtp->is_moe()) {
      if (opts.experts != nullptr) mtp_experts.resize(static_cast<size_t>(nm * k));
      mtp_moe = moe_options(moe_index, opts.experts != nullptr ? mtp_experts.data() : nullptr);
    }
    xm1 = Floats(nm * d);
    absl::StatusOr<double> balance =
        mtp->Forward(ctx, mshape, mrope, xm0.data(), xm1.data(), &mcache, mtp_moe, recompute);
    if (!balance.ok()) return balance.status();
    out.balance_loss += *balance;
    if (mtp->is_moe() && opts.experts != nullptr) {
      int32_t* dst = opts.experts + moe_index * n * k;
      for (int64_t r = 0; r < b; ++r) {
        std::memcpy(dst + r * t * k, mtp_experts.data() + r * tm * k, tm * k * sizeof(int32_t));
        std::fill(dst + (r * t + tm) * k, dst + (r * t + t) * k, -1);
      }
    }
    const NormRef shn = Norm(mp + "shared_head.norm.weight");
    hm = Floats(nm * d);
    kernels::RmsNormForward(ctx, {nm, d, 0, 0}, xm1.data(), shn.g, shn.eps, hm.data(), nullptr);
    mlogits = Floats(nm * v);
    LinearForward(ctx, head, hm.data(), nm, mlogits.data());
    if (opts.mtp_logits != nullptr) {
      std::memcpy(opts.mtp_logits, mlogits.data(), nm * v * sizeof(float));
    }
    kernels::CrossEntropyOptions mce;
    mce.count = nr * tm;
    mce.grad_scale = lambda;
    out.mtp_loss = kernels::CrossEntropyForwardBackward(
        ctx, mlogits.data(), mtp_targets.data(), nm, v, mce, backward ? mlogits.data() : nullptr);
  }
  out.loss = out.main_loss + lambda * out.mtp_loss + out.balance_loss;
  if (!backward) return out;

  // ---- Backward: MTP, head, blocks in reverse, embedding ----
  FloatBuffer d_hlast = Zeros(n * d);  // MTP fills rows 0..T-2 of each sequence, not T-1
  if (has_mtp) {
    const NormRef shn = Norm(mp + "shared_head.norm.weight");
    FloatBuffer d_hm = Floats(nm * d);
    LinearBackward(ctx, head, hm.data(), mlogits.data(), nm, d_hm.data(), false);
    FloatBuffer().swap(mlogits);
    FloatBuffer d_xm1 = Floats(nm * d);
    kernels::RmsNormBackward(ctx, {nm, d, 0, 0}, xm1.data(), shn.g, nullptr, d_hm.data(), shn.eps,
                             d_xm1.data(), shn.dg);
    FloatBuffer d_xm0 = Floats(nm * d);
    if (absl::Status s = mtp->Backward(ctx, mshape, mrope, xm0.data(), &mcache, d_xm1.data(),
                                       mtp_moe, d_xm0.data());
        !s.ok()) {
      return s;
    }
    const LinearRef eh{params.value(mp + "eh_proj.weight"), params.grad(mp + "eh_proj.weight"), d,
                       2 * d, block_mode};
    FloatBuffer d_cat = Floats(nm * 2 * d);
    LinearBackward(ctx, eh, cat.data(), d_xm0.data(), nm, d_cat.data(), false);
    const NormRef enorm = Norm(mp + "enorm.weight");
    const NormRef hnorm = Norm(mp + "hnorm.weight");
    FloatBuffer d_emb = Floats(nm * d);
    kernels::RmsNormBackward(ctx, {nm, d, d, 2 * d}, emb_next.data(), enorm.g, nullptr,
                             d_cat.data(), enorm.eps, d_emb.data(), enorm.dg);
    kernels::EmbeddingBackward(ctx, d_emb.data(), next_ids.data(), nm, v, d, d_embed);
    FloatBuffer d_hprev = Floats(nm * d);
    kernels::RmsNormBackward(ctx, {nm, d, d, 2 * d}, h_prev.data(), hnorm.g, nullptr,
                             d_cat.data() + d, hnorm.eps, d_hprev.data(), hnorm.dg);
    for (int64_t r = 0; r < b; ++r) {
      std::memcpy(d_hlast.data() + r * t * d, d_hprev.data() + r * tm * d,
                  tm * d * sizeof(float));
    }
  }
  {
    FloatBuffer d_hn = Floats(n * d);
    LinearBackward(ctx, head, hn.data(), logits.data(), n, d_hn.data(), false);
    FloatBuffer().swap(logits);
    FloatBuffer d_h = Floats(n * d);
    kernels::RmsNormBackward(ctx, {n, d, 0, 0}, h_last.data(), final_norm.g, nullptr,
                             d_hn.data(), final_norm.eps, d_h.data(), final_norm.dg);
    AddInto(ctx, d_h.data(), n * d, d_hlast.data());
  }
  FloatBuffer grad = std::move(d_hlast);
  FloatBuffer grad_in = Floats(n * d);
  for (size_t i = layers.size(); i-- > 0;) {
    if (absl::Status s = layers[i].Backward(ctx, shape, rope, xs[i].data(), &caches[i],
                                            grad.data(), layer_moe[i], grad_in.data());
        !s.ok()) {
      return s;
    }
    caches[i] = DecoderLayer::Cache();  // release this layer's activations
    std::swap(grad, grad_in);
  }
  kernels::EmbeddingBackward(ctx, grad.data(), inputs.data(), n, v, d, d_embed);
  return out;
}

}  // namespace dsv3::model
