"""An independent PyTorch model of DeepSeek-V3 as dsv3 defines it (spec/deepseek-v3.md §2-§4 and
the decisions of §11): MLA in its naive training form with decoupled interleaved RoPE (optional
YaRN), dense and DeepSeekMoE SwiGLU FFNs with the aux-loss-free sigmoid router, the depth-1 MTP
module, and the loss = main + lambda * mtp + balance. Parameters carry the Hugging Face DeepSeek-V3 names
(DESIGN.md "Model I/O"). It is the test oracle for `dsv3-train eval`; it runs in float64 (default),
float32, or with BF16 / FP8 GEMM emulation (model_numerics.py). Not here: the CLI, file I/O
(deepseek_v3_ref.py), training, the bias update, parallelism.

Written for readability, not speed: one plain module per concept, loops over experts.
"""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

import model_numerics

# ---- Configuration -------------------------------------------------------------------------------

# Required integer keys of a Hugging Face DeepSeek-V3 config.json and their lower bounds (the same
# set and bounds as coordinator/job_spec.cc).
_REQUIRED_INTS = [
    ("vocab_size", 1), ("hidden_size", 1), ("num_hidden_layers", 1), ("first_k_dense_replace", 0),
    ("intermediate_size", 1), ("moe_intermediate_size", 1), ("n_routed_experts", 1),
    ("n_shared_experts", 0), ("num_experts_per_tok", 1), ("n_group", 1), ("topk_group", 1),
    ("num_attention_heads", 1), ("q_lora_rank", 0), ("kv_lora_rank", 1), ("qk_nope_head_dim", 1),
    ("qk_rope_head_dim", 1), ("v_head_dim", 1), ("num_nextn_predict_layers", 0),
]
# Hugging Face keys that would change the architecture: only the DeepSeek-V3 value is accepted.
_FIXED = {
    "model_type": "deepseek_v3", "hidden_act": "silu", "scoring_func": "sigmoid",
    "topk_method": "noaux_tc", "norm_topk_prob": True, "tie_word_embeddings": False,
    "attention_bias": False, "attention_dropout": 0, "moe_layer_freq": 1,
}

# The released DeepSeek-V3 (671B) shape, in config.json keys (spec §1, §8.1), without rope_scaling
# (spec §11.7: pre-training at 4K uses none).
DEEPSEEK_V3_671B = {
    "vocab_size": 129280, "hidden_size": 7168, "num_hidden_layers": 61, "first_k_dense_replace": 3,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "n_routed_experts": 256,
    "n_shared_experts": 1, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4,
    "routed_scaling_factor": 2.5, "num_attention_heads": 128, "q_lora_rank": 1536,
    "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "num_nextn_predict_layers": 1, "rms_norm_eps": 1e-6, "rope_theta": 10000,
}


class ConfigError(ValueError):
    pass


class Config:
    """The model shape, read from a config.json dict (extra keys are ignored) and validated."""

    def __init__(self, d):
        if isinstance(d.get("model"), dict):  # a dsv3 job spec: use its model section
            d = d["model"]
        for key, low in _REQUIRED_INTS:
            if key not in d:
                raise ConfigError(f"config: {key} is required")
            v = d[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"config: {key}={v!r} must be an integer >= {low}")
            setattr(self, key, v)
        self.routed_scaling_factor = float(d.get("routed_scaling_factor", float("nan")))
        if not self.routed_scaling_factor > 0:
            raise ConfigError("config: routed_scaling_factor is required and must be > 0")
        self.rms_norm_eps = float(d.get("rms_norm_eps", 1e-6))
        self.rope_theta = float(d.get("rope_theta", 10000.0))
        if not (self.rms_norm_eps > 0 and self.rope_theta > 0):
            raise ConfigError("config: rms_norm_eps and rope_theta must be > 0")
        for key, want in _FIXED.items():
            if key in d and d[key] is not None and d[key] != want:
                raise ConfigError(
                    f"config: {key}={d[key]!r} is not supported (DeepSeek-V3: {want!r})")
        if self.first_k_dense_replace > self.num_hidden_layers:
            raise ConfigError("config: first_k_dense_replace exceeds num_hidden_layers")
        if self.qk_rope_head_dim % 2:
            raise ConfigError("config: qk_rope_head_dim must be even")
        if self.num_nextn_predict_layers > 1:
            raise ConfigError("config: num_nextn_predict_layers must be 0 or 1")
        if self.n_routed_experts % self.n_group:
            raise ConfigError("config: n_group must divide n_routed_experts")
        if self.topk_group > self.n_group:
            raise ConfigError("config: topk_group exceeds n_group")
        self.group_size = self.n_routed_experts // self.n_group
        if self.group_size < 2:
            raise ConfigError("config: a routing group needs >= 2 experts (top-2 group score)")
        if self.num_experts_per_tok > self.topk_group * self.group_size:
            raise ConfigError("config: num_experts_per_tok exceeds the experts of the kept groups")
        self.rope_scaling = None
        rs = d.get("rope_scaling")
        if rs:
            kind = rs.get("type", rs.get("rope_type"))
            if kind != "yarn":
                raise ConfigError(f"config: rope_scaling type {kind!r} is not supported")
            for key in ("factor", "original_max_position_embeddings", "mscale", "mscale_all_dim"):
                if key not in rs:
                    raise ConfigError(f"config: rope_scaling.{key} is required")
            if rs["mscale"] != rs["mscale_all_dim"]:
                raise ConfigError("config: rope_scaling.mscale != mscale_all_dim (§11.7)")
            self.rope_scaling = {
                "factor": float(rs["factor"]),
                "original_max_position_embeddings": int(rs["original_max_position_embeddings"]),
                "beta_fast": float(rs.get("beta_fast", 32.0)),
                "beta_slow": float(rs.get("beta_slow", 1.0)),
                "mscale": float(rs["mscale"]),
            }
            if self.rope_scaling["factor"] < 1:
                raise ConfigError("config: rope_scaling.factor must be >= 1")
        self.raw = dict(d)

    @property
    def has_mtp(self):
        return self.num_nextn_predict_layers == 1

    def is_moe_layer(self, index):
        """Layer `index` (the MTP layer is index num_hidden_layers) has a MoE FFN."""
        return index >= self.first_k_dense_replace

    def moe_layer_indices(self):
        """MoE layers in the order experts.npy stacks them: main layers, then the MTP layer."""
        n = self.num_hidden_layers + (1 if self.has_mtp else 0)
        return [i for i in range(n) if self.is_moe_layer(i)]

    @property
    def qk_head_dim(self):
        return self.qk_nope_head_dim + self.qk_rope_head_dim


def parameter_shapes(cfg):
    """Every parameter's HF name -> shape, in module order. The single source of the layout: the
    modules below are checked against it, and the parameter count uses it without allocating."""
    d, h = cfg.hidden_size, cfg.num_attention_heads
    shapes = OrderedDict()
    shapes["model.embed_tokens.weight"] = (cfg.vocab_size, d)
    for i in range(cfg.num_hidden_layers + (1 if cfg.has_mtp else 0)):
        p = f"model.layers.{i}."
        is_mtp = i == cfg.num_hidden_layers
        if is_mtp:
            shapes[p + "enorm.weight"] = (d,)
            shapes[p + "hnorm.weight"] = (d,)
            shapes[p + "eh_proj.weight"] = (d, 2 * d)
        shapes[p + "input_layernorm.weight"] = (d,)
        a = p + "self_attn."
        if cfg.q_lora_rank > 0:
            shapes[a + "q_a_proj.weight"] = (cfg.q_lora_rank, d)
            shapes[a + "q_a_layernorm.weight"] = (cfg.q_lora_rank,)
            shapes[a + "q_b_proj.weight"] = (h * cfg.qk_head_dim, cfg.q_lora_rank)
        else:
            shapes[a + "q_proj.weight"] = (h * cfg.qk_head_dim, d)
        shapes[a + "kv_a_proj_with_mqa.weight"] = (cfg.kv_lora_rank + cfg.qk_rope_head_dim, d)
        shapes[a + "kv_a_layernorm.weight"] = (cfg.kv_lora_rank,)
        shapes[a + "kv_b_proj.weight"] = (h * (cfg.qk_nope_head_dim + cfg.v_head_dim),
                                          cfg.kv_lora_rank)
        shapes[a + "o_proj.weight"] = (d, h * cfg.v_head_dim)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
        m = p + "mlp."
        if cfg.is_moe_layer(i):
            e, mi = cfg.n_routed_experts, cfg.moe_intermediate_size
            shapes[m + "gate.weight"] = (e, d)
            shapes[m + "gate.e_score_correction_bias"] = (e,)
            for j in range(e):
                shapes[m + f"experts.{j}.gate_proj.weight"] = (mi, d)
                shapes[m + f"experts.{j}.up_proj.weight"] = (mi, d)
                shapes[m + f"experts.{j}.down_proj.weight"] = (d, mi)
            if cfg.n_shared_experts > 0:
                si = cfg.n_shared_experts * mi
                shapes[m + "shared_experts.gate_proj.weight"] = (si, d)
                shapes[m + "shared_experts.up_proj.weight"] = (si, d)
                shapes[m + "shared_experts.down_proj.weight"] = (d, si)
        else:
            shapes[m + "gate_proj.weight"] = (cfg.intermediate_size, d)
            shapes[m + "up_proj.weight"] = (cfg.intermediate_size, d)
            shapes[m + "down_proj.weight"] = (d, cfg.intermediate_size)
        if is_mtp:
            shapes[p + "shared_head.norm.weight"] = (d,)
    shapes["model.norm.weight"] = (d,)
    shapes["lm_head.weight"] = (cfg.vocab_size, d)
    return shapes


def count_parameters(cfg):
    """Parameter counts from the shapes alone (spec §8.6):
      total      the main model: embedding, blocks, final norm, head (no MTP)
      mtp        the MTP layer's own parameters (embedding and head are shared)
      activated  per token in the main model: attention, dense FFNs, per MoE layer the router with
                 its bias, the shared expert and num_experts_per_tok routed experts; embedding, head
      attention  one layer's self_attn (incl. the q_a / kv_a layernorms)
      moe_layer  one MoE layer's mlp (None without MoE layers)"""
    shapes = parameter_shapes(cfg)
    size = lambda s: math.prod(s)
    mtp_prefix = f"model.layers.{cfg.num_hidden_layers}."
    total = sum(size(s) for n, s in shapes.items() if not n.startswith(mtp_prefix))
    mtp = sum(size(s) for n, s in shapes.items() if n.startswith(mtp_prefix))
    one_expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
    activated = total
    for i in range(cfg.num_hidden_layers):
        if cfg.is_moe_layer(i):
            activated -= (cfg.n_routed_experts - cfg.num_experts_per_tok) * one_expert
    attention = sum(size(s) for n, s in shapes.items() if n.startswith("model.layers.0.self_attn."))
    moe_layer = None
    moe = [i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i)]
    if moe:
        p = f"model.layers.{moe[0]}.mlp."
        moe_layer = sum(size(s) for n, s in shapes.items() if n.startswith(p))
    return {"total": total, "mtp": mtp, "activated": activated, "attention": attention,
            "moe_layer": moe_layer}


# ---- Precision -----------------------------------------------------------------------------------

class Precision:
    """What each kind of GEMM does in a precision mode (spec §11.9):
      fp64  everything float64 (the default for reference tests; the router GEMM too)
      fp32  everything float32
      bf16  float32 tensors; every Linear except the router has BF16 operands and FP32 accumulation
            (block Linears, MTP eh_proj, lm_head, and their backward GEMMs); the attention core
            (QK^T, PV), norms, softmax, loss and the router stay FP32
      fp8   float32 tensors; the block Linears (attention projections, dense FFN, shared and routed
            experts) and the MTP eh_proj run their three GEMMs in E4M3 (model_numerics.Fp8Linear;
            the routed experts with power-of-two scales where a dispatch carries their rows);
            embedding, lm_head, router, norms and the attention core stay FP32
    """

    MODES = ("fp64", "fp32", "bf16", "fp8")

    def __init__(self, name):
        if name not in self.MODES:
            raise ValueError(f"precision {name!r} must be one of {self.MODES}")
        self.name = name
        self.dtype = torch.float64 if name == "fp64" else torch.float32

    def gemm_mode(self, kind):
        """kind: 'block' (transformer-block Linears and eh_proj), 'head' or 'router'."""
        if kind == "router" or self.name in ("fp64", "fp32"):
            return "full"
        if self.name == "bf16":
            return "bf16"
        return "fp8" if kind == "block" else "full"


# ---- Building blocks -----------------------------------------------------------------------------

class Linear(nn.Module):
    """y = x W^T, no bias; W [out, in]."""

    def __init__(self, in_features, out_features, mode):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.mode = mode

    def forward(self, x):
        return model_numerics.linear(x, self.weight, self.mode)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * g over the last dim."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Embedding(nn.Module):
    def __init__(self, vocab, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab, dim))

    def forward(self, ids):
        return F.embedding(ids, self.weight)


class SwiGLU(nn.Module):
    """FFN(u) = down( SiLU(gate(u)) * up(u) ) (spec §3.1). Used for dense FFNs and experts.
    routed: a routed expert, whose fp8 input rows and down-projection output gradients are FP8
    with power-of-two scales (what an expert-parallel dispatch carries; docs/decisions.md)."""

    def __init__(self, dim, inter, mode, routed=False):
        super().__init__()
        self.gate_proj = Linear(dim, inter, mode)
        self.up_proj = Linear(dim, inter, mode)
        self.down_proj = Linear(inter, dim, mode)
        self.routed = routed

    def forward(self, u):
        # gate_proj and up_proj run as ONE GEMM over the stacked [2I, d] weight (DeepGEMM's fused
        # gate+up shape, and what the C++ model does); in fp8 mode the 128x128 weight blocks are
        # therefore blocks of the stacked matrix. Other modes are unaffected (rows are independent).
        inter = self.gate_proj.weight.shape[0]
        w = torch.cat([self.gate_proj.weight, self.up_proj.weight], 0)
        gate, up = model_numerics.linear(u, w, self.gate_proj.mode,
                                         dispatched_x=self.routed).split(inter, dim=-1)
        return model_numerics.linear(F.silu(gate) * up, self.down_proj.weight,
                                     self.down_proj.mode, dispatched_dy=self.routed)


# ---- RoPE (spec §2.3, §2.4, §11.7) ---------------------------------------------------------------

def rope_frequencies(cfg):
    """theta_j = rope_theta^(-2j/d) for j < d/2, with the YaRN blend when rope_scaling is given
    (the formulas of kernels/cpu/rope.h YarnRopeFrequencies), as Python floats (double)."""
    d = cfg.qk_rope_head_dim
    theta = [math.pow(cfg.rope_theta, -float(2 * j) / float(d)) for j in range(d // 2)]
    rs = cfg.rope_scaling
    if rs is None:
        return theta
    l0 = float(rs["original_max_position_embeddings"])

    def correction_dim(rotations):
        return d * math.log(l0 / (rotations * 2 * math.pi)) / (2 * math.log(cfg.rope_theta))

    low = max(math.floor(correction_dim(rs["beta_fast"])), 0.0)
    high = min(math.ceil(correction_dim(rs["beta_slow"])), float(d - 1))
    if high == low:
        high += 0.001
    out = []
    for j, t in enumerate(theta):
        ramp = min(max((j - low) / (high - low), 0.0), 1.0)
        out.append(t / rs["factor"] * ramp + t * (1.0 - ramp))
    return out


def softmax_scale(cfg):
    """1/sqrt(qk_nope + qk_rope), times (0.1 * mscale * ln(factor) + 1)^2 under YaRN."""
    scale = 1.0 / math.sqrt(cfg.qk_head_dim)
    rs = cfg.rope_scaling
    if rs is not None and rs["factor"] > 1.0:
        m = 0.1 * rs["mscale"] * math.log(rs["factor"]) + 1.0
        scale *= m * m
    return scale


def rope_table(cfg, positions, dtype):
    """cos, sin [positions, d_rope/2]: the angle p * theta_j and its cos/sin in float64, rounded
    once to `dtype`."""
    theta = torch.tensor(rope_frequencies(cfg), dtype=torch.float64)
    angle = torch.arange(positions, dtype=torch.float64)[:, None] * theta[None, :]
    return torch.cos(angle).to(dtype), torch.sin(angle).to(dtype)


def apply_rope(x, cos, sin):
    """Rotate adjacent pairs (x[2j], x[2j+1]) of the last dim by angle p * theta_j:
    (a, b) -> (a cos - b sin, a sin + b cos). x [B, T, heads, d_rope]; cos, sin [T, d_rope/2]."""
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).reshape(x.shape)


# ---- Multi-head Latent Attention (spec §2.1, §2.2) -----------------------------------------------

class MLA(nn.Module):
    def __init__(self, cfg, prec):
        super().__init__()
        mode = prec.gemm_mode("block")
        d, h = cfg.hidden_size, cfg.num_attention_heads
        self.cfg = cfg
        if cfg.q_lora_rank > 0:
            self.q_a_proj = Linear(d, cfg.q_lora_rank, mode)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps)
            self.q_b_proj = Linear(cfg.q_lora_rank, h * cfg.qk_head_dim, mode)
        else:
            self.q_proj = Linear(d, h * cfg.qk_head_dim, mode)
        self.kv_a_proj_with_mqa = Linear(d, cfg.kv_lora_rank + cfg.qk_rope_head_dim, mode)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps)
        self.kv_b_proj = Linear(cfg.kv_lora_rank, h * (cfg.qk_nope_head_dim + cfg.v_head_dim), mode)
        self.o_proj = Linear(h * cfg.v_head_dim, d, mode)
        self.scale = softmax_scale(cfg)

    def forward(self, x, cos, sin):
        """x [B, T, d] (the normed residual) -> [B, T, d]; causal over T; cos/sin [T, d_rope/2]."""
        cfg = self.cfg
        bsz, t, _ = x.shape
        h, nope, rope, dv = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim,
                             cfg.v_head_dim)
        if cfg.q_lora_rank > 0:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        else:
            q = self.q_proj(x)
        q = q.view(bsz, t, h, nope + rope)
        q_nope, q_pe = q[..., :nope], q[..., nope:]
        kv_a = self.kv_a_proj_with_mqa(x)
        c_kv, k_pe = kv_a[..., :cfg.kv_lora_rank], kv_a[..., cfg.kv_lora_rank:]
        kv = self.kv_b_proj(self.kv_a_layernorm(c_kv)).view(bsz, t, h, nope + dv)
        k_nope, v = kv[..., :nope], kv[..., nope:]
        q_pe = apply_rope(q_pe, cos, sin)
        k_pe = apply_rope(k_pe.reshape(bsz, t, 1, rope), cos, sin)  # one key shared by all heads
        q = torch.cat([q_nope, q_pe], dim=-1)
        k = torch.cat([k_nope, k_pe.expand(bsz, t, h, rope)], dim=-1)
        scores = torch.einsum("bthd,bshd->bhts", q, k) * self.scale
        future = torch.ones(t, t, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        p = torch.softmax(scores, dim=-1)
        o = torch.einsum("bhts,bshd->bthd", p, v).reshape(bsz, t, h * dv)
        return self.o_proj(o)


# ---- DeepSeekMoE (spec §3, §11.3, §11.5) ---------------------------------------------------------

def stable_topk(x, k):
    """Indices [N, k] of the k largest entries of each row of x [N, E], in descending order; equal
    values go to the lower index (a stable descending sort)."""
    return torch.sort(x, dim=-1, descending=True, stable=True).indices[:, :k]


class Gate(nn.Module):
    """The router's parameters: weight [E, d] (sigmoid affinities) and the selection-only bias
    e_score_correction_bias [E] (a Parameter so that it loads and is listed by name; it has no
    gradient)."""

    def __init__(self, cfg):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        self.e_score_correction_bias = nn.Parameter(torch.empty(cfg.n_routed_experts),
                                                    requires_grad=False)


class MoE(nn.Module):
    def __init__(self, cfg, prec):
        super().__init__()
        self.cfg = cfg
        self.prec = prec
        mode = prec.gemm_mode("block")
        self.gate = Gate(cfg)
        self.experts = nn.ModuleList(
            SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size, mode, routed=True)
            for _ in range(cfg.n_routed_experts))
        if cfg.n_shared_experts > 0:
            self.shared_experts = SwiGLU(
                cfg.hidden_size, cfg.n_shared_experts * cfg.moe_intermediate_size, mode)

    def select(self, s, bias):
        """The biased, group-limited selection of spec §11.5 (no gradient).
        s [N, E] affinities, bias [E] -> expert ids [N, K], descending masked biased score."""
        cfg = self.cfg
        n = s.shape[0]
        biased = s + bias
        if cfg.n_group > 1:
            grouped = biased.view(n, cfg.n_group, cfg.group_size)
            top2 = torch.sort(grouped, dim=-1, descending=True).values[..., :2]
            group_score = top2[..., 0] + top2[..., 1]  # [N, G]
            kept = stable_topk(group_score, cfg.topk_group)  # [N, topk_group]
            keep = torch.zeros(n, cfg.n_group, dtype=torch.bool)
            keep.scatter_(1, kept, True)
            keep = keep[:, :, None].expand(n, cfg.n_group, cfg.group_size).reshape(n, -1)
            biased = biased.masked_fill(~keep, float("-inf"))
        return stable_topk(biased, cfg.num_experts_per_tok)

    def route(self, x):
        """x [N, d] (normed tokens) -> (s64 [N, E] float64 affinities (with grad), s [N, E] in the
        compute dtype, ids [N, K] int64, weights [N, K] gate weights (with grad))."""
        cfg = self.cfg
        # Router GEMM in the mode's full precision (FP32; float64 in fp64 mode).
        logits = model_numerics.linear(x, self.gate.weight, self.prec.gemm_mode("router"))
        # Affinities: sigmoid evaluated in float64, rounded once to the compute dtype (router.h).
        s64 = torch.sigmoid(logits.double())
        s = s64.to(logits.dtype)
        with torch.no_grad():
            ids = self.select(s.detach(), self.gate.e_score_correction_bias.detach().to(s.dtype))
        # Gate weights from the UNBIASED s of the chosen experts, normalised over the chosen set
        # (summed in slot order), times routed_scaling_factor.
        chosen = s.gather(1, ids)  # [N, K]
        z = chosen[:, 0]
        for k in range(1, cfg.num_experts_per_tok):
            z = z + chosen[:, k]
        weights = chosen / z[:, None] * cfg.routed_scaling_factor
        return s64, s, ids, weights

    def forward(self, u):
        """u [B, T, d] (the normed residual). Returns (y [B, T, d], ids [B, T, K] int64,
        balance [] = mean over rows of sum_i f_i P_i, WITHOUT alpha)."""
        cfg = self.cfg
        bsz, t, d = u.shape
        x = u.reshape(-1, d)
        s64, s, ids, weights = self.route(x)
        # Routed experts: every token goes to all its K experts (no capacity, no dropping).
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero(ids == e, as_tuple=True)
            if token.numel() == 0:
                continue
            out = expert(x[token]) * weights[token, slot][:, None]
            y = y.index_add(0, token, out)
        if cfg.n_shared_experts > 0:
            y = y + self.shared_experts(x)
        balance = self.balance(s64.view(bsz, t, -1), s.detach().view(bsz, t, -1))
        return y.view(bsz, t, d), ids.view(bsz, t, -1), balance

    def balance(self, s64, s_sel):
        """Sequence-wise balance term of one layer (spec §3.5 with §11.3), in float64:
        per row, f_i = E / (K T) * #{t : i in TopK(s_t)} (unbiased s, all experts, no group limit,
        ties to the lower index; a constant), P_i = mean_t s_{i,t} / sum_j s_{j,t};
        returns mean over rows of sum_i f_i P_i.  s64 [B, T, E] (with grad), s_sel [B, T, E] the
        routing-precision s used for the top-K."""
        cfg = self.cfg
        bsz, t, e = s64.shape
        k = cfg.num_experts_per_tok
        with torch.no_grad():
            top = stable_topk(s_sel.reshape(-1, e), k)
            hits = torch.zeros(bsz * t, e, dtype=torch.float64)
            hits.scatter_(1, top, 1.0)
            f = hits.view(bsz, t, e).sum(1) * (e / (k * t))  # [B, E]
        p = (s64 / s64.sum(-1, keepdim=True)).mean(1)  # [B, E]
        return (f * p).sum(-1).mean()


# ---- Blocks, MTP, the model ----------------------------------------------------------------------

class DecoderLayer(nn.Module):
    """Pre-norm block: x += MLA(norm(x)); x += FFN(norm(x)) with a dense or MoE FFN."""

    def __init__(self, cfg, prec, index):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MLA(cfg, prec)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.is_moe = cfg.is_moe_layer(index)
        if self.is_moe:
            self.mlp = MoE(cfg, prec)
        else:
            self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, prec.gemm_mode("block"))

    def forward(self, x, cos, sin):
        """x [B, T, d] -> (x [B, T, d], routing): routing is None for a dense layer, else
        (ids [B, T, K], balance term without alpha)."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        u = self.post_attention_layernorm(x)
        if self.is_moe:
            y, ids, balance = self.mlp(u)
            return x + y, (ids, balance)
        return x + self.mlp(u), None


class SharedHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class MTPLayer(DecoderLayer):
    """The depth-1 MTP module (spec §4, §11.2): enorm, hnorm, eh_proj [d, 2d], a full block, and
    shared_head.norm; the embedding and lm_head are the main model's."""

    def __init__(self, cfg, prec, index):
        super().__init__(cfg, prec, index)
        self.enorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.eh_proj = Linear(2 * cfg.hidden_size, cfg.hidden_size, prec.gemm_mode("block"))
        self.shared_head = SharedHead(cfg)

    def forward_mtp(self, emb_next, h, cos, sin):
        """emb_next [B, T-1, d] = Emb(t_{i+1}), h [B, T-1, d] = main hidden h_i (before model.norm).
        Returns (shared_head.norm output [B, T-1, d], routing)."""
        x = self.eh_proj(torch.cat([self.enorm(emb_next), self.hnorm(h)], dim=-1))
        x, routing = self.forward(x, cos, sin)
        return self.shared_head.norm(x), routing


class Backbone(nn.Module):
    def __init__(self, cfg, prec):
        super().__init__()
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        layers = [DecoderLayer(cfg, prec, i) for i in range(cfg.num_hidden_layers)]
        if cfg.has_mtp:
            layers.append(MTPLayer(cfg, prec, cfg.num_hidden_layers))
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DeepseekV3(nn.Module):
    """The whole model. forward(tokens) computes the §11 loss and everything `eval` writes."""

    def __init__(self, cfg, precision="fp64"):
        super().__init__()
        self.cfg = cfg
        self.prec = precision if isinstance(precision, Precision) else Precision(precision)
        self.model = Backbone(cfg, self.prec)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, self.prec.gemm_mode("head"))
        have = {n: tuple(p.shape) for n, p in self.named_parameters()}
        assert have == dict(parameter_shapes(cfg)), "module layout differs from parameter_shapes"
        self.to(self.prec.dtype)

    def load_weights(self, tensors):
        """tensors: name -> numpy array (any float dtype). Every parameter must be present with its
        shape, and nothing else may be; values are converted to the precision's dtype."""
        params = dict(self.named_parameters())
        missing = [n for n in params if n not in tensors]
        extra = [n for n in tensors if n not in params]
        if missing or extra:
            raise ValueError(f"weights: missing {missing[:5]} ({len(missing)}), "
                             f"unexpected {extra[:5]} ({len(extra)})")
        with torch.no_grad():
            for name, p in params.items():
                arr = tensors[name]
                if tuple(arr.shape) != tuple(p.shape):
                    raise ValueError(f"weights: {name} has shape {tuple(arr.shape)}, "
                                     f"expected {tuple(p.shape)}")
                p.copy_(torch.from_numpy(arr.astype("float64")).to(p.dtype))

    def forward(self, tokens, mtp_loss_weight=0.3, seq_aux_loss_alpha=1e-4):
        """tokens [B, T+1] integer ids t_0..t_T. Returns a dict with the scalar tensors loss,
        main_loss, mtp_loss, balance_loss; logits [B, T, V]; experts: a list over MoE layers (main
        layers in order, then MTP) of int64 [B, T, K] (MTP: position T-1 is -1); with MTP also
        mtp_logits [B, T-1, V] (position i predicts t_{i+2})."""
        cfg, dt = self.cfg, self.prec.dtype
        tokens = tokens.long()
        bsz, t1 = tokens.shape
        t = t1 - 1
        if t < 1 or (cfg.has_mtp and t < 2):
            raise ValueError(f"tokens [B, {t1}]: need T+1 >= {3 if cfg.has_mtp else 2} columns")
        if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
            raise ValueError(f"token ids must lie in [0, {cfg.vocab_size})")
        inputs, targets = tokens[:, :t], tokens[:, 1:]
        cos, sin = rope_table(cfg, t, dt)
        embed = self.model.embed_tokens
        x = embed(inputs)
        routing = []
        for layer in self.model.layers[:cfg.num_hidden_layers]:
            x, r = layer(x, cos, sin)
            if r is not None:
                routing.append(r)
        h_last = x  # the last main block's output, before model.norm (spec §11.2)
        logits = self.lm_head(self.model.norm(h_last))
        vocab = cfg.vocab_size
        main_loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        experts = [ids for ids, _ in routing]
        result = {"logits": logits, "experts": experts}
        mtp_loss = torch.zeros((), dtype=dt)
        if cfg.has_mtp:
            mtp = self.model.layers[cfg.num_hidden_layers]
            emb_next = embed(tokens[:, 1:t])  # Emb(t_{i+1}), i = 0..T-2
            hm, r = mtp.forward_mtp(emb_next, h_last[:, :t - 1], cos[:t - 1], sin[:t - 1])
            mtp_logits = self.lm_head(hm)
            result["mtp_logits"] = mtp_logits
            mtp_loss = F.cross_entropy(mtp_logits.reshape(-1, vocab), tokens[:, 2:].reshape(-1))
            routing.append(r)
            ids = r[0]
            pad = torch.full((bsz, 1, ids.shape[2]), -1, dtype=ids.dtype)
            experts.append(torch.cat([ids, pad], dim=1))
        balance = torch.zeros((), dtype=torch.float64)
        for _, b in routing:
            balance = balance + b
        balance_loss = (seq_aux_loss_alpha * balance).to(dt)
        loss = main_loss + mtp_loss_weight * mtp_loss + balance_loss
        result.update(loss=loss, main_loss=main_loss, mtp_loss=mtp_loss, balance_loss=balance_loss)
        return result


def gradients(model):
    """name -> gradient tensor for every parameter (zeros where autograd gave none: the router
    bias, which only selects, and experts no token chose)."""
    params = dict(model.named_parameters())
    out = OrderedDict()
    for name in parameter_shapes(model.cfg):
        p = params[name]
        out[name] = p.grad if p.grad is not None else torch.zeros_like(p)
    return out
