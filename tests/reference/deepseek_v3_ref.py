"""Command line of the PyTorch DeepSeek-V3 reference (the oracle for `dsv3-train eval`).

  deepseek_v3_ref.py eval --model=DIR --tokens=FILE.npy --out=DIR [--precision=fp64|fp32|bf16|fp8]
                          [--mtp_loss_weight=0.3] [--seq_aux_loss_alpha=1e-4]
      Writes loss.json, logits.npy, grads.safetensors, experts.npy to --out, as DESIGN.md
      "Model I/O" specifies for `dsv3-train eval`.
  deepseek_v3_ref.py init --config=C.json --out=DIR --seed=S [--std=0.006] [--norm_std=0]
                          [--bias_std=0]
      Random weights (spec §11.8 with the std as an option): config.json + model.safetensors.
  deepseek_v3_ref.py tokens --vocab=V --batch=B --seq=T --seed=S --out=FILE.npy
      Uniform random int32 ids of shape [B, T+1] (T predicted positions).
  deepseek_v3_ref.py compare DIR DIR_REF [--loss_rtol=..] [--logits_rtol=..] [--grad_rtol=..]
                          [--grad_atol=..] [--max_expert_mismatches=0]
      Compares two eval output directories (DIR_REF is the denominator of relative errors);
      exit status 1 if any check fails.
  deepseek_v3_ref.py count --config=C.json|671b
      Parameter counts from the shapes (no allocation).

Run with /usr/bin/python3 (torch + numpy). The model is in deepseek_v3_model.py.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_v3_model as dsm  # noqa: E402
import model_safetensors  # noqa: E402

LOSS_KEYS = ("loss", "main_loss", "mtp_loss", "balance_loss")


# ---- eval ----------------------------------------------------------------------------------------

def load_model(model_dir, precision):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = dsm.Config(json.load(f))
    tensors, _ = model_safetensors.load(os.path.join(model_dir, "model.safetensors"))
    model = dsm.DeepseekV3(cfg, precision)
    model.load_weights(tensors)
    return model


def evaluate(model, tokens, mtp_loss_weight=0.3, seq_aux_loss_alpha=1e-4, with_grads=True):
    """Forward (and backward of `loss`). Returns (losses dict of floats, logits float32 numpy
    [B, T, V], experts int32 numpy [moe layers, B*T, K], grads name -> float32 numpy or None)."""
    model.zero_grad(set_to_none=True)
    out = model(torch.as_tensor(tokens), mtp_loss_weight, seq_aux_loss_alpha)
    grads = None
    if with_grads:
        out["loss"].backward()
        grads = {n: g.detach().float().numpy() for n, g in dsm.gradients(model).items()}
    losses = {k: float(out[k]) for k in LOSS_KEYS}
    logits = out["logits"].detach().float().numpy()
    b, t = tokens.shape[0], tokens.shape[1] - 1
    k = model.cfg.num_experts_per_tok
    if out["experts"]:
        experts = np.stack([e.reshape(b * t, k).numpy() for e in out["experts"]]).astype(np.int32)
    else:
        experts = np.zeros((0, b * t, k), dtype=np.int32)
    return losses, logits, experts, grads


def write_outputs(out_dir, losses, logits, experts, grads):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "loss.json"), "w") as f:
        json.dump({k: losses[k] for k in LOSS_KEYS}, f, indent=2)
        f.write("\n")
    np.save(os.path.join(out_dir, "logits.npy"), logits)
    np.save(os.path.join(out_dir, "experts.npy"), experts)
    if grads is not None:
        model_safetensors.save(os.path.join(out_dir, "grads.safetensors"), grads)


def cmd_eval(args):
    torch.manual_seed(0)
    start = time.time()
    model = load_model(args.model, args.precision)
    tokens = np.load(args.tokens)
    if tokens.dtype != np.int32 or tokens.ndim != 2:
        raise SystemExit(f"{args.tokens}: expected int32 [B, T+1], "
                         f"got {tokens.dtype} {tokens.shape}")
    losses, logits, experts, grads = evaluate(model, tokens, args.mtp_loss_weight,
                                              args.seq_aux_loss_alpha, not args.no_grads)
    write_outputs(args.out, losses, logits, experts, grads)
    print(json.dumps(losses), f"({args.precision}, {time.time() - start:.1f} s)")


# ---- init / tokens -------------------------------------------------------------------------------

def random_weights(cfg, seed, std=0.006, norm_std=0.0, bias_std=0.0):
    """name -> float32 numpy: Linear weights and the embedding ~ N(0, std^2), RMSNorm gains
    1 + N(0, norm_std^2), router biases N(0, bias_std^2) (spec §11.8 is std 0.006, norm_std 0,
    bias_std 0). Drawn in parameter_shapes order from one torch generator seeded with `seed`."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in dsm.parameter_shapes(cfg).items():
        noise = lambda: torch.randn(shape, generator=gen, dtype=torch.float64)
        if name.endswith("norm.weight"):  # every RMSNorm gain (…layernorm, enorm, hnorm, norm)
            w = torch.ones(shape, dtype=torch.float64) + (norm_std * noise() if norm_std else 0)
        elif name.endswith("e_score_correction_bias"):
            w = bias_std * noise() if bias_std else torch.zeros(shape, dtype=torch.float64)
        else:
            w = std * noise()
        out[name] = w.float().numpy()
    return out


def read_config_dict(path):
    with open(path) as f:
        d = json.load(f)
    return d["model"] if isinstance(d.get("model"), dict) else d


def write_model(out_dir, config_dict, tensors, metadata=None):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config_dict, f, indent=2)
        f.write("\n")
    model_safetensors.save(os.path.join(out_dir, "model.safetensors"), tensors,
                           dict(metadata or {}, format="pt"))


def cmd_init(args):
    d = read_config_dict(args.config)
    cfg = dsm.Config(d)
    tensors = random_weights(cfg, args.seed, args.std, args.norm_std, args.bias_std)
    write_model(args.out, d, tensors, {"seed": args.seed, "std": args.std,
                                       "norm_std": args.norm_std, "bias_std": args.bias_std})
    n = sum(t.size for t in tensors.values())
    print(f"wrote {args.out}: {len(tensors)} tensors, {n} parameters")


def random_tokens(vocab, batch, seq, seed):
    """int32 [batch, seq + 1], uniform over [0, vocab)."""
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, seq + 1)).astype(np.int32)


def cmd_tokens(args):
    np.save(args.out, random_tokens(args.vocab, args.batch, args.seq, args.seed))


# ---- compare -------------------------------------------------------------------------------------

def rel_err(a, b, floor=0.0):
    """||a - b|| / max(||b||, floor) in float64; 0 when both are exactly zero."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    diff = np.linalg.norm((a - b).ravel())
    den = max(np.linalg.norm(b.ravel()), floor)
    if diff == 0:
        return 0.0
    return diff / den if den > 0 else math.inf


def worst_element(a, b):
    if a.size == 0:
        return "empty"
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    i = np.unravel_index(int(np.nanargmax(d)) if not np.isnan(d).all() else 0, d.shape)
    return f"worst at {tuple(int(x) for x in i)}: {a[i]!r} vs {b[i]!r} (shape {a.shape})"


def compare_dirs(dir_a, dir_b, loss_rtol=1e-6, logits_rtol=1e-5, grad_rtol=1e-4, grad_atol=0.0,
                 max_expert_mismatches=0, out=print):
    """Compares eval outputs of dir_a against the reference dir_b. Returns the list of failures
    (empty when everything is within tolerance); prints a report through `out`."""
    failures = []
    with open(os.path.join(dir_a, "loss.json")) as f:
        la = json.load(f)
    with open(os.path.join(dir_b, "loss.json")) as f:
        lb = json.load(f)
    for k in LOSS_KEYS:
        a, b = float(la[k]), float(lb[k])
        err = abs(a - b) / abs(b) if b != 0 else (0.0 if a == 0 else math.inf)
        ok = err <= loss_rtol
        out(f"{'ok ' if ok else 'BAD'} {k}: {a!r} vs {b!r} rel {err:.3e} (tol {loss_rtol:g})")
        if not ok:
            failures.append(k)

    xa = np.load(os.path.join(dir_a, "logits.npy"))
    xb = np.load(os.path.join(dir_b, "logits.npy"))
    if xa.shape != xb.shape:
        out(f"BAD logits: shape {xa.shape} vs {xb.shape}")
        failures.append("logits")
    else:
        err = rel_err(xa, xb)
        ok = err <= logits_rtol
        out(f"{'ok ' if ok else 'BAD'} logits: rel {err:.3e} (tol {logits_rtol:g}); "
            f"{worst_element(xa, xb)}")
        if not ok:
            failures.append("logits")

    ea = np.load(os.path.join(dir_a, "experts.npy"))
    eb = np.load(os.path.join(dir_b, "experts.npy"))
    if ea.shape != eb.shape:
        out(f"BAD experts: shape {ea.shape} vs {eb.shape}")
        failures.append("experts")
    else:
        rows = np.any(ea != eb, axis=-1)  # [layers, B*T]
        n_bad = int(rows.sum())
        ok = n_bad <= max_expert_mismatches
        msg = f"{n_bad} of {rows.size} rows differ (allowed {max_expert_mismatches})"
        if n_bad:
            layer, row = (int(v) for v in np.argwhere(rows)[0])
            msg += f"; first: moe layer {layer} row {row}: {ea[layer, row]} vs {eb[layer, row]}"
        out(f"{'ok ' if ok else 'BAD'} experts: {msg}")
        if not ok:
            failures.append("experts")

    ga_path, gb_path = (os.path.join(d, "grads.safetensors") for d in (dir_a, dir_b))
    if os.path.exists(ga_path) or os.path.exists(gb_path):
        ga, _ = model_safetensors.load(ga_path)
        gb, _ = model_safetensors.load(gb_path)
        if set(ga) != set(gb):
            out(f"BAD grads: names differ: only in A {sorted(set(ga) - set(gb))[:5]}, "
                f"only in B {sorted(set(gb) - set(ga))[:5]}")
            failures.append("grads:names")
        errs = []
        for name in gb:
            if name not in ga:
                continue
            if ga[name].shape != gb[name].shape:
                errs.append((math.inf, name, f"shape {ga[name].shape} vs {gb[name].shape}"))
                continue
            errs.append((rel_err(ga[name], gb[name], grad_atol), name, None))
        errs.sort(key=lambda e: -e[0])
        bad = [e for e in errs if not e[0] <= grad_rtol]
        out(f"{'ok ' if not bad else 'BAD'} grads: {len(errs)} tensors, {len(bad)} above "
            f"rel {grad_rtol:g}; worst:")
        for err, name, note in errs[:5]:
            detail = note or worst_element(ga[name], gb[name])
            out(f"      {name}: rel {err:.3e}; {detail}")
        failures += [f"grads:{name}" for _, name, _ in bad]
    return failures


def cmd_compare(args):
    failures = compare_dirs(args.dir, args.ref, args.loss_rtol, args.logits_rtol, args.grad_rtol,
                            args.grad_atol, args.max_expert_mismatches)
    print("PASS" if not failures else f"FAIL: {', '.join(failures[:10])}")
    sys.exit(1 if failures else 0)


# ---- count ---------------------------------------------------------------------------------------

def cmd_count(args):
    d = dsm.DEEPSEEK_V3_671B if args.config.lower() == "671b" else read_config_dict(args.config)
    counts = dsm.count_parameters(dsm.Config(d))
    for k, v in counts.items():
        print(f"{k:10s} {v:>18,}" + (f"  ({v / 1e9:.2f}B)" if v else ""))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("eval", help="loss, logits, gradients and routing of a model on tokens")
    e.add_argument("--model", required=True)
    e.add_argument("--tokens", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--precision", default="fp64", choices=dsm.Precision.MODES)
    e.add_argument("--mtp_loss_weight", type=float, default=0.3)
    e.add_argument("--seq_aux_loss_alpha", type=float, default=1e-4)
    e.add_argument("--no_grads", action="store_true", help="forward only (no grads.safetensors)")
    e.set_defaults(fn=cmd_eval)

    i = sub.add_parser("init", help="random weights for a config")
    i.add_argument("--config", required=True, help="config.json (HF keys) or a dsv3 job spec")
    i.add_argument("--out", required=True)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--std", type=float, default=0.006)
    i.add_argument("--norm_std", type=float, default=0.0)
    i.add_argument("--bias_std", type=float, default=0.0)
    i.set_defaults(fn=cmd_init)

    t = sub.add_parser("tokens", help="random token ids [B, T+1] int32")
    t.add_argument("--vocab", type=int, required=True)
    t.add_argument("--batch", type=int, required=True)
    t.add_argument("--seq", type=int, required=True, help="T (the file has T+1 columns)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True)
    t.set_defaults(fn=cmd_tokens)

    c = sub.add_parser("compare", help="compare two eval output directories")
    c.add_argument("dir")
    c.add_argument("ref")
    c.add_argument("--loss_rtol", type=float, default=1e-6)
    c.add_argument("--logits_rtol", type=float, default=1e-5)
    c.add_argument("--grad_rtol", type=float, default=1e-4)
    c.add_argument("--grad_atol", type=float, default=0.0,
                   help="floor of the denominator ||ref|| of a gradient's relative error")
    c.add_argument("--max_expert_mismatches", type=int, default=0)
    c.set_defaults(fn=cmd_compare)

    n = sub.add_parser("count", help="parameter counts of a config (no allocation)")
    n.add_argument("--config", required=True, help="config.json, a job spec, or 671b")
    n.set_defaults(fn=cmd_count)

    args = p.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
