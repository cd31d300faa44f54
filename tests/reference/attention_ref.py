"""PyTorch reference for dsv3's causal attention (kernels/cpu/attention.h), forward and backward.

For every case_<N>_q.npy in DIR (written by kernels/cpu/attention_test.cc) it reads
case_<N>_{q,k,v,dout}.npy (float32 [B, T, H, d], the kernel's layout) and case_<N>_scale.npy
(float64 [1]), computes in float64 with autograd
    o = softmax(q k^T * scale + causal mask) v,   lse = logsumexp(q k^T * scale + mask)
and the gradients of sum(o * dout) with respect to q, k and v, and writes
case_<N>_{o,lse,dq,dk,dv}.npy (float64; o/dq/dk/dv [B, T, H, d], lse [B, H, T]).
All cases in one run, so torch is imported once.
  attention_ref.py DIR
"""
import glob
import os
import re
import sys

import numpy as np
import torch


def attention(q, k, v, scale):
    # [B, T, H, d] -> [B, H, T, d], the formulation a PyTorch user writes.
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    t = q.shape[2]
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    s = s.masked_fill(mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    o = torch.matmul(torch.softmax(s, dim=-1), v)
    return o.transpose(1, 2), lse


def main():
    d = sys.argv[1]
    names = sorted(glob.glob(os.path.join(d, "case_*_q.npy")))
    assert names, "no case_*_q.npy in " + d
    for name in names:
        prefix = re.sub(r"_q\.npy$", "", name)
        load = lambda s: torch.from_numpy(np.load(prefix + "_" + s + ".npy").astype(np.float64))
        q, k, v = (load(s).requires_grad_(True) for s in ("q", "k", "v"))
        dout = load("dout")
        scale = float(np.load(prefix + "_scale.npy")[0])
        o, lse = attention(q, k, v, scale)
        o.backward(dout)
        for s, x in (("o", o), ("lse", lse), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
            np.save(prefix + "_" + s + ".npy", x.detach().contiguous().numpy())


if __name__ == "__main__":
    main()
