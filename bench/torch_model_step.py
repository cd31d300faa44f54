#!/usr/bin/python3
"""The PyTorch baseline for bench/model_step_bench.cc: one training step (forward + loss.backward())
of the same DeepSeek-V3 model on the demo config (docs/examples/brown-tiny.json), random weights and
random tokens, in fp32 and under torch.autocast("cpu", dtype=torch.bfloat16), with a chosen thread
count. bench/model_speed.sh runs both and prints the comparison. Not a test.

Why a second PyTorch model: the test oracle tests/reference/deepseek_v3_model.py fails under
autocast (its MoE index_add adds BF16 expert outputs into an FP32 buffer: "index_add_(): self
(Float) and source (BFloat16) must have the same scalar type"). So the timing runs `HfStyleModel`
below, the same architecture written the way Hugging Face's DeepseekV3 modeling code writes it:
nn.Linear layers (separate gate_proj / up_proj), RMSNorm computed in FP32, MLA in its naive form
with decoupled interleaved RoPE and a causal mask, the sigmoid router with the selection-only bias
and group-limited top-K (router GEMM in FP32 like the C++ model's), a per-expert loop gathering
each expert's tokens and index_add-ing the weighted outputs into an FP32 buffer (DeepseekV3MoE), the
shared expert, the sequence-wise balance loss, and the depth-1 MTP module; loss = main + 0.3 * mtp
+ 1e-4 * balance. It uses the oracle's parameter names, so before timing the script loads the
oracle's weights into it and checks, in FP32, that loss and gradients agree with the oracle
(same math), then checks that autocast really runs its projections in BF16 and that the autocast
loss is within 2% of the FP32 one.

Usage: torch_model_step.py [--batch=16] [--seq=128] [--threads=1] [--modes=fp32,bf16]
                           [--steps=5] [--warmup=2] [--seed=1] [--config=PATH]
Modes: fp32, bf16 (autocast), ref_fp32 (the oracle itself in FP32, for comparison).
Prints one line per mode:
  "mode=<m> tokens_per_s=<median> step_s=<median> min_s=<min> max_s=<max>
   cpu_tokens_per_s=<median> cpu_s=<median> loss=<first>"
(step_s wall clock, cpu_s the process's CPU time per step, as model_step_bench prints them;
gradients are zeroed between steps outside the timed region.)
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import deepseek_v3_model as ref  # noqa: E402

MTP_LOSS_WEIGHT = 0.3
SEQ_AUX_LOSS_ALPHA = 1e-4

# ---- The Hugging Face-style model ----------------------------------------------------------------


class RMSNorm(nn.Module):
    """HF DeepseekV3RMSNorm: computed in FP32, returned in the input dtype."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class MLP(nn.Module):
    """HF DeepseekV3MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim, inter):
        super().__init__()
        self.gate_proj = nn.Linear(dim, inter, bias=False)
        self.up_proj = nn.Linear(dim, inter, bias=False)
        self.down_proj = nn.Linear(inter, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """HF DeepseekV3Attention (eager): q_a -> norm -> q_b, kv_a_with_mqa -> norm -> kv_b, RoPE on
    the decoupled parts (one shared key), softmax(QK^T * scale + causal mask) in FP32, PV, o_proj."""

    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_attention_heads
        self.cfg = cfg
        self.q_a_proj = nn.Linear(d, cfg.q_lora_rank, bias=False)
        self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps)
        self.q_b_proj = nn.Linear(cfg.q_lora_rank, h * cfg.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, h * (cfg.qk_nope_head_dim + cfg.v_head_dim),
                                   bias=False)
        self.o_proj = nn.Linear(h * cfg.v_head_dim, d, bias=False)
        self.scale = ref.softmax_scale(cfg)

    def forward(self, x, cos, sin, mask):
        cfg = self.cfg
        bsz, t, _ = x.shape
        h, nope, rope, dv = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim,
                             cfg.v_head_dim)
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))).view(bsz, t, h, nope + rope)
        q_nope, q_pe = q.split([nope, rope], dim=-1)
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([cfg.kv_lora_rank, rope], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(c_kv)).view(bsz, t, h, nope + dv)
        k_nope, v = kv.split([nope, dv], dim=-1)
        q_pe = ref.apply_rope(q_pe, cos, sin)
        k_pe = ref.apply_rope(k_pe.reshape(bsz, t, 1, rope), cos, sin)
        q = torch.cat([q_nope, q_pe.to(q_nope.dtype)], dim=-1).transpose(1, 2)  # [B, h, T, dq]
        k = torch.cat([k_nope, k_pe.to(k_nope.dtype).expand(bsz, t, h, rope)],
                      dim=-1).transpose(1, 2)
        v = v.transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale
        scores = scores.masked_fill(mask, float("-inf"))
        p = F.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        o = torch.matmul(p, v).transpose(1, 2).reshape(bsz, t, h * dv)
        return self.o_proj(o)


class Gate(nn.Module):
    """The router's parameters (HF DeepseekV3TopkRouter)."""

    def __init__(self, cfg):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        self.register_parameter("e_score_correction_bias", nn.Parameter(
            torch.zeros(cfg.n_routed_experts), requires_grad=False))


class MoE(nn.Module):
    """HF DeepseekV3MoE: route, loop over experts (index_add into an FP32 buffer), shared expert.
    Returns (y, balance term without alpha)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.gate = Gate(cfg)
        self.experts = nn.ModuleList(
            MLP(cfg.hidden_size, cfg.moe_intermediate_size) for _ in range(cfg.n_routed_experts))
        self.shared_experts = MLP(cfg.hidden_size,
                                  cfg.n_shared_experts * cfg.moe_intermediate_size)

    def select(self, s, bias):
        """Biased, group-limited top-K (the oracle's MoE.select: spec §11.5). s [N, E] -> [N, K]."""
        cfg = self.cfg
        n = s.shape[0]
        biased = s + bias
        grouped = biased.view(n, cfg.n_group, cfg.group_size)
        group_score = grouped.topk(2, dim=-1).values.sum(-1)  # [N, G]
        kept = ref.stable_topk(group_score, cfg.topk_group)
        keep = torch.zeros(n, cfg.n_group, dtype=torch.bool)
        keep.scatter_(1, kept, True)
        keep = keep[:, :, None].expand(n, cfg.n_group, cfg.group_size).reshape(n, -1)
        return ref.stable_topk(biased.masked_fill(~keep, float("-inf")), cfg.num_experts_per_tok)

    def forward(self, u):
        cfg = self.cfg
        bsz, t, d = u.shape
        x = u.reshape(-1, d)
        with torch.autocast("cpu", enabled=False):  # the router GEMM stays FP32
            logits = x.float() @ self.gate.weight.float().T
        s64 = torch.sigmoid(logits.double())
        s = s64.float()
        with torch.no_grad():
            ids = self.select(s.detach(), self.gate.e_score_correction_bias.float())
        chosen = s.gather(1, ids)
        weights = chosen / chosen.sum(-1, keepdim=True) * cfg.routed_scaling_factor  # [N, K]
        y = torch.zeros(x.shape, dtype=torch.float32)
        one_hot = F.one_hot(ids, cfg.n_routed_experts).permute(2, 0, 1)  # [E, N, K]
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(one_hot[e])
            if token.numel() == 0:
                continue
            out = expert(x[token]) * weights[token, slot, None]
            y = y.index_add(0, token, out.to(y.dtype))
        y = y.to(x.dtype) + self.shared_experts(x)
        return y.view(bsz, t, d), self.balance(s64.view(bsz, t, -1), s.detach().view(bsz, t, -1))

    def balance(self, s64, s_sel):
        """The oracle's MoE.balance (spec §3.5 with §11.3), in float64."""
        cfg = self.cfg
        bsz, t, e = s64.shape
        k = cfg.num_experts_per_tok
        with torch.no_grad():
            top = ref.stable_topk(s_sel.reshape(-1, e), k)
            hits = torch.zeros(bsz * t, e, dtype=torch.float64)
            hits.scatter_(1, top, 1.0)
            f = hits.view(bsz, t, e).sum(1) * (e / (k * t))
        p = (s64 / s64.sum(-1, keepdim=True)).mean(1)
        return (f * p).sum(-1).mean()


class DecoderLayer(nn.Module):
    def __init__(self, cfg, index):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.is_moe = cfg.is_moe_layer(index)
        self.mlp = MoE(cfg) if self.is_moe else MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin, mask):
        """-> (x, balance or None)."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        u = self.post_attention_layernorm(x)
        if self.is_moe:
            y, balance = self.mlp(u)
            return x + y, balance
        return x + self.mlp(u), None


class SharedHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class MTPLayer(DecoderLayer):
    def __init__(self, cfg, index):
        super().__init__(cfg, index)
        self.enorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.shared_head = SharedHead(cfg)


class Backbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        layers = [DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers)]
        if cfg.has_mtp:
            layers.append(MTPLayer(cfg, cfg.num_hidden_layers))
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class HfStyleModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        have = {n: tuple(p.shape) for n, p in self.named_parameters()}
        assert have == dict(ref.parameter_shapes(cfg)), "layout differs from the oracle's"

    def forward(self, tokens):
        """tokens [B, T+1] -> the scalar loss (main + 0.3 mtp + 1e-4 balance)."""
        cfg = self.cfg
        t = tokens.shape[1] - 1
        cos, sin = ref.rope_table(cfg, t, torch.float32)
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        embed = self.model.embed_tokens
        x = embed(tokens[:, :t])
        balance = torch.zeros((), dtype=torch.float64)
        for layer in self.model.layers[:cfg.num_hidden_layers]:
            x, b = layer(x, cos, sin, mask)
            balance = balance if b is None else balance + b
        logits = self.lm_head(self.model.norm(x))
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size).float(),
                               tokens[:, 1:].reshape(-1))
        if cfg.has_mtp:
            mtp = self.model.layers[cfg.num_hidden_layers]
            h = torch.cat([mtp.enorm(embed(tokens[:, 1:t])), mtp.hnorm(x[:, :t - 1])], dim=-1)
            hm, b = mtp(mtp.eh_proj(h), cos[:t - 1], sin[:t - 1], mask[:t - 1, :t - 1])
            balance = balance + b
            mtp_logits = self.lm_head(mtp.shared_head.norm(hm))
            loss = loss + MTP_LOSS_WEIGHT * F.cross_entropy(
                mtp_logits.reshape(-1, cfg.vocab_size).float(), tokens[:, 2:].reshape(-1))
        return loss + (SEQ_AUX_LOSS_ALPHA * balance).float()


# ---- Checks and timing ---------------------------------------------------------------------------


def init_parameters(model, std, generator):
    """The C++ InitParameters distribution (spec §11.8): matrices ~ N(0, std^2), RMSNorm gains 1,
    router biases 0 (the values themselves differ: another generator)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("e_score_correction_bias"):
                p.zero_()
            elif p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=generator)


def check_against_oracle(model, cfg, tokens):
    """FP32: the oracle with the same weights must give the same loss and gradients. Raises."""
    oracle = ref.DeepseekV3(cfg, "fp32")
    oracle.load_state_dict(model.state_dict())
    model.zero_grad(set_to_none=True)
    loss = model(tokens)
    loss.backward()
    want = oracle(tokens, MTP_LOSS_WEIGHT, SEQ_AUX_LOSS_ALPHA)["loss"]
    want.backward()
    if abs(float(loss) - float(want)) > 1e-5 * abs(float(want)):
        raise RuntimeError(f"loss {float(loss)} != oracle {float(want)}")
    grads = dict(oracle.named_parameters())
    worst = (0.0, "")
    for name, p in model.named_parameters():
        g, r = p.grad, grads[name].grad
        if g is None or r is None:
            if (g is None) != (r is None) and float((g if g is not None else r).abs().max()) > 0:
                raise RuntimeError(f"{name}: gradient present on one side only")
            continue
        err = float((g - r).abs().max()) / max(float(r.abs().max()), 1e-30)
        worst = max(worst, (err, name))
    if worst[0] > 1e-3:
        raise RuntimeError(f"gradient of {worst[1]} differs from the oracle's: rel {worst[0]:.3g}")
    model.zero_grad(set_to_none=True)
    return float(want), worst


def check_autocast(model, tokens):
    """Autocast must reach the projections: the dtypes of a few Linear outputs are recorded."""
    seen = {}
    names = ["model.layers.0.self_attn.q_a_proj", "model.layers.1.mlp.experts.0.down_proj",
             "model.layers.1.mlp.shared_experts.down_proj", "lm_head"]
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, o.dtype))
             for n, m in model.named_modules() if n in names]
    with torch.no_grad():
        loss32 = float(model(tokens))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss16 = float(model(tokens))
    for h in hooks:
        h.remove()
    if sorted(seen) != sorted(names) or any(d != torch.bfloat16 for d in seen.values()):
        raise RuntimeError(f"autocast did not reach the GEMMs: {seen}")
    if not (math.isfinite(loss16) and abs(loss16 - loss32) <= 0.02 * abs(loss32)):
        raise RuntimeError(f"autocast loss {loss16} vs fp32 loss {loss32}")
    return loss16


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--config", default=os.path.join(ROOT, "docs", "examples", "brown-tiny.json"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.config) as f:
        cfg = ref.Config(json.load(f))
    gen = torch.Generator().manual_seed(args.seed)
    model = HfStyleModel(cfg)
    init_parameters(model, 0.006, gen)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=gen)
    loss_oracle, (grad_err, grad_name) = check_against_oracle(model, cfg, tokens)
    loss_bf16 = check_autocast(model, tokens)
    print(f"config={os.path.basename(args.config)} batch={args.batch} seq={args.seq} "
          f"tokens={args.batch * args.seq} threads={torch.get_num_threads()} "
          f"torch={torch.__version__} steps={args.steps} warmup={args.warmup} "
          f"oracle_loss={loss_oracle:.6f} worst_grad_rel_err={grad_err:.2e} ({grad_name}) "
          f"autocast_loss={loss_bf16:.6f}", flush=True)

    oracle = None
    for mode in args.modes.split(","):
        if mode not in ("fp32", "bf16", "ref_fp32"):
            raise SystemExit(f"mode {mode!r} must be fp32, bf16 or ref_fp32")
        net = model
        if mode == "ref_fp32":
            if oracle is None:
                oracle = ref.DeepseekV3(cfg, "fp32")
                oracle.load_state_dict(model.state_dict())
            net = oracle

        def step():
            if mode == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = net(tokens)
            elif mode == "ref_fp32":
                loss = net(tokens, MTP_LOSS_WEIGHT, SEQ_AUX_LOSS_ALPHA)["loss"]
            else:
                loss = net(tokens)
            loss.backward()
            return float(loss)

        first = None
        for _ in range(args.warmup):
            net.zero_grad(set_to_none=False)
            loss = step()
            first = loss if first is None else first
        times, cpu_times = [], []
        for _ in range(args.steps):
            net.zero_grad(set_to_none=False)
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            cpu_times.append(time.process_time() - c0)
            times.append(time.perf_counter() - t0)
        med, cpu = statistics.median(times), statistics.median(cpu_times)
        n = args.batch * args.seq
        print(f"mode={mode} tokens_per_s={n / med:.1f} step_s={med:.5f} min_s={min(times):.5f} "
              f"max_s={max(times):.5f} cpu_tokens_per_s={n / cpu:.1f} cpu_s={cpu:.5f} "
              f"loss={first:.6f}", flush=True)


if __name__ == "__main__":
    main()
