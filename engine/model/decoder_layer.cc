// A transformer block's forward and backward (see decoder_layer.h).
#include "engine/model/decoder_layer.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/rmsnorm.h"

namespace dsv3::model {

DecoderLayer::DecoderLayer(const ModelConfig& c, ParameterSet* params, int64_t index,
                           GemmMode mode)
    : d_(c.hidden_size),
      attn_(c, params, absl::StrCat("model.layers.", index, "."), mode) {
  const std::string p = absl::StrCat("model.layers.", index, ".");
  const std::string norm = p + "post_attention_layernorm.weight";
  post_norm_ = NormRef{params->value(norm), params->grad(norm), d_,
                       static_cast<float>(c.rms_norm_eps)};
  if (c.is_moe_layer(index)) {
    moe_.emplace(c, params, p + "mlp.", mode);
  } else {
    dense_.emplace(params, p + "mlp.", d_, c.intermediate_size, mode);
  }
}

absl::StatusOr<double> DecoderLayer::Forward(const kernels::CpuContext& ctx, const SeqShape& shape,
                             const RopeInputs& rope, const float* x_in, float* x_out, Cache* c,
                             const MoeRunOptions& moe, bool recompute) const {
  const int64_t n = shape.tokens();
  c->x_mid = Floats(n * d_);
  attn_.Forward(ctx, shape, rope, x_in, c->x_mid.data(), &c->attn, recompute);
  AddInto(ctx, x_in, n * d_, c->x_mid.data());
  c->u = Floats(n * d_);
  kernels::RmsNormForward(ctx, {n, d_, 0, 0}, c->x_mid.data(), post_norm_.g, post_norm_.eps,
                          c->u.data(), nullptr);
  double balance = 0;
  if (moe_) {
    absl::StatusOr<double> b = moe_->Forward(ctx, shape, c->u.data(), x_out, &c->moe, moe,
                                             recompute);
    if (!b.ok()) return b.status();
    balance = *b;
  } else {
    dense_->Forward(ctx, c->u.data(), n, x_out, &c->dense, recompute);
  }
  AddInto(ctx, c->x_mid.data(), n * d_, x_out);
  // The MoE backward needs u for the router and shared experts; the dense one for gate|up. Under
  // recompute it is rebuilt from x_mid.
  if (recompute) FloatBuffer().swap(c->u);
  return balance;
}

absl::Status DecoderLayer::Backward(const kernels::CpuContext& ctx, const SeqShape& shape,
                            const RopeInputs& rope, const float* x_in, Cache* c,
                            const float* dx_out, const MoeRunOptions& moe, float* dx_in) const {
  const int64_t n = shape.tokens();
  if (c->u.empty()) {
    c->u = Floats(n * d_);
    kernels::RmsNormForward(ctx, {n, d_, 0, 0}, c->x_mid.data(), post_norm_.g, post_norm_.eps,
                            c->u.data(), nullptr);
  }
  FloatBuffer du = Floats(n * d_);
  if (moe_) {
    if (absl::Status s = moe_->Backward(ctx, shape, c->u.data(), &c->moe, dx_out, moe, du.data());
        !s.ok()) {
      return s;
    }
  } else {
    dense_->Backward(ctx, c->u.data(), &c->dense, dx_out, n, du.data(), false);
  }
  // d(x_mid) = dx_out + RMSNorm backward of du; it is also the attention's output gradient.
  FloatBuffer dmid = Floats(n * d_);
  kernels::RmsNormBackward(ctx, {n, d_, 0, 0}, c->x_mid.data(), post_norm_.g, nullptr, du.data(),
                           post_norm_.eps, dmid.data(), post_norm_.dg);
  AddInto(ctx, dx_out, n * d_, dmid.data());
  std::memcpy(dx_in, dmid.data(), n * d_ * sizeof(float));
  attn_.Backward(ctx, shape, rope, x_in, &c->attn, dmid.data(), dx_in);
  return absl::OkStatus();
}

}  // namespace dsv3::model
