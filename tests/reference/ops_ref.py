"""PyTorch (1.13) reference for dsv3's model primitives (kernels/cpu/*_test.cc, kernels_ops_test).

  ops_ref.py ROOT

ROOT/<op>/<case>/ holds params.txt ("key value" lines) and the case's input arrays (.npy, written by
kernels/cpu/ops_reference.cc); for every case this script writes the reference outputs beside them
as ref_<name>.npy. Everything is computed in float64 from the float32 inputs, gradients with
autograd; integer decisions (routing, dispatch order) use the float32 values the kernels see, with
the documented tie-breaking (equal values: lower index first), so they can be compared exactly.
One process handles every case because importing torch is slow.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_grad_enabled(True)


class Case:
    def __init__(self, path):
        self.path = path
        self.params = {}
        with open(os.path.join(path, "params.txt")) as f:
            for line in f:
                if line.strip():
                    k, v = line.split()
                    self.params[k] = v

    def f(self, key):
        return float(self.params[key])

    def i(self, key):
        return int(self.params[key])

    def np(self, name):
        return np.load(os.path.join(self.path, name + ".npy"))

    def t64(self, name, grad=False):
        """A float64 tensor of a float32 input."""
        t = torch.from_numpy(self.np(name).astype(np.float64))
        return t.requires_grad_(grad)

    def save(self, name, value):
        if isinstance(value, torch.Tensor):
            value = value.detach().numpy()
        np.save(os.path.join(self.path, "ref_" + name + ".npy"), np.ascontiguousarray(value))


def stable_desc_order(values):
    """Indices sorting a 1-D float array in descending order, equal values by lower index."""
    return np.argsort(-values, kind="stable")


# ---- RMSNorm ----------------------------------------------------------------------------------
def rmsnorm(c):
    x, g = c.t64("x", True), c.t64("g", True)
    eps = c.f("eps")
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g
    y.backward(c.t64("dy"))
    c.save("y", y)
    c.save("dx", x.grad)
    c.save("dg", c.t64("dg0") + g.grad)


# ---- RoPE ---------------------------------------------------------------------------------------
def yarn_theta(d, base, factor, l0, beta_fast, beta_slow):
    """V3code precompute_freqs_cis, in float64."""
    theta = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))

    def correction_dim(rot):
        return d * math.log(l0 / (rot * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), d - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(d // 2, dtype=torch.float64) - low) / (high - low), 0, 1)
    smooth = 1 - ramp
    return theta / factor * (1 - smooth) + theta * smooth


def case_theta(c):
    d, base = c.i("d_rope"), c.f("rope_theta")
    if c.i("yarn"):
        return yarn_theta(d, base, c.f("factor"), c.f("l0"), c.f("beta_fast"), c.f("beta_slow"))
    return base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)


def rope(c):
    """x: [tokens, heads, d_rope]; complex multiplication of adjacent pairs (V3code)."""
    x = c.t64("x", True)
    tokens, heads, d = x.shape
    pos = torch.from_numpy(c.np("pos").astype(np.float64))
    theta = case_theta(c)
    angle = pos[:, None] * theta[None, :]
    rot = torch.polar(torch.ones_like(angle), angle)[:, None, :]
    xc = torch.view_as_complex(x.reshape(tokens, heads, d // 2, 2))
    y = torch.view_as_real(xc * rot).reshape(tokens, heads, d)
    y.backward(c.t64("dy"))
    c.save("y", y)
    c.save("dx", x.grad)
    c.save("theta", theta)


def yarn(c):
    c.save("theta", case_theta(c))


# ---- SwiGLU -------------------------------------------------------------------------------------
def swiglu(c):
    gu = c.t64("gate_up", True)
    inter = gu.shape[1] // 2
    h = F.silu(gu[:, :inter]) * gu[:, inter:]
    h.backward(c.t64("dh"))
    c.save("h", h)
    c.save("dgate_up", gu.grad)


# ---- Router -------------------------------------------------------------------------------------
def route(logits32, bias32, n_groups, topk_groups, top_k):
    """Selection on float32 scores exactly as the kernel ranks them. Returns ids [tokens, top_k]."""
    s32 = torch.sigmoid(torch.from_numpy(logits32.astype(np.float64))).float().numpy()
    biased = (s32 + bias32).astype(np.float32)  # float32 add
    tokens, n = biased.shape
    gs = n // n_groups
    ids = np.zeros((tokens, top_k), dtype=np.int32)
    for t in range(tokens):
        masked = biased[t].copy()
        if n_groups > 1:
            scores = np.zeros(n_groups, dtype=np.float32)
            for g in range(n_groups):
                top = np.sort(biased[t, g * gs:(g + 1) * gs])[::-1][:min(2, gs)]
                scores[g] = top[0] + top[1] if len(top) == 2 else top[0]  # float32 add
            keep = stable_desc_order(scores)[:topk_groups]
            for g in range(n_groups):
                if g not in keep:
                    masked[g * gs:(g + 1) * gs] = -np.inf
        ids[t] = stable_desc_order(masked)[:top_k]
    return ids


def router(c):
    logits32, bias32 = c.np("logits"), c.np("bias")
    n = logits32.shape[1]
    ids = route(logits32, bias32, c.i("n_groups"), c.i("topk_groups"), c.i("top_k"))
    l = c.t64("logits", True)
    chosen = torch.sigmoid(l).gather(1, torch.from_numpy(ids.astype(np.int64)))
    w = chosen / chosen.sum(-1, keepdim=True) * c.f("scale")
    w.backward(c.t64("dweights"))
    c.save("ids", ids)
    c.save("weights", w)
    c.save("load", np.bincount(ids.reshape(-1), minlength=n).astype(np.int32))
    c.save("dlogits", l.grad)


def balance(c):
    rows, seq, k, n = c.i("rows"), c.i("seq_len"), c.i("top_k"), c.i("n_experts")
    alpha, divisor = c.f("alpha"), c.i("divisor")
    l = c.t64("logits", True)
    s = torch.sigmoid(l)
    s32 = s.detach().float().numpy()
    count = np.zeros((rows, n))
    for t in range(rows * seq):
        for e in stable_desc_order(s32[t])[:k]:
            count[t // seq, e] += 1
    f = torch.from_numpy(count * n / (k * seq))
    p = (s / s.sum(-1, keepdim=True)).reshape(rows, seq, n).mean(1)
    loss = alpha * (f * p).sum() / divisor
    (loss * c.f("grad_scale")).backward()
    c.save("loss", np.array([loss.item()]))
    c.save("dlogits", c.t64("dlogits0") + l.grad)


# ---- Permute ------------------------------------------------------------------------------------
def permute(c):
    ids = c.np("ids").astype(np.int64)
    tokens, k = ids.shape
    n = c.i("n_experts")
    tok, slot = np.nonzero(ids >= 0)  # row-major: by token, then slot
    exp = ids[tok, slot]
    order = np.lexsort((slot, tok, exp))  # by expert, then token, then slot
    rows = len(order)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(exp, minlength=n))])
    row_token = np.full(tokens * k, -1)
    row_token[:rows] = tok[order]
    slot_row = np.full(tokens * k, -1)
    slot_row[tok[order] * k + slot[order]] = np.arange(rows)

    x = c.t64("x", True)
    x_perm = x[torch.from_numpy(row_token[:rows])]
    x_perm.backward(c.t64("dx_perm"))

    eo, w = c.t64("expert_out", True), c.t64("weights", True)
    hidden = eo.shape[1]
    padded = torch.cat([eo, torch.zeros(1, hidden, dtype=torch.float64)])
    sr = torch.from_numpy(np.where(slot_row >= 0, slot_row, rows).reshape(tokens, k))
    y = (w[:, :, None] * padded[sr]).sum(1)
    y.backward(c.t64("dy"))

    c.save("offsets", offsets.astype(np.int32))
    c.save("row_token", row_token.astype(np.int32))
    c.save("slot_row", slot_row.astype(np.int32))
    c.save("x_perm", x_perm)
    c.save("dx", x.grad)
    c.save("y", y)
    c.save("d_expert_out", eo.grad)
    c.save("dweights", w.grad)


# ---- Embedding ----------------------------------------------------------------------------------
def embedding(c):
    table = c.t64("table", True)
    out = F.embedding(torch.from_numpy(c.np("ids").astype(np.int64)), table)
    out.backward(c.t64("dout"))
    c.save("out", out)
    c.save("dtable", c.t64("dtable0") + table.grad)


# ---- Cross-entropy ------------------------------------------------------------------------------
def cross_entropy(c):
    logits = c.t64("logits", True)
    targets = torch.from_numpy(c.np("targets").astype(np.int64))
    ignore = c.i("ignore_index")
    count = c.i("count")
    if count == 0:
        count = int((targets != ignore).sum())
    losses = F.cross_entropy(logits, targets, ignore_index=ignore, reduction="none")
    loss = losses.sum() / count
    (loss * c.f("grad_scale")).backward()
    c.save("loss", np.array([loss.item()]))
    c.save("dlogits", logits.grad)


# ---- AdamW --------------------------------------------------------------------------------------
def bf16(t):
    """Round to BF16 (nearest even) as the kernel stores moments, back to float64."""
    return t.float().to(torch.bfloat16).double()


def adamw(c):
    p = torch.nn.Parameter(c.t64("param"))
    decay = c.i("decay")
    opt = torch.optim.AdamW([p], lr=c.f("lr"), betas=(c.f("beta1"), c.f("beta2")), eps=c.f("eps"),
                            weight_decay=c.f("weight_decay") if decay else 0.0, foreach=False)
    p.grad = c.t64("grad") * c.f("grad_scale")
    opt.state[p] = {"step": torch.tensor(float(c.i("step") - 1)),
                    "exp_avg": c.t64("m"), "exp_avg_sq": c.t64("v")}
    opt.step()
    st = opt.state[p]
    c.save("param", p)
    c.save("m", st["exp_avg"])
    c.save("v", st["exp_avg_sq"])
    c.save("m_bf16", bf16(st["exp_avg"]))
    c.save("v_bf16", bf16(st["exp_avg_sq"]))


def grad_norm(c):
    total = 0.0
    for i in range(c.i("count")):
        x = c.np("b%d" % i).astype(np.float64)
        total += float(np.sum(x * x))
    c.save("sum_sq", np.array([total]))


OPS = {
    "rmsnorm": rmsnorm, "rope": rope, "yarn": yarn, "swiglu": swiglu, "router": router,
    "balance": balance, "permute": permute, "embedding": embedding,
    "cross_entropy": cross_entropy, "adamw": adamw, "grad_norm": grad_norm,
}


def main():
    root = sys.argv[1]
    for op in sorted(os.listdir(root)):
        if not os.path.isdir(os.path.join(root, op)):
            continue
        if op not in OPS:
            raise SystemExit("unknown op %r in %s" % (op, root))
        for name in sorted(os.listdir(os.path.join(root, op))):
            try:
                OPS[op](Case(os.path.join(root, op, name)))
            except Exception as e:
                raise SystemExit("%s/%s: %r" % (op, name, e))


if __name__ == "__main__":
    main()
