#!/usr/bin/env python3
"""How the FP8 quantiser's amax floor meets the output gradients of an fp8 job's backward GEMMs.

Spec §5.2 / §11.9: every 1x128 tile is scaled by max(amax, 1e-4) / 448. Activations are O(1), but
the gradients dY that the Dgrad and Wgrad GEMMs quantise are as small as the loss's normalisation
makes them (the mean over a global batch of thousands of tokens). A tile whose amax is below the
floor uses only a part of E4M3's range: its largest code is 448 * amax / 1e-4, and its small
values fall into E4M3's subnormals. This script runs one micro-batch of a job spec's model at its
initialisation through the PyTorch reference in fp8 (tests/reference, the same quantiser as the
C++ kernels), records the amax of every 1x128 tile of every dY an FP8 Linear's backward receives,
rescales them to the trainer's normalisation (a micro-batch's share of the global batch), and
prints their distribution against the floor.

  /usr/bin/python3 bench/fp8_grad_amax.py [--spec docs/examples/brown-tiny.json] [--seed 1]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

import deepseek_v3_model as dsm  # noqa: E402
import deepseek_v3_ref as ref  # noqa: E402
import model_numerics as mn  # noqa: E402

FLOOR = 1e-4


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", default=os.path.join(ROOT, "docs", "examples", "brown-tiny.json"))
    p.add_argument("--seed", type=int, default=1, help="weights (the job's train.seed)")
    args = p.parse_args()

    config = ref.read_config_dict(args.spec)
    cfg = dsm.Config(config)
    with open(args.spec) as f:
        spec = json.load(f)
    train = spec["train"]
    seq = int(train["seq_len"])
    global_rows = int(train["global_batch_tokens"]) // seq
    micro_batches = int(spec.get("parallel", {}).get("micro_batches", 1))
    rows = max(1, global_rows // micro_batches)

    tiles = []
    backward = mn.Fp8Linear.backward

    def recording_backward(ctx, dy):
        a = dy.detach().float().abs().reshape(dy.shape[0], -1)
        pad = (-a.shape[1]) % mn.TILE
        if pad:
            a = torch.cat([a, torch.zeros(a.shape[0], pad)], 1)
        tiles.append(a.view(a.shape[0], -1, mn.TILE).amax(2).flatten())
        return backward(ctx, dy)

    mn.Fp8Linear.backward = staticmethod(recording_backward)
    model = dsm.DeepseekV3(cfg, "fp8")
    model.load_weights(ref.random_weights(cfg, args.seed))
    tokens = ref.random_tokens(cfg.vocab_size, rows, seq, args.seed)
    ref.evaluate(model, tokens, float(train.get("mtp_loss_weight", 0.3)),
                 float(train.get("seq_aux_loss_alpha", 1e-4)))

    # The reference's loss is the mean over these rows; the trainer's micro-batch contributes its
    # share of the mean over the global batch, so its gradients are rows / global_rows of these.
    amax = torch.cat(tiles).numpy() * (rows / global_rows)
    below = amax < FLOOR
    print(f"{args.spec}: one micro-batch of {rows} x {seq} tokens (global batch {global_rows} rows), "
          f"weights at initialisation (seed {args.seed}), fp8")
    print(f"dY tiles of the FP8 Linears' backward: {amax.size}")
    for q in (10, 50, 90, 99):
        print(f"  p{q:<2} amax {np.percentile(amax, q):.3g}")
    print(f"  below the floor {FLOOR:g}: {below.mean():.1%} of the tiles; their median amax is "
          f"{np.median(amax[below]) if below.any() else float('nan'):.3g}, so their largest code "
          f"is about {448 * np.median(amax[below]) / FLOOR if below.any() else float('nan'):.3g} "
          f"instead of 448")


if __name__ == "__main__":
    main()
