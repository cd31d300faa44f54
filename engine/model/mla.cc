// MLA forward and backward (see mla.h).
#include "engine/model/mla.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"

namespace dsv3::model {
namespace {

using kernels::CpuContext;

NormRef Norm(ParameterSet* params, const std::string& name, int64_t dim, float eps) {
  return NormRef{params->value(name), params->grad(name), dim, eps};
}

LinearRef Lin(ParameterSet* params, const std::string& name, int64_t n, int64_t k,
              GemmMode mode) {
  return LinearRef{params->value(name), params->grad(name), n, k, mode};
}

void Free(FloatBuffer* v) { FloatBuffer().swap(*v); }

}  // namespace

Mla::Mla(const ModelConfig& c, ParameterSet* params, const std::string& prefix, GemmMode mode)
    : d_(c.hidden_size),
      heads_(c.num_attention_heads),
      q_lora_(c.q_lora_rank),
      kv_lora_(c.kv_lora_rank),
      dn_(c.qk_nope_head_dim),
      dr_(c.qk_rope_head_dim),
      dv_(c.v_head_dim) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  const std::string a = prefix + "self_attn.";
  const int64_t dqk = dn_ + dr_;
  input_norm_ = Norm(params, prefix + "input_layernorm.weight", d_, eps);
  if (q_lora_ > 0) {
    q_a_ = Lin(params, a + "q_a_proj.weight", q_lora_, d_, mode);
    q_norm_ = Norm(params, a + "q_a_layernorm.weight", q_lora_, eps);
    q_b_ = Lin(params, a + "q_b_proj.weight", heads_ * dqk, q_lora_, mode);
  } else {
    q_proj_ = Lin(params, a + "q_proj.weight", heads_ * dqk, d_, mode);
  }
  kv_a_ = Lin(params, a + "kv_a_proj_with_mqa.weight", kv_lora_ + dr_, d_, mode);
  kv_norm_ = Norm(params, a + "kv_a_layernorm.weight", kv_lora_, eps);
  kv_b_ = Lin(params, a + "kv_b_proj.weight", heads_ * (dn_ + dv_), kv_lora_, mode);
  o_proj_ = Lin(params, a + "o_proj.weight", d_, heads_ * dv_, mode);
}

void Mla::Project(const CpuContext& ctx, const SeqShape& shape, const RopeInputs& rope,
                  const float* x, Cache* c) const {
  const int64_t n = shape.tokens();
  const int64_t dqk = dn_ + dr_;
  const int64_t kva_w = kv_lora_ + dr_;
  if (c->h.empty()) {
    c->h = Floats(n * d_);
    kernels::RmsNormForward(ctx, {n, d_, 0, 0}, x, input_norm_.g, input_norm_.eps, c->h.data(),
                            nullptr);
  }
  c->q = Floats(n * heads_ * dqk);
  if (q_lora_ > 0) {
    c->cqn = Floats(n * q_lora_);
    kernels::RmsNormForward(ctx, {n, q_lora_, 0, 0}, c->cq.data(), q_norm_.g, q_norm_.eps,
                            c->cqn.data(), nullptr);
    LinearForward(ctx, q_b_, c->cqn.data(), n, c->q.data());
  } else {
    LinearForward(ctx, q_proj_, c->h.data(), n, c->q.data());
  }
  kernels::RopeForward(ctx, rope.table, rope.positions,
                       {n, heads_, dr_, heads_ * dqk, dqk}, c->q.data() + dn_);

  c->ckv = Floats(n * kv_lora_);
  kernels::RmsNormForward(ctx, {n, kv_lora_, kva_w, kv_lora_}, c->kva.data(), kv_norm_.g,
                          kv_norm_.eps, c->ckv.data(), nullptr);
  c->kv = Floats(n * heads_ * (dn_ + dv_));
  LinearForward(ctx, kv_b_, c->ckv.data(), n, c->kv.data());

  // The shared rope key, rotated once per token, then copied into every head.
  FloatBuffer kr = Floats(n * dr_);
  for (int64_t t = 0; t < n; ++t) {
    std::memcpy(kr.data() + t * dr_, c->kva.data() + t * kva_w + kv_lora_, dr_ * sizeof(float));
  }
  kernels::RopeForward(ctx, rope.table, rope.positions, {n, 1, dr_, dr_, dr_}, kr.data());
  c->k = Floats(n * heads_ * dqk);
  c->v = Floats(n * heads_ * dv_);
  kernels::ParallelFor(ctx, n, 16, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      for (int64_t h = 0; h < heads_; ++h) {
        const float* src = c->kv.data() + (t * heads_ + h) * (dn_ + dv_);
        float* k = c->k.data() + (t * heads_ + h) * dqk;
        std::memcpy(k, src, dn_ * sizeof(float));
        std::memcpy(k + dn_, kr.data() + t * dr_, dr_ * sizeof(float));
        std::memcpy(c->v.data() + (t * heads_ + h) * dv_, src + dn_, dv_ * sizeof(float));
      }
    }
  });
}

void Mla::Forward(const CpuContext& ctx, const SeqShape& shape, const RopeInputs& rope,
                  const float* x, float* out, Cache* c, bool recompute) const {
  const int64_t n = shape.tokens();
  c->h = Floats(n * d_);
  kernels::RmsNormForward(ctx, {n, d_, 0, 0}, x, input_norm_.g, input_norm_.eps, c->h.data(),
                          nullptr);
  if (q_lora_ > 0) {
    c->cq = Floats(n * q_lora_);
    LinearForward(ctx, q_a_, c->h.data(), n, c->cq.data());
  }
  c->kva = Floats(n * (kv_lora_ + dr_));
  LinearForward(ctx, kv_a_, c->h.data(), n, c->kva.data());
  Project(ctx, shape, rope, x, c);

  kernels::AttentionParams ap{shape.rows, shape.seq, heads_, dn_ + dr_, dv_, rope.softmax_scale};
  c->o = Floats(n * heads_ * dv_);
  c->lse = Floats(shape.rows * heads_ * shape.seq);
  kernels::AttentionForward(ctx, ap, c->q.data(), c->k.data(), c->v.data(), c->o.data(),
                            c->lse.data());
  LinearForward(ctx, o_proj_, c->o.data(), n, out);
  if (recompute) {
    for (FloatBuffer* v : {&c->h, &c->cqn, &c->q, &c->ckv, &c->kv, &c->k, &c->v}) Free(v);
  }
}

void Mla::Backward(const CpuContext& ctx, const SeqShape& shape, const RopeInputs& rope,
                   const float* x, Cache* c, const float* dout, float* dx) const {
  const int64_t n = shape.tokens();
  const int64_t dqk = dn_ + dr_;
  const int64_t kva_w = kv_lora_ + dr_;
  if (c->q.empty()) Project(ctx, shape, rope, x, c);  // recompute mode

  FloatBuffer d_o = Floats(n * heads_ * dv_);
  LinearBackward(ctx, o_proj_, c->o.data(), dout, n, d_o.data(), false);
  FloatBuffer dq = Floats(n * heads_ * dqk);
  FloatBuffer dk = Floats(n * heads_ * dqk);
  FloatBuffer dvv = Floats(n * heads_ * dv_);
  kernels::AttentionParams ap{shape.rows, shape.seq, heads_, dqk, dv_, rope.softmax_scale};
  kernels::AttentionBackward(ctx, ap, c->q.data(), c->k.data(), c->v.data(), c->o.data(),
                             c->lse.data(), d_o.data(), dq.data(), dk.data(), dvv.data());
  Free(&d_o);

  // Split the key/value gradients back into kv_b_proj's output and the shared rope key.
  FloatBuffer d_kv = Floats(n * heads_ * (dn_ + dv_));
  FloatBuffer d_kva = Floats(n * kva_w);
  kernels::ParallelFor(ctx, n, 16, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* kr = d_kva.data() + t * kva_w + kv_lora_;
      std::fill(kr, kr + dr_, 0.0f);
      for (int64_t h = 0; h < heads_; ++h) {
        const float* src_k = dk.data() + (t * heads_ + h) * dqk;
        float* dst = d_kv.data() + (t * heads_ + h) * (dn_ + dv_);
        std::memcpy(dst, src_k, dn_ * sizeof(float));
        std::memcpy(dst + dn_, dvv.data() + (t * heads_ + h) * dv_, dv_ * sizeof(float));
        for (int64_t j = 0; j < dr_; ++j) kr[j] += src_k[dn_ + j];
      }
    }
  });
  Free(&dk);
  Free(&dvv);
  kernels::RopeBackward(ctx, rope.table, rope.positions, {n, 1, dr_, kva_w, dr_},
                        d_kva.data() + kv_lora_);
  kernels::RopeBackward(ctx, rope.table, rope.positions, {n, heads_, dr_, heads_ * dqk, dqk},
                        dq.data() + dn_);

  FloatBuffer d_ckv = Floats(n * kv_lora_);
  LinearBackward(ctx, kv_b_, c->ckv.data(), d_kv.data(), n, d_ckv.data(), false);
  Free(&d_kv);
  // d_kva[:, :kv_lora] = RMSNorm backward (the rope columns already hold their gradient).
  kernels::RmsNormBackward(ctx, {n, kv_lora_, kva_w, kv_lora_}, c->kva.data(), kv_norm_.g,
                           nullptr, d_ckv.data(), kv_norm_.eps, d_kva.data(), kv_norm_.dg);
  FloatBuffer dh = Floats(n * d_);
  LinearBackward(ctx, kv_a_, c->h.data(), d_kva.data(), n, dh.data(), false);
  if (q_lora_ > 0) {
    FloatBuffer d_cqn = Floats(n * q_lora_);
    LinearBackward(ctx, q_b_, c->cqn.data(), dq.data(), n, d_cqn.data(), false);
    FloatBuffer d_cq = Floats(n * q_lora_);
    kernels::RmsNormBackward(ctx, {n, q_lora_, 0, 0}, c->cq.data(), q_norm_.g, nullptr,
                             d_cqn.data(), q_norm_.eps, d_cq.data(), q_norm_.dg);
    LinearBackward(ctx, q_a_, c->h.data(), d_cq.data(), n, dh.data(), true);
  } else {
    LinearBackward(ctx, q_proj_, c->h.data(), dq.data(), n, dh.data(), true);
  }
  FloatBuffer dxn = Floats(n * d_);
  kernels::RmsNormBackward(ctx, {n, d_, 0, 0}, x, input_norm_.g, nullptr, dh.data(),
                           input_norm_.eps, dxn.data(), input_norm_.dg);
  AddInto(ctx, dxn.data(), n * d_, dx);
}

}  // namespace dsv3::model
