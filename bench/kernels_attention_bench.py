"""Benchmark of dsv3's CPU flash-style causal attention (kernels/cpu/attention.h), forward +
backward, against PyTorch 1.13 on the CPU written the way a PyTorch user writes attention without
F.scaled_dot_product_attention (transpose to [B, H, T, d], matmul, scale, masked_fill, softmax,
matmul; autograd backward), in fp32 and under bf16 autocast, with the same thread count. Every
shape is first checked: our outputs and gradients against PyTorch float64 autograd (one batch row,
at most 4 heads). Prints a table of tokens/s and the ratios ours / PyTorch. Not a test.

  /usr/bin/python3 bench/kernels_attention_bench.py --bin BUILD/kernels/kernels_attention_bench \
      [--threads 1,2] [--tokens 4096] [--full] [--reps 3] [--clock wall|cpu]

Timing: best of --reps after a warm-up, ours and PyTorch measured back to back for each row, so a
change in the machine's load hits both. --clock cpu counts the process's CPU time instead of wall
time (steadier on a shared machine; PyTorch's OpenMP threads are then told not to spin).
PyTorch's fp32 matmuls go to Debian's OpenBLAS; the driver sets OPENBLAS_CORETYPE=SkylakeX for it
(OpenBLAS otherwise picks a slower kernel on this CPU, see DESIGN.md), so the baseline is its best.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# Shapes: (heads, qk_dim, v_dim); the V3 head dims with 16 heads, and a tiny config's with 4.
SHAPES = [(16, 192, 128), (4, 96, 64)]
FULL_SHAPES = [(4, 192, 128), (16, 192, 128), (4, 96, 64), (16, 96, 64)]
SEQ_LENS = [128, 512, 2048]


def torch_worker(threads, reps, clock):
    """Child process: reads one JSON config per line, prints the best fp32 and bf16 seconds."""
    import torch

    torch.set_num_threads(threads)
    now = time.process_time if clock == "cpu" else time.perf_counter
    for line in sys.stdin:
        batch, seq, heads, dqk, dv = json.loads(line)
        scale = dqk ** -0.5
        g = torch.Generator().manual_seed(1)
        q, k = (torch.randn(batch, seq, heads, dqk, generator=g) for _ in range(2))
        v, dout = (torch.randn(batch, seq, heads, dv, generator=g) for _ in range(2))
        mask = torch.ones(seq, seq, dtype=torch.bool).triu(1)

        def attention(q, k, v):
            q, k, v = (x.transpose(1, 2) for x in (q, k, v))
            s = torch.matmul(q, k.transpose(-1, -2)) * scale
            s = s.masked_fill(mask, float("-inf"))
            p = torch.softmax(s, dim=-1)
            return torch.matmul(p, v).transpose(1, 2)

        row = {}
        for mode in ("fp32", "bf16"):
            qq, kk, vv = (x.clone().requires_grad_(True) for x in (q, k, v))

            def step():
                qq.grad = kk.grad = vv.grad = None
                if mode == "bf16":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        o = attention(qq, kk, vv)
                    o.float().backward(dout)
                else:
                    attention(qq, kk, vv).backward(dout)

            step()  # Warm-up.
            best = 1e30
            for _ in range(reps):
                t0 = now()
                step()
                best = min(best, now() - t0)
            row[mode] = best
        print(json.dumps(row), flush=True)


class TorchWorker:
    def __init__(self, threads, reps, clock):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads), OPENBLAS_CORETYPE="SkylakeX")
        if clock == "cpu":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--torch_worker", "--threads", str(threads), "--reps",
             str(reps), "--clock", clock], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)

    def time(self, config):
        self.proc.stdin.write(json.dumps(config) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit("PyTorch worker died")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def check(binary, seq, heads, dqk, dv):
    """Our outputs and gradients on one batch row vs PyTorch float64 autograd; returns max rel err."""
    import numpy as np
    import torch

    batch, heads = 1, min(heads, 4)
    scale = dqk ** -0.5
    g = torch.Generator().manual_seed(2)
    q, k = (torch.randn(batch, seq, heads, dqk, generator=g) for _ in range(2))
    v, dout = (torch.randn(batch, seq, heads, dv, generator=g) for _ in range(2))
    with tempfile.TemporaryDirectory() as d:
        for name, x in (("q", q), ("k", k), ("v", v), ("dout", dout)):
            np.save(os.path.join(d, name + ".npy"), x.numpy())
        subprocess.run([binary, f"--batch={batch}", f"--seq={seq}", f"--heads={heads}",
                        f"--qk_dim={dqk}", f"--v_dim={dv}", f"--check_dir={d}"], check=True)
        ours = {n: np.load(os.path.join(d, n + ".npy")) for n in ("o", "dq", "dk", "dv")}
    q64, k64, v64 = (x.double().requires_grad_(True) for x in (q, k, v))
    qt, kt, vt = (x.transpose(1, 2) for x in (q64, k64, v64))
    s = (qt @ kt.transpose(-1, -2)) * scale
    s = s.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
    o = (torch.softmax(s, -1) @ vt).transpose(1, 2)
    o.backward(dout.double())
    worst = 0.0
    for name, ref in (("o", o), ("dq", q64.grad), ("dk", k64.grad), ("dv", v64.grad)):
        ref = ref.detach().numpy()
        err = np.abs(ours[name] - ref).max() / max(np.abs(ref).max(), 1e-30)
        if not err < 1e-4:
            sys.exit(f"check failed: T={seq} H={heads} {dqk}/{dv}: {name} max error {err:.3g} "
                     f"of its largest element")
        worst = max(worst, err)
    return worst


def ours_time(binary, config, threads, reps, clock):
    batch, seq, heads, dqk, dv = config
    cmd = [binary, f"--batch={batch}", f"--seq={seq}", f"--heads={heads}", f"--qk_dim={dqk}",
           f"--v_dim={dv}", f"--threads={threads}", f"--reps={reps}"]
    if clock == "cpu":
        cmd.append("--cpu_time")
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    fields = dict(kv.split("=") for kv in res.stdout.split())
    return float(fields["forward_s"]) + float(fields["backward_s"]), fields["kernels"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/kernels/kernels_attention_bench")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--full", action="store_true", help="all four head shapes")
    ap.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        return torch_worker(int(args.threads), args.reps, args.clock)

    shapes = FULL_SHAPES if args.full else SHAPES
    configs = [(args.tokens // seq, seq, h, dqk, dv) for (h, dqk, dv) in shapes for seq in SEQ_LENS]
    for _, seq, h, dqk, dv in configs:
        err = check(args.bin, seq, h, dqk, dv)
        print(f"checked T={seq} {dqk}/{dv} (1 row, {min(h, 4)} heads) against float64 autograd: "
              f"max error {err:.2e} of the largest element", flush=True)
    print()
    print(f"{'T':>5} {'H':>3} {'dqk/dv':>7} {'thr':>3} | {'ours tok/s':>10} {'torch fp32':>10} "
          f"{'torch bf16':>10} | {'x fp32':>6} {'x bf16':>6}")
    kernels = "?"
    for threads in (int(t) for t in args.threads.split(",")):
        worker = TorchWorker(threads, args.reps, args.clock)
        for config in configs:
            batch, seq, h, dqk, dv = config
            ours, kernels = ours_time(args.bin, config, threads, args.reps, args.clock)
            t = worker.time(list(config))
            tok = batch * seq
            print(f"{seq:>5} {h:>3} {f'{dqk}/{dv}':>7} {threads:>3} | {tok / ours:>10.0f} "
                  f"{tok / t['fp32']:>10.0f} {tok / t['bf16']:>10.0f} | "
                  f"{t['fp32'] / ours:>6.2f} {t['bf16'] / ours:>6.2f}", flush=True)
        worker.close()
    print(f"\ntokens/s of forward + backward ({args.clock} clock, best of {args.reps}), "
          f"{args.tokens} tokens per step; ours = {kernels} kernels; x = ours / PyTorch")


if __name__ == "__main__":
    main()
