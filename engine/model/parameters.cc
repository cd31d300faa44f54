// The flat parameter layout and the §11.8 initialisation (see parameters.h).
#include "engine/model/parameters.h"

#include <cmath>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"

namespace dsv3::model {
namespace {

// Builds the table: Add() appends a tensor in list order at the next free offset, or at an
// explicit offset inside a range reserved with Reserve().
class LayoutBuilder {
 public:
  int64_t Reserve(int64_t size) {
    const int64_t at = next_;
    next_ += size;
    return at;
  }
  void Add(std::string name, std::vector<int64_t> shape, int64_t offset, bool decay,
           bool trainable = true, bool is_norm = false) {
    ParamInfo p;
    p.name = std::move(name);
    p.size = 1;
    for (int64_t d : shape) p.size *= d;
    p.shape = std::move(shape);
    p.offset = offset;
    p.weight_decay = decay;
    p.trainable = trainable;
    p.is_norm = is_norm;
    params.push_back(std::move(p));
  }
  void AddNext(std::string name, std::vector<int64_t> shape, bool decay, bool trainable = true,
               bool is_norm = false) {
    int64_t size = 1;
    for (int64_t d : shape) size *= d;
    Add(std::move(name), std::move(shape), Reserve(size), decay, trainable, is_norm);
  }
  void Matrix(const std::string& name, int64_t rows, int64_t cols) {
    AddNext(name, {rows, cols}, /*decay=*/true);
  }
  void Norm(const std::string& name, int64_t dim) {
    AddNext(name, {dim}, /*decay=*/false, /*trainable=*/true, /*is_norm=*/true);
  }
  // gate_proj [inter, d] then up_proj [inter, d] back to back, then down_proj [d, inter].
  void SwiGlu(const std::string& prefix, int64_t d, int64_t inter) {
    Matrix(prefix + "gate_proj.weight", inter, d);
    Matrix(prefix + "up_proj.weight", inter, d);
    Matrix(prefix + "down_proj.weight", d, inter);
  }

  std::vector<ParamInfo> params;
  int64_t next_ = 0;
};

}  // namespace

ParameterLayout ParameterLayout::Build(const ModelConfig& c) {
  LayoutBuilder b;
  const int64_t d = c.hidden_size;
  const int64_t h = c.num_attention_heads;
  b.Matrix("model.embed_tokens.weight", c.vocab_size, d);
  const int64_t layers = c.num_hidden_layers + (c.num_nextn_predict_layers > 0 ? 1 : 0);
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    const bool is_mtp = i == c.num_hidden_layers;
    if (is_mtp) {
      b.Norm(p + "enorm.weight", d);
      b.Norm(p + "hnorm.weight", d);
      b.Matrix(p + "eh_proj.weight", d, 2 * d);
    }
    b.Norm(p + "input_layernorm.weight", d);
    const std::string a = p + "self_attn.";
    if (c.q_lora_rank > 0) {
      b.Matrix(a + "q_a_proj.weight", c.q_lora_rank, d);
      b.Norm(a + "q_a_layernorm.weight", c.q_lora_rank);
      b.Matrix(a + "q_b_proj.weight", h * c.qk_head_dim(), c.q_lora_rank);
    } else {
      b.Matrix(a + "q_proj.weight", h * c.qk_head_dim(), d);
    }
    b.Matrix(a + "kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, d);
    b.Norm(a + "kv_a_layernorm.weight", c.kv_lora_rank);
    b.Matrix(a + "kv_b_proj.weight", h * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    b.Matrix(a + "o_proj.weight", d, h * c.v_head_dim);
    b.Norm(p + "post_attention_layernorm.weight", d);
    const std::string m = p + "mlp.";
    if (c.is_moe_layer(i)) {
      const int64_t e = c.n_routed_experts;
      const int64_t mi = c.moe_intermediate_size;
      b.Matrix(m + "gate.weight", e, d);
      b.AddNext(m + "gate.e_score_correction_bias", {e}, /*decay=*/false, /*trainable=*/false);
      const int64_t gate_up = b.Reserve(e * 2 * mi * d);
      const int64_t down = b.Reserve(e * d * mi);
      for (int64_t j = 0; j < e; ++j) {
        const std::string x = absl::StrCat(m, "experts.", j, ".");
        b.Add(x + "gate_proj.weight", {mi, d}, gate_up + j * 2 * mi * d, true);
        b.Add(x + "up_proj.weight", {mi, d}, gate_up + j * 2 * mi * d + mi * d, true);
        b.Add(x + "down_proj.weight", {d, mi}, down + j * d * mi, true);
      }
      if (c.n_shared_experts > 0) b.SwiGlu(m + "shared_experts.", d, c.n_shared_experts * mi);
    } else {
      b.SwiGlu(m, d, c.intermediate_size);
    }
    if (is_mtp) b.Norm(p + "shared_head.norm.weight", d);
  }
  b.Norm("model.norm.weight", d);
  b.Matrix("lm_head.weight", c.vocab_size, d);

  ParameterLayout layout;
  layout.params_ = std::move(b.params);
  layout.total_size_ = b.next_;
  for (size_t i = 0; i < layout.params_.size(); ++i) layout.index_[layout.params_[i].name] = i;
  return layout;
}

const ParamInfo* ParameterLayout::Find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &params_[it->second];
}

int64_t ParameterLayout::OffsetOf(std::string_view name) const {
  const ParamInfo* p = Find(name);
  if (p == nullptr) {
    std::cerr << "ParameterLayout: no tensor named " << name << "\n";
    std::abort();
  }
  return p->offset;
}

void ParameterSet::ZeroGrads() { std::fill(grads.begin(), grads.end(), 0.0f); }

namespace {

uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// SplitMix64 stream with Box-Muller normals (both values of a pair are used).
class NormalStream {
 public:
  explicit NormalStream(uint64_t seed) : state_(seed) {}
  double Next() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    // u1 in (0, 1], u2 in [0, 1): 53-bit uniforms.
    const double u1 = (static_cast<double>(NextBits() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(NextBits() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double a = 2.0 * M_PI * u2;
    spare_ = r * std::sin(a);
    have_spare_ = true;
    return r * std::cos(a);
  }

 private:
  uint64_t NextBits() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return Mix(state_);
  }
  uint64_t state_;
  double spare_ = 0;
  bool have_spare_ = false;
};

}  // namespace

void InitParameters(uint64_t seed, double stddev, ParameterSet* params) {
  const std::vector<ParamInfo>& infos = params->layout.params();
  for (size_t i = 0; i < infos.size(); ++i) {
    const ParamInfo& p = infos[i];
    float* v = params->values.data() + p.offset;
    if (p.is_norm) {
      std::fill(v, v + p.size, 1.0f);
    } else if (!p.trainable) {
      std::fill(v, v + p.size, 0.0f);
    } else {
      NormalStream normal(Mix(Mix(seed) ^ (0x5851f42d4c957f2dULL * (i + 1))));
      for (int64_t j = 0; j < p.size; ++j) v[j] = static_cast<float>(stddev * normal.Next());
    }
  }
}

}  // namespace dsv3::model
