"""PyTorch reference for dsv3's FP32 GEMM layouts (kernels/cpu/gemm.h): for every caseI_ in DIR,
reads caseI_x.npy [M, K], caseI_w.npy [N, K] and caseI_dy.npy [M, N] (float32), computes in float64
Y = F.linear(X, W) and, by autograd with upstream gradient dY, dX and dW, and writes
caseI_y_ref.npy, caseI_dx_ref.npy, caseI_dw_ref.npy (float64). One run handles all cases.
  gemm_linear.py DIR
"""
import glob
import os
import sys

import numpy as np
import torch

d = sys.argv[1]
paths = sorted(glob.glob(os.path.join(d, "case*_x.npy")))
assert paths, "no case*_x.npy in " + d
for x_path in paths:
    p = x_path[: -len("x.npy")]
    x = torch.from_numpy(np.load(p + "x.npy")).double().requires_grad_()
    w = torch.from_numpy(np.load(p + "w.npy")).double().requires_grad_()
    dy = torch.from_numpy(np.load(p + "dy.npy")).double()
    assert x.shape[1] == w.shape[1] and dy.shape == (x.shape[0], w.shape[0]), (x.shape, w.shape, dy.shape)
    y = torch.nn.functional.linear(x, w)
    y.backward(dy)
    np.save(p + "y_ref.npy", y.detach().numpy())
    np.save(p + "dx_ref.npy", x.grad.numpy())
    np.save(p + "dw_ref.npy", w.grad.numpy())
