"""Cross-check of the demo's training dynamics: trains bench/torch_model_step.py's Hugging Face-style
copy of the model (checked there against the reference) with PyTorch's AdamW on the same recipe as
`dsv3-train run` (spec §11.10: betas 0.9/0.95, eps 1e-8, weight decay on matrices only, linear
warm-up then cosine to min_lr, global-norm clipping; gradient accumulation over the micro-batches;
the aux-loss-free bias update once per step) and reports the validation main loss on the first
val_rows windows of the validation shard, as the trainer does. The data order differs from dsv3's
(its own random windows), so only the trajectory is comparable, not the bits.

  /usr/bin/python3 bench/torch_train_quality.py --steps=60 [--threads=2] [--spec=docs/examples/brown-tiny.json]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_model_step as tms  # noqa: E402  (also puts tests/reference on the path)

ref = tms.ref


def read_shard(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1024), dtype="<i4")
        return np.frombuffer(f.read(), dtype="<u2" if header[1] == 1 else "<u4").astype(np.int64)


def main_loss(model, tokens):
    cfg = model.cfg
    t = tokens.shape[1] - 1
    cos, sin = ref.rope_table(cfg, t, torch.float32)
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    x = model.model.embed_tokens(tokens[:, :t])
    for layer in model.model.layers[:cfg.num_hidden_layers]:
        x, _ = layer(x, cos, sin, mask)
    logits = model.lm_head(model.model.norm(x))
    return F.cross_entropy(logits.reshape(-1, cfg.vocab_size), tokens[:, 1:].reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=os.path.join(HERE, "..", "docs", "examples", "brown-tiny.json"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val_rows", type=int, default=512)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "data", "brown"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = json.load(open(args.spec))
    tr = spec["train"]
    cfg = ref.Config(spec["model"])
    steps, t = args.steps, tr["seq_len"]
    rows = tr["global_batch_tokens"] // t
    micro = spec["parallel"]["micro_batches"]
    lr, min_lr = tr["lr"], tr.get("min_lr", tr["lr"] / 10)
    warmup = min(tr.get("warmup_steps", 0), max(1, steps // 10))
    gamma = tr.get("bias_update_speed", 0.001)
    gen = torch.Generator().manual_seed(tr.get("seed", 1))
    model = tms.HfStyleModel(cfg)
    tms.init_parameters(model, 0.006, gen)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters()
                if p.dim() == 1 and not n.endswith("e_score_correction_bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tr.get("weight_decay", 0.1)},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    train, val = read_shard(f"{args.data}/train.bin"), read_shard(f"{args.data}/val.bin")
    windows = (len(train) - 1) // t
    rng = np.random.default_rng(1)
    val_tokens = torch.as_tensor(np.stack([val[i * t:i * t + t + 1] for i in range(args.val_rows)]))
    moes = [layer.mlp for layer in model.model.layers if isinstance(layer.mlp, tms.MoE)]
    for moe in moes:  # remember each MoE's last routing for the bias update
        def select(s, bias, moe=moe, original=moe.select):
            moe.last_ids = original(s, bias)
            return moe.last_ids
        moe.select = select

    def lr_at(s):
        if s < warmup:
            return lr * (s + 1) / warmup
        progress = (s - warmup) / max(1, steps - warmup)
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def validate(step):
        with torch.no_grad():
            losses = [float(main_loss(model, val_tokens[i:i + 64])) for i in range(0, args.val_rows, 64)]
        print(f"val step {step}/{steps}: main {sum(losses) / len(losses):.4f}", flush=True)

    start = time.time()
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        opt.zero_grad(set_to_none=True)
        picks = rng.choice(windows, size=rows, replace=False)
        batch = torch.as_tensor(np.stack([train[w * t:w * t + t + 1] for w in picks]))
        loads = [torch.zeros(cfg.n_routed_experts) for _ in moes]
        total = 0.0
        for m in range(micro):
            mb = batch[m * rows // micro:(m + 1) * rows // micro]
            loss = model(mb) / micro
            loss.backward()
            total += float(loss)
            for i, moe in enumerate(moes):
                if getattr(moe, "last_ids", None) is not None:
                    loads[i] += torch.bincount(moe.last_ids.reshape(-1), minlength=cfg.n_routed_experts)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tr.get("grad_clip", 1.0))
        opt.step()
        with torch.no_grad():
            for moe, load in zip(moes, loads):
                if load.sum() > 0:
                    moe.gate.e_score_correction_bias += gamma * torch.sign(load.mean() - load)
        print(f"step {s + 1}/{steps} loss {total:.4f} gnorm {float(norm):.3f} "
              f"({time.time() - start:.0f} s)", flush=True)
        if (s + 1) % max(1, steps // 5) == 0:
            validate(s + 1)


if __name__ == "__main__":
    main()
